from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        from iam.policy import register_shared_resource

        from . import signals  # noqa: F401 - connects the agents-epoch receivers
        from .models import Agent

        register_shared_resource("agent", Agent)  # team shares + the share API
