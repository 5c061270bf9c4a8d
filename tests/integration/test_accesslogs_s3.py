"""Access logs on S3 (the sandbox's moto server): objects, prefixes and globs read through an
``AwsTarget``'s client, gzip transparently, the same counts as the same bytes on disk, and a
missing object, prefix or bucket named in the error."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.log_analysis import combined_lines
from blocks import AwsTarget
from runbooks.errors import NotFoundError
from tasks.accesslogs import LogSummary, summarise_logs, summarise_logs_task


@pytest.fixture
def aws(sandbox: Any) -> AwsTarget:
    return AwsTarget(
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url=sandbox.endpoints["moto"],
    )


@pytest.fixture
def bucket(aws: AwsTarget) -> Iterator[str]:
    name = f"access-logs-{uuid.uuid4().hex[:12]}"
    s3 = aws.get_client("s3")
    s3.create_bucket(Bucket=name)
    yield name
    for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


def _log(seed: int) -> bytes:
    return ("\n".join(combined_lines(3_000, seed=seed, malformed_share=0.02)) + "\n").encode()


def test_objects_prefixes_and_globs_count_like_local_files(
    aws: AwsTarget, bucket: str, tmp_path: Path
) -> None:
    first, second = _log(1), _log(2)
    s3 = aws.get_client("s3")
    s3.put_object(Bucket=bucket, Key="web/2026/11/01/access.log", Body=first)
    s3.put_object(Bucket=bucket, Key="web/2026/11/02/access.log.gz", Body=gzip.compress(second))
    s3.put_object(Bucket=bucket, Key="api/access.log", Body=b"not read\n")
    (tmp_path / "1.log").write_bytes(first)
    (tmp_path / "2.log").write_bytes(second)
    local = summarise_logs([str(tmp_path / "1.log"), str(tmp_path / "2.log")])

    for sources in (
        [f"s3://{bucket}/web/"],
        [f"s3://{bucket}/web/2026"],  # a "folder" without its slash
        [f"s3://{bucket}/web/*/access.log*"],
        [f"s3://{bucket}/web/2026/11/01/access.log", f"s3://{bucket}/web/2026/11/02/access.log.gz"],
    ):
        calls: list[tuple[int, int]] = []
        summary = summarise_logs(
            sources, aws=aws, progress=lambda done, total, seen=calls: seen.append((done, total))
        )
        assert [s.source for s in summary.sources] == [
            f"s3://{bucket}/web/2026/11/01/access.log",
            f"s3://{bucket}/web/2026/11/02/access.log.gz",
        ]
        assert summary.model_dump(exclude={"seconds", "sources"}) == local.model_dump(
            exclude={"seconds", "sources"}
        )
        assert [(s.lines, s.parsed, s.malformed) for s in summary.sources] == [
            (s.lines, s.parsed, s.malformed) for s in local.sources
        ]
        total = sum(s.bytes for s in summary.sources)
        assert calls[-1] == (total, total)


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("missing.log", r"no S3 log object matches 's3://{bucket}/missing\.log'"),
        ("nothing/", r"no S3 log object matches 's3://{bucket}/nothing/'"),
        ("*.gz", r"no S3 log object matches 's3://{bucket}/\*\.gz'"),
    ],
)
def test_missing_objects_are_named(aws: AwsTarget, bucket: str, key: str, match: str) -> None:
    with pytest.raises(NotFoundError, match=match.format(bucket=bucket)):
        summarise_logs([f"s3://{bucket}/{key}"], aws=aws)


def test_missing_bucket_is_named(aws: AwsTarget) -> None:
    with pytest.raises(NotFoundError, match=r"s3://no-such-bucket-[0-9a-f]+/access\.log"):
        summarise_logs([f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/access.log"], aws=aws)


def test_the_prefect_task_reads_s3_inside_a_flow(
    prefect_server: str, aws: AwsTarget, bucket: str
) -> None:
    from prefect import flow

    aws.get_client("s3").put_object(
        Bucket=bucket, Key="x/access.log.gz", Body=gzip.compress(_log(3))
    )
    seen: list[tuple[int, int]] = []

    @flow(name="read-access-logs")
    def read_logs() -> LogSummary:
        return summarise_logs_task(
            [f"s3://{bucket}/x/"], aws=aws, progress=lambda done, total: seen.append((done, total))
        )

    summary = read_logs()
    assert summary.sources[0].source == f"s3://{bucket}/x/access.log.gz"
    assert summary.requests > 0
    assert seen[-1][0] == seen[-1][1] == summary.sources[0].bytes
