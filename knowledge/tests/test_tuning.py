"""Per-knowledge-base search tuning (knowledge.tuning): pseudo-queries from the documents, the grid measured with
the real search() (real PostgreSQL, Redis and the offline MiniLM embedder), the stored record, the precedence of
explicit settings, the debounce after ingestion, and the API with its access rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.cache import cache
from django_tenants.utils import tenant_context

from accounts.models import Membership, Role, User
from conftest import PASSWORD, ROOT
from iam.policy import Principal
from knowledge import retrieval, services, tuning
from knowledge.models import KnowledgeBase
from knowledge.tests.conftest import ingest, upload

pytestmark = pytest.mark.django_db
API = "/api/v1/knowledge-bases/"
CORPUS = ROOT / "bench" / "data" / "python_faq" / "corpus.jsonl"


def howto_documents(sections: int) -> dict[str, str]:
    """The first `sections` sections of the Python HOWTOs (public text, bench/data/python_faq) as one Markdown file
    per HOWTO, each section under its heading: few files, so the pipeline embeds them in few batches."""
    documents: dict[str, str] = {}
    for line in Path(CORPUS).read_text().splitlines():
        entry = json.loads(line)
        if entry["id"].startswith("howto/") and sections > 0:
            name = entry["id"].split("/")[1]
            heading = entry["title"].rsplit(" (", 1)[0]
            text = documents.get(f"{name}.md", f"# The {name} HOWTO\n\n")
            documents[f"{name}.md"] = text + f"## {heading}\n\n" + "\n\n".join(entry["chunks"]) + "\n\n"
            sections -= 1
    return documents


@pytest.fixture
def tuned_kb(in_tenant_a, admin_a):
    kb = services.knowledge_base_create(owner=admin_a, name="HOWTOs")
    ingest(kb, admin_a, *[upload(name, text) for name, text in howto_documents(16).items()])
    kb.refresh_from_db()
    return kb


def _principal(tenant, user, role="admin") -> Principal:
    return Principal(tenant=tenant, user=user, role=role)


def test_pseudo_queries_come_from_headings_titles_and_sentences_deterministically(tuned_kb):
    questions = tuning.pseudo_queries(tuned_kb)
    assert tuning.MIN_QUESTIONS <= len(questions) <= tuning.MAX_QUESTIONS
    assert {q.kind for q in questions} >= {"heading", "sentence"}
    assert all(q.targets for q in questions)
    assert len({q.text.lower() for q in questions}) == len(questions)  # no question asked twice
    assert tuning.pseudo_queries(tuned_kb) == questions  # same content, same questions
    assert len(tuning.pseudo_queries(tuned_kb, limit=25)) == 25


def test_tuning_stores_its_figures_on_the_version_and_search_uses_the_setting(tuned_kb):
    record = tuning.knowledge_base_tune(kb=tuned_kb, limit=tuning.MIN_QUESTIONS)
    version = tuned_kb.versions.get(number=tuned_kb.current_version)
    assert version.search_tuning == record
    assert record["questions"] == tuning.MIN_QUESTIONS
    assert record["status"] in (tuning.TuningStatus.TUNED, tuning.TuningStatus.DEFAULT)
    assert 0 < record["mrr_default"] <= 1 and record["mrr_tuned"] >= record["mrr_default"]
    assert len(record["grid"]) == len(tuning.tuning_grid())
    assert record["grid"][0] == {"settings": {}, "mrr": record["mrr_default"]}
    in_force = retrieval.search_settings_for(tuned_kb)
    for key, value in record["settings"].items():
        assert in_force[key] == value
    if record["status"] == tuning.TuningStatus.DEFAULT:
        assert record["settings"] == {} and in_force == retrieval.DEFAULT_SEARCH_SETTINGS


def test_explicit_settings_win_over_a_tuning_and_a_tuning_over_the_defaults(kb):
    version = kb.versions.create(number=1)
    kb.current_version = 1
    kb.save()
    version.search_tuning = {
        "status": tuning.TuningStatus.TUNED,
        "settings": {"fusion": "weighted", "dense_weight": 0.6, "lexical_weight": 0.4},
    }
    version.save()
    assert retrieval.search_settings_for(kb)["dense_weight"] == 0.6
    assert retrieval.search_settings_for(kb)["bm25_k1"] == retrieval.DEFAULT_SEARCH_SETTINGS["bm25_k1"]
    kb.search_settings = {"dense_weight": 0.9}
    assert retrieval.search_settings_for(kb)["dense_weight"] == 0.9
    assert retrieval.search_settings_for(kb)["lexical_weight"] == 0.4
    assert tuning.tuning_status(kb=kb).overridden == ["dense_weight"]


def test_reset_goes_back_to_the_defaults_and_stops_automatic_tuning(kb, tenant_a, admin_a):
    kb.versions.create(number=1, search_tuning={"status": "tuned", "settings": {"dense_weight": 0.5}})
    kb.current_version = 1
    kb.save()
    view = tuning.tuning_reset(kb=kb, principal=_principal(tenant_a, admin_a))
    assert view.record["status"] == tuning.TuningStatus.RESET and not view.auto_tune
    assert retrieval.search_settings_for(kb) == retrieval.DEFAULT_SEARCH_SETTINGS
    kb.refresh_from_db()
    assert kb.auto_tune is False
    sent = []
    assert not tuning.tuning_schedule(knowledge_base_id=kb.pk, enqueue=lambda **kw: sent.append(kw))
    assert sent == []


def test_titles_that_differ_only_in_numbers_are_not_questions(kb, admin_a):
    text = "Orchards grow apples, pears and plums on trees planted in long rows across the valley."
    ingest(
        kb, admin_a, *[upload(f"part{n}.md", f"{text} Part {n}.", title=f"Harvest report, part {n}") for n in (1, 2)]
    )
    ingest(kb, admin_a, upload("pruning.md", text, title="Pruning old trees"))
    titles = {q.text for q in tuning.pseudo_queries(kb) if q.kind == "title"}
    assert titles == {"Pruning old trees"}


def test_held_out_text_leaves_out_the_question_itself():
    sentence = tuning.PseudoQuery("Logging is configured once per process.", "sentence", frozenset({1}))
    text = "Logging HOWTO\n\nHandlers send records. Logging is configured once per process. Filters drop records."
    assert tuning.held_out_text(sentence, text, []) == "Logging HOWTO Handlers send records. Filters drop records."
    heading = tuning.PseudoQuery("Handlers", "heading", frozenset({1}))
    assert tuning.held_out_text(heading, "Logging > Handlers\n\nHandlers send records.", ["Logging", "Handlers"]) == (
        "Handlers send records."
    )
    assert tuning.held_out_text(heading, "Handlers send records.", []) == "Handlers send records."


def test_the_replayed_default_ranks_as_search_and_its_bm25_is_search_s(tuned_kb):
    """The grid is replayed offline on one search's candidates: with nothing held out, the defaults must rank the
    top ten exactly as search() does, and BM25 of a passage recomputed from its text must be search()'s."""
    for text in ("rotating log files by size", "sort a list of tuples by the second item", "Handlers"):
        question = tuning.PseudoQuery(text, "heading", frozenset())
        (seen,) = tuning._observe(tuned_kb, [question])
        hits = retrieval.search(knowledge_base=tuned_kb, query=text, top_k=tuning.TOP)
        assert tuning.replay_ranking(seen, {}) == [h.chunk_id for h in hits]
        lexical = [h for h in hits if h.lexical_score is not None]
        assert lexical
        query, *passages = tuning.term_frequencies([text] + [h.text for h in lexical])
        bm25 = tuning.bm25_statistics(tuned_kb, set(query))
        for hit, passage in zip(lexical, passages, strict=True):
            assert bm25.score(query, passage) == pytest.approx(hit.lexical_score, abs=1e-5)


