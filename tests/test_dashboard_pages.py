"""Every dashboard page renders for a member, refuses strangers and other tenants, and never leaks data.

Fast Django-client checks (the browser journeys in tests/browser cover behaviour end to end)."""

from __future__ import annotations

import pytest
from django.test import Client
from django_tenants.utils import tenant_context

from accounts.models import Membership, Role, User
from conftest import PASSWORD
from iam.policy import Principal


@pytest.fixture
def acme_objects(tenant_a, admin_a):
    from agents import services as agent_services
    from knowledge import services as kb_services

    principal = Principal(tenant=tenant_a, user=admin_a, role=Role.ADMIN)
    with tenant_context(tenant_a):
        kb = kb_services.knowledge_base_create(owner=admin_a, name="Acme handbook")
        agent = agent_services.agent_create(
            principal=principal, data={"name": "Acme helper", "system_prompt": "First prompt\nline two"}
        )
        agent_services.agent_update(
            principal=principal, agent=agent, data={"system_prompt": "Second prompt\nline two"}, note="Tweak"
        )
    return {"agent": agent, "kb": kb}


ADMIN_PAGES = [
    "/",
    "/agents/",
    "/agents/?q=helper",
    "/agents/new/",
    "/agents/{agent}/",
    "/agents/{agent}/versions/",
    "/agents/{agent}/versions/?a=1&b=2",
    "/chat/?pick=1",
    "/agents/{agent}/chat/",
    "/knowledge/",
    "/knowledge/{kb}/",
    "/knowledge/{kb}/search/",
    "/knowledge/{kb}/versions/",
    "/knowledge/{kb}/settings/",
    "/manage/members/",
    "/manage/teams/",
    "/manage/providers/",
    "/manage/webhooks/",
    "/manage/usage/",
    "/manage/usage/?scope=user&id=1&days=7",
    "/manage/audit/?action=agent.",
    "/api-keys/",
    "/profile/",
]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_every_dashboard_page_renders_for_an_admin(client_a, admin_a, acme_objects, path):
    client_a.force_login(admin_a)
    response = client_a.get(path.format(agent=acme_objects["agent"].pk, kb=acme_objects["kb"].pk))
    assert response.status_code == 200, response.content[:500]
    assert b"Traceback" not in response.content


@pytest.mark.django_db
def test_version_diff_shows_both_sides_of_the_change(client_a, admin_a, acme_objects):
    client_a.force_login(admin_a)
    page = client_a.get(f"/agents/{acme_objects['agent'].pk}/versions/?a=1&b=2").content.decode()
    assert "First prompt" in page and "Second prompt" in page
    assert 'class="cell del"' in page and 'class="cell add"' in page


@pytest.mark.django_db
def test_restore_creates_a_new_version_with_the_old_configuration(client_a, admin_a, acme_objects, tenant_a):
    client_a.force_login(admin_a)
    agent = acme_objects["agent"]
    response = client_a.post(f"/agents/{agent.pk}/versions/1/restore/")
    assert response.status_code == 302
    with tenant_context(tenant_a):
        agent.refresh_from_db()
        assert agent.system_prompt == "First prompt\nline two"
        assert agent.current_version.number == 3
        assert agent.current_version.restored_from == 1


@pytest.mark.django_db
def test_other_tenants_and_strangers_get_nothing(client_b, admin_b, client_a, acme_objects):
    agent, kb = acme_objects["agent"], acme_objects["kb"]
    client_b.force_login(admin_b)
    # Acme's ids on globex's host: globex has no such rows (404), never acme's data.
    for path in (f"/agents/{agent.pk}/", f"/agents/{agent.pk}/versions/", f"/knowledge/{kb.pk}/"):
        response = client_b.get(path)
        assert response.status_code == 404
        assert b"Acme" not in response.content
    # Globex's admin on acme's host is not a member.
    client_a.force_login(admin_b)
    for path in ("/agents/", "/manage/members/", "/profile/"):
        response = client_a.get(path)
        assert response.status_code == 403
        assert b"not a member" in response.content
    anonymous = Client(HTTP_HOST="acme.localhost").get("/agents/")
    assert anonymous.status_code == 302


