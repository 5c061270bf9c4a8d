"""Our access-log counts agree exactly with GoAccess, the standard analyser, on the same file.

What matches what (GoAccess 1.7, ``--log-format=COMBINED``, JSON report):
- ``lines`` = ``general.total_requests`` (non-empty lines: GoAccess skips empty ones too);
- ``requests`` = ``general.valid_requests``, ``malformed`` = ``general.failed_requests``;
- ``unique_clients`` = the hosts panel's row count (``hosts.metadata.data.total.value``, one row
  per distinct client address as written). Not ``general.unique_visitors``: that counts distinct
  (address, day, user agent) and leaves 4xx out unless ``--4xx-to-unique-count``;
- ``status_classes`` = the status-codes panel's "1xx".."5xx" groups (hits).

One known way GoAccess undercounts: it keys its tables by a 32-bit djb2 hash of the string, so
two addresses with the same hash are one host to it. On the benchmark's 2M-line log (147,836
distinct clients) GoAccess reports 147,834 hosts, and the two it misses are exactly the two
djb2 collisions. The test checks its log has no collision, so that exact agreement is owed.

The log is the benchmark's generator (IPv4 and IPv6 clients, the usual status mix, garbage and
truncated lines) plus lines each rejected for one reason GoAccess also checks: an impossible
day, a status outside 100-599, a client that is not an address for ``inet_pton`` (leading zero,
zone index, a name), a common-format line, a whitespace-only line.

GoAccess is a system package (``goaccess``; ``bin/runbooks`` installs it as root): without it
this test skips on a developer's machine and fails under CI (``CI=true``), like the PostgreSQL
tests: a CI run that skipped the comparison would prove nothing about the counts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks.log_analysis import write_combined_log
from tasks.accesslogs import summarise_logs

_WHEN = "[02/Nov/2026:10:00:00 +0000]"
_EDGE_LINES = [
    '203.0.113.9 - - [41/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x"',
    f'8.8.8.8 - - {_WHEN} "GET / HTTP/1.1" 600 1 "-" "x"',
    f'8.8.8.8 - - {_WHEN} "GET / HTTP/1.1" 099 1 "-" "x"',
    f'08.8.8.8 - - {_WHEN} "GET / HTTP/1.1" 200 1 "-" "x"',
    f'fe80::1%eth0 - - {_WHEN} "GET / HTTP/1.1" 200 1 "-" "x"',
    f'proxy.example.com - - {_WHEN} "GET / HTTP/1.1" 200 1 "-" "x"',
    f'8.8.4.4 - - {_WHEN} "GET / HTTP/1.0" 200 2326',
    "   ",
    "",
    f'::ffff:8.8.8.8 - - {_WHEN} "GET / HTTP/1.1" 299 1 "-" "x"',
    f'1.0.16.1 - - {_WHEN} "GET / HTTP/1.1" 101 - "-" "x" "extra field"',
]


@pytest.fixture(scope="module")
def goaccess() -> str:
    found = shutil.which("goaccess")
    if found is None:
        message = "goaccess is not installed (apt-get install goaccess; bin/runbooks installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs GoAccess: {message}")
        pytest.skip(message)
    return found


def _goaccess_report(goaccess: str, log: Path, folder: Path) -> dict[str, Any]:
    report = folder / "report.json"
    subprocess.run(
        [
            goaccess,
            str(log),
            "--log-format=COMBINED",
            "--no-progress",
            "--no-global-config",
            "--max-items=1000000",  # every host listed, not the JSON default of 366
            "-o",
            str(report),
        ],
        check=True,
        capture_output=True,
        cwd=folder,
        timeout=120,
    )
    return json.loads(report.read_text())


_CLASS_LABELS = {
    "1xx Informational": "1xx",
    "2xx Success": "2xx",
    "3xx Redirection": "3xx",
    "4xx Client Errors": "4xx",
    "5xx Server Errors": "5xx",
}


def _djb2(text: str) -> int:
    value = 5381
    for byte in text.encode():
        value = (value * 33 + byte) & 0xFFFFFFFF
    return value


def test_counts_agree_exactly_with_goaccess(goaccess: str, tmp_path: Path) -> None:
    log = write_combined_log(tmp_path / "access.log", 40_000, seed=5, malformed_share=0.01)
    with log.open("a") as out:
        out.write("\n".join(_EDGE_LINES) + "\n")

    clients = {line.split(" ", 1)[0] for line in log.read_text().splitlines()}
    assert len({_djb2(client) for client in clients}) == len(clients)

    ours = summarise_logs([str(log)])
    report = _goaccess_report(goaccess, log, tmp_path)

    general = report["general"]
    assert ours.lines == general["total_requests"]
    assert ours.requests == general["valid_requests"]
    assert ours.malformed == general["failed_requests"]
    assert ours.malformed > len(_EDGE_LINES) - 4  # the generator's garbage + the edge lines

    hosts = report["hosts"]
    assert ours.unique_clients == hosts["metadata"]["data"]["total"]["value"]
    assert ours.unique_clients == len({row["data"] for row in hosts["data"]})

    theirs = dict.fromkeys(ours.status_classes, 0)
    for row in report["status_codes"]["data"]:
        theirs[_CLASS_LABELS[row["data"]]] = row["hits"]["count"]
    assert ours.status_classes == theirs
    assert all(theirs.values())  # every class is exercised
