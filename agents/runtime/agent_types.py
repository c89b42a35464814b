"""The built-in agent types. A plugin adds another with `registry.register_agent_type(name, obj)` where `obj`
has `async def run(self, ctx: RunContext) -> None` (see agents.runtime.runner.RunContext for what ctx offers)."""

from __future__ import annotations

from ..providers.base import ChatRequest, ToolSpec
from .limits import LimitExceeded


class RagAgentType:
    """Retrieve from the attached knowledge bases, then answer with citations."""

    name = "rag"

    async def run(self, ctx) -> None:
        hits = await ctx.retrieve(ctx.question)
        for i, hit in enumerate(hits):
            hit["n"] = i + 1
        messages = ctx.base_messages(context_passages=hits)
        async with ctx.citing_used(hits):
            await ctx.complete(
                ChatRequest(
                    model=ctx.agent.model,
                    messages=messages,
                    context=hits,
                    max_tokens=ctx.max_tokens,
                    options=ctx.agent.sampling,
                    temperature=ctx.agent.sampling.get("temperature"),
                    top_p=ctx.agent.sampling.get("top_p"),
                )
            )


class ToolsAgentType:
    """Function calling: the model asks for tools, we run them and feed the results back, up to a step limit."""

    name = "tools"

    async def run(self, ctx) -> None:
        messages = ctx.base_messages()
        specs = [
            ToolSpec(name=t.name, description=t.description, parameters=t.parameters) for t in ctx.agent.tools.values()
        ]
        max_steps = int(ctx.agent.limits["max_tool_steps"])
        found: list[dict] = []  # knowledge_search hits, cited once the answer shows which it used
        async with ctx.citing_used(found):
            await self._loop(ctx, messages, specs, max_steps, found)

    async def _loop(self, ctx, messages: list[dict], specs: list[ToolSpec], max_steps: int, found: list[dict]) -> None:
        for step in range(max_steps + 1):
            text, calls = await ctx.complete(
                ChatRequest(
                    model=ctx.agent.model,
                    messages=messages,
                    tools=specs,
                    max_tokens=ctx.max_tokens,
                    options=ctx.agent.sampling,
                    temperature=ctx.agent.sampling.get("temperature"),
                    top_p=ctx.agent.sampling.get("top_p"),
                )
            )
            if not calls:
                return
            if step == max_steps:
                raise LimitExceeded(
                    f"The agent used its {max_steps} tool steps without finishing its answer.",
                    extra={"limit": "max_tool_steps"},
                )
            messages.append(
                {
                    "role": "assistant",
                    "content": text,
                    "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls],
                }
            )
            for call in calls:
                outcome = await ctx.call_tool(call)
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": outcome.content}
                )
                if call.name == "knowledge_search" and outcome.ok and isinstance(outcome.result, dict):
                    found.extend(dict(hit) for hit in outcome.result.get("results", []))