@pytest.fixture
def acme_reader(tenant_a):
    user = User.objects.create_user(email="reader@acme.test", password=PASSWORD)
    Membership.objects.create(user=user, tenant=tenant_a, role=Role.READONLY)
    return user


@pytest.mark.django_db
def test_readonly_member_can_look_but_not_change(client_a, acme_reader, acme_objects, tenant_a):
    agent = acme_objects["agent"]
    with tenant_context(tenant_a):
        agent.org_access = "viewer"
        agent.save(update_fields=["org_access"])
    client_a.force_login(acme_reader)
    page = client_a.get(f"/agents/{agent.pk}/")
    assert page.status_code == 200
    assert b"You can view this agent but not change it" in page.content
    assert b"Save as new version" not in page.content
    assert client_a.post(f"/agents/{agent.pk}/", {"name": "Hacked"}).status_code == 403
    assert client_a.post(f"/agents/{agent.pk}/versions/1/restore/").status_code == 403
    assert client_a.get("/agents/new/").status_code == 403
    assert client_a.get("/manage/members/").status_code == 403
    with tenant_context(tenant_a):
        agent.refresh_from_db()
        assert agent.name == "Acme helper"


@pytest.mark.django_db
def test_error_pages_are_friendly(client_a, admin_a):
    client_a.force_login(admin_a)
    missing = client_a.get("/agents/999999/")
    assert missing.status_code == 404
    assert b"Page not found" in missing.content
    assert b"Traceback" not in missing.content


@pytest.mark.django_db
def test_api_key_secret_is_shown_once(client_a, admin_a, tenant_a):
    client_a.force_login(admin_a)
    created = client_a.post("/api-keys/", {"name": "ci", "scopes": ["read"]})
    assert created.status_code == 200
    assert created["Cache-Control"] == "no-store"
    secret = created.context["secret"]
    assert secret.encode() in created.content
    listing = client_a.get("/api-keys/")
    assert secret.encode() not in listing.content
    assert created.context["key"].prefix.encode() in listing.content


@pytest.mark.django_db
def test_admin_shares_an_agent_with_a_team_from_its_page(client_a, admin_a, acme_objects, tenant_a):
    from iam.models import Share, Team

    client_a.force_login(admin_a)
    assert client_a.post("/manage/teams/", {"name": "Support"}).status_code == 302
    with tenant_context(tenant_a):
        team = Team.objects.get(name="Support")
    agent = acme_objects["agent"]
    response = client_a.post(
        "/sharing/",
        {
            "resource_type": "agent",
            "resource_id": agent.pk,
            "team_id": team.pk,
            "level": "editor",
            "next": f"/agents/{agent.pk}/",
        },
    )
    assert response.status_code == 302 and response["Location"] == f"/agents/{agent.pk}/"
    with tenant_context(tenant_a):
        assert Share.objects.get(team=team, resource_type="agent", resource_id=agent.pk).level == "editor"
    page = client_a.get(f"/agents/{agent.pk}/")
    assert b"Support" in page.content and b"stop sharing" in page.content
    # Never an open redirect.
    away = client_a.post(
        "/sharing/", {"resource_type": "agent", "resource_id": agent.pk, "level": "viewer", "next": "//evil.example/"}
    )
    assert away["Location"] == "/"


