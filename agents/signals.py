"""Changes to agents, their versions and providers bump the tenant's agents epoch, so every process reloads the
agent a chat starts with (agents.selectors.agent_get_for_chat) at the next chat."""

from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from core.epochs import epoch_bump

from .models import Agent, AgentVersion, ProviderCredential
from .selectors import agents_epoch


@receiver([post_save, post_delete], sender=Agent)
@receiver([post_save, post_delete], sender=AgentVersion)  # a new version: _version_write moves the agent to it
@receiver([post_save, post_delete], sender=ProviderCredential)
def _agent_changed(**kwargs) -> None:
    epoch_bump(agents_epoch(connection.schema_name))
