"""Writes for tenants: provisioning (one function behind sign-up, API and CLI) and deletion."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader
from django_tenants.utils import schema_exists

from accounts.services import membership_create_admin
from core.audit import audit_record
from core.errors import Conflict, Forbidden, InvalidInput, ProvisioningFailed
from core.rls import db_as_system
from core.tenancy import tenant_connection, tenant_domain_for
from iam.policy import Principal, principal_can_manage

from .models import Domain, Tenant
from .signals import tenant_schema_dropped

if TYPE_CHECKING:
    # django-stubs resolves this alias to settings.AUTH_USER_MODEL (the `User` below, for annotations).
    from django.contrib.auth.models import _User as AuthUser

logger = logging.getLogger(__name__)
User = get_user_model()  # accounts.User; its model module is the identity layer's own

SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
RESERVED_SLUGS = frozenset(
    {
        "www",
        "api",
        "admin",
        "public",
        "app",
        "static",
        "media",
        "mail",
        "smtp",
        "ftp",
        "status",
        "docs",
        "help",
        "support",
        "billing",
        "auth",
        "login",
        "signup",
        "dashboard",
        "assets",
        "cdn",
        "ws",
        "extensions",
        "template",
        "information-schema",
        "pg",
        "postgres",
        "root",
        "system",
        "internal",
    }
)
PUBLIC_SLUG = "public"


def schema_name_for(slug: str) -> str:
    # A prefix keeps tenant schemas apart from system ones (public, extensions, pg_*, _template).
    return "t_" + slug.replace("-", "_")


def slug_validate(slug: str) -> str:
    slug = (slug or "").strip().lower()
    if not SLUG_RE.match(slug):
        raise InvalidInput(
            "The address must be 3-40 characters: lowercase letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen.",
            field="slug",
        )
    if slug in RESERVED_SLUGS or slug.startswith("pg-"):
        raise InvalidInput(f"'{slug}' is reserved. Please choose another address.", field="slug")
    if "--" in slug:
        raise InvalidInput("The address may not contain two hyphens in a row.", field="slug")
    if Tenant.objects.filter(slug=slug).exists():
        raise Conflict(f"The address '{slug}' is already taken.", field="slug")
    return slug


# --- Template schema --------------------------------------------------------------------------

_expected_migrations: set[tuple[str, str]] | None = None


def _all_migrations() -> set[tuple[str, str]]:
    global _expected_migrations
    if _expected_migrations is None:
        _expected_migrations = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    return _expected_migrations


def template_schema_is_current() -> bool:
    base = settings.TENANT_BASE_SCHEMA
    if not schema_exists(base):
        return False
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT app, name FROM "{base}".django_migrations')  # noqa: S608 (setting, not input)
        applied = set(cursor.fetchall())
    return _all_migrations() <= applied


def template_schema_ensure() -> None:
    """Create or migrate the template schema that new tenants are cloned from."""
    base = settings.TENANT_BASE_SCHEMA
    if template_schema_is_current():
        return
    logger.info("migrating tenant template schema %s", base)
    with db_as_system():  # schema changes need the migrating role (core.rls), also when a sign-up triggers them
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{base}"')
        call_command("migrate_schemas", schema_name=base, tenant=True, interactive=False, verbosity=0)
    tenant_connection().set_schema_to_public()


def public_tenant_ensure() -> Tenant:
    """The public schema's tenant row and the base domain that serves sign-up and the API."""
    tenant, _ = Tenant.objects.get_or_create(schema_name="public", defaults={"name": "Agentry", "slug": PUBLIC_SLUG})
    Domain.objects.get_or_create(domain=settings.BASE_DOMAIN, defaults={"tenant": tenant, "is_primary": True})
    return tenant


# --- Provisioning -----------------------------------------------------------------------------


def owner_email_validate(email: str) -> str:
    """The new owner's email address, normalised; raises if it is malformed or already has an account."""
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise InvalidInput("Enter a valid email address.", field="email") from exc
    if User.objects.filter(email=email).exists():
        raise Conflict(
            "An account with this email already exists. Log in first, then create the organisation from this page.",
            field="email",
        )
    return email


