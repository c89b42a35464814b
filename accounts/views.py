"""Profile dashboard page: name, time zone, theme, default agent, sessions, own API keys, data export
and account deletion. Thin views over accounts.services / accounts.selectors."""

from __future__ import annotations

import json
import zoneinfo

from django import forms
from django.contrib import messages
from django.contrib.auth import login, logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from core.errors import DomainError
from iam.dashboard import dashboard_page, form_error
from iam.policy import resources_allowed

from . import selectors, services
from .handoff import login_handoff_redeem


class ProfileForm(forms.Form):
    display_name = forms.CharField(label="Name", max_length=100, required=False)
    time_zone = forms.ChoiceField(label="Time zone")
    ui_theme = forms.ChoiceField(label="Theme", choices=[(t, t.capitalize()) for t in services.THEMES])
    default_agent_id = forms.ChoiceField(label="Default agent (opens when you click Chat)", required=False)

    def __init__(self, *args, agents, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].choices = [(z, z) for z in sorted(zoneinfo.available_timezones())]
        self.fields["default_agent_id"].choices = [("", "None: let me pick")] + [(str(a.pk), a.name) for a in agents]


def _usable_agents(request: HttpRequest) -> list:
    return resources_allowed(request.principal, "agent", "use")


@dashboard_page
def profile_page(request: HttpRequest) -> HttpResponse:
    user, membership = request.user, request.membership
    agents = _usable_agents(request)
    initial = {
        "display_name": user.display_name,
        "time_zone": user.time_zone,
        "ui_theme": user.ui_theme,
        "default_agent_id": str(membership.default_agent_id or ""),
    }
    form = ProfileForm(request.POST or None, agents=agents, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.user_profile_update(
                user=user,
                membership=membership,
                display_name=data["display_name"],
                time_zone=data["time_zone"],
                ui_theme=data["ui_theme"],
                default_agent_id=int(data["default_agent_id"]) if data["default_agent_id"] else None,
            )
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(request, "Profile saved.")
            return redirect("dash-profile")
    return render(
        request,
        "accounts/profile.html",
        {"form": form, "sessions": selectors.user_sessions(user), "nav": "profile"},
        status=400 if form.errors else 200,
    )


@require_POST
@dashboard_page
def session_end_view(request: HttpRequest, session_id: int) -> HttpResponse:
    services.user_session_end(user=request.user, session_id=session_id)
    messages.success(request, "That session has been signed out.")
    return redirect("dash-profile")


@dashboard_page
def export_view(request: HttpRequest) -> HttpResponse:
    data = selectors.user_export(principal=request.principal)
    response = HttpResponse(json.dumps(data, indent=2, default=str), content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="agentry-my-data.json"'
    return response


@require_POST
@dashboard_page
def delete_view(request: HttpRequest) -> HttpResponse:
    if request.POST.get("confirm", "").strip().lower() != request.user.email.lower():
        messages.error(request, "Type your email address exactly to confirm the deletion.")
        return redirect("dash-profile")
    try:
        services.user_delete(user=request.user, transfer_owned=request.POST.get("transfer_owned") == "on")
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("dash-profile")
    logout(request)
    return render(request, "accounts/deleted.html")


@require_GET
def login_handoff_view(request: HttpRequest, token: str) -> HttpResponse:
    """The organisation's end of a login on the public site (accounts.handoff): a session on this host, then home."""
    try:
        user = login_handoff_redeem(token=token, tenant=request.tenant)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("account_login")
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return redirect("dashboard")
