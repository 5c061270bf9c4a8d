"""Access-log analysis benchmark: our parser + geolocation + aggregation against ``wc -l`` and
GoAccess on the same generated file, in the same run.

Generates a seeded combined-format log (default 2M lines; IPv4 and IPv6 clients across many
countries with a skewed request distribution, a realistic status mix and about 0.5 % malformed
lines) in a temporary folder, then times, on that one file:

- ``summarise_logs`` end to end (read, parse, geolocate the unique clients, aggregate): lines/s;
- ``wc -l``: the practical floor of reading the file line by line;
- GoAccess (when installed): ``goaccess FILE --log-format=COMBINED -o report.json``, its whole
  run;
- Python's ``re`` on the same lines (the alternative parser the polars one was chosen against).

Ratios are ours / theirs in lines/s. The goal (issue 5) is >= 1M lines/s on 2 cores, i.e.
>= 100x GoAccess. The cores may be shared with other jobs, so the run also prints our CPU
seconds (all threads) and the load average before timing: lines / (CPU-s / cores) is what we
would do on idle cores. Python ``re`` is timed parsing only (no geolocation), GoAccess with
``--no-progress``. A benchmark reports, it does not judge.

    .venv/bin/python benchmarks/log_analysis.py [--lines N] [--seed S] [--json] [--no-goaccess]

The generator (:func:`write_combined_log`) is also what the tests use to compare our counts
with GoAccess's, so its malformed lines are kinds both tools reject.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Allocated IPv6 /32s of several registries and countries (US, IE, DE, CN, AU, AR, KE, JP, BR,
# IN), plus documentation and unique-local space that no registry assigns (unknown country).
_IPV6_PREFIXES = (
    "2001:4860",
    "2a00:1450",
    "2a02:2e0",
    "2001:da8",
    "2404:6800",
    "2800:3f0",
    "2c0f:fb50",
    "2001:240",
    "2804:14c",
    "2402:3a80",
)
_IPV6_UNKNOWN = ("2001:db8", "fd12:3456")
_STATUSES = (
    (200, 70),
    (201, 2),
    (204, 2),
    (101, 1),
    (301, 3),
    (302, 3),
    (304, 6),
    (400, 1),
    (401, 1),
    (403, 1),
    (404, 5),
    (429, 1),
    (500, 1),
    (502, 1),
    (503, 1),
    (504, 1),
)
_METHODS = ("GET",) * 8 + ("POST", "HEAD", "PUT", "DELETE")
_PATHS = (
    "/",
    "/index.html",
    "/api/v1/orders",
    "/api/v1/orders/{n}",
    "/static/app.{n}.js",
    "/static/style.css",
    "/images/p{n}.png",
    "/search?q=shoes&page={n}",
    "/checkout",
    "/health",
)
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
)
_REFERERS = ("-", "https://www.example.com/", "https://www.google.com/search?q=shop")
# Lines both GoAccess and we reject: not a log line at all, or cut before the status.
_GARBAGE = (
    "garbage line that is not a log entry",
    "\\x16\\x03\\x01\\x00\\xa5\\x01\\x00\\x00",
    "GET / HTTP/1.1",
)


def client_pool(rng: random.Random, size: int, *, ipv6_share: float = 0.2) -> list[str]:
    """``size`` distinct client addresses: public IPv4 across the whole unicast space (so the
    countries follow the registries' allocations), IPv6 in allocated /32s of ten countries, and
    about 1 % private or documentation addresses no registry assigns (unknown country)."""
    pool: set[str] = set()
    while len(pool) < size:
        roll = rng.random()
        if roll < 0.01:
            pool.add(f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
        elif roll < 0.012:
            prefix = rng.choice(_IPV6_UNKNOWN)
            pool.add(str(ipaddress.IPv6Address(f"{prefix}::{rng.randrange(1, 65536):x}")))
        elif roll < 0.012 + ipv6_share:
            prefix = rng.choice(_IPV6_PREFIXES)
            low = ":".join(f"{rng.randrange(65536):x}" for _ in range(3))
            pool.add(str(ipaddress.IPv6Address(f"{prefix}:{rng.randrange(65536):x}::{low}")))
        else:
            first = rng.randrange(1, 224)
            if first in (10, 127):
                continue
            pool.add(f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return sorted(pool)


def combined_lines(
    count: int, *, seed: int = 7, clients: int | None = None, malformed_share: float = 0.005
) -> Iterator[str]:
    """``count`` combined-format lines (no newline), seeded; clients are drawn with a skewed
    (Pareto-like) weight so a few clients make most requests, as on real sites."""
    rng = random.Random(seed)
    pool = client_pool(rng, clients or max(10, min(150_000, count // 12)))
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(pool))]
    rng.shuffle(weights)
    statuses = [code for code, _ in _STATUSES]
    status_weights = [weight for _, weight in _STATUSES]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    batch = 10_000
    for offset in range(0, count, batch):
        size = min(batch, count - offset)
        ips = rng.choices(pool, weights, k=size)
        codes = rng.choices(statuses, status_weights, k=size)
        for position, (ip, code) in enumerate(zip(ips, codes, strict=True)):
            if rng.random() < malformed_share:
                yield _malformed(rng, ip)
                continue
            when = start + timedelta(seconds=(offset + position) // 20)
            path = rng.choice(_PATHS).replace("{n}", str(rng.randrange(1000)))
            size_bytes = "-" if code in (204, 304) else str(rng.randrange(200, 90_000))
            yield (
                f"{ip} - - [{when:%d/%b/%Y:%H:%M:%S} +0000] "
                f'"{rng.choice(_METHODS)} {path} HTTP/1.1" {code} {size_bytes} '
                f'"{rng.choice(_REFERERS)}" "{rng.choice(_AGENTS)}"'
            )


def _malformed(rng: random.Random, ip: str) -> str:
    if rng.random() < 0.5:
        return rng.choice(_GARBAGE)
    return f'{ip} - - [01/Nov/2026:00:00:00 +0000] "GET /cut-short'  # truncated mid-request


def write_combined_log(path: Path, count: int, *, seed: int = 7, **options: Any) -> Path:
    """Write ``count`` generated lines to ``path`` (newline-terminated); returns ``path``."""
    with path.open("w", encoding="utf-8", newline="\n") as out:
        chunk: list[str] = []
        for line in combined_lines(count, seed=seed, **options):
            chunk.append(line)
            if len(chunk) >= 50_000:
                out.write("\n".join(chunk) + "\n")
                chunk.clear()
        if chunk:
            out.write("\n".join(chunk) + "\n")
    return path


# --- timings ----------------------------------------------------------------------------------

# The one-regex-per-line alternative the polars parser was benchmarked against.
_PY_COMBINED = re.compile(
    rb'^(\S+) \S+ \S+ \[[^\]]*\] "(?:[^"\\]|\\.)*" ([1-5]\d\d) (?:\d+|-)(?: "|$)'
)


def time_python_re(path: Path) -> dict[str, float]:
    """Parse with Python's ``re`` line by line and count requests per (ip, status class)."""
    started = time.perf_counter()
    counts: dict[tuple[bytes, int], int] = {}
    lines = 0
    match = _PY_COMBINED.match
    with path.open("rb") as log:
        for line in log:
            lines += 1
            found = match(line)
            if found is not None:
                key = (found[1], found[2][0])
                counts[key] = counts.get(key, 0) + 1
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "lines_per_second": lines / seconds}


