"""Writes for accounts: JWT issuance/rotation/logout, profile, sessions, account deletion."""

from __future__ import annotations

import logging
import uuid
import zoneinfo
from typing import Any

from django.contrib.auth import authenticate
from django.core.cache import cache
from django.db import transaction
from django_tenants.utils import tenant_context
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from core.errors import Conflict, DomainError, InvalidInput, NotFound

from .models import Membership, Role, User
from .tokens import SESSION_CLAIM, TENANT_CLAIM, new_session_id, session_revoke, user_tokens_revoke

logger = logging.getLogger(__name__)

LOGIN_FAILURES_ALLOWED = 5
LOGIN_FAILURE_WINDOW = 300  # seconds


class Unauthenticated(DomainError):
    code = "authentication_failed"
    status = 401


class TooManyAttempts(DomainError):
    code = "throttled"
    status = 429


# --- JWT ----------------------------------------------------------------------------------------


def _failure_key(email: str, ip: str) -> str:
    return f"accounts:jwt-login-failures:{email}:{ip}"


def jwt_pair_issue(*, tenant, email: str, password: str, ip: str = "") -> dict[str, str]:
    """Email + password -> {"access", "refresh"} bound to `tenant`. Non-members get the same 401 as a
    wrong password (no account enumeration); repeated failures are throttled per email and IP."""
    email = (email or "").strip().lower()
    key = _failure_key(email, ip)
    if int(cache.get(key) or 0) >= LOGIN_FAILURES_ALLOWED:
        raise TooManyAttempts("Too many failed attempts. Try again in a few minutes.")
    user = authenticate(email=email, password=password or "")
    membership = None
    if user is not None and user.is_active:
        membership = Membership.objects.filter(user=user, tenant=tenant).first()
    if membership is None:
        cache.add(key, 0, timeout=LOGIN_FAILURE_WINDOW)
        cache.incr(key)
        raise Unauthenticated("No active account with these credentials in this organisation.")
    cache.delete(key)
    refresh = RefreshToken.for_user(user)
    refresh[TENANT_CLAIM] = tenant.schema_name
    refresh[SESSION_CLAIM] = new_session_id()  # copied into every access token; logout revokes it
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def _refresh_token_for_tenant(raw: str, tenant) -> RefreshToken:
    try:
        refresh = RefreshToken(raw)  # checks signature, expiry and the blacklist
    except TokenError as exc:
        raise Unauthenticated(str(exc.args[0]), extra={"code": "token_not_valid"}) from None
    if refresh.get(TENANT_CLAIM) != tenant.schema_name:
        raise Unauthenticated("This token was issued for another organisation.", extra={"code": "token_wrong_tenant"})
    return refresh


def jwt_refresh(*, tenant, refresh_token: str) -> dict[str, str]:
    """Rotate: blacklist the presented refresh token, return a new access + refresh pair."""
    refresh = _refresh_token_for_tenant(refresh_token, tenant)
    user = User.objects.filter(pk=refresh.get("user_id"), is_active=True).first()
    if user is None or not Membership.objects.filter(user=user, tenant=tenant).exists():
        raise Unauthenticated("No active account for this token in this organisation.")
    with transaction.atomic():
        refresh.blacklist()
        new = RefreshToken.for_user(user)
        new[TENANT_CLAIM] = tenant.schema_name
        new[SESSION_CLAIM] = refresh.get(SESSION_CLAIM) or new_session_id()  # the same session, rotated
    return {"access": str(new.access_token), "refresh": str(new)}


def jwt_logout(*, tenant, refresh_token: str) -> None:
    """End one session: its refresh token is blacklisted and its access tokens stop working at once."""
    refresh = _refresh_token_for_tenant(refresh_token, tenant)
    refresh.blacklist()
    session_revoke(schema=tenant.schema_name, sid=str(refresh.get(SESSION_CLAIM) or ""))


def jwt_revoke_all(*, user: User) -> int:
    """Blacklist every outstanding refresh token of `user` (all tenants); their access tokens stop working too."""
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    user_tokens_revoke(user_id=user.pk)
    count = 0
    for token in OutstandingToken.objects.filter(user=user).exclude(blacklistedtoken__isnull=False):
        BlacklistedToken.objects.get_or_create(token=token)
        count += 1
    return count


# --- Profile ------------------------------------------------------------------------------------

THEMES = ("system", "light", "dark")


