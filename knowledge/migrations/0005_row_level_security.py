from django.db import migrations

from core.rls import SEES_ALL, policies_create_sql, policies_drop_sql, shared_resource_visible_sql

# Documents and chunks are visible with their knowledge base (the sub-select is itself filtered by its policies).
KB_ROW_VISIBLE = "EXISTS (SELECT 1 FROM knowledge_knowledgebase kb WHERE kb.id = {table}.knowledge_base_id)"


def _through_kb(table: str) -> str:
    return f"{SEES_ALL} OR " + KB_ROW_VISIBLE.format(table=table)


class Migration(migrations.Migration):
    """Row-level security (core.rls) on knowledge bases and their contents, as iam.policy shows them."""

    dependencies = [("knowledge", "0004_chunk_pages_sections_ocr_language"), ("iam", "0002_row_level_security")]

    operations = [
        migrations.RunSQL(
            policies_create_sql(
                "knowledge_knowledgebase", shared_resource_visible_sql("knowledge_knowledgebase", "knowledge_base")
            ),
            reverse_sql=policies_drop_sql("knowledge_knowledgebase"),
        ),
        migrations.RunSQL(
            policies_create_sql("knowledge_document", _through_kb("knowledge_document")),
            reverse_sql=policies_drop_sql("knowledge_document"),
        ),
        migrations.RunSQL(
            policies_create_sql("knowledge_chunk", _through_kb("knowledge_chunk")),
            reverse_sql=policies_drop_sql("knowledge_chunk"),
        ),
    ]
