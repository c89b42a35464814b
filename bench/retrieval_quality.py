"""Retrieval quality on five public Q/A sets: dense vs lexical vs the default hybrid, and the choice of the fusion
default by leave-one-corpus-out cross-validation.

    python scripts/devstack.py run bench/retrieval_quality.py [--quick] [--corpora=a,b] [--tuning-grid]

Data (committed under bench/data/<name>/, each with a SOURCE.md; rebuilt by bench/build_corpora.py and
bench/data/python_faq/build.py from Debian documentation packages):
- python_faq: Python FAQ questions against their answers (HOWTOs and the libpng manual as distractors);
- sed_faq: sed FAQ questions against their answers (the GNU sed and grep manuals as distractors);
- man_pages: a manual page's NAME description ("copy files and directories") against the rest of the page;
- python_code: a standard library function's docstring summary against its source code;
- x11_protocol: an X11 request, event or section name in words ("change window attributes") against its section.
Metrics are document-level: the ranked chunks (TOP_K) are collapsed to their documents (first occurrence) and
the question's answer document is looked for in the first 10 (MRR@10), 1 (R@1) and 5 (R@5) documents.

How: every question goes once through the real search() in dense and in lexical mode (DEPTH candidates each).
Their scores are completed over the union as search() completes them (cosine from the stored vectors; BM25 with
the product's formula, checked against search()'s own lexical scores), then every fusion setting of the grid is
replayed offline with the product's fusion code (retrieval._fuse). The DEFAULT row is measured through search()
itself, and its offline replay is checked against it (printed).

Cross-validation: for each corpus, the setting with the best worst-case margin over the better single leg
(MRR@10) on the other corpora is scored on the held-out corpus; once over fixed settings only (weighted, RRF),
once with adaptive fusion added. Noise: a paired bootstrap over the held-out questions (BOOTSTRAP resamples) of
MRR@10(setting) - MRR@10(better leg); a setting "loses" when the 95% interval lies entirely below 0.
Query preparation is not in the grid: both legs take the query as the product prepares it (whitespace
normalised; the lexical leg's 'english' text search configuration stems and drops stop words).

Per-knowledge-base tuning: on each corpus's knowledge base, knowledge.tuning makes its pseudo-queries from the
documents (never the questions), chooses a setting (tuning_evaluate), and the real questions are scored with the
defaults and with that setting (offline replay, paired bootstrap); --tuning-grid also prints every setting of
the tuning's grid with its MRR@10 on the pseudo-queries and on the real questions.

Also printed (not with --quick): the embedding throughput of the default model and the resident memory of a
worker process holding the model. The bench works in its own database (BENCH_DB_NAME, default
agentry_bench_retrieval) and its own tenant, deleted at the end; --corpora limits the run to some corpora.
Exit status 1 if the product default, or the cross-validated choice on a held-out corpus, loses to the better
single leg beyond that noise, or if a tuned setting loses to the defaults on a corpus's real questions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
from common import ROOT, bench_django_setup

CORPORA = ("python_faq", "sed_faq", "man_pages", "python_code", "x11_protocol")
DATA = ROOT / "bench" / "data"
CACHE_DIR = ROOT / "var" / "bench"
TOP_K = 40  # chunks per search, collapsed to documents
DEPTH = 100  # candidates per leg collected (search()'s maximum top_k); the grid's depths are at most this
BOOTSTRAP = 2000
FORMER_DEFAULT = {"fusion": "weighted", "dense_weight": 0.8, "lexical_weight": 0.2, "candidates": 50}
RSS_PROBE = r"""
import os, sys, time
sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
import django
django.setup()
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
before = rss()
from knowledge.embeddings import embedder_for_model
e = embedder_for_model("all-MiniLM-L6-v2")
loaded = rss()
e.embed(["a typical chunk of documentation text " * 30] * 64)
print(f"{before:.0f} {loaded:.0f} {rss():.0f}")
"""


@dataclass
class Question:
    gold: str  # the answer document's id
    dense: list[tuple[int, float]]  # search()'s dense leg: (chunk id, cosine), best first
    lexical: list[tuple[int, float]]  # search()'s lexical leg: (chunk id, BM25), best first
    dense_all: dict[int, float]  # cosine of every chunk of either list
    lexical_all: dict[int, float]  # BM25 of every chunk of either list holding a query term


@dataclass
class Corpus:
    name: str
    questions: list[Question]
    id_to_doc: dict[int, str]
    default_ranks: list[int | None]  # the answer document's rank through search() with the default settings
    default_ms: float  # per default search, query embeddings cached
    tuning: dict  # knowledge.tuning's choice on the corpus's own pseudo-queries (tuning_evaluate), with its figures


def load_data(name: str) -> tuple[list[dict], list[dict]]:
    docs = [json.loads(line) for line in (DATA / name / "corpus.jsonl").read_text().splitlines()]
    questions = [json.loads(line) for line in (DATA / name / "questions.jsonl").read_text().splitlines()]
    return docs, questions


def corpus_embeddings(name: str, texts: list[str]) -> tuple[np.ndarray, float | None]:
    """Embeddings of the corpus (cached in var/bench by content hash) and, if computed now, chunks/s."""
    from knowledge.embeddings import embedder_for_model

    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"{name}-minilm-{digest}.npy"
    if path.exists():
        return np.load(path), None
    embedder = embedder_for_model("all-MiniLM-L6-v2")
    embedder.embed(texts[:16])  # warm-up
    start = time.perf_counter()
    vectors = embedder.embed(texts)
    rate = len(texts) / (time.perf_counter() - start)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(vectors, dtype=np.float32))
    return np.asarray(vectors, dtype=np.float32), rate


def throughput(texts: list[str], n: int = 384) -> float:
    from knowledge.embeddings import embedder_for_model

    embedder = embedder_for_model("all-MiniLM-L6-v2")
    embedder.embed(texts[:16])
    sample = texts[:n]
    start = time.perf_counter()
    embedder.embed(sample)
    return len(sample) / (time.perf_counter() - start)


def worker_rss() -> tuple[float, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def doc_rank(ranked_chunk_ids: list[int], id_to_doc: dict[int, str], gold: str) -> int | None:
    """1-based rank of the gold document once chunks are collapsed to documents (None: not in the list)."""
    seen: set[str] = set()
    for cid in ranked_chunk_ids:
        doc = id_to_doc[cid]
        if doc == gold:
            return len(seen) + 1
        seen.add(doc)
    return None


def reciprocal_ranks(ranks: list[int | None]) -> np.ndarray:
    return np.array([1.0 / r if r is not None and r <= 10 else 0.0 for r in ranks])


def measures(ranks: list[int | None]) -> tuple[float, float, float]:
    """MRR@10, R@1, R@5."""
    n = len(ranks)
    return (
        float(reciprocal_ranks(ranks).mean()),
        sum(r == 1 for r in ranks) / n,
        sum(r is not None and r <= 5 for r in ranks) / n,
    )


def paired_bootstrap(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """mean(a - b) and its 95% percentile interval over BOOTSTRAP resamples of the questions."""
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(BOOTSTRAP, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# --- Collecting both legs through search() ------------------------------------------------------------------


@dataclass
class Bm25Index:
    """Term statistics of one knowledge base, read from the product's own tsvectors (Chunk.search_vector)."""

    tf: dict[int, dict[str, int]]
    length: dict[int, int]
    df: Counter
    n: int
    avgdl: float

    @classmethod
    def load(cls, cursor, table: str, kb_id: int) -> Bm25Index:
        tf: dict[int, dict[str, int]] = {}
        cursor.execute(
            f"SELECT c.id, u.lexeme, coalesce(array_length(u.positions, 1), 1) FROM {table} c, "  # noqa: S608
            "unnest(c.search_vector) u WHERE c.knowledge_base_id = %s AND c.valid_to IS NULL",
            [kb_id],
        )
        for cid, lexeme, count in cursor.fetchall():
            tf.setdefault(cid, {})[lexeme] = count
        cursor.execute(
            f"SELECT count(*), avg(length(search_vector)) FROM {table} "  # noqa: S608
            "WHERE knowledge_base_id = %s AND valid_to IS NULL",
            [kb_id],
        )
        n, avgdl = cursor.fetchone()
        df = Counter(lex for terms in tf.values() for lex in terms)
        return cls(tf, {cid: len(t) for cid, t in tf.items()}, df, int(n), max(float(avgdl), 1.0))

    def scores(self, lexemes: list[str], ids: set[int], k1: float, b: float) -> dict[int, float]:
        """Okapi BM25 with Lucene's IDF, as retrieval's lexical leg computes it (chunks without a term: absent)."""
        idf = {lex: math.log(1 + (self.n - self.df[lex] + 0.5) / (self.df[lex] + 0.5)) for lex in lexemes}
        out = {}
        for cid in ids:
            terms = self.tf.get(cid, {})
            norm = k1 * (1 - b + b * self.length.get(cid, 0) / self.avgdl)
            present = [lex for lex in lexemes if lex in terms and self.df[lex]]
            if present:
                out[cid] = sum(idf[lex] * terms[lex] * (k1 + 1) / (terms[lex] + norm) for lex in present)
        return out


