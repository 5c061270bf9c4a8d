"""Offline IP -> country for access-log clients, with ``iptocc``.

The data source, and why it is good enough for choosing regions:
- ``iptocc`` (PyPI, code under MIT OR Apache-2.0, per its package metadata) embeds a table built
  from the five Regional Internet Registries' public delegation statistics (AFRINIC, APNIC,
  ARIN, LACNIC, RIPE NCC "delegated-extended" files, refreshed nightly upstream); lookups are
  in-process and offline (no API key, no network, nothing to download at run time), IPv4 and
  IPv6, about 4-6 M lookups/s batched;
- accuracy limits: **country level only**, and the country is the one the block was
  *registered* to, not where the client sits. Its author cites ~95 % agreement with MaxMind for
  IPv4 and fewer discrepancies for IPv6; it is wrong for multinational blocks registered in one
  country and used worldwide (cloud providers, mobile carriers, anycast, VPNs and proxies). That
  is the granularity the region choice works at; city-level coordinates would need another
  database (DB-IP Lite, CC BY 4.0);
- addresses no registry assigns (private, loopback, link-local, documentation, unallocated)
  have no country: they are reported as *unknown*, never dropped; an IPv4-mapped IPv6 address
  (``::ffff:a.b.c.d``) is looked up as its IPv4 address.

Validity follows ``inet_pton`` (what GoAccess checks): dotted quads without leading zeros, IPv6
without a zone index. A string that is not an address makes its log line malformed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import iptocc
import polars as pl

# iptocc builds one Python list per call; batches bound the memory of a huge client set.
_BATCH = 1_000_000

DATA_SOURCE = (
    "iptocc (MIT OR Apache-2.0): RIR delegation statistics, country of registration, "
    "country-level only"
)


def countries(ips: Sequence[str]) -> list[str | None]:
    """ISO 3166-1 alpha-2 code of each address (``None``: no registry country, or not an IP)."""
    found: list[str | None] = []
    for start in range(0, len(ips), _BATCH):
        found.extend(iptocc.country_code(ips[start : start + _BATCH]))
    return found


def classify_unknown(ip: str) -> tuple[bool, str | None]:
    """For an address ``iptocc`` found no country for: ``(is a valid address, country)``.

    Called only on the (few) unknowns, so strict parsing with ``ipaddress`` costs nothing on
    the hot path; the country is found for IPv4-mapped IPv6 addresses.
    """
    if "%" in ip:  # a zone index ("fe80::1%eth0") is not an address inet_pton accepts
        return False, None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False, None
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        return True, iptocc.country_code(str(mapped))
    return True, None


def locate(ips: pl.Series) -> pl.DataFrame:
    """A frame of ``ip`` -> ``cc`` (``None``: unknown) and ``valid`` (an address at all), for
    distinct ``ips``: one batched lookup, strict parsing only for the unknowns."""
    geo = pl.DataFrame(
        {"ip": ips, "cc": countries(ips.to_list())}, schema={"ip": pl.String, "cc": pl.String}
    )
    unknown = geo.filter(pl.col("cc").is_null())["ip"].to_list()
    checked = [classify_unknown(ip) for ip in unknown]
    fixes = pl.DataFrame(
        {"ip": unknown, "valid": [ok for ok, _ in checked], "cc2": [cc for _, cc in checked]},
        schema={"ip": pl.String, "valid": pl.Boolean, "cc2": pl.String},
    )
    return geo.join(fixes, on="ip", how="left").select(
        "ip", cc=pl.coalesce("cc", "cc2"), valid=pl.col("valid").fill_null(value=True)
    )
