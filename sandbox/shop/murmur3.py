"""MurmurHash3 x86_32, the hash behind Unleash's stable flag bucketing. Pure: no I/O.

Why written here: the only Python package for it (``mmh3``) is a C extension the project does not
otherwise need, and a pod must stay small; the algorithm is 30 lines and its published test
vectors pin it down (``tests/unit/test_shop_flags.py``).

Strings are hashed as their UTF-8 bytes, as Unleash's Python, Java and Go clients do (the
JavaScript client's ``murmurhash3js`` hashes UTF-16 code units masked to bytes, which differs
from them for non-ASCII ids only).
"""

from __future__ import annotations

_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_MASK = 0xFFFFFFFF


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


def murmur3_32(data: bytes | str, seed: int = 0) -> int:
    """MurmurHash3 x86_32 of ``data`` (``str`` as UTF-8) as an unsigned 32-bit integer."""
    key = data.encode("utf-8") if isinstance(data, str) else data
    h = seed & _MASK
    length = len(key)
    whole = length - length % 4
    for offset in range(0, whole, 4):
        k = int.from_bytes(key[offset : offset + 4], "little")
        k = (k * _C1) & _MASK
        k = _rotl(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
        h = _rotl(h, 13)
        h = (h * 5 + 0xE6546B64) & _MASK
    tail = key[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * _C1) & _MASK
        k = _rotl(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
    return _fmix(h ^ length)
