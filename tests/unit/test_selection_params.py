"""select-regions parameters: bad input is refused naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from decisions.selection import LogFormat, SelectRegionsParams, WeightBy


def test_defaults() -> None:
    p = SelectRegionsParams(sources=("logs/*.gz",))
    assert p.k_values == range(2, 6)
    assert p.target_p95_ms == 100.0
    assert p.log_format is LogFormat.AUTO
    assert p.weight_by is WeightBy.REQUESTS
    assert p.regions == ()
    assert p.target == "default"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sources": ()}, "sources"),
        ({"sources": (" ",)}, "sources"),
        ({"k_min": 0}, "k_min"),
        ({"k_min": 4, "k_max": 3}, "k_min"),
        ({"regions": ("eu-west-1", "us-east-1"), "k_max": 3}, "k_max"),
        ({"regions": ("mars-north-1",)}, "regions"),
        ({"regions": ("eu-west-1", "eu-west-1")}, "regions"),
        ({"monthly_cost": {"eu-west-1": -1.0}}, "monthly_cost"),
        ({"target_p95_ms": 0}, "target_p95_ms"),
        ({"weight_by": "bytes"}, "weight_by"),
        ({"service": "Shop"}, "service"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_input_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        SelectRegionsParams(**({"sources": ("a.log",)} | change))
