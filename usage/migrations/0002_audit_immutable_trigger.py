"""Audit entries are append-only at the database level too: UPDATE and DELETE raise.

The function is created in each tenant schema (the first schema on the search_path when tenant
migrations run; cloned with the template schema for new tenants). TRUNCATE is refused as well.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION usage_audit_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are immutable (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER usage_auditentry_no_update_delete
    BEFORE UPDATE OR DELETE ON usage_auditentry
    FOR EACH ROW EXECUTE FUNCTION usage_audit_immutable();
CREATE TRIGGER usage_auditentry_no_truncate
    BEFORE TRUNCATE ON usage_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION usage_audit_immutable();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS usage_auditentry_no_update_delete ON usage_auditentry;
DROP TRIGGER IF EXISTS usage_auditentry_no_truncate ON usage_auditentry;
DROP FUNCTION IF EXISTS usage_audit_immutable();
"""


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
