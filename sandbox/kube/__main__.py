"""``python -m sandbox.kube [--port N] [--kubeconfig PATH]``: run the API emulator alone.

Prints the URL (and the kubeconfig path) on stdout, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from sandbox.kube.server import KubeApiServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.kube", description=__doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--kubeconfig", help="also write a kubeconfig for this server here")
    parser.add_argument("--context", default="sandbox", help="kubeconfig context name")
    parser.add_argument("--token", help="require this static bearer token")
    args = parser.parse_args(argv)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        api = KubeApiServer(args.host, args.port, token=args.token)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    with api:
        print(api.url, flush=True)
        if args.kubeconfig:
            print(api.write_kubeconfig(args.kubeconfig, context=args.context), flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
