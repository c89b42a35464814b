"""/ws/events/ delivers an event only to whom iam.policy lets see its subject, judged at delivery time."""

from __future__ import annotations

import asyncio
import json

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django_tenants.utils import tenant_context

from accounts.models import Membership, User
from config.asgi import application
from conftest import host_of
from core.events import DOCUMENT_PROGRESS
from iam import services as iam_services
from knowledge.models import Document
from knowledge.pipeline import publish_document
from knowledge.services import knowledge_base_create

SECRETS = ("Payroll-Secret-KB", "Salaries-2025.txt", "ci-deploy-key")


def _cookie(tenant, user) -> str:
    client = Client(HTTP_HOST=host_of(tenant))
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _open(tenant, user, path: str) -> WebsocketCommunicator:
    host = host_of(tenant)
    cookie = await sync_to_async(_cookie)(tenant, user)
    headers = [
        (b"host", host.encode()),
        (b"origin", f"http://{host}".encode()),
        (b"cookie", f"sessionid={cookie}".encode()),
    ]
    ws = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await ws.connect(timeout=5)
    assert connected
    return ws


async def _drain(ws: WebsocketCommunicator, seconds: float = 1.0) -> list[str]:
    """Every frame the socket receives until it stays quiet for `seconds` (raw text: nothing hides in a key)."""
    frames = []
    while not await ws.receive_nothing(timeout=seconds):  # (a timed-out receive_from would cancel the consumer)
        frames.append(await ws.receive_from(timeout=5))
    return frames


class Scene:
    """acme: an admin, a read-only member (in a team), another member; a private KB with a document; a key."""

    def __init__(self, live):
        self.live, self.tenant = live, live.tenant_a
        with tenant_context(self.tenant):
            self.reader = live.track(self.tenant, User.objects.create_user(email="reader@acme.test", password="x"))
            self.other = live.track(self.tenant, User.objects.create_user(email="other@acme.test", password="x"))
            Membership.objects.create(user=self.reader, tenant=self.tenant, role="readonly")
            Membership.objects.create(user=self.other, tenant=self.tenant, role="user")
            admin = live.principal(self.tenant)
            self.admin = admin
            self.team = live.track(self.tenant, iam_services.team_create(principal=admin, name="Readers"))
            iam_services.team_member_add(principal=admin, team=self.team, user_id=self.reader.pk)
            self.kb = live.track(
                self.tenant,
                knowledge_base_create(owner=live.admin_a, name="Payroll-Secret-KB", embedding_model="hashing-384"),
            )
            self.document("Salaries-2025.txt")
            key, _raw = iam_services.api_key_create(principal=admin, name="ci-deploy-key", scopes=["read"])
            live.track(self.tenant, key)
            iam_services.membership_role_change(principal=admin, user_id=self.other.pk, role="readonly")

    def document(self, title: str) -> None:
        with tenant_context(self.tenant):
            doc = self.live.track(
                self.tenant, Document.objects.create(knowledge_base=self.kb, title=title, source_type="text")
            )
            publish_document(doc, DOCUMENT_PROGRESS, stage="chunked")  # autocommit: published at once

    def share(self, level: str) -> None:
        with tenant_context(self.tenant):
            iam_services.share_set(
                principal=self.admin,
                resource_type="knowledge_base",
                resource_id=self.kb.pk,
                team_id=self.team.pk,
                level=level,
            )


def _leaks(frames: list[str]) -> list[str]:
    text = "\n".join(frames)
    found = [secret for secret in SECRETS if secret in text]
    found += [f"role change in {f}" for f in frames if "member.role_changed" in f]
    return found


def test_a_readonly_members_feed_carries_nothing_they_cannot_see_over_http(committed):
    scene = Scene(committed)
    response = committed.client(scene.tenant, scene.reader).get(f"/api/v1/knowledge-bases/{scene.kb.pk}/")
    assert response.status_code == 404  # the ground truth: the KB is invisible to the reader over HTTP

    async def scenario():
        reader = await _open(scene.tenant, scene.reader, "/ws/events/?since=0")
        admin = await _open(scene.tenant, committed.admin_a, "/ws/events/?since=0")
        replay_reader, replay_admin = await _drain(reader), await _drain(admin)
        assert json.loads(replay_reader[-1])["type"] == "subscribed"
        assert _leaks(replay_reader) == []
        assert set(_leaks(replay_admin)) >= {*SECRETS}  # an admin still gets everything
        assert any("member.role_changed" in f for f in replay_admin)

        await sync_to_async(scene.document)("Bonus-Plan-2026.txt")  # live, as it is uploaded
        live_reader, live_admin = await _drain(reader), await _drain(admin)
        assert not any("Bonus-Plan-2026.txt" in f for f in live_reader)
        assert any("Bonus-Plan-2026.txt" in f for f in live_admin)

        await reader.send_json_to({"type": "subscribe", "topic": f"kb.{scene.kb.pk}"})
        refused = json.loads(await reader.receive_from(timeout=5))
        assert refused["type"] == "error" and refused["data"]["code"] == "topic_refused"
        await sync_to_async(scene.document)("Bonus-Plan-2027.txt")
        assert not any("Bonus-Plan-2027.txt" in f for f in await _drain(reader))
        await reader.disconnect()
        await admin.disconnect()

    asyncio.run(scenario())


def test_a_foreign_topic_in_the_url_is_refused_and_delivers_nothing(committed):
    scene = Scene(committed)

    async def scenario():
        reader = await _open(scene.tenant, scene.reader, f"/ws/events/?topics=kb.{scene.kb.pk}&since=0")
        frames = await _drain(reader)
        assert json.loads(frames[0])["data"]["code"] == "topic_refused"
        assert json.loads(frames[-1]) == {"type": "subscribed", "tenant": "acme", "topics": None}
        await sync_to_async(scene.document)("Bonus-Plan-2026.txt")
        frames += await _drain(reader)
        assert _leaks(frames) == [] and not any("Bonus-Plan" in f for f in frames)
        await reader.disconnect()

    asyncio.run(scenario())


def test_a_revoked_team_share_stops_the_flow_for_the_team_member(committed):
    scene = Scene(committed)
    scene.share("viewer")

    async def scenario():
        reader = await _open(scene.tenant, scene.reader, "/ws/events/")
        await _drain(reader)
        await reader.send_json_to({"type": "subscribe", "topic": f"kb.{scene.kb.pk}"})
        assert json.loads(await reader.receive_from(timeout=5))["type"] == "subscribed"
        await sync_to_async(scene.document)("Shared-Notes.txt")
        assert any("Shared-Notes.txt" in f for f in await _drain(reader))  # shared: the member follows along

        await sync_to_async(scene.share)("none")
        await sync_to_async(scene.document)("After-Revoke.txt")
        assert not any("After-Revoke.txt" in f for f in await _drain(reader))
        await reader.disconnect()

    asyncio.run(scenario())
