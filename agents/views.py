"""Dashboard pages for agents: home, list with search, editor, version history with side-by-side diff and
restore, and the chat page. Writes go through agents.services, reads through agents.selectors/iam.policy."""

from __future__ import annotations

import difflib
import json
from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.crypto import decrypt_str
from core.errors import DomainError
from core.models import OrgAccess
from iam.dashboard import admin_page, dashboard_page, form_error, sharing_context
from iam.policy import principal_can, principal_can_create, referenced_queryset_for, resource_queryset_for
from knowledge.models import KnowledgeBase
from tenants.models import MESSAGE_RETENTION_MIN_DAYS, DepartedMemberMessages
from tenants.services import tenant_data_policy_update

from . import selectors, services
from .lifecycle import message_retention_days
from .models import AGENT_TYPE_LABELS, ProviderCredential, ProviderKind
from .providers.check import CHECK_TIMEOUT_SECONDS, ConnectionCheck, provider_connection_check
from .registry import get_registry
from .rendering import answer_html

LIMIT_FIELDS = ("max_tokens", "context_tokens", "max_tool_steps", "run_timeout_seconds", "max_concurrent_runs")


@dashboard_page
def dashboard_home(request: HttpRequest) -> HttpResponse:
    principal = request.principal
    agents = list(selectors.agent_list(principal=principal)[:6])
    can_create = principal_can_create(principal)  # read-only members are offered nothing they cannot do
    if agents:
        agents_text = f"{len(agents)} agent(s) you can use."
    elif can_create:
        agents_text = "No agents yet. Create one and point it at a knowledge base."
    else:
        agents_text = "No agents are shared with you yet. Ask a member with edit rights to share one."
    tiles = [
        {"title": "Agents", "text": agents_text, "url": reverse("dash-agents"), "action": "Open agents"},
        {
            "title": "Knowledge",
            "text": "Upload documents your agents answer from."
            if can_create
            else "Browse and search the knowledge bases shared with you.",
            "url": reverse("dash-knowledge"),
            "action": "Open knowledge bases",
        },
        {
            "title": "Chat",
            "text": "Ask an agent; answers stream in and cite their sources.",
            "url": reverse("dash-chat-home"),
            "action": "Start a chat",
        },
    ]
    return render(request, "dashboard/home.html", {"membership": request.membership, "tiles": tiles, "agents": agents})


# --- list ----------------------------------------------------------------------------------------