def collect(name: str, kb, questions: list[dict], unit: np.ndarray, row_of: dict[int, int], id_to_doc) -> Corpus:
    from django.db import connection

    from knowledge import retrieval
    from knowledge.models import Chunk

    opts = retrieval.DEFAULT_SEARCH_SETTINGS
    k1, b = float(opts["bm25_k1"]), float(opts["bm25_b"])
    with connection.cursor() as cursor:
        index = Bm25Index.load(cursor, Chunk._meta.db_table, kb.pk)
    kb.search_settings = {}
    out: list[Question] = []
    worst_bm25 = worst_cos = 0.0
    for q in questions:
        dense_hits = retrieval.search(knowledge_base=kb, query=q["question"], top_k=DEPTH, mode="dense")
        lexical_hits = retrieval.search(knowledge_base=kb, query=q["question"], top_k=DEPTH, mode="lexical")
        vector = np.asarray(retrieval.query_embedding(kb.embedding_model, q["question"]), dtype=np.float64)
        vector /= np.linalg.norm(vector)
        ids = {h.chunk_id for h in dense_hits} | {h.chunk_id for h in lexical_hits}
        cosine = {i: float(unit[row_of[i]] @ vector) for i in ids}
        with connection.cursor() as cursor:
            lexemes = retrieval.query_lexemes(cursor, q["question"])
        bm25 = index.scores(lexemes, ids, k1, b)
        worst_cos = max([worst_cos] + [abs(cosine[h.chunk_id] - (h.dense_score or 0.0)) for h in dense_hits])
        worst_bm25 = max([worst_bm25] + [abs(bm25[h.chunk_id] - (h.lexical_score or 0.0)) for h in lexical_hits])
        out.append(
            Question(
                gold=q["doc_id"],
                dense=[(h.chunk_id, cosine[h.chunk_id]) for h in dense_hits],
                lexical=[(h.chunk_id, bm25[h.chunk_id]) for h in lexical_hits],
                dense_all=cosine,
                lexical_all=bm25,
            )
        )
    start = time.perf_counter()
    ranks = [
        doc_rank([h.chunk_id for h in retrieval.search(knowledge_base=kb, query=q["question"], top_k=TOP_K)],
                 id_to_doc, q["doc_id"])
        for q in questions
    ]  # fmt: skip
    ms = (time.perf_counter() - start) / len(questions) * 1000
    print(f"  {name}: replica of search()'s leg scores, max |diff|: cosine {worst_cos:.1e}, BM25 {worst_bm25:.1e}")
    corpus = Corpus(name, out, id_to_doc, ranks, ms, tune(kb))
    opts = {key: retrieval.DEFAULT_SEARCH_SETTINGS[key] for key in (*FORMER_DEFAULT, "rrf_k")}
    base, tuned = (reciprocal_ranks(replay(corpus, {**opts, **s})) for s in ({}, corpus.tuning["settings"]))
    print(f"  {name}: tuning chose {corpus.tuning['settings'] or 'the defaults'} "
          f"(pseudo MRR {corpus.tuning.get('mrr_default')} -> {corpus.tuning.get('mrr_tuned')}); "
          f"real questions MRR@10 {base.mean():.3f} -> {tuned.mean():.3f}")  # fmt: skip
    return corpus


