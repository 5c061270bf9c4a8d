"""Refuse secrets in anything the kit publishes (DESIGN principle 5).

Events and artifacts are stored by the Prefect server and shown to everyone who can open the UI,
so a ``SecretStr`` there is a leak even when pydantic masks it: a masked value still tells the
reader that a secret was sent where it does not belong. We refuse instead of masking, naming the
path to the offending value so the caller can fix the right field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

_MAX_DEPTH = 64


def find_secret(value: Any, path: str = "$") -> str | None:
    """The path of the first ``SecretStr``/``SecretBytes`` inside ``value``, or None."""
    return _find(value, path, set(), 0)


def refuse_secrets(value: Any, what: str) -> None:
    """Raise ``TypeError`` when ``value`` holds a secret anywhere; ``what`` names the argument."""
    where = find_secret(value, what)
    if where is not None:
        raise TypeError(
            f"{where} is a secret (SecretStr/SecretBytes); secrets never go into events or "
            "artifacts, so send a reference to it (a block name, a key id) instead"
        )


def _find(value: Any, path: str, seen: set[int], depth: int) -> str | None:
    if isinstance(value, SecretStr | SecretBytes):
        return path
    if value is None or isinstance(value, str | bytes | int | float | bool):
        return None
    if depth >= _MAX_DEPTH or id(value) in seen:
        return None
    seen.add(id(value))
    if isinstance(value, BaseModel):
        items: Any = ((name, getattr(value, name)) for name in type(value).model_fields)
        return _first(items, path, seen, depth, attribute=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
        return _first(items, path, seen, depth, attribute=True)
    if isinstance(value, Mapping):
        for key in value:
            if isinstance(key, SecretStr | SecretBytes):
                return f"{path}[<key>]"
        return _first(value.items(), path, seen, depth, attribute=False)
    if isinstance(value, list | tuple | set | frozenset):
        return _first(enumerate(value), path, seen, depth, attribute=False)
    return None


def _first(items: Any, path: str, seen: set[int], depth: int, *, attribute: bool) -> str | None:
    for key, item in items:
        child = f"{path}.{key}" if attribute else f"{path}[{key!r}]"
        found = _find(item, child, seen, depth + 1)
        if found is not None:
            return found
    return None
