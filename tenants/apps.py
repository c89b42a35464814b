from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - connects the host-cache invalidation
