"""Per-knowledge-base search tuning: the fusion setting that ranks this knowledge base's own passages best.

    record = knowledge_base_tune(kb=kb)          # measure on the current version, store the record there
    status = tuning_status(kb=kb)                # what the settings page and GET .../tuning/ show
    tuning_request(kb=kb, principal=p, enqueue=...)   # the owner asks for a (re-)tuning
    tuning_reset(kb=kb, principal=p)             # back to the defaults, automatic tuning off

Why: fusion weights chosen on one corpus do not carry over to another (on a public FAQ the default hybrid ranked
below the dense leg alone). A knowledge base carries labelled data of its own: a heading names what its section
says, a title what its document says, and a sentence belongs to the passage it was taken from. From these we make
up to MAX_QUESTIONS pseudo-queries (deterministic: the same content gives the same questions; a heading or title
whose words name places in two documents is dropped, so "Report, part 2" and "Report, part 3" ask nothing).

Held out: a pseudo-query shares its words with its target verbatim (a heading heads every chunk of its section,
a sentence is in its chunk), which made the lexical leg look better than it is on real questions (on the Python
FAQ set a tuning on such questions lowered MRR on the real ones from 0.84 to 0.74). So every target is scored
as if it did not hold the question: its section body without the heading line, its passage without the sentence
(the dense leg on a fresh embedding of that text, the lexical leg by the same BM25 as retrieval's).

How: each question goes once through the real search() (each leg's best MAX_TOP_K with both scores), its targets
are re-scored on their held-out text, and every setting of a small grid is replayed with retrieval's own fusion
over those candidates; passage-level MRR@10, each kind of question weighing the same (kind_weights). The best
setting replaces the defaults only when its gain is at least MIN_GAIN and above its bootstrap noise
(setting_choose); otherwise the defaults stay. The record (setting, number of questions, MRR with the defaults
and with the setting, when) is stored on the version it was measured on; retrieval.search_settings_for()
applies the newest record beneath the owner's explicit search_settings.

Checked against real questions (bench/retrieval_quality.py): per corpus, the real questions' MRR with the
defaults and with the setting tuned on that corpus's own documents.

Cost: one search per question, one embedding batch for the held-out targets, one scan of the version's term
statistics; the grid itself is arithmetic.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from core.audit import audit_record
from core.events import KB_UPDATED, event_subject, publish_on_commit
from iam.policy import Principal

from . import retrieval
from .embeddings import embedder_for_model
from .models import Chunk, Document, DocumentStatus, KnowledgeBase, KnowledgeBaseVersion

logger = logging.getLogger(__name__)

MAX_QUESTIONS = 150
MIN_QUESTIONS = 20  # fewer and one question moves MRR by 0.05: not worth changing anything for
STRUCTURE_SHARE = 2 / 3  # of MAX_QUESTIONS at most for headings and titles; sentences fill the rest
TOP = 10  # MRR@10
MIN_GAIN = 0.01  # MRR a tuned setting must gain over the defaults, at least, and beyond its bootstrap noise
BOOTSTRAP = 1000  # resamples of the questions
# Keys a tuning may set; all other search settings stay the owner's or the defaults.
FUSION_KEYS = ("fusion", "dense_weight", "lexical_weight", "rrf_k", "candidates")
DENSE_WEIGHTS = (1.0, 0.9, 0.65, 0.5, 0.3)  # weighted fusion; 1.0 ranks by the dense leg alone
ADAPTIVE_DENSE_WEIGHTS = (0.9, 0.65, 0.5)  # adaptive fusion, besides the default's base weights
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
    # Words only: "Python FAQ, entry 2" and "Python FAQ, entry 3" say the same to a search, so name no one place.
    return " ".join(_WORD.findall(text.lower()))


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

    # Headings and titles: a text whose words name places in two documents is ambiguous, so it is dropped.
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

    # Held-out sentences: sample passages by content hash, one sentence each, against that passage and a
    # neighbour repeating it (chunks cut for size repeat sentences of the previous one).
    neighbours: dict[int, list[int]] = {}
    for ordered in by_document.values():
        for i, chunk_id in enumerate(ordered):
            neighbours[chunk_id] = ordered[max(i - 1, 0) : i + 2]
    n_structural = min(len(structural), int(limit * STRUCTURE_SHARE))
    wanted = limit - n_structural
    sampled = sorted(rows, key=lambda row: _rank_key(kb, row[3]))[: wanted * 2]
    near = {i for row in sampled for i in neighbours[row[0]]}
    texts = dict(Chunk.objects.filter(id__in=near).values_list("id", "text"))
    sentences: list[PseudoQuery] = []
    seen = set(named)
    for chunk_id, _, section_path, _ in sampled:
        if len(sentences) >= wanted:
            break
        sentence = _held_out_sentence(kb, texts.get(chunk_id, ""), " > ".join(section_path or []))
        if sentence and _normalised(sentence) not in seen:
            seen.add(_normalised(sentence))
            targets = frozenset(i for i in neighbours[chunk_id] if sentence in texts.get(i, ""))
            sentences.append(PseudoQuery(sentence, "sentence", targets))
    n_structural = min(len(structural), limit - len(sentences))
    return structural[:n_structural] + sentences


# --- measuring and choosing ------------------------------------------------------------------------------


def tuning_grid() -> list[dict[str, Any]]:
    """The settings tried, the defaults first: weighted fusion over a range of dense weights, RRF, and adaptive
    fusion from other base weights."""
    default = {key: retrieval.DEFAULT_SEARCH_SETTINGS[key] for key in FUSION_KEYS}
    grid = [default]
    for weight in DENSE_WEIGHTS:
        grid.append({**default, "fusion": "weighted", "dense_weight": weight, "lexical_weight": round(1 - weight, 2)})
    grid.append({**default, "fusion": "rrf", "dense_weight": 1.0, "lexical_weight": 1.0})
    for weight in ADAPTIVE_DENSE_WEIGHTS:  # per-query weights from the legs' confidence
        grid.append({**default, "fusion": "adaptive", "dense_weight": weight, "lexical_weight": round(1 - weight, 2)})
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


def kind_weights(questions: list[PseudoQuery]) -> list[float]:
    """Each kind of question (heading, title, sentence) weighs as much as the others together, whatever their
    numbers: a knowledge base with few headings is not tuned on its sentences alone, nor the reverse."""
    counts = Counter(q.kind for q in questions)
    return [1.0 / (counts[q.kind] * len(counts)) for q in questions]


def _weighted_mean(values: list[float], weights: list[float]) -> float:
    return sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)


def setting_choose(
    default: list[float], candidates: list[list[float]], weights: list[float] | None = None
) -> int | None:
    """Index of the candidate to use instead of the defaults, or None to keep them (shrinking to the defaults).

    Per-question reciprocal ranks, paired, each question with its weight (kind_weights): the best candidate wins
    only if its mean gain is at least MIN_GAIN and the lower end of the 95% interval of that gain over BOOTSTRAP
    resamples of the questions is above 0 (the best of several noisy candidates looks better than it is; a gain
    that a few lucky questions make keeps the defaults). The first of equally good candidates wins."""
    if not default or not candidates:
        return None
    weights = weights or [1.0] * len(default)
    best = max(range(len(candidates)), key=lambda i: (_weighted_mean(candidates[i], weights), -i))
    diffs = [c - d for c, d in zip(candidates[best], default, strict=True)]
    if _weighted_mean(diffs, weights) < MIN_GAIN:
        return None
    rng = random.Random(0)  # noqa: S311 - resampling, not secrecy; seeded so the same ranks give the same choice
    resampled = []
    for _ in range(BOOTSTRAP):
        sample = rng.choices(range(len(diffs)), k=len(diffs))
        resampled.append(sum(weights[i] * diffs[i] for i in sample) / sum(weights[i] for i in sample))
    resampled.sort()
    return best if resampled[int(0.025 * BOOTSTRAP)] > 0 else None


# --- measuring: one search per question, its targets scored without the question's words, the grid replayed


@dataclass
class _Observed:
    """One question's candidates: each leg's, best first, and both scores of every candidate, with its
    targets scored on their held-out text."""

    dense: list[int]
    lexical: list[int]
    cosine: dict[int, float]
    bm25: dict[int, float]  # only candidates holding a query term


@dataclass(frozen=True)
class _Bm25:
    """Okapi BM25 as retrieval's lexical leg computes it (Lucene's IDF, the tsvector's length as the passage's),
    for passages that are not stored: the targets without their held-out text."""

    n: int
    avgdl: float
    df: dict[str, int]
    k1: float
    b: float

    def score(self, query: dict[str, int], passage: dict[str, int]) -> float | None:
        present = [lex for lex in query if self.df.get(lex) and passage.get(lex)]
        if not present:
            return None
        norm = self.k1 * (1 - self.b + self.b * len(passage) / self.avgdl)
        return sum(
            math.log(1 + (self.n - self.df[lex] + 0.5) / (self.df[lex] + 0.5))
            * passage[lex]
            * (self.k1 + 1)
            / (passage[lex] + norm)
            for lex in present
        )


def bm25_statistics(kb: KnowledgeBase, lexemes: set[str]) -> _Bm25:
    """The current version's N, average length and the document frequencies of these lexemes (one scan)."""
    opts = retrieval.search_settings_for(kb)
    table = Chunk._meta.db_table
    scope = "c.knowledge_base_id = %s AND c.valid_to IS NULL"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), coalesce(avg(length(c.search_vector)), 0) FROM {table} c WHERE {scope}",  # noqa: S608
            [kb.pk],
        )
        n, avgdl = cursor.fetchone()
        cursor.execute(
            f"SELECT u.lexeme, count(*) FROM {table} c, unnest(c.search_vector) u "  # noqa: S608
            f"WHERE {scope} AND u.lexeme = ANY(%s) GROUP BY u.lexeme",
            [kb.pk, sorted(lexemes)],
        )
        df = {lexeme: int(count) for lexeme, count in cursor.fetchall()}
    return _Bm25(int(n), max(float(avgdl), 1.0), df, float(opts["bm25_k1"]), float(opts["bm25_b"]))


