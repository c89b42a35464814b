"""The Tool interface.

    class MyTool(Tool):
        name = "weather"
        description = "Current weather for a city"
        parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        timeout = 10.0

        async def run(self, arguments: dict, context: ToolContext) -> dict | str: ...

`run_tool` validates the model's arguments against `parameters` (JSON Schema), enforces the timeout and caps the
result size, so a misbehaving model or tool yields a clear error result instead of a hung or flooded run.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from django.conf import settings

from core.errors import DomainError, ErrorCode, error_body


class ToolError(DomainError):
    """A tool failed in a way the model (and the user) should hear about; the run goes on."""

    code = ErrorCode.TOOL_FAILED
    status = 502


@dataclass
class ToolContext:
    schema: str  # tenant schema the run belongs to
    agent_id: int
    run_id: str
    knowledge_base_ids: list[int] = field(default_factory=list)
    kb_versions: dict[str, int] = field(default_factory=dict)
    retrieval: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict)


class Tool:
    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    timeout: float = 15.0

    def __init__(self, **options: Any) -> None:
        self.options = options

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any] | str:
        raise NotImplementedError


@dataclass
class ToolOutcome:
    ok: bool
    content: str  # what goes back to the model (JSON text)
    result: Any = None
    error: dict[str, Any] | None = None  # error_body(): the same shape as every other error
    duration_ms: int = 0


def tool_error_outcome(code: ErrorCode, message: str) -> ToolOutcome:
    body = error_body(code, message)
    return ToolOutcome(ok=False, content=json.dumps({"error": body}), error=body)


async def run_tool(
    tool: Tool, raw_arguments: str, context: ToolContext, *, timeout: float | None = None
) -> ToolOutcome:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        arguments = json.loads(raw_arguments or "{}")
        if not isinstance(arguments, dict):
            raise ValueError("arguments must be a JSON object")
    except ValueError as exc:
        return tool_error_outcome(
            ErrorCode.INVALID_ARGUMENTS, f"The arguments are not valid JSON for {tool.name}: {exc}"
        )
    try:
        jsonschema.validate(arguments, tool.parameters)
    except jsonschema.ValidationError as exc:
        return tool_error_outcome(ErrorCode.INVALID_ARGUMENTS, f"Invalid arguments for {tool.name}: {exc.message}")
    limit = min(timeout or tool.timeout, tool.timeout)
    try:
        result = await asyncio.wait_for(tool.run(arguments, context), timeout=limit)
    except TimeoutError:
        return tool_error_outcome(ErrorCode.TOOL_TIMEOUT, f"{tool.name} did not finish within {limit:g} s.")
    except DomainError as exc:  # ToolError, or a domain error from code the tool calls (UnsafeURL, ...)
        return tool_error_outcome(exc.code, exc.message)
    except Exception as exc:  # noqa: BLE001 - a broken tool must not take the run down
        return tool_error_outcome(ErrorCode.TOOL_FAILED, f"{tool.name} failed: {exc.__class__.__name__}")
    content = result if isinstance(result, str) else json.dumps(result, default=str)
    max_chars = settings.AGENTS_TOOL_MAX_RESULT_CHARS
    if len(content) > max_chars:
        # Truncate rather than fail: the model still gets something useful, and says so.
        content = json.dumps({"truncated": True, "original_chars": len(content), "content": content[:max_chars]})
    return ToolOutcome(ok=True, content=content, result=result, duration_ms=int((loop.time() - started) * 1000))
