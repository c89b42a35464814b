"""Row-level security: PostgreSQL itself hides owner-private rows from whoever is acting, as a backstop to iam.policy.

iam.policy decides who may see what, and every query is meant to go through it. This module makes a forgotten filter
(`Agent.objects.all()` in a view, a raw query) return nothing private anyway: the tables of private objects carry
row-level security policies (created by each app's migrations), and the queries of requests and sockets run as a
role those policies bind (settings.DB_APP_ROLE) with the acting principal in the session setting `agentry.principal`:

- "user:<id>": a member (also through an API key): its own rows and what is shared with it;
- "admin:<id>:<schema>": an organisation admin: every row of its own organisation's schema (elsewhere, only what
  it owns), as iam.policy allows;
- "system": every row (work nobody started for a member: tasks, commands, migrations);
- unset or "": nothing private (fail closed: a request before authentication, a bug).

Who acts travels in `current_db_principal`: None means "not restricted" (the connection's own role, which owns the
tables or is a superuser: migrations, commands, Celery tasks, test set-up); a string means "restricted, as this
principal". core.middleware starts every request restricted as nobody; iam.policy names the principal where it
authenticates one (requests, sockets); `db_as_system()` lifts the restriction for one block that must act for the
organisation (authenticating an API key, provisioning a schema, cascades through other members' rows).

core.postgresql (the database backend) applies the wanted state to the connection lazily, before the first query
that needs it, and forgets what it applied whenever PostgreSQL may have discarded it (rollback, a pooled
connection checked out or returned), so a pooled connection never keeps a previous request's principal.

This is a backstop against mistakes, not a boundary against SQL injection: the restricted role may change its own
setting. The SQL helpers below are used by the apps' migrations so every policy reads the principal the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings

# The session setting the policies read (a custom "placeholder" GUC: any role may set it).
PRINCIPAL_SETTING = "agentry.principal"
NOBODY = ""
SYSTEM = "system"
DEFAULT_APP_ROLE = "agentry_app"

# None: unrestricted (the connection's own role). A string: run as settings.DB_APP_ROLE with this principal.
current_db_principal: ContextVar[str | None] = ContextVar("current_db_principal", default=None)


def db_principal_for(*, user_id: int, is_admin: bool, schema: str) -> str:
    """The setting's value for a member of the organisation in `schema` (an API key acts for its creator, with the
    creator's role). Admin rights hold in that schema only: code that visits another organisation's schema while
    an admin acts (account deletion) sees there no more than any member would."""
    return f"admin:{int(user_id)}:{schema}" if is_admin else f"user:{int(user_id)}"


def db_principal_set(principal: str) -> None:
    """Where a principal is established (authentication): act as it until the enclosing scope ends."""
    current_db_principal.set(principal)


@contextmanager
def db_principal_scope(principal: str | None) -> Iterator[None]:
    """Run the block as `principal` (NOBODY: restricted, nothing private yet; None: unrestricted), then as before."""
    token = current_db_principal.set(principal)
    try:
        yield
    finally:
        current_db_principal.reset(token)


@contextmanager
def db_as_system() -> Iterator[None]:
    """Lift the restriction for one block that acts for the organisation, not for the caller: every call says why."""
    with db_principal_scope(None):
        yield


def app_role() -> str:
    """The restricted role the migrations create and grant (named even while enforcement is off)."""
    return settings.DB_APP_ROLE or DEFAULT_APP_ROLE


# --- SQL for the apps' migrations -------------------------------------------------------------------------------
# Functions in the public schema (shared by every tenant schema, so clones need no copy). Policies call them inside
# a scalar sub-select, which PostgreSQL evaluates once per query (an InitPlan) instead of once per row.

FUNCTIONS_SQL = f"""
CREATE OR REPLACE FUNCTION public.agentry_principal_user() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN current_setting('{PRINCIPAL_SETTING}', true) ~ '^(user|admin):[0-9]{{1,18}}(:|$)'
                THEN split_part(current_setting('{PRINCIPAL_SETTING}', true), ':', 2)::bigint END