@pytest.mark.django_db
def test_chat_page_lists_searches_and_reopens_conversations(client_a, admin_a, acme_objects, tenant_a):
    from agents import services as agent_services

    agent = acme_objects["agent"]
    principal = Principal(tenant=tenant_a, user=admin_a, role=Role.ADMIN)
    with tenant_context(tenant_a):
        handles = agent_services.chat_start(principal=principal, agent=agent, message="Where is the cooling loop?")
        agent_services.chat_start(principal=principal, agent=agent, message="Lunch menu please")
    client_a.force_login(admin_a)
    found = client_a.get(f"/agents/{agent.pk}/chat/?q=cooling").content.decode()
    assert "Where is the cooling loop?" in found and "Lunch menu" not in found
    reopened = client_a.get(f"/agents/{agent.pk}/chat/?c={handles['conversation_id']}")
    assert reopened.status_code == 200
    assert handles["run_id"] in reopened.content.decode()  # the streaming answer resumes from the page
    # Someone else's conversation id is just "not found".
    assert client_a.get(f"/agents/{agent.pk}/chat/?c=00000000-0000-0000-0000-000000000000").status_code == 404


def test_server_error_page_renders_without_any_context():
    from django.template.loader import render_to_string
    from django.templatetags.static import static

    # Django's server_error view renders 500.html with an empty context: no request, no user.
    html = render_to_string("500.html")
    assert "Something went wrong on our side" in html
    assert static("vendor/pico.min.css") in html  # the collected, hashed name production serves


@pytest.mark.django_db
def test_profile_saves_name_time_zone_theme_and_default_agent(client_a, admin_a, acme_objects):
    client_a.force_login(admin_a)
    agent = acme_objects["agent"]
    response = client_a.post(
        "/profile/",
        {"display_name": "Ada Admin", "time_zone": "Europe/Paris", "ui_theme": "dark", "default_agent_id": agent.pk},
    )
    assert response.status_code == 302
    admin_a.refresh_from_db()
    assert (admin_a.display_name, admin_a.time_zone, admin_a.ui_theme) == ("Ada Admin", "Europe/Paris", "dark")
    page = client_a.get("/profile/")
    assert b'data-server-theme="dark"' in page.content
    assert client_a.get("/chat/")["Location"] == f"/agents/{agent.pk}/chat/"  # the default agent opens
    bad = client_a.post("/profile/", {"display_name": "x", "time_zone": "Mars/Olympus", "ui_theme": "dark"})
    assert bad.status_code == 400
    export = client_a.get("/profile/export/")
    assert export["Content-Disposition"].startswith("attachment")
    assert b"admin@acme.test" in export.content


@pytest.mark.django_db
def test_agent_search_answers_htmx_with_just_the_results(client_a, admin_a, acme_objects):
    client_a.force_login(admin_a)
    partial = client_a.get("/agents/?q=helper", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="agent-results")
    assert b"<html" not in partial.content and b"Acme helper" in partial.content
    nothing = client_a.get("/agents/?q=zzz", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="agent-results")
    assert b"No agents match" in nothing.content


@pytest.mark.django_db
def test_admin_sets_and_removes_a_member_limit_from_the_usage_page(client_a, admin_a, tenant_a):
    from usage.models import QuotaSubLimit

    client_a.force_login(admin_a)
    page = client_a.get("/manage/usage/")
    assert b"Plan limits" in page.content and b"llm_tokens_per_month" in page.content
    response = client_a.post(
        "/manage/usage/limits/", {"target": f"user:{admin_a.pk}", "quota": "llm_tokens_per_month", "limit": "5000"}
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        row = QuotaSubLimit.objects.get(user=admin_a, quota="llm_tokens_per_month")
        assert row.limit == 5000
    client_a.post("/manage/usage/limits/", {"delete": row.pk})
    with tenant_context(tenant_a):
        assert not QuotaSubLimit.objects.filter(pk=row.pk).exists()


@pytest.fixture
def acme_kb_with_document(tenant_a, admin_a, settings, tmp_path):
    """A knowledge base with one processed document (the real pipeline, run in this process)."""
    import io

    from knowledge import pipeline, storage
    from knowledge import services as kb_services

    settings.KNOWLEDGE_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "media")},
    }
    storage.knowledge_storage.cache_clear()
    with tenant_context(tenant_a):
        kb = kb_services.knowledge_base_create(owner=admin_a, name="Manuals")
        upload = kb_services.Upload(
            title="pump.md", filename="pump.md", file=io.BytesIO(b"# Pump\n\nThe pump runs at 3000 rpm.\n")
        )
        document = kb_services.documents_ingest(kb=kb, user=admin_a, uploads=[upload]).documents[0]
        assert pipeline.document_process(document.id)
        kb.refresh_from_db()
    yield kb, document
    storage.knowledge_storage.cache_clear()


