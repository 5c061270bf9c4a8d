"""Label and field selectors, parsed and matched the way the real API server does.

Label selectors come in two shapes: the query-string form (``app=web,tier in (a,b),!canary``)
of ``?labelSelector=`` and the structured ``LabelSelector`` of a Deployment's ``spec.selector``
(``matchLabels`` + ``matchExpressions``). Both compile to the same list of :class:`Requirement`,
so "does this Deployment's selector match its template?" and "which pods does ``kubectl get -l``
list?" cannot disagree. Semantics follow ``k8s.io/apimachinery/pkg/labels``: ``!=`` and
``notin`` also match objects that lack the key; ``gt``/``lt`` compare integers.

Field selectors (``?fieldSelector=metadata.name=web``) support ``=``, ``==`` and ``!=`` on the
fields each kind declares selectable (every kind: ``metadata.name``, ``metadata.namespace``);
any other field is refused, as the real server does (``field label not supported``).

Pure: no I/O; errors are :class:`SelectorError` (the server turns them into 400 BadRequest).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_NAME = re.compile(rf"^{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_OPERATORS = {"=": "=", "==": "=", "!=": "!=", "in": "in", "notin": "notin", ">": "gt", "<": "lt"}
_SET_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


class SelectorError(ValueError):
    """A selector that cannot be parsed; ``str()`` is the message the server returns."""


def label_key_error(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``[prefix/]name``), or None when it is."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "prefix part must be non-empty"
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _LABEL_NAME.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    return None


def label_value_error(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None when it is."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _LABEL_VALUE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        )
    return None


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector; ``op`` is one of = != in notin exists ! gt lt."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if not present:
            return False
        try:
            have, want = int(str(value)), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == "gt" else have < want

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        symbol = {"gt": ">", "lt": "<"}.get(self.op, self.op)
        return f"{self.key}{symbol}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """An AND of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|[^\s!=(),<>]+|<|>)")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        if text[position:].isspace():
            break
        match = _TOKEN.match(text, position)
        if not match:
            raise SelectorError(f"unable to parse requirement: unexpected character at {position}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse the query-string form, e.g. ``app=web,tier in (a,b),!canary,release``."""
    if not text or not text.strip():
        return LabelSelector()
    tokens = _tokens(text)
    requirements: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise SelectorError(f"unable to parse requirement: unexpected end of {text!r}")
        token = tokens[i]
        i += 1
        return token

    while i < len(tokens):
        token = take()
        if token == "!":
            key = take()
            requirements.append(_requirement(key, "!", ()))
        else:
            key = token
            op = tokens[i] if i < len(tokens) else ","
            if op == ",":
                requirements.append(_requirement(key, "exists", ()))
            elif op in ("in", "notin"):
                i += 1
                if take() != "(":
                    raise SelectorError(f"unable to parse requirement: expected '(' after {op}")
                values: list[str] = []
                while True:
                    item = take()
                    if item == ")":
                        break
                    if item == ",":
                        continue
                    values.append(item)
                requirements.append(_requirement(key, op, tuple(values)))
            elif op in _OPERATORS:
                i += 1
                value = tokens[i] if i < len(tokens) and tokens[i] != "," else ""
                if value:
                    i += 1
                requirements.append(_requirement(key, _OPERATORS[op], (value,)))
            else:
                raise SelectorError(f"unable to parse requirement: found '{op}', expected: ','")
        if i < len(tokens):
            if tokens[i] != ",":
                raise SelectorError(f"unable to parse requirement: found '{tokens[i]}'")
            i += 1
            if i >= len(tokens):
                raise SelectorError("unable to parse requirement: found trailing ','")
    return LabelSelector(tuple(requirements))


def _requirement(key: str, op: str, values: tuple[str, ...]) -> Requirement:
    problem = label_key_error(key)
    if problem:
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r}: {problem}")
    if op in ("in", "notin") and not values:
        raise SelectorError(f"unable to parse requirement: for '{op}' operator, values required")
    if op in ("gt", "lt"):
        try:
            int(values[0])
        except ValueError:
            raise SelectorError(
                f"unable to parse requirement: for '{op}' operator, the value must be an integer"
            ) from None
    for value in values:
        problem = label_value_error(value)
        if problem:
            raise SelectorError(
                f"unable to parse requirement: invalid label value: {value!r}: {problem}"
            )
    return Requirement(key, op, tuple(sorted(values)) if op in ("in", "notin") else values)


def selector_from_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """Compile a structured ``LabelSelector`` (``matchLabels``/``matchExpressions``).

    The input must already be validated (see :mod:`sandbox.kube.validation`); this raises
    :class:`SelectorError` on anything it cannot interpret.
    """
    if not selector:
        return LabelSelector()
    requirements = [
        Requirement(key, "=", (str(value),))
        for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or []:
        op = _SET_OPERATORS.get(expression.get("operator", ""))
        if op is None:
            raise SelectorError(f"{expression.get('operator')!r} is not a valid selector operator")
        values = tuple(sorted(str(v) for v in expression.get("values") or ()))
        requirements.append(Requirement(str(expression.get("key", "")), op, values))
    return LabelSelector(tuple(sorted(requirements, key=lambda r: (r.key, r.op))))


# -- field selectors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool = False

    def matches(self, fields: Mapping[str, str]) -> bool:
        equal = fields.get(self.field, "") == self.value
        return not equal if self.negate else equal


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def fields(self) -> set[str]:
        return {r.field for r in self.requirements}


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise SelectorError("invalid field selector: trailing backslash")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None, supported: Iterable[str]) -> FieldSelector:
    """Parse ``metadata.name=web,status.phase!=Running``; fields outside ``supported`` fail."""
    if not text or not text.strip():
        return FieldSelector()
    allowed = set(supported)
    requirements = []
    for clause in _split_unescaped(text, ","):
        clause = clause.strip()
        match = re.match(r"^([^=!]+?)\s*(!=|==|=)\s*(.*)$", clause)
        if not match:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{clause}'")
        field, op, value = match.group(1).strip(), match.group(2), _unescape(match.group(3))
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")
        requirements.append(FieldRequirement(field, value, negate=op == "!="))
    return FieldSelector(tuple(requirements))


def field_value(obj: Mapping[str, Any], dotted: str) -> str:
    """The string value of ``a.b.c`` in ``obj`` as a field selector sees it ("" when absent)."""
    current: Any = obj
    for part in dotted.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)
