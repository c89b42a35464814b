"""First-use costs paid when a worker starts, not by the first user request it serves."""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings

from agents.providers.anthropic_provider import AnthropicProvider
from agents.providers.openai_compat import OpenAICompatProvider
from knowledge.embeddings import DEFAULT_MODEL, embedder_for_model

logger = logging.getLogger(__name__)


def startup_objects_freeze() -> None:
    """Move the objects a process holds once it has started (modules, classes, settings, the SDKs' types: some
    330,000 in a worker) out of the garbage collector's reach. They live as long as the process, yet every full
    collection walked them all, holding the GIL: pauses of 100 ms to 2 s (measured under load) in which no stream
    of the process moved, its largest inter-token gaps. Garbage is collected first, so none is kept."""
    gc.collect()
    gc.freeze()


def warm_up() -> None:
    """TLS CA bundle and LLM SDK imports (~150 ms on our machines: each provider client used to pay the CA
    bundle), then the default embedding model (seconds, ~400 MB) where settings.WORKER_PRELOAD_EMBEDDER; then
    what the process now holds is frozen (startup_objects_freeze)."""
    started = time.monotonic()
    try:
        for provider_class in (OpenAICompatProvider, AnthropicProvider):
            provider_class(base_url="http://127.0.0.1:9/", api_key="warm-up")  # builds clients, sends nothing
        if getattr(settings, "WORKER_PRELOAD_EMBEDDER", False):
            embedder_for_model(DEFAULT_MODEL)
    except Exception:  # noqa: BLE001 - a failed warm-up only means the first task pays the cost
        logger.exception("worker warm-up failed")
        return
    finally:
        startup_objects_freeze()
    logger.info("worker warm-up done in %.0f ms", (time.monotonic() - started) * 1e3)


@dataclass
class WebWarmUp:
    """What a web process loads before it takes traffic: the default query embedder (seconds and ~480 MB; before,
    the first search of each process paid it: 6.8 s). /readyz answers 503 until it is done (config.health), so
    the orchestrator sends no request to a process still loading."""

    started: bool = False
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict | None:
        """The readiness check's entry; None where no warm-up was started (management commands, tests)."""
        if not self.started:
            return None
        if self.error:
            return {"ok": False, "error": self.error}
        return {"ok": self.done.is_set(), "embedder": DEFAULT_MODEL if self.done.is_set() else "loading"}


web_warm_up = WebWarmUp()


def _load_query_embedder() -> None:
    started = time.monotonic()
    try:
        embedder_for_model(DEFAULT_MODEL).embed(["warm up"])  # the first inference allocates too: pay it here
    except Exception as exc:  # noqa: BLE001 - reported by /readyz, which keeps the process out of rotation
        logger.exception("web warm-up failed")
        web_warm_up.error = str(exc)[:200]
        return
    startup_objects_freeze()  # the model's objects too
    web_warm_up.done.set()
    logger.info("web warm-up done in %.0f ms", (time.monotonic() - started) * 1e3)


def web_warm_up_start() -> None:
    """Start loading the query embedder in a background thread (the process answers /healthz meanwhile), where
    settings.WEB_PRELOAD_EMBEDDER; a search arriving before it is done waits for the same load, never a second one."""
    if web_warm_up.started or not getattr(settings, "WEB_PRELOAD_EMBEDDER", False):
        return
    web_warm_up.started = True
    threading.Thread(target=_load_query_embedder, name="web-warm-up", daemon=True).start()
