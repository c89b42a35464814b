"""Extractive answers: the sentences of the retrieved passages that best answer a question.

Used by the offline provider, which has no language model. Each sentence of the best few passages is scored by
meaning (cosine similarity to the question with the local embedding model, one batched encode) and by words
(idf-weighted coverage of the question's terms, stopwords removed, crude stemming), and the best ones are
returned in reading order with the citation number of the passage each came from. Only the passages used are
cited; below a minimum score the answer says plainly that nothing relevant was found and cites nothing.

Passages are cleaned before they are split: hard-wrapped lines are joined (text files and PDFs break lines
mid-sentence), page furniture (page numbers, "END OF TERMS AND CONDITIONS", dotted table-of-contents lines,
running headers repeated across passages) and heading lines are dropped, and numbering like "4. Redistribution."
stays attached to the sentence it introduces.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from knowledge.embeddings import DEFAULT_MODEL, embedder_for_model

NOTHING_FOUND = "I could not find anything relevant to your question in the knowledge base."

Embed = Callable[[list[str]], list[list[float]]]

# Scoring. Meaning counts more than words; a small bonus goes to the retriever's own ranking of the passage.
# The weights, bonuses and margins were chosen with bench/answer_quality.py.
DENSE_WEIGHT = 0.65
LEXICAL_WEIGHT = 0.35
PASSAGE_RANK_BONUS = 0.04  # for the first passage, shrinking with rank
LEAD_BONUS = 0.03  # a paragraph's first sentence: where answers tend to start
# Sentences kept besides the best: within this score of it (same passage / another passage).
MARGIN_SAME_PASSAGE = 0.2
MARGIN_OTHER_PASSAGE = 0.12
# Below this best score nothing in the passages answers the question (measured with bench/answer_quality.py).
MIN_SCORE = 0.3
# Cost bounds: the embedding model encodes at most MAX_CANDIDATES short sentences per answer (one batch).
MAX_PASSAGES = 4
MAX_CANDIDATES = 64
MAX_ANSWER_CHARS = 900

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a about above after all also am an and any are as at be been before being below between both but by can could "
    "did do does doing done each for from further had has have having he her here hers him his how i if in into is "
    "it its itself just me more most my no nor not now of off on once only or other our ours out over own same she "
    "should so some such than that the their theirs them then there these they this those through to too under "
    "until up very was we were what when where which while who whom why will with would you your yours".split()
)
_PAGE_FURNITURE = re.compile(
    r"""^(?:
        (?:page|p\.|pg\.?)\s*\d+(?:\s*(?:of|/)\s*\d+)?      # Page 3, Page 3 of 12, p. 4
        | [-–—]?\s*\d{1,4}\s*[-–—]?                          # 12, - 12 -
        | \d+\s*/\s*\d+                                      # 3/12
        | .*\.{4,}\s*\d+                                     # Introduction ........ 3
        | [\W_]+                                             # rules and box borders: ----, ****, ====
        | end\s+of\s+terms\s+and\s+conditions
        | \[?\s*(?:this\s+page\s+(?:is\s+)?intentionally\s+left\s+blank)\s*\]?
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
_LIST_ITEM = re.compile(r"^(?:[-*•·–]\s+|\(?[a-z0-9]{1,3}[.)]\s+)", re.IGNORECASE)
_BULLET = re.compile(r"^[-*•·–]\s+")
# A numbered line starts an item only after a line that ends one: "...under section\n7. This requirement" is a wrap.
_ITEM_END = re.compile(r"(?:[.:;!?)]|\band|\bor)$", re.IGNORECASE)
_SENTENCE_BREAK = re.compile(r"(?<=[.!?][\"'”’)\]])\s+|(?<=[.!?])\s+")
_ENUMERATOR = re.compile(r"^(?:\(?[0-9ivxlc]{1,5}[.)]|\(?[a-z][.)]|[0-9]+(?:\.[0-9]+)+\.?)$", re.IGNORECASE)
_ABBREVIATION = re.compile(
    r"(?:\b(?:e\.g|i\.e|etc|vs|cf|mr|mrs|ms|dr|prof|st|no|nos|fig|figs|vol|sec|art|approx|inc|ltd|co|jr|sr)\.|"
    r"\b[A-Z]\.|\b(?:[A-Z]\.){2,})$",
    re.IGNORECASE,
)
_CITATION_MARK = re.compile(r"\[(\d+)\]")
_TERMINAL = (".", "!", "?", ":", ";", '"', "”", "'", "’", ")")


@dataclass(frozen=True)
class Extract:
    """An answer made of extracts, and the citation numbers of the passages it used (in the order shown)."""

    text: str
    cited: list[int]


@dataclass
class _Candidate:
    text: str
    passage_rank: int  # the passage's position in the retrieval order
    order: int  # the sentence's position in its passage
    marker: int
    leads: bool = False  # first sentence of its paragraph
    score: float = 0.0


def _stem(word: str) -> str:
    # Six letters are enough to match "redistribution" with "redistribute" and "licensed" with "license".
    return word[:6]


def _terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]


def _is_furniture(line: str) -> bool:
    return bool(_PAGE_FURNITURE.match(line))


