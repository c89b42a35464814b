"""Authorization in one place: may this principal (user or API key) do this action on this object
in this tenant?

Every view, consumer and task asks here. Objects a principal may not see answer 404 (NotFound),
never 403, so IDs leak nothing. Visible objects whose action is not allowed answer 403 (Forbidden).

Contract used by the other apps (keep these signatures stable):
    principal_from_request(request) -> Principal
    resource_queryset_for(principal, queryset) -> QuerySet        # what the principal may see
    resource_get_for_principal(principal, queryset, pk, action) -> obj
    principal_can(principal, action, obj) -> bool
Actions: "view", "use" (chat, search), "edit", "delete", "share", "transfer", "manage" (admin-only settings).

Also for other apps:
    register_shared_resource("agent", Agent)        # in AppConfig.ready(): team shares + share API
    register_citation_source(fn)                    # in AppConfig.ready(): where citations given to a user live
    principal_can_create / principal_can_manage / principal_acts_for(principal, user_id)   # non-object rules
    referenced_queryset_for(principal, agent, agent.knowledge_bases.all())   # names an agent's viewer may see
    passage_grant_for(principal, kb, document_id) -> None (all) | frozenset of chunk ids (cited to it)
    api_key_allows_agent(principal, agent_id) -> bool
    principal_for_user(user, tenant) -> Principal | None              # tasks: act as a user
    principal_require_scope(principal, scope)                         # raise Forbidden (e.g. consumers)
    IsTenantMember (DRF default permission: membership + the view's `required_scope`)
    member_required / admin_required / write_required, MemberRequiredMixin / AdminRequiredMixin /
    WriteRequiredMixin (dashboard views; same rules, HTML 403 page)

Roles: admin (everything in the tenant), user (own resources + what is shared with them), readonly
(view and use what is shared; change nothing). An API key acts for its creator: the creator's role
AND the key's scopes both apply; a key may be limited to a list of agents.

View scopes: every DRF view declares `required_scope` ("read" | "write" | "chat" | "admin", or a
dict per HTTP method; "public" only for AllowAny views taking credentials in the body). "admin" also
requires the admin role; "write" is refused to readonly members unless the view sets
`self_service = True` (it only touches the caller's own account, e.g. profile).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.views import redirect_to_login
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import BasePermission

from accounts.models import Membership, Role, User
from core.audit import actor_for_principal, actor_set
from core.errors import ErrorCode, Forbidden, NotFound
from core.models import SharedResource
from core.rls import db_principal_for, db_principal_set
from core.tenancy import TenantRecord

from .members import member_get
from .models import ApiKey, Share

if TYPE_CHECKING:  # rest_framework.views reads DEFAULT_PERMISSION_CLASSES on import, which names this module
    from django.views import View as _ViewBase
    from rest_framework.request import Request
    from rest_framework.views import APIView
else:
    _ViewBase = object

_M = TypeVar("_M", bound=Model)

ACTIONS = ("view", "use", "edit", "delete", "share", "transfer", "manage")
ALL_SCOPES = frozenset({"read", "write", "chat", "admin"})
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Views that take credentials in the body (token issuance) declare this; they use AllowAny.
PUBLIC_SCOPE = "public"
# Which API-key scope an action needs.
SCOPE_FOR_ACTION = {
    "view": "read",
    "use": "chat",
    "edit": "write",
    "delete": "write",
    "share": "write",
    "transfer": "write",
    "manage": "admin",
}


class ScopeRequired(Forbidden):
    code = ErrorCode.SCOPE_REQUIRED


class ReadOnlyMember(Forbidden):
    code = ErrorCode.READONLY


class AdminRequired(Forbidden):
    code = ErrorCode.ADMIN_REQUIRED


@dataclass(frozen=True)
class Principal:
    """Who is acting: a member user, or an API key acting for its creator with limited scopes."""

    tenant: TenantRecord
    user: User  # for API keys: the key's creator
    role: str
    api_key: ApiKey | None = None
    scopes: frozenset[str] = field(default=ALL_SCOPES)
    agent_ids: frozenset[int] | None = None  # API keys limited to some agents; None = all
    membership: Membership | None = field(default=None, compare=False, repr=False)  # when known

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_readonly(self) -> bool:
        return self.role == Role.READONLY

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


# --- Shared-resource registry --------------------------------------------------------------------

_SHARED_TYPES: dict[str, type[SharedResource]] = {}


def register_shared_resource(resource_type: str, model: type[SharedResource]) -> None:
    """Make a core.models.SharedResource model shareable with teams under `resource_type`."""
    _SHARED_TYPES[resource_type] = model


def shared_resource_types() -> dict[str, type[SharedResource]]:
    return dict(_SHARED_TYPES)


def shared_resource_model(resource_type: str) -> type[SharedResource]:
    try:
        return _SHARED_TYPES[resource_type]
    except KeyError:
        raise NotFound(f"Unknown resource type {resource_type!r}.", field="resource_type") from None


def shared_resource_type_of(model: type[Model]) -> str | None:
    model = model._meta.concrete_model or model
    for name, registered in _SHARED_TYPES.items():
        if registered is model:
            return name
    return None


# --- Principals ---------------------------------------------------------------------------------


def membership_for(user: User | AnonymousUser | None, tenant: TenantRecord | None) -> Membership | None:
    """The user's membership in `tenant`, or None (anonymous users, the public schema, strangers)."""
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated or not user.is_active:
        return None
    if tenant is None or tenant.schema_name == "public":
        return None
    membership = member_get(user.pk, tenant)  # read through the process's cache of members (iam.members)
    if membership is not None:
        membership.user = user  # the caller's own object: a Principal names the user the request authenticated
    return membership


