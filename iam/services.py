"""Writes for identity and access inside an organisation: teams, shares, ownership, API keys,
invitations and memberships. Callers pass the acting Principal; authorization is asked of iam.policy.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Membership, Role, User
from core.audit import audit_record
from core.errors import Conflict, DomainError, ErrorCode, Forbidden, InvalidInput, NotFound
from core.events import (
    API_KEY_CREATED,
    API_KEY_REVOKED,
    MEMBER_JOINED,
    MEMBER_REMOVED,
    MEMBER_ROLE_CHANGED,
    RESOURCE_OWNERSHIP_TRANSFERRED,
    RESOURCE_SHARED,
    TEAM_CREATED,
    TEAM_DELETED,
    event_subject,
    publish_on_commit,
)
from core.models import SharedResource
from core.rls import db_as_system
from core.tenancy import TenantRecord, tenant_url
from iam.policy import (
    ALL_SCOPES,
    Principal,
    principal_can,
    principal_require_key_grant,
    principal_require_scope,
    resource_get_for_principal,
    resource_queryset_for,
    role_may_own,
    shared_resource_model,
    shared_resource_types,
)

from .keys import api_key_generate, api_key_hash
from .models import ApiKey, IamSettings, Invitation, Share, ShareLevel, Team, TeamMembership
from .selectors import api_key_list

INVITATION_SALT = "iam.invitation"


def _audit(principal: Principal | None, action: str, **kwargs: Any) -> None:  # kwargs: audit_record's
    """Every admin/configuration change is in the tenant's immutable audit log (actor: core.audit)."""
    audit_record(principal=principal, action=action, **kwargs)


class InvitationInvalid(DomainError):
    code = ErrorCode.INVITATION_INVALID
    status = 404


class InvitationUsed(DomainError):
    code = ErrorCode.INVITATION_USED
    status = 410


class InvitationExpired(DomainError):
    code = ErrorCode.INVITATION_EXPIRED
    status = 410


def _member_user(tenant: TenantRecord, user_id: int) -> User:
    membership = Membership.objects.filter(tenant_id=tenant.pk, user_id=user_id).select_related("user").first()
    if membership is None:
        raise NotFound("No such member in this organisation.", field="user_id")
    return membership.user


# --- Settings -----------------------------------------------------------------------------------


def iam_settings_get() -> IamSettings:
    obj, _ = IamSettings.objects.get_or_create(pk=1)
    return obj


@transaction.atomic
def iam_settings_update(*, principal: Principal, members_can_create_api_keys: bool) -> IamSettings:
    principal_require_scope(principal, "admin")
    obj = iam_settings_get()
    before = {"members_can_create_api_keys": obj.members_can_create_api_keys}
    obj.members_can_create_api_keys = bool(members_can_create_api_keys)
    obj.save()
    _audit(
        principal,
        "iam.settings_update",
        target=obj,
        before=before,
        after={"members_can_create_api_keys": obj.members_can_create_api_keys},
    )
    return obj


# --- Teams --------------------------------------------------------------------------------------


def _team_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("The team name must be 1-100 characters.", field="name")
    return name


@transaction.atomic
def team_create(*, principal: Principal, name: str, description: str = "") -> Team:
    principal_require_scope(principal, "admin")
    name = _team_name(name)
    if Team.objects.filter(name__iexact=name).exists():
        raise Conflict(f"A team named '{name}' already exists.", field="name")
    team = Team.objects.create(name=name, description=(description or "")[:500])
    _audit(principal, "team.create", target=team, after={"name": team.name})
    publish_on_commit(TEAM_CREATED, {"team_id": team.pk, "name": team.name}, subject=event_subject("team", team.pk))
    return team


@transaction.atomic
def team_update(*, principal: Principal, team: Team, name: str | None = None, description: str | None = None) -> Team:
    principal_require_scope(principal, "admin")
    if name is not None:
        name = _team_name(name)
        if Team.objects.filter(name__iexact=name).exclude(pk=team.pk).exists():
            raise Conflict(f"A team named '{name}' already exists.", field="name")
    before = {"name": team.name, "description": team.description}
    if name is not None:
        team.name = name
    if description is not None:
        team.description = description[:500]
    team.save()
    _audit(
        principal, "team.update", target=team, before=before, after={"name": team.name, "description": team.description}
    )
    return team


