"""What row-level security (core.rls) costs on search and on the chat history, RLS on vs off in the same run.

    python scripts/devstack.py run bench/rls_overhead.py [N_CHUNKS] [N_QUERIES]

One tenant, a knowledge base of N_CHUNKS (default 20,000) synthetic chunks (bench/retrieval.py's corpus and COPY
load) that its admin shares with the whole organisation, searched by a plain member (the case whose rows the policies
actually filter: admins skip them), plus a conversation of 200 messages. Through the whole Django stack (test
client, JWT-less session auth, tenant resolution, policy), interleaved query by query with RLS on and off:
- search API (hybrid, query embedding cached: the embedder's time is not what changes);
- the dense search SQL alone, as the member;
- the chat history API (GET /api/v1/conversations/{id}/messages/) and the agent list;
- a bare request (GET /api/v1/me/);
- a whole chat turn: POST /api/v1/agents/{id}/chat/ with {"wait": false} (run admitted and queued), then the run
  executed in this process as the agents worker executes it (agents.runtime.runner.execute_run: history, retrieval
  over the knowledge base, the offline model's answer, persistence).
"On" is the product (queries as DB_APP_ROLE with the member as principal); "off" runs them as the connection's own
role (settings.DB_APP_ROLE empty), which bypasses the policies. Ratios are on/off of the medians.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
import uuid

from common import bench_django_setup, summary
from retrieval import DIM, load, synthetic_corpus


def main() -> int:
    n_chunks = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    n_queries = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    redis_base = os.environ["REDIS_URL"].rsplit("/", 1)[0]
    os.environ.setdefault("TEST_REDIS_URL", f"{redis_base}/3")
    os.environ.setdefault("RATE_LIMITS", '{"search": "100000/m", "api": "100000/m"}')
    os.environ.setdefault("RATE_LIMITS_TENANT", '{"search": "1000000/m", "api": "1000000/m"}')
    os.environ.setdefault("DB_APP_ROLE", "agentry_app")
    bench_django_setup("agentry_bench_rls")
    from django.conf import settings
    from django.db import connection, transaction
    from django.test import Client
    from django.utils import timezone
    from django_tenants.utils import tenant_context

    from accounts.models import Membership, Role, User
    from agents.models import Agent, Conversation, Message
    from agents.runtime.runner import execute_run
    from agents.services import agent_create
    from core.rls import db_principal_for, db_principal_scope
    from iam.policy import Principal
    from knowledge import retrieval
    from knowledge.embeddings import embedder_for_model
    from knowledge.models import KnowledgeBase
    from tenants.services import tenant_create, tenant_delete

    role = settings.DB_APP_ROLE
    assert role, "DB_APP_ROLE must name the restricted role"

    def rls(on: bool) -> None:
        settings.DB_APP_ROLE = role if on else ""
        if not on:  # the backend leaves the session alone when off: hand the connection back to its own role
            with connection.cursor() as cursor:
                cursor.execute("RESET ROLE")
            connection.rls_applied = None

    owner, _ = User.objects.get_or_create(email="bench-rls-owner@bench.test")
    member, _ = User.objects.get_or_create(email="bench-rls-member@bench.test")
    slug = f"bench-rls-{uuid.uuid4().hex[:8]}"
    tenant = tenant_create(name=slug, slug=slug, owner=owner)
    Membership.objects.create(user=member, tenant=tenant, role=Role.USER)
    try:
        with tenant_context(tenant):
            vectors, texts = synthetic_corpus(n_chunks)
            kb = KnowledgeBase.objects.create(owner=owner, name="Bench RLS", current_version=1, org_access="viewer")
            load(kb, vectors, texts)
            for i in range(20):  # private things of others, as a real organisation has
                KnowledgeBase.objects.create(owner=owner, name=f"private kb {i}")
                Agent.objects.create(owner=owner, name=f"private agent {i}")
            agent = agent_create(  # the offline model, answering from the knowledge base
                principal=Principal(tenant=tenant, user=owner, role="admin"),
                data={"name": "shared agent", "org_access": "viewer", "knowledge_base_ids": [kb.pk]},
            )
            conversation = Conversation.objects.create(agent=agent, user=member)
            now = timezone.now()
            Message.objects.bulk_create(
                [
                    Message(conversation=conversation, created=now, role="user" if i % 2 else "assistant", content=t)
                    for i, t in enumerate(texts[:200])
                ]
            )
            embedder = embedder_for_model(kb.embedding_model)
            questions = [texts[i][:200] for i in random.Random(2).sample(range(len(texts)), n_queries)]
            qvecs = {q: embedder.embed([q])[0] for q in questions}

            client = Client(HTTP_HOST=f"{tenant.slug}.localhost")
            client.force_login(member)
            member_principal = db_principal_for(user_id=member.pk, is_admin=False, schema=tenant.schema_name)

            def timed(fn) -> float:
                t0 = time.perf_counter()
                fn()
                return time.perf_counter() - t0

            def search_api(q: str) -> None:
                response = client.post(
                    f"/api/v1/knowledge-bases/{kb.pk}/search/",
                    {"query": q, "top_k": 10, "mode": "hybrid"},
                    content_type="application/json",
                )
                assert response.status_code == 200, response.content[:300]
                assert response.json()["results"], "the member must find the shared knowledge base's chunks"

            def dense_sql(q: str) -> None:
                scope = retrieval._scope(kb, None, None, None)
                literal = retrieval.vector_literal(qvecs[q])
                with db_principal_scope(member_principal), transaction.atomic(), connection.cursor() as cursor:
                    retrieval._set_vector_search_options(cursor, retrieval.ef_search_for(n_chunks))
                    cursor.execute(retrieval.dense_sql(DIM, scope.sql), [literal, *scope.params, literal, 10])
                    assert len(cursor.fetchall()) == 10

            def history() -> None:
                response = client.get(f"/api/v1/conversations/{conversation.pk}/messages/")
                assert response.status_code == 200, response.content[:300]

            def agents() -> None:
                assert client.get("/api/v1/agents/").status_code == 200

            def bare() -> None:
                assert client.get("/api/v1/me/").status_code == 200

            def chat_turn(q: str) -> None:
                response = client.post(
                    f"/api/v1/agents/{agent.pk}/chat/",
                    {"message": q, "conversation_id": str(conversation.pk), "wait": False},
                    content_type="application/json",
                )
                assert response.status_code == 202, response.content[:300]
                result = execute_run(tenant.schema_name, response.json()["run_id"])
                assert result.get("status") == "complete", result

            paths = {"search API": search_api, "dense SQL": dense_sql, "chat turn": chat_turn}
            simple = {"history API": history, "agent list API": agents, "bare request": bare}
            times: dict[tuple[str, bool], list[float]] = {}
            for q in questions[:5]:  # warm both states and the query-embedding cache
                for on in (True, False):
                    rls(on)
                    search_api(q), dense_sql(q), chat_turn(q), history(), agents(), bare()
            for i, q in enumerate(questions):
                for on in (True, False) if i % 2 else (False, True):  # alternate which goes first
                    rls(on)
                    for name, fn in paths.items():
                        times.setdefault((name, on), []).append(timed(lambda fn=fn, q=q: fn(q)))
                    for name, fn in simple.items():
                        times.setdefault((name, on), []).append(timed(fn))
            rls(True)

            print(f"\n{n_chunks} chunks, {n_queries} queries, member of the organisation (not admin)")
            print(f"{'path':<16} {'RLS off p50/p95 ms':>20} {'RLS on p50/p95 ms':>20} {'on/off p50':>11}")
            for name in [*paths, *simple]:
                off, on = summary(times[(name, False)]), summary(times[(name, True)])
                ratio = statistics.median(times[(name, True)]) / statistics.median(times[(name, False)])
                print(
                    f"{name:<16} {off['p50'] * 1000:>9.2f} / {off['p95'] * 1000:<8.2f} "
                    f"{on['p50'] * 1000:>9.2f} / {on['p95'] * 1000:<8.2f} {ratio:>10.3f}"
                )
    finally:
        rls(True)
        tenant_delete(tenant=tenant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
