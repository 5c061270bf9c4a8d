"""The logo every block type shows in the Prefect UI, shipped inside the package.

Why a URL *and* the bytes:
- Prefect validates ``_logo_url`` as a pydantic ``HttpUrl`` when it registers a block type and
  again whenever it reads one back from the API, so a ``data:`` URL is refused (scheme must be
  http or https, at most 2083 characters). The URL therefore points at ``blocks/logo.png`` in the
  published repository.
- The same image ships here as bytes (and as ``blocks/logo.png``, byte for byte), so tests can
  check the logo offline by serving these bytes for :data:`LOGO_URL`, and the file that the URL
  names is always the one in the code.

The image is a 64x64 two-bit PNG (a page with a "play" mark: a runbook you can run), 199 bytes.
"""

from __future__ import annotations

import base64

LOGO_URL = "https://raw.githubusercontent.com/runbooks-as-code/runbooks/main/blocks/logo.png"
"""Where the Prefect UI fetches the block logo from (the published ``blocks/logo.png``)."""

_LOGO_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAEAAAABAAgMAAADXB5lNAAAACVBMVEUfTnnyqQD///+QLkKgAAAAeUlEQVR42mNg"
    "GCqAkYGBgWsBhH2tgYGBgQldBX0EWBgYGBj+RTAwMDCsosgMplWj7kB3xx8WNBX/D6BreYMu8B/D0A3oAr8xrL2A"
    "LsCK4TAHdAERdAFGBzSB/wfQBN6gazmAJvAb3VoDNAFW1JBiDSXo/TfYApdWAADpJBkRRtTlrQAAAABJRU5ErkJg"
    "gg=="
)

LOGO_PNG: bytes = base64.b64decode(_LOGO_PNG_BASE64)
"""The logo image itself (PNG, 64x64 px)."""
