"""The isolation matrix's route table: every HTTP route of the tenant URL conf (config.urls, walked recursively)
and every WebSocket route (config.ws_urls) declared with how to call it and what a caller without access must get.

A route missing here, or declared with other methods than its view implements, fails
tests/test_isolation_matrix.py::test_every_route_is_classified: new surfaces join the matrix by being declared.

Expectations (who is refused is decided per actor in the test; "strangers" are anonymous callers and the other
organisation's JWT, API key and session, who are refused on every route that is not PUBLIC):
    PUBLIC   nobody is refused (login, sign-up, health, OAuth flows): only the markers are checked.
    ACCOUNT  the signed-in person's own user account (global, in the public schema): like PUBLIC.
    OWN      acts on the caller's own account (log out, delete it): only strangers probe it.
    SELF     the caller's own data: members get it, never anyone else's.
    LIST     a list members may read, filtered to what they may see.
    MEMBER   organisation-wide data every member may read (teams, providers, members).
    PRIVATE  names an object of another member that is not shared with the caller: every actor is refused.
    ADMIN    organisation admins only.
Object kinds name the victim objects the test creates (see VictimWorld in the test); `{kind}` in a query string
or body is replaced by that object's id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.urls import URLPattern, URLResolver, get_resolver

from config.ws_urls import websocket_urlpatterns

PUBLIC, ACCOUNT, OWN = "public", "account", "own"
SELF, LIST, MEMBER, PRIVATE, ADMIN = "self", "list", "member", "private", "admin"
# Objects whose markers an API key limited to other agents must never see.
AGENT_KINDS = frozenset({"agent", "agent_version", "conversation", "run"})


@dataclass(frozen=True)
class Call:
    method: str
    expect: str
    query: str = ""
    body: dict | None = None
    scope: str | None = None  # dashboard only: "read" | "write" | "admin" (API views declare theirs)
    about_agents: bool = False  # a list an agent-limited API key must see filtered
    probe: bool = False  # a readiness probe: 503 while a dependency (here: Celery workers) is down is its answer
    page: bool = False  # an HTML page among the API routes (its reference): a login redirect is its refusal

    def refs(self) -> set[str]:
        text = self.query + repr(self.body or {})
        return set(re.findall(r"\{(\w+)\}", text))


@dataclass(frozen=True)
class Route:
    kinds: dict[str, str] = field(default_factory=dict)  # URL kwarg -> object kind (or "dummy:<value>")
    calls: tuple[Call, ...] = ()


def get(expect: str, **kw) -> Call:
    return Call("GET", expect, **kw)


def post(expect: str, **kw) -> Call:
    return Call("POST", expect, **kw)


def patch(expect: str, **kw) -> Call:
    return Call("PATCH", expect, **kw)


def put(expect: str, **kw) -> Call:
    return Call("PUT", expect, **kw)


def delete(expect: str, **kw) -> Call:
    return Call("DELETE", expect, **kw)


def r(*calls: Call, **kinds: str) -> Route:
    return Route(kinds=kinds, calls=calls)


AGENT = {"agent_id": "agent"}
KB = {"kb_id": "kb"}
DOC = {"kb_id": "kb", "document_id": "document"}

API_ROUTES: dict[str, Route] = {
    # accounts: tokens take credentials in the body; the caller's own profile, sessions and data.
    "api/v1/auth/token/": r(post(PUBLIC, body={"email": "{actor_email}", "password": "{actor_password}"})),
    "api/v1/auth/token/refresh/": r(post(PUBLIC, body={"refresh": "{actor_refresh}"})),
    "api/v1/auth/logout/": r(post(OWN, body={"refresh": "{actor_refresh}"})),
    "api/v1/me/": r(get(SELF), patch(SELF, body={"display_name": "probe"})),
    "api/v1/me/sessions/": r(get(SELF)),
    "api/v1/me/sessions/<int:session_id>/": r(delete(PRIVATE), session_id="session"),
    "api/v1/me/tokens/revoke/": r(post(OWN)),
    "api/v1/me/export/": r(get(SELF)),
    "api/v1/me/delete/": r(post(OWN, body={"password": "{actor_password}"})),
    "api/v1/schema/": r(get(MEMBER)),
    "api/v1/docs/": r(get(MEMBER, page=True)),
    "api/v1/redoc/": r(get(MEMBER, page=True)),
    # iam
    "api/v1/teams/": r(get(MEMBER), post(ADMIN, body={"name": "probe team"})),
    "api/v1/teams/<int:team_id>/": r(get(MEMBER), patch(ADMIN, body={"name": "probe"}), delete(ADMIN), team_id="team"),
    "api/v1/teams/<int:team_id>/members/": r(get(MEMBER), post(ADMIN, body={"user_id": "{actor}"}), team_id="team"),
    "api/v1/teams/<int:team_id>/members/<int:user_id>/": r(delete(ADMIN), team_id="team", user_id="owner"),
    "api/v1/shares/": r(
        get(PRIVATE, query="resource_type=agent&resource_id={agent}"),
        get(PRIVATE, query="resource_type=knowledge_base&resource_id={kb}"),
        post(PRIVATE, body={"resource_type": "agent", "resource_id": "{agent}", "team_id": None, "level": "editor"}),
        post(PRIVATE, body={"resource_type": "knowledge_base", "resource_id": "{kb}", "level": "viewer"}),
    ),
    "api/v1/shares/<int:share_id>/": r(delete(PRIVATE), share_id="share"),
    "api/v1/ownership/transfer/": r(
        post(PRIVATE, body={"resource_type": "agent", "resource_id": "{agent}", "new_owner_id": "{actor}"}),
        post(PRIVATE, body={"resource_type": "knowledge_base", "resource_id": "{kb}", "new_owner_id": "{actor}"}),
    ),
    "api/v1/api-keys/": r(
        get(LIST),
        post(PRIVATE, body={"name": "probe", "scopes": ["read", "chat"], "agent_ids": ["{agent}"]}),
    ),
    "api/v1/api-keys/<int:key_id>/": r(get(PRIVATE), delete(PRIVATE), key_id="api_key"),
    "api/v1/iam/settings/": r(get(MEMBER), patch(ADMIN, body={"members_can_create_api_keys": True})),
    "api/v1/organisation/data-policy/": r(get(ADMIN), patch(ADMIN, body={"message_retention_days": 400})),
    "api/v1/organisation/exports/": r(post(ADMIN)),
    "api/v1/organisation/exports/<str:export_id>/": r(get(ADMIN), export_id="dummy:0123abcd"),
    "api/v1/organisation/exports/<str:export_id>/download/": r(get(ADMIN), export_id="dummy:0123abcd"),
    "api/v1/organisation/backups/": r(get(ADMIN), post(ADMIN, body={"include_conversations": False})),
    "api/v1/organisation/backups/schedule/": r(
        get(ADMIN),
        put(ADMIN, body={"enabled": True, "minute": 5, "hour": 3, "keep_last": 3, "include_conversations": True}),
    ),
    "api/v1/organisation/backups/restores/<str:restore_id>/": r(get(ADMIN), restore_id="dummy:0123abcd"),
    "api/v1/organisation/backups/<str:backup_id>/": r(get(ADMIN), delete(ADMIN), backup_id="dummy:0123abcd"),
    "api/v1/organisation/backups/<str:backup_id>/download/": r(get(ADMIN), backup_id="dummy:0123abcd"),
    "api/v1/organisation/backups/<str:backup_id>/restore/": r(post(ADMIN), backup_id="dummy:0123abcd"),
    "api/v1/members/": r(get(MEMBER)),
    "api/v1/members/<int:user_id>/": r(patch(ADMIN, body={"role": "admin"}), delete(ADMIN), user_id="owner"),
    "api/v1/invitations/": r(get(ADMIN), post(ADMIN, body={"email": "probe@example.test", "role": "admin"})),
    "api/v1/invitations/<int:invitation_id>/": r(delete(ADMIN), invitation_id="invitation"),
    # knowledge
    "api/v1/knowledge-bases/": r(get(LIST), post(LIST, body={"name": "probe kb"})),
    "api/v1/knowledge-bases/<int:kb_id>/": r(get(PRIVATE), patch(PRIVATE, body={"name": "x"}), delete(PRIVATE), **KB),
    "api/v1/knowledge-bases/<int:kb_id>/documents/": r(
        get(PRIVATE), post(PRIVATE, body={"title": "probe", "text": "probe text"}), **KB
    ),
    "api/v1/knowledge-bases/<int:kb_id>/documents/<int:document_id>/": r(get(PRIVATE), delete(PRIVATE), **DOC),
    "api/v1/knowledge-bases/<int:kb_id>/documents/<int:document_id>/chunks/": r(get(PRIVATE), **DOC),
    "api/v1/knowledge-bases/<int:kb_id>/versions/": r(get(PRIVATE), **KB),
    "api/v1/knowledge-bases/<int:kb_id>/versions/<int:number>/": r(get(PRIVATE), kb_id="kb", number="kb_version"),
    "api/v1/knowledge-bases/<int:kb_id>/versions/<int:number>/rollback/": r(
        post(PRIVATE), kb_id="kb", number="kb_version"
    ),
    "api/v1/knowledge-bases/<int:kb_id>/restore-to-time/": r(post(PRIVATE, body={"at": "2020-01-01T00:00:00Z"}), **KB),
    "api/v1/knowledge-bases/<int:kb_id>/search/": r(post(PRIVATE, body={"query": "handbook"}), **KB),
    "api/v1/knowledge-bases/<int:kb_id>/tuning/": r(get(PRIVATE), post(PRIVATE), delete(PRIVATE), **KB),
    # agents
    "api/v1/agents/": r(
        get(LIST, about_agents=True),
        post(LIST, body={"name": "probe agent"}),
        post(PRIVATE, body={"name": "probe agent", "knowledge_base_ids": ["{kb}"]}),
    ),
    "api/v1/agents/<int:agent_id>/": r(
        get(PRIVATE),
        patch(PRIVATE, body={"system_prompt": "probe"}),
        Call("PUT", PRIVATE, body={"name": "probe", "system_prompt": "probe"}),
        delete(PRIVATE),
        **AGENT,
    ),
    "api/v1/agents/<int:agent_id>/versions/": r(get(PRIVATE), **AGENT),
    "api/v1/agents/<int:agent_id>/versions/diff/": r(get(PRIVATE, query="from=1&to=1"), **AGENT),
    "api/v1/agents/<int:agent_id>/versions/<int:number>/restore/": r(
        post(PRIVATE), agent_id="agent", number="agent_version"
    ),
    "api/v1/agents/<int:agent_id>/restore-to-time/": r(post(PRIVATE, body={"at": "2020-01-01T00:00:00Z"}), **AGENT),
    "api/v1/agents/<int:agent_id>/chat/": r(post(PRIVATE, body={"message": "hello", "stream": False}), **AGENT),
    "api/v1/runs/<str:run_id>/events/": r(get(PRIVATE, query="after=0&wait=0"), run_id="run"),
    "api/v1/runs/<str:run_id>/cancel/": r(post(PRIVATE), run_id="run"),
    "api/v1/conversations/": r(get(LIST, about_agents=True), get(PRIVATE, query="agent={agent}")),
    "api/v1/conversations/<str:conversation_id>/messages/": r(get(PRIVATE), conversation_id="conversation"),
    "api/v1/llm-providers/": r(get(MEMBER), post(ADMIN, body={"name": "probe", "kind": "offline"})),
    "api/v1/llm-providers/<int:provider_id>/": r(
        get(MEMBER), patch(ADMIN, body={"enabled": False}), delete(ADMIN), provider_id="provider"
    ),
    "api/v1/agent-tools/": r(get(MEMBER)),
    "api/v1/custom-tools/": r(get(MEMBER), post(ADMIN, body={"name": "probe-tool", "template": "rest"})),
    "api/v1/custom-tools/<int:tool_id>/": r(delete(ADMIN), tool_id="custom_tool"),
    "api/v1/approved-hosts/": r(get(MEMBER), post(ADMIN, body={"host": "probe.example.test"})),
    "api/v1/approved-hosts/<int:host_id>/": r(delete(ADMIN), host_id="approved_host"),
    # usage
    "api/v1/usage/quotas/": r(get(SELF), get(PRIVATE, query="user={owner}")),
    "api/v1/usage/summary/": r(
        get(SELF),
        get(PRIVATE, query="scope=agent&id={agent}"),
        get(PRIVATE, query="scope=user&id={owner}"),
        get(PRIVATE, query="scope=tenant"),
    ),
    "api/v1/usage/limits/": r(get(ADMIN), post(ADMIN, body={"quota": "tokens_month", "user_id": "{actor}"})),
    "api/v1/usage/limits/<int:sublimit_id>/": r(delete(ADMIN), sublimit_id="sublimit"),
    "api/v1/audit/": r(get(ADMIN)),
    # webhooks
    "api/v1/webhooks/event-types/": r(get(ADMIN)),
    "api/v1/webhooks/endpoints/": r(get(ADMIN), post(ADMIN, body={"url": "https://probe.example.test/"})),
    "api/v1/webhooks/endpoints/<int:endpoint_id>/": r(
        get(ADMIN), patch(ADMIN, body={"description": "probe"}), delete(ADMIN), endpoint_id="webhook"
    ),
    "api/v1/webhooks/endpoints/<int:endpoint_id>/test/": r(post(ADMIN), endpoint_id="webhook"),
    "api/v1/webhooks/endpoints/<int:endpoint_id>/deliveries/": r(get(ADMIN), endpoint_id="webhook"),
    "api/v1/webhooks/deliveries/<int:delivery_id>/replay/": r(post(ADMIN), delivery_id="delivery"),
}

_ALLAUTH_PUBLIC = (
    "login/",
    "logout/",
    "inactive/",
    "signup/",
    "confirm-email/",
    "password/reset/",
    "login/code/confirm/",
    "password/reset/key/done/",
    "password/reset/done/",
    "3rdparty/login/cancelled/",
    "3rdparty/login/error/",
    "3rdparty/signup/",
    "social/login/cancelled/",
    "social/login/error/",
    "social/signup/",
    "google/login/",
    "google/login/callback/",
    "google/login/token/",
    "github/login/",
    "github/login/callback/",
)
_ALLAUTH_OWN_ACCOUNT = (
    "reauthenticate/",
    "email/",
    "password/change/",
    "password/set/",
    "3rdparty/",
    "social/connections/",
    "sessions/",
)

DASHBOARD_ROUTES: dict[str, Route] = {
    # allauth (sign-in flows are public; account pages show the caller's own account only)
    **{f"accounts/{path}": r(get(PUBLIC)) for path in _ALLAUTH_PUBLIC},
    **{f"accounts/{path}": r(get(ACCOUNT)) for path in _ALLAUTH_OWN_ACCOUNT},
    "accounts/^confirm-email/(?P<key>[-:\\w]+)/$": r(get(PUBLIC), key="dummy:x"),
    "accounts/^password/reset/key/(?P<uidb36>[0-9A-Za-z]+)-(?P<key>.+)/$": r(
        get(PUBLIC), uidb36="dummy:1", key="dummy:x"
    ),
    "accounts/oidc/^(?P<provider_id>[^/]+)/login/": r(get(PUBLIC), provider_id="dummy:x"),
    "accounts/oidc/^(?P<provider_id>[^/]+)/login/callback/": r(get(PUBLIC), provider_id="dummy:x"),
    "healthz": r(get(PUBLIC)),
    "readyz": r(get(PUBLIC, probe=True)),
    "invitations/<str:token>/": r(get(PUBLIC), token="dummy:not-a-token"),
    "login/handoff/<str:token>/": r(get(PUBLIC), token="dummy:not-a-token"),
    # accounts
    "": r(get(LIST, scope="read")),
    "profile/": r(get(SELF, scope="read")),
    "profile/sessions/<int:session_id>/end/": r(post(PRIVATE, scope="read"), session_id="session"),
    "profile/export/": r(get(SELF, scope="read")),
    "profile/delete/": r(post(OWN, scope="read")),
    # iam
    "manage/": r(get(ADMIN, scope="admin")),
    "manage/members/": r(get(ADMIN, scope="admin")),
    "manage/members/<int:user_id>/role/": r(post(ADMIN, scope="admin", body={"role": "admin"}), user_id="owner"),
    "manage/members/<int:user_id>/remove/": r(post(ADMIN, scope="admin"), user_id="owner"),
    "manage/invitations/<int:invitation_id>/revoke/": r(post(ADMIN, scope="admin"), invitation_id="invitation"),
    "manage/teams/": r(get(ADMIN, scope="admin")),
    "manage/teams/<int:team_id>/members/": r(
        post(ADMIN, scope="admin", body={"user_id": "{actor}", "action": "add"}), team_id="team"
    ),
    "manage/teams/<int:team_id>/delete/": r(post(ADMIN, scope="admin"), team_id="team"),
    "api-keys/": r(get(LIST, scope="read")),
    "api-keys/<int:key_id>/revoke/": r(post(PRIVATE, scope="read"), key_id="api_key"),
    "sharing/": r(
        post(PRIVATE, scope="write", body={"resource_type": "agent", "resource_id": "{agent}", "level": "editor"}),
        post(
            PRIVATE, scope="write", body={"resource_type": "knowledge_base", "resource_id": "{kb}", "level": "viewer"}
        ),
    ),
    # knowledge
    "knowledge/": r(get(LIST, scope="read")),
    "knowledge/<int:kb_id>/": r(get(PRIVATE, scope="read"), **KB),
    "knowledge/<int:kb_id>/search/": r(get(PRIVATE, scope="read", query="q=handbook"), **KB),
    "knowledge/<int:kb_id>/versions/": r(get(PRIVATE, scope="read"), **KB),
    "knowledge/<int:kb_id>/versions/<int:number>/rollback/": r(
        post(PRIVATE, scope="write"), kb_id="kb", number="kb_version"
    ),
    "knowledge/<int:kb_id>/restore-to-time/": r(post(PRIVATE, scope="write", body={"at": "2020-01-01T00:00:00"}), **KB),
    "knowledge/<int:kb_id>/settings/": r(
        get(PRIVATE, scope="read"), post(PRIVATE, scope="write", body={"name": "x", "ocr_language": "eng"}), **KB
    ),
    "knowledge/<int:kb_id>/tuning/": r(get(PRIVATE, scope="read"), **KB),
    "knowledge/<int:kb_id>/tuning/run/": r(post(PRIVATE, scope="write"), **KB),
    "knowledge/<int:kb_id>/tuning/reset/": r(post(PRIVATE, scope="write"), **KB),
    "knowledge/<int:kb_id>/documents/<int:document_id>/": r(get(PRIVATE, scope="read"), **DOC),
    "knowledge/<int:kb_id>/documents/<int:document_id>/delete/": r(post(PRIVATE, scope="write"), **DOC),
    # agents
    "agents/": r(get(LIST, scope="read")),
    "agents/new/": r(
        get(LIST, scope="read"),
        post(PRIVATE, scope="write", body={"name": "probe", "knowledge_bases": "{kb}"}),
    ),
    "agents/<int:agent_id>/": r(get(PRIVATE, scope="read"), post(PRIVATE, scope="write", body={"name": "x"}), **AGENT),
    "agents/<int:agent_id>/versions/": r(get(PRIVATE, scope="read"), **AGENT),
    "agents/<int:agent_id>/versions/<int:number>/restore/": r(
        post(PRIVATE, scope="write"), agent_id="agent", number="agent_version"
    ),
    "agents/<int:agent_id>/restore-to-time/": r(
        post(PRIVATE, scope="write", body={"at": "2020-01-01T00:00:00"}), **AGENT
    ),
    "manage/providers/": r(get(ADMIN, scope="admin")),
    "manage/data/": r(get(ADMIN, scope="admin")),
    "manage/backups/": r(get(ADMIN, scope="admin")),
    "manage/backups/<str:backup_id>/download/": r(get(ADMIN, scope="admin"), backup_id="dummy:0123abcd"),
    "manage/exports/<str:export_id>/download/": r(get(ADMIN, scope="admin"), export_id="dummy:0123abcd"),
    "manage/providers/<int:provider_id>/": r(
        post(ADMIN, scope="admin", body={"action": "disable"}), provider_id="provider"
    ),
    "chat/": r(get(LIST, scope="read")),
    "agents/<int:agent_id>/chat/": r(
        get(PRIVATE, scope="read"), get(PRIVATE, scope="read", query="c={conversation}"), **AGENT
    ),
    # usage
    "manage/usage/": r(get(ADMIN, scope="admin")),
    "manage/usage/limits/": r(post(ADMIN, scope="admin", body={"quota": "tokens_month", "user_id": "{actor}"})),
    "manage/audit/": r(get(ADMIN, scope="admin")),
    # webhooks
    "manage/webhooks/": r(get(ADMIN, scope="admin")),
    "manage/webhooks/<int:endpoint_id>/": r(get(ADMIN, scope="admin"), endpoint_id="webhook"),
    "manage/webhooks/<int:endpoint_id>/action/": r(
        post(ADMIN, scope="admin", body={"action": "test"}), endpoint_id="webhook"
    ),
    "manage/webhooks/deliveries/<int:delivery_id>/replay/": r(post(ADMIN, scope="admin"), delivery_id="delivery"),
}

# WebSockets: ping is public (it says which organisation the host is and whether you are a member); the chat
# socket names a private agent; the event feed is for members and must carry nothing about private objects.
WS_ROUTES: dict[str, Route] = {
    "ws/ping/": r(get(PUBLIC)),
    "ws/agents/<int:agent_id>/chat/": r(get(PRIVATE, scope="chat"), **AGENT),
    "ws/events/": r(get(LIST, scope="read")),
}


# --- Discovery ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovered:
    route: str  # the route as declared, e.g. "api/v1/agents/<int:agent_id>/"
    kwargs: tuple[str, ...]
    view: object  # the DRF view class, the view function, or the consumer application
    methods: frozenset[str] | None  # implemented methods (DRF views); None where a function decides


_GROUP = re.compile(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)")


def _walk(patterns, prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def _methods_of(callback) -> frozenset[str] | None:
    view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if view is None or not hasattr(view, "http_method_names"):
        return None
    names = {m.upper() for m in view.http_method_names if m not in ("options", "head") and hasattr(view, m)}
    return frozenset(names)


def discover(urlconf: str) -> list[Discovered]:
    found = []
    for route, pattern in _walk(get_resolver(urlconf).url_patterns):
        kwargs = tuple(a or b for a, b in _GROUP.findall(route))
        view = getattr(pattern.callback, "cls", None) or pattern.callback
        found.append(Discovered(route, kwargs, view, _methods_of(pattern.callback)))
    return found


def discover_websockets() -> list[Discovered]:
    found = []
    for route, pattern in _walk(websocket_urlpatterns):
        kwargs = tuple(a or b for a, b in _GROUP.findall(route))
        found.append(Discovered(route, kwargs, pattern.callback, None))
    return found


def fill(route: str, values: dict[str, str]) -> str:
    """The URL path of `route` with each kwarg replaced by its value (regex anchors dropped)."""
    path = _GROUP.sub(lambda m: values[m.group(1) or m.group(2)], route)
    return "/" + path.replace("^", "").replace("$", "")