def time_ours(path: Path) -> dict[str, Any]:
    from tasks.accesslogs import summarise_logs

    # best of 3: the first run also pays for reading the file into the page cache, and shared
    # machines are noisy (the baselines run once: they take seconds to minutes each)
    runs = []
    for _ in range(3):
        started, cpu = time.perf_counter(), time.process_time()
        summary = summarise_logs([str(path)])
        runs.append((time.perf_counter() - started, time.process_time() - cpu))
    seconds, cpu = min(runs)
    return {
        "seconds": seconds,
        "lines_per_second": summary.lines / seconds,
        # CPU time of all our threads: what the run costs whatever else shares the cores
        "cpu_seconds": cpu,
        "lines": summary.lines,
        "requests": summary.requests,
        "malformed": summary.malformed,
        "unique_clients": summary.unique_clients,
        "countries": len(summary.countries),
        "unknown_country_requests": summary.unknown_country_requests,
    }


def time_wc(path: Path, lines: int) -> dict[str, float] | None:
    wc = shutil.which("wc")
    if wc is None:
        return None
    started = time.perf_counter()
    subprocess.run([wc, "-l", str(path)], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "lines_per_second": lines / seconds}


def time_goaccess(path: Path, lines: int) -> dict[str, Any] | None:
    goaccess = shutil.which("goaccess")
    if goaccess is None:
        return None
    with tempfile.TemporaryDirectory(prefix="goaccess-") as home:
        report = Path(home) / "report.json"
        command = [
            goaccess,
            str(path),
            "--log-format=COMBINED",
            "--no-progress",
            "--no-global-config",
            "-o",
            str(report),
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=home)
        seconds = time.perf_counter() - started
        general = json.loads(report.read_text())["general"]
    return {
        "seconds": seconds,
        "lines_per_second": lines / seconds,
        "requests": general["valid_requests"],
        "failed": general["failed_requests"],
        "version": _goaccess_version(goaccess),
    }


