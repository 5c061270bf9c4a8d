"""Access-log summaries (``tasks.accesslogs``): combined, common and JSON lines, gzip, globs,
malformed lines counted (never fatal), IPv4 and IPv6 clients geolocated offline with unknowns
counted, progress, and bad input named in the error; checked against a line-by-line reference
on a generated log."""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
from pathlib import Path

import iptocc
import pytest

from benchmarks.log_analysis import write_combined_log
from runbooks.errors import InvalidRequestError, NotFoundError
from tasks.accesslogs import LogSummary, summarise_logs, summarise_logs_task

_WHEN = "[01/Nov/2026:10:00:00 +0000]"


def combined(
    ip: str, status: int | str = 200, *, when: str = _WHEN, request: str = "GET / HTTP/1.1"
) -> str:
    return f'{ip} - - {when} "{request}" {status} 512 "-" "curl/8.5.0"'


def common(ip: str, status: int = 200) -> str:
    return f'{ip} - frank {_WHEN} "GET /a.gif HTTP/1.0" {status} 2326'


def write(path: Path, lines: list[str], *, compress: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# Addresses whose registry country iptocc knows (checked in test_known_addresses_geolocate).
US4, JP4, US6, IE6 = "8.8.8.8", "1.0.16.1", "2001:4860:4860::8888", "2a00:1450::1"
PRIVATE4, DOC6, MAPPED = "10.1.2.3", "2001:db8::1", "::ffff:8.8.8.8"


def test_known_addresses_geolocate() -> None:
    assert iptocc.country_code([US4, JP4, US6, IE6, PRIVATE4, DOC6]) == [
        "US", "JP", "US", "IE", None, None,
    ]  # fmt: skip


def test_combined_log_counts_requests_clients_classes_and_countries(tmp_path: Path) -> None:
    log = write(
        tmp_path / "access.log",
        [
            combined(US4, 200),
            combined(US4, 404),
            combined(JP4, 101),
            combined(US6, 299),
            combined(IE6, 503),
            combined(PRIVATE4, 302),
            combined(DOC6, 200),
            combined(MAPPED, 500),
        ],
    )
    summary = summarise_logs([str(log)])
    assert (summary.lines, summary.parsed, summary.malformed, summary.requests) == (8, 8, 0, 8)
    assert summary.unique_clients == 7
    assert summary.status_classes == {"1xx": 1, "2xx": 3, "3xx": 1, "4xx": 1, "5xx": 2}
    # ::ffff:8.8.8.8 is its own client (as written) but geolocated as 8.8.8.8
    assert summary.requests_by_country() == {"US": 4, "IE": 1, "JP": 1}
    assert summary.clients_by_country() == {"US": 3, "IE": 1, "JP": 1}
    assert [c.country for c in summary.countries] == ["US", "IE", "JP"]  # most requests first
    assert (summary.unknown_country_requests, summary.unknown_country_clients) == (2, 2)
    [source] = summary.sources
    assert (source.source, source.format, source.lines, source.parsed) == (
        str(log),
        "combined",
        8,
        8,
    )
    assert source.bytes == log.stat().st_size
    assert "iptocc" in summary.geolocation
    with pytest.raises(ValueError, match="frozen"):
        summary.requests = 0  # type: ignore[misc]


def test_common_format_is_detected_and_can_be_forced(tmp_path: Path) -> None:
    log = write(tmp_path / "common.log", [common(US4), common(JP4, 404), "junk"])
    detected = summarise_logs([str(log)])
    forced = summarise_logs([str(log)], log_format="common")
    for summary in (detected, forced):
        assert summary.sources[0].format == "common"
        assert (summary.requests, summary.malformed) == (2, 1)
    # a common-format log read as combined lacks referer and user agent on every line
    with pytest.raises(InvalidRequestError, match=r"common\.log.*no valid combined line"):
        summarise_logs([str(log)], log_format="combined")


def test_gzip_is_read_transparently_whatever_the_name(tmp_path: Path) -> None:
    lines = [combined(US4), combined(US6, 404), "garbage"]
    plain = summarise_logs([str(write(tmp_path / "a.log", lines))])
    zipped = summarise_logs([str(write(tmp_path / "a.log.gz", lines, compress=True))])
    rotated = summarise_logs([str(write(tmp_path / "a.log.1", lines, compress=True))])
    for summary in (zipped, rotated):
        assert summary.model_dump(exclude={"seconds", "sources"}) == plain.model_dump(
            exclude={"seconds", "sources"}
        )


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    data = gzip.compress(("\n".join([combined(US4)] * 1000) + "\n").encode())
    broken = tmp_path / "cut.log.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidRequestError, match=r"cut\.log\.gz.*could not be read"):
        summarise_logs([str(broken)])


def test_json_lines_with_usual_field_names(tmp_path: Path) -> None:
    records = [
        {"remote_addr": US4, "status": 200, "time": "2026-11-01T10:00:00Z"},
        {"client_ip": JP4, "status": "404", "@timestamp": "2026-11-01T10:00:01Z"},
        {"ip": US6, "status_code": 503},
        {"remote_addr": PRIVATE4, "status": 200},
        {"remote_addr": US4, "status": 700},  # not an HTTP status
        {"message": "no client here", "status": 200},
    ]
    lines = [json.dumps(record) for record in records] + ["{not json", ""]
    summary = summarise_logs([str(write(tmp_path / "app.jsonl", lines))])
    assert summary.sources[0].format == "json"
    assert (summary.lines, summary.requests, summary.malformed) == (7, 4, 3)
    assert summary.status_classes == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1}
    assert summary.requests_by_country() == {"US": 2, "JP": 1}
    assert summary.unknown_country_requests == 1