@transaction.atomic
def team_delete(*, principal: Principal, team: Team) -> None:
    principal_require_scope(principal, "admin")
    team_id = team.pk
    _audit(principal, "team.delete", target=team, before={"name": team.name})
    team.delete()  # its shares go with it
    publish_on_commit(TEAM_DELETED, {"team_id": team_id}, subject=event_subject("team", team_id))


@transaction.atomic
def team_member_add(*, principal: Principal, team: Team, user_id: int) -> TeamMembership:
    principal_require_scope(principal, "admin")
    user = _member_user(principal.tenant, user_id)
    membership, _ = TeamMembership.objects.get_or_create(team=team, user=user)
    _audit(principal, "team.member_add", target=team, after={"user_id": user.pk})
    return membership


@transaction.atomic
def team_member_remove(*, principal: Principal, team: Team, user_id: int) -> None:
    principal_require_scope(principal, "admin")
    deleted, _ = TeamMembership.objects.filter(team=team, user_id=user_id).delete()
    if not deleted:
        raise NotFound("This user is not in the team.")
    _audit(principal, "team.member_remove", target=team, before={"user_id": user_id})


# --- Sharing and ownership ----------------------------------------------------------------------


def shared_resource_get(
    *, principal: Principal, resource_type: str, resource_id: int | str, action: str
) -> SharedResource:
    """A registered shared resource the principal may `action`, or NotFound/Forbidden."""
    model = shared_resource_model(resource_type)
    return resource_get_for_principal(principal, model._default_manager.all(), resource_id, action)


@transaction.atomic
def share_set(
    *, principal: Principal, resource_type: str, resource_id: int, team_id: int | None, level: str
) -> Share | None:
    """Share a resource with a team (team_id) or the whole organisation (team_id None) as viewer/editor.
    `level="none"` removes the share. Returns the team Share (None for org-wide)."""
    principal_require_scope(principal, "write")
    if level not in (*ShareLevel.values, "none"):
        raise InvalidInput("The level must be 'viewer', 'editor' or 'none'.", field="level")
    obj = shared_resource_get(principal=principal, resource_type=resource_type, resource_id=resource_id, action="share")
    # the level this team (or the whole organisation) had before
    if team_id is None:
        previous_level = obj.org_access
    else:
        previous_level = (
            Share.objects.filter(team_id=team_id, resource_type=resource_type, resource_id=obj.pk)
            .values_list("level", flat=True)
            .first()
            or "none"
        )
    if team_id is None:
        obj.org_access = level
        obj.save(update_fields=["org_access", "updated_at"])
        share = None
    else:
        team = Team.objects.filter(pk=team_id).first()
        if team is None:
            raise NotFound("No such team.", field="team_id")
        if level == "none":
            Share.objects.filter(team=team, resource_type=resource_type, resource_id=obj.pk).delete()
            share = None
        else:
            share, _ = Share.objects.update_or_create(
                team=team,
                resource_type=resource_type,
                resource_id=obj.pk,
                defaults={"level": level, "created_by": principal.user},
            )
    _audit(
        principal,
        "resource.share",
        target=obj,
        before={"team_id": team_id, "level": previous_level},
        after={"team_id": team_id, "level": level},
    )
    publish_on_commit(
        RESOURCE_SHARED,
        {"resource_type": resource_type, "resource_id": obj.pk, "team_id": team_id, "level": level},
        subject=event_subject(resource_type, obj.pk, owner_id=obj.owner_id),
    )
    return share


@transaction.atomic
def share_delete(*, principal: Principal, share: Share) -> None:
    principal_require_scope(principal, "write")
    shared_resource_get(
        principal=principal, resource_type=share.resource_type, resource_id=share.resource_id, action="share"
    )
    _audit(
        principal,
        "resource.unshare",
        target_type=share.resource_type,
        target_id=share.resource_id,
        before={"team_id": share.team_id, "level": share.level},
    )
    share.delete()


@transaction.atomic
def resource_transfer_ownership(
    *, principal: Principal, resource_type: str, resource_id: int, new_owner_id: int
) -> SharedResource:
    """Owner or admin hands a resource to another member (not a read-only one: they could not use it)."""
    principal_require_scope(principal, "write")
    obj = shared_resource_get(
        principal=principal, resource_type=resource_type, resource_id=resource_id, action="transfer"
    )
    membership = Membership.objects.filter(tenant_id=principal.tenant.pk, user_id=new_owner_id).first()
    if membership is None:
        raise NotFound("No such member in this organisation.", field="new_owner_id")
    if not role_may_own(membership.role):
        raise InvalidInput("A read-only member cannot own resources.", field="new_owner_id")
    return resource_owner_change(
        resource_type=resource_type, obj=obj, new_owner_id=membership.user_id, principal=principal
    )


