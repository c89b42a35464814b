"""First-use costs paid when a worker starts, not by the first user request it serves."""

from __future__ import annotations

import logging
import time

from django.conf import settings

from agents.providers.anthropic_provider import AnthropicProvider
from agents.providers.openai_compat import OpenAICompatProvider
from knowledge.embeddings import DEFAULT_MODEL, embedder_for_model

logger = logging.getLogger(__name__)


def warm_up() -> None:
    """TLS CA bundle and LLM SDK imports (~150 ms on our machines: each provider client used to pay the CA
    bundle), then the default embedding model (seconds, ~400 MB) where settings.WORKER_PRELOAD_EMBEDDER."""
    started = time.monotonic()
    try:
        for provider_class in (OpenAICompatProvider, AnthropicProvider):
            provider_class(base_url="http://127.0.0.1:9/", api_key="warm-up")  # builds clients, sends nothing
        if getattr(settings, "WORKER_PRELOAD_EMBEDDER", False):
            embedder_for_model(DEFAULT_MODEL)
    except Exception:  # noqa: BLE001 - a failed warm-up only means the first task pays the cost
        logger.exception("worker warm-up failed")
        return
    logger.info("worker warm-up done in %.0f ms", (time.monotonic() - started) * 1e3)