def _unboxed(line: str) -> str:
    """The text of a line drawn inside a box ("*  Covered Software is provided...   *")."""
    line = line.strip()
    if len(line) > 2 and line[0] == line[-1] and line[0] in "*|#":
        return line[1:-1].strip()
    return line


def _join_wrapped(lines: Sequence[str]) -> str:
    """One logical line from hard-wrapped ones: a word cut by a hyphen at the end of a line is rejoined."""
    out = lines[0]
    for line in lines[1:]:
        if len(out) > 1 and out.endswith("-") and out[-2].isalpha() and line[:1].islower():
            out = out[:-1] + line
        else:
            out += " " + line
    return out


def _is_heading(block: str, line_count: int) -> bool:
    """A one-line block without closing punctuation ("Installation", "TERMS AND CONDITIONS", "Guide > Setup")."""
    words = block.split()
    if _LIST_ITEM.match(block):
        return False
    if line_count == 1 and not block.endswith(_TERMINAL) and len(words) <= 12:
        return True
    letters = [c for c in block if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters) and len(words) <= 12


def _running_lines(passages: Sequence[str]) -> set[str]:
    """Short lines repeated in three or more passages: running headers and footers of paged documents."""
    seen: Counter[str] = Counter()
    for text in passages:
        seen.update({line.strip() for line in text.splitlines() if 0 < len(line.strip()) <= 80})
    return {line for line, count in seen.items() if count >= 3 and not line.endswith((".", "!", "?"))}


