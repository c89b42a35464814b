"""Writes for accounts: JWT issuance/rotation/logout, profile, sessions, account deletion."""

from __future__ import annotations

import logging
import uuid
import zoneinfo
from types import EllipsisType
from typing import TypedDict

from allauth.account import app_settings as allauth_settings
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from allauth.usersessions.models import UserSession
from django.contrib.auth import authenticate
from django.core.cache import cache
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from core.errors import Conflict, DomainError, ErrorCode, InvalidInput, NotFound
from core.tenancy import TenantRecord, in_tenant
from iam.models import ApiKey, TeamMembership
from iam.policy import Principal, resource_get_for_principal, shared_resource_types
from iam.services import resource_owner_change

from .models import Membership, Role, User
from .signals import member_departing
from .tokens import SESSION_CLAIM, TENANT_CLAIM, new_session_id, session_revoke, user_tokens_revoke

logger = logging.getLogger(__name__)

LOGIN_FAILURES_ALLOWED = 5
LOGIN_FAILURE_WINDOW = 300  # seconds


class Unauthenticated(DomainError):
    code = ErrorCode.AUTHENTICATION_FAILED
    status = 401


class TooManyAttempts(DomainError):
    code = ErrorCode.THROTTLED
    status = 429


# --- JWT ----------------------------------------------------------------------------------------


def _failure_key(email: str, ip: str) -> str:
    return f"accounts:jwt-login-failures:{email}:{ip}"


def jwt_pair_issue(*, tenant: TenantRecord, email: str, password: str, ip: str = "") -> dict[str, str]:
    """Email + password -> {"access", "refresh"} bound to `tenant`. Non-members get the same 401 as a
    wrong password (no account enumeration); repeated failures are throttled per email and IP."""
    email = (email or "").strip().lower()
    key = _failure_key(email, ip)
    if int(cache.get(key) or 0) >= LOGIN_FAILURES_ALLOWED:
        raise TooManyAttempts("Too many failed attempts. Try again in a few minutes.")
    user = authenticate(email=email, password=password or "")
    membership = None
    if user is not None and user.is_active:
        membership = Membership.objects.filter(user=user, tenant_id=tenant.pk).first()
    if user is None or membership is None:
        cache.add(key, 0, timeout=LOGIN_FAILURE_WINDOW)
        cache.incr(key)
        raise Unauthenticated("No active account with these credentials in this organisation.")
    cache.delete(key)
    refresh = RefreshToken.for_user(user)
    refresh[TENANT_CLAIM] = tenant.schema_name
    refresh[SESSION_CLAIM] = new_session_id()  # copied into every access token; logout revokes it
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def _refresh_token_for_tenant(raw: str, tenant: TenantRecord) -> RefreshToken:
    try:
        # simplejwt annotates the argument as a Token, but it is the encoded JWT (its own views pass the string).
        refresh = RefreshToken(raw)  # type: ignore[arg-type]  # checks signature, expiry and the blacklist
    except TokenError as exc:
        raise Unauthenticated(str(exc.args[0]), code=ErrorCode.TOKEN_NOT_VALID) from None
    if refresh.get(TENANT_CLAIM) != tenant.schema_name:
        raise Unauthenticated("This token was issued for another organisation.", code=ErrorCode.TOKEN_WRONG_TENANT)
    return refresh


def jwt_refresh(*, tenant: TenantRecord, refresh_token: str) -> dict[str, str]:
    """Rotate: blacklist the presented refresh token, return a new access + refresh pair."""
    refresh = _refresh_token_for_tenant(refresh_token, tenant)
    user = User.objects.filter(pk=refresh.get("user_id"), is_active=True).first()
    if user is None or not Membership.objects.filter(user=user, tenant_id=tenant.pk).exists():
        raise Unauthenticated("No active account for this token in this organisation.")
    with transaction.atomic():
        refresh.blacklist()
        new = RefreshToken.for_user(user)
        new[TENANT_CLAIM] = tenant.schema_name
        new[SESSION_CLAIM] = refresh.get(SESSION_CLAIM) or new_session_id()  # the same session, rotated
    return {"access": str(new.access_token), "refresh": str(new)}


def jwt_logout(*, tenant: TenantRecord, refresh_token: str) -> None:
    """End one session: its refresh token is blacklisted and its access tokens stop working at once."""
    refresh = _refresh_token_for_tenant(refresh_token, tenant)
    refresh.blacklist()
    session_revoke(schema=tenant.schema_name, sid=str(refresh.get(SESSION_CLAIM) or ""))


def jwt_revoke_all(*, user: User) -> int:
    """Blacklist every outstanding refresh token of `user` (all tenants); their access tokens stop working too."""

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
    default_agent_id: int | None | EllipsisType = ...,  # ...: leave it as it is
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


