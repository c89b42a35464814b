"""A run whose worker died mid-answer (killed: no shutdown handler ran) and that no client watches: the agents sweep
closes it once, as a watching relay would, and sends what the worker would have sent at its end. The worker process
itself is killed for real in tests/reliability; here its leftovers are written directly, so this runs in a second."""

from django_tenants.utils import tenant_context

from agents.models import Message
from agents.runtime.runner import runs_close_orphaned
from agents.runtime.stream import alive_key, emit_sync
from agents.services import chat_start
from core.events import stream_read
from core.redis_clients import redis_client
from usage.models import UsageRecord

from .conftest import events_of

STREAMED = ["Refunds ", "are ", "accepted ", "within ", "30 ", "days"]


def test_sweep_closes_a_dead_workers_run_once_keeps_what_it_streamed_and_meters_it(live):
    agent = live.agent()
    schema = live.tenant_a.schema_name
    with tenant_context(live.tenant_a):
        handles = chat_start(principal=live.principal(), agent=agent, message="What is the refund window?")
    run_id = handles["run_id"]
    # What the worker wrote before it died; its liveness key was never renewed (AGENTS_RUN_HEARTBEAT_SECONDS).
    emit_sync(schema, run_id, 1, "message.start", {"message_id": handles["message_id"]})
    for seq, text in enumerate(STREAMED, start=2):
        emit_sync(schema, run_id, seq, "token", {"text": text})
    bus_before = len(stream_read(schema, count=10_000))

    with tenant_context(live.tenant_a):
        assert run_id in runs_close_orphaned(schema)
        assert runs_close_orphaned(schema) == [], "closed twice"
        message = Message.objects.get(pk=handles["message_id"])
        metered = list(UsageRecord.objects.filter(run_id=run_id).values_list("status", "tokens_out"))

    assert (message.status, message.content) == ("incomplete", "".join(STREAMED))
    assert message.error["code"] == "provider_error"
    events = events_of(live.tenant_a, run_id)
    assert [e["type"] for e in events][-2:] == ["error", "message.end"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert metered == [("incomplete", len("".join(STREAMED)) // 4)]
    finished = [e for _, e in stream_read(schema, count=10_000)[bus_before:] if e["type"] == "run.finished"]
    assert [(e["data"]["run_id"], e["data"]["status"]) for e in finished] == [(run_id, "incomplete")]


def test_sweep_leaves_a_live_run_alone(live):
    agent = live.agent()
    schema = live.tenant_a.schema_name
    with tenant_context(live.tenant_a):
        handles = chat_start(principal=live.principal(), agent=agent, message="What is the refund window?")
    emit_sync(schema, handles["run_id"], 1, "message.start", {"message_id": handles["message_id"]})
    redis_client().set(alive_key(schema, handles["run_id"]), "1", ex=10)  # a worker renews it
    with tenant_context(live.tenant_a):
        assert runs_close_orphaned(schema) == []
        assert Message.objects.get(pk=handles["message_id"]).status == "streaming"
