"""Members as the hot path reads them: who a request's user is in its organisation, without reading a row.

Every authenticated request needs the user and their membership (role, default agent) in the organisation of the
host. Both are kept per process under that organisation's auth epoch (core.epochs), keyed by (schema, user id), so a
member of one organisation is never found among another's entries. Whatever a cached member depends on bumps the
epoch (iam.signals): a membership created, changed or deleted, a user saved (password, active flag, profile) in every
organisation they belong to, an API key changed. The next request of every process then reads the rows again.
MEMBER_CACHE_SECONDS bounds an entry's age (a backstop for rows changed outside Django); 0 turns the cache off.

What a member may do is still decided by iam.policy alone; this module only remembers rows.
"""

from __future__ import annotations

import copy

from accounts.models import Membership
from core.epochs import EpochCache, epoch_get
from core.tenancy import TenantRecord, tenant_key

# Boxed: "not a member" is cached too (None), until the epoch moves.
_members: EpochCache[tuple[Membership | None]] = EpochCache("MEMBER_CACHE_SECONDS")


def auth_epoch(schema: str) -> str:
    """The epoch of everything that decides who may act in the organisation of `schema` (members, users, API keys)."""
    return tenant_key("auth", schema=schema)


def member_get(user_id: int, tenant: TenantRecord) -> Membership | None:
    """The membership of the active user `user_id` in `tenant`, with its `user` loaded, or None. A copy: the caller
    may change it (and its user) without touching what other requests get."""
    epoch = epoch_get(auth_epoch(tenant.schema_name))  # read before the rows (core.epochs)
    key = (tenant.schema_name, int(user_id))
    cached = _members.get(key, epoch)
    if cached is None:
        found = (
            Membership.objects.select_related("user")
            .filter(user_id=user_id, tenant_id=tenant.pk, user__is_active=True)
            .first()
        )
        cached = (found,)
        _members.put(key, epoch, cached)
    if cached[0] is None:
        return None
    membership = copy.copy(cached[0])
    membership.user = copy.copy(cached[0].user)  # copy.copy shares the related user: requests never share a row
    return membership