def _check_default_agent(membership: Membership, agent_id: int) -> None:
    model = shared_resource_types()["agent"]  # registered by the agents app (accounts may not import it)
    principal = Principal(tenant=membership.tenant, user=membership.user, role=membership.role)
    try:
        resource_get_for_principal(principal, model._default_manager.all(), agent_id, "use")
    except DomainError:
        raise InvalidInput("You cannot use that agent.", field="default_agent_id") from None


def user_session_end(*, user: User, session_id: int) -> None:
    session = UserSession.objects.filter(user=user, pk=session_id).first()
    if session is None:
        raise NotFound("Not found.")
    session.end()


# --- Account deletion ---------------------------------------------------------------------------


class OwnedResource(TypedDict):
    tenant: str  # the organisation's slug
    resource_type: str
    id: int


class TransferredResource(OwnedResource):
    to: int  # the new owner's user id


class AccountDeletion(TypedDict):
    transferred: list[TransferredResource]


def _owned_resources(user: User) -> list[OwnedResource]:
    """Shared resources `user` owns, in every organisation they belong to."""
    owned: list[OwnedResource] = []
    for membership in Membership.objects.filter(user=user).select_related("tenant"):
        with in_tenant(membership.tenant):
            for resource_type, model in shared_resource_types().items():
                for pk in model._default_manager.filter(owner_id=user.pk).values_list("pk", flat=True):
                    owned.append({"tenant": membership.tenant.slug, "resource_type": resource_type, "id": pk})
    return owned


def user_delete(*, user: User, transfer_owned: bool = False) -> AccountDeletion:
    """Delete a user's account.

    Owned agents and knowledge bases are never deleted silently: without `transfer_owned` the call is
    refused (409, listing them); with it, each goes to the longest-standing other admin of its
    organisation. The last admin of an organisation cannot delete their account.

    Personal data is erased (email, name, password, email addresses, social logins, sessions, tokens,
    API keys, team and organisation memberships); their conversations are deleted or kept anonymised as each
    organisation's policy says (`member_departing`, answered by agents); the user row stays as an inactive tombstone so
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

    transferred: list[TransferredResource] = []
    with transaction.atomic():
        for membership in memberships:
            with in_tenant(membership.tenant):
                heir = _other_admins(membership).order_by("created_at").first()
                # One object at a time through the ownership service: each is audited, announced, and dropped
                # from the caches that hold it (a bulk update would skip all three).
                leaving = Principal(tenant=membership.tenant, user=user, role=membership.role, membership=membership)
                for resource_type, model in shared_resource_types().items():
                    for obj in model._default_manager.filter(owner_id=user.pk).order_by("pk"):
                        if heir is None:  # an organisation left without any admin: nobody can take it over
                            raise Conflict(
                                f"'{membership.tenant.name}' has no other admin to take over what you own there.",
                                extra={"tenant": membership.tenant.slug},
                            )
                        resource_owner_change(
                            resource_type=resource_type, obj=obj, new_owner_id=heir.user_id, principal=leaving
                        )
                        transferred.append(
                            {
                                "tenant": membership.tenant.slug,
                                "resource_type": resource_type,
                                "id": obj.pk,
                                "to": heir.user_id,
                            }
                        )
                ApiKey.objects.filter(created_by=user).delete()
                TeamMembership.objects.filter(user=user).delete()
                member_departing.send(sender=User, tenant=membership.tenant, user=user)
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


def _other_admins(membership: Membership) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=membership.tenant, role=Role.ADMIN).exclude(user_id=membership.user_id)


def membership_create_admin(*, user: User, tenant: TenantRecord) -> Membership:
    """Make `user` an admin of `tenant`: the owner of an organisation being provisioned (tenants.services)."""
    return Membership.objects.create(user=user, tenant_id=tenant.pk, role=Role.ADMIN)


def membership_ensure(*, user_id: int, tenant: TenantRecord, role: str) -> Membership:
    """Give the user `role` in `tenant` unless they are a member already (an organisation restored from a backup:
    backups.archive); an existing membership keeps its role."""
    membership, _ = Membership.objects.get_or_create(user_id=user_id, tenant_id=tenant.pk, defaults={"role": role})
    return membership


def email_verification_send(*, request: HttpRequest, email: str) -> bool:
    """Send the address-confirmation mail to the user who has just signed up with `email` outside allauth's own form
    (with an organisation). True if a mail went out: none does when the platform does not verify addresses."""
    if allauth_settings.EMAIL_VERIFICATION == allauth_settings.EmailVerificationMethod.NONE:
        return False
    user = User.objects.get(email=email.lower())
    address, _ = EmailAddress.objects.get_or_create(
        user=user, email=user.email, defaults={"primary": True, "verified": False}
    )
    if address.verified:
        return False
    address.send_confirmation(request, signup=True)
    return True