def principal_for_user(user: User | AnonymousUser | None, tenant: TenantRecord | None) -> Principal | None:
    membership = membership_for(user, tenant)
    # membership_for answers None for the last three already; the test narrows the types.
    if membership is None or user is None or isinstance(user, AnonymousUser) or tenant is None:
        return None
    return Principal(tenant=tenant, user=user, role=membership.role, membership=membership)


def principal_for_api_key(api_key: ApiKey, tenant: TenantRecord | None) -> Principal | None:
    """The principal an (already verified) iam.ApiKey acts as; None if its creator left the tenant."""
    if hasattr(api_key, "owner_membership"):  # iam.keys.api_key_authenticate looked it up (or had it cached)
        membership = api_key.owner_membership
    else:
        membership = membership_for(api_key.created_by, tenant)
    if membership is None or tenant is None:  # no tenant, no membership: the test narrows the type
        return None
    return Principal(
        tenant=tenant,
        user=api_key.created_by,
        role=membership.role,
        api_key=api_key,
        scopes=frozenset(api_key.scopes),
        agent_ids=None if api_key.all_agents else frozenset(api_key.agent_ids),
        membership=membership,
    )


def _principal_for_authenticated(request: HttpRequest) -> Principal | None:
    tenant = getattr(request, "tenant", None)
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return principal_for_api_key(auth, tenant)
    return principal_for_user(getattr(request, "user", None), tenant)


def principal_from_request(request: HttpRequest) -> Principal:
    principal: Principal | None = getattr(request, "principal", None)
    if principal is not None:
        return principal
    principal = _principal_for_authenticated(request)
    if principal is None:
        raise NotAuthenticated("Authentication credentials were not provided.")
    request.principal = principal  # type: ignore[attr-defined]  # our own request attribute: no stub has it
    principal_act_as(principal, ip=request.META.get("REMOTE_ADDR"))
    return principal


