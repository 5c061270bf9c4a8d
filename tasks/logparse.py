"""Vectorised parsing of access-log blocks with polars: combined, common and JSON lines.

Why polars, and why a DFA check plus two cheap cuts rather than one capturing regex:
- measured on the benchmark's generated 2M-line combined log (``benchmarks/log_analysis.py``,
  2 cores shared with other jobs): Python ``re`` line by line 0.26-0.35M lines/s for parsing
  alone; this pipeline (parse + geolocate + aggregate) 2.8-3.0 CPU-seconds, i.e. ~1.4M lines/s
  when it has both cores, 0.6-0.8M lines/s measured while other jobs held them;
- polars' regex engine is fast at *matching* (a lazy DFA: ``contains`` ~2.4M lines/s per core)
  and slow at *capturing* with a long pattern: ``extract_groups`` on the full validating
  pattern ran at ~0.6M lines/s per core, four times slower than ``contains`` + a client split +
  an unanchored status search, which is what ``parse_block`` does; per block, one row per
  client with a column per status class (cheaper to group than (client, class) pairs);
- blocks parse in a small thread pool (polars releases the GIL) while the next is read;
- a line is valid when GoAccess would count it (checked against GoAccess 1.7's COMBINED format):
  a client token, a day/month/time timestamp that ``strptime`` accepts, a quoted request, a
  status 100-599, a byte count or ``-``, then (combined) quoted referer and user agent; extra
  fields after them (nginx variants) are allowed. The client must also be an IP address, which
  is checked once per unique client at geolocation (``tasks.geolocate``), not per line;
- empty lines are not lines (GoAccess skips them too); every other line that does not parse is
  *malformed*: counted, a few kept as examples, never fatal;
- JSON lines: the first present of the usual field names (``remote_addr``, ``client_ip``, ...;
  ``status``, ``status_code``, ...); a line that is not JSON or lacks them is malformed. The
  time field (``time``, ``@timestamp``...) may be there or not: no count needs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

FORMATS = ("auto", "combined", "common", "json")
EXAMPLES = 3

_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
# ASCII classes on purpose: `\d` is Unicode-aware in polars' regex engine (and slower), and
# fields are split on spaces as GoAccess does.
_DATE = (
    rf"\[(?:0[1-9]|[12][0-9]|3[01])/(?:{_MONTHS})/[0-9]{{4}}:(?:[01][0-9]|2[0-3]):[0-5][0-9]:"
    r"(?:[0-5][0-9]|60) [+-][0-9]{4}\]"
)
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_HEAD = rf"^[^ ]+ [^ ]+ [^ ]+ {_DATE} {_QUOTED} [1-5][0-9][0-9] (?:[0-9]+|-)"
# Whole-line validity is a DFA match (``contains``), fast however long the pattern; capture
# engines are not, so the fields are cut out without one: the client is the text before the
# first space, the status the first `" NNN ` (right after the request, which in a valid line
# holds no quote unless escaped: lines with `\"` take the anchored capture instead).
PATTERNS = {
    "combined": rf"{_HEAD} {_QUOTED} {_QUOTED}",
    "common": rf"{_HEAD}(?: |$)",
}
_STATUS = r'" ([1-5])[0-9][0-9] '
_STATUS_ANCHORED = rf"^[^ ]+ [^ ]+ [^ ]+ \[[^\]]*\] {_QUOTED} ([1-5])"
CLASS_COLUMNS = tuple(f"c{digit}" for digit in range(1, 6))
JSON_IP_FIELDS = ("remote_addr", "client_ip", "clientip", "ip", "remote_ip", "client_addr")
JSON_STATUS_FIELDS = ("status", "status_code", "statusCode", "response_status")


@dataclass(frozen=True)
class BlockCounts:
    """One parsed block: its non-empty lines, the malformed ones (a few as examples) and the
    requests per (client, status class) of the others."""

    lines: int
    malformed: int
    examples: tuple[str, ...]
    requests: pl.DataFrame  # ip: str, c1..c5: requests of each status class


def detect_format(head: bytes) -> str:
    """The format of a log from its first lines: JSON when lines are objects, else the text
    format most lines match (combined wins ties; a garbage log reads as combined, all malformed).
    """
    lines = [line for line in head.decode("utf-8", "replace").splitlines() if line.strip()][:200]
    if not lines:
        return "combined"
    if sum(line.lstrip().startswith("{") for line in lines) * 2 > len(lines):
        return "json"
    scores = {name: sum(bool(re.match(p, line)) for line in lines) for name, p in PATTERNS.items()}
    return "common" if scores["common"] > 2 * scores["combined"] else "combined"


def parse_block(block: bytes, log_format: str, *, examples: int = EXAMPLES) -> BlockCounts:
    """Parse a newline-aligned block of ``log_format`` lines (not "auto") into counts."""
    return _counts(_lines(block).lazy(), log_format, b'\\"' in block, examples)


def parse_file(path: str, log_format: str, *, examples: int = EXAMPLES) -> BlockCounts:
    """Parse a whole uncompressed local file of ``log_format`` lines in one lazy scan.

    Why a second way in: polars then reads and parses the file on every core at once, about
    1.5x faster than feeding it 8 MiB blocks (measured on the 2M-line benchmark log). The file is
    read as one text column (separator NUL, no quoting, invalid UTF-8 replaced); the one
    difference from the block path is a line holding a NUL byte, cut there (such a line is
    binary junk and fails the format anyway unless a valid line precedes the NUL).
    """
    lines = pl.scan_csv(
        path,
        has_header=False,
        separator="\x00",
        quote_char=None,
        new_columns=["line"],
        infer_schema=False,
        encoding="utf8-lossy",
        truncate_ragged_lines=True,
    ).with_columns(pl.col("line").fill_null(""))
    return _counts(lines, log_format, None, examples)


def _counts(
    lines: pl.LazyFrame, log_format: str, escapes: bool | None, examples: int
) -> BlockCounts:
    """The counts of ``lines`` (one column ``line``); ``escapes`` None: not known beforehand.

    One lazy query and one grouping, nothing else over every line: eager steps would
    materialise each intermediate column. Every parsed line has a status class, so the parsed
    lines are the sum of the class counts, and the malformed ones follow from the non-empty
    lines; only when ``examples`` are wanted (the caller stops asking once it has enough) are
    the malformed lines looked for again.
    """
    line = pl.col("line")
    if log_format == "json":
        cls = pl.coalesce(_json_fields(JSON_STATUS_FIELDS)).str.extract(r"^([1-5])[0-9][0-9]$", 1)
        fields = lines.with_columns(ip=pl.coalesce(_json_fields(JSON_IP_FIELDS)), cls=cls)
        fields = fields.with_columns(ip=pl.when(pl.col("cls").is_not_null()).then(pl.col("ip")))
    else:
        fields = _text_fields(lines, PATTERNS[log_format], escapes=escapes)
    # one row per client, a column per status class: cheaper to group than (client, class)
    grouped = (
        fields.filter(pl.col("ip").is_not_null())
        .group_by("ip")
        .agg((pl.col("cls") == name[1]).sum().cast(pl.Int64).alias(name) for name in CLASS_COLUMNS)
    )
    counted = lines.select(non_empty=(line.str.len_bytes() > 0).sum())
    requests, totals = pl.collect_all([grouped, counted])
    parsed = int(sum(requests[name].sum() for name in CLASS_COLUMNS))
    non_empty = int(totals["non_empty"][0])
    malformed = non_empty - parsed
    found: tuple[str, ...] = ()
    if malformed and examples > 0:
        bad = fields.filter(pl.col("ip").is_null() & (line != "")).select(line).head(examples)
        found = tuple(text[:200] for text in bad.collect()["line"].to_list())
    return BlockCounts(non_empty, malformed, found, requests)


def _text_fields(lines: pl.LazyFrame, pattern: str, *, escapes: bool | None) -> pl.LazyFrame:
    line = pl.col("line")
    status = line.str.extract(_STATUS, 1)
    if escapes is not False:  # rare: a line with an escaped quote takes the anchored capture
        escaped = line.str.contains('\\"', literal=True)
        status = pl.when(escaped).then(line.str.extract(_STATUS_ANCHORED, 1)).otherwise(status)
    return lines.with_columns(
        ip=pl.when(line.str.contains(pattern)).then(
            line.str.split_exact(" ", 1).struct.field("field_0")
        ),
        cls=status,
    )


def _lines(block: bytes) -> pl.DataFrame:
    try:
        return pl.read_lines(block, name="line")
    except pl.exceptions.ComputeError:  # invalid UTF-8 somewhere: keep the line, mark the bytes
        return pl.read_lines(block.decode("utf-8", "replace").encode(), name="line")


def _json_fields(names: tuple[str, ...]) -> list[pl.Expr]:
    return [pl.col("line").str.json_path_match(f"$.{name}") for name in names]
