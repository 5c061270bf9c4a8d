"""Kubernetes ``Status`` failures: one exception type carrying exactly what the real server sends.

Clients branch on ``code`` and ``reason`` and show ``message``, so both follow the wording of
``k8s.io/apimachinery/pkg/api/errors`` (``deployments.apps "web" not found``, ``Operation cannot
be fulfilled on ...``, ``Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must
be greater than or equal to 0``). Field errors carry a ``causes`` list with ``field`` paths, so a
caller can say which field of its manifest is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cause:
    """One field error: ``reason`` is e.g. FieldValueInvalid, ``message`` has no field prefix."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass
class FieldErrors:
    """Collects field errors during validation; :meth:`raise_if_any` turns them into a 422."""

    causes: list[Cause] = field(default_factory=list)

    def required(self, path: str, detail: str = "") -> None:
        self.causes.append(
            Cause(path, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))
        )

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.causes.append(
            Cause(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {detail}")
        )

    def type_invalid(self, path: str, value: Any, expected: str) -> None:
        self.causes.append(
            Cause(path, "FieldValueTypeInvalid", f"Invalid value: {_show(value)}: {expected}")
        )

    def not_supported(self, path: str, value: Any, supported: list[str]) -> None:
        options = ", ".join(json.dumps(option) for option in supported)
        self.causes.append(
            Cause(
                path,
                "FieldValueNotSupported",
                f"Unsupported value: {_show(value)}: supported values: {options}",
            )
        )

    def duplicate(self, path: str, value: Any) -> None:
        self.causes.append(Cause(path, "FieldValueDuplicate", f"Duplicate value: {_show(value)}"))

    def forbidden(self, path: str, detail: str) -> None:
        self.causes.append(Cause(path, "FieldValueForbidden", f"Forbidden: {detail}"))

    def not_found(self, path: str, value: Any) -> None:
        self.causes.append(Cause(path, "FieldValueNotFound", f"Not found: {_show(value)}"))

    def too_long(self, path: str, limit: int) -> None:
        self.causes.append(
            Cause(path, "FieldValueTooLong", f"Too long: may not be more than {limit} bytes")
        )

    def __bool__(self) -> bool:
        return bool(self.causes)

    def raise_if_any(self, kind: str, group: str, name: str) -> None:
        if self.causes:
            raise invalid(kind, group, name, self.causes)


class ApiError(Exception):
    """A failed request, rendered as a ``Status`` body by the HTTP layer."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details if self.details is not None else {},
            "code": self.code,
        }
        if not self.reason:
            del body["reason"]
        return body


def _resource(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_resource(plural, group)} "{name}" not found',
        details=_details(name, group, plural),
    )


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_resource(plural, group)} "{name}" already exists',
        details=_details(name, group, plural),
    )


def conflict(plural: str, group: str, name: str, detail: str | None = None) -> ApiError:
    detail = detail or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_resource(plural, group)} "{name}": {detail}',
        details=_details(name, group, plural),
    )


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> ApiError:
    qualified = f"{kind}.{group}" if group else kind
    if len(causes) == 1:
        summary = str(causes[0])
    else:
        summary = "[" + ", ".join(str(cause) for cause in causes) + "]"
    details = _details(name, group, kind)
    details["causes"] = [cause.to_json() for cause in causes]
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details=details)


def unprocessable(message: str) -> ApiError:
    """422 without field causes (a patch that cannot be applied), as the real server sends."""
    return ApiError(422, "Invalid", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - "
        f"accepted media types include: {', '.join(accepted)}",
    )


def not_acceptable(accepted: list[str]) -> ApiError:
    return ApiError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: {', '.join(accepted)}",
    )


def forbidden(plural: str, group: str, name: str, detail: str) -> ApiError:
    return ApiError(
        403,
        "Forbidden",
        f'{_resource(plural, group)} "{name}" is forbidden: {detail}',
        details=_details(name, group, plural),
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def internal(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        details={"causes": [{"message": message}]},
    )


REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
