"""Executes one run in an agent worker (Celery queue "agents"), decoupled from any HTTP connection.

The worker executes every run on one event loop per process (SDK and Redis connection pools are shared by the runs
streaming at once, see _process_loop), streams every event into the run's Redis stream, and persists the assistant
message at the end: complete, or incomplete with the partial answer and the error when anything failed (provider
error, timeout, limit, tool trouble).

A worker that dies mid-answer (killed, out of memory) persists nothing. While it runs it renews the run's liveness
key; a relay that waits on the run's stream and finds the key expired (`run_close_if_orphaned`), or a worker that
gets the run redelivered, rebuilds the partial answer from the stream's events, saves it and ends the stream with
an `error` event: the client learns at once, and what it was shown is what is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.epochs import epoch_key
from core.errors import DomainError, ErrorCode, error_body
from core.events import RUN_FINISHED, RUN_STARTED, apublish, event_subject, publish
from core.quotas import ConcurrencyLimited, Overloaded, chat_run_admit, chat_run_release, chat_run_release_async
from core.redis_clients import async_redis_client, loop_local
from core.tenancy import in_tenant
from knowledge.models import KnowledgeBase

from ..models import Conversation, Message, MessageStatus
from ..providers.base import ChatRequest, Cited, TextDelta, ToolCall, Usage
from ..providers.extractive import cited_numbers
from ..retrieval import search_knowledge_bases
from ..selectors import runs_streaming_since
from ..signals import run_finished
from ..tools.base import ToolContext, ToolOutcome, run_tool, tool_error_outcome
from .compiled import AgentMisconfigured, CompiledAgent, compiled_agent_cached, compiled_agent_get, tools_epoch
from .stream import (
    RunEmitter,
    alive_key,
    cancel_key,
    orphaned_events,
    read_events_now,
    run_close_events,
    run_meta_read,
    run_start_read,
)

logger = logging.getLogger(__name__)
CHARS_PER_TOKEN = 4
_local = threading.local()
CANCELLED = error_body(ErrorCode.CANCELLED, "Stopped at the user's request; the partial answer was kept.")
PERSIST_WAIT_SECONDS = 10.0  # how long a finished run waits for its row (see _persist_once_written)
WORKER_LOST = error_body(
    ErrorCode.PROVIDER_ERROR, "The worker running this answer stopped; the partial answer was kept."
)


def estimate_tokens(text: str) -> int:
    return max(1, len(text or "") // CHARS_PER_TOKEN)


_db_pool: ThreadPoolExecutor | None = None
_db_pool_lock = threading.Lock()


def _db_executor() -> ThreadPoolExecutor:
    """A small pool of DB threads shared by all runs of this worker process. Its threads keep their connections
    (opening a PostgreSQL connection costs more than the queries of a run start), so the pool size bounds the
    worker's connections however many runs stream at once."""
    global _db_pool
    if _db_pool is None:
        with _db_pool_lock:
            if _db_pool is None:
                _db_pool = ThreadPoolExecutor(
                    max_workers=int(getattr(settings, "AGENTS_DB_THREADS", 8)), thread_name_prefix="agents-db"
                )
    return _db_pool


def _db(fn):
    """Run ORM work off the event loop, on a pooled DB thread, in the run's tenant schema."""

    async def wrapper(schema: str, /, *args, **kwargs):  # positional: a call may pass schema= to fn
        def call():
            if connection.connection is not None and not connection.is_usable():
                connection.close()  # a broken pooled connection is replaced, never reused
            try:
                with in_tenant(schema):
                    return fn(*args, **kwargs)
            except Exception:
                if connection.connection is not None and not connection.is_usable():
                    connection.close()
                raise

        return await asyncio.get_running_loop().run_in_executor(_db_executor(), call)

    return wrapper


