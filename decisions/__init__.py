"""Decisions with no I/O: the pure core of every runbook.

Rules of this package:
- no I/O: it never imports prefect, kubernetes, boto3, httpx, and never touches the network,
  the filesystem or the wall clock directly; time comes in as an injected clock or a value;
- values are immutable (frozen pydantic models or dataclasses); state machines that must hold
  state (retry budget, circuit breaker) keep it behind a lock and expose small, total methods;
- settings are validated at construction, with a message naming the field;
- everything here is tested with plain parametrised tests: no servers, no Prefect.
"""
