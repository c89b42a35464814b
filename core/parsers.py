"""The API's JSON parser: bounded in size and in nesting before Python's json module sees the body.

Python's json recurses once per array or object level, so a body nested 50,000 deep raises RecursionError (a 500)
instead of a parse error, and an unbounded body is read into memory whole. `BoundedJSONParser` (the default parser
of every DRF view, REST_FRAMEWORK in the settings) refuses both with the one error shape: 413 `payload_too_large`
over `API_JSON_MAX_BYTES`, 400 `nesting_too_deep` past `MAX_JSON_DEPTH` levels, and 400 `invalid` for a NUL
character (no PostgreSQL column can store one). `json_loads_bounded` applies the
same depth rule to JSON that arrives inside another body (a form field).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import IO, Any

from django.conf import settings
from rest_framework.parsers import JSONParser

from .errors import ErrorCode, InvalidInput, PayloadTooLarge

MAX_JSON_DEPTH = 64  # far beyond any document the API takes, far below the interpreter's recursion limit

_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # removed first: every quote left delimits a string
_STRING = re.compile(rb'"[^"]*"')
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")
_RUN = re.compile(rb"\[+|\]+")
_OPEN = ord("[")
# A \u0000 escape not itself escaped: PostgreSQL stores NUL in neither text nor jsonb, so it fails at the database.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def json_nesting_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text nests arrays/objects more than `limit` deep, found without recursion.

    Bodies with few brackets return at once. Otherwise strings are dropped and every bracket becomes `[` or `]`
    (only the depth matters); a run of more than `limit` openers answers at once; innermost pairs are peeled in
    C, one level per pass, while a pass still removes an eighth of what is left (so the passes cost a few times
    the body); the rest, with few runs by then, is summed run by run. Brackets that never close count as levels:
    such a body is invalid, and refusing it keeps the parser from recursing on it.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(_SQUARE, _NOT_A_BRACKET)
    if b"[" * (limit + 1) in brackets:
        return True
    peeled = 0
    while brackets and peeled <= limit:
        inner_removed = brackets.replace(b"[]", b"")
        removed = len(brackets) - len(inner_removed)
        if not removed:
            break
        brackets, peeled = inner_removed, peeled + 1
        if removed * 8 < len(brackets):
            break  # few pairs per pass now: walking the runs is cheaper
    # What is left, run by run: the parser's depth at each run's end (it stops at a closer with nothing open).
    steps = [len(run) if run[0] == _OPEN else -len(run) for run in _RUN.findall(brackets)]
    return peeled + max(accumulate(steps), default=0) > limit


def _check(body: bytes) -> None:
    if json_nesting_exceeds(body):
        raise InvalidInput(
            f"The JSON nests arrays and objects deeper than {MAX_JSON_DEPTH} levels.", code=ErrorCode.NESTING_TOO_DEEP
        )
    if _NUL_ESCAPE.search(body):
        raise InvalidInput("The JSON contains a NUL character (\\u0000), which cannot be stored.")


def json_loads_bounded(text: str | bytes) -> Any:
    """json.loads under the parser's rules (depth, no NUL); raises InvalidInput or json.JSONDecodeError."""
    raw = text.encode() if isinstance(text, str) else text
    _check(raw)
    return json.loads(raw)


class BoundedJSONParser(JSONParser):
    """DRF's JSONParser (same decoding, same strict constants) behind a size and a depth limit."""

    def max_bytes(self) -> int:
        return int(settings.API_JSON_MAX_BYTES)

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        limit = self.max_bytes()
        body = stream.read(limit + 1)  # never more than one byte past the limit into memory
        if len(body) > limit:
            raise PayloadTooLarge(
                f"The request body is larger than the limit of {limit} bytes.", extra={"limit": limit}
            )
        _check(body)
        return super().parse(io.BytesIO(body), media_type, parser_context)