def test_each_kind_of_question_weighs_the_same():
    questions = [tuning.PseudoQuery(f"q{i}", kind, frozenset({i})) for i, kind in enumerate("hhhhhhss")]
    weights = tuning.kind_weights(questions)
    assert sum(weights[:6]) == pytest.approx(0.5) and sum(weights[6:]) == pytest.approx(0.5)


def test_a_setting_must_beat_the_defaults_beyond_noise():
    default = [1.0, 0.5, 0.0, 1.0] * 10
    assert tuning.setting_choose(default, [list(default)]) is None  # a tie keeps the defaults
    one_lucky_question = list(default)
    one_lucky_question[2] = 1.0
    assert tuning.setting_choose(default, [one_lucky_question]) is None  # +0.025 from one question: noise
    better = [1.0, 1.0, 0.5, 1.0] * 10
    assert tuning.setting_choose(default, [one_lucky_question, better]) == 1
    assert tuning.setting_choose(default, [[0.0] * 40]) is None


def test_ingestion_schedules_nothing_until_the_owner_asks_for_tuning(kb):
    cache.delete(tuning._scheduled_key(kb.pk))
    assert kb.auto_tune is False
    sent: list[dict] = []
    assert tuning.tuning_schedule(knowledge_base_id=kb.pk, enqueue=lambda **kw: sent.append(kw)) is False
    assert sent == []


