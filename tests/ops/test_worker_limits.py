"""Workers cannot be taken down by one task: per-queue time limits (settings.CELERY_QUEUE_TIME_LIMITS, given to each
task by config.celery.QueueTimeLimits) stop a runaway task, which records why it failed, and the same worker process
goes on with the next task.

The end-to-end case runs a real prefork worker (the ingest worker's pool) with a 4-second soft limit on the ingest
queue and an OCR engine that never answers: the scanned image fails with the time-limit reason, and a Markdown file
queued after it is published by the same pool process. The worker consumes a queue of its own, so the session's
workers (conftest.celery_worker_process), if running, never take these documents.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import current_app
from django.conf import settings
from PIL import Image

from agents.tests.conftest import stop_process
from config.celery import app
from conftest import ROOT, subprocess_env
from knowledge import services as knowledge_services
from knowledge.tests.test_large_documents_e2e import kb_create, kb_delete, upload, wait_until_settled

SOFT_LIMIT = 4


def test_every_task_gets_the_time_limits_of_its_queue():
    app.loader.import_default_modules()
    routed = {"knowledge.ingest_document": "ingest", "knowledge.embed_part": "ingest", "webhooks.deliver": "webhooks"}
    for name, queue in routed.items():
        soft, hard = settings.CELERY_QUEUE_TIME_LIMITS[queue]
        task = app.tasks[name]
        assert (task.soft_time_limit, task.time_limit) == (soft, hard), name
        assert soft < hard  # the soft limit lets the task record why it stopped before the hard one kills it
    assert app.tasks["core.fair_dispatch"].soft_time_limit == settings.CELERY_QUEUE_TIME_LIMITS["default"][0]
    # Chat runs (thread pool) end at their own deadlines; a thread cannot be interrupted by Celery.
    assert app.tasks["agents.run"].soft_time_limit is None
    assert "agents" not in settings.CELERY_QUEUE_TIME_LIMITS
    assert settings.CELERY_WORKER_MAX_MEMORY_PER_CHILD > 0


def _never_answering_ocr(directory: Path) -> Path:
    script = directory / "tesseract"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--list-langs" ]; then printf "List of available languages (1):\\neng\\n"; exit 0; fi\n'
        "exec sleep 120\n"
    )
    script.chmod(0o755)
    return script


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (300, 80), 255).save(buffer, format="PNG")
    return buffer.getvalue()


def _pool_processes(name: str) -> list[int]:
    stats = app.control.inspect(destination=[name], timeout=2.0).stats() or {}
    return sorted(stats[name]["pool"]["processes"])


@pytest.fixture
def limited_ingest_worker(django_db_setup, django_db_blocker, tmp_path, monkeypatch):
    """A prefork ingest worker with a short soft limit, on a private queue the upload service is pointed at."""
    queue = f"limits-{os.getpid()}"
    name = f"{queue}@{socket.gethostname()}"
    with django_db_blocker.unblock():
        env = subprocess_env()
    env.update(
        CELERY_QUEUE_TIME_LIMITS=json.dumps({"ingest": [SOFT_LIMIT, 60]}),
        KNOWLEDGE_OCR_COMMAND=str(_never_answering_ocr(tmp_path)),
        WORKER_PRELOAD_EMBEDDER="false",  # the knowledge base below uses the hashing embedder: no model to load
    )
    log_path = ROOT / "var" / f"celery-{queue}.log"
    log_path.parent.mkdir(exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own worker command
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "-Q", queue, "-c", "1"]
            + ["-n", name, "--without-gossip", "--without-mingle"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not any(name in reply for reply in app.control.ping(destination=[name], timeout=0.5)):
                assert proc.poll() is None and time.monotonic() < deadline, f"worker did not start; see {log_path}"

            # The documents go where production sends them (send_task by name, as core.queues does), on our queue.
            def send_to_our_queue(task, *, args=(), kwargs=None, queue_name=queue, **_):
                current_app.send_task(task.name, args=list(args), kwargs=kwargs or {}, queue=queue_name)

            monkeypatch.setattr(knowledge_services, "fair_enqueue", send_to_our_queue)
            yield proc, name
        finally:
            stop_process(proc)


@pytest.mark.e2e
@pytest.mark.django_db
def test_task_past_its_soft_limit_fails_with_the_reason_and_the_worker_serves_the_next(
    limited_ingest_worker, tenant_a, admin_a
):
    proc, name = limited_ingest_worker
    pool_before = _pool_processes(name)
    kb_id = kb_create(tenant_a, admin_a, "Limits", embedding_model="hashing-384")
    try:
        started = time.monotonic()
        scan = upload(tenant_a, admin_a, kb_id, {"scan.png": _png()})["scan.png"]
        notes = upload(tenant_a, admin_a, kb_id, {"notes.md": "# Notes\n\nThe worker is still here."})["notes.md"]
        documents = wait_until_settled(tenant_a, [scan, notes], timeout=60)
        assert documents[scan].status == "failed", documents[scan].error
        assert f"Processing stopped at the time limit ({SOFT_LIMIT} s per task)" in documents[scan].error
        assert documents[notes].status == "ready", documents[notes].error
        # Stopped at the soft limit, not after the engine's 120 s nor after retries.
        assert time.monotonic() - started < 30
        assert proc.poll() is None
        assert _pool_processes(name) == pool_before  # the same pool process served both tasks
    finally:
        kb_delete(tenant_a, admin_a, kb_id)
