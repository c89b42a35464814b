"""The invitation landing page: join with one click (existing users) or sign up through it."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Membership, Role, User
from core.errors import DomainError
from iam.dashboard import admin_page, dashboard_page, form_error
from iam.policy import ALL_SCOPES, principal_can_manage, principal_grantable_key_scopes

from . import selectors, services
from .keys import default_expiry


@require_http_methods(["GET", "POST"])
def invitation_accept_page(request: HttpRequest, token: str) -> HttpResponse:
    tenant = request.tenant
    context = {"token": token, "tenant": tenant}
    try:
        invitation = services.invitation_from_token(token)
    except DomainError as exc:
        return render(request, "iam/invitation.html", {**context, "error": exc.message}, status=exc.status)
    context.update(invitation=invitation, account_exists=User.objects.filter(email__iexact=invitation.email).exists())
    if request.user.is_authenticated and Membership.objects.filter(user=request.user, tenant=tenant).exists():
        context["already_member"] = True
    if request.method == "POST":
        try:
            if request.user.is_authenticated:
                services.invitation_accept(tenant=tenant, token=token, user=request.user)
            else:
                membership = services.invitation_signup_accept(
                    tenant=tenant,
                    token=token,
                    password=request.POST.get("password", ""),
                    display_name=request.POST.get("display_name", ""),
                )
                login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        except DomainError as exc:
            return render(request, "iam/invitation.html", {**context, "form_error": exc.message}, status=exc.status)
        return redirect("/")
    return render(request, "iam/invitation.html", context)


# --- Team admin dashboard pages: thin views over iam.services / iam.selectors ---------------------


class InvitationForm(forms.Form):
    email = forms.EmailField(label="Email address")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.USER)


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(max_length=500, required=False)


# What each API-key scope lets a program do, in the order the form lists them.
SCOPE_LABELS = {
    "read": "Read: see agents, knowledge bases and documents",
    "chat": "Chat: talk to agents and search knowledge",
    "write": "Write: create and change agents and knowledge",
    "admin": "Admin: manage the organisation",
}


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “support bot”.")
    scopes = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, initial=["read"])
    expires_in_days = forms.IntegerField(
        label="Expires after (days)", required=False, min_value=1, max_value=3650, help_text="Empty: never expires."
    )

    def __init__(self, *args, grantable: frozenset[str] = ALL_SCOPES, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Only the scopes this person may grant (iam.policy): a key never holds more than its creator.
        self.fields["scopes"].choices = [(s, label) for s, label in SCOPE_LABELS.items() if s in grantable]


@admin_page
def members_page(request: HttpRequest) -> HttpResponse:
    principal = request.principal
    form = InvitationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            invitation = services.invitation_create(principal=principal, **form.cleaned_data)
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"Invitation sent to {invitation.email} as {invitation.get_role_display()}.")
            request.session["invitation_link"] = services.invitation_url(request.tenant, invitation)
            return redirect("dash-members")
    return render(
        request,
        "manage/members.html",
        {
            "members": selectors.member_list(request.tenant),
            "invitations": selectors.invitation_list(pending_only=True),
            "form": form,
            "roles": Role.choices,
            "nav": "admin",
            "tab": "members",
            "invitation_link": request.session.pop("invitation_link", None),
        },
        status=400 if form.errors else 200,
    )


@require_POST
@admin_page
def member_role_view(request: HttpRequest, user_id: int) -> HttpResponse:
    try:
        membership = services.membership_role_change(
            principal=request.principal, user_id=user_id, role=request.POST.get("role", "")
        )
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{membership.user.email} is now {membership.get_role_display()}.")
    return redirect("dash-members")


@require_POST
@admin_page
def member_remove_view(request: HttpRequest, user_id: int) -> HttpResponse:
    try:
        services.membership_remove(principal=request.principal, user_id=user_id)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Member removed; their API keys here are revoked.")
    return redirect("dash-members")


@require_POST
@admin_page
def invitation_revoke_view(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = selectors.invitation_get(invitation_id)
    if invitation is None:
        messages.error(request, "That invitation no longer exists.")
    else:
        try:
            services.invitation_revoke(principal=request.principal, invitation=invitation)
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Invitation for {invitation.email} revoked.")
    return redirect("dash-members")


@admin_page
def teams_page(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = services.team_create(principal=request.principal, **form.cleaned_data)
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"Team “{team.name}” created.")
            return redirect("dash-teams")
    teams = [
        {"team": t, "members": list(selectors.team_member_list(t).select_related("user"))}
        for t in selectors.team_list()
    ]
    return render(
        request,
        "manage/teams.html",
        {
            "teams": teams,
            "form": form,
            "members": selectors.member_list(request.tenant),
            "nav": "admin",
            "tab": "teams",
        },
        status=400 if form.errors else 200,
    )


@require_POST
@admin_page
def team_member_view(request: HttpRequest, team_id: int) -> HttpResponse:
    team = selectors.team_get(team_id)
    if team is None:
        messages.error(request, "That team no longer exists.")
        return redirect("dash-teams")
    try:
        user_id = int(request.POST.get("user_id", ""))
        if request.POST.get("action") == "remove":
            services.team_member_remove(principal=request.principal, team=team, user_id=user_id)
        else:
            services.team_member_add(principal=request.principal, team=team, user_id=user_id)
    except ValueError:
        messages.error(request, "Choose a member.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("dash-teams")


@require_POST
@admin_page
def team_delete_view(request: HttpRequest, team_id: int) -> HttpResponse:
    team = selectors.team_get(team_id)
    if team is not None:
        services.team_delete(principal=request.principal, team=team)
        messages.success(request, f"Team “{team.name}” deleted.")
    return redirect("dash-teams")


@dashboard_page
def api_keys_page(request: HttpRequest) -> HttpResponse:
    """Everyone's own keys; admins see all of the organisation's. A new key is shown once, then never again."""

    principal = request.principal
    grantable = principal_grantable_key_scopes(
        principal, members_may_create=services.iam_settings_get().members_can_create_api_keys
    )
    form = ApiKeyForm(request.POST or None, grantable=grantable)
    if request.method == "POST" and not grantable:
        message = "Only admins may create API keys in this organisation."
        return render(request, "errors/forbidden.html", {"message": message}, status=403)
    if request.method == "POST" and form.is_valid():
        try:
            key, secret = services.api_key_create(
                principal=principal,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=default_expiry(form.cleaned_data["expires_in_days"]),
            )
        except DomainError as exc:
            form_error(form, exc)
        else:
            # Rendered directly (no redirect): the secret exists only in this response.
            response = render(request, "manage/api_key_created.html", {"key": key, "secret": secret, "nav": "admin"})
            response["Cache-Control"] = "no-store"
            return response
    return render(
        request,
        "manage/api_keys.html",
        {
            "keys": selectors.api_key_list(principal=principal),
            "form": form if grantable else None,  # None: this member may not create keys here
            "scope_labels": SCOPE_LABELS,
            "nav": "admin" if principal_can_manage(principal) else "",
            "tab": "keys",
        },
        status=400 if form.errors else 200,
    )


@require_POST
@dashboard_page
def api_key_revoke_view(request: HttpRequest, key_id: int) -> HttpResponse:
    key = services.api_key_get_for_principal(request.principal, key_id)
    services.api_key_revoke(principal=request.principal, key=key)
    messages.success(request, f"Key “{key.name}” revoked. Requests with it now fail.")
    return redirect("dash-api-keys")


@require_POST
@dashboard_page
def share_view(request: HttpRequest) -> HttpResponse:
    """Share an agent or knowledge base with a team or the organisation (from the resource's page)."""
    team = request.POST.get("team_id") or None
    try:
        services.share_set(
            principal=request.principal,
            resource_type=request.POST.get("resource_type", ""),
            resource_id=int(request.POST.get("resource_id", "0")),
            team_id=int(team) if team else None,
            level=request.POST.get("level", ""),
        )
    except ValueError:
        messages.error(request, "Choose what to share.")
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Sharing updated.")
    target = request.POST.get("next") or "/"
    # Only a path on this host (never an open redirect).
    return redirect(target if target.startswith("/") and not target.startswith("//") else "/")
