from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"

    def ready(self) -> None:
        # Limits and usage figures for core.quotas, then the hooks into knowledge, agents and the rate limiter.
        from . import hooks, signals, sources  # noqa: F401 - signals connects the quota-limits epoch receivers

        sources.register()
        hooks.install()
        # The audit log's storage: core.audit.audit_record hands every entry to it.
        from core.audit import audit_sink_register

        from .services import audit_entry_store

        audit_sink_register(audit_entry_store)
