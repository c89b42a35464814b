"""Compiled agent configurations, cached per worker process.

Compiling = resolving an AgentVersion snapshot into ready objects: the provider client (with the decrypted key),
the tool instances (custom OpenAPI tools with their decrypted secrets), the agent type and effective limits.
Versions are immutable, so the cache key is the version id: saving a new version makes the next run compile the
new one (invalidation for free), and entries idle for AGENTS_COMPILED_IDLE_SECONDS are evicted. A provider whose
credentials changed is detected by its `updated_at` and recompiled.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from core.crypto import decrypt_json, decrypt_str
from core.epochs import epoch_get
from core.errors import DomainError, ErrorCode
from core.ssrf import UnsafeURL, check_url
from core.tenancy import tenant_key

from ..models import AgentVersion, CustomTool, ProviderCredential
from ..registry import get_registry
from ..tools.openapi import tools_for_custom
from .limits import effective_limits

IDLE_SECONDS = getattr(settings, "AGENTS_COMPILED_IDLE_SECONDS", 600)


@dataclass
class CompiledAgent:
    agent_id: int
    version_id: int
    version_number: int
    agent_type_name: str
    agent_type: Any
    provider_kind: str
    provider_enabled: bool
    provider_class: Any
    provider_kwargs: dict[str, Any]
    model: str
    system_prompt: str
    sampling: dict[str, Any]
    knowledge_base_ids: list[int]
    retrieval: dict[str, Any]
    tools: dict[str, Any]
    limits: dict[str, Any]
    secrets: dict[str, Any] = field(default_factory=dict)
    stamp: str = ""
    provider_id: int | None = None

    def make_provider(self) -> Any:
        return self.provider_class(**self.provider_kwargs)


# (schema, version id) -> (compiled, last used, tools epoch it was compiled under)
_cache: dict[tuple[str, int], tuple[CompiledAgent, float, bytes]] = {}


def tools_epoch(schema: str) -> str:
    """Moves when a custom tool or an approved host changes (agents.signals): compiled agents hold their tools and
    the hosts those may call, so every worker compiles again instead of running a deleted tool."""
    return tenant_key("agents", "tools", schema=schema)


_lock = threading.Lock()
stats = {"hits": 0, "misses": 0}


class AgentMisconfigured(DomainError):
    """The agent's configuration points at something missing or refused (a tool, the provider, its URL)."""

    code = ErrorCode.AGENT_MISCONFIGURED
    status = 409


def provider_stamp(updated_at: Any) -> str:
    """What identifies a provider's credentials as of a compile: its `updated_at` ("offline" without one)."""
    return "offline" if updated_at is None else str(updated_at)


def _provider_stamp(provider_id: int | None) -> str:
    if not provider_id:
        return provider_stamp(None)
    updated_at = ProviderCredential.objects.filter(pk=provider_id).values_list("updated_at", flat=True).first()
    return provider_stamp(updated_at)


def _build_tools(entries: list[Any], registry) -> tuple[dict[str, Any], dict[str, Any]]:
    tools: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for entry in entries or []:
        spec = {"name": entry} if isinstance(entry, str) else dict(entry)
        if spec.get("custom_tool"):
            custom = CustomTool.objects.filter(name=spec["custom_tool"]).first()
            if custom is None:
                raise AgentMisconfigured(f"The custom tool {spec['custom_tool']!r} no longer exists.")
            for tool in tools_for_custom(custom, decrypt_json(custom.secrets_encrypted)):
                tools[tool.name] = tool
            continue
        name = spec.pop("name", "")
        tool_class = registry.tools.get(name)
        if tool_class is None:
            raise AgentMisconfigured(f"The tool {name!r} is not installed.")
        tools[name] = tool_class(**spec)
    return tools, secrets


def _check_provider_url(url: str) -> None:
    """Provider URLs are tenant input too: the SSRF rules apply (a local Ollama needs the operator's allowance
    in SSRF_ALLOWED_NETWORKS). Checked here for a clear error before the run; the providers' PinnedAsyncTransport
    checks again on every request and connects to the approved address (no DNS rebinding)."""

    try:
        check_url(url)
    except UnsafeURL as exc:
        raise AgentMisconfigured(f"The provider URL is not allowed: {exc.message}", code=ErrorCode.UNSAFE_URL) from exc


