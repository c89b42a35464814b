from django.db import migrations


class Migration(migrations.Migration):
    """pgvector, installed once in its own schema that every tenant's search_path includes.

    Created from a tenant schema it would land in that one tenant only (pgvector #417).
    """

    initial = True
    dependencies: list = []

    operations = [
        migrations.RunSQL(
            "CREATE SCHEMA IF NOT EXISTS extensions; CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA extensions;",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