class RunContext:
    """What an agent type works with: config, conversation, retrieval, the provider, tools, and event emission."""

    def __init__(
        self,
        *,
        schema: str,
        run_id: str,
        agent: CompiledAgent,
        emitter: RunEmitter,
        history: list[dict[str, Any]],
        question: str,
        kb_versions: dict[str, int],
        answering: asyncio.Event,
    ):
        self.schema, self.run_id, self.agent, self.emitter = schema, run_id, agent, emitter
        self.history, self.question, self.kb_versions = history, question, kb_versions
        self.max_tokens = int(agent.limits["max_tokens"])
        self.provider = _provider_for(agent)
        self.text_parts: list[str] = []
        self.citations: list[dict[str, Any]] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.started = time.monotonic()
        self.first_token_ms: int | None = None
        self.answering = answering  # set at the first token
        self.finish_reason = "stop"
        self.cited_by_provider: list[int] | None = None  # a provider's own `Cited` list (the offline one)
        self.tool_context = ToolContext(
            schema=schema,
            agent_id=agent.agent_id,
            run_id=run_id,
            knowledge_base_ids=agent.knowledge_base_ids,
            kb_versions=kb_versions,
            retrieval=agent.retrieval,
            secrets=agent.secrets,
        )

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    async def retrieve(self, query: str) -> list[dict[str, Any]]:
        if not self.agent.knowledge_base_ids:
            return []
        return await _retrieve(self.schema, self.agent, self.kb_versions, query)

    async def cite(self, hit: dict[str, Any]) -> None:
        citation = {
            "n": hit.get("n", len(self.citations) + 1),
            "chunk_id": hit.get("chunk_id"),
            "document_id": hit.get("document_id"),
            "document_title": hit.get("document_title", ""),
            "position": hit.get("position"),
            "score": round(float(hit.get("score") or 0), 4),
            "knowledge_base_id": hit.get("knowledge_base_id"),
            "snippet": str(hit.get("text", ""))[:300],
            "page_start": hit.get("page_start"),
            "page_end": hit.get("page_end"),
            "section_path": hit.get("section_path") or [],
        }
        self.citations.append(citation)
        await self.emitter.emit("citation", citation)

    @contextlib.asynccontextmanager
    async def citing_used(self, hits: list[dict[str, Any]]) -> AsyncIterator[None]:
        """Cite the passages the answer used once it is written (see cite_used); a run that fails or is stopped
        midway still cites what its partial answer used, without hiding the failure."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                await self.cite_used(hits)
            raise
        await self.cite_used(hits)

    async def cite_used(self, hits: list[dict[str, Any]]) -> None:
        """Cite the passages the answer used: those the provider names (`Cited`), else those whose [n] marker the
        answer contains, else (an answer with no markers at all) every passage it was given. An answer that found
        nothing relevant therefore cites nothing."""
        if self.cited_by_provider is not None:
            wanted = self.cited_by_provider
        else:
            wanted = cited_numbers(self.text) or [hit.get("n") for hit in hits]
        by_number = {hit.get("n"): hit for hit in hits}
        for number in wanted:
            if number in by_number:
                await self.cite(by_number[number])

    def base_messages(self, *, context_passages: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        system = self.agent.system_prompt or "You are a helpful assistant."
        if context_passages is not None:
            if context_passages:
                block = "\n\n".join(
                    f"[{p['n']}] {p.get('document_title', '')}\n{p.get('text', '')}" for p in context_passages
                )
                system += (
                    "\n\nAnswer from these passages and cite them as [n]. If they do not contain the "
                    "answer, say so plainly.\n\n" + block
                )
            else:
                system += "\n\nNo relevant passages were found in the knowledge base; say so plainly."
        return [{"role": "system", "content": system}, *self.history, {"role": "user", "content": self.question}]

    async def complete(self, request: ChatRequest) -> tuple[str, list[ToolCall]]:
        calls: list[ToolCall] = []
        parts: list[str] = []
        async for event in self.provider.stream(request):
            if isinstance(event, TextDelta):
                if self.first_token_ms is None:
                    self.first_token_ms = int((time.monotonic() - self.started) * 1000)
                    self.answering.set()
                parts.append(event.text)
                self.text_parts.append(event.text)
                await self.emitter.token(event.text)
            elif isinstance(event, ToolCall):
                calls.append(event)
            elif isinstance(event, Usage):
                self.usage["input_tokens"] += event.input_tokens
                self.usage["output_tokens"] += event.output_tokens
            elif isinstance(event, Cited):
                self.cited_by_provider = list(event.numbers)
            else:
                self.finish_reason = event.reason
        return "".join(parts), calls

    async def call_tool(self, call: ToolCall) -> ToolOutcome:
        await self.emitter.emit("tool.call", {"id": call.id, "name": call.name, "arguments": call.arguments})
        tool = self.agent.tools.get(call.name)
        if tool is None:
            outcome = tool_error_outcome(ErrorCode.UNKNOWN_TOOL, f"No tool named {call.name!r}.")
        else:
            outcome = await run_tool(
                tool, call.arguments, self.tool_context, timeout=float(self.agent.limits["tool_timeout_seconds"])
            )
        record = {
            "id": call.id,
            "name": call.name,
            "arguments": call.arguments,
            "ok": outcome.ok,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
            "result": outcome.content[:2000],
        }
        self.tool_calls.append(record)
        await self.emitter.emit(
            "tool.result",
            {
                "id": call.id,
                "name": call.name,
                "ok": outcome.ok,
                "content": outcome.content[:2000],
                "error": outcome.error,
                "duration_ms": outcome.duration_ms,
            },
        )
        return outcome


@_db
def _retrieve(agent: CompiledAgent, kb_versions: dict[str, int], query: str) -> list[dict[str, Any]]:
    kbs = list(KnowledgeBase.objects.filter(pk__in=agent.knowledge_base_ids))
    return search_knowledge_bases(
        kbs=kbs,
        versions=kb_versions,
        query=query,
        top_k=int(agent.retrieval.get("top_k", 5)),
        min_score=float(agent.retrieval.get("min_score", 0.0)),
    )


def _trim_history(messages: list[dict[str, Any]], budget_tokens: int) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    used = 0
    for message in reversed(messages):
        cost = estimate_tokens(message["content"])
        if used + cost > budget_tokens:
            break
        kept.append(message)
        used += cost
    return list(reversed(kept))


def _load_from_memory(schema: str, meta: dict[str, str], tools: bytes | None) -> dict[str, Any] | None:
    """The run's inputs without touching the database or Redis, or None: the common case of a new conversation with
    an agent whose compiled configuration is cached and that reads no knowledge base (no DB thread hop, no query).
    `tools` is the tools epoch as run_start_read found it: this runs on the loop every run streams on, where a
    blocking Redis GET stalled every stream for its round trip (None: no epoch yet, nothing cached is trusted)."""
    if meta.get("history_before") or not meta.get("provider_stamp") or tools is None:
        return None
    compiled = compiled_agent_cached(schema, int(meta["agent_version_id"]), stamp=meta["provider_stamp"], tools=tools)
    if compiled is None or compiled.knowledge_base_ids:
        return None
    return _inputs(compiled, {}, [], meta["question"])


@_db
def _load(schema: str, meta: dict[str, str]) -> dict[str, Any]:
    compiled = compiled_agent_get(schema, int(meta["agent_version_id"]), stamp=meta.get("provider_stamp") or None)
    kb_versions = {}
    if compiled.knowledge_base_ids:
        kb_versions = {
            str(kb.pk): kb.current_version for kb in KnowledgeBase.objects.filter(pk__in=compiled.knowledge_base_ids)
        }
    history = []
    if meta.get("history_before"):  # the turns before this question (its own rows may not be written yet)
        history = list(
            Message.objects.filter(
                conversation_id=meta["conversation_id"],
                role__in=("user", "assistant"),
                created__lt=meta["history_before"],
            )
            .order_by("-created", "-id")
            .values("id", "role", "content", "alternative_of_id")[:40]
        )
        history = _newest_alternatives(history)
        history.reverse()
    return _inputs(compiled, kb_versions, history, meta["question"])


def _newest_alternatives(newest_first: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A regenerated turn continues with its newest answer: the alternatives it replaced are not history."""
    seen_turns: set[int] = set()
    kept = []
    for row in newest_first:
        turn = row["alternative_of_id"] or row["id"]
        if row["role"] == "assistant":
            if turn in seen_turns:
                continue
            seen_turns.add(turn)
        kept.append(row)
    return kept


