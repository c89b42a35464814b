"""One registry for agent types, tools and LLM providers, fed by the built-ins and by plugins.

A plugin is any installed distribution declaring an entry point in the group `agentry.plugins` that points at a
callable taking the registry:

    [project.entry-points."agentry.plugins"]
    example = "agentry_example_plugin:register"

    def register(registry):
        registry.register_tool(MyTool)
        registry.register_agent_type("echo", EchoAgentType)
        registry.register_provider("myllm", MyProvider)

The built-in `rag` and `tools` agent types and the built-in tools register through the very same calls.
See docs/plugins.md.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points
from typing import Any

from .providers.anthropic_provider import AnthropicProvider
from .providers.offline import OfflineProvider
from .providers.openai_compat import OpenAICompatProvider
from .runtime.agent_types import RagAgentType, ToolsAgentType
from .tools.builtin import BUILTIN_TOOLS

logger = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "agentry.plugins"


class PluginRegistry:
    def __init__(self) -> None:
        self.agent_types: dict[str, Any] = {}
        self.tools: dict[str, type] = {}
        self.providers: dict[str, type] = {}
        self.plugins: dict[str, str] = {}  # entry-point name -> "loaded" or the error
        self.sources: dict[str, str] = {}  # "tool:name" -> "builtin" or plugin name
        self._source = "builtin"

    def register_agent_type(self, name: str, agent_type: Any) -> None:
        self.agent_types[name] = agent_type
        self.sources[f"agent_type:{name}"] = self._source

    def register_tool(self, tool_class: type) -> None:
        if not getattr(tool_class, "name", ""):
            raise ValueError(f"{tool_class!r} has no name")
        self.tools[tool_class.name] = tool_class
        self.sources[f"tool:{tool_class.name}"] = self._source

    def register_provider(self, kind: str, provider_class: type) -> None:
        self.providers[kind] = provider_class
        self.sources[f"provider:{kind}"] = self._source

    def describe(self) -> dict[str, Any]:
        return {
            "agent_types": sorted(self.agent_types),
            "tools": [
                {
                    "name": name,
                    "description": cls.description,
                    "parameters": cls.parameters,
                    "source": self.sources.get(f"tool:{name}", "builtin"),
                }
                for name, cls in sorted(self.tools.items())
            ],
            "providers": sorted(self.providers),
            "plugins": dict(self.plugins),
        }


_registry: PluginRegistry | None = None
_lock = threading.Lock()


def _register_builtins(registry: PluginRegistry) -> None:
    registry.register_agent_type("rag", RagAgentType())
    registry.register_agent_type("tools", ToolsAgentType())
    for tool in BUILTIN_TOOLS:
        registry.register_tool(tool)
    registry.register_provider("offline", OfflineProvider)
    registry.register_provider("openai", OpenAICompatProvider)
    registry.register_provider("anthropic", AnthropicProvider)


def _load_plugins(registry: PluginRegistry) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        registry._source = ep.name
        try:
            ep.load()(registry)
            registry.plugins[ep.name] = "loaded"
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not take the platform down
            logger.exception("plugin %s failed to load", ep.name)
            registry.plugins[ep.name] = f"error: {exc.__class__.__name__}: {exc}"
        finally:
            registry._source = "builtin"


def get_registry() -> PluginRegistry:
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                registry = PluginRegistry()
                _register_builtins(registry)
                _load_plugins(registry)
                _registry = registry
    return _registry


def reset_registry() -> None:
    """For tests that install a plugin mid-session."""
    global _registry
    _registry = None
