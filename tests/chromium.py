"""Headless Chromium driven over the DevTools protocol, for tests that look at a web UI as a
person would: open a page, wait until it shows something, click, take a screenshot.

Why the DevTools protocol and not ``chromium --dump-dom``: the Prefect UI is a single-page app
that fetches its data after loading and keeps the selected tab in its own state, so a test has to
wait for text to appear and click a tab. Debian's ``chromium`` speaks the protocol on a loopback
port; ``websockets`` (already installed with Prefect) is the client. No WebDriver, no download.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

_LISTENING = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium (its own throwaway profile) and one page of it."""

    def __init__(self, binary: str, *, width: int = 1440, height: int = 1100) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="runbooks-chromium-")
        # its chatter goes to a file: a pipe nobody reads would fill up and stall the browser
        self._log = Path(self._profile.name) / "chromium.log"
        with self._log.open("w") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    "--headless",
                    "--no-sandbox",  # CI runs as root
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--hide-scrollbars",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                    f"--user-data-dir={self._profile.name}",
                    f"--window-size={width},{height}",
                    "about:blank",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self._ids = itertools.count(1)
        try:
            port = self._port(timeout_seconds=30)
            pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            page = next(p for p in pages if p.get("type") == "page")
            self._socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    def _port(self, timeout_seconds: float) -> int:
        """The DevTools port, from the line Chromium logs when it listens (bounded)."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if found := _LISTENING.search(self._log.read_text(errors="replace")):
                return int(found.group(2))
            if self._process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(
            "chromium did not open its DevTools port:\n" + self._log.read_text()[-4000:]
        )

    def call(self, method: str, timeout_seconds: float = 30, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events arriving meanwhile are skipped)."""
        number = next(self._ids)
        self._socket.send(json.dumps({"id": number, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
        raise TimeoutError(f"{method}: no answer within {timeout_seconds:g} s")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        """The page's visible text."""
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, expression: str, timeout_seconds: float = 30) -> Any:
        """Poll a JavaScript expression until it is truthy; its value (bounded)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is between documents (navigation): ask again
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the page never satisfied {expression!r} in {timeout_seconds:g} s; it "
                    f"shows:\n{self.text()[:2000]}"
                )
            time.sleep(0.25)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        socket = getattr(self, "_socket", None)
        if socket is not None:
            socket.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
