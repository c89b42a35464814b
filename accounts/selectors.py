"""Reads for accounts: sessions and the personal data export."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from allauth.usersessions.models import UserSession
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from iam.policy import Principal, resource_queryset_for, shared_resource_types
from iam.selectors import api_keys_of_user, teams_of_user

from .models import Membership, User
from .signals import user_export_collect

if TYPE_CHECKING:
    from allauth.usersessions.models import UserSession
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken


def user_sessions(user: User) -> list[UserSession]:
    """The user's live browser sessions (allauth.usersessions), newest first; expired ones are purged."""

    sessions = UserSession.objects.purge_and_list(user)
    return sorted(sessions, key=lambda s: s.last_seen_at, reverse=True)


def user_jwt_tokens(user: User) -> QuerySet[OutstandingToken]:
    """Refresh tokens issued to the user that are neither blacklisted nor expired."""

    return OutstandingToken.objects.filter(user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True)


def user_export(*, principal: Principal) -> dict[str, Any]:
    """Everything we hold about the principal's user, as JSON-able data. Organisation-specific data (teams, keys,
    owned resources) is that of the principal's tenant, the organisation whose host the export is requested on;
    owned resources are those the policy lets the principal see (an API key limited to some agents exports those)."""

    user, tenant = principal.user, principal.tenant
    owned = {}
    for resource_type, model in shared_resource_types().items():
        mine = resource_queryset_for(principal, model._default_manager.filter(owner_id=user.pk))
        owned[resource_type] = [
            {"id": obj.pk, "name": str(obj), "org_access": obj.org_access, "created_at": obj.created_at.isoformat()}
            for obj in mine
        ]
    sections: dict[str, Any] = {}
    for _receiver, section in user_export_collect.send(sender=User, principal=principal):
        sections.update(cast(dict[str, Any], section))  # the signal's contract: each receiver returns a dict
    return {
        "user": {
            "id": user.pk,
            "email": user.email,
            "display_name": user.display_name,
            "time_zone": user.time_zone,
            "ui_theme": user.ui_theme,
            "date_joined": user.date_joined.isoformat(),
            "last_login": user.last_login.isoformat() if user.last_login else None,
        },
        "email_addresses": [
            {"email": e.email, "verified": e.verified, "primary": e.primary}
            for e in EmailAddress.objects.filter(user=user)
        ],
        "social_accounts": [
            {"provider": s.provider, "uid": s.uid, "date_joined": s.date_joined.isoformat()}
            for s in SocialAccount.objects.filter(user=user)
        ],
        "memberships": [
            {
                "organisation": m.tenant.slug,
                "name": m.tenant.name,
                "role": m.role,
                "joined": m.created_at.isoformat(),
                "default_agent_id": m.default_agent_id,
            }
            for m in Membership.objects.filter(user=user).select_related("tenant")
        ],
        "sessions": [
            {
                "ip": s.ip,
                "user_agent": s.user_agent,
                "created_at": s.created_at.isoformat(),
                "last_seen_at": s.last_seen_at.isoformat(),
            }
            for s in user_sessions(user)
        ],
        "organisation": {
            "slug": tenant.slug,
            "teams": [{"id": t.pk, "name": t.name} for t in teams_of_user(user.pk)],
            "api_keys": [
                {
                    "id": k.pk,
                    "name": k.name,
                    "prefix": k.prefix,
                    "scopes": k.scopes,
                    "created_at": k.created_at.isoformat(),
                    "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                }
                for k in api_keys_of_user(user.pk)
            ],
            "owned_resources": owned,
            **sections,
        },
    }