def owner_password_validate(*, email: str, password: str) -> None:
    try:
        validate_password(password or "", user=User(email=email))
    except ValidationError as exc:
        raise InvalidInput(" ".join(exc.messages), field="password") from exc


def _user_for_signup(*, email: str, password: str) -> AuthUser:
    email = owner_email_validate(email)
    owner_password_validate(email=email, password=password)
    return User.objects.create_user(email=email, password=password)


def tenant_create(
    *,
    name: str,
    slug: str,
    owner: AuthUser | None = None,
    owner_email: str | None = None,
    owner_password: str | None = None,
) -> Tenant:
    """Provision an organisation: schema (cloned from the template), domain, owner as admin.

    Either `owner` (an existing user) or `owner_email` + `owner_password` (a new user) is given.
    Everything happens in one transaction; PostgreSQL DDL is transactional, so a failure at any
    step leaves no schema, no tenant or domain row and no user behind.
    """
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("The organisation name must be 1-100 characters.", field="name")
    slug = slug_validate(slug)
    if not template_schema_is_current():
        template_schema_ensure()
    try:
        # Creating a schema needs the migrating role (core.rls), also when a sign-up request asks for it.
        with db_as_system(), transaction.atomic():
            if owner is None:
                owner = _user_for_signup(email=owner_email or "", password=owner_password or "")
            tenant = Tenant(name=name, slug=slug, schema_name=schema_name_for(slug))
            tenant.save(verbosity=0)  # clones the template schema (auto_create_schema)
            Domain.objects.create(domain=tenant_domain_for(slug), tenant=tenant, is_primary=True)
            membership_create_admin(user=owner, tenant=tenant)
    except (InvalidInput, Conflict):
        raise
    except Exception as exc:
        logger.exception("provisioning of tenant %s failed", slug)
        raise ProvisioningFailed("We could not create the organisation. Nothing was saved; please try again.") from exc
    finally:
        tenant_connection().set_schema_to_public()
    logger.info("tenant %s provisioned (schema %s)", slug, tenant.schema_name)
    return tenant


def tenant_delete(*, tenant: Tenant) -> None:
    """Delete an organisation: its rows, domains, memberships, its schema (dropped) and its stored files."""
    if tenant.schema_name == "public":
        raise InvalidInput("The public schema cannot be deleted.")
    tenant_connection().set_schema_to_public()
    schema = tenant.schema_name
    with db_as_system(), transaction.atomic():  # dropping a schema needs the migrating role (core.rls)
        tenant.delete(force_drop=True)
        # What lives outside the database (stored files) is removed by its app once the drop is committed.
        transaction.on_commit(lambda: tenant_schema_dropped.send(sender=Tenant, schema=schema))
    logger.info("tenant %s deleted", tenant.slug)


def tenant_data_policy_update(
    *, principal: Principal, message_retention_days: int | None, departed_member_messages: str
) -> Tenant:
    """Set the principal's organisation's data lifecycle (admins only): how long conversations are kept (None: the
    operator's default) and what a member deleting their account leaves behind (docs/operations.md)."""
    if not principal_can_manage(principal):
        raise Forbidden("Only an organisation admin can change the data policy.")
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=principal.tenant.pk)
        before = {
            "message_retention_days": tenant.message_retention_days,
            "departed_member_messages": tenant.departed_member_messages,
        }
        tenant.message_retention_days = message_retention_days
        tenant.departed_member_messages = departed_member_messages
        try:
            tenant.full_clean(exclude=["schema_name", "name", "slug"])
        except ValidationError as error:
            raise InvalidInput(" ".join(error.messages)) from error
        tenant.save(update_fields=["message_retention_days", "departed_member_messages"])
        audit_record(
            action="tenant.data_policy_update",
            target=tenant,
            before=before,
            after={
                "message_retention_days": message_retention_days,
                "departed_member_messages": departed_member_messages,
            },
        )
    return tenant
