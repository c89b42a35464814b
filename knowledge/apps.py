from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"

    def ready(self) -> None:
        from iam.policy import register_shared_resource

        from . import signals  # noqa: F401 - deletes a dropped tenant's stored files
        from .models import KnowledgeBase

        register_shared_resource("knowledge_base", KnowledgeBase)  # team shares + the share API