def test_ingestion_schedules_one_tuning_for_many_documents(kb):
    KnowledgeBase.objects.filter(pk=kb.pk).update(auto_tune=True)
    cache.delete(tuning._scheduled_key(kb.pk))
    sent = []
    for _ in range(5):  # five documents of one upload finish
        tuning.tuning_schedule(knowledge_base_id=kb.pk, enqueue=lambda **kw: sent.append(kw))
    assert sent == [{"args": (kb.pk,), "countdown": tuning.SCHEDULE_DELAY_SECONDS}]
    cache.delete(tuning._scheduled_key(kb.pk))


def test_an_automatic_run_waits_while_documents_are_processing(kb, admin_a):
    KnowledgeBase.objects.filter(pk=kb.pk).update(auto_tune=True)
    services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("a.md", "# A\n\nSome text about apples.")])
    cache.delete(tuning._scheduled_key(kb.pk))
    sent = []
    result = tuning.tuning_run(
        knowledge_base_id=kb.pk, on_demand=False, requested_by=None, enqueue=lambda **kw: sent.append(kw)
    )
    assert result == "waiting" and len(sent) == 1
    assert not kb.versions.exclude(search_tuning={}).exists()
    cache.delete(tuning._scheduled_key(kb.pk))


def test_too_little_text_is_not_tuned(kb, admin_a):
    ingest(kb, admin_a, upload("a.md", "# Apples\n\nApples grow on trees in orchards all over the world."))
    record = tuning.knowledge_base_tune(kb=kb)
    assert record["status"] == tuning.TuningStatus.TOO_FEW and record["settings"] == {}
    assert retrieval.search_settings_for(kb) == retrieval.DEFAULT_SEARCH_SETTINGS


# --- API -------------------------------------------------------------------------------------------------


@pytest.fixture
def readonly_a(tenant_a):
    user = User.objects.create_user(email="reader@acme.test", password=PASSWORD)
    Membership.objects.create(user=user, tenant=tenant_a, role=Role.READONLY)
    return user


def _shared_kb(tenant, owner) -> KnowledgeBase:
    with tenant_context(tenant):
        kb = services.knowledge_base_create(owner=owner, name="Shared", org_access="viewer")
        kb.versions.create(number=1, search_tuning={"status": "tuned", "settings": {"dense_weight": 0.6}})
        kb.current_version = 1
        kb.auto_tune = True  # its owner asked for a tuning
        kb.save()
        return kb