def test_malformed_lines_are_counted_with_examples_and_never_fatal(tmp_path: Path) -> None:
    lines = [
        combined(US4),
        "",  # empty lines are not lines (GoAccess skips them too)
        "   ",
        "garbage line",
        f'{US4} - - {_WHEN} "GET /cut-short',
        combined(US4, when="[41/Nov/2026:10:00:00 +0000]"),  # no such day
        combined(US4, 600),
        combined(US4, "099"),
        combined("01.2.3.4"),  # leading zero: not an address for inet_pton
        combined("fe80::1%eth0"),  # zone index
        combined("not-an-ip"),
        combined(JP4) + ' "extra nginx field"',  # trailing fields are fine
        combined(US4, request='GET /a\\" 404 x HTTP/1.1', status=500),  # escaped quote
    ]
    summary = summarise_logs([str(write(tmp_path / "mixed.log", lines))])
    assert (summary.lines, summary.requests, summary.malformed) == (12, 3, 9)
    assert summary.status_classes["5xx"] == 1
    assert summary.unique_clients == 2
    examples = summary.sources[0].malformed_examples
    assert len(examples) == 3
    assert examples[0] == "   "


def test_malformed_client_addresses_are_reported(tmp_path: Path) -> None:
    summary = summarise_logs([str(write(tmp_path / "ips.log", [combined(US4), combined("bogus")]))])
    assert summary.malformed == 1
    assert summary.sources[0].malformed_examples == ("(client 'bogus' is not an IP address)",)


def test_globs_folders_and_clients_across_sources(tmp_path: Path) -> None:
    write(tmp_path / "a.log", [combined(US4), combined(JP4)])
    write(tmp_path / "b.log", [combined(US4), combined(US6), "junk"])
    by_glob = summarise_logs([str(tmp_path / "*.log")])
    by_folder = summarise_logs([str(tmp_path)])
    for summary in (by_glob, by_folder):
        assert [s.source for s in summary.sources] == [
            str(tmp_path / "a.log"),
            str(tmp_path / "b.log"),
        ]
        assert [(s.lines, s.parsed, s.malformed) for s in summary.sources] == [(2, 2, 0), (3, 2, 1)]
        assert (summary.requests, summary.unique_clients) == (4, 3)


def test_small_blocks_and_merges_give_the_same_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = write_combined_log(tmp_path / "generated.log", 5_000, seed=3)
    whole = summarise_logs([str(log)])
    monkeypatch.setattr("tasks.logsources.BLOCK_BYTES", 4096)  # lines cut across reads
    monkeypatch.setattr("tasks.accesslogs._MERGE_EVERY", 3)
    pieces = summarise_logs([str(log)])
    assert pieces.model_dump(exclude={"seconds"}) == whole.model_dump(exclude={"seconds"})


def test_the_prefect_task_wraps_the_same_function(tmp_path: Path) -> None:
    log = write(tmp_path / "a.log", [combined(US4), combined(JP4, 404)])
    summary = summarise_logs_task.fn([str(log)])
    assert (summary.requests, summary.unique_clients) == (2, 2)


def test_progress_reports_stored_bytes_up_to_the_total(tmp_path: Path) -> None:
    log = write(tmp_path / "big.log.gz", [combined(US4)] * 50_000, compress=True)
    calls: list[tuple[int, int]] = []
    summarise_logs([str(log)], progress=lambda done, total: calls.append((done, total)))
    size = log.stat().st_size
    assert calls[-1] == (size, size)
    assert all(total == size for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


@pytest.mark.parametrize(
    ("sources", "error", "match"),
    [
        (["{tmp}/missing.log"], NotFoundError, r"missing\.log' does not exist"),
        (["{tmp}/*.nothing"], NotFoundError, r"\*\.nothing' matches no file"),
        (["{tmp}/empty.log"], InvalidRequestError, r"empty\.log' is empty"),
        (["{tmp}/blank.log"], InvalidRequestError, r"blank\.log' is empty"),
        (["{tmp}/garbage.log"], InvalidRequestError, r"garbage\.log' has no valid"),
        (["s3://logs/access.log"], InvalidRequestError, r"s3://logs/access\.log.*no AwsTarget"),
        ([], InvalidRequestError, "no access-log sources"),
    ],
)
def test_bad_input_is_an_error_naming_it(
    tmp_path: Path, sources: list[str], error: type[Exception], match: str
) -> None:
    (tmp_path / "empty.log").write_bytes(b"")
    (tmp_path / "blank.log").write_bytes(b"\n\n\n")
    write(tmp_path / "garbage.log", ["not a log line", "nor this"])
    with pytest.raises(error, match=match):
        summarise_logs([source.format(tmp=tmp_path) for source in sources])


def test_one_bad_source_among_good_ones_is_named(tmp_path: Path) -> None:
    good = write(tmp_path / "good.log", [combined(US4)])
    (tmp_path / "empty.log").write_bytes(b"")
    with pytest.raises(InvalidRequestError, match=r"empty\.log' is empty"):
        summarise_logs([str(good), str(tmp_path / "empty.log")])


def test_unknown_log_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="log_format must be one of"):
        summarise_logs([str(tmp_path)], log_format="w3c")


