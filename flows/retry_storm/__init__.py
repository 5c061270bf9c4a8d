"""Runbook ``retry-storm``: detect a retry storm, contain it step by step, recover, restore.

The recipe's "Handling Retry Storms" response, as the on-call engineer would run it:

1. **measure** per caller and dependency, from Prometheus: logical request rate, retries per
   request (the alert's signal, :mod:`runbooks.alerts`), error share, breakers not closed, and
   the attempts each dependency receives (its load). Prometheus unreachable: the run refuses to
   act blind and changes nothing. No pair over the threshold: nothing changes, and it says so.
2. **plan** the containment ladder for the storming callers only
   (:func:`decisions.retry_storm.containment_plan`: tighten retries -> retries off -> breaker
   on), from their live retry documents and the settings their pods report in force; the plan
   is published before anything changes (``dry_run`` stops there).
3. **contain**, one rung at a time, for whoever storms at that moment: write the callers' retry
   ConfigMaps (field by field, guarded by ``resourceVersion``, the original kept in an
   annotation), wait for every pod to reload them, then measure over the time since: nothing
   storming (with data for every caller changed) is contained, otherwise the next rung after
   ``settle_seconds``. Once contained, the **kill switch**: the breaker rung for the callers of
   a dependency still failing ``kill_switch_error_share`` of their calls. A rung that cannot be
   applied is undone itself; the earlier rungs are kept or undone as ``on_step_failure`` says,
   and the result says which.
4. **recover**: the callers' calls succeed (error share at or under the bar) over
   ``recovered_intervals`` consecutive windows, bounded by ``recovery_timeout_seconds`` (then
   containment is kept and the run says so; a later run restores it).
5. **restore**, newest rung first, each step taken by the pods and watched for a relapse
   (storming again, or failing); a relapse re-applies that step and stops.

Reports: the timeline artifact, the load table (attempts/s per dependency during the storm,
contained, restored, and the reduction), events ``runbooks.retry-storm.{detected, contained,
recovered, restored, relapsed}``. Idempotent: a re-run during a contained storm finds nothing
storming and restores once healthy; one run acts at a time (a Prefect lock). An error after
detection (Prometheus or the API failing mid-run) ends the run with a report naming the rungs
still in force, never silently.
"""

from flows.retry_storm.flow import RetryStormResult, retry_storm

__all__ = ["RetryStormResult", "retry_storm"]
