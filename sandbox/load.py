"""A steady client for drills: GETs through a Service, back to back, counting what failed.

Used by the blue-green tests and ``benchmarks/rollout.py`` to prove "zero failed requests":
every non-200 answer and every transport error is kept (bounded by the run, which the caller
ends), so a failure is reported with what it was, not just counted. The same loop the
blue-green flow's synthetic preview load uses (``tasks.load``), aimed at the shop's ``/pay``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.load import RequestLoad


@dataclass
class Load(RequestLoad):
    """``with Load(url, path="/pay") as load: ...``; then ``load.total``, ``load.failures``."""

    path: str = "/pay"
