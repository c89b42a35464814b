"""Celery app. Tenant-aware: a task queued inside a tenant runs inside that tenant's schema
(tenant-schemas-celery puts the schema in the message and switches in task_prerun)."""

import os
import threading

from celery import Task
from celery.app.routes import MapRoute
from celery.concurrency.thread import TaskPool
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_ready
from django.conf import settings
from django.db import connection
from tenant_schemas_celery.app import CeleryApp

from core.context import current_request_id, current_tenant

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")


class QueueTimeLimits:
    """Task annotation (CELERY_TASK_ANNOTATIONS): every task gets the time limits of the queue it is routed to
    (settings.CELERY_QUEUE_TIME_LIMITS), so a limit is set once per queue and a new task cannot be forgotten.
    The worker reads them from its own task classes: the fair dispatcher sends tasks by name, without limits."""

    def annotate(self, task: Task) -> dict[str, float] | None:
        route = MapRoute(task.app.conf.task_routes or {})(task.name) or {}
        queue = route.get("queue", task.app.conf.task_default_queue)
        limits = settings.CELERY_QUEUE_TIME_LIMITS.get(queue)
        if limits is None:
            return None
        soft, hard = limits
        return {"soft_time_limit": float(soft), "time_limit": float(hard)}


app = CeleryApp("agentry")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _log_context_in(sender=None, **kwargs):
    current_tenant.set(getattr(connection, "schema_name", "-"))
    headers = getattr(sender.request, "headers", None) or {}
    current_request_id.set(headers.get("request_id", "-") if isinstance(headers, dict) else "-")


@task_postrun.connect
def _log_context_out(**kwargs):
    current_tenant.set("-")
    current_request_id.set("-")


def _warm_up_in_background() -> None:
    from config.warmup import warm_up  # imports apps' models: only once Django is set up, in a worker

    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()


@worker_process_init.connect
def _warm_up_process(**kwargs):
    """Prefork children and the solo pool: each process warms itself (in a thread, so the child is ready
    at once: a first task that needs a half-loaded model waits for it instead of loading a second copy)."""
    _warm_up_in_background()


@worker_ready.connect
def _warm_up_threads_pool(sender=None, **kwargs):
    """The threads pool has no child process (no worker_process_init): warm the worker process itself."""
    pool_cls = getattr(getattr(sender, "controller", None), "pool_cls", None)
    if isinstance(pool_cls, type) and issubclass(pool_cls, TaskPool):
        _warm_up_in_background()