def _goaccess_version(goaccess: str) -> str:
    out = subprocess.run([goaccess, "--version"], check=False, capture_output=True, text=True)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip() if first else "unknown"


def run(lines: int, seed: int, *, goaccess: bool) -> dict[str, Any]:
    import os

    with tempfile.TemporaryDirectory(prefix="log-analysis-") as folder:
        path = Path(folder) / "access.log"
        started = time.perf_counter()
        write_combined_log(path, lines, seed=seed)
        generated = time.perf_counter() - started
        size = path.stat().st_size
        subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)  # page cache
        load = os.getloadavg()[0]  # the cores are shared: say how busy they were
        ours = time_ours(path)
        wc = time_wc(path, lines)
        python_re = time_python_re(path)
        ga = time_goaccess(path, lines) if goaccess else None
    rate = ours["lines_per_second"]
    return {
        "lines": lines,
        "bytes": size,
        "cores": os.cpu_count(),
        "load_average": load,
        "generate_seconds": round(generated, 2),
        "ours": ours,
        "python_re": python_re,
        "wc": wc,
        "goaccess": ga,
        "ratio_vs_python_re": rate / python_re["lines_per_second"],
        "ratio_vs_wc": rate / wc["lines_per_second"] if wc else None,
        "ratio_vs_goaccess": rate / ga["lines_per_second"] if ga else None,
        "goal_lines_per_second": 1_000_000,
    }


def _print(result: dict[str, Any]) -> None:
    ours = result["ours"]
    print(
        f"log: {result['lines']:,} lines, {result['bytes'] / 1e6:.0f} MB, {result['cores']} cores"
    )
    print(
        f"ours (parse + geolocate + aggregate): {ours['seconds']:.2f} s, "
        f"{ours['lines_per_second']:,.0f} lines/s  (goal 1,000,000); "
        f"{ours['cpu_seconds']:.2f} CPU-s, load average before {result['load_average']:.1f}"
    )
    print(
        f"  requests {ours['requests']:,}, malformed {ours['malformed']:,}, "
        f"unique clients {ours['unique_clients']:,}, countries {ours['countries']}, "
        f"unknown-country requests {ours['unknown_country_requests']:,}"
    )
    py = result["python_re"]
    print(
        f"python re, line by line: {py['seconds']:.2f} s, {py['lines_per_second']:,.0f} lines/s"
        f"  -> ours x{result['ratio_vs_python_re']:.1f}"
    )
    if result["wc"]:
        wc = result["wc"]
        print(
            f"wc -l: {wc['seconds']:.2f} s, {wc['lines_per_second']:,.0f} lines/s"
            f"  -> ours x{result['ratio_vs_wc']:.2f}"
        )
    if result["goaccess"]:
        ga = result["goaccess"]
        print(
            f"{ga['version']}: {ga['seconds']:.2f} s, {ga['lines_per_second']:,.0f} lines/s"
            f"  -> ours x{result['ratio_vs_goaccess']:.1f} (goal x100); "
            f"its requests {ga['requests']:,}, failed {ga['failed']:,}"
        )
    else:
        print("goaccess: not installed or skipped (apt-get install goaccess)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines to generate")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-goaccess", action="store_true", help="do not time GoAccess")
    args = parser.parse_args(argv)
    if args.lines < 1:
        parser.error("--lines must be at least 1")
    result = run(args.lines, args.seed, goaccess=not args.no_goaccess)
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