def _inputs(
    compiled: CompiledAgent, kb_versions: dict[str, int], rows: list[dict[str, Any]], question: str
) -> dict[str, Any]:
    """The question, the history trimmed to the context budget, and what they came from."""
    history = [{"role": r["role"], "content": r["content"]} for r in rows if r["content"]]
    budget = (
        int(compiled.limits["context_tokens"])
        - int(compiled.limits["max_tokens"])
        - estimate_tokens(compiled.system_prompt)
        - estimate_tokens(question)
    )
    return {
        "compiled": compiled,
        "kb_versions": kb_versions,
        "history": _trim_history(history, max(budget, 0)),
        "question": question,
    }


@_db
def _persist(meta: dict[str, str], fields: dict[str, Any]) -> bool:
    """Save the answer on its row; False if the row is not there (yet: chat_start writes it while the run starts)."""

    if not Message.objects.filter(pk=int(meta["message_id"]), created=meta["message_created"]).update(**fields):
        return False
    Conversation.objects.filter(pk=meta["conversation_id"]).update(updated_at=timezone.now())
    return True


async def _persist_once_written(schema: str, run_id: str, meta: dict[str, str], fields: dict[str, Any]) -> None:
    """The run was queued before chat_start wrote its rows; a fast run (an early error, the offline provider) can
    end first. Wait for them: chat_start commits within milliseconds, or failed and cancelled the run."""
    deadline = time.monotonic() + PERSIST_WAIT_SECONDS
    while not await _persist(schema, meta, fields):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id}: its message row was never written (the request failed)")
        await asyncio.sleep(0.02)