def principal_act_as(principal: Principal, *, ip: str | None = None) -> None:
    """Where a request or socket has authenticated its principal: the audit log names it (core.audit) and the
    database shows only its rows (core.rls), until the request or socket ends."""
    actor_set(actor_for_principal(principal, ip=ip))
    db_principal_set(
        db_principal_for(user_id=principal.user.pk, is_admin=principal.is_admin, schema=principal.tenant.schema_name)
    )


def api_key_allows_agent(principal: Principal, agent_id: int) -> bool:
    """False only for API keys restricted to a list of agents that does not contain `agent_id`."""
    return principal.agent_ids is None or int(agent_id) in principal.agent_ids


# --- Scopes and roles (per view) ---------------------------------------------------------------


def required_scope_for(view: APIView, method: str | None) -> str | None:
    """The scope a view declares for `method`; None if the view is unclassified."""
    declared: str | dict[str, str] | None = getattr(view, "required_scope", None)
    if isinstance(declared, dict):
        if method is not None and method in declared:
            return declared[method]
        if method in ("HEAD", "OPTIONS"):
            return declared.get("GET", "read")
        return None
    return declared


def principal_require_scope(principal: Principal, scope: str, *, self_service: bool = False) -> None:
    """Raise Forbidden (clear code and message) unless the principal may call something needing `scope`."""
    if scope not in ALL_SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    if principal.api_key is not None and not principal.has_scope(scope):
        raise ScopeRequired(f"This API key lacks the '{scope}' scope.", extra={"required_scope": scope})
    if scope == "admin" and not principal.is_admin:
        raise AdminRequired("Only organisation admins may do this.")
    if scope == "write" and principal.is_readonly and not self_service:
        raise ReadOnlyMember("Your role is read-only: you may view and chat, but not change anything.")


def principal_can_create(principal: Principal) -> bool:
    """May create resources of its own (agents, knowledge bases): any member but a read-only one."""
    return principal.has_scope("write") and not principal.is_readonly


def principal_can_manage(principal: Principal) -> bool:
    """May administer the organisation (members, providers, quotas, every API key): admins only."""
    return principal.has_scope("admin") and principal.is_admin


def principal_can_back_up(principal: Principal) -> bool:
    """May list, make, download and restore the organisation's backups (and set their schedule): a backup holds
    every member's private data and a restore replaces everything, so admins only, with the admin scope."""
    return principal_can_manage(principal)


def role_may_own(role: str) -> bool:
    """May a member with this role own resources (be handed an agent or knowledge base)? Read-only members could
    not use what they owned."""
    return role != Role.READONLY


def principal_require_key_grant(principal: Principal, scopes: Collection[str], *, members_may_create: bool) -> None:
    """Raise Forbidden unless the principal may create an API key with `scopes`: admins always; other members if
    the organisation allows it (`members_may_create`). A key never holds more than its creator: only admins grant
    the admin scope, read-only members never grant write; API keys create no keys."""
    if principal.api_key is not None:
        raise ScopeRequired("API keys cannot create API keys.")
    if not principal.is_admin and not members_may_create:
        raise AdminRequired("Only admins may create API keys in this organisation.")
    if "admin" in scopes and not principal.is_admin:
        raise AdminRequired("Only admins may create keys with the admin scope.")
    if principal.is_readonly and "write" in scopes:
        raise ReadOnlyMember("Read-only members may not create keys with the write scope.")


def principal_grantable_key_scopes(principal: Principal, *, members_may_create: bool) -> frozenset[str]:
    """The scopes the principal may put on a new API key (empty: may create none); the same rules as
    principal_require_key_grant, so a form offers exactly what would be accepted."""
    grantable = set()
    for scope in ALL_SCOPES:
        try:
            principal_require_key_grant(principal, (scope,), members_may_create=members_may_create)
        except Forbidden:
            continue
        grantable.add(scope)
    return frozenset(grantable)


def principal_acts_for(principal: Principal, user_id: Any) -> bool:
    """May see or stop what `user_id` started (runs, usage): that user, or an admin of the organisation."""
    return str(principal.user.pk) == str(user_id) or principal_can_manage(principal)


