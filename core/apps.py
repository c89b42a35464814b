from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Platform core"

    def ready(self) -> None:
        # Celery signal wiring of the kernel, in every process: request ids and the audit actor into task headers
        # and back (observability), fair-queue refills as tasks finish (queues), optional tracing.
        from celery.signals import task_postrun

        from . import observability, queues

        observability.install()
        task_postrun.connect(queues.after_task_refill, weak=False, dispatch_uid="core.queues.after_task_refill")
