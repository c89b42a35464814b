"""Per-knowledge-base search tuning: the fusion setting that ranks this knowledge base's own passages best.

    record = knowledge_base_tune(kb=kb)          # measure on the current version, store the record there
    status = tuning_status(kb=kb)                # what the settings page and GET .../tuning/ show
    tuning_request(kb=kb, principal=p, enqueue=...)   # the owner asks for a (re-)tuning
    tuning_reset(kb=kb, principal=p)             # back to the defaults, automatic tuning off

Why: fusion weights chosen on one corpus do not carry over to another (on a public FAQ the default hybrid ranked
below the dense leg alone). A knowledge base carries labelled data of its own: a heading names what its section
says, a title what its document says, and a sentence belongs to the passage it was taken from. From these we make
up to MAX_QUESTIONS pseudo-queries (deterministic: the same content gives the same questions), run each through
the real search() with every setting of a small grid, score passage-level MRR@10 (a hit is any passage of the
target section or document, or the sentence's passage or a neighbour sharing its overlap), and keep the best
setting only when it beats the defaults by more than the noise of the paired comparison. The record (setting,
number of questions, MRR with the defaults and with the setting, when) is stored on the version it was measured
on; retrieval.search_settings_for() applies the newest record beneath the owner's explicit search_settings.

Known bias: a pseudo-query shares words with its target verbatim (a heading heads every chunk of its section;
a held-out sentence is still in its chunk), which favours the lexical leg. The noise margin keeps the defaults
unless a setting wins clearly, and the owner sees the figures and can reset.

Cost: search() takes a query, not a vector. The grid's searches of one question run back to back, so the
question is embedded once and the other searches read its vector from the query-embedding cache
(retrieval.query_embedding); the grid then costs SQL only: len(grid) x questions searches (8 x 150 at most). A
search() taking a precomputed vector would let the questions be embedded in one batch: several times cheaper.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from core.audit import audit_record
from core.events import KB_UPDATED, event_subject, publish_on_commit
from iam.policy import Principal

from . import retrieval
from .models import Chunk, Document, DocumentStatus, KnowledgeBase, KnowledgeBaseVersion

logger = logging.getLogger(__name__)

MAX_QUESTIONS = 150
MIN_QUESTIONS = 20  # fewer and one question moves MRR by 0.05: not worth changing anything for
STRUCTURE_SHARE = 2 / 3  # of MAX_QUESTIONS at most for headings and titles; sentences fill the rest
TOP = 10  # MRR@10
MIN_GAIN = 0.01  # MRR a tuned setting must gain over the defaults, at least ...
NOISE_SE = 2.0  # ... and more than this many standard errors of the paired per-question difference
# Keys a tuning may set; all other search settings stay the owner's or the defaults.
FUSION_KEYS = ("fusion", "dense_weight", "lexical_weight", "rrf_k", "candidates")
DENSE_WEIGHTS = (1.0, 0.9, 0.65, 0.5, 0.3)  # besides the default's; 1.0 ranks by the dense leg alone
# Debounce: documents of one upload finish one after another; the tuning runs once, this long after the first.
SCHEDULE_DELAY_SECONDS = 60
RUNNING_TTL_SECONDS = 3600

Enqueue = Callable[..., Any]  # a Celery task's apply_async

_WORD = re.compile(r"[^\W\d_]{2,}")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_FILE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}$")


class TuningStatus:
    TUNED = "tuned"  # a setting beat the defaults: search uses it
    DEFAULT = "default"  # measured, the defaults were as good: search keeps them
    TOO_FEW = "too_few_questions"  # not enough text to measure anything
    RESET = "reset"  # the owner went back to the defaults


@dataclass(frozen=True)
class PseudoQuery:
    text: str
    kind: str  # "heading", "title" or "sentence"
    targets: frozenset[int]  # chunk ids: ranking any of them counts as finding the answer


@dataclass
class TuningView:
    """What the settings page and the API show (tuning_status)."""

    auto_tune: bool
    running: bool
    record: dict[str, Any] = field(default_factory=dict)  # the newest record in force, {} if never tuned
    overridden: list[str] = field(default_factory=list)  # tuned keys the owner's search_settings override

    def as_dict(self) -> dict[str, Any]:
        return {"auto_tune": self.auto_tune, "running": self.running, "overridden": self.overridden, **self.record}

    @property
    def setting_label(self) -> str:
        return setting_label(self.record.get("settings") or {})

    @property
    def tuned_at(self) -> datetime | None:
        return datetime.fromisoformat(self.record["tuned_at"]) if self.record.get("tuned_at") else None

    @property
    def grid(self) -> list[dict[str, Any]]:
        """The settings tried, in words, best first (the settings page's table)."""
        rows = [{"label": setting_label(row["settings"]), "mrr": row["mrr"]} for row in self.record.get("grid") or []]
        return sorted(rows, key=lambda row: -row["mrr"])


def setting_label(setting: dict[str, Any]) -> str:
    """A setting in words: "weighted fusion, dense 0.65 / lexical 0.35"; {} is "the defaults"."""
    if not setting:
        return "the defaults"
    merged = {**retrieval.DEFAULT_SEARCH_SETTINGS, **setting}
    if merged["fusion"] == "weighted":
        return f"weighted fusion, dense {merged['dense_weight']:g} / lexical {merged['lexical_weight']:g}"
    if merged["fusion"] == "rrf":
        return "reciprocal rank fusion"
    weights = f"dense {merged['dense_weight']:g} / lexical {merged['lexical_weight']:g}"
    return f"{merged['fusion']} fusion from {weights}"


# --- pseudo-queries --------------------------------------------------------------------------------------


def _rank_key(kb: KnowledgeBase, text: str) -> str:
    # Deterministic sampling: the same knowledge base and content always give the same questions.
    return hashlib.sha256(f"{kb.pk}\0{text}".encode()).hexdigest()


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def _usable(text: str) -> bool:
    words = _WORD.findall(text)
    return 4 <= len(text) <= 300 and len(words) >= 1 and sum(len(w) for w in words) >= 4


def _title_query(title: str) -> str:
    return " ".join(_FILE_SUFFIX.sub("", title).replace("_", " ").replace("-", " ").split())


def _held_out_sentence(kb: KnowledgeBase, text: str, heading: str) -> str | None:
    """One whole sentence of the passage (6-40 words, mostly words, not its heading line), picked by hash."""
    candidates = []
    for sentence in _SENTENCE_SPLIT.split(text):
        sentence = sentence.strip()
        if not sentence or (heading and sentence.startswith(heading)):
            continue
        words = sentence.split()
        letters = sum(ch.isalpha() for ch in sentence)
        if 6 <= len(words) <= 40 and letters >= 0.6 * len(sentence):
            candidates.append(sentence)
    return min(candidates, key=lambda s: _rank_key(kb, s)) if candidates else None


def pseudo_queries(kb: KnowledgeBase, limit: int = MAX_QUESTIONS) -> list[PseudoQuery]:
    """Questions with known answers made from the current version's headings, titles and sentences."""
    rows = list(
        Chunk.objects.filter(knowledge_base=kb, valid_to__isnull=True, embedding__isnull=False)
        .order_by("document_id", "position")
        .values_list("id", "document_id", "section_path", "content_hash")
    )
    by_document: dict[int, list[int]] = defaultdict(list)
    by_section: dict[tuple[int, tuple[str, ...]], set[int]] = defaultdict(set)
    for chunk_id, document_id, section_path, _ in rows:
        by_document[document_id].append(chunk_id)
        if section_path:
            by_section[(document_id, tuple(section_path))].add(chunk_id)

    # Headings and titles: a text that names places in two documents is ambiguous, so it is dropped.
    named: dict[str, tuple[str, str, set[int], set[int]]] = {}  # norm -> (text, kind, targets, documents)
    sources: list[tuple[str, str, int, set[int]]] = [
        (path[-1], "heading", document_id, ids) for (document_id, path), ids in by_section.items()
    ]
    titles = Document.objects.filter(knowledge_base=kb, id__in=list(by_document), status=DocumentStatus.READY)
    for document_id, title, metadata in titles.values_list("id", "title", "metadata"):
        for text in dict.fromkeys((_title_query(title), str((metadata or {}).get("html_title") or ""))):
            sources.append((text, "title", document_id, set(by_document[document_id])))
    for text, kind, document_id, ids in sources:
        text = text.strip()
        if not _usable(text):
            continue
        norm = _normalised(text)
        if norm in named:
            named[norm][2].update(ids)
            named[norm][3].add(document_id)
        else:
            named[norm] = (text, kind, set(ids), {document_id})
    structural = sorted(
        (
            PseudoQuery(text, kind, frozenset(ids))
            for text, kind, ids, documents in named.values()
            if len(documents) == 1
        ),
        key=lambda q: _rank_key(kb, q.text),
    )

    # Held-out sentences: sample passages by content hash, one sentence each; a hit on a neighbour counts
    # (chunks cut for size repeat sentences of the previous one).
    neighbours: dict[int, frozenset[int]] = {}
    for ordered in by_document.values():
        for i, chunk_id in enumerate(ordered):
            neighbours[chunk_id] = frozenset(ordered[max(i - 1, 0) : i + 2])
    n_structural = min(len(structural), int(limit * STRUCTURE_SHARE))
    wanted = limit - n_structural
    sampled = sorted(rows, key=lambda row: _rank_key(kb, row[3]))[: wanted * 2]
    texts = dict(Chunk.objects.filter(id__in=[row[0] for row in sampled]).values_list("id", "text"))
    sentences: list[PseudoQuery] = []
    seen = set(named)
    for chunk_id, _, section_path, _ in sampled:
        if len(sentences) >= wanted:
            break
        sentence = _held_out_sentence(kb, texts.get(chunk_id, ""), " > ".join(section_path or []))
        if sentence and _normalised(sentence) not in seen:
            seen.add(_normalised(sentence))
            sentences.append(PseudoQuery(sentence, "sentence", neighbours[chunk_id]))
    n_structural = min(len(structural), limit - len(sentences))
    return structural[:n_structural] + sentences


# --- measuring and choosing ------------------------------------------------------------------------------


def tuning_grid() -> list[dict[str, Any]]:
    """The settings tried, the defaults first: weighted fusion over a range of dense weights, RRF, adaptive."""
    default = {key: retrieval.DEFAULT_SEARCH_SETTINGS[key] for key in FUSION_KEYS}
    grid = [default]
    for weight in DENSE_WEIGHTS:
        grid.append({**default, "fusion": "weighted", "dense_weight": weight, "lexical_weight": round(1 - weight, 2)})
    grid.append({**default, "fusion": "rrf", "dense_weight": 1.0, "lexical_weight": 1.0})
    weights = {key: retrieval.DEFAULT_SEARCH_SETTINGS[key] for key in ("dense_weight", "lexical_weight")}
    grid.append({**default, "fusion": "adaptive", **weights})  # per-query weights from the legs' confidence
    unique: list[dict[str, Any]] = []
    for setting in grid:
        if setting not in unique:
            unique.append(setting)
    return unique


def reciprocal_rank(ranked_chunk_ids: list[int], targets: frozenset[int]) -> float:
    for rank, chunk_id in enumerate(ranked_chunk_ids[:TOP], start=1):
        if chunk_id in targets:
            return 1.0 / rank
    return 0.0


def setting_choose(default: list[float], candidates: list[list[float]]) -> int | None:
    """Index of the candidate to use instead of the defaults, or None to keep them.

    Per-question reciprocal ranks, paired: a candidate wins only if its mean gain is at least MIN_GAIN and more
    than NOISE_SE standard errors of the per-question differences (the best of several noisy candidates looks
    better than it is; ties within noise keep the defaults). The first of equally good candidates wins."""
    if not default or not candidates:
        return None
    best = max(range(len(candidates)), key=lambda i: (statistics.fmean(candidates[i]), -i))
    diffs = [c - d for c, d in zip(candidates[best], default, strict=True)]
    gain = statistics.fmean(diffs)
    noise = statistics.pstdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf
    return best if gain >= MIN_GAIN and gain > NOISE_SE * noise else None


def _measure(kb: KnowledgeBase, questions: list[PseudoQuery], grid: list[dict[str, Any]]) -> list[list[float]]:
    """Reciprocal ranks [setting][question], each through the real search() with the setting over the owner's."""
    explicit = {k: v for k, v in (kb.search_settings or {}).items() if k not in FUSION_KEYS and k != "mode"}
    probes = []
    for setting in grid:
        probe = copy.copy(kb)  # never saved: search() reads its settings from the instance
        probe.search_settings = {**explicit, **setting}
        probes.append(probe)
    ranks = [[0.0] * len(questions) for _ in grid]
    for qi, question in enumerate(questions):
        for si, probe in enumerate(probes):  # back to back: one embedding per question (see the docstring)
            hits = retrieval.search(knowledge_base=probe, query=question.text, top_k=TOP, mode="hybrid")
            ranks[si][qi] = reciprocal_rank([hit.chunk_id for hit in hits], question.targets)
    return ranks


def _changed_keys(setting: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in setting.items() if retrieval.DEFAULT_SEARCH_SETTINGS.get(k) != v}


def knowledge_base_tune(
    *, kb: KnowledgeBase, requested_by: int | None = None, limit: int = MAX_QUESTIONS
) -> dict[str, Any]:
    """Measure the grid on the current version's pseudo-queries and store the record on that version.

    Runs outside any transaction (hundreds of searches; each is its own). A version published meanwhile is
    tuned by its own run (tuning_schedule); this record stays on the version it measured."""
    started = time.monotonic()
    kb = KnowledgeBase.objects.get(pk=kb.pk)
    version = kb.current_version
    questions = pseudo_queries(kb, limit=limit)
    kinds = {kind: sum(1 for q in questions if q.kind == kind) for kind in ("heading", "title", "sentence")}
    record: dict[str, Any] = {
        "version": version,
        "questions": len(questions),
        "kinds": kinds,
        "level": "passage",
        "requested_by": requested_by,
    }
    if len(questions) < MIN_QUESTIONS:
        record.update(status=TuningStatus.TOO_FEW, settings={}, mrr_default=None, mrr_tuned=None, grid=[])
    else:
        grid = tuning_grid()
        ranks = _measure(kb, questions, grid)
        chosen = setting_choose(ranks[0], ranks[1:])
        mrr = [round(statistics.fmean(r), 4) for r in ranks]
        tuned = grid[chosen + 1] if chosen is not None else grid[0]
        record.update(
            status=TuningStatus.TUNED if chosen is not None else TuningStatus.DEFAULT,
            settings=tuned if chosen is not None else {},
            mrr_default=mrr[0],
            mrr_tuned=mrr[chosen + 1] if chosen is not None else mrr[0],
            grid=[{"settings": _changed_keys(s), "mrr": m} for s, m in zip(grid, mrr, strict=True)],
        )
    record.update(tuned_at=timezone.now().isoformat(), seconds=round(time.monotonic() - started, 1))
    _record_store(kb, version, record, action="knowledge_base.search_tuned")
    logger.info(
        "knowledge base %s v%s tuned on %d questions: %s (MRR %s -> %s) in %.1f s",
        kb.pk,
        version,
        len(questions),
        record["status"],
        record["mrr_default"],
        record["mrr_tuned"],
        record["seconds"],
    )
    return record


@transaction.atomic
def _record_store(kb: KnowledgeBase, version: int, record: dict[str, Any], *, action: str) -> None:
    KnowledgeBaseVersion.objects.filter(knowledge_base=kb, number=version).update(search_tuning=record)
    audit_record(action=action, target=kb, after={k: v for k, v in record.items() if k != "grid"})
    # The search settings in force changed: the same event as any other settings change.
    publish_on_commit(
        KB_UPDATED,
        {"knowledge_base_id": kb.pk, "name": kb.name, "current_version": kb.current_version},
        subject=event_subject("knowledge_base", kb.pk, owner_id=kb.owner_id),
        topic=f"kb.{kb.pk}",
    )


# --- when to tune ----------------------------------------------------------------------------------------


def _scheduled_key(kb_id: int) -> str:
    return f"knowledge:tuning:{kb_id}:scheduled"  # the cache's key function adds the tenant's schema


def _running_key(kb_id: int) -> str:
    return f"knowledge:tuning:{kb_id}:running"


def tuning_schedule(*, knowledge_base_id: int, enqueue: Enqueue) -> bool:
    """After a document is published: queue one tuning SCHEDULE_DELAY_SECONDS from now, unless one is queued.

    Debounced in the cache: the documents of one upload finish one by one and must not tune N times. Never
    raises: ingestion has already succeeded, and a missed tuning is only a missed optimisation."""
    try:
        if not KnowledgeBase.objects.filter(pk=knowledge_base_id, auto_tune=True).exists():
            return False
        if not cache.add(_scheduled_key(knowledge_base_id), 1, timeout=SCHEDULE_DELAY_SECONDS * 10):
            return False
        enqueue(args=(knowledge_base_id,), countdown=SCHEDULE_DELAY_SECONDS)
    except Exception:  # noqa: BLE001 - see the docstring
        logger.warning("could not schedule the search tuning of knowledge base %s", knowledge_base_id, exc_info=True)
        return False
    return True


def tuning_run(*, knowledge_base_id: int, on_demand: bool, requested_by: int | None, enqueue: Enqueue) -> str:
    """The task's body. Automatic runs wait for ingestion to settle (every document ready or failed) by queueing
    themselves again, skip versions already tuned, and stop when the owner turned automatic tuning off."""
    if not on_demand:
        cache.delete(_scheduled_key(knowledge_base_id))
    kb = KnowledgeBase.objects.filter(pk=knowledge_base_id).first()
    if kb is None:
        cache.delete(_running_key(knowledge_base_id))
        return "gone"
    if not on_demand:
        if not kb.auto_tune:
            return "off"
        if kb.documents.filter(status__in=(DocumentStatus.PENDING, DocumentStatus.PROCESSING)).exists():
            tuning_schedule(knowledge_base_id=kb.pk, enqueue=enqueue)
            return "waiting"
        if kb.versions.filter(number=kb.current_version).exclude(search_tuning={}).exists():
            return "already tuned"
    cache.set(_running_key(kb.pk), 1, timeout=RUNNING_TTL_SECONDS)
    try:
        record = knowledge_base_tune(kb=kb, requested_by=requested_by)
    finally:
        cache.delete(_running_key(kb.pk))
    return str(record["status"])


# --- the owner's controls and what they see -----------------------------------------------------------------


def tuning_request(*, kb: KnowledgeBase, principal: Principal, enqueue: Enqueue) -> TuningView:
    """The owner asks for a tuning now: automatic tuning back on, the run queued after commit.
    The caller has checked the "edit" action (iam.policy)."""
    with transaction.atomic():
        KnowledgeBase.objects.filter(pk=kb.pk).update(auto_tune=True)
        kb.auto_tune = True
        audit_record(action="knowledge_base.search_tuning_request", target=kb, principal=principal)
        user_id = principal.user.pk if principal.user is not None else None
        transaction.on_commit(lambda: enqueue(args=(kb.pk,), kwargs={"on_demand": True, "requested_by": user_id}))
    cache.set(_running_key(kb.pk), 1, timeout=RUNNING_TTL_SECONDS)
    return tuning_status(kb=kb)


def tuning_reset(*, kb: KnowledgeBase, principal: Principal) -> TuningView:
    """Back to the defaults: a reset record on the current version (search stops using the tuned setting at
    once; past versions keep their records as history) and no automatic tuning until the owner asks again.
    The caller has checked the "edit" action (iam.policy)."""
    with transaction.atomic():
        locked = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
        locked.auto_tune = False
        locked.save(update_fields=["auto_tune", "updated_at"])
        record = {
            "status": TuningStatus.RESET,
            "settings": {},
            "version": locked.current_version,
            "requested_by": principal.user.pk if principal.user is not None else None,
            "tuned_at": timezone.now().isoformat(),
        }
        _record_store(locked, locked.current_version, record, action="knowledge_base.search_tuning_reset")
    kb.auto_tune = False
    return tuning_status(kb=locked)


def tuning_status(*, kb: KnowledgeBase) -> TuningView:
    record = (
        kb.versions.filter(number__lte=kb.current_version)
        .exclude(search_tuning={})
        .order_by("-number")
        .values_list("search_tuning", flat=True)
        .first()
    ) or {}
    try:
        running = bool(cache.get(_running_key(kb.pk)))
    except Exception:  # noqa: BLE001 - the flag is a courtesy; without the cache the page still shows the record
        running = False
    explicit = kb.search_settings or {}
    overridden = sorted(k for k in _changed_keys(record.get("settings") or {}) if explicit.get(k) is not None)
    return TuningView(auto_tune=kb.auto_tune, running=running, record=dict(record), overridden=overridden)
