"""Access logs whose geography is known: the input of ``select-regions`` in the demo and tests.

Why generated, and how: ``select-regions`` turns access logs into demand per country with the
offline ``iptocc`` database (RIR allocations), so a log whose client addresses were *picked* with
that same database has a demand per country known exactly, and the runbook's answer can be
checked against brute force over that demand. Everything here is deterministic: the addresses
come from a fixed scan of the IPv4 space (the first ``per_country`` addresses ``iptocc`` places
in each country), the rest from a seeded ``random.Random``.

- :func:`addresses`: some IPv4 addresses per country;
- :func:`line`: one line in the combined log format (Apache / nginx ``combined``);
- :func:`generate`: a whole log as text, one line per request of ``demand`` (plus optional
  garbage lines, which the parser counts as malformed), shuffled, timestamps in order;
- :func:`upload`: the log to S3 (the sandbox's moto) through an ``AwsTarget`` block or a boto3
  S3 client, gzip-compressed when the key ends in ``.gz`` (the runbook reads ``.gz``
  transparently).

Text, not bytes, from :func:`generate`: tests write it to a local file (``gzip.open(..., "wt")``
or plain) and :func:`upload` compresses it for S3, so the one generator serves both.
"""

from __future__ import annotations

import gzip
import itertools
import random
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

START = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
"""The first line's time: fixed, so a log is the same on every run."""
PATHS = ("/", "/buy", "/checkout", "/static/app.js", "/api/cart")
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15",
    "curl/8.11.0",
)
GARBAGE = "garbage that is not a log line"


def addresses(countries: tuple[str, ...], per_country: int = 8) -> dict[str, list[str]]:
    """``per_country`` IPv4 addresses that ``iptocc`` places in each of ``countries``.

    The scan walks ever finer grids of the public IPv4 space (``a.b.1.7`` every 8th ``b``
    first, which finds most countries at once), so the answer never changes between runs.
    Raises ``ValueError`` naming the countries it could not fill (a code with no allocation).
    """
    return {c: list(found) for c, found in _addresses(tuple(sorted(set(countries))), per_country)}


@lru_cache(maxsize=16)
def _addresses(countries: tuple[str, ...], per_country: int) -> tuple[tuple[str, ...], ...]:
    import iptocc

    found: dict[str, list[str]] = {country: [] for country in countries}
    for grid in _grids():
        candidates = list(grid)
        for address, country in zip(candidates, iptocc.country_code(candidates), strict=True):
            if country in found and len(found[country]) < per_country:
                found[country].append(address)
        if all(len(v) == per_country for v in found.values()):
            return tuple((c, tuple(found[c])) for c in countries)
    short = sorted(c for c, v in found.items() if len(v) < per_country)
    raise ValueError(
        f"found fewer than {per_country} IPv4 addresses for {', '.join(short)} in iptocc's "
        "database; use ISO 3166-1 alpha-2 codes of countries with address allocations"
    )


def _grids() -> Iterator[Iterator[str]]:
    """Ever finer samples of the unicast IPv4 space (1.0.0.0 - 223.255.255.255)."""
    yield (f"{a}.{b}.1.7" for a in range(1, 224) for b in range(0, 256, 8))
    yield (f"{a}.{b}.1.7" for a in range(1, 224) for b in range(256) if b % 8)
    yield (f"{a}.{b}.{c}.7" for a in range(1, 224) for b in range(256) for c in range(2, 256, 16))


def line(
    ip: str,
    status: int = 200,
    *,
    when: datetime = START,
    method: str = "GET",
    path: str = "/shop",
    size: int = 512,
    referer: str = "-",
    agent: str = "Mozilla/5.0",
) -> str:
    """One request in the combined log format:
    ``ip - - [30/Nov/2026:10:00:00 +0000] "GET /shop HTTP/1.1" 200 512 "-" "Mozilla/5.0"``."""
    stamp = when.strftime("%d/%b/%Y:%H:%M:%S %z")
    return f'{ip} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {size} "{referer}" "{agent}"'


def generate(
    demand: Mapping[str, int],
    *,
    seed: int = 5,
    statuses: Mapping[int, float] | None = None,
    garbage_lines: int = 0,
    per_country: int = 8,
    start: datetime = START,
) -> str:
    """A combined-format access log holding exactly ``demand[country]`` requests per country.

    Each request comes from one of the country's :func:`addresses` (``per_country`` clients per
    country), with a status drawn from ``statuses`` (status -> weight; default all ``200``), a
    path, size and user agent drawn from small fixed lists. ``garbage_lines`` lines the parser
    must count as malformed are mixed in. Lines are shuffled, then timed one second apart from
    ``start``, so the log reads like a real one. Same arguments, same text. Ends with a newline.
    """
    if any(n < 0 for n in demand.values()) or garbage_lines < 0:
        raise ValueError("demand and garbage_lines must be counts (>= 0)")
    weights = dict(statuses or {200: 1.0})
    rng = random.Random(seed)
    pool = addresses(tuple(demand), per_country)
    codes, shares = list(weights), list(weights.values())
    requests = [
        (rng.choice(pool[country]), rng.choices(codes, shares)[0])
        for country, n in demand.items()
        for _ in range(n)
    ]
    entries: list[tuple[str, int] | None] = [*requests, *itertools.repeat(None, garbage_lines)]
    rng.shuffle(entries)
    lines = []
    for number, entry in enumerate(entries):
        if entry is None:
            lines.append(GARBAGE)
            continue
        ip, status = entry
        lines.append(
            line(
                ip,
                status,
                when=start + timedelta(seconds=number),
                path=rng.choice(PATHS),
                size=rng.randint(200, 20_000),
                agent=rng.choice(AGENTS),
            )
        )
    return "\n".join(lines) + "\n"


def upload(aws: Any, bucket: str, key: str, text: str) -> str:
    """Put ``text`` at ``s3://bucket/key`` (gzip-compressed when ``key`` ends in ``.gz``),
    creating the bucket when it does not exist; return the ``s3://`` URI.

    ``aws`` is an ``AwsTarget`` block (its client has the block's timeouts and bounded retries)
    or a boto3 S3 client. Errors are botocore's: this is sandbox set-up, not a runbook step.
    """
    s3 = aws.get_client("s3") if hasattr(aws, "get_client") else aws
    _ensure_bucket(s3, bucket)
    body = text.encode()
    if key.endswith(".gz"):
        body = gzip.compress(body, mtime=0)  # mtime 0: the same log gives the same object
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def _ensure_bucket(s3: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    region = s3.meta.region_name
    location = (
        {}
        if region in (None, "us-east-1")
        else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    )
    s3.create_bucket(Bucket=bucket, **location)
