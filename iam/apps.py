from django.apps import AppConfig


class IamConfig(AppConfig):
    name = "iam"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - connects the auth-epoch receivers
