"""JSON request bodies are bounded before Python's json module sees them (core.parsers): depth, size, NUL."""

from __future__ import annotations

import json
import time

import pytest

from core.errors import InvalidInput
from core.parsers import MAX_JSON_DEPTH, json_loads_bounded, json_nesting_exceeds


def _nested(depth: int, inner: str = "1") -> bytes:
    return ("[" * depth + inner + "]" * depth).encode()


@pytest.mark.parametrize(
    ("body", "too_deep"),
    [
        (_nested(MAX_JSON_DEPTH), False),
        (_nested(MAX_JSON_DEPTH + 1), True),
        (b'{"a":' * MAX_JSON_DEPTH + b"1" + b"}" * MAX_JSON_DEPTH, False),
        (b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1), True),
        (_nested(50_000), True),
        (b"[" * 50_000, True),  # unbalanced: the parser would recurse before it found the error
        (json.dumps([[i] for i in range(10_000)]).encode(), False),  # many brackets, shallow
        (json.dumps({"text": "[" * 10_000 + "{" * 10_000}).encode(), False),  # brackets inside a string
        (json.dumps({"text": '\\"' + "[" * 10_000}).encode(), False),  # ...after an escaped quote
        (json.dumps(["\\", "[" * 100]).encode(), False),  # a string ending in a backslash
        (b"[[]" * 200 + b"]" * 200, True),  # deep, with a sibling at every level
        (b"[[]" * 60 + b"]" * 60, False),
        (b"[" * 32 + b"{" * 33 + b"}" * 33 + b"]" * 32, True),  # kinds mixed
    ],
)
def test_nesting_depth_is_measured_without_recursion(body, too_deep):
    assert json_nesting_exceeds(body) is too_deep


def test_the_depth_check_costs_no_more_than_parsing_a_body_of_the_same_size():
    flat = json.dumps([[i] for i in range(200_000)]).encode()  # ~2 MB, shallow
    started = time.perf_counter()
    json.loads(flat)
    parse_seconds = time.perf_counter() - started
    hostile = [
        _nested(1_000_000),
        b'"\\"' * 700_000,  # escaped quotes: no quadratic string matching
        b"[" + b"[[[[[[[[[]]]]]]]]]," * 100_000 + b"1]",  # many siblings: every pass peels only a few levels
        b"[" + b",".join([b"[" * 60 + b"]" * 60] * 15_000) + b"]",
    ]
    for body in hostile:
        started = time.perf_counter()
        json_nesting_exceeds(body)
        assert time.perf_counter() - started < 2 * parse_seconds + 0.1, body[:20]


def test_json_inside_a_form_field_gets_the_same_rules():
    assert json_loads_bounded('{"a": [1, 2]}') == {"a": [1, 2]}
    with pytest.raises(InvalidInput) as deep:
        json_loads_bounded("[" * 5000 + "]" * 5000)
    assert deep.value.code == "nesting_too_deep"
    with pytest.raises(InvalidInput):
        json_loads_bounded('{"title": "a\\u0000b"}')
    assert json_loads_bounded('{"title": "a\\\\u0000b"}') == {"title": "a\\u0000b"}  # an escaped backslash: no NUL