def tune(kb) -> dict:
    """What per-knowledge-base tuning chooses for this corpus from its own documents (never its questions)."""
    from knowledge import tuning

    start = time.perf_counter()
    questions = tuning.pseudo_queries(kb)
    result = tuning.tuning_evaluate(kb, questions) if len(questions) >= tuning.MIN_QUESTIONS else {"settings": {}}
    kinds = Counter(q.kind for q in questions)
    seconds = time.perf_counter() - start
    print(f"  {kb.name}: tuned on {len(questions)} pseudo-queries in {seconds:.0f} s")
    return {**result, "questions": len(questions), "kinds": dict(kinds), "seconds": seconds}


# --- Replaying fusion settings offline ----------------------------------------------------------------------


def leg_ranks(corpus: Corpus, leg: str) -> list[int | None]:
    return [
        doc_rank([i for i, _ in (q.dense if leg == "dense" else q.lexical)[:TOP_K]], corpus.id_to_doc, q.gold)
        for q in corpus.questions
    ]


def replay(corpus: Corpus, setting: dict) -> list[int | None]:
    """The answer's rank for every question with this fusion setting, by the product's _fuse()."""
    from knowledge import retrieval

    opts = {**retrieval.DEFAULT_SEARCH_SETTINGS, **setting}
    depth = int(opts["candidates"])
    ranks = []
    for q in corpus.questions:
        dense, lexical = q.dense[:depth], q.lexical[:depth]
        ids = {i for i, _ in dense} | {i for i, _ in lexical}
        dense_scores = {i: q.dense_all[i] for i in ids}
        lexical_scores = {i: q.lexical_all[i] for i in ids if i in q.lexical_all}
        fused = retrieval._fuse("hybrid", opts, dense, lexical, dense_scores, lexical_scores)
        ranked = sorted(fused, key=lambda i: (-fused[i], i))[:TOP_K]
        ranks.append(doc_rank(ranked, corpus.id_to_doc, q.gold))
    return ranks


