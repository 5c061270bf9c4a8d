"""Prefect tasks: each is one external effect, grouped by the system it touches.

Rules of this package:
- one task, one call to one system (read a Deployment, patch a Service, change a record set),
  taking the block that says where the system is and how to reach it;
- calls go through ``runbooks.resilience`` and vendor errors are translated with
  ``runbooks.errors`` where they are raised (``raise ... from exc``); no Prefect task retries on
  top of a client's retries (one retry layer), ``runbooks.errors.retry_transient`` otherwise;
- every call has an explicit timeout; mutating tasks are idempotent (re-running converges).
"""
