"""The sandbox's demo shop: one small program, three roles, behaviour chosen by the image tag.

``python -m sandbox.shop`` runs the process of one Pod; the pod runner passes everything as
environment variables (the container's ``env`` plus the ones it adds):

=========================  ===========================================================
``SHOP_IMAGE``             required; the container image; its tag picks the behaviour
                           (:mod:`sandbox.shop.behaviour`: ``vN``, ``vN-broken``,
                           ``vN-slow``, ``vN-crashloop``; anything else exits 2)
``SHOP_ROLE``              ``frontend`` (default) | ``checkout`` | ``payments``
``PORT``                   listen on ``127.0.0.1:PORT`` (default 8080)
``POD_NAME``               shown in answers, metrics, logs (default ``<role>-local``)
``POD_NAMESPACE``          default ``default``
``SHOP_DOWNSTREAM_URL``    base URL of the next service (frontend -> checkout ->
                           payments); unset: the calling route answers 503
``SHOP_FLAGS_FILE``        JSON feature flags (a mounted ConfigMap), re-read on change
``SHOP_RETRY_CONFIG``      JSON retry settings of downstream calls, re-read on change
``SHOP_RETRY_<FIELD>``     defaults for those settings (e.g. ``SHOP_RETRY_MAX_ATTEMPTS``)
``SHOP_FAULT_FILE``        JSON runtime fault (``error_rate``, ``status``, ``latency_ms``,
                           ``degrade_health``), re-read on change
``SHOP_ACCESS_LOG``        combined-format access log file (default: stdout)
``SHOP_DATABASE_URL``      SQLAlchemy URL of the service database (``sqlite:///path``,
                           ``postgresql+psycopg://...``): ``POST /orders`` inserts there
                           (:mod:`sandbox.shop.orders`); unset: it answers 503
``OTEL_*``                 standard OpenTelemetry variables: OTLP/HTTP traces when an
                           endpoint is set and the SDK is installed
=========================  ===========================================================

Routes are listed in :mod:`sandbox.shop.app`; metrics in :mod:`sandbox.shop.metrics`; retry
settings in :mod:`sandbox.shop.downstream`; flags in :mod:`decisions.flags` (pure, shared with the
blue-green runbook that writes them). This package never imports Prefect, pandas or prophet:
a demo runs a dozen pods on two cores.
"""