$$;
CREATE OR REPLACE FUNCTION public.agentry_principal_sees_all() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(current_setting('{PRINCIPAL_SETTING}', true) = '{SYSTEM}'
                    OR (current_setting('{PRINCIPAL_SETTING}', true) LIKE 'admin:%'
                        AND split_part(current_setting('{PRINCIPAL_SETTING}', true), ':', 3) = current_schema()),
                    false)
$$;
"""
FUNCTIONS_DROP_SQL = """
DROP FUNCTION IF EXISTS public.agentry_principal_user();
DROP FUNCTION IF EXISTS public.agentry_principal_sees_all();
"""

# Fragments a policy's USING clause is built from.
SEES_ALL = "(SELECT public.agentry_principal_sees_all())"
PRINCIPAL_USER = "(SELECT public.agentry_principal_user())"


def shared_resource_visible_sql(table: str, resource_type: str) -> str:
    """iam.policy's visibility of a SharedResource (agents, knowledge bases): admins and the system see all; others
    their own, what the whole organisation may use (org_access), and what is shared with one of their teams."""
    # Table and type names come from the migrations, never from input.
    team_share = (
        "EXISTS (SELECT 1 FROM iam_share s JOIN iam_teammembership m ON m.team_id = s.team_id"  # noqa: S608
        f" WHERE s.resource_type = '{resource_type}' AND s.resource_id = {table}.id AND m.user_id = {PRINCIPAL_USER})"
    )
    org_wide = f"({table}.org_access <> 'none' AND {PRINCIPAL_USER} IS NOT NULL)"  # members only, not nobody
    return f"{SEES_ALL} OR {table}.owner_id = {PRINCIPAL_USER} OR {org_wide} OR {team_share}"


def policies_create_sql(table: str, visible: str, *, name: str = "private") -> str:
    """Enable row-level security on `table` and let principals read, change and delete the rows `visible` allows.

    Inserts are not filtered (a new row must still be visible to its author: INSERT ... RETURNING checks it), and an
    update may make a row invisible to its author only where the service acts as the system (a transfer)."""
    return f"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
CREATE POLICY {name}_select ON {table} FOR SELECT USING ({visible});
CREATE POLICY {name}_insert ON {table} FOR INSERT WITH CHECK (true);
CREATE POLICY {name}_update ON {table} FOR UPDATE USING ({visible}) WITH CHECK (true);
CREATE POLICY {name}_delete ON {table} FOR DELETE USING ({visible});
"""


def policies_drop_sql(table: str, *, name: str = "private", disable: bool = True) -> str:
    drops = "".join(f"DROP POLICY IF EXISTS {name}_{command} ON {table};\n" for command in _COMMANDS)
    return drops + (f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;\n" if disable else "")


def extra_select_policy_sql(table: str, name: str, visible: str) -> str:
    """One more way to see rows of `table` (permissive policies add up with OR), e.g. from an app above it."""
    return f"CREATE POLICY {name} ON {table} FOR SELECT USING ({visible});"


_COMMANDS = ("select", "insert", "update", "delete")


def grants_sql(role: str) -> str:
    """What the restricted role may do in the current schema, now and in tables created later by the migrating
    role (new tables, cloned schemas): read and write rows, never change the schema."""
    return f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE "{role}" NOLOGIN; END IF;
END $$;
DO $$ BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO "{role}"', current_schema());
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO "{role}"', current_schema());
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO "{role}"', current_schema());
    IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
        EXECUTE format('GRANT "{role}" TO %I', current_user);
    END IF;
END $$;
ALTER DEFAULT PRIVILEGES GRANT USAGE ON SCHEMAS TO "{role}";
ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{role}";
ALTER DEFAULT PRIVILEGES GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO "{role}";
"""
