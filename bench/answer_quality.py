"""Answer quality of the built-in offline provider: does its answer contain the sentence that answers the question?

    .venv/bin/python bench/answer_quality.py [--verbose]

Corpora (bench/data/answer_quality/*.json hold the hand-written questions and gold answer sentences):
  licenses    the Apache 2.0, MPL 2.0 and GPL 3 texts of /usr/share/common-licenses, hard-wrapped plain text,
              extracted and chunked by the product's own code (knowledge.extraction, knowledge.chunking, 256/32)
  python_faq  the Python FAQ answers among HOWTO and libpng distractors (bench/data/python_faq, pre-chunked)

For each question the passages are the top 5 chunks by cosine similarity with the default embedding model (the
dense leg of the product's retrieval, in memory: no database needed). Both answer functions see the same passages:
  before  the previous selection (term overlap, copied below as `baseline_answer`)
  after   agents.providers.extractive.extract_answer (what the offline provider runs now)
A hit is an answer containing the gold sentence (compared lower-cased, punctuation and whitespace ignored).
"retrievable" is how often the gold sentence is in the 5 passages at all: the ceiling for both. Off-topic
questions (no answer in the corpus) count as right when the answer says that nothing relevant was found.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = ROOT / "bench" / "data" / "answer_quality"
LICENSES = Path("/usr/share/common-licenses")
CACHE_DIR = ROOT / "var" / "bench"
TOP_K = 5


# --- the previous selection, kept verbatim for the comparison ---------------------------------------------------

BASELINE_NOTHING = "I could not find anything relevant to your question in the knowledge base."
_B_WORD = re.compile(r"[a-z0-9]+")
_B_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_B_STOP = frozenset(
    "a an and are as at be but by can do does for from has have how i in is it its me my of on or our so that the "
    "their them then there these they this to was we were what when where which who why will with you your".split()
)


def _b_terms(text: str) -> set[str]:
    return {w for w in _B_WORD.findall(text.lower()) if w not in _B_STOP and len(w) > 1}


def baseline_answer(question: str, passages: list[dict], *, max_sentences: int = 3) -> str:
    wanted = _b_terms(question)
    scored: list[tuple[float, int, int, str]] = []
    for index, passage in enumerate(passages):
        marker = passage.get("n", index + 1)
        for order, sentence in enumerate(_B_SENTENCE.split(str(passage.get("text", "")).strip())):
            overlap = wanted & _b_terms(sentence)
            if sentence and overlap:
                scored.append((len(overlap) / (len(wanted) or 1), -index * 1000 - order, marker, sentence.strip()))
    if not scored:
        return BASELINE_NOTHING
    best = sorted(scored, reverse=True)[:max_sentences]
    best.sort(key=lambda item: -item[1])  # back to document order
    return " ".join(f"{sentence} [{marker}]" for _, _, marker, sentence in best)


# --- corpora ----------------------------------------------------------------------------------------------------


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def license_chunks(files: dict[str, str]) -> tuple[list[str], list[str]]:
    """The chunks of each licence file and the title of the document each came from."""
    from knowledge.chunking import chunk_blocks
    from knowledge.extraction import extract

    chunks: list[str] = []
    titles: list[str] = []
    for name, title in files.items():
        extracted = extract(io.BytesIO((LICENSES / name).read_bytes()), "text")
        pieces = [piece.text for piece in chunk_blocks(extracted.blocks, chunk_size=256, overlap=32)]
        chunks.extend(pieces)
        titles.extend([title] * len(pieces))
    return chunks, titles


def python_faq_chunks() -> tuple[list[str], list[str]]:
    lines = (ROOT / "bench" / "data" / "python_faq" / "corpus.jsonl").read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    return [c for d in docs for c in d["chunks"]], [d["title"] for d in docs for _ in d["chunks"]]


def embedded(texts: list[str], tag: str):
    """Embeddings of the chunks, cached in var/bench by content hash (the model is deterministic)."""
    import numpy as np

    from knowledge.embeddings import DEFAULT_MODEL, embedder_for_model

    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"{tag}-minilm-{digest}.npy"  # the same file bench/retrieval_quality.py caches python_faq in
    if path.exists():
        return np.load(path)
    vectors = np.asarray(embedder_for_model(DEFAULT_MODEL).embed(texts), dtype=np.float32)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def evaluate(name: str, corpus: tuple[list[str], list[str]], spec: dict, *, verbose: bool) -> dict:
    import numpy as np

    from agents.providers.extractive import NOTHING_FOUND, extract_answer
    from knowledge.embeddings import DEFAULT_MODEL, embedder_for_model

    chunks, titles = corpus
    embedder = embedder_for_model(DEFAULT_MODEL)
    matrix = embedded(chunks, name)

    def passages_for(question: str) -> list[dict]:
        query = np.asarray(embedder.embed([question])[0], dtype=np.float32)
        top = np.argsort(-(matrix @ query))[:TOP_K]
        return [
            {"n": i + 1, "text": chunks[int(index)], "document_title": titles[int(index)]}
            for i, index in enumerate(top)
        ]

    figures = {"questions": 0, "retrievable": 0, "before": 0, "after": 0, "after_nothing": 0}
    lengths = {"before": 0, "after": 0}
    seconds = 0.0
    for item in spec["questions"]:
        gold = _normalised(item["answer"])
        passages = passages_for(item["question"])
        before = baseline_answer(item["question"], passages)
        started = time.perf_counter()
        after = extract_answer(item["question"], passages)
        seconds += time.perf_counter() - started
        figures["questions"] += 1
        figures["retrievable"] += gold in _normalised(" ".join(p["text"] for p in passages))
        figures["before"] += gold in _normalised(before)
        figures["after"] += gold in _normalised(after.text)
        figures["after_nothing"] += after.text == NOTHING_FOUND
        lengths["before"] += len(before)
        lengths["after"] += len(after.text)
        if verbose and gold not in _normalised(after.text):
            print(f"  MISS {item['question']}\n    after:  {after.text[:300]}\n    before: {before[:300]}")
    refused = {"before": 0, "after": 0}
    for question in spec.get("off_topic", []):
        passages = passages_for(question)
        refused["before"] += baseline_answer(question, passages) == BASELINE_NOTHING
        refused["after"] += extract_answer(question, passages).text == NOTHING_FOUND
    n = figures["questions"]
    return {
        "corpus": name,
        "chunks": len(chunks),
        **figures,
        "off_topic": len(spec.get("off_topic", [])),
        "off_topic_refused_before": refused["before"],
        "off_topic_refused_after": refused["after"],
        "mean_chars_before": lengths["before"] // max(n, 1),
        "mean_chars_after": lengths["after"] // max(n, 1),
        "ms_per_answer_after": round(1000 * seconds / max(n, 1), 1),
    }


def main() -> int:
    import django

    django.setup()
    verbose = "--verbose" in sys.argv
    licenses = json.loads((DATA / "licenses.json").read_text())
    faq = json.loads((DATA / "python_faq.json").read_text())
    results = [
        evaluate("licenses", license_chunks(licenses["files"]), licenses, verbose=verbose),
        evaluate("python_faq", python_faq_chunks(), faq, verbose=verbose),
    ]
    print(
        f"{'corpus':<11} {'chunks':>6} {'qs':>3} {'retrievable':>11} {'before':>7} {'after':>7} "
        f"{'no-answer':>9} {'off-topic refused b/a':>21} {'chars b/a':>10} {'ms':>6}"
    )
    total = {"questions": 0, "retrievable": 0, "before": 0, "after": 0}
    for r in results:
        n = r["questions"]
        for key in total:
            total[key] += r[key]
        print(
            f"{r['corpus']:<11} {r['chunks']:>6} {n:>3} {r['retrievable'] / n:>11.0%} {r['before'] / n:>7.0%} "
            f"{r['after'] / n:>7.0%} {r['after_nothing']:>9} "
            f"{r['off_topic_refused_before']:>9}/{r['off_topic_refused_after']}/{r['off_topic']:<9} "
            f"{r['mean_chars_before']:>4}/{r['mean_chars_after']:<5} {r['ms_per_answer_after']:>6}"
        )
    n = total["questions"]
    print(
        f"{'all':<11} {'':>6} {n:>3} {total['retrievable'] / n:>11.0%} {total['before'] / n:>7.0%} "
        f"{total['after'] / n:>7.0%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