# --- against a line-by-line reference on a generated log -----------------------------------

_REFERENCE = re.compile(
    r"^(\S+) \S+ \S+ \[(\d\d)/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
    r'"(?:[^"\\]|\\.)*" ([1-5])\d\d (?:\d+|-) "(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*"'
)


def _reference(path: Path) -> dict[str, object]:
    """Plain Python, one line at a time: what the vectorised parser must agree with."""
    requests: dict[str, int] = {}
    classes = dict.fromkeys("12345", 0)
    lines = malformed = 0
    for line in path.read_text().splitlines():
        if not line:
            continue
        lines += 1
        found = _REFERENCE.match(line)
        try:
            ipaddress.ip_address(found[1] if found else "")
        except ValueError:
            malformed += 1
            continue
        requests[found[1]] = requests.get(found[1], 0) + 1  # type: ignore[index]
        classes[found[3]] += 1  # type: ignore[index]
    by_country: dict[str, int] = {}
    for ip, country in zip(requests, iptocc.country_code(list(requests)), strict=True):
        key = country or "unknown"
        by_country[key] = by_country.get(key, 0) + requests[ip]
    return {
        "lines": lines,
        "malformed": malformed,
        "requests": sum(requests.values()),
        "clients": len(requests),
        "classes": classes,
        "countries": by_country,
    }


def _ours(summary: LogSummary) -> dict[str, object]:
    countries: dict[str, int] = summary.requests_by_country()
    if summary.unknown_country_requests:
        countries["unknown"] = summary.unknown_country_requests
    return {
        "lines": summary.lines,
        "malformed": summary.malformed,
        "requests": summary.requests,
        "clients": summary.unique_clients,
        "classes": {name[0]: count for name, count in summary.status_classes.items()},
        "countries": countries,
    }


def test_generated_log_agrees_with_a_line_by_line_reference(tmp_path: Path) -> None:
    log = write_combined_log(tmp_path / "generated.log", 30_000, seed=11, malformed_share=0.02)
    summary = summarise_logs([str(log)])
    assert _ours(summary) == _reference(log)
    assert summary.malformed > 0
    assert summary.unknown_country_requests > 0
    assert any(":" in c for c in [line.split(" ", 1)[0] for line in log.read_text().splitlines()])


def _counts(summary: LogSummary) -> tuple:
    return (
        summary.lines,
        summary.parsed,
        summary.malformed,
        summary.unique_clients,
        summary.status_classes,
        summary.requests_by_country(),
        summary.unknown_country_requests,
        tuple(source.malformed_examples for source in summary.sources),
    )


@pytest.mark.parametrize("kind", ["combined", "json"])
def test_the_whole_file_scan_and_the_block_path_count_alike(tmp_path: Path, kind: str) -> None:
    """A plain local file is scanned in one go, a gzip one read in blocks: same counts, on
    escaped quotes, empty and blank lines, invalid UTF-8, malformed lines and bad clients."""
    if kind == "combined":
        lines = [
            combined(US4),
            combined(JP4, 404, request='GET /q?a=\\"x\\" HTTP/1.1'),
            "",
            combined(US6, 503),
            "   ",
            "not a log line",
            combined("not-an-ip"),
            combined(IE6, 301),
        ]
    else:
        lines = [
            json.dumps({"remote_addr": US4, "status": 200}),
            json.dumps({"client_ip": JP4, "status": "404"}),
            "",
            json.dumps({"ip": US6}),
            "{broken json",
            json.dumps({"remote_addr": IE6, "status": 301}),
        ]
    data = ("\n".join(lines) + "\n").encode() + b"\xff\xfe junk\n"
    plain = tmp_path / "plain.log"
    plain.write_bytes(data)
    packed = tmp_path / "packed.log"
    packed.write_bytes(gzip.compress(data))
    assert _counts(summarise_logs([str(plain)])) == _counts(summarise_logs([str(packed)]))
