"""Runbook ``tracing-rollout``: staged OpenTelemetry rollout, verified end to end.

The "Distributed Tracing Setup" recipe, with its flaws fixed (its Jaeger exporter is gone from
OpenTelemetry Python: services export OTLP; its "adaptive sampler" is tail sampling in a
Collector). The OpenTelemetry Operator injects instrumentation but never checks that traces
arrive; this runbook does, service by service. In :mod:`.flow`:

1. **Observe and plan** (:mod:`decisions.tracing_plan`): each Deployment's container env and
   template annotations are read; the plan is the exact ``OTEL_*`` changes per service (``env``
   mode) or the ``Instrumentation`` + ``inject-python`` annotation (``operator`` mode), a
   canary stage then batches; a service already configured as asked is left out of every
   stage. An unknown Deployment, a ratio outside [0, 1], an unknown propagator or sampler are
   refused before anything changes. With ``collector_exporter_endpoint``, the Collector config
   whose ``tail_sampling`` encodes the policy is generated and validated
   (:mod:`decisions.tracing_collector`). The plan is published; a dry run stops there.
2. **Roll out** under the target's lock (:mod:`.steps`): a stage's services are patched (one
   guarded JSON patch each), their pods awaited, then each is verified: sampled probe requests
   (or its own traffic) and a bounded poll of the trace backend (``TraceBackend`` block:
   Jaeger's ``/api/v3`` in the sandbox and in production) for its spans. A service that does
   not report is reverted to its previous spec exactly and reported; the others stay traced. A
   canary that does not report stops the rollout. Already-traced services are verified, never
   touched, so a re-run after a fix converges.
3. **Report** (:mod:`decisions.trace_analysis`): a coverage table (spans, traces, observed
   sample ratio), a dependency map (mermaid, from parent/child spans across services), a
   latency attribution table (p50/p99 and critical-path share per service and operation), the
   Collector config, the audit trail; events ``runbooks.tracing-rollout.{traced, reverted}``.
"""

from flows.tracing_rollout.flow import ServiceReport, TracingRolloutResult, tracing_rollout

__all__ = ["ServiceReport", "TracingRolloutResult", "tracing_rollout"]
