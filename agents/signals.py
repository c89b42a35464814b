"""Signals of the agents app.

- Changes to agents, their versions and providers bump the tenant's agents epoch, so every process reloads the
  agent a chat starts with (agents.selectors.agent_get_for_chat) at the next chat.
- Changes to custom tools and approved hosts bump the tools epoch: workers compile their agents again
  (agents.runtime.compiled).
- `run_finished` announces a finished chat run to the apps above agents (usage meters it).
"""

from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal, receiver

from core.epochs import epoch_bump

from .models import Agent, AgentVersion, ApprovedHost, CustomTool, ProviderCredential
from .runtime.compiled import tools_epoch
from .selectors import agents_epoch


@receiver([post_save, post_delete], sender=Agent)
@receiver([post_save, post_delete], sender=AgentVersion)  # a new version: _version_write moves the agent to it
@receiver([post_save, post_delete], sender=ProviderCredential)
def _agent_changed(**kwargs) -> None:
    epoch_bump(agents_epoch(connection.schema_name))


@receiver([post_save, post_delete], sender=CustomTool)
@receiver([post_save, post_delete], sender=ApprovedHost)
def _tools_changed(**kwargs) -> None:
    epoch_bump(tools_epoch(connection.schema_name))


# Sent by the worker once a chat run has ended (answer saved, run slot released), on a DB thread inside the run's
# tenant schema and outside any transaction, for complete and incomplete runs alike. Keyword arguments: schema,
# run_id, agent_id, user_id, api_key_id (None when absent), provider, model, tokens_in, tokens_out, latency_ms,
# status ("complete" or "incomplete"). A receiver's failure is logged and never loses the answer.
run_finished = Signal()