# --- Objects ------------------------------------------------------------------------------------


def _team_share_ids(principal: Principal, resource_type: str) -> QuerySet[Share, Mapping[str, Any]]:
    return Share.objects.filter(resource_type=resource_type, team__memberships__user_id=principal.user.pk).values(
        "resource_id"
    )


def _visible_q(principal: Principal, model: type[Model] | None = None) -> Q:
    resource_type = shared_resource_type_of(model) if model is not None else None
    if principal.is_admin:
        q = Q()
    else:
        q = Q(owner_id=principal.user.pk) | ~Q(org_access="none")
        if resource_type is not None:
            q |= Q(pk__in=_team_share_ids(principal, resource_type))
    if resource_type == "agent" and principal.agent_ids is not None:
        q &= Q(pk__in=list(principal.agent_ids))
    return q


def resource_queryset_for(principal: Principal, queryset: QuerySet[_M]) -> QuerySet[_M]:
    """Only the rows of `queryset` (a SharedResource model) that the principal may see."""
    return queryset.filter(_visible_q(principal, queryset.model))


def share_level_for(principal: Principal, obj: Model) -> str | None:
    """The best of the object's org-wide access and the principal's team shares: "editor", "viewer" or None."""
    levels = set()
    org_access = getattr(obj, "org_access", "none")
    if org_access != "none":
        levels.add(org_access)
    resource_type = shared_resource_type_of(type(obj))
    if resource_type is not None and "editor" not in levels:
        levels.update(
            Share.objects.filter(
                resource_type=resource_type, resource_id=obj.pk, team__memberships__user_id=principal.user.pk
            ).values_list("level", flat=True)
        )
    if "editor" in levels:
        return "editor"
    return "viewer" if levels else None


def principal_can(principal: Principal, action: str, obj: Model) -> bool:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if not principal.has_scope(SCOPE_FOR_ACTION[action]):
        return False
    if shared_resource_type_of(type(obj)) == "agent" and not api_key_allows_agent(principal, obj.pk):
        return False
    if action == "manage":
        return principal.is_admin
    if principal.is_admin:
        return True
    is_owner: bool = getattr(obj, "owner_id", None) == principal.user.pk
    if action in ("view", "use"):
        return is_owner or share_level_for(principal, obj) is not None
    if principal.is_readonly:
        return False
    if action in ("delete", "share", "transfer"):
        return is_owner
    return is_owner or share_level_for(principal, obj) == "editor"  # edit


def resource_get_for_principal(principal: Principal, queryset: QuerySet[_M], pk: object, action: str = "view") -> _M:
    """Fetch one object or raise NotFound (invisible) / Forbidden (visible, action not allowed)."""
    try:
        obj = resource_queryset_for(principal, queryset).filter(pk=pk).first()
    except (TypeError, ValueError):  # a malformed id is just "not found"
        obj = None
    if obj is None:
        raise NotFound("Not found.")
    _require_action(principal, action, obj)
    return obj


def principal_sees(principal: Principal, obj: Model) -> bool:
    """The visibility rule of _visible_q for one object already in hand (e.g. from a cache)."""
    if shared_resource_type_of(type(obj)) == "agent" and not api_key_allows_agent(principal, obj.pk):
        return False
    if principal.is_admin or getattr(obj, "owner_id", None) == principal.user.pk:
        return True
    return share_level_for(principal, obj) is not None  # org-wide access or a team share


def resources_allowed(principal: Principal, resource_type: str, action: str = "view") -> list[Model]:
    """The objects of a registered shareable kind (by name) that the principal may `action`, by name: for pages of
    one app that offer another app's objects (e.g. the profile's default agent: agents one may use)."""
    model = shared_resource_model(resource_type)
    visible = resource_queryset_for(principal, model._default_manager.all()).order_by("name")
    return [obj for obj in visible if principal_can(principal, action, obj)]