@transaction.atomic
def resource_owner_change(
    *, resource_type: str, obj: SharedResource, new_owner_id: int, principal: Principal | None = None
) -> SharedResource:
    """Give one resource to another member, once the caller has decided it may (resource_transfer_ownership
    asks iam.policy; account deletion hands what a leaving member owns to an admin). A save, not a bulk update,
    so the model's signals clear the caches that hold it (agents: the agents epoch); audited and announced."""
    previous = obj.owner_id
    obj.owner_id = new_owner_id
    # The previous owner may lose sight of the row it hands over, which row-level security refuses to a principal's
    # own update (core.rls): the caller's right to hand it over was decided above.
    with db_as_system():
        obj.save(update_fields=["owner", "updated_at"])
    _audit(principal, "resource.transfer", target=obj, before={"owner_id": previous}, after={"owner_id": new_owner_id})
    publish_on_commit(
        RESOURCE_OWNERSHIP_TRANSFERRED,
        {"resource_type": resource_type, "resource_id": obj.pk, "from": previous, "to": new_owner_id},
        subject=event_subject(resource_type, obj.pk, owner_id=new_owner_id),
    )
    return obj


# --- API keys -----------------------------------------------------------------------------------


def _clean_scopes(scopes: list[str]) -> list[str]:
    scopes = sorted(set(scopes or []))
    if not scopes:
        raise InvalidInput("Choose at least one scope.", field="scopes")
    unknown = set(scopes) - ALL_SCOPES
    if unknown:
        raise InvalidInput(f"Unknown scope(s): {', '.join(sorted(unknown))}.", field="scopes")
    return scopes


@transaction.atomic
def api_key_create(
    *,
    principal: Principal,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    agent_ids: list[int] | None = None,
) -> tuple[ApiKey, str]:
    """Create a key for the acting user. Returns (key, full secret) — the secret is never stored.

    Admins always may; other members only if the organisation allows it. A key can never hold more
    than its creator: only admins get the admin scope, read-only members get read/chat at most.
    """
    members_may_create = iam_settings_get().members_can_create_api_keys
    principal_require_key_grant(principal, (), members_may_create=members_may_create)
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("The key name must be 1-100 characters.", field="name")
    scopes = _clean_scopes(scopes)
    principal_require_key_grant(principal, scopes, members_may_create=members_may_create)
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("The expiry must be in the future.", field="expires_at")
    ids = sorted({int(i) for i in agent_ids}) if agent_ids is not None else []
    _check_agents_usable(principal, ids)
    raw, prefix = api_key_generate()
    key = ApiKey.objects.create(
        name=name,
        prefix=prefix,
        key_hash=api_key_hash(raw),
        created_by=principal.user,
        scopes=scopes,
        all_agents=agent_ids is None,
        agent_ids=ids,
        expires_at=expires_at,
    )
    _audit(principal, "api_key.create", target=key, after={"name": key.name, "scopes": scopes, "agent_ids": ids})
    publish_on_commit(
        API_KEY_CREATED,
        {"api_key_id": key.pk, "name": key.name, "user_id": principal.user.pk},
        subject=event_subject("api_key", key.pk, owner_id=key.created_by_id),  # admins and the key's owner
    )
    return key, raw


def _check_agents_usable(principal: Principal, ids: list[int]) -> None:
    """A key may only be limited to agents its creator can use (unknown ids would be silent no-ops)."""
    model = shared_resource_types().get("agent")
    if model is None or not ids:
        return
    usable = {
        obj.pk
        for obj in resource_queryset_for(principal, model._default_manager.filter(pk__in=ids))
        if principal_can(principal, "use", obj)
    }
    missing = sorted(set(ids) - usable)
    if missing:
        raise InvalidInput(f"No usable agent with id(s) {', '.join(map(str, missing))}.", field="agent_ids")


def api_key_get_for_principal(principal: Principal, key_id: int | str) -> ApiKey:
    """Admins see every key, members their own; anything else is 404."""

    key = api_key_list(principal=principal).filter(pk=key_id).first() if str(key_id).isdigit() else None
    if key is None:
        raise NotFound("Not found.")
    return key