def user_profile_update(
    *,
    user: User,
    membership: Membership,
    display_name: str | None = None,
    time_zone: str | None = None,
    ui_theme: str | None = None,
    default_agent_id: int | None | object = ...,
) -> User:
    if display_name is not None:
        display_name = display_name.strip()
        if len(display_name) > 100:
            raise InvalidInput("The display name may be at most 100 characters.", field="display_name")
        user.display_name = display_name
    if time_zone is not None:
        if time_zone not in zoneinfo.available_timezones():
            raise InvalidInput(f"Unknown time zone {time_zone!r}.", field="time_zone")
        user.time_zone = time_zone
    if ui_theme is not None:
        if ui_theme not in THEMES:
            raise InvalidInput(f"The theme must be one of {', '.join(THEMES)}.", field="ui_theme")
        user.ui_theme = ui_theme
    with transaction.atomic():
        user.save(update_fields=["display_name", "time_zone", "ui_theme"])
        if default_agent_id is not ...:
            if default_agent_id is not None:
                _check_default_agent(membership, default_agent_id)
            Membership.objects.filter(pk=membership.pk).update(default_agent_id=default_agent_id)
            membership.default_agent_id = default_agent_id
    return user


def _check_default_agent(membership: Membership, agent_id: Any) -> None:
    from iam.policy import Principal, resource_get_for_principal, shared_resource_types

    model = shared_resource_types().get("agent")
    if model is None:
        return  # agents app not built yet: the id is stored as given
    principal = Principal(tenant=membership.tenant, user=membership.user, role=membership.role)
    try:
        resource_get_for_principal(principal, model.objects.all(), agent_id, "use")
    except DomainError:
        raise InvalidInput("You cannot use that agent.", field="default_agent_id") from None


def user_session_end(*, user: User, session_id: int) -> None:
    from allauth.usersessions.models import UserSession

    session = UserSession.objects.filter(user=user, pk=session_id).first()
    if session is None:
        raise NotFound("Not found.")
    session.end()


# --- Account deletion ---------------------------------------------------------------------------


def _owned_resources(user: User) -> list[dict]:
    """Shared resources `user` owns, in every organisation they belong to."""
    from iam.policy import shared_resource_types

    owned = []
    for membership in Membership.objects.filter(user=user).select_related("tenant"):
        with tenant_context(membership.tenant):
            for resource_type, model in shared_resource_types().items():
                for pk in model.objects.filter(owner_id=user.pk).values_list("pk", flat=True):
                    owned.append({"tenant": membership.tenant.slug, "resource_type": resource_type, "id": pk})
    return owned


def user_delete(*, user: User, transfer_owned: bool = False) -> dict:
    """Delete a user's account.

    Owned agents and knowledge bases are never deleted silently: without `transfer_owned` the call is
    refused (409, listing them); with it, each goes to the longest-standing other admin of its
    organisation. The last admin of an organisation cannot delete their account.

    Personal data is erased (email, name, password, email addresses, social logins, sessions, tokens,
    API keys, team and organisation memberships); the user row stays as an inactive tombstone so
    history that references it (usage, audit, document uploads) keeps its integrity across schemas
    (a cascading delete cannot reach tables in other tenants' schemas).
    """
    memberships = list(Membership.objects.filter(user=user).select_related("tenant"))
    for membership in memberships:
        if membership.role == Role.ADMIN and not _other_admins(membership).exists():
            raise Conflict(
                f"You are the last admin of '{membership.tenant.name}'. Make someone else admin first.",
                extra={"tenant": membership.tenant.slug},
            )
    owned = _owned_resources(user)
    if owned and not transfer_owned:
        raise Conflict(
            "You own shared resources. Transfer them first, or pass transfer_owned=true to give each to an "
            "admin of its organisation.",
            extra={"owned": owned},
        )
    from allauth.account.models import EmailAddress
    from allauth.socialaccount.models import SocialAccount
    from allauth.usersessions.models import UserSession

    from iam.models import ApiKey, TeamMembership
    from iam.policy import shared_resource_types

    transferred = []
    with transaction.atomic():
        for membership in memberships:
            with tenant_context(membership.tenant):
                heir = _other_admins(membership).order_by("created_at").first()
                for resource_type, model in shared_resource_types().items():
                    ids = list(model.objects.filter(owner_id=user.pk).values_list("pk", flat=True))
                    if ids:
                        model.objects.filter(pk__in=ids).update(owner_id=heir.user_id)
                        transferred += [
                            {
                                "tenant": membership.tenant.slug,
                                "resource_type": resource_type,
                                "id": pk,
                                "to": heir.user_id,
                            }
                            for pk in ids
                        ]
                ApiKey.objects.filter(created_by=user).delete()
                TeamMembership.objects.filter(user=user).delete()
        jwt_revoke_all(user=user)
        for session in UserSession.objects.filter(user=user):
            session.end()
        EmailAddress.objects.filter(user=user).delete()
        SocialAccount.objects.filter(user=user).delete()
        Membership.objects.filter(user=user).delete()
        user.email = f"deleted-{uuid.uuid4().hex}@deleted.invalid"
        user.display_name = ""
        user.is_active = False
        user.is_staff = user.is_superuser = False
        user.set_unusable_password()
        user.save()
    logger.info("user %s deleted their account (%d resources transferred)", user.pk, len(transferred))
    return {"transferred": transferred}


def _other_admins(membership: Membership):
    return Membership.objects.filter(tenant=membership.tenant, role=Role.ADMIN).exclude(user_id=membership.user_id)
