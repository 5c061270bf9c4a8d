"""The schedule store between ``load-forecast`` (writes, nightly) and ``apply-scaling`` (reads,
hourly): one Prefect variable per service, ``load-forecast-schedule-<service>``.

Why Prefect variables: both runbooks already talk to the Prefect API, variables are readable
and editable in the UI (an operator can see, or pin, tomorrow's plan), and a write replaces the
whole value at once, so ``apply-scaling`` never reads half a schedule. Each value is tagged
``load-forecast-schedule`` and fits the server's 5,000-character limit (see
:class:`decisions.load_forecast.StoredSchedule`).

A value that no longer parses (edited by hand into something else) is reported with the
variable's name, not skipped silently: the service would otherwise stop following its plan
without anyone noticing.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from decisions.load_forecast import (
    SCHEDULE_VARIABLE_PREFIX,
    StoredSchedule,
    schedule_variable_name,
)

TAG = "load-forecast-schedule"
_PAGE = 100


@task(
    name="store-schedule", task_run_name="store-schedule-{schedule.service}", cache_policy=NO_CACHE
)
def store_schedule(schedule: StoredSchedule) -> str:
    """Write ``schedule`` to its variable (created or replaced); the variable's name."""
    from prefect.variables import Variable

    name = schedule_variable_name(schedule.service)
    value = schedule.model_dump(mode="json")
    Variable.set(name, value, tags=[TAG], overwrite=True)
    return name


def read_schedules(
    services: Sequence[str] = (),
) -> tuple[dict[str, StoredSchedule], dict[str, str]]:
    """Stored schedules by service (``services``, or all), and an error per service unreadable.

    A service asked for by name with no schedule is an error too: someone expects it planned.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import Variable

    found: list[Variable] = []
    with get_client(sync_client=True) as client:
        while True:  # the server answers at most its default limit (200) per page
            page = Variable.model_validate_list(
                client.request(
                    "POST",
                    "/variables/filter",
                    json={
                        "variables": {"name": {"like_": SCHEDULE_VARIABLE_PREFIX}},
                        "sort": "NAME_ASC",
                        "offset": len(found),
                        "limit": _PAGE,
                    },
                ).json()
            )
            found.extend(page)
            if len(page) < _PAGE:
                break
    by_name = {v.name: v for v in found if v.name.startswith(SCHEDULE_VARIABLE_PREFIX)}
    wanted = [schedule_variable_name(s) for s in services] if services else sorted(by_name)
    schedules: dict[str, StoredSchedule] = {}
    errors: dict[str, str] = {}
    for name in wanted:
        service = name.removeprefix(SCHEDULE_VARIABLE_PREFIX)
        variable = by_name.get(name)
        if variable is None:
            errors[service] = (
                f"service {service!r}: no schedule stored (variable {name!r}); has load-forecast "
                "planned it?"
            )
            continue
        try:
            schedules[service] = StoredSchedule.model_validate(variable.value)
        except ValidationError as exc:
            errors[service] = (
                f"service {service!r}: variable {name!r} does not hold a schedule "
                f"({exc.error_count()} error(s), first: {exc.errors()[0]['msg']})"
            )
    return schedules, errors


def delete_schedule(service: str) -> bool:
    """Remove ``service``'s schedule (it stops being applied); False when there was none."""
    from prefect.variables import Variable

    return bool(Variable.unset(schedule_variable_name(service)))