def readable_blocks(text: str, *, drop: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The passage's paragraphs and list items as single lines, without page furniture or headings."""
    blocks: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [_unboxed(line) for line in paragraph.splitlines()]
        lines = [line for line in lines if line and line not in drop and not _is_furniture(line)]
        groups: list[list[str]] = []
        for line in lines:
            if not groups or _BULLET.match(line) or (_LIST_ITEM.match(line) and _ITEM_END.search(groups[-1][-1])):
                groups.append([line])
            else:
                groups[-1].append(line)
        for group in groups:
            block = _join_wrapped(group)
            if not _is_heading(block, len(group)):
                blocks.append(block)
    return blocks


def _title_like(piece: str) -> bool:
    words = [w for w in re.findall(r"[A-Za-z]+", piece) if len(w) >= 4]
    return bool(words) and all(w[0].isupper() for w in words)


def split_sentences(block: str) -> list[str]:
    """Sentences of one paragraph. Numbering ("4.", "(a)"), abbreviations ("e.g.") and inline titles
    ("4. Redistribution. You may...") stay attached to the text that follows them."""
    pieces = [p for p in _SENTENCE_BREAK.split(block) if p]
    merged: list[str] = []
    carry = ""
    for piece in pieces:
        if carry:
            text, carry = f"{carry} {piece}", ""
        elif merged and piece[:1].islower():
            merged[-1] = f"{merged[-1]} {piece}"  # not a real sentence end ("approx. ten")
            continue
        else:
            text = piece
        body = re.sub(r"^\(?[0-9a-z]{1,4}[.)]\s*", "", text, flags=re.IGNORECASE)
        if _ENUMERATOR.match(text) or _ABBREVIATION.search(text):
            carry = text
        elif len(body.split()) <= 5 and (_title_like(body) or len(body.split()) < 3):
            carry = text  # a run-in title: it introduces the next sentence
        else:
            merged.append(text)
    if carry:
        if merged and len(carry.split()) < 3:
            merged[-1] = f"{merged[-1]} {carry}"
        else:
            merged.append(carry)
    return merged


def _prose(sentence: str) -> bool:
    """Mostly words: not a code line (">>> a = 0o10"), a table row or an ASCII rule."""
    tokens = sentence.split()
    words = sum(1 for token in tokens if re.fullmatch(r"[A-Za-z][A-Za-z'’-]*[,.;:?!]?", token))
    return ">>>" not in sentence and "+---" not in sentence and words >= 0.6 * len(tokens)


def _candidates(passages: Sequence[dict[str, Any]]) -> list[_Candidate]:
    top = list(passages[:MAX_PASSAGES])
    texts = [str(p.get("text") or "") for p in top]
    running = _running_lines(texts)
    seen: set[str] = set()
    out: list[_Candidate] = []
    for rank, (passage, text) in enumerate(zip(top, texts, strict=True)):
        marker = int(passage.get("n") or rank + 1)
        order = 0
        for block in readable_blocks(text, drop=running):
            for position, sentence in enumerate(split_sentences(block)):
                key = " ".join(_WORD.findall(sentence.lower()))
                # Fragments, code and tables are not answers; overlapping chunks repeat sentences.
                if len(sentence.split()) < 4 or key in seen or not _prose(sentence):
                    continue
                seen.add(key)
                out.append(
                    _Candidate(text=sentence, passage_rank=rank, order=order, marker=marker, leads=position == 0)
                )
                order += 1
                if len(out) >= MAX_CANDIDATES:
                    return out
    return out


def _lexical_scores(question: str, candidates: Sequence[_Candidate]) -> list[float]:
    """Idf-weighted share of the question's terms each sentence contains (idf over the candidate sentences)."""
    wanted = set(_terms(question))
    if not wanted:
        return [0.0] * len(candidates)
    term_sets = [set(_terms(c.text)) for c in candidates]
    total = len(term_sets)
    df = Counter(t for terms in term_sets for t in terms & wanted)
    idf = {t: math.log(1 + (total - df[t] + 0.5) / (df[t] + 0.5)) for t in wanted}
    weight = sum(idf.values()) or 1.0
    return [sum(idf[t] for t in terms & wanted) / weight for terms in term_sets]


def _focus(question: str, passages: Sequence[dict[str, Any]]) -> str:
    """The question without the words that name the documents themselves: in "What does the Apache License require
    on redistribution?" asked of the Apache License, "Apache License" says which document, not which sentence, and
    would favour any sentence that names the licence. Kept whole when too little would remain."""
    titles = {w for p in passages for w in _WORD.findall(str(p.get("document_title") or "").lower()) if len(w) > 2}
    if not titles:
        return question
    focused = re.sub(
        r"\b(?:" + "|".join(re.escape(w) for w in sorted(titles)) + r")\b", " ", question, flags=re.IGNORECASE
    )
    return re.sub(r"\s+", " ", focused).strip() if len(_terms(focused)) >= 2 else question


def _default_embed(texts: list[str]) -> list[list[float]]:
    return embedder_for_model(DEFAULT_MODEL).embed(texts)


def _score(question: str, candidates: list[_Candidate], embed: Embed) -> None:
    vectors = embed([question] + [c.text[:1000] for c in candidates])
    asked = vectors[0]
    lexical = _lexical_scores(question, candidates)
    for candidate, vector, words in zip(candidates, vectors[1:], lexical, strict=True):
        dense = sum(a * b for a, b in zip(asked, vector, strict=True))  # both L2-normalised
        bonus = PASSAGE_RANK_BONUS / (1 + candidate.passage_rank) + (LEAD_BONUS if candidate.leads else 0.0)
        candidate.score = DENSE_WEIGHT * dense + LEXICAL_WEIGHT * words + bonus


def _chosen(candidates: list[_Candidate], max_sentences: int) -> list[_Candidate]:
    """The best sentence, then close runners-up: from the same passage, or nearly as good from another."""
    ranked = sorted(candidates, key=lambda c: c.score, reverse=True)
    best = ranked[0]
    chosen = [best]
    length = len(best.text)
    # "...provided that You meet the following conditions:" needs what follows ("::" introduces code: not kept).
    if best.text.endswith(":") and not best.text.endswith("::"):
        following = [c for c in candidates if c.passage_rank == best.passage_rank and c.order > best.order]
        for candidate in sorted(following, key=lambda c: c.order)[: max_sentences - 1]:
            if length + len(candidate.text) > MAX_ANSWER_CHARS:
                break
            chosen.append(candidate)
            length += len(candidate.text)
    for candidate in ranked[1:]:
        if candidate in chosen:
            continue
        if len(chosen) >= max_sentences:
            break
        same_passage = candidate.passage_rank == best.passage_rank
        close = candidate.score >= best.score - (MARGIN_SAME_PASSAGE if same_passage else MARGIN_OTHER_PASSAGE)
        if close and candidate.score >= MIN_SCORE and length + len(candidate.text) <= MAX_ANSWER_CHARS:
            chosen.append(candidate)
            length += len(candidate.text)
    return chosen


def extract_answer(
    question: str,
    passages: Sequence[dict[str, Any]],
    *,
    max_sentences: int = 3,
    min_score: float = MIN_SCORE,
    embed: Embed | None = None,
) -> Extract:
    """The answer from `passages` (retrieval order, best first; each with `text` and citation number `n`).
    `embed` encodes texts to L2-normalised vectors (default: the local all-MiniLM model)."""
    candidates = _candidates(passages)
    if not candidates or not question.strip():
        return Extract(NOTHING_FOUND, [])
    _score(_focus(question, passages[:MAX_PASSAGES]), candidates, embed or _default_embed)
    if max(c.score for c in candidates) < min_score:
        return Extract(NOTHING_FOUND, [])
    chosen = _chosen(candidates, max_sentences)
    # Reading order: passages in the order their best sentence ranks, sentences in document order within each.
    passage_order: list[int] = []
    for candidate in chosen:
        if candidate.passage_rank not in passage_order:
            passage_order.append(candidate.passage_rank)
    parts: list[str] = []
    cited: list[int] = []
    for rank in passage_order:
        group = sorted((c for c in chosen if c.passage_rank == rank), key=lambda c: c.order)
        marker = group[0].marker
        parts.append(" ".join(c.text for c in group) + f" [{marker}]")
        if marker not in cited:
            cited.append(marker)
    return Extract(" ".join(parts), cited)


def cited_numbers(text: str) -> list[int]:
    """The [n] markers in an answer's text, in first-appearance order."""
    out: list[int] = []
    for match in _CITATION_MARK.finditer(text):
        number = int(match.group(1))
        if number not in out:
            out.append(number)
    return out