def run_close_interrupted(schema: str, run_id: str, events: list[dict[str, Any]]) -> bool:
    """Close a run whose worker died after it started (sync, inside the tenant): save what it streamed on its message
    (incomplete, WORKER_LOST), then end its stream with `error` and message.end and free its chat slot. False if the
    stream moved on meanwhile (the worker was alive after all, or someone else closed it first)."""
    meta = run_meta_read(schema, run_id)
    if meta is None:
        return False
    calls = {e["data"].get("id"): e["data"] for e in events if e["type"] == "tool.call"}
    tool_calls = [
        {
            **{k: result.get(k) for k in ("id", "name", "ok", "error", "duration_ms")},
            "arguments": calls.get(result.get("id"), {}).get("arguments"),
            "result": result.get("content", ""),
        }
        for result in (e["data"] for e in events if e["type"] == "tool.result")
    ]
    error = dict(WORKER_LOST)
    content = "".join(e["data"]["text"] for e in events if e["type"] == "token")
    Message.objects.filter(
        pk=int(meta["message_id"]), created=meta["message_created"], status=MessageStatus.STREAMING
    ).update(
        content=content,
        citations=[e["data"] for e in events if e["type"] == "citation"],
        tool_calls=tool_calls,
        status=MessageStatus.INCOMPLETE,
        error=error,
    )
    closed = run_close_events(
        schema,
        run_id,
        events[-1]["seq"],
        error,
        {
            "status": "incomplete",
            "message_id": int(meta["message_id"]),
            "conversation_id": meta["conversation_id"],
            "usage": {},
            "kb_versions": {},
            "finish_reason": "error",
            "timings": {"first_token_ms": None, "total_ms": None},
        },
    )
    if closed:
        chat_run_release(schema=schema, run_id=run_id)
        logger.warning("run %s: its worker stopped mid-answer; closed with the partial answer", run_id)
        _interrupted_run_announce(schema, run_id, meta, content)
    return closed


