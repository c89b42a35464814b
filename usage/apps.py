from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"

    def ready(self) -> None:
        # Request ids into Celery task headers, fair-queue refills, optional tracing (issue 6).
        from core import observability

        observability.install()
        from . import hooks, signals  # noqa: F401 - signals connects the quota-limits epoch receivers

        hooks.install()