def label(setting: dict) -> str:
    fusion, depth = setting["fusion"], setting["candidates"]
    weights = f"{setting['dense_weight']:g}/{setting['lexical_weight']:g}"
    if fusion == "rrf":
        return f"rrf k={setting['rrf_k']} {weights} @{depth}"
    return f"{fusion} {weights} @{depth}"


def grid(adaptive: bool) -> list[dict]:
    settings: list[dict] = []
    for depth in (20, 50, 100):
        for w in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
            settings.append(
                {"fusion": "weighted", "dense_weight": w, "lexical_weight": round(1 - w, 2), "candidates": depth}
            )
        for k in (10, 60):
            for w in (0.5, 0.7):
                settings.append(
                    {"fusion": "rrf", "rrf_k": k, "dense_weight": w, "lexical_weight": round(1 - w, 2),
                     "candidates": depth}
                )  # fmt: skip
        if adaptive:
            for w in (0.5, 0.6, 0.7, 0.8):
                settings.append(
                    {"fusion": "adaptive", "dense_weight": w, "lexical_weight": round(1 - w, 2), "candidates": depth}
                )
    return settings


class Evaluation:
    """Per-question ranks of every (corpus, setting), computed once."""

    def __init__(self, corpora: list[Corpus]):
        self.corpora = {c.name: c for c in corpora}
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self.legs = {c.name: {leg: leg_ranks(c, leg) for leg in ("dense", "lexical")} for c in corpora}

    def rr(self, corpus: str, setting: dict) -> np.ndarray:
        key = (corpus, label(setting))
        if key not in self._cache:
            self._cache[key] = reciprocal_ranks(replay(self.corpora[corpus], setting))
        return self._cache[key]

    def best_leg(self, corpus: str) -> tuple[str, np.ndarray]:
        legs = {leg: reciprocal_ranks(r) for leg, r in self.legs[corpus].items()}
        leg = max(legs, key=lambda k: legs[k].mean())
        return leg, legs[leg]

    def choose(self, corpora: list[str], settings: list[dict]) -> dict:
        """The setting with the best worst-case MRR@10 margin over the better leg on these corpora (then mean)."""

        def key(setting: dict) -> tuple[float, float]:
            margins = [self.rr(c, setting).mean() - self.best_leg(c)[1].mean() for c in corpora]
            return min(margins), float(np.mean([self.rr(c, setting).mean() for c in corpora]))

        return max(settings, key=key)


def print_cv(evaluation: Evaluation, settings: list[dict], title: str) -> bool:
    """Leave one corpus out: choose on the others, score the held-out one. True if none loses beyond noise."""
    names = list(evaluation.corpora)
    print(f"\nleave-one-corpus-out, {title} ({len(settings)} settings): MRR@10 on the held-out corpus")
    print(f"{'held out':14} {'chosen on the other corpora':28} {'MRR@10':>7} {'better leg':>16} "
          f"{'diff [95% CI]':>24}  verdict")  # fmt: skip
    ok = True
    for held in names:
        chosen = evaluation.choose([n for n in names if n != held], settings)
        rr = evaluation.rr(held, chosen)
        leg, leg_rr = evaluation.best_leg(held)
        diff, lo, hi = paired_bootstrap(rr, leg_rr)
        verdict = "LOSES" if hi < 0 else (">= leg" if diff >= 0 else "within noise")
        ok = ok and hi >= 0
        print(f"{held:14} {label(chosen):28} {rr.mean():7.3f} {leg:>8} {leg_rr.mean():7.3f} "
              f"{diff:+8.3f} [{lo:+.3f}, {hi:+.3f}]  {verdict}")  # fmt: skip
    return ok