def _interrupted_run_announce(schema: str, run_id: str, meta: dict[str, str], content: str) -> None:
    """What the worker would have sent at the end: run_finished (usage meters the run; the provider's token counts
    died with the worker, so the output is estimated from the text streamed) and RUN_FINISHED on the bus."""
    agent_id = int(meta["agent_id"])
    user_id = int(meta["user_id"]) if meta.get("user_id") else None
    tokens_out = estimate_tokens(content) if content else 0
    try:
        agent = compiled_agent_get(schema, int(meta["agent_version_id"]), stamp=meta.get("provider_stamp"))
        provider, model = agent.provider_kind, agent.model
    except Exception:  # noqa: BLE001 - an agent that no longer compiles is still metered, without a price
        provider = model = ""
    started = datetime.fromisoformat(meta["message_created"])
    latency_ms = max(0, int((timezone.now() - started).total_seconds() * 1000))
    for receiver, result in run_finished.send_robust(
        sender=CompiledAgent,
        schema=schema,
        run_id=run_id,
        agent_id=agent_id,
        user_id=user_id,
        api_key_id=int(meta["api_key_id"]) if meta.get("api_key_id") else None,
        provider=provider,
        model=model,
        tokens_in=0,
        tokens_out=tokens_out,
        latency_ms=latency_ms,
        status="incomplete",
    ):
        if isinstance(result, Exception):
            logger.error("run %s: %s failed", run_id, receiver, exc_info=result)
    publish(
        RUN_FINISHED,
        {"run_id": run_id, "agent_id": agent_id, "status": "incomplete", "tokens_in": 0, "tokens_out": tokens_out},
        schema=schema,
        subject=event_subject("run", run_id, owner_id=user_id, agent_id=agent_id),
    )


def runs_close_orphaned(schema: str) -> list[str]:
    """The sweep (beat, inside the tenant): close every run whose worker died, as a relay watching it would. A run
    nobody watches is otherwise closed only when the broker redelivers it, an hour later. Candidates are the
    answers still streaming within the events' lifetime (after it there is no stream left to rebuild them from)."""
    since = timezone.now() - timedelta(seconds=settings.AGENTS_RUN_EVENTS_TTL_SECONDS)
    closed = []
    for run_id in runs_streaming_since(since=since):
        events = orphaned_events(schema, str(run_id))
        if events is not None and run_close_interrupted(schema, str(run_id), events):
            closed.append(str(run_id))
    return closed


@_db
def _close_if_orphaned(schema: str, run_id: str) -> bool:
    events = orphaned_events(schema, run_id)
    return events is not None and run_close_interrupted(schema, run_id, events)


async def run_close_if_orphaned(schema: str, run_id: str) -> bool:
    """What a relay of the run's stream does while it waits: close the run if its worker died."""
    return await _close_if_orphaned(schema, schema, run_id)


@_db
def _close_redelivered(schema: str, run_id: str) -> bool:
    return run_close_interrupted(schema, run_id, read_events_now(schema, run_id))


def _error_dict(exc: BaseException) -> dict[str, Any]:
    """The run's `error` event and stored Message.error: the same body an HTTP client gets for this error."""
    if isinstance(exc, DomainError):
        return exc.as_dict()
    if isinstance(exc, TimeoutError):
        return error_body(ErrorCode.RUN_TIMEOUT, "The answer took longer than the agent's time limit.")
    return error_body(ErrorCode.INTERNAL_ERROR, "The run failed unexpectedly; the partial answer was kept.")