def term_frequencies(texts: list[str]) -> list[dict[str, int]]:
    """Each text's lexemes and their counts, with Chunk.search_vector's configuration ('english')."""
    out: list[dict[str, int]] = [{} for _ in texts]
    if texts:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT t.i, u.lexeme, coalesce(array_length(u.positions, 1), 1) "
                "FROM unnest(%s::text[]) WITH ORDINALITY t(body, i), unnest(to_tsvector('english', t.body)) u",
                [texts],
            )
            for i, lexeme, count in cursor.fetchall():
                out[i - 1][lexeme] = int(count)
    return out


def held_out_text(question: PseudoQuery, text: str, section_path: list[str]) -> str:
    """A target passage as the question must find it: without the question's own words. A sentence leaves the
    passage it was taken from (and a neighbour repeating it); a heading or title leaves the heading line that
    starts every passage of a section (knowledge.chunking), so a passage is found by what its body says."""
    if question.kind == "sentence":
        return " ".join(text.replace(question.text, " ").split())
    heading = " > ".join(section_path)
    if heading and text.startswith(heading):
        return text[len(heading) :].strip()
    return text


def _observe(kb: KnowledgeBase, questions: list[PseudoQuery]) -> list[_Observed]:
    """Each question's candidates through the real search(), its targets re-scored on their held-out text."""
    explicit = {k: v for k, v in (kb.search_settings or {}).items() if k not in FUSION_KEYS and k != "mode"}
    probe = copy.copy(kb)  # never saved: search() reads its settings from the instance
    # Each leg's MAX_TOP_K best with both scores (fused with equal weights, so the union's best of both legs
    # come back); no reranker: the grid is about fusion.
    probe.search_settings = {
        **explicit,
        "fusion": "weighted",
        "dense_weight": 0.5,
        "lexical_weight": 0.5,
        "candidates": retrieval.MAX_TOP_K,
        "reranker": "none",
    }
    searched = [
        retrieval.search(knowledge_base=probe, query=q.text, top_k=retrieval.MAX_TOP_K, mode="hybrid")
        for q in questions
    ]
    edits: list[tuple[int, int, str]] = []  # (question, target, held-out text)
    for qi, (question, hits) in enumerate(zip(questions, searched, strict=True)):
        for hit in hits:
            if hit.chunk_id in question.targets:
                text = held_out_text(question, hit.text, hit.section_path)
                if text != hit.text:
                    edits.append((qi, hit.chunk_id, text))
    texts = [text for _, _, text in edits]
    vectors = embedder_for_model(kb.embedding_model).embed(texts) if texts else []
    terms = term_frequencies([q.text for q in questions] + texts)
    query_terms, edit_terms = terms[: len(questions)], terms[len(questions) :]
    bm25 = bm25_statistics(kb, {lex for query in query_terms for lex in query})

    observed = []
    for hits in searched:
        dense = sorted((h for h in hits if h.dense_rank is not None), key=lambda h: h.dense_rank or 0)
        lexical = sorted((h for h in hits if h.lexical_rank is not None), key=lambda h: h.lexical_rank or 0)
        observed.append(
            _Observed(
                dense=[h.chunk_id for h in dense],
                lexical=[h.chunk_id for h in lexical],
                cosine={h.chunk_id: h.dense_score or 0.0 for h in hits},
                bm25={h.chunk_id: h.lexical_score for h in hits if h.lexical_score is not None},
            )
        )
    for (qi, chunk_id, _), vector, passage in zip(edits, vectors, edit_terms, strict=True):
        seen = observed[qi]
        query_vector = retrieval.query_embedding(kb.embedding_model, questions[qi].text)  # cached by the search
        seen.cosine[chunk_id] = sum(a * b for a, b in zip(query_vector, vector, strict=True))
        score = bm25.score(query_terms[qi], passage)
        if score is None:
            seen.bm25.pop(chunk_id, None)
            seen.lexical = [i for i in seen.lexical if i != chunk_id]
        else:
            seen.bm25[chunk_id] = score
    for seen in observed:  # held-out targets move down their legs (ties keep the search's order)
        order = {i: n for n, i in enumerate(seen.dense)}
        seen.dense.sort(key=lambda i: (-seen.cosine[i], order[i]))
        order = {i: n for n, i in enumerate(seen.lexical)}
        seen.lexical.sort(key=lambda i: (-seen.bm25[i], order[i]))
    return observed


