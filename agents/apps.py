from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        from iam.policy import register_citation_source, register_shared_resource

        from . import signals  # noqa: F401 - connects the agents-epoch receivers
        from .models import Agent
        from .selectors import cited_chunk_ids

        register_shared_resource("agent", Agent)  # team shares + the share API
        register_citation_source(cited_chunk_ids)  # a citation given in a chat opens its passage
