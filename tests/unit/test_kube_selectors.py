"""Label and field selectors of the API emulator, against the real server's semantics."""

from __future__ import annotations

import pytest

from sandbox.kube.selectors import (
    SelectorError,
    field_value,
    parse_field_selector,
    parse_label_selector,
    selector_from_object,
)

WEB = {"app": "web", "tier": "front", "version": "3"}
API = {"app": "api", "tier": "back"}
BARE: dict[str, str] = {}


@pytest.mark.parametrize(
    ("text", "web", "api", "bare"),
    [
        ("", True, True, True),
        ("app=web", True, False, False),
        ("app==web", True, False, False),
        ("app!=web", False, True, True),  # != matches objects without the key
        ("app in (web, api)", True, True, False),
        ("app notin (web)", False, True, True),  # so does notin
        ("tier", True, True, False),
        ("!tier", False, False, True),
        ("app=web,tier=front", True, False, False),
        ("app=web,tier=back", False, False, False),
        ("  app = web ,  !canary ", True, False, False),
        ("version>2", True, False, False),
        ("version<3", False, False, False),
        ("app.kubernetes.io/name", False, False, False),
        ("app=", False, False, False),
    ],
)
def test_label_selector_semantics(text, web, api, bare) -> None:
    selector = parse_label_selector(text)
    assert (selector.matches(WEB), selector.matches(API), selector.matches(BARE)) == (
        web,
        api,
        bare,
    )


@pytest.mark.parametrize(
    "text",
    ["app in web", "app in ()", "app=web,", "=web", "app=web=x", "Bad Key=1", "app=-bad-", "x>a"],
)
def test_malformed_label_selectors_are_refused(text) -> None:
    with pytest.raises(SelectorError, match="unable to parse requirement"):
        parse_label_selector(text)


def test_structured_selector_matches_like_its_string_form() -> None:
    selector = selector_from_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.matches(WEB)
    assert not selector.matches({**WEB, "canary": "yes"})
    assert str(selector) == "app=web,!canary,tier in (edge,front)"
    assert parse_label_selector(str(selector)).matches(WEB)


def test_empty_structured_selector_is_empty() -> None:
    assert selector_from_object({}).empty()
    assert selector_from_object(None).matches(API)


FIELDS = ("metadata.name", "metadata.namespace", "status.phase")


def test_field_selectors() -> None:
    selector = parse_field_selector("metadata.name=web,status.phase!=Running", FIELDS)
    assert selector.matches({"metadata.name": "web", "status.phase": "Pending"})
    assert not selector.matches({"metadata.name": "web", "status.phase": "Running"})
    assert parse_field_selector("metadata.name==web", FIELDS).matches({"metadata.name": "web"})
    assert parse_field_selector(r"metadata.name=a\,b", FIELDS).matches({"metadata.name": "a,b"})


@pytest.mark.parametrize(
    ("text", "message"),
    [("spec.nodeName=x", "field label not supported: spec.nodeName"), ("metadata.name", "invalid")],
)
def test_unsupported_or_malformed_field_selectors(text, message) -> None:
    with pytest.raises(SelectorError, match=message):
        parse_field_selector(text, FIELDS)


def test_field_value_reads_dotted_paths() -> None:
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Running"}, "spec": {"hostNetwork": True}}
    assert field_value(pod, "status.phase") == "Running"
    assert field_value(pod, "spec.hostNetwork") == "true"
    assert field_value(pod, "spec.nodeName") == ""
