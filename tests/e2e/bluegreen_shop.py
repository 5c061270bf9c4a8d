"""Shared pieces of the blue-green end-to-end tests: the shop under test and a background run.

Imported by ``tests/e2e/conftest.py`` (the ``k8s`` and ``shop`` fixtures) and by the test
modules (``Shop``, ``FAST``, ``Background``).
"""

from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from blocks import KubernetesTarget
from decisions.analysis import AnalysisSpec
from decisions.bluegreen import BlueGreenParams

NAMESPACE = "default"
FAST = AnalysisSpec(interval_seconds=0.5, count=3, success_rate_min=None, p95_latency_max_ms=None)


@dataclass
class Shop:
    k8s: KubernetesTarget
    service: str
    url: str

    def selector(self) -> dict[str, str]:
        with self.k8s.get_api_client() as api:
            found = self.k8s.core_v1(api).read_namespaced_service(self.service, NAMESPACE)
        return dict(found.spec.selector)

    def deployment(self, colour: str):
        with self.k8s.get_api_client() as api:
            try:
                return self.k8s.apps_v1(api).read_namespaced_deployment(
                    f"{self.service}-{colour}", NAMESPACE
                )
            except Exception:
                return None

    def params(self, image: str, **extra) -> BlueGreenParams:
        values = {
            "service": self.service,
            "namespace": NAMESPACE,
            "image": image,
            "replicas": 2,
            "pre_promotion": FAST,
            "post_promotion": FAST,
            "scale_down_delay_seconds": 1,
            "progress_deadline_seconds": 60,
        }
        return BlueGreenParams(**(values | extra))


@dataclass
class Background:
    """The flow run in a thread (with this thread's Prefect settings), tagged to be found."""

    tag: str
    flow: Any = None
    result: Any = None
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    def start(self, **kwargs: Any) -> Background:
        from prefect import tags

        if self.flow is None:
            from flows.blue_green import blue_green

            self.flow = blue_green

        def run() -> None:
            try:
                with tags(self.tag):
                    self.result = self.flow(**kwargs)
            except BaseException as exc:  # reported by join()
                self.error = exc

        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(run,), daemon=True)
        self._thread.start()
        return self

    def paused_run_id(self, timeout_seconds: float = 60) -> UUID:
        """The id of this flow run once it is Paused (polls the API, bounded)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType

        flow_filter = FlowRunFilter(
            tags=FlowRunFilterTags(all_=[self.tag]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
        )
        deadline = time.monotonic() + timeout_seconds
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                assert self._thread is not None
                if not self._thread.is_alive():
                    raise AssertionError(f"the flow ended before pausing: {self.error!r}")
                runs = client.read_flow_runs(flow_run_filter=flow_filter)
                if runs:
                    return runs[0].id
                time.sleep(0.2)
        raise AssertionError(f"no paused flow run tagged {self.tag} within {timeout_seconds}s")

    def join(self, timeout_seconds: float = 90) -> Any:
        assert self._thread is not None
        self._thread.join(timeout_seconds)
        assert not self._thread.is_alive(), "the flow run did not finish in time"
        if self.error is not None:
            raise self.error
        return self.result