@transaction.atomic
def api_key_revoke(*, principal: Principal, key: ApiKey) -> ApiKey:
    if key.created_by_id != principal.user.pk:
        principal_require_scope(principal, "admin")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        _audit(  # before/after, never the key material (prefix only identifies it)
            principal,
            "api_key.revoke",
            target=key,
            before={"name": key.name, "prefix": key.prefix, "scopes": list(key.scopes), "revoked_at": None},
            after={"name": key.name, "prefix": key.prefix, "scopes": list(key.scopes), "revoked_at": key.revoked_at},
        )
        subject = event_subject("api_key", key.pk, owner_id=key.created_by_id)
        publish_on_commit(API_KEY_REVOKED, {"api_key_id": key.pk}, subject=subject)
    return key


# --- Invitations --------------------------------------------------------------------------------


def invitation_token(invitation: Invitation) -> str:
    return signing.dumps({"i": invitation.pk, "n": invitation.nonce}, salt=INVITATION_SALT, compress=True)


def invitation_url(tenant: TenantRecord, invitation: Invitation) -> str:
    return tenant_url(tenant, f"/invitations/{invitation_token(invitation)}/")


@transaction.atomic
def invitation_create(*, principal: Principal, email: str, role: str = Role.USER) -> Invitation:
    principal_require_scope(principal, "admin")
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except Exception:
        raise InvalidInput("Enter a valid email address.", field="email") from None
    if role not in Role.values:
        raise InvalidInput(f"The role must be one of {', '.join(Role.values)}.", field="role")
    if Membership.objects.filter(tenant_id=principal.tenant.pk, user__email__iexact=email).exists():
        raise Conflict(f"{email} is already a member.", field="email")
    # A new invitation replaces any pending one for the same address.
    Invitation.objects.filter(email=email, accepted_at=None, revoked_at=None).update(revoked_at=timezone.now())
    invitation = Invitation.objects.create(
        email=email,
        role=role,
        nonce=secrets.token_hex(16),
        invited_by=principal.user,
        expires_at=timezone.now() + timedelta(days=settings.INVITATION_MAX_AGE_DAYS),
    )
    _audit(principal, "invitation.create", target=invitation, after={"email": email, "role": role})
    url = invitation_url(principal.tenant, invitation)
    tenant_name = principal.tenant.name
    inviter = principal.user.display_name or principal.user.email
    role_label = Role(role).label  # "Read-only", not "readonly"
    transaction.on_commit(
        lambda: send_mail(
            f"You are invited to join {tenant_name} on Agentry",
            f"{inviter} invited you to join {tenant_name} with the role {role_label}.\n\n"
            f"Accept the invitation: {url}\n\n"
            f"The link works once and expires in {settings.INVITATION_MAX_AGE_DAYS} days.",
            None,
            [email],
        )
    )
    return invitation


def invitation_from_token(token: str) -> Invitation:
    """The pending invitation a signed token names (in the current tenant), or a precise error."""
    try:
        data = signing.loads(token, salt=INVITATION_SALT, max_age=timedelta(days=settings.INVITATION_MAX_AGE_DAYS))
    except signing.SignatureExpired:
        raise InvitationExpired("This invitation has expired. Ask an admin to invite you again.") from None
    except signing.BadSignature:
        raise InvitationInvalid("This invitation link is not valid.") from None
    invitation = Invitation.objects.filter(pk=data.get("i")).first()
    if invitation is None or not secrets.compare_digest(invitation.nonce, str(data.get("n", ""))):
        raise InvitationInvalid("This invitation link is not valid.")
    if invitation.accepted_at is not None:
        raise InvitationUsed("This invitation has already been used.")
    if invitation.revoked_at is not None:
        raise InvitationInvalid("This invitation has been withdrawn.")
    if invitation.expires_at <= timezone.now():
        raise InvitationExpired("This invitation has expired. Ask an admin to invite you again.")
    return invitation


@transaction.atomic
def invitation_accept(*, tenant: TenantRecord, token: str, user: User) -> Membership:
    """Join `tenant` with the invited role. The invitation is locked so a link works exactly once."""
    invitation = invitation_from_token(token)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is not None:
        raise InvitationUsed("This invitation has already been used.")
    if user.email.lower() != invitation.email.lower():
        raise Forbidden(
            f"This invitation is for {invitation.email}. Log in with that address to accept it.",
            code=ErrorCode.INVITATION_OTHER_EMAIL,
        )
    try:
        with transaction.atomic():
            membership = Membership.objects.create(user=user, tenant_id=tenant.pk, role=invitation.role)
    except IntegrityError:
        raise Conflict("You are already a member of this organisation.") from None
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    joined = Principal(tenant=tenant, user=user, role=membership.role, membership=membership)
    _audit(joined, "invitation.accept", target=invitation, after={"role": membership.role})
    publish_on_commit(
        MEMBER_JOINED,
        {"user_id": user.pk, "role": membership.role},
        subject=event_subject("member", user.pk, owner_id=user.pk),  # admins and the member concerned
    )
    return membership