@pytest.mark.django_db
def test_search_playground_passage_page_removal_and_rollback(client_a, admin_a, acme_kb_with_document, tenant_a):
    from knowledge.models import DocumentStatus

    kb, document = acme_kb_with_document
    client_a.force_login(admin_a)
    search = client_a.get(f"/knowledge/{kb.pk}/search/?q=pump+rpm&mode=hybrid&k=5").content.decode()
    assert "pump.md" in search and "3000 rpm" in search and "Found by" in search
    partial = client_a.get(f"/knowledge/{kb.pk}/search/?q=pump", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in partial and "pump.md" in partial
    passage = client_a.get(f"/knowledge/{kb.pk}/documents/{document.pk}/?chunk=0", HTTP_HX_REQUEST="true")
    assert b"highlighted" in passage.content and b"3000 rpm" in passage.content

    assert client_a.post(f"/knowledge/{kb.pk}/documents/{document.pk}/delete/").status_code == 302
    with tenant_context(tenant_a):
        document.refresh_from_db()
        assert document.status == DocumentStatus.DELETED
        kb.refresh_from_db()
        removed_at = kb.current_version
    versions = client_a.get(f"/knowledge/{kb.pk}/versions/?v={removed_at}").content.decode()
    assert "Roll back to v1" in versions and "passages" in versions
    assert client_a.post(f"/knowledge/{kb.pk}/versions/1/rollback/").status_code == 302
    again = client_a.get(f"/knowledge/{kb.pk}/search/?q=pump+rpm").content.decode()
    assert "3000 rpm" in again


# --- Sharing: every surface shows and allows what iam.policy decides ----------------------------------


@pytest.fixture
def support_team(tenant_a):
    """The Support team: a member with the user role (`editor`) and a read-only member (`reader`)."""
    from iam.models import Team, TeamMembership

    editor = User.objects.create_user(email="editor@acme.test", password=PASSWORD)
    reader = User.objects.create_user(email="viewer@acme.test", password=PASSWORD)
    Membership.objects.create(user=editor, tenant=tenant_a, role=Role.USER)
    Membership.objects.create(user=reader, tenant=tenant_a, role=Role.READONLY)
    with tenant_context(tenant_a):
        team = Team.objects.create(name="Support")
        TeamMembership.objects.create(team=team, user=editor)
        TeamMembership.objects.create(team=team, user=reader)
    return {"team": team, "editor": editor, "reader": reader}


def _share_with_team(tenant, team, resource_type: str, obj, level: str) -> None:
    from iam.models import Share

    with tenant_context(tenant):
        Share.objects.create(team=team, resource_type=resource_type, resource_id=obj.pk, level=level)


@pytest.mark.django_db
def test_team_editor_cannot_change_who_may_use_an_agent_through_the_dashboard(
    client_a, acme_objects, support_team, tenant_a
):
    agent = acme_objects["agent"]
    _share_with_team(tenant_a, support_team["team"], "agent", agent, "editor")
    client_a.force_login(support_team["editor"])
    assert b"Save as new version" in client_a.get(f"/agents/{agent.pk}/").content
    form = {"name": "Renamed by Support", "agent_type": "rag", "org_access": "editor", "note": "widen"}
    response = client_a.post(f"/agents/{agent.pk}/", form)
    assert response.status_code == 302
    with tenant_context(tenant_a):
        agent.refresh_from_db()
    assert agent.name == "Renamed by Support"  # editing is what the share allows...
    assert agent.org_access == "none"  # ...sharing is not


@pytest.mark.django_db
def test_services_refuse_sharing_changes_to_a_team_editor_whoever_calls_them(acme_objects, support_team, tenant_a):
    from agents.services import agent_update
    from core.errors import Forbidden
    from iam.policy import principal_for_user
    from knowledge.services import knowledge_base_update

    agent, kb = acme_objects["agent"], acme_objects["kb"]
    _share_with_team(tenant_a, support_team["team"], "agent", agent, "editor")
    _share_with_team(tenant_a, support_team["team"], "knowledge_base", kb, "editor")
    editor = principal_for_user(support_team["editor"], tenant_a)
    with tenant_context(tenant_a):
        with pytest.raises(Forbidden):
            agent_update(principal=editor, agent=agent, data={"name": "Still mine", "org_access": "viewer"})
        with pytest.raises(Forbidden):
            knowledge_base_update(kb=kb, principal=editor, org_access="viewer")
        with pytest.raises(Forbidden):
            knowledge_base_update(kb=kb, user=support_team["editor"], org_access="viewer")
        agent.refresh_from_db()
        kb.refresh_from_db()
        assert (agent.org_access, kb.org_access) == ("none", "none")
        knowledge_base_update(kb=kb, principal=editor, description="Edited by Support")  # editing stays allowed


@pytest.mark.django_db
def test_readonly_viewer_of_a_shared_agent_opens_its_citations_and_sees_its_knowledge_bases(
    client_a, acme_objects, support_team, tenant_a, admin_a
):
    """The knowledge base itself is not shared with the viewer: only what the agent's answers cited opens."""
    from django.utils import timezone

    from agents.models import Conversation, Message
    from agents.services import agent_update
    from knowledge.models import Chunk, Document

    agent, kb, reader = acme_objects["agent"], acme_objects["kb"], support_team["reader"]
    with tenant_context(tenant_a):
        agent_update(
            principal=Principal(tenant=tenant_a, user=admin_a, role=Role.ADMIN),
            agent=agent,
            data={"knowledge_base_ids": [kb.pk]},
        )
        document = Document.objects.create(knowledge_base=kb, title="Leave policy", source_type="text", status="ready")
        cited, uncited = (
            Chunk.objects.create(
                knowledge_base=kb, document=document, position=i, text=text, content_hash=str(i), valid_from=1
            )
            for i, text in enumerate(["Cited: 25 days of leave.", "Uncited: salary bands."])
        )
        conversation = Conversation.objects.create(agent=agent, user=reader, title="Leave")
        citation = {
            "n": 1,
            "chunk_id": cited.pk,
            "document_id": document.pk,
            "document_title": document.title,
            "position": 0,
            "knowledge_base_id": kb.pk,
            "snippet": cited.text,
        }
        Message.objects.create(
            created=timezone.now(),
            conversation=conversation,
            role="assistant",
            content="25 days [1]",
            citations=[citation],
        )
    _share_with_team(tenant_a, support_team["team"], "agent", agent, "viewer")
    client_a.force_login(reader)

    agent_page = client_a.get(f"/agents/{agent.pk}/").content.decode()
    assert "Acme handbook" in agent_page and "No knowledge bases yet" not in agent_page
    passage = client_a.get(f"/knowledge/{kb.pk}/documents/{document.pk}/?chunk=0", HTTP_HX_REQUEST="true")
    assert passage.status_code == 200
    assert "Cited: 25 days of leave." in passage.content.decode()
    assert "salary bands" not in passage.content.decode()  # the rest of the document stays closed
    api = client_a.get(f"/api/v1/knowledge-bases/{kb.pk}/documents/{document.pk}/chunks/")
    assert [c["text"] for c in api.json()["results"]] == ["Cited: 25 days of leave."]
    # The knowledge base itself is still not the viewer's, nor is a citation given to someone else.
    assert client_a.get(f"/knowledge/{kb.pk}/").status_code == 404
    with tenant_context(tenant_a):
        Conversation.objects.filter(pk=conversation.pk).update(user=admin_a)
    assert client_a.get(f"/knowledge/{kb.pk}/documents/{document.pk}/?chunk=0").status_code == 404