def load_corpus(name: str, owner) -> Corpus:
    """Load one set into a knowledge base of the current tenant (pre-chunked, cached embeddings), collect it."""
    from django.db import connection

    from knowledge.models import Chunk, Document, KnowledgeBase

    docs, questions = load_data(name)
    texts = [c for d in docs for c in d["chunks"]]
    vectors, rate = corpus_embeddings(name, texts)
    print(
        f"  {name}: {len(docs)} documents, {len(texts)} chunks, {len(questions)} questions"
        + (f" (embedded now: {rate:.0f} chunks/s)" if rate else "")
    )
    kb = KnowledgeBase.objects.create(owner=owner, name=name, current_version=1)
    doc_rows = Document.objects.bulk_create(
        [
            Document(
                knowledge_base=kb,
                title=d["title"],
                source_type="text",
                status="ready",
                metadata={"bench_id": d["id"], "kind": d["kind"]},
            )
            for d in docs
        ]
    )
    chunks, k = [], 0
    for d, row in zip(docs, doc_rows, strict=True):
        for pos, text in enumerate(d["chunks"]):
            chunks.append(
                Chunk(
                    knowledge_base=kb,
                    document=row,
                    position=pos,
                    text=text,
                    content_hash=str(k),
                    embedding=vectors[k].tolist(),
                    embedding_dimension=384,
                    valid_from=1,
                )
            )
            k += 1
    created = Chunk.objects.bulk_create(chunks, batch_size=500)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE knowledge_chunk")
    id_to_doc = dict(Chunk.objects.filter(knowledge_base=kb).values_list("pk", "document__metadata__bench_id"))
    unit = vectors.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return collect(name, kb, questions, unit, {c.pk: n for n, c in enumerate(created)}, id_to_doc)


def print_modes(evaluation: Evaluation, default: dict) -> bool:
    """Per corpus and mode. True if the product default (through search()) never loses beyond noise."""
    print(f"\n{'corpus':14} {'mode':38} {'MRR@10':>7} {'R@1':>6} {'R@5':>6}   vs better leg: MRR@10 diff [95% CI]")
    ok = True
    for name, corpus in evaluation.corpora.items():
        leg, leg_rr = evaluation.best_leg(name)
        rows: list[tuple[str, list[int | None]]] = [
            ("dense (all-MiniLM-L6-v2)", evaluation.legs[name]["dense"]),
            ("lexical (BM25)", evaluation.legs[name]["lexical"]),
            (f"former default: {label(FORMER_DEFAULT)}", replay(corpus, FORMER_DEFAULT)),
            (f"DEFAULT: {label(default)}", corpus.default_ranks),
        ]
        for mode, ranks in rows:
            mrr, r1, r5 = measures(ranks)
            line = f"{name:14} {mode:38} {mrr:7.3f} {r1:6.3f} {r5:6.3f}"
            if not mode.startswith(("dense", "lexical")):
                diff, lo, hi = paired_bootstrap(reciprocal_ranks(ranks), leg_rr)
                line += f"   {leg:>7}: {diff:+.3f} [{lo:+.3f}, {hi:+.3f}]" + ("  LOSES" if hi < 0 else "")
                if mode.startswith("DEFAULT"):
                    ok = ok and hi >= 0
            print(line)
        agree = sum(a == b for a, b in zip(replay(corpus, default), corpus.default_ranks, strict=True))
        print(f"{'':14} offline replay of the default = search() on {agree}/{len(corpus.default_ranks)} questions; "
              f"{corpus.default_ms:.1f} ms per default search")  # fmt: skip
    return ok


