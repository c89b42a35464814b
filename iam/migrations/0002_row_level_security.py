from django.db import migrations

from core.rls import PRINCIPAL_USER, SEES_ALL, app_role, grants_sql, policies_create_sql, policies_drop_sql

API_KEY_VISIBLE = f"{SEES_ALL} OR iam_apikey.created_by_id = {PRINCIPAL_USER}"


class Migration(migrations.Migration):
    """Row-level security in each tenant schema (core.rls): the restricted role's grants, and API keys visible to
    their creator and the organisation's admins only (iam.selectors.api_key_list)."""

    dependencies = [("iam", "0001_initial"), ("core", "0002_row_level_security")]

    operations = [
        migrations.RunSQL(grants_sql(app_role()), reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(
            policies_create_sql("iam_apikey", API_KEY_VISIBLE), reverse_sql=policies_drop_sql("iam_apikey")
        ),
    ]
