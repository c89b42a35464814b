"""Liveness of a Celery worker in a container: exit 0 when this host's worker (celery@<hostname>, the default
node name) answers a ping through the broker within the timeout, 1 otherwise.

    python scripts/celery_ping.py [timeout seconds]

Only Celery and the broker URL are loaded, not Django and the product's tasks: a probe that ran every minute
beside a worker must not need the worker's memory a second time.
"""

from __future__ import annotations

import os
import socket
import sys

from celery import Celery


def main() -> int:
    timeout = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    broker = os.environ.get("CELERY_BROKER_URL") or os.environ["REDIS_URL"]
    node = f"celery@{socket.gethostname()}"
    replies = Celery(broker=broker).control.ping(destination=[node], timeout=timeout)
    return 0 if any(node in reply for reply in replies or []) else 1


if __name__ == "__main__":
    sys.exit(main())
