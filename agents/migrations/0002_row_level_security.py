from django.db import migrations

from core.rls import (
    PRINCIPAL_USER,
    SEES_ALL,
    extra_select_policy_sql,
    policies_create_sql,
    policies_drop_sql,
    shared_resource_visible_sql,
)

CONVERSATION_VISIBLE = f"{SEES_ALL} OR agents_conversation.user_id = {PRINCIPAL_USER}"
# A message is visible with its conversation (the sub-select is itself filtered by the conversation's policies).
MESSAGE_VISIBLE = (
    f"{SEES_ALL} OR EXISTS (SELECT 1 FROM agents_conversation c WHERE c.id = agents_message.conversation_id)"  # noqa: S608 - constants
)
# Whoever may view an agent sees which knowledge bases it uses (iam.policy.referenced_queryset_for), and a chat
# with it searches them: a knowledge base used by a visible agent is visible too.
KB_USED_BY_VISIBLE_AGENT = (
    "EXISTS (SELECT 1 FROM agents_agent_knowledge_bases ak JOIN agents_agent a ON a.id = ak.agent_id"
    " WHERE ak.knowledgebase_id = knowledge_knowledgebase.id)"
)


class Migration(migrations.Migration):
    """Row-level security (core.rls) on agents, conversations and messages, as iam.policy and the chat selectors
    show them (a conversation belongs to the member who holds it)."""

    dependencies = [("agents", "0001_initial"), ("knowledge", "0005_row_level_security")]

    operations = [
        migrations.RunSQL(
            policies_create_sql("agents_agent", shared_resource_visible_sql("agents_agent", "agent")),
            reverse_sql=policies_drop_sql("agents_agent"),
        ),
        migrations.RunSQL(
            extra_select_policy_sql("knowledge_knowledgebase", "used_by_visible_agent", KB_USED_BY_VISIBLE_AGENT),
            reverse_sql="DROP POLICY IF EXISTS used_by_visible_agent ON knowledge_knowledgebase;",
        ),
        migrations.RunSQL(
            policies_create_sql("agents_conversation", CONVERSATION_VISIBLE),
            reverse_sql=policies_drop_sql("agents_conversation"),
        ),
        migrations.RunSQL(
            policies_create_sql("agents_message", MESSAGE_VISIBLE),
            reverse_sql=policies_drop_sql("agents_message"),
        ),
    ]
