"""Access logs -> demand: requests, unique clients, status classes and countries, counted exactly.

``summarise_logs`` is the one entry point (``summarise_logs_task`` is its Prefect task): it
resolves the sources (``tasks.logsources``: local paths, globs, folders, ``s3://`` objects and
prefixes through an ``AwsTarget``, gzip transparently), parses them block by block on every
core (``tasks.logparse``: combined, common, JSON lines; auto-detected per source), geolocates
each unique client once (``tasks.geolocate``: iptocc, offline, country level) and aggregates
into a frozen :class:`LogSummary`.

Why it is built this way:
- the counts must agree *exactly* with a standard analyser (GoAccess 1.7, checked by
  ``tests/integration/test_accesslogs_goaccess.py``): ``requests`` is GoAccess's valid requests,
  ``unique_clients`` the number of distinct client strings (its hosts panel: one row per
  distinct address as written, so ``2001:db8::1`` and ``2001:DB8::1`` are two clients, as there;
  GoAccess's "unique visitors" is another thing, distinct IP + day + user agent, without 4xx),
  ``status_classes`` its status-code panel, ``malformed`` its failed requests. GoAccess keys
  hosts by a 32-bit hash, so on large logs it can merge two colliding addresses (2 of 147,836
  on the benchmark's 2M lines); our count is of the strings themselves;
- a log is parsed once into per-(client, status class) counts per block, so memory follows the
  number of clients, not lines, and geolocation runs on unique clients only (~150k for 2M lines);
- malformed lines never stop a run: they are counted per source with a few examples. Only input
  that cannot be right is an error naming it: a source that does not exist or is unreadable, an
  empty log, a log of only malformed lines (most often the wrong ``log_format``);
- progress is ``progress(bytes_done, bytes_total)`` in stored (compressed when compressed) bytes,
  called from the calling thread after each block (8 MiB) is read, and once at the end; a caller
  updating a Prefect progress artifact should throttle its own updates.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from runbooks.errors import InvalidRequestError
from runbooks.kit._run import logger as run_logger
from tasks.geolocate import DATA_SOURCE, locate
from tasks.logparse import (
    CLASS_COLUMNS,
    EXAMPLES,
    FORMATS,
    BlockCounts,
    detect_format,
    parse_block,
    parse_file,
)
from tasks.logsources import LogSource, read_blocks, resolve_sources

if TYPE_CHECKING:
    from blocks.aws import AwsTarget

Progress = Callable[[int, int], None]
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_SCHEMA = {"src": pl.UInt32, "ip": pl.String, **dict.fromkeys(CLASS_COLUMNS, pl.Int64)}
_MERGE_EVERY = 32


class CountryCount(BaseModel):
    """Requests and distinct clients of one country (ISO 3166-1 alpha-2)."""

    model_config = ConfigDict(frozen=True)

    country: str
    requests: int
    clients: int


class SourceCount(BaseModel):
    """What one file or object held: its format, size and line counts, a few malformed lines."""

    model_config = ConfigDict(frozen=True)

    source: str
    format: str
    bytes: int
    lines: int
    parsed: int
    malformed: int
    malformed_examples: tuple[str, ...] = ()


class LogSummary(BaseModel):
    """The demand in a set of access logs. ``lines`` are non-empty lines, each either ``parsed``
    (a request: ``requests == parsed``) or ``malformed``; per-country clients add up to
    ``unique_clients - unknown_country_clients``."""

    model_config = ConfigDict(frozen=True)

    sources: tuple[SourceCount, ...]
    lines: int
    parsed: int
    malformed: int
    requests: int
    unique_clients: int
    status_classes: dict[str, int]
    countries: tuple[CountryCount, ...]  # most requests first
    unknown_country_requests: int
    unknown_country_clients: int
    seconds: float
    geolocation: str = DATA_SOURCE

    def requests_by_country(self) -> dict[str, int]:
        """Country -> requests, unknown addresses left out (see ``unknown_country_requests``)."""
        return {item.country: item.requests for item in self.countries}

    def clients_by_country(self) -> dict[str, int]:
        """Country -> distinct clients, unknown addresses left out."""
        return {item.country: item.clients for item in self.countries}


class _Tally:
    """Running counts of one source while its blocks are parsed."""

    def __init__(self, source: LogSource, log_format: str):
        self.source, self.format = source, log_format
        self.lines = self.malformed = 0
        self.examples: list[str] = []

    def add(self, counts: BlockCounts) -> None:
        self.lines += counts.lines
        self.malformed += counts.malformed
        self.examples.extend(counts.examples[: EXAMPLES - len(self.examples)])


def summarise_logs(
    sources: Sequence[str],
    *,
    aws: AwsTarget | None = None,
    log_format: str = "auto",
    progress: Progress | None = None,
) -> LogSummary:
    """Count the requests, clients, status classes and countries in ``sources``.

    ``log_format`` is "auto" (detected per source from its first block), "combined", "common"
    or "json". Raises ``NotFoundError`` / ``InvalidRequestError`` naming the source for a missing
    or unreadable source, an empty log or a log with no valid line.
    """
    started = time.perf_counter()
    if log_format not in FORMATS:
        raise InvalidRequestError(
            f"log_format must be one of {', '.join(FORMATS)}, not {log_format!r}"
        )
    if isinstance(sources, str):
        sources = [sources]
    resolved = resolve_sources(list(sources), aws)
    tallies, frames = _parse_all(resolved, log_format, progress)
    summary = _aggregate(tallies, frames, time.perf_counter() - started)
    run_logger(__name__).info(
        "access logs: %d lines, %d requests, %d malformed, %d clients, %d countries in %.1f s",
        summary.lines,
        summary.requests,
        summary.malformed,
        summary.unique_clients,
        len(summary.countries),
        summary.seconds,
    )
    if progress is not None:
        total = sum(source.size for source in resolved)
        progress(total, total)
    return summary


def _parse_all(
    resolved: list[LogSource], log_format: str, progress: Progress | None
) -> tuple[list[_Tally], list[pl.DataFrame]]:
    """Read the sources in order on this thread, parse their blocks on a pool of cores."""
    total = sum(source.size for source in resolved)
    done = 0

    def seen(count: int) -> None:
        nonlocal done
        done += count

    workers = max(1, min(4, os.cpu_count() or 1))
    tallies: list[_Tally] = []
    frames: list[pl.DataFrame] = []
    pending: deque[tuple[_Tally, int, Future[BlockCounts]]] = deque()

    def collect() -> None:
        tally, index, future = pending.popleft()
        counts = future.result()
        tally.add(counts)
        frames.append(_tagged(counts, index))
        if len(frames) >= _MERGE_EVERY:  # memory follows the clients, not the lines
            frames[:] = [_merge(frames)]

    with ThreadPoolExecutor(workers, thread_name_prefix="parse-logs") as pool:
        for index, source in enumerate(resolved):
            tally = _Tally(source, log_format)
            tallies.append(tally)
            if _scan_whole(source, tally):  # polars reads it on every core: see parse_file
                assert source.path is not None
                counts = parse_file(str(source.path), tally.format, examples=EXAMPLES)
                tally.add(counts)
                frames.append(_tagged(counts, index))
                seen(source.size)
                if progress is not None:
                    progress(done, total)
                continue
            for block in read_blocks(source, seen):
                if tally.format == "auto":
                    tally.format = detect_format(block[: 256 * 1024])
                wanted = EXAMPLES - len(tally.examples)  # 0 once a source has its examples
                pending.append(
                    (tally, index, pool.submit(parse_block, block, tally.format, examples=wanted))
                )
                if progress is not None:
                    progress(done, total)
                while len(pending) > 2 * workers:
                    collect()
        while pending:
            collect()
    for tally in tallies:
        if tally.lines == 0:
            raise InvalidRequestError(f"the access log {tally.source.name!r} is empty")
    return tallies, frames


def _tagged(counts: BlockCounts, index: int) -> pl.DataFrame:
    """A parsed block's or file's clients, tagged with their source."""
    return counts.requests.with_columns(src=pl.lit(index)).cast(_SCHEMA).select(_SCHEMA.keys())


def _scan_whole(source: LogSource, tally: _Tally) -> bool:
    """Whether to parse ``source`` in one scan (a plain local file); detects its format."""
    try:
        if source.size == 0 or not source.is_plain_local_file():
            return False  # the block path reports an empty source, and reads gzip
        with source.open() as handle:
            head = handle.read(256 * 1024)
    except OSError as exc:
        raise InvalidRequestError(
            f"the log source {source.name!r} could not be read: {exc}"
        ) from exc
    if tally.format == "auto":
        tally.format = detect_format(head)
    return True


def _aggregate(tallies: list[_Tally], frames: list[pl.DataFrame], seconds: float) -> LogSummary:
    per_client = (_merge(frames) if frames else pl.DataFrame(schema=_SCHEMA)).with_columns(
        n=pl.sum_horizontal(CLASS_COLUMNS)
    )
    geo = locate(per_client["ip"].unique())
    per_client = per_client.join(geo, on="ip", how="left")
    invalid = per_client.filter(~pl.col("valid"))
    valid = per_client.filter(pl.col("valid"))
    _charge_invalid_clients(tallies, invalid)

    source_requests = dict(valid.group_by("src").agg(pl.col("n").sum()).iter_rows())
    source_counts = []
    for index, tally in enumerate(tallies):
        parsed = int(source_requests.get(index, 0))
        if parsed == 0:
            raise InvalidRequestError(
                f"the access log {tally.source.name!r} has no valid {tally.format} line "
                f"({tally.lines} malformed, the first: {tally.examples[0]!r}); check log_format"
            )
        source_counts.append(
            SourceCount(
                source=tally.source.name,
                format=tally.format,
                bytes=tally.source.size,
                lines=tally.lines,
                parsed=parsed,
                malformed=tally.malformed,
                malformed_examples=tuple(tally.examples),
            )
        )
    classes = valid.select(pl.col(CLASS_COLUMNS).sum()).row(0)
    by_country = (
        valid.filter(pl.col("cc").is_not_null())
        .group_by("cc")
        .agg(requests=pl.col("n").sum(), clients=pl.col("ip").n_unique())
        .sort(["requests", "cc"], descending=[True, False])
    )
    unknown = valid.filter(pl.col("cc").is_null())
    lines = sum(t.lines for t in tallies)
    requests = int(valid["n"].sum())
    return LogSummary(
        sources=tuple(source_counts),
        lines=lines,
        parsed=requests,
        malformed=lines - requests,
        requests=requests,
        unique_clients=valid["ip"].n_unique(),
        status_classes={
            name: int(count or 0) for name, count in zip(STATUS_CLASSES, classes, strict=True)
        },
        countries=tuple(
            CountryCount(country=cc, requests=r, clients=c) for cc, r, c in by_country.iter_rows()
        ),
        unknown_country_requests=int(unknown["n"].sum()),
        unknown_country_clients=unknown["ip"].n_unique(),
        seconds=round(seconds, 3),
    )


def _merge(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """One row per (source, client) with its requests per status class."""
    merged = pl.concat(frames).group_by("src", "ip").agg(pl.col(CLASS_COLUMNS).sum())
    return merged.select(_SCHEMA.keys())


def _charge_invalid_clients(tallies: list[_Tally], invalid: pl.DataFrame) -> None:
    """Lines whose client is not an IP address are malformed too (GoAccess fails them)."""
    for index, ip, lines in (
        invalid.group_by("src", "ip").agg(pl.col("n").sum()).sort("src", "ip").iter_rows()
    ):
        tally = tallies[index]
        tally.malformed += lines
        if len(tally.examples) < EXAMPLES:
            tally.examples.append(f"(client {ip[:100]!r} is not an IP address)")


# The same function as a Prefect task (no retries: reading the same logs again gives the same
# answer, and S3 reads already go through botocore's retries).
summarise_logs_task = task(summarise_logs, name="summarise-access-logs", cache_policy=NO_CACHE)
