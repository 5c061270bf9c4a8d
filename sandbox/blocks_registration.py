"""Save blocks that point at a running sandbox: ``python -m sandbox.blocks_registration JSON``.

Runs in its own process with ``PREFECT_API_URL`` set to the sandbox's server, so the
supervisor never imports Prefect. Prints the names of the blocks it saved. Block *types* are
registered too, so the UI's block catalogue lists ours.
"""

from __future__ import annotations

import json
import sys

SANDBOX = "sandbox"


def main(endpoints: dict[str, str]) -> list[str]:
    from prefect.blocks.core import Block

    from blocks import AwsTarget, HttpService, KubernetesTarget, TraceBackend

    saved: list[tuple[Block, str]] = [
        (
            KubernetesTarget(
                kubeconfig_path=endpoints["kubeconfig"], context="sandbox", namespace="default"
            ),
            SANDBOX,
        ),
        (
            AwsTarget(
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                endpoint_url=endpoints["moto"],
            ),
            SANDBOX,
        ),
    ]
    if endpoints.get("traces"):
        saved.append((TraceBackend(base_url=endpoints["traces"], api="jaeger-v3"), SANDBOX))
    if endpoints.get("prometheus"):
        saved.append(
            (
                HttpService(base_url=endpoints["prometheus"], health_path="/-/ready"),
                "sandbox-prometheus",
            )
        )
    names = []
    for block, name in saved:
        type(block).register_type_and_schema()
        block.save(name, overwrite=True)
        names.append(f"{block.get_block_type_slug()}/{name}")
    return names


if __name__ == "__main__":
    print("\n".join(main(json.loads(sys.argv[1]))))