def compile_version(version) -> CompiledAgent:
    """Build a CompiledAgent from an AgentVersion (inside the tenant's context)."""

    registry = get_registry()
    config = version.config
    agent_type = registry.agent_types.get(config.get("agent_type", "rag"))
    if agent_type is None:
        raise AgentMisconfigured(f"The agent type {config.get('agent_type')!r} is not installed.")
    provider_id = config.get("provider_id")
    kind, enabled, base_url, api_key, timeout, default_model = "offline", True, "", "", 60.0, "offline"
    if provider_id:
        credential = ProviderCredential.objects.filter(pk=provider_id).first()
        if credential is None:
            raise AgentMisconfigured("The agent's LLM provider was deleted.", code=ErrorCode.PROVIDER_MISSING)
        kind, enabled, base_url = credential.kind, credential.enabled, credential.base_url
        if base_url:
            _check_provider_url(base_url)
        api_key, timeout = decrypt_str(credential.api_key_encrypted), float(credential.timeout_seconds)
        default_model = credential.default_model
    provider_class = registry.providers.get(kind)
    if provider_class is None:
        raise AgentMisconfigured(f"The provider type {kind!r} is not installed.")
    limits = effective_limits(config.get("limits"))
    tools, secrets = _build_tools(config.get("tools") or [], registry)
    return CompiledAgent(
        agent_id=version.agent_id,
        version_id=version.pk,
        version_number=version.number,
        agent_type_name=config.get("agent_type", "rag"),
        agent_type=agent_type,
        provider_kind=kind,
        provider_enabled=enabled,
        # Clients are made per run: SDK connection pools belong to one event loop.
        provider_class=provider_class,
        provider_kwargs={"base_url": base_url, "api_key": api_key, "timeout": timeout},
        model=config.get("model") or default_model or "default",
        system_prompt=config.get("system_prompt", ""),
        sampling=config.get("sampling") or {},
        knowledge_base_ids=list(config.get("knowledge_base_ids") or []),
        retrieval=config.get("retrieval") or {},
        tools=tools,
        limits=limits,
        secrets=secrets,
        stamp=_provider_stamp(provider_id),
        provider_id=provider_id,
    )


def compiled_agent_cached(
    schema: str, version_id: int, *, stamp: str, tools: bytes | None = None
) -> CompiledAgent | None:
    """The cached CompiledAgent of an AgentVersion if its provider's stamp is still `stamp` and no tool changed since
    (the tools epoch: read here with one Redis GET unless the caller read it already), else None. Touches no
    database: chat_start reads the stamp with its provider check and passes it in the run's metadata."""
    now = time.monotonic()
    key = (schema, version_id)
    if tools is None:
        tools = epoch_get(tools_epoch(schema))
    with _lock:
        _evict_idle(now)
        entry = _cache.get(key)
        if entry is None or entry[0].stamp != stamp or entry[2] != tools:
            return None
        _cache[key] = (entry[0], now, entry[2])
    stats["hits"] += 1
    return entry[0]


def _evict_idle(now: float) -> None:
    for stale in [k for k, (_, used, _tools) in _cache.items() if now - used > IDLE_SECONDS]:
        del _cache[stale]


def compiled_agent_get(schema: str, version_id: int, *, stamp: str | None = None) -> CompiledAgent:
    """The cached CompiledAgent of an AgentVersion (inside the tenant's context), compiled on a miss. A hit costs
    one query (the provider's stamp), none if the caller knows the stamp; the version row itself is read only to
    compile (versions are immutable)."""

    with _lock:
        entry = _cache.get((schema, version_id))
    if entry is not None:
        compiled = compiled_agent_cached(
            schema, version_id, stamp=stamp if stamp is not None else _provider_stamp(entry[0].provider_id)
        )
        if compiled is not None:
            return compiled
    stats["misses"] += 1
    tools = epoch_get(tools_epoch(schema))  # read before the rows it compiles (core.epochs)
    compiled = compile_version(AgentVersion.objects.get(pk=version_id))
    with _lock:
        _evict_idle(time.monotonic())
        _cache[(schema, version_id)] = (compiled, time.monotonic(), tools)
    return compiled


def compiled_cache_clear() -> None:
    with _lock:
        _cache.clear()
