"""Where access logs come from: local paths, globs and folders, ``s3://`` objects and prefixes,
gzip or not; read as newline-aligned blocks with byte progress.

Why it is built this way:
- every source is resolved (and sized) before anything is read, so a typo fails at once with an
  error naming it (``NotFoundError``: a path that does not exist, a glob or S3 prefix matching
  nothing, a missing bucket or object; ``InvalidRequestError``: an unreadable file, an
  ``s3://`` source without an ``AwsTarget``), and the progress total is known up front;
- gzip is recognised by its magic bytes, not the name, so ``access.log.1`` rotated by
  ``logrotate --compress`` with an odd name is still read; progress counts the *stored* bytes
  (compressed when compressed), the only total known before reading;
- blocks are cut at the last newline so no line is split between two parse jobs; S3 bodies are
  streamed, never held whole, and go through the block's client (botocore's standard retry mode
  is the one retry layer).
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from runbooks.errors import InvalidRequestError, NotFoundError, from_botocore

if TYPE_CHECKING:
    from blocks.aws import AwsTarget

BLOCK_BYTES = 8 * 1024 * 1024
_GLOB_CHARS = frozenset("*?[")


GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class LogSource:
    """One file or object to read: its name as reported, its stored size, how to open it."""

    name: str
    size: int
    open: Callable[[], BinaryIO]
    path: Path | None = None  # a local file (polars can scan it itself when not compressed)

    def is_plain_local_file(self) -> bool:
        """A local file that is not gzip: parsed in one scan instead of in blocks."""
        if self.path is None:
            return False
        with self.open() as handle:
            return handle.read(2) != GZIP_MAGIC


def resolve_sources(sources: list[str], aws: AwsTarget | None) -> list[LogSource]:
    """Every file or object the ``sources`` name, in order; errors name the source."""
    if not sources:
        raise InvalidRequestError("no access-log sources given; pass paths, globs or s3:// URIs")
    client: Any = None
    resolved: list[LogSource] = []
    for source in sources:
        if source.startswith("s3://"):
            if aws is None:
                raise InvalidRequestError(
                    f"the log source {source!r} is on S3 but no AwsTarget was given to read it"
                )
            client = client or aws.get_client("s3")
            resolved.extend(_s3_sources(client, source))
        else:
            resolved.extend(_local_sources(source))
    return resolved


def _local_sources(source: str) -> list[LogSource]:
    path = Path(source).expanduser()
    if _GLOB_CHARS & set(source):
        names = sorted(p for p in glob.glob(str(path), recursive=True) if os.path.isfile(p))
        if not names:
            raise NotFoundError(f"the log glob {source!r} matches no file")
        return [_local(Path(name)) for name in names]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        if not files:
            raise NotFoundError(f"the log folder {source!r} holds no file")
        return [_local(p) for p in files]
    if not path.exists():
        raise NotFoundError(f"the log file {source!r} does not exist")
    return [_local(path)]


def _local(path: Path) -> LogSource:
    if not os.access(path, os.R_OK):
        raise InvalidRequestError(f"the log file {str(path)!r} is not readable (permissions)")
    return LogSource(str(path), path.stat().st_size, lambda: path.open("rb"), path)


def _s3_sources(client: Any, uri: str) -> list[LogSource]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise InvalidRequestError(f"the log source {uri!r} names no bucket (s3://bucket/key)")
    wildcard = next((i for i, char in enumerate(key) if char in _GLOB_CHARS), None)
    if key and wildcard is None and not key.endswith("/"):
        try:
            head = client.head_object(Bucket=bucket, Key=key)
            return [_s3(client, bucket, key, int(head["ContentLength"]))]
        except Exception as exc:
            error = from_botocore(exc, f"read the log object {uri}")
            if not isinstance(error, NotFoundError):
                raise error from exc
        prefix = key + "/"  # not an object: maybe a "folder"
    else:
        prefix = key[:wildcard] if wildcard is not None else key
    found: list[LogSource] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"]
                if name.endswith("/") or (wildcard is not None and not fnmatch.fnmatch(name, key)):
                    continue
                found.append(_s3(client, bucket, name, int(item["Size"])))
    except Exception as exc:
        raise from_botocore(exc, f"list the log objects under {uri}") from exc
    if not found:
        raise NotFoundError(f"no S3 log object matches {uri!r} (no such key, none under it)")
    return found


def _s3(client: Any, bucket: str, key: str, size: int) -> LogSource:
    uri = f"s3://{bucket}/{key}"

    def open_body() -> BinaryIO:
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:
            raise from_botocore(exc, f"read the log object {uri}") from exc

    return LogSource(uri, size, open_body)


class _Counted:
    """A stored stream that reports every byte read (so gzip input shows real progress) and
    first serves the bytes peeked at to recognise gzip."""

    def __init__(self, raw: BinaryIO, seen: Callable[[int], None]):
        self._raw, self._seen = raw, seen
        self.head = raw.read(2)
        seen(len(self.head))

    def read(self, size: int = -1) -> bytes:
        head, self.head = self.head, b""
        if head and 0 <= size <= len(head):
            self.head = head[size:]
            return head[:size]
        data = self._raw.read(size - len(head) if size >= 0 else -1)
        self._seen(len(data))
        return head + data if head else data


def read_blocks(source: LogSource, seen: Callable[[int], None]) -> Iterator[bytes]:
    """The source's decompressed content as blocks ending at a newline (the last may not)."""
    try:
        raw = source.open()
        try:
            stored = _Counted(raw, seen)
            stream: Any = stored
            if stored.head == GZIP_MAGIC:
                stream = gzip.GzipFile(fileobj=stored, mode="rb")  # type: ignore[arg-type]
            carry = b""
            while block := stream.read(BLOCK_BYTES):
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    carry += block
                    continue
                yield carry + block[:cut] if carry else block[:cut]
                carry = block[cut:]
            if carry:
                yield carry
        finally:
            raw.close()
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidRequestError(
            f"the log source {source.name!r} could not be read: {exc}"
        ) from exc