@dashboard_page
def agent_list_page(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    agents = selectors.agent_list(principal=request.principal)
    if query:
        agents = agents.filter(Q(name__icontains=query) | Q(description__icontains=query))
    context = {
        "agents": agents[:200],
        "q": query,
        "nav": "agents",
        "can_create": principal_can_create(request.principal),
    }
    # htmx live search swaps only the results.
    template = (
        "agents/_list_results.html" if request.htmx and request.htmx.target == "agent-results" else "agents/list.html"
    )
    return render(request, template, context)


# --- editor ---------------------------------------------------------------------------------------


class AgentForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    agent_type = forms.ChoiceField(
        label="Agent type",
        help_text="Answers from knowledge: from its knowledge bases only; knowledge and tools: may also call tools.",
    )
    provider = forms.ChoiceField(label="LLM provider", required=False)
    model = forms.CharField(max_length=200, required=False, help_text="Empty: the provider's default model.")
    system_prompt = forms.CharField(label="System prompt", required=False, widget=forms.Textarea(attrs={"rows": 6}))
    knowledge_bases = forms.MultipleChoiceField(
        label="Knowledge bases", required=False, widget=forms.CheckboxSelectMultiple
    )
    tools = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    temperature = forms.FloatField(required=False, min_value=0, max_value=2)
    max_tokens = forms.IntegerField(label="Max answer tokens", required=False, min_value=1)
    context_tokens = forms.IntegerField(label="Context window (tokens)", required=False, min_value=1)
    max_tool_steps = forms.IntegerField(label="Max tool steps", required=False, min_value=0)
    run_timeout_seconds = forms.IntegerField(label="Run timeout (s)", required=False, min_value=1)
    max_concurrent_runs = forms.IntegerField(label="Max concurrent chats", required=False, min_value=1)
    org_access = forms.ChoiceField(label="Who in the organisation can use it", choices=OrgAccess.choices)
    note = forms.CharField(label="What changed (for the history)", max_length=500, required=False)

    def __init__(self, *args: Any, principal, agent=None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        registry = get_registry()
        self.fields["agent_type"].choices = [(t, AGENT_TYPE_LABELS.get(t, t)) for t in sorted(registry.agent_types)]
        self.fields["provider"].choices = [("", "Built-in offline (answers from your documents)")] + [
            (str(p.pk), f"{p.name} ({p.get_kind_display()})") for p in ProviderCredential.objects.filter(enabled=True)
        ]
        # The knowledge bases one may pick, plus (by name) those the agent already uses: its viewers see them
        # even when the knowledge bases themselves are not shared with them.
        names = dict(resource_queryset_for(principal, KnowledgeBase.objects.all()).values_list("pk", "name"))
        if agent is not None:
            names.update(
                referenced_queryset_for(principal, agent, agent.knowledge_bases.all()).values_list("pk", "name")
            )
        self.fields["knowledge_bases"].choices = [
            (str(pk), name) for pk, name in sorted(names.items(), key=lambda item: item[1])
        ]
        self.fields["tools"].choices = [(name, name.replace("_", " ")) for name in sorted(registry.tools)]

    def to_service_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        sampling = {"temperature": data["temperature"]} if data.get("temperature") is not None else {}
        limits = {key: data[key] for key in LIMIT_FIELDS if data.get(key) is not None}
        return {
            "name": data["name"],
            "description": data["description"],
            "agent_type": data["agent_type"],
            "provider_id": int(data["provider"]) if data.get("provider") else None,
            "model": data["model"],
            "system_prompt": data["system_prompt"],
            "knowledge_base_ids": [int(x) for x in data["knowledge_bases"]],
            "tools": list(data["tools"]),
            "sampling": sampling,
            "limits": limits,
            "org_access": data["org_access"],
        }


def _initial(agent) -> dict[str, Any]:
    config = services.agent_config(agent)
    initial = {
        "name": agent.name,
        "description": agent.description,
        "agent_type": agent.agent_type,
        "provider": str(agent.provider_id or ""),
        "model": agent.model,
        "system_prompt": agent.system_prompt,
        "knowledge_bases": [str(x) for x in config["knowledge_base_ids"]],
        "tools": [t if isinstance(t, str) else t.get("name") for t in agent.tools or []],
        "temperature": (agent.sampling or {}).get("temperature"),
        "org_access": agent.org_access,
    }
    initial.update({key: (agent.limits or {}).get(key) for key in LIMIT_FIELDS})
    return initial


@dashboard_page
def agent_create_page(request: HttpRequest) -> HttpResponse:
    form = AgentForm(
        request.POST or None,
        principal=request.principal,
        initial={"agent_type": "rag", "org_access": OrgAccess.NONE, "tools": ["knowledge_search"]},
    )
    if not principal_can_create(request.principal):
        return render(request, "403.html", {"exception": "Read-only members cannot create agents."}, status=403)
    if request.method == "POST" and form.is_valid():
        try:
            agent = services.agent_create(
                principal=request.principal, data=form.to_service_data(), note=form.cleaned_data["note"] or "Created"
            )
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"Agent “{agent.name}” created.")
            return redirect("dash-agent-edit", agent_id=agent.pk)
    return render(
        request,
        "agents/edit.html",
        {"form": form, "agent": None, "nav": "agents", "can_edit": True},
        status=400 if form.errors else 200,
    )


@dashboard_page
def agent_edit_page(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get_for_principal(request.principal, agent_id, action="view")
    can_edit = principal_can(request.principal, "edit", agent)
    form = AgentForm(request.POST or None, principal=request.principal, agent=agent, initial=_initial(agent))
    if not principal_can(request.principal, "share", agent):
        # Who may use the agent is sharing: shown, never taken from the form (agents.services enforces it too).
        form.fields["org_access"].disabled = True
    if request.method == "POST":
        # Re-checked on write: the page may have been opened before a role change.
        agent = selectors.agent_get_for_principal(request.principal, agent_id, action="edit")
        if form.is_valid():
            try:
                services.agent_update(
                    principal=request.principal,
                    agent=agent,
                    data=form.to_service_data(),
                    note=form.cleaned_data["note"],
                )
            except DomainError as exc:
                form_error(form, exc)
            else:
                messages.success(request, "Saved as a new version.")
                return redirect("dash-agent-edit", agent_id=agent.pk)
    if not can_edit:
        for field in form.fields.values():
            field.disabled = True
    versions = selectors.agent_versions(agent=agent)[:50]
    return render(
        request,
        "agents/edit.html",
        {
            "form": form,
            "agent": agent,
            "versions": versions,
            "nav": "agents",
            "can_edit": can_edit,
            "can_create": principal_can_create(request.principal),  # False: the role is read-only
            "can_use": principal_can(request.principal, "use", agent),
            **sharing_context(request.principal, agent, "agent"),
        },
        status=400 if form.errors else 200,
    )


# --- versions: history, side-by-side diff, restore ---------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def side_by_side(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """For each changed top-level field, aligned (left, right, kind) rows: presentation of the selectors' diff."""
    changed = sorted({change["field"].split(".", 1)[0] for change in selectors.config_diff(old, new)})
    sections = []
    for field in changed:
        left, right = _text(old.get(field)).splitlines() or [""], _text(new.get(field)).splitlines() or [""]
        rows = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=left, b=right, autojunk=False).get_opcodes():
            if tag == "equal":
                rows += [{"left": left[i], "right": right[j1 + k], "kind": "same"} for k, i in enumerate(range(i1, i2))]
                continue
            span = max(i2 - i1, j2 - j1)
            for k in range(span):
                rows.append(
                    {
                        "left": left[i1 + k] if i1 + k < i2 else None,
                        "right": right[j1 + k] if j1 + k < j2 else None,
                        "kind": "change",
                    }
                )
        sections.append({"field": field.replace("_", " "), "rows": rows})
    return sections


@dashboard_page
def agent_versions_page(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get_for_principal(request.principal, agent_id, action="view")
    versions = list(selectors.agent_versions(agent=agent)[:200])
    if not versions:
        return render(request, "agents/versions.html", {"agent": agent, "versions": [], "nav": "agents"})
    newest = versions[0].number
    try:
        right_n = int(request.GET.get("b", newest))
        left_n = int(request.GET.get("a", max(right_n - 1, 1)))
    except ValueError:
        right_n, left_n = newest, max(newest - 1, 1)
    left = selectors.agent_version_get(agent=agent, number=left_n)
    right = selectors.agent_version_get(agent=agent, number=right_n)
    return render(
        request,
        "agents/versions.html",
        {
            "agent": agent,
            "versions": versions,
            "left": left,
            "right": right,
            "sections": side_by_side(left.config, right.config),
            "nav": "agents",
            "can_edit": principal_can(request.principal, "edit", agent),
        },
    )


class RestoreToTimeForm(forms.Form):
    at = forms.DateTimeField(label="Restore to its state at (UTC)")


@require_POST
@dashboard_page
def agent_restore_to_time_view(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get_for_principal(request.principal, agent_id, action="edit")
    form = RestoreToTimeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a date and time to restore to.")
        return redirect("dash-agent-versions", agent_id=agent.pk)
    try:
        version = services.agent_restore_to_time(principal=request.principal, agent=agent, at=form.cleaned_data["at"])
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, f"Restored version {version.restored_from}, current at that time, as version {version.number}."
        )
    return redirect("dash-agent-versions", agent_id=agent.pk)


@require_POST
@dashboard_page
def agent_version_restore_view(request: HttpRequest, agent_id: int, number: int) -> HttpResponse:
    agent = selectors.agent_get_for_principal(request.principal, agent_id, action="edit")
    version = services.agent_version_restore(principal=request.principal, agent=agent, number=number)
    messages.success(request, f"Restored version {number} as version {version.number}.")
    return redirect("dash-agent-versions", agent_id=agent.pk)


# --- chat ---------------------------------------------------------------------------------------------


@dashboard_page
def chat_home_page(request: HttpRequest) -> HttpResponse:
    """Pick an agent (or continue a conversation)."""
    default_agent_id = getattr(request.membership, "default_agent_id", None)
    agents = [a for a in selectors.agent_list(principal=request.principal) if a.is_enabled]
    usable = [a for a in agents if principal_can(request.principal, "use", a)]
    if default_agent_id and any(a.pk == default_agent_id for a in usable) and "pick" not in request.GET:
        return redirect("dash-chat", agent_id=default_agent_id)
    conversations = selectors.conversation_list(principal=request.principal)[:30]
    return render(request, "agents/chat_home.html", {"agents": usable, "conversations": conversations, "nav": "chat"})


@dashboard_page
def chat_page(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get_for_principal(request.principal, agent_id, action="use")
    conversation = None
    history: list = []
    conversation_id = request.GET.get("c")
    if conversation_id:
        conversation = selectors.conversation_get_for_principal(request.principal, conversation_id)
        history = selectors.conversation_messages(conversation=conversation)
    query = request.GET.get("q", "").strip()
    conversations = selectors.conversation_list(principal=request.principal, agent=agent)
    if query:
        conversations = conversations.filter(title__icontains=query)
    return render(
        request,
        "agents/chat.html",
        {
            "agent": agent,
            "conversation": conversation,
            "history": history,
            "conversations": conversations[:50],
            "q": query,
            "nav": "chat",
            # The built-in offline provider answers with extracts; the page says so and points to Models.
            "answers_are_extracts": agent.provider_id is None or agent.provider.kind == ProviderKind.OFFLINE,
            "history_json": chat_turns(history),
        },
    )


def chat_turns(history: list) -> list[dict[str, Any]]:
    """The conversation as the chat page shows it: questions, and answers with their alternatives (oldest first;
    a regenerated answer joins its turn's first answer), each answer's Markdown already rendered and sanitised."""
    turns: list[dict[str, Any]] = []
    answers: dict[int, dict[str, Any]] = {}  # a turn's first answer id -> its entry
    for m in history:
        if m.role == "user":
            turns.append({"role": "user", "content": m.content})
        elif m.role == "assistant":
            alternative = {
                "id": m.pk,
                "content": m.content,
                "html": answer_html(m.content),
                "citations": m.citations,
                "tool_calls": m.tool_calls,
                "status": m.status,
                "run_id": str(m.run_id or ""),
            }
            turn = answers.get(m.alternative_of_id or m.pk)
            if turn is None:
                turn = answers[m.pk] = {"role": "assistant", "alternatives": []}
                turns.append(turn)
            turn["alternatives"].append(alternative)
    return turns


# --- Models: LLM provider connections (admins) -------------------------------------------------------


class ProviderForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="How agents' settings name this connection.")
    kind = forms.ChoiceField(label="Server type")
    base_url = forms.URLField(
        label="Base URL",
        required=False,
        assume_scheme="https",
        help_text="OpenAI-compatible servers, for example http://localhost:11434/v1 (Ollama), "
        "http://localhost:8000/v1 (vLLM) or http://localhost:1234/v1 (LM Studio). Empty: OpenAI's or Anthropic's own.",
    )
    api_key = forms.CharField(
        label="API key",
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Optional for local servers. Stored encrypted; never shown again.",
    )
    default_model = forms.CharField(
        label="Model",
        max_length=200,
        required=False,
        help_text="For example llama3.1 or gpt-4o-mini, or a Claude model's name. Agents may name another.",
    )

    def __init__(self, *args: Any, testing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The built-in offline provider needs no connection; it is what agents without one use.
        self.fields["kind"].choices = [(k.value, k.label) for k in ProviderKind if k != ProviderKind.OFFLINE]
        self.fields["name"].required = not testing  # testing a connection saves nothing


def _connection_check(*, kind: str, base_url: str, api_key: str, model: str, timeout: float) -> ConnectionCheck:
    provider_class = get_registry().providers.get(kind)
    if provider_class is None:
        return ConnectionCheck(False, f"The provider type {kind!r} is not installed.")
    return async_to_sync(provider_connection_check)(
        provider_class=provider_class, base_url=base_url, api_key=api_key, model=model, timeout=timeout
    )


@admin_page
def providers_page(request: HttpRequest) -> HttpResponse:
    testing = request.POST.get("intent") == "test"
    form = ProviderForm(request.POST or None, testing=testing)
    check = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if testing:
            check = _connection_check(
                kind=data["kind"],
                base_url=data["base_url"],
                api_key=data["api_key"],
                model=data["default_model"],
                timeout=CHECK_TIMEOUT_SECONDS,
            )
        else:
            try:
                provider = services.provider_create(principal=request.principal, **data)
            except DomainError as exc:
                form_error(form, exc)
            else:
                messages.success(request, f"Model connection “{provider.name}” added.")
                return redirect("dash-providers")
    return render(
        request,
        "manage/providers.html",
        {
            "providers": ProviderCredential.objects.all(),
            "form": form,
            "check": check,
            "nav": "admin",
            "tab": "providers",
        },
        status=400 if form.errors else 200,
    )


@require_POST
@admin_page
def provider_action_view(request: HttpRequest, provider_id: int) -> HttpResponse:
    provider = ProviderCredential.objects.filter(pk=provider_id).first()
    action = request.POST.get("action")
    wants_json = "application/json" in request.headers.get("Accept", "")
    if provider is None:
        if wants_json:
            return JsonResponse({"ok": False, "message": "That connection no longer exists."}, status=404)
        messages.error(request, "That connection no longer exists.")
        return redirect("dash-providers")
    if action == "test":
        check = _connection_check(
            kind=provider.kind,
            base_url=provider.base_url,
            api_key=decrypt_str(provider.api_key_encrypted) if provider.api_key_encrypted else "",
            model=provider.default_model,
            timeout=float(provider.timeout_seconds),
        )
        if wants_json:  # the page's "Test connection" button (static/js/models.js)
            return JsonResponse(check.as_dict())
        (messages.success if check.ok else messages.error)(request, f"{provider.name}: {check.message}")
        return redirect("dash-providers")
    try:
        if action == "delete":
            services.provider_delete(provider=provider, principal=request.principal)
            messages.success(request, f"Model connection “{provider.name}” deleted.")
        else:
            services.provider_update(  # principal: the audit log records who changed it
                provider=provider, data={"enabled": not provider.enabled}, principal=request.principal
            )
            messages.success(
                request, f"Model connection “{provider.name}” {'enabled' if provider.enabled else 'disabled'}."
            )
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("dash-providers")
    try:
        if request.POST.get("action") == "delete":
            services.provider_delete(provider=provider, principal=request.principal)
            messages.success(request, f"Provider “{provider.name}” deleted.")
        else:
            services.provider_update(  # principal: the audit log records who changed it
                provider=provider, data={"enabled": not provider.enabled}, principal=request.principal
            )
            messages.success(request, f"Provider “{provider.name}” {'enabled' if provider.enabled else 'disabled'}.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("dash-providers")


# --- Data lifecycle: the organisation's data policy and its whole export ----------------------------------------


class DataPolicyForm(forms.Form):
    message_retention_days = forms.IntegerField(
        label="Keep conversations for (days)",
        required=False,
        min_value=MESSAGE_RETENTION_MIN_DAYS,
        help_text="Older months of messages are deleted every night. Empty: the platform's default.",
    )
    departed_member_messages = forms.ChoiceField(
        label="When a member deletes their account, their conversations are",
        choices=DepartedMemberMessages.choices,
    )


@admin_page
def data_page(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant
    initial = {
        "message_retention_days": tenant.message_retention_days,
        "departed_member_messages": tenant.departed_member_messages,
    }
    form = DataPolicyForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            tenant_data_policy_update(principal=request.principal, **form.cleaned_data)
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(request, "Data policy saved.")
            return redirect("dash-data")
    return render(
        request,
        "manage/data.html",
        {
            "form": form,
            "effective_retention": message_retention_days(tenant),
            "nav": "admin",
            "tab": "data",
        },
    )
