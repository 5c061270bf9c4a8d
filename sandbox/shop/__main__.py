"""``python -m sandbox.shop``: run one pod of the demo shop (see :mod:`sandbox.shop`).

Exit codes: 0 after a graceful termination; 1 when the image is a ``-crashloop`` build or the
port cannot be bound (the pod runner restarts it with back-off); 2 for an unknown image tag or
a wrong environment (a configuration error: restarting will not help, but Kubernetes restarts
it all the same, and the message says why).

The image and environment are checked *before* the heavy imports (httpx, pydantic, the
resilience layer), so a crash-looping or misconfigured pod exits within milliseconds.
"""

from __future__ import annotations

import os
import sys

from sandbox.shop.behaviour import Kind, UnknownImageTag, behaviour_for_image
from sandbox.shop.config import ConfigError, log, settings_from_env

# Optional parts of httpx that its packages import eagerly when installed, falling back to a
# stub on ImportError: the command-line client (click, rich, pygments: ~0.2 s) and HTTP/2
# (h2, hpack: ~0.09 s). A pod never uses either; ``None`` in ``sys.modules`` makes their import
# fail, so start-up skips ~0.3 s of a ~0.7 s total.
_UNUSED = ("httpx._main", "h2", "socksio")


def _skip_unused_imports() -> None:
    for name in _UNUSED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def main() -> int:
    try:
        settings = settings_from_env()
        behaviour = behaviour_for_image(settings.image)
    except (ConfigError, UnknownImageTag) as exc:
        log(f"error: {exc}")
        return 2
    if behaviour.kind is Kind.CRASHLOOP:
        log(
            f"fatal: {settings.role} {behaviour.tag} cannot start: "
            "panic: failed to load configuration (this build crashes at start on purpose)"
        )
        return 1
    _skip_unused_imports()

    from prometheus_client import disable_created_metrics

    from sandbox.shop.app import Shop
    from sandbox.shop.server import run

    disable_created_metrics()  # no *_created series: noise for every dashboard and rule

    try:
        shop = Shop(settings, behaviour, os.environ)
    except ConfigError as exc:
        log(f"error: {exc}")
        return 2
    except OSError as exc:  # e.g. the access log's folder does not exist
        log(f"fatal: {exc}")
        return 1
    return run(shop)


if __name__ == "__main__":
    sys.exit(main())
