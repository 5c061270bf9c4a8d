"""Prefect blocks: where runbooks find the systems they act on, and how they connect to them.

``prefect block register -m blocks`` registers every block type exported here:

- :class:`KubernetesTarget` — a cluster (kubeconfig context or in-cluster) and a namespace;
- :class:`AwsTarget` — an AWS region and credentials (or a moto endpoint on loopback);
- :class:`HttpService` — an HTTP service to call or health-check;
- :class:`DatabaseTarget` — a service's database (SQLite or PostgreSQL) for migrations;
- :class:`TraceBackend` — a trace backend's query API (Jaeger ``/api/v3``) to read spans from;
- :class:`SlackIncomingWebhook` — a Slack incoming webhook (its URL a secret) for outcomes.

Rules of the package (so blocks stay safe to load anywhere, including the Prefect UI's workers):

1. A block holds typed settings and a client factory, nothing else: no calls to the system it
   describes, no file writes, no other I/O outside the factory that builds the client.
2. Every field is typed and described; secrets are ``SecretStr`` and never appear in ``repr``,
   logs or exception messages (validation errors do not echo input).
3. Every client the factories build has explicit timeouts, and retries in exactly one layer
   (``runbooks.resilience``): vendor clients' hidden retries are turned off or bounded there.
4. No block loads another block by name inside its methods: a flow loads the blocks it needs and
   passes them, so the dependency is visible in the flow's parameters.
5. No defaults computed at import time (e.g. the kubeconfig location is resolved when the client
   is built, not when this package is imported); vendor packages are imported inside factories.
6. Bad settings are refused when the block is built, with a message naming the field.
"""

from blocks.aws import AwsTarget
from blocks.database import DatabaseTarget
from blocks.http import HttpService
from blocks.kubernetes import KubernetesTarget
from blocks.slack import SlackIncomingWebhook
from blocks.traces import TraceBackend

__all__ = [
    "AwsTarget",
    "DatabaseTarget",
    "HttpService",
    "KubernetesTarget",
    "SlackIncomingWebhook",
    "TraceBackend",
]