async def execute_run_async(schema: str, run_id: str) -> dict[str, Any]:
    meta, existing, running_elsewhere, (tools,) = await run_start_read(schema, run_id, [epoch_key(tools_epoch(schema))])
    if meta is None:
        logger.warning("run %s has no metadata (expired?)", run_id)
        return {"status": "missing"}
    emitter = RunEmitter(schema, run_id)
    started = time.monotonic()
    ctx: RunContext | None = None
    error: dict[str, Any] | None = None
    kb_versions: dict[str, int] = {}
    cancel_requested = asyncio.Event()
    agent_id = int(meta["agent_id"])
    run_subject = event_subject(
        "run", run_id, owner_id=int(meta["user_id"]) if meta.get("user_id") else None, agent_id=agent_id
    )
    announced: asyncio.Future | None = None
    answering = asyncio.Event()  # the first token is out, or the run ended without one

    async def announce() -> None:
        # run.started (dashboards, webhooks) goes out once the answer flows: published while the run loaded, its
        # serialisation, XADD and channel-layer send competed with the first token for the worker's CPU.
        await answering.wait()
        await apublish(RUN_STARTED, {"run_id": run_id, "agent_id": agent_id}, schema=schema, subject=run_subject)

    async def work() -> None:
        nonlocal started, ctx, kb_versions, announced
        if meta.get("queued_at"):  # the chat pool was full at chat_start: wait for a slot
            await _wait_for_slot(schema, run_id, meta, emitter, existing)
            started = time.monotonic()  # latency is the answer's, not the queue's
        emitter.emit_soon(  # written while the run loads: the first token waits for neither
            "message.start",
            {
                "conversation_id": meta["conversation_id"],
                "message_id": int(meta["message_id"]),
                "agent_id": int(meta["agent_id"]),
                "agent_version_id": int(meta["agent_version_id"]),
            },
        )
        announced = asyncio.ensure_future(announce())
        loaded = _load_from_memory(schema, meta, tools) or await _load(schema, schema, meta)
        compiled: CompiledAgent = loaded["compiled"]
        kb_versions = loaded["kb_versions"]
        if not compiled.provider_enabled:
            raise AgentMisconfigured(
                "The agent's LLM provider is disabled by an administrator.", code=ErrorCode.PROVIDER_DISABLED
            )
        ctx = RunContext(
            schema=schema,
            run_id=run_id,
            agent=compiled,
            emitter=emitter,
            history=loaded["history"],
            question=loaded["question"],
            kb_versions=kb_versions,
            answering=answering,
        )
        await asyncio.wait_for(compiled.agent_type.run(ctx), timeout=float(compiled.limits["run_timeout_seconds"]))

    try:
        if existing:
            # Redelivered after a worker died mid-run: never replay; close the run as interrupted.
            emitter.seq = int(existing[0][0].decode().split("-")[1])
            if b'"message.end"' in existing[0][1][b"e"]:
                return {"status": "already_done"}
            if existing[0][1].get(b"t") != b"run.queued":  # a queued run has not started yet: run it now
                if running_elsewhere:  # its worker lost the broker, not its life: it finishes the run
                    return {"status": "running_elsewhere"}
                await _close_redelivered(schema, schema, run_id)
                return {"status": "incomplete", "error": WORKER_LOST}
        task = asyncio.ensure_future(work())
        watched = cancel_watch().watch(schema, run_id, task, cancel_requested)
        try:
            await task
        except asyncio.CancelledError:
            if not cancel_requested.is_set():
                raise  # the worker itself is stopping
            error = dict(CANCELLED)
        finally:
            cancel_watch().unwatch(watched)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an error event + an incomplete message
        if not isinstance(exc, DomainError | TimeoutError):
            logger.exception("run %s failed", run_id)
        error = _error_dict(exc)
    status = "incomplete" if error else "complete"
    total_ms = int((time.monotonic() - started) * 1000)
    fields = {
        "content": ctx.text if ctx else "",
        "citations": ctx.citations if ctx else [],
        "tool_calls": ctx.tool_calls if ctx else [],
        "usage": ctx.usage if ctx else {},
        "latency_ms": total_ms,
        "first_token_ms": ctx.first_token_ms if ctx else None,
        "kb_versions": kb_versions,
        "status": status,
        "error": error or {},
    }
    cancelled = error is not None and error.get("code") == CANCELLED["code"]
    try:
        if error and not cancelled:  # stopping on request is not an error
            await emitter.emit("error", error)
        await _persist_once_written(schema, run_id, meta, fields)
    except Exception:  # noqa: BLE001
        logger.exception("run %s: could not persist the message", run_id)
    finally:
        await emitter.emit(
            "message.end",
            {
                "status": "cancelled" if cancelled else status,
                "message_id": int(meta["message_id"]),
                "conversation_id": meta["conversation_id"],
                "usage": fields["usage"],
                "kb_versions": kb_versions,
                "finish_reason": "cancelled"
                if cancelled
                else (ctx.finish_reason if ctx and not error else ("error" if error else "stop")),
                "timings": {"first_token_ms": fields["first_token_ms"], "total_ms": total_ms},
            },
        )
        await chat_run_release_async(schema=schema, run_id=run_id)
    run_usage = fields["usage"] or {}
    try:  # metering (usage) against the month's quotas
        await _run_finished_send(
            schema,
            schema=schema,
            run_id=run_id,
            agent_id=agent_id,
            user_id=int(meta["user_id"]) if meta.get("user_id") else None,
            api_key_id=int(meta["api_key_id"]) if meta.get("api_key_id") else None,
            provider=ctx.agent.provider_kind if ctx else "",
            model=ctx.agent.model if ctx else "",
            tokens_in=int(run_usage.get("input_tokens") or 0),
            tokens_out=int(run_usage.get("output_tokens") or 0),
            latency_ms=total_ms,
            status=status,
        )
    except Exception:  # noqa: BLE001 - metering must never lose the answer
        logger.exception("run %s: run_finished not sent", run_id)
    try:
        if announced is not None:
            answering.set()  # a run that ended before its first token was still started, and is announced first
            await announced
        finished = {
            "run_id": run_id,
            "agent_id": agent_id,
            "status": "cancelled" if cancelled else status,
            "tokens_in": int(run_usage.get("input_tokens") or 0),
            "tokens_out": int(run_usage.get("output_tokens") or 0),
        }
        await apublish(RUN_FINISHED, finished, schema=schema, subject=run_subject)
    except Exception:  # noqa: BLE001 - the answer is stored; a missed bus event must not fail the run
        logger.exception("run %s: run events not published", run_id)
    return {"status": status, "error": error}


