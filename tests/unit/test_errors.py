"""The exception tree: vendor errors become one actionable sentence of the right kind."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from kubernetes.client.exceptions import ApiException

from runbooks import errors


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, errors.InvalidRequestError),
        (401, errors.AuthError),
        (403, errors.AuthError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (410, errors.NotFoundError),
        (422, errors.InvalidRequestError),
        (429, errors.UnavailableError),
        (500, errors.UnavailableError),
        (502, errors.UnavailableError),
        (503, errors.UnavailableError),
        (504, errors.UnavailableError),
    ],
)
def test_statuses_map_to_one_kind(status: int, kind: type[errors.RunbookError]) -> None:
    error = errors.from_status(status, "patch Deployment shop/frontend")
    assert type(error) is kind
    assert str(error).startswith("patch Deployment shop/frontend")
    assert errors.is_transient(error) is issubclass(kind, errors.TransientError)


def test_kubernetes_status_message_names_the_field() -> None:
    body = json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "message": 'Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1',
            "reason": "Invalid",
            "code": 422,
        }
    )
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = body
    error = errors.from_kubernetes(exc, "create Deployment shop/web")
    assert isinstance(error, errors.InvalidRequestError)
    assert "spec.replicas: Invalid value: -1" in str(error)


def test_kubernetes_conflict_is_transient() -> None:
    error = errors.from_kubernetes(ApiException(status=409, reason="Conflict"), "replace x")
    assert isinstance(error, errors.ConflictError)
    assert errors.is_transient(error)


def test_botocore_throttling_and_not_found() -> None:
    throttled = ClientError(
        {
            "Error": {"Code": "Throttling", "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "ChangeResourceRecordSets",
    )
    assert isinstance(errors.from_botocore(throttled, "change records"), errors.UnavailableError)
    missing = ClientError(
        {
            "Error": {"Code": "NoSuchHostedZone", "Message": "No hosted zone Z1"},
            "ResponseMetadata": {"HTTPStatusCode": 404},
        },
        "GetHostedZone",
    )
    error = errors.from_botocore(missing, "read hosted zone Z1")
    assert isinstance(error, errors.NotFoundError)
    assert "NoSuchHostedZone" in str(error)
    offline = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert isinstance(errors.from_botocore(offline, "list zones"), errors.UnavailableError)


def test_httpx_status_and_transport_errors() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/health")
    response = httpx.Response(503, request=request, headers={"Retry-After": "3"})
    status_error = httpx.HTTPStatusError("boom", request=request, response=response)
    error = errors.from_httpx(status_error, "check health")
    assert isinstance(error, errors.UnavailableError)
    assert error.retry_after_seconds == 3.0
    timeout = errors.from_httpx(httpx.ReadTimeout("timed out", request=request), "check health")
    assert isinstance(timeout, errors.UnavailableError)
    assert "ReadTimeout" in str(timeout)


def test_our_own_errors_pass_through_translation() -> None:
    mine = errors.CircuitOpenError("payments", 4.0)
    assert errors.from_httpx(mine, "x") is mine
    assert errors.from_kubernetes(mine, "x") is mine
    assert errors.from_botocore(mine, "x") is mine


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("0", 0.0), ("-2", 0.0), ("soon", None), (None, None), ("", None)],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert errors.parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= errors.parse_retry_after(when) <= 30
