"""Onboarding and the small things, in a real browser: a login on the public site lands in the organisation (one:
straight in; several: a picker), the sign-up link on an organisation's login page leads to an account that has
somewhere to go (with the confirmation mail the page promises), read-only members see no control they cannot use,
and every table page fits a 390 px phone screen."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from conftest import PASSWORD

from .conftest import _mark_email_verified, committed, login, unique_slug

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db]

PHONE = {"width": 390, "height": 844}
# The outermost elements sticking out past the viewport's right edge (for the failure message).
WIDE_ELEMENTS = """() => [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
                 && !(e.parentElement && e.parentElement.getBoundingClientRect().right > window.innerWidth + 1))
    .slice(0, 5).map(e => e.tagName.toLowerCase() + '.' + [...e.classList].join('.'))"""


def _public_login(page, server, email: str) -> None:
    page.goto(server.url(path="/accounts/login/"))
    page.get_by_label(re.compile("^Email", re.I)).fill(email)
    page.get_by_label(re.compile("^Password", re.I)).fill(PASSWORD)
    page.get_by_role("button", name=re.compile("sign in", re.I)).click()
    page.wait_for_load_state()


def _join(slug: str, email: str, role: str) -> None:
    """Commit a membership of `email` (made if new, address verified) in the organisation `slug`."""

    def join():
        from accounts.models import Membership, User
        from tenants.models import Tenant

        user = User.objects.filter(email=email).first() or User.objects.create_user(email=email, password=PASSWORD)
        Membership.objects.create(user=user, tenant=Tenant.objects.get(slug=slug), role=role)
        _mark_email_verified(email)

    committed(join)


def test_public_login_with_one_organisation_lands_in_it(page, console, app_server, org_factory):
    slug, email = org_factory("land", name="Landing Ltd")
    _public_login(page, app_server, email)
    expect(page).to_have_url(app_server.url(slug, "/"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Landing Ltd")
    # The session lives on the organisation's host: its pages open without another login.
    page.goto(app_server.url(slug, "/api-keys/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Organisation settings")


def test_public_login_with_several_organisations_offers_a_picker(page, console, app_server, org_factory):
    first, email = org_factory("pick", name="First Picks")
    second, _ = org_factory("pick", name="Second Picks")
    _join(second, email, "user")
    _public_login(page, app_server, email)
    expect(page.get_by_role("heading", level=1)).to_have_text("Your organisations")
    page.get_by_role("button", name=re.compile("Second Picks")).click()
    expect(page).to_have_url(app_server.url(second, "/"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Second Picks")
    # Back on the public site, the user menu leads to the picker again, and on to the other organisation.
    page.goto(app_server.url(path="/"))
    page.get_by_role("button", name="Go to your organisation").click()
    page.get_by_role("button", name=re.compile("First Picks")).click()
    expect(page).to_have_url(app_server.url(first, "/"))


def test_sign_up_link_on_an_organisation_login_page_leads_to_an_account_with_somewhere_to_go(
    page, console, app_server, org_factory
):
    console.allow(r"status of 400 \(Bad Request\) \(at http://localhost:\d+/signup/\)")  # the form with errors
    existing, _ = org_factory("door", name="Front Door")
    page.goto(app_server.url(existing, "/accounts/login/"))
    expect(page.locator(".signup-hint")).to_contain_text("invitation")
    page.get_by_role("link", name="create your own organisation").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Create an organisation")
    expect(page.get_by_text(re.compile(r"your-org\.localhost"))).to_be_visible()

    # Every error at once, on one submit.
    page.get_by_label("Address").fill("www")
    page.get_by_label("Your email").fill("not-an-email")
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_role("button", name="Create organisation").click()
    expect(page.locator("small.error")).to_have_count(4)

    slug = unique_slug("newco")
    email = f"owner@{slug}.test"
    page.get_by_label("Organisation name").fill("New Co")
    page.get_by_label("Address").fill(slug)
    page.get_by_label("Your email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Create organisation").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New Co is ready")
    expect(page.get_by_text(f"We sent a confirmation link to {email}")).to_be_visible()
    link = app_server.wait_for_link(email, r"http://[^\s\"<>]+/accounts/confirm-email/[^\s\"<>]+")
    page.goto(link)
    page.get_by_role("button", name=re.compile("confirm", re.I)).click()
    _public_login(page, app_server, email)
    expect(page).to_have_url(app_server.url(slug, "/"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("New Co")

    # allauth's bare sign-up form is closed on organisation hosts: it explains the two ways in instead.
    page.goto(app_server.url(existing, "/accounts/signup/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Get an account")
    expect(page.get_by_role("button", name=re.compile("sign up", re.I))).to_have_count(0)


def test_read_only_member_sees_no_create_or_admin_controls(page, console, app_server, org_factory):
    slug, _ = org_factory("reader", name="Reading Room")
    reader = f"reader@{slug}.test"
    _join(slug, reader, "readonly")
    login(page, app_server, slug, reader)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Reading Room")
    expect(page.get_by_text("No agents are shared with you yet")).to_be_visible()
    expect(page.get_by_text(re.compile("Create one"))).to_have_count(0)
    page.goto(app_server.url(slug, "/agents/"))
    expect(page.get_by_role("link", name="New agent")).to_have_count(0)
    expect(page.get_by_role("button", name="Create your first agent")).to_have_count(0)

    # Members may not create keys here (the default): no form at all, a clear sentence instead.
    page.goto(app_server.url(slug, "/api-keys/"))
    expect(page.get_by_role("button", name="Create key")).to_have_count(0)
    expect(page.get_by_text("Only admins create API keys in this organisation")).to_be_visible()
    expect(page.get_by_role("link", name="API reference")).to_have_attribute("href", "/api/v1/docs/")

    def allow_member_keys():
        from django_tenants.utils import schema_context

        from iam.models import IamSettings

        with schema_context(f"t_{slug.replace('-', '_')}"):
            IamSettings.objects.update_or_create(pk=1, defaults={"members_can_create_api_keys": True})

    committed(allow_member_keys)
    page.reload()
    expect(page.get_by_role("button", name="Create key")).to_be_visible()
    expect(page.get_by_role("checkbox")).to_have_count(2)  # read and chat: what a read-only member may grant
    expect(page.get_by_role("checkbox", name=re.compile("^Admin"))).to_have_count(0)
    expect(page.get_by_role("checkbox", name=re.compile("^Write"))).to_have_count(0)
    # The user menu links the API docs and the Python client.
    page.locator(".user-menu summary").click()
    expect(page.get_by_role("link", name="API docs")).to_have_attribute("href", "/api/v1/docs/")
    expect(page.get_by_role("link", name="Python client")).to_be_visible()


def _seed_every_table(slug: str, email: str) -> dict[str, int]:
    """Rows with long names in every dashboard table: documents, versions, members, invitations, keys, audit."""

    def seed():
        from django_tenants.utils import tenant_context

        from accounts.models import User
        from agents.services import agent_create, agent_update
        from iam.policy import principal_for_user
        from iam.services import api_key_create, invitation_create
        from knowledge.services import documents_ingest, knowledge_base_create, upload_from_text
        from tenants.models import Tenant

        tenant = Tenant.objects.get(slug=slug)
        admin = User.objects.get(email=email)
        principal = principal_for_user(admin, tenant)
        with tenant_context(tenant):
            kb = knowledge_base_create(principal=principal, name="Operations handbooks and procedures")
            documents_ingest(
                kb=kb,
                user=admin,
                uploads=[
                    upload_from_text(
                        title="Quarterly-maintenance-schedule-for-the-northern-reactor-cooling-loop.md",
                        text="# Maintenance\n\nThe loop is serviced every second Tuesday.\n",
                    )
                ],
            )
            agent = agent_create(principal=principal, data={"name": "Maintenance assistant for the night shift"})
            agent_update(principal=principal, agent=agent, data={"system_prompt": "Be brief."}, note="Shorter answers")
            api_key_create(principal=principal, name="Support bot for the customer help centre", scopes=["read"])
            invitation_create(
                principal=principal, email="a.rather.long.address@subsidiary-of-the-organisation.test", role="readonly"
            )
        return {"kb": kb.pk, "agent": agent.pk}

    return committed(seed)


def test_every_table_fits_a_390px_screen(page, console, app_server, org_factory):
    slug, email = org_factory("narrow", name="Narrow Screens")
    ids = _seed_every_table(slug, email)
    _join(slug, f"second.member.with.a.long.address@{slug}.test", "user")
    page.set_viewport_size(PHONE)
    login(page, app_server, slug, email)
    pages = [
        f"/knowledge/{ids['kb']}/",
        f"/knowledge/{ids['kb']}/versions/",
        f"/agents/{ids['agent']}/versions/",
        "/manage/members/",
        "/manage/usage/",
        "/manage/audit/",
        "/api-keys/",
        "/profile/",
    ]
    overflowing = {}
    for path in pages:
        page.goto(app_server.url(slug, path))
        expect(page.locator("main table").first).to_be_visible()
        scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        if scroll_width > inner_width:
            overflowing[path] = (scroll_width, page.evaluate(WIDE_ELEMENTS))
    assert not overflowing, f"pages wider than {PHONE['width']} px: {overflowing}"