def resource_check_for_principal(principal: Principal, obj: Model, action: str) -> None:
    """resource_get_for_principal's verdict on an object loaded without the visibility filter."""
    if principal_can(principal, action, obj):  # allowed implies visible: the common case takes one check
        return
    if not principal_sees(principal, obj):
        raise NotFound("Not found.")
    _require_action(principal, action, obj)


# --- What an agent reveals of the knowledge it uses ---------------------------------------------
# Whoever may view an agent sees which knowledge bases it uses (their names), and whoever was given a citation
# may open the cited passage, without any access to the rest of those knowledge bases.

# Callables (user, agents, knowledge_base_id, document_id) -> chunk ids cited to `user` in its conversations with
# `agents` (a queryset of the agents the principal may view); registered by the app that stores messages.
CitationSource = Callable[..., Iterable[int]]
_CITATION_SOURCES: list[CitationSource] = []


def register_citation_source(source: CitationSource) -> None:
    """In AppConfig.ready(): where citations given to a user are found (agents: its conversations' messages)."""
    if source not in _CITATION_SOURCES:
        _CITATION_SOURCES.append(source)


def referenced_queryset_for(principal: Principal, obj: Model, referenced: QuerySet[_M]) -> QuerySet[_M]:
    """`referenced` (what `obj` uses, e.g. an agent's knowledge bases) as far as a viewer of `obj` may name it:
    all of it if the principal may view `obj`, else nothing. Names only: opening one follows its own rules."""
    return referenced if principal_can(principal, "view", obj) else referenced.none()


def passage_grant_for(principal: Principal, knowledge_base: Model, document_id: Any) -> frozenset[int] | None:
    """Which passages (chunk ids) of a document the principal may open: None means all of them (it may view the
    knowledge base); otherwise those cited to it in messages it may read (its own conversations with agents it may
    view), possibly none. A citation in a message you may read is a passage you may open."""
    if principal_can(principal, "view", knowledge_base):
        return None
    if not principal.has_scope("read"):
        return frozenset()
    agents = resource_queryset_for(principal, shared_resource_model("agent")._default_manager.all())
    cited: set[int] = set()
    for source in _CITATION_SOURCES:
        cited.update(
            source(
                user=principal.user,
                agents=agents,
                knowledge_base_id=knowledge_base.pk,
                document_id=document_id,
            )
        )
    return frozenset(cited)


# --- Events (core.events subjects) ----------------------------------------------------------------

# Subjects every member may hear about: what any member reads over the API too (teams, quotas, the organisation).
MEMBER_VISIBLE_SUBJECTS = frozenset({"organisation", "team", "quota"})


def principal_may_see_subject(principal: Principal, subject: Mapping[str, Any] | None) -> bool:
    """May the principal receive an event about `subject` (core.events: {"type", "id", "owner_id"?}), judged now?

    Shared resources (agent, knowledge_base): whoever may view the object (its shares as they are now); once it is
    gone, admins and its last owner. Teams, quotas, the organisation: every member. Anything else (API keys,
    members, runs, webhook endpoints, an event without a subject): admins and the member it belongs to (owner_id).
    Costs at most two queries (the object, then the principal's team shares), none for admins.
    """
    if not subject:
        return principal.is_admin
    kind, object_id, owner_id = subject.get("type"), subject.get("id"), subject.get("owner_id")
    agent_id = subject.get("agent_id")
    if agent_id is not None and not api_key_allows_agent(principal, int(agent_id)):
        return False
    if kind in MEMBER_VISIBLE_SUBJECTS:
        return True
    model = _SHARED_TYPES.get(kind) if kind else None
    if model is not None:
        if not str(object_id).isdigit():
            return False
        if kind == "agent" and not api_key_allows_agent(principal, int(str(object_id))):
            return False
        if principal.is_admin:
            return True
        obj = model._default_manager.filter(pk=object_id).first()
        if obj is not None:
            return principal_can(principal, "view", obj)
    return principal.is_admin or (owner_id is not None and owner_id == principal.user.pk)


