"""Access log lines in the NCSA combined format, as nginx and Apache write them.

``127.0.0.1 - - [30/Nov/2026:09:00:00 +0000] "GET /buy?user=7 HTTP/1.1" 200 12 "-" "curl/8.5"``

The log-analysis runbooks parse exactly this format, so it is kept strict: the time in
``%d/%b/%Y:%H:%M:%S %z`` with English month names whatever the locale, ``-`` for an empty body
or header, and quotes, backslashes and control characters in quoted fields escaped the way
nginx does (``\\x22``), so a hostile user agent cannot forge a field. One ``write`` per line
under a lock: lines from concurrent requests never interleave.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_time(epoch_seconds: float) -> str:
    """``30/Nov/2026:09:00:00 +0000`` (UTC, English month: independent of the locale)."""
    t = time.gmtime(epoch_seconds)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def escape(value: str) -> str:
    """nginx's escaping of a quoted log field: ``"``, ``\\``, controls and non-ASCII as ``\\xHH``
    of the bytes received (``http.server`` decodes them as ISO-8859-1, so that is undone)."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogateescape")
    out: list[str] = []
    for byte in raw:
        if byte in (0x22, 0x5C) or byte < 0x20 or byte >= 0x7F:
            out.append(f"\\x{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def combined_line(
    *,
    remote: str,
    when: float,
    request_line: str,
    status: int,
    size: int,
    referer: str | None,
    user_agent: str | None,
) -> str:
    """One combined-format line, without the newline."""
    return (
        f"{remote} - - [{format_time(when)}] "
        f'"{escape(request_line)}" {status} {size if size > 0 else "-"} '
        f'"{escape(referer) if referer else "-"}" "{escape(user_agent) if user_agent else "-"}"'
    )


class AccessLog:
    """Appends lines to ``path`` (created if missing), or to stdout when ``path`` is ``None``."""

    def __init__(self, path: str | None):
        self._lock = threading.Lock()
        self._own = path is not None
        self._closed = False
        self._stream: TextIO = (
            open(path, "a", encoding="ascii", buffering=1) if path is not None else sys.stdout  # noqa: SIM115
        )

    def write(self, line: str) -> None:
        with self._lock:
            if self._closed:
                return  # a request that outlived the termination bound
            self._stream.write(line + "\n")
            if not self._own:
                self._stream.flush()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._own:
                self._stream.close()
            else:
                self._stream.flush()
