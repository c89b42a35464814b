from django.db import migrations

from core.rls import FUNCTIONS_DROP_SQL, FUNCTIONS_SQL, app_role, grants_sql


class Migration(migrations.Migration):
    """Row-level security's shared pieces (core.rls), in the public schema: the functions every tenant's policies
    read the acting principal with, the restricted role, and its grants on the shared tables and on pgvector."""

    dependencies = [("core", "0001_pgvector_extension")]

    operations = [
        migrations.RunSQL(FUNCTIONS_SQL, reverse_sql=FUNCTIONS_DROP_SQL),
        migrations.RunSQL(
            grants_sql(app_role()) + f'GRANT USAGE ON SCHEMA extensions TO "{app_role()}";',
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
