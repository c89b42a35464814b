"""The public site: landing, creating an organisation, and the way from a login on this site into an organisation
(the picker, and the login handoff to the organisation's own host)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from accounts.handoff import login_handoff_issue
from accounts.services import email_verification_send
from core.errors import DomainError
from core.tenancy import tenant_url

from .forms import SignupForm
from .selectors import tenant_get_by_slug, tenant_list_for_user
from .services import tenant_create

# The sign-up page tells the next page (same browser, same host) whether a confirmation mail went out.
SIGNUP_MAIL_SESSION_KEY = "signup_verification_sent_to"


def landing(request: HttpRequest) -> HttpResponse:
    return render(request, "public/landing.html")


def signup(request: HttpRequest) -> HttpResponse:
    signed_in = request.user.is_authenticated
    form = SignupForm(request.POST or None, signed_in=signed_in)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if signed_in:
                tenant = tenant_create(name=data["name"], slug=data["slug"], owner=request.user)
            else:
                tenant = tenant_create(
                    name=data["name"], slug=data["slug"], owner_email=data["email"], owner_password=data["password"]
                )
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            if signed_in:  # straight into the new organisation
                return redirect("org_open", slug=tenant.slug)
            if email_verification_send(request=request, email=data["email"]):
                request.session[SIGNUP_MAIL_SESSION_KEY] = {"slug": tenant.slug, "email": data["email"]}
            return redirect("signup_done", slug=tenant.slug)
    return render(request, "public/signup.html", {"form": form}, status=400 if form.errors else 200)


def signup_done(request: HttpRequest, slug: str) -> HttpResponse:
    tenant = tenant_get_by_slug(slug=slug)
    if tenant is None:
        return redirect("signup")
    sent = request.session.get(SIGNUP_MAIL_SESSION_KEY) or {}
    context = {
        "tenant": tenant,
        "login_url": tenant_url(tenant, "/accounts/login/"),
        "verification_sent_to": sent.get("email") if sent.get("slug") == tenant.slug else None,
        # `make up` prints mail in its terminal (console backend): say so, or the promised mail is never found.
        "mail_in_terminal": settings.DEBUG and settings.EMAIL_BACKEND.endswith("console.EmailBackend"),
    }
    return render(request, "public/signup_done.html", context)


@login_required
def org_picker(request: HttpRequest) -> HttpResponse:
    """Where a login on the public site lands: straight into the one organisation, or a choice among several."""
    tenants = list(tenant_list_for_user(user=request.user))
    if len(tenants) == 1:
        return redirect("org_open", slug=tenants[0].slug)
    return render(request, "public/org_picker.html", {"tenants": tenants})


@login_required
def org_open(request: HttpRequest, slug: str) -> HttpResponse:
    """Continue into one of the user's organisations: a one-time login token redeemed on its host."""
    tenant = tenant_list_for_user(user=request.user).filter(slug=slug).first()
    if tenant is None:
        return redirect("org_picker")
    token = login_handoff_issue(user=request.user, tenant=tenant)
    path = reverse("login-handoff", urlconf=settings.ROOT_URLCONF, kwargs={"token": token})
    return redirect(tenant_url(tenant, path))
