"""What the resilience layer does for one kind of client: backoff, budget, breaker, and which
requests and statuses are retried. A frozen value; built once, shared by every call."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from decisions.backoff import Backoff
from decisions.breaker import BreakerSettings
from decisions.budget import RetryBudgetSettings

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ResiliencePolicy(BaseModel):
    """The settings of the resilience layer (defaults: 3 attempts, 10 % budget, Resilience4j)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backoff: Backoff = Field(default_factory=Backoff, description="Full-jitter backoff bounds.")
    budget: RetryBudgetSettings = Field(
        default_factory=RetryBudgetSettings, description="Retry budget per target."
    )
    breaker: BreakerSettings = Field(
        default_factory=BreakerSettings, description="Circuit breaker per target."
    )
    retry_statuses: frozenset[int] = Field(
        RETRY_STATUSES, description="HTTP statuses that are retried (transient)."
    )
    idempotent_methods: frozenset[str] = Field(
        IDEMPOTENT_METHODS, description="Methods retried without the caller opting in."
    )

    @field_validator("retry_statuses")
    @classmethod
    def _statuses_are_errors(cls, value: frozenset[int]) -> frozenset[int]:
        wrong = sorted(s for s in value if not 400 <= s <= 599)
        if wrong:
            raise ValueError(f"retry_statuses must be 4xx or 5xx codes, got {wrong}")
        return value

    @field_validator("idempotent_methods")
    @classmethod
    def _upper(cls, value: frozenset[str]) -> frozenset[str]:
        return frozenset(m.upper() for m in value)