@_db
def _run_finished_send(**kwargs: Any) -> None:
    """Announce the finished run (usage meters it). A receiver's failure is logged: it must never lose the answer."""
    for receiver, result in run_finished.send_robust(sender=CompiledAgent, **kwargs):
        if isinstance(result, Exception):
            logger.error("run %s: %s failed", kwargs["run_id"], receiver, exc_info=result)


@dataclass(eq=False)
class _Watched:
    schema: str
    run_id: str
    task: asyncio.Future
    requested: asyncio.Event
    renewed: float = field(default_factory=time.monotonic)  # run_start_read set the liveness key


class CancelWatch:
    """Stops a run when someone asks (POST /runs/{id}/cancel/, or a WebSocket "cancel"): cancelling its task closes
    the provider's stream, so the model stops generating (and billing) too. One poll per event loop reads the cancel
    flag of every run the loop executes (one MGET) every AGENTS_CANCEL_POLL_SECONDS, and renews the liveness keys
    due in the same round trip: a poll of its own per run cost a Redis round trip and a wake-up per run four times a
    second (4,000 commands a second at a thousand runs). A Redis hiccup never stops a run."""

    def __init__(self, client: Any):
        self.client = client
        self.runs: set[_Watched] = set()
        self.task: asyncio.Task[None] | None = None

    def watch(self, schema: str, run_id: str, task: asyncio.Future, requested: asyncio.Event) -> _Watched:
        watched = _Watched(schema, run_id, task, requested)
        self.runs.add(watched)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._poll())
        return watched

    def unwatch(self, watched: _Watched) -> None:
        self.runs.discard(watched)

    async def _poll(self) -> None:
        interval = float(getattr(settings, "AGENTS_CANCEL_POLL_SECONDS", 0.25))
        lifetime = int(settings.AGENTS_RUN_HEARTBEAT_SECONDS)
        while self.runs:
            runs = [watched for watched in self.runs if not watched.task.done()]
            now = time.monotonic()
            due = [watched for watched in runs if now - watched.renewed >= lifetime / 4]
            try:
                pipe = self.client.pipeline(transaction=False)
                for watched in due:
                    pipe.set(alive_key(watched.schema, watched.run_id), "1", ex=lifetime)
                pipe.mget([cancel_key(watched.schema, watched.run_id) for watched in runs])
                flags = (await pipe.execute())[-1] if runs else []
                for watched in due:
                    watched.renewed = now
                for watched, flag in zip(runs, flags, strict=True):
                    if flag is not None and not watched.task.done():
                        watched.requested.set()
                        watched.task.cancel()
                        self.runs.discard(watched)
            except Exception:  # noqa: BLE001
                logger.warning("cancel flags unreadable for %d runs", len(runs), exc_info=True)
            await asyncio.sleep(interval)


# The running event loop's watch (its Redis connections cannot cross loops).
cancel_watch = loop_local(lambda: CancelWatch(async_redis_client()))