@transaction.atomic
def invitation_signup_accept(*, tenant: TenantRecord, token: str, password: str, display_name: str = "") -> Membership:
    """A new person signs up through the invitation: the link proved they own the email address,
    so the address is recorded as verified."""

    invitation = invitation_from_token(token)
    if User.objects.filter(email__iexact=invitation.email).exists():
        raise Conflict("An account with this email exists: log in to accept the invitation.")
    try:
        validate_password(password or "", user=User(email=invitation.email))
    except ValidationError as exc:
        raise InvalidInput(" ".join(exc.messages), field="password") from None
    user = User.objects.create_user(email=invitation.email, password=password, display_name=display_name[:100])
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return invitation_accept(tenant=tenant, token=token, user=user)


@transaction.atomic
def invitation_revoke(*, principal: Principal, invitation: Invitation) -> None:
    principal_require_scope(principal, "admin")
    if invitation.accepted_at is not None:
        raise Conflict("This invitation has already been accepted.")
    before = {"email": invitation.email, "role": invitation.role, "revoked_at": invitation.revoked_at}
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    _audit(
        principal,
        "invitation.revoke",
        target=invitation,
        before=before,
        after={**before, "revoked_at": invitation.revoked_at},
    )


# --- Memberships --------------------------------------------------------------------------------


def _is_last_admin(membership: Membership) -> bool:
    return (
        membership.role == Role.ADMIN
        and not Membership.objects.filter(tenant=membership.tenant, role=Role.ADMIN).exclude(pk=membership.pk).exists()
    )


def _membership_get(principal: Principal, user_id: int | str) -> Membership:
    if not str(user_id).isdigit():
        raise NotFound("No such member in this organisation.")
    membership = (
        Membership.objects.select_for_update()
        .filter(tenant_id=principal.tenant.pk, user_id=user_id)
        .select_related("user")
        .first()
    )
    if membership is None:
        raise NotFound("No such member in this organisation.")
    return membership


@transaction.atomic
def membership_role_change(*, principal: Principal, user_id: int, role: str) -> Membership:
    principal_require_scope(principal, "admin")
    if role not in Role.values:
        raise InvalidInput(f"The role must be one of {', '.join(Role.values)}.", field="role")
    # Lock every admin row of the tenant: two admins demoting each other at once cannot both succeed.
    list(Membership.objects.select_for_update().filter(tenant_id=principal.tenant.pk, role=Role.ADMIN))
    membership = _membership_get(principal, user_id)
    if role != Role.ADMIN and _is_last_admin(membership):
        raise Conflict("The last admin cannot be demoted. Make someone else admin first.", code=ErrorCode.LAST_ADMIN)
    previous = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    _audit(
        principal,
        "member.role_change",
        target_type="member",
        target_id=membership.user_id,
        before={"role": previous},
        after={"role": role},
    )
    publish_on_commit(
        MEMBER_ROLE_CHANGED,
        {"user_id": membership.user_id, "from": previous, "to": role},
        subject=event_subject("member", membership.user_id, owner_id=membership.user_id),
    )
    return membership


@transaction.atomic
def membership_remove(*, principal: Principal, user_id: int) -> None:
    """Remove a member. Their API keys here are revoked and team memberships dropped; resources they
    own stay (an admin can transfer them)."""
    principal_require_scope(principal, "admin")
    list(Membership.objects.select_for_update().filter(tenant_id=principal.tenant.pk, role=Role.ADMIN))
    membership = _membership_get(principal, user_id)
    if _is_last_admin(membership):
        raise Conflict("The last admin cannot be removed.", code=ErrorCode.LAST_ADMIN)
    ApiKey.objects.filter(created_by_id=membership.user_id, revoked_at=None).update(revoked_at=timezone.now())
    TeamMembership.objects.filter(user_id=membership.user_id).delete()
    _audit(
        principal,
        "member.remove",
        target_type="member",
        target_id=membership.user_id,
        before={"role": membership.role, "email": membership.user.email},
    )
    membership.delete()
    publish_on_commit(
        MEMBER_REMOVED,
        {"user_id": membership.user_id},
        subject=event_subject("member", membership.user_id, owner_id=membership.user_id),
    )
