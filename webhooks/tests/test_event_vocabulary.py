"""The event types offered to webhook subscribers are all published, with the payloads docs/webhooks.md states."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from core import events

ROOT = Path(__file__).resolve().parents[2]
APPS = ("core", "accounts", "iam", "tenants", "knowledge", "agents", "usage", "webhooks")


def _documented() -> dict[str, frozenset[str]]:
    """The `Event types` table of docs/webhooks.md: type -> keys of `data`."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    section = text.split("## Event types", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[a-z_]+\.[a-z_]+`", cells[0]):
            table[cells[0].strip("`")] = frozenset(re.findall(r"`([a-z_]+)`", cells[1]))
    return table


def _published_types() -> set[str]:
    """Event types named at a publish call site (any call or function whose name says publish) outside tests."""
    constants = {name: value for name, value in vars(events).items() if isinstance(value, str)}
    found: set[str] = set()

    def note(node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in constants:
                found.add(constants[name])

    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "tests" in path.parts or path == ROOT / "core" / "events.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and "publish" in ast.unparse(node.func):
                    for arg in [*node.args, *(kw.value for kw in node.keywords)]:
                        note(arg)
                elif isinstance(node, ast.FunctionDef) and "publish" in node.name:
                    for default in [*node.args.defaults, *node.args.kw_defaults]:
                        if default is not None:
                            note(default)
    return found


def test_every_offered_event_type_has_a_publisher():
    unpublished = sorted(set(events.EVENT_TYPES) - _published_types())
    assert unpublished == [], f"offered to webhook subscribers but never published: {unpublished}"


def test_docs_and_code_agree_on_every_event_payload():
    documented = _documented()
    assert sorted(documented) == sorted(events.EVENT_TYPES)
    for event_type, keys in events.EVENT_PAYLOAD_KEYS.items():
        assert documented[event_type] == keys, event_type


def test_a_payload_that_differs_from_the_documented_keys_is_refused():
    with pytest.raises(ValueError, match="document.progress"):
        events.publish(events.DOCUMENT_PROGRESS, {"document_id": 3, "percent": 50}, schema="t_acme")
