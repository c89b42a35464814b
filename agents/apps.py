from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        from accounts.signals import member_departing, user_export_collect
        from core.crypto import register_secret_rotation
        from iam.policy import register_citation_source, register_shared_resource

        from . import (
            lifecycle,
            signals,  # noqa: F401 - connects the agents-epoch receivers
        )
        from .models import Agent
        from .selectors import cited_chunk_ids
        from .services import secrets_rotate

        register_shared_resource("agent", Agent)  # team shares + the share API
        register_citation_source(cited_chunk_ids)  # a citation given in a chat opens its passage
        register_secret_rotation("agents", secrets_rotate)  # provider keys, custom-tool secrets (rotate_secrets)
        user_export_collect.connect(lifecycle.conversations_export_receiver, dispatch_uid="agents-export")
        member_departing.connect(lifecycle.member_departing_receiver, dispatch_uid="agents-member-departing")