def replay_ranking(observed: _Observed, setting: dict[str, Any]) -> list[int]:
    """The TOP chunks search() would rank with this setting, by retrieval's own fusion over the candidates."""
    opts = {**retrieval.DEFAULT_SEARCH_SETTINGS, **setting}
    depth = int(opts["candidates"])
    dense = [(i, observed.cosine[i]) for i in observed.dense[:depth]]
    lexical = [(i, observed.bm25[i]) for i in observed.lexical[:depth]]
    ids = {i for i, _ in dense} | {i for i, _ in lexical}
    dense_scores = {i: observed.cosine[i] for i in ids}
    lexical_scores = {i: observed.bm25[i] for i in ids if i in observed.bm25}
    fused = retrieval._fuse("hybrid", opts, dense, lexical, dense_scores, lexical_scores)
    return sorted(fused, key=lambda i: (-fused[i], i))[:TOP]


def tuning_measure(kb: KnowledgeBase, questions: list[PseudoQuery], grid: list[dict[str, Any]]) -> list[list[float]]:
    """Reciprocal ranks [setting][question] of the held-out targets, each setting over the owner's settings."""
    explicit = {k: v for k, v in (kb.search_settings or {}).items() if k not in FUSION_KEYS and k != "mode"}
    observed = _observe(kb, questions)
    return [
        [
            reciprocal_rank(replay_ranking(seen, {**explicit, **setting}), q.targets)
            for seen, q in zip(observed, questions, strict=True)
        ]
        for setting in grid
    ]


def tuning_evaluate(kb: KnowledgeBase, questions: list[PseudoQuery]) -> dict[str, Any]:
    """The grid measured on these questions and the choice: status, settings, mrr_default, mrr_tuned, grid."""
    grid = tuning_grid()
    weights = kind_weights(questions)
    ranks = tuning_measure(kb, questions, grid)
    chosen = setting_choose(ranks[0], ranks[1:], weights)
    mrr = [round(_weighted_mean(r, weights), 4) for r in ranks]
    return {
        "status": TuningStatus.TUNED if chosen is not None else TuningStatus.DEFAULT,
        "settings": grid[chosen + 1] if chosen is not None else {},
        "mrr_default": mrr[0],
        "mrr_tuned": mrr[chosen + 1] if chosen is not None else mrr[0],
        "grid": [{"settings": _changed_keys(s), "mrr": m} for s, m in zip(grid, mrr, strict=True)],
    }


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
        record.update(tuning_evaluate(kb, questions))
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
