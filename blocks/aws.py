"""`AwsTarget`: which AWS account and region a runbook talks to, and boto3 factories for it.

Why it is built this way:
- one ``boto3.Session`` per call of :meth:`AwsTarget.get_session`, never boto3's module-level
  default session: sessions are not thread-safe to share and a default session would leak one
  block's credentials into another's calls;
- every client gets ``runbooks.resilience.botocore_config``: explicit connect and read timeouts
  (botocore's default read timeout is 60 s) and botocore's *standard* retry mode with a total of
  ``max_attempts`` attempts. botocore is the one retry layer for AWS calls (it knows each
  service's throttling codes and keeps its own retry quota), so tasks that call AWS must not add
  Prefect task retries on top;
- ``endpoint_url`` exists for moto / LocalStack on loopback (the sandbox), not for proxies;
- secrets are ``SecretStr`` and validation never echoes input, so a key never reaches a log.

``boto3`` is imported inside the factories, so importing ``blocks`` stays cheap.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator

from blocks._common import BLOCK_CONFIG, DOCUMENTATION_URL, LOGO, check_http_url
from runbooks.errors import InvalidRequestError

if TYPE_CHECKING:
    import boto3
    from botocore.client import BaseClient

# us-east-1, eu-central-2, ap-southeast-5, us-gov-west-1, cn-northwest-1, us-isob-east-1 ...
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$")


class AwsTarget(Block):
    """An AWS account and region that runbooks act on, with explicit timeouts and botocore's
    standard retry mode as the only retry layer for AWS calls.

    Credentials come from the block (access key pair, optional session token) or from a named
    profile; when neither is set, boto3's usual chain (environment, instance role) applies.

    Example:
        Create an S3 client for the configured account and region:
        ```python
        from blocks import AwsTarget

        aws = AwsTarget.load("BLOCK_NAME")
        s3 = aws.get_client("s3")
        buckets = s3.list_buckets()["Buckets"]
        ```
    """

    _block_type_name: ClassVar[str] = "AWS Target"
    _block_type_slug: ClassVar[str] = "aws-target"
    _description: ClassVar[str] = (
        "An AWS account and region to act on (keys, session token or profile), with explicit "
        "timeouts and bounded standard-mode retries."
    )
    _documentation_url = DOCUMENTATION_URL
    _logo_url = LOGO

    model_config = BLOCK_CONFIG

    region_name: str = Field(
        default=...,
        title="Region",
        description="AWS region of the resources, e.g. us-east-1.",
    )
    aws_access_key_id: SecretStr | None = Field(
        default=None,
        title="Access key ID",
        description="Access key ID; set together with the secret access key, or leave both empty.",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        title="Secret access key",
        description="Secret access key belonging to the access key ID.",
    )
    aws_session_token: SecretStr | None = Field(
        default=None,
        title="Session token",
        description="Session token for temporary credentials (needs the access key pair).",
    )
    profile_name: str | None = Field(
        default=None,
        title="Profile",
        description="Named profile of the AWS config files, used instead of an access key pair.",
    )
    endpoint_url: str | None = Field(
        default=None,
        title="Endpoint URL",
        description=(
            "Override of the service endpoint, e.g. a moto server on loopback; "
            "empty for the real AWS endpoints."
        ),
    )
    connect_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        title="Connect timeout (seconds)",
        description="Time allowed to open a connection to an AWS endpoint.",
    )
    read_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=900,
        title="Read timeout (seconds)",
        description="Time allowed to wait for an AWS response once connected.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        title="Max attempts",
        description="Attempts per call, the first included (botocore standard retry mode).",
    )

    @field_validator("region_name")
    @classmethod
    def _region_looks_like_a_region(cls, value: str) -> str:
        value = value.strip()
        if not _REGION.match(value):
            raise ValueError(
                f"region_name must be an AWS region code like 'us-east-1', got {value!r}"
            )
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_http(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_http_url(value, "endpoint_url")

    @field_validator("profile_name")
    @classmethod
    def _profile_is_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _credentials_are_complete(self) -> AwsTarget:
        has_key_id = _is_set(self.aws_access_key_id)
        has_secret = _is_set(self.aws_secret_access_key)
        if has_key_id != has_secret:
            missing = "aws_secret_access_key" if has_key_id else "aws_access_key_id"
            raise ValueError(
                "aws_access_key_id and aws_secret_access_key must be set together "
                f"({missing} is empty)"
            )
        if _is_set(self.aws_session_token) and not has_key_id:
            raise ValueError(
                "aws_session_token needs aws_access_key_id and aws_secret_access_key as well"
            )
        if has_key_id and self.profile_name is not None:
            raise ValueError(
                "profile_name cannot be combined with aws_access_key_id / aws_secret_access_key; "
                "set either a profile or a key pair"
            )
        return self

    def get_session(self) -> boto3.Session:
        """A new ``boto3.Session`` with this block's region and credentials.

        Raises ``InvalidRequestError`` naming ``profile_name`` when that profile does not exist.
        """
        import boto3
        from botocore.exceptions import ProfileNotFound

        try:
            return boto3.Session(
                region_name=self.region_name,
                profile_name=self.profile_name,
                aws_access_key_id=_reveal(self.aws_access_key_id),
                aws_secret_access_key=_reveal(self.aws_secret_access_key),
                aws_session_token=_reveal(self.aws_session_token),
            )
        except ProfileNotFound as exc:
            raise InvalidRequestError(
                f"profile_name {self.profile_name!r} is not in the AWS config files; "
                "fix profile_name or use an access key pair"
            ) from exc

    def get_client(self, service_name: str) -> BaseClient:
        """A boto3 client for ``service_name`` (e.g. "route53") with bounded timeouts/retries.

        Raises ``InvalidRequestError`` when botocore does not know ``service_name``.
        """
        from botocore.exceptions import UnknownServiceError

        from runbooks.resilience import botocore_config

        config = botocore_config(
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            max_attempts=self.max_attempts,
        )
        try:
            return self.get_session().client(
                service_name, endpoint_url=self.endpoint_url, config=config
            )
        except UnknownServiceError as exc:
            raise InvalidRequestError(
                f"service_name {service_name!r} is not an AWS service botocore knows "
                "(use the boto3 name, e.g. 'route53', 'autoscaling', 'cloudwatch', 's3')"
            ) from exc


def _is_set(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value())


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if _is_set(secret) else None  # type: ignore[union-attr]
