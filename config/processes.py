"""The product's long-running processes, defined once: `make up` starts them, the end-to-end tests start the
same ones, and docker-compose.yml spells the same command lines for its services.

Each entry is the argument list after `python -m`. Documents and webhooks are CPU-bound (prefork, two
processes); chat runs mostly wait on model providers, so a thread pool holds many at once.
"""

from __future__ import annotations

WEB = ["daphne", "-b", "127.0.0.1", "-p", "{port}", "config.asgi:application"]
INGEST_WORKER = ["celery", "-A", "config", "worker", "-l", "info", "-Q", "default,ingest,webhooks", "-c", "2"]
AGENTS_WORKER = ["celery", "-A", "config", "worker", "-l", "info", "-Q", "agents", "--pool=threads", "-c", "50"]
BEAT = ["celery", "-A", "config", "beat", "-l", "warning", "-s", "{schedule}"]  # not a line per task sent
WORKERS = {"ingest": INGEST_WORKER, "agents": AGENTS_WORKER}


def command(args: list[str], **values: str) -> list[str]:
    """The argument list with its placeholders ({port}, {schedule}) filled in."""
    return [arg.format(**values) for arg in args]