def test_api_shows_the_tuning_and_only_editors_may_retune_or_reset(client_a, tenant_a, admin_a, readonly_a):
    kb = _shared_kb(tenant_a, admin_a)
    url = f"{API}{kb.pk}/tuning/"
    client_a.force_login(readonly_a)
    body = client_a.get(url).json()
    assert body["status"] == "tuned" and body["settings"] == {"dense_weight": 0.6} and body["auto_tune"] is True
    assert client_a.post(url).status_code == 403
    assert client_a.delete(url).status_code == 403

    client_a.force_login(admin_a)
    reset = client_a.delete(url)
    assert reset.status_code == 200 and reset.json()["status"] == "reset" and reset.json()["auto_tune"] is False
    queued = client_a.post(url)
    assert queued.status_code == 202 and queued.json()["running"] is True and queued.json()["auto_tune"] is True
    cache.delete(tuning._running_key(kb.pk))


def test_api_tuning_of_another_organisation_is_not_found(client_b, tenant_a, admin_a, admin_b):
    kb = _shared_kb(tenant_a, admin_a)
    client_b.force_login(admin_b)
    assert client_b.get(f"{API}{kb.pk}/tuning/").status_code == 404
    assert client_b.post(f"{API}{kb.pk}/tuning/").status_code == 404


# --- dashboard -------------------------------------------------------------------------------------------


def test_settings_page_edits_the_ocr_language_and_shows_the_tuning(client_a, tenant_a, admin_a):
    kb = _shared_kb(tenant_a, admin_a)
    url = f"/knowledge/{kb.pk}/settings/"
    client_a.force_login(admin_a)
    page = client_a.get(url).content.decode()
    assert 'name="ocr_language"' in page and 'value="eng"' in page
    assert "Search uses adaptive fusion from dense 0.6 / lexical 0.2 instead of the defaults" in page

    refused = client_a.post(url, {"name": "Shared", "ocr_language": "eng+"})
    assert refused.status_code == 400 and "ocr_language must be Tesseract language codes" in refused.content.decode()
    saved = client_a.post(url, {"name": "Scans", "description": "Contracts", "ocr_language": "eng"})
    assert saved.status_code == 302
    with tenant_context(tenant_a):
        kb.refresh_from_db()
    assert (kb.name, kb.description, kb.ocr_language) == ("Scans", "Contracts", "eng")


def test_readonly_member_sees_the_settings_but_cannot_change_or_tune(client_a, tenant_a, admin_a, readonly_a):
    kb = _shared_kb(tenant_a, admin_a)
    client_a.force_login(readonly_a)
    page = client_a.get(f"/knowledge/{kb.pk}/settings/").content.decode()
    assert "disabled" in page and "Re-tune now" not in page and "Reset to defaults" not in page
    assert client_a.post(f"/knowledge/{kb.pk}/settings/", {"name": "x", "ocr_language": "eng"}).status_code == 403
    assert client_a.post(f"/knowledge/{kb.pk}/tuning/run/").status_code == 403
    assert client_a.post(f"/knowledge/{kb.pk}/tuning/reset/").status_code == 403
    with tenant_context(tenant_a):
        kb.refresh_from_db()
        assert kb.name == "Shared" and kb.auto_tune
        assert tuning.tuning_status(kb=kb).record["status"] == "tuned"


def test_dashboard_buttons_reset_and_queue_a_tuning(client_a, tenant_a, admin_a):
    kb = _shared_kb(tenant_a, admin_a)
    client_a.force_login(admin_a)
    assert client_a.post(f"/knowledge/{kb.pk}/tuning/reset/").status_code == 302
    panel = client_a.get(f"/knowledge/{kb.pk}/tuning/").content.decode()
    assert 'data-status="reset"' in panel and "Search uses the default settings" in panel
    assert client_a.post(f"/knowledge/{kb.pk}/tuning/run/").status_code == 302
    panel = client_a.get(f"/knowledge/{kb.pk}/tuning/").content.decode()
    assert 'data-running="true"' in panel and 'hx-trigger="every 2s"' in panel  # polls until the worker is done
    with tenant_context(tenant_a):
        kb.refresh_from_db()
        assert kb.auto_tune
    cache.delete(tuning._running_key(kb.pk))
