"""A web process loads the query embedder when it starts (config.asgi -> config.warmup), and /readyz keeps it out
of rotation until it has, so no search pays the model load."""

from __future__ import annotations

import gc

import pytest
from django.test import Client

from config import health, warmup
from knowledge.embeddings import DEFAULT_MODEL


@pytest.fixture
def fresh_warm_up(monkeypatch):
    state = warmup.WebWarmUp()
    monkeypatch.setattr(warmup, "web_warm_up", state)
    monkeypatch.setattr(health, "web_warm_up", state)
    return state


def _warm_up_check() -> tuple[int, dict | None]:
    response = Client(HTTP_HOST="localhost").get("/readyz")
    return response.status_code, response.json()["checks"].get("warm_up")


@pytest.mark.django_db
def test_readyz_reports_not_ready_until_the_query_embedder_is_loaded(fresh_warm_up):
    assert _warm_up_check()[1] is None  # no warm-up in this process (a test, a command): not a readiness check

    fresh_warm_up.started = True  # loading
    status, check = _warm_up_check()
    assert status == 503 and check == {"ok": False, "embedder": "loading"}

    fresh_warm_up.done.set()
    assert _warm_up_check()[1] == {"ok": True, "embedder": DEFAULT_MODEL}

    fresh_warm_up.error = "No sentence-transformers model at /nowhere."
    status, check = _warm_up_check()
    assert status == 503 and check == {"ok": False, "error": "No sentence-transformers model at /nowhere."}


def test_web_warm_up_loads_the_default_embedder_once(fresh_warm_up, settings):
    settings.WEB_PRELOAD_EMBEDDER = True
    warmup.web_warm_up_start()
    warmup.web_warm_up_start()  # a second call starts nothing
    assert fresh_warm_up.done.wait(timeout=300), fresh_warm_up.error
    assert fresh_warm_up.status() == {"ok": True, "embedder": DEFAULT_MODEL}


def test_web_warm_up_is_off_when_the_setting_is(fresh_warm_up, settings):
    settings.WEB_PRELOAD_EMBEDDER = False
    warmup.web_warm_up_start()
    assert fresh_warm_up.status() is None


def test_what_a_process_loaded_at_start_is_kept_out_of_full_collections():
    """config.asgi and the workers' warm-up freeze what they loaded: a full collection then walks only what came
    after (it walked every module, class and SDK type, stopping the process's streams for its duration)."""
    gc.unfreeze()
    loaded_at_start = [{"n": n} for n in range(1000)]
    try:
        warmup.startup_objects_freeze()
        assert gc.get_freeze_count() >= len(loaded_at_start)
        assert not any(obj is loaded_at_start for obj in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()
