"""Runbooks as Prefect flows: one module per runbook, named for it.

Rules of this package:
- a flow orchestrates and reads like the runbook it encodes: observe live state, build a frozen
  plan (``decisions``), publish it (``runbooks.kit``), stop on ``dry_run``, take the target's
  lock, act through tasks step by step with an undo for each, verify, report a result model;
- parameters are one pydantic model, so the Prefect UI renders a form and bad input is refused
  with the field's name before anything changes;
- no I/O of its own (tasks do it) and no decisions of its own (``decisions`` makes them);
- never imports ``sandbox``: the systems a flow touches come in as blocks.
"""