async def _wait_for_slot(schema: str, run_id: str, meta: dict[str, str], emitter: RunEmitter, existing) -> None:
    """Poll the bounded chat queue (core.quotas.chat_run_admit join_only) until this run gets a pool slot,
    emitting run.queued {"position": n} whenever its place changes; raise Overloaded (-> error event, 503 semantics
    with retry_after) once CHAT_QUEUE_WAIT_SECONDS have passed since it joined the queue."""
    last = None
    if existing:
        try:
            last = json.loads(existing[0][1][b"e"])["data"].get("position")
        except (KeyError, ValueError, AttributeError):
            last = None
    deadline = float(meta["queued_at"]) + float(getattr(settings, "CHAT_QUEUE_WAIT_SECONDS", 30))
    poll = float(getattr(settings, "CHAT_QUEUE_POLL_SECONDS", 0.2))
    admit = _db(chat_run_admit)
    while True:
        try:
            slot = await admit(
                schema,
                tenant=schema,
                user=int(meta["user_id"]) if meta.get("user_id") else None,
                api_key=int(meta["api_key_id"]) if meta.get("api_key_id") else None,
                run_id=run_id,
                agent_id=int(meta["agent_id"]),
                agent_limit=int(meta["agent_max_runs"]),
                run_seconds=float(meta["run_timeout_seconds"]),
                join_only=True,
            )
            position = slot.position
        except ConcurrencyLimited:
            position = last  # the tenant's own runs fill its share: keep waiting (rejoins the line)
        if position == 0:
            return
        if position is not None and position != last:
            await emitter.emit("run.queued", {"position": position})
            last = position
        if time.time() >= deadline:
            await chat_run_release_async(schema=schema, run_id=run_id)  # leaves the queue
            retry_after = int(getattr(settings, "CHAT_RETRY_AFTER_SECONDS", 10))
            raise Overloaded(
                "All chat workers stayed busy; the run waited too long in the queue. Please retry shortly.",
                retry_after=retry_after,
            )
        await asyncio.sleep(poll)


def _provider_for(agent: CompiledAgent):
    """Provider clients are reused per event loop: creating one builds an HTTP client and loads CA certificates
    (tens of ms), which would otherwise land in every run's time to first token."""
    loop = asyncio.get_running_loop()
    cache = getattr(_local, "providers", None)
    if cache is None or getattr(_local, "providers_loop", None) is not loop:
        cache = _local.providers = {}
        _local.providers_loop = loop
    key = (agent.provider_class, tuple(sorted(agent.provider_kwargs.items())))
    provider = cache.get(key)
    if provider is None:
        if len(cache) >= 64:
            cache.clear()
        provider = cache[key] = agent.make_provider()
    return provider


_runs_loop: asyncio.AbstractEventLoop | None = None
_runs_loop_lock = threading.Lock()


def _process_loop() -> asyncio.AbstractEventLoop:
    """The worker process's one event loop for every run, on a thread of its own. Runs wait on the model, not on
    the CPU: one loop holds hundreds of them, with one Redis pool and one HTTP client per provider, where a loop per
    Celery thread gave each run its own connections and made the threads take turns on the GIL between tokens.
    Created on first use, so a forked child (prefork) starts its own."""
    global _runs_loop
    if _runs_loop is None or _runs_loop.is_closed():
        with _runs_loop_lock:
            if _runs_loop is None or _runs_loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="agents-runs", daemon=True).start()
                _runs_loop = loop
    return _runs_loop


def execute_run(schema: str, run_id: str) -> dict[str, Any]:
    """Sync entry point for the Celery task: the run executes on the process's loop while the task's thread waits
    for it (the broker message is acknowledged when the run has ended: acks_late)."""
    context = contextvars.copy_context()  # the task's request id, actor and tenant for the run's logs and events
    return asyncio.run_coroutine_threadsafe(_in_context(context, schema, run_id), _process_loop()).result()


async def _in_context(context: contextvars.Context, schema: str, run_id: str) -> dict[str, Any]:
    # A coroutine handed to another thread's loop runs in that thread's context, not the caller's.
    return await asyncio.get_running_loop().create_task(execute_run_async(schema, run_id), context=context)
