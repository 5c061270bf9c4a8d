"""Parameters of the ``select-regions`` runbook. Pure: validated input, no I/O.

Kept apart from the flow so a chat bot (or ``runbooks run``) validates a command without
importing Prefect, and apart from :mod:`decisions.regions` (the optimiser) so the form the UI
renders is one small model.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


class LogFormat(StrEnum):
    AUTO = "auto"
    COMBINED = "combined"
    COMMON = "common"
    JSON = "json"


class WeightBy(StrEnum):
    REQUESTS = "requests"
    CLIENTS = "clients"


class SelectRegionsParams(BaseModel):
    """Parameters of ``select-regions`` (the Prefect UI renders them as a form)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str = Field(
        "default",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="The service the logs are of; names the artifacts and events.",
    )
    sources: tuple[str, ...] = Field(
        min_length=1,
        description="Access logs: local paths or globs, s3://bucket/key or s3://bucket/prefix/; "
        ".gz is read transparently.",
    )
    log_format: LogFormat = Field(
        LogFormat.AUTO, description="auto, combined, common (Apache/nginx) or json (JSON lines)."
    )
    regions: tuple[str, ...] = Field(
        (), description="Candidate AWS regions; empty: the 34 commercial regions shipped."
    )
    k_min: int = Field(2, ge=1, le=34, description="Fewest regions to consider.")
    k_max: int = Field(5, ge=1, le=34, description="Most regions to consider (exact up to 5).")
    target_p95_ms: float = Field(
        100.0, gt=0, le=10_000, description="P95 round-trip target; the smallest k meeting it wins."
    )
    monthly_cost: dict[str, float] = Field(
        default_factory=dict,
        description="Monthly cost per region (USD); with it, the cheapest set meeting the target.",
    )
    weight_by: WeightBy = Field(
        WeightBy.REQUESTS, description="Weigh demand by requests or by unique clients."
    )
    latency_matrix: str | None = Field(
        None,
        description="CSV of measured RTTs (country,region,rtt_ms) overriding the distance model.",
    )

    @field_validator("sources")
    @classmethod
    def _sources_not_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for source in value:
            if not source.strip():
                raise ValueError("sources must not contain blank entries")
        return value

    @field_validator("regions")
    @classmethod
    def _region_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for code in value:
            if not _REGION.match(code):
                raise ValueError(f"regions: {code!r} is not an AWS region code like eu-west-1")
        if len(set(value)) != len(value):
            raise ValueError("regions must not repeat a region")
        return value

    @field_validator("monthly_cost")
    @classmethod
    def _costs(cls, value: dict[str, float]) -> dict[str, float]:
        for code, cost in value.items():
            if not _REGION.match(code):
                raise ValueError(f"monthly_cost: {code!r} is not an AWS region code")
            if cost < 0:
                raise ValueError(f"monthly_cost: {code} must be >= 0, got {cost}")
        return value

    @model_validator(mode="after")
    def _k_range(self) -> SelectRegionsParams:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        if self.regions and self.k_max > len(self.regions):
            raise ValueError(
                f"k_max ({self.k_max}) is above the number of candidate regions "
                f"({len(self.regions)})"
            )
        return self

    @property
    def k_values(self) -> range:
        return range(self.k_min, self.k_max + 1)

    @property
    def target(self) -> str:
        """What the run is about: keys its artifacts and events."""
        return self.service
