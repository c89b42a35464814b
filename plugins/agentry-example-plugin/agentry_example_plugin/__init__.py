"""Example Agentry plugin: one tool and one agent type, registered through the `agentry.plugins` entry point."""

from __future__ import annotations

from typing import Any

from agents.tools.base import Tool, ToolContext


class WordCountTool(Tool):
    name = "word_count"
    description = "Count the words in a text."
    parameters = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    }
    timeout = 2.0

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return {"words": len(arguments["text"].split())}


class EchoAgentType:
    """Streams the user's question back through the agent's provider-less path: no retrieval, no model."""

    name = "echo"

    async def run(self, ctx) -> None:
        # Plugins emit through the same context the built-in types use, so all transports just work.
        for i, word in enumerate(ctx.question.split(" ")):
            text = word if i == 0 else " " + word
            ctx.text_parts.append(text)
            await ctx.emitter.emit("token", {"text": text})
        ctx.usage["output_tokens"] += len(ctx.question.split())


def register(registry) -> None:
    registry.register_tool(WordCountTool)
    registry.register_agent_type("echo", EchoAgentType())


__all__ = ["EchoAgentType", "WordCountTool", "register"]
