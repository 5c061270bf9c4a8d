"""The ``tracing-rollout`` step of ``runbooks demo``.

The shop deployed in step 2 (frontend -> checkout -> payments) gets tracing the way
``runbooks run`` would do it: checkout first as the canary, then frontend and payments
together, each verified in the sandbox's trace store (Jaeger ``/api/v3``) by probes carrying
a sampled trace context. Then one purchase through the frontend is looked up by its trace id
to show the chain the dependency map draws.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

from runbooks import catalogue
from runbooks.catalogue import Launch

Say = Callable[[str], None]

PROBES = {"frontend": "/buy?user=demo", "checkout": "/checkout", "payments": "/pay"}


def tracing_step(
    shop: dict[str, Any],
    endpoints: dict[str, str],
    say: Say,
    launch: Launch = catalogue.run_in_process,
) -> dict[str, Any]:
    """Run tracing-rollout on the demo shop (through ``launch``); its figures."""
    from tasks.traces import get_trace

    entry = catalogue.runbook("tracing-rollout")
    params = catalogue.build_params(
        entry,
        overrides={
            "otlp_endpoint": endpoints["otlp"],
            "sampler": "parentbased_traceidratio",
            "sampler_ratio": 0.1,
            "verify_requests": 3,
            "verify_timeout_seconds": 30,
            "collector_exporter_endpoint": "http://jaeger-collector.observability:4318",
            "services": [
                {
                    "deployment": role,
                    "canary": role == "checkout",
                    "probe_url": shop[role].url + PROBES[role],
                }
                for role in ("checkout", "frontend", "payments")
            ],
        },
    )
    blocks = catalogue.load_blocks(entry, {})
    result = launch(entry, params, blocks).unwrap()
    say(f"   tracing-rollout: {result.outcome.value}: {result.reason}")

    trace_id = secrets.token_hex(16)
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    httpx.get(shop["frontend"].url + "/buy?user=alice", headers=headers, timeout=5)
    chain: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(chain) < 3:
        with contextlib.suppress(Exception):  # not exported yet (5 s batches)
            spans = get_trace.fn(blocks["traces"], trace_id)
            chain = list(dict.fromkeys(s.service for s in spans))
        time.sleep(0.5)
    say(f"   one purchase, trace {trace_id[:8]}...: {' -> '.join(chain) or 'not found'}")
    return {
        "outcome": result.outcome.value,
        "services": {r.service: r.status for r in result.services},
        "probes_answered": {
            r.service: f"{r.traces_seen}/{r.requests_sent}" for r in result.services
        },
        "purchase_chain": chain,
        "dependency_map": result.dependency_map,
    }


def format_tracing(figures: dict[str, Any]) -> str:
    """The tracing step of the demo, a few lines."""
    lines = ["tracing-rollout (head sampling 10 %, verified with sampled probes)"]
    for service, status in figures["services"].items():
        lines.append(
            f"  {service:<10} {status:<15} probes answered {figures['probes_answered'][service]}"
        )
    lines.append(f"  one purchase's trace: {' -> '.join(figures['purchase_chain']) or '-'}")
    return "\n".join(lines)