def print_tuning(evaluation: Evaluation, default: dict) -> bool:
    """Per corpus: the real questions with the defaults and with the setting the tuning chose on the corpus's own
    pseudo-queries (held-out headings, titles and sentences). True if no tuned setting loses beyond noise."""
    print("\nper-knowledge-base tuning (knowledge.tuning) on each corpus's own documents; real questions, MRR@10:")
    print(f"{'corpus':14} {'pseudo-queries':22} {'pseudo MRR dflt->tuned':>22}  {'chosen':34} "
          f"{'real dflt':>9} {'tuned':>6}  diff [95% CI]")  # fmt: skip
    ok = True
    for name in evaluation.corpora:
        result = evaluation.corpora[name].tuning
        setting = {**default, **result["settings"]}
        base, tuned = evaluation.rr(name, default), evaluation.rr(name, setting)
        diff, lo, hi = paired_bootstrap(tuned, base)
        ok = ok and hi >= 0
        kinds = "/".join(f"{result['kinds'].get(k, 0)}" for k in ("heading", "title", "sentence"))
        pseudo = (f"{result['mrr_default']:.3f} -> {result['mrr_tuned']:.3f}" if "mrr_default" in result
                  else "too few")  # fmt: skip
        chosen = label(setting) if result["settings"] else "defaults"
        print(f"{name:14} {result['questions']:4} (h/t/s {kinds:11}) {pseudo:>22}  {chosen:34} "
              f"{base.mean():9.3f} {tuned.mean():6.3f}  {diff:+.3f} [{lo:+.3f}, {hi:+.3f}]"
              + ("  LOSES" if hi < 0 else ""))  # fmt: skip
    print(f"{'':14} (tuning time per corpus: "
          + ", ".join(f"{c.tuning['seconds']:.0f} s" for c in evaluation.corpora.values()) + ")")  # fmt: skip
    if "--tuning-grid" in sys.argv:
        print("\nthe tuning grid per corpus: MRR@10 on pseudo-queries / on real questions")
        for name, corpus in evaluation.corpora.items():
            for row in corpus.tuning.get("grid", []):
                setting = {**default, **row["settings"]}
                print(f"  {name:14} {label(setting):34} {row['mrr']:.3f} / {evaluation.rr(name, setting).mean():.3f}")
    return ok


def main() -> int:
    quick = "--quick" in sys.argv
    names = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--corpora=")]
    names = names[0].split(",") if names else list(CORPORA)
    # Our own Redis database for the query-embedding and BM25-statistics caches (test runs flush theirs).
    redis_base = os.environ["REDIS_URL"].rsplit("/", 1)[0]
    os.environ.setdefault("TEST_REDIS_URL", f"{redis_base}/3")
    bench_django_setup(os.environ.get("BENCH_DB_NAME", "agentry_bench_retrieval"))
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from knowledge import retrieval
    from tenants.services import tenant_create, tenant_delete

    owner, _ = User.objects.get_or_create(email="bench-retrieval@bench.test")
    slug = f"bench-rq-{uuid.uuid4().hex[:8]}"
    tenant = tenant_create(name=slug, slug=slug, owner=owner)
    print("data (bench/data):")
    try:
        with tenant_context(tenant):
            corpora = [load_corpus(name, owner) for name in names]
    finally:
        tenant_delete(tenant=tenant)

    evaluation = Evaluation(corpora)
    default = {k: retrieval.DEFAULT_SEARCH_SETTINGS[k] for k in FORMER_DEFAULT} | {
        "rrf_k": retrieval.DEFAULT_SEARCH_SETTINGS["rrf_k"]
    }
    ok = print_modes(evaluation, default)
    ok = print_tuning(evaluation, default) and ok
    if len(evaluation.corpora) > 1:  # cross-validation needs corpora to choose on (--corpora may give one)
        ok = print_cv(evaluation, grid(adaptive=False), "fixed settings only") and ok
        ok = print_cv(evaluation, grid(adaptive=True), "fixed and adaptive settings") and ok
    chosen = evaluation.choose(list(evaluation.corpora), grid(adaptive=True))
    print(f"\nchosen on all corpora (the product default should be this): {label(chosen)}; "
          f"product default: {label(default)}")  # fmt: skip
    if quick:
        return 0 if ok else 1

    texts = [c for d in load_data("python_faq")[0] for c in d["chunks"]]
    rate = throughput(texts)
    before, loaded, after = worker_rss()
    import torch

    print(
        f"\nembedding throughput (all-MiniLM-L6-v2, CPU, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} cores): {rate:.1f} chunks/s on {min(384, len(texts))} python_faq chunks"
    )
    print(
        f"worker RSS: {before:.0f} MiB with Django, {loaded:.0f} MiB with the model loaded, "
        f"{after:.0f} MiB after embedding a batch of 64"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
