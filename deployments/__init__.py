"""How the runbooks are deployed: schedules, parameters, tags, concurrency, automations.

Rules of this package:
- definitions only: one place lists every runbook's deployment, used by ``runbooks serve`` and
  mirrored by ``prefect.yaml`` for ``prefect deploy --all``;
- settings come from blocks by reference, never as literals; schedules are UTC.
"""