def _require_action(principal: Principal, action: str, obj: Model) -> None:
    if not principal_can(principal, action, obj):
        if not principal.has_scope(SCOPE_FOR_ACTION[action]):
            raise ScopeRequired(
                f"This API key lacks the '{SCOPE_FOR_ACTION[action]}' scope.",
                extra={"required_scope": SCOPE_FOR_ACTION[action]},
            )
        raise Forbidden(f"You may not {action} this {type(obj)._meta.verbose_name}.")


# --- DRF permission -----------------------------------------------------------------------------


class IsTenantMember(BasePermission):
    """Default API permission: an authenticated member (user or API key) of the tenant the host names,
    allowed the view's `required_scope` for this method (see the module docstring)."""

    message = "You are not a member of this organisation."

    def has_permission(self, request: Request, view: APIView) -> bool:
        principal = _principal_for_authenticated(request)
        if principal is None:
            return False
        # Our own request attributes, for the view and later checks: no stub has them.
        request.principal = principal  # type: ignore[attr-defined]
        request.membership = principal.membership  # type: ignore[attr-defined]
        principal_act_as(principal, ip=request.META.get("REMOTE_ADDR"))
        scope = required_scope_for(view, request.method)
        if scope is None:
            # Unclassified views fail closed for API keys and read-only members (and fail the
            # isolation-matrix test); members keep working meanwhile.
            scope = "read" if request.method in SAFE_METHODS else "write"
            if principal.api_key is not None:
                raise ScopeRequired("This endpoint does not accept API keys.")
        if scope == PUBLIC_SCOPE:  # a public view that still authenticates: membership is enough
            return True
        principal_require_scope(principal, scope, self_service=getattr(view, "self_service", False))
        return True


# --- Dashboard decorators and mixins ------------------------------------------------------------


def _dashboard_guard(request: HttpRequest, scope: str | None) -> HttpResponse | None:
    """None if allowed, else the response to return (login redirect or 403 page)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    tenant = getattr(request, "tenant", None)  # set by django-tenants' middleware
    membership = membership_for(request.user, tenant)
    if membership is None or tenant is None:  # no tenant, no membership: the test narrows the type
        return render(request, "errors/not_member.html", status=403)
    principal = Principal(tenant=tenant, user=request.user, role=membership.role, membership=membership)
    # Our own request attributes, for the view and later checks: no stub has them.
    request.membership = membership  # type: ignore[attr-defined]
    request.principal = principal  # type: ignore[attr-defined]
    principal_act_as(principal, ip=request.META.get("REMOTE_ADDR"))
    if scope is not None:
        try:
            principal_require_scope(principal, scope)
        except Forbidden as exc:
            return render(request, "errors/forbidden.html", {"message": exc.message}, status=403)
    return None


_DashboardView = Callable[..., HttpResponseBase]


def _guarded(scope: str | None) -> Callable[[_DashboardView], _DashboardView]:
    def decorator(view: _DashboardView) -> _DashboardView:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            refused = _dashboard_guard(request, scope)
            return refused if refused is not None else view(request, *args, **kwargs)

        return wrapper

    return decorator


member_required = _guarded(None)  # login required; non-members get a clear 403 page, never data
write_required = _guarded("write")  # ... and not read-only
admin_required = _guarded("admin")  # ... and an admin


class MemberRequiredMixin(_ViewBase):
    """Class-based dashboard views: same rules as member_required (set `required_scope` to tighten)."""

    required_scope: str | None = None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        refused = _dashboard_guard(request, self.required_scope)
        return refused if refused is not None else super().dispatch(request, *args, **kwargs)


class WriteRequiredMixin(MemberRequiredMixin):
    required_scope = "write"


class AdminRequiredMixin(MemberRequiredMixin):
    required_scope = "admin"
