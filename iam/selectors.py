"""Reads for identity and access inside an organisation (for APIs and the dashboard alike)."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from accounts.models import Membership, Role
from core.tenancy import TenantRecord
from iam.policy import Principal, principal_can_manage

from .models import ApiKey, Invitation, Share, Team, TeamMembership


def team_list() -> QuerySet[Team]:
    return Team.objects.annotate(member_count=Count("memberships"))


def team_get(team_id: int | str) -> Team | None:  # str: straight from a URL or form
    return team_list().filter(pk=team_id).first() if str(team_id).isdigit() else None


def team_member_list(team: Team) -> QuerySet[TeamMembership]:
    return TeamMembership.objects.filter(team=team).select_related("user").order_by("user__email")


def teams_of_user(user_id: int) -> QuerySet[Team]:
    return Team.objects.filter(memberships__user_id=user_id)


def share_list_for_resource(resource_type: str, resource_id: int) -> QuerySet[Share]:
    return Share.objects.filter(resource_type=resource_type, resource_id=resource_id).select_related("team")


def api_key_list(*, principal: Principal) -> QuerySet[ApiKey]:
    """Admins see every key of the organisation; others only their own."""
    keys = ApiKey.objects.select_related("created_by")
    return keys if principal_can_manage(principal) else keys.filter(created_by_id=principal.user.pk)


def api_keys_of_user(user_id: int) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(created_by_id=user_id)


def invitation_list(*, pending_only: bool = False) -> QuerySet[Invitation]:
    qs = Invitation.objects.select_related("invited_by")
    return qs.filter(accepted_at=None, revoked_at=None) if pending_only else qs


def invitation_get(invitation_id: int | str) -> Invitation | None:
    return Invitation.objects.filter(pk=invitation_id).first() if str(invitation_id).isdigit() else None


def member_list(tenant: TenantRecord) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant_id=tenant.pk).select_related("user").order_by("user__email")


def admin_emails(tenant: TenantRecord) -> list[str]:
    """Where to tell an organisation's admins about something that needs them (e.g. a disabled webhook)."""
    return list(member_list(tenant).filter(role=Role.ADMIN).values_list("user__email", flat=True))
