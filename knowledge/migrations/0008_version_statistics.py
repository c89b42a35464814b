# ruff: noqa: S608 - policy SQL from fixed table names
import django.db.models.deletion
from django.db import migrations, models

from core.rls import SEES_ALL, policies_create_sql, policies_drop_sql

# Visible with their knowledge base, as its chunks are (the sub-selects are themselves filtered by their policies).
STATISTICS_VISIBLE = (
    f"{SEES_ALL} OR EXISTS (SELECT 1 FROM knowledge_knowledgebase kb"
    " WHERE kb.id = knowledge_versionstatistics.knowledge_base_id)"
)
TERM_VISIBLE = (
    f"{SEES_ALL} OR EXISTS (SELECT 1 FROM knowledge_versionstatistics s"
    " WHERE s.id = knowledge_versionterm.statistics_id)"
)


class Migration(migrations.Migration):
    """Term statistics stored per settled knowledge-base version (knowledge.statistics)."""

    dependencies = [("knowledge", "0007_user_references_without_constraint")]

    operations = [
        migrations.CreateModel(
            name="VersionStatistics",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.PositiveIntegerField()),
                ("chunks", models.PositiveIntegerField()),
                ("avgdl", models.FloatField()),
                ("embedded", models.PositiveIntegerField()),
                ("embedding_dimension", models.PositiveSmallIntegerField()),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "knowledge_base",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="statistics",
                        to="knowledge.knowledgebase",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("knowledge_base", "number"), name="kb_statistics_unique_number")
                ],
            },
        ),
        migrations.CreateModel(
            name="VersionTerm",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "statistics_id", "lexeme", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("lexeme", models.TextField()),
                ("documents", models.PositiveIntegerField()),
                (
                    "statistics",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="terms",
                        to="knowledge.versionstatistics",
                    ),
                ),
            ],
        ),
        migrations.RunSQL(
            policies_create_sql("knowledge_versionstatistics", STATISTICS_VISIBLE),
            reverse_sql=policies_drop_sql("knowledge_versionstatistics"),
        ),
        migrations.RunSQL(
            policies_create_sql("knowledge_versionterm", TERM_VISIBLE),
            reverse_sql=policies_drop_sql("knowledge_versionterm"),
        ),
    ]
