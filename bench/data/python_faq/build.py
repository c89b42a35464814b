"""Rebuild corpus.jsonl and questions.jsonl from Debian's documentation packages (see SOURCE.md).

    apt-get install python3.11-doc libpng16-16     # ships the texts under /usr/share/doc
    python bench/data/python_faq/build.py

Targets: every question of the official Python FAQ. The question (the section heading) goes to
questions.jsonl; the answer (the section body, WITHOUT its heading) becomes one document of the corpus.
Distractors: the Python HOWTOs (same domain, hard negatives) and the libpng manual (unrelated).
Documents are pre-chunked here (paragraph-aware, <= ~180 words) so the figures do not move when the
product's chunker changes.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
LIBPNG = Path("/usr/share/doc/libpng16-16/libpng-manual.txt.gz")
FAQ_FILES = ["general", "programming", "design", "library", "extending", "windows", "gui", "installed"]
HOWTO_FILES = [
    "logging",
    "logging-cookbook",
    "regex",
    "sorting",
    "unicode",
    "argparse",
    "descriptor",
    "functional",
    "sockets",
    "enum",
    "ipaddress",
    "urllib2",
    "curses",
]
MAX_WORDS = 180
UNDERLINE = re.compile(r"^([=\-~^*+#\"'])\1{3,}\s*$")


def clean_rst(text: str) -> str:
    text = re.sub(r":[a-z:]+:`~?([^`<]*?)\s*(<[^>]*>)?`", r"\1", text)  # :func:`x` / :ref:`t <x>` -> x
    text = re.sub(r"`([^`<]+?)\s*<[^>]+>`_+", r"\1", text)  # `text <url>`_ -> text
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"^\.\. [a-z-]+::.*$", "", text, flags=re.M)  # directives
    text = re.sub(r"^\.\. _[^:]+:\s*$", "", text, flags=re.M)  # labels
    text = re.sub(r"^\s*:[a-z-]+:.*$", "", text, flags=re.M)  # directive options
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def rst_sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) for every section, split at every heading level."""
    lines = text.splitlines()
    heads = []
    for i in range(1, len(lines)):
        if UNDERLINE.match(lines[i]) and lines[i - 1].strip() and not UNDERLINE.match(lines[i - 1]):
            if len(lines[i].strip()) >= len(lines[i - 1].strip()) - 2:
                heads.append(i - 1)
    out = []
    for n, h in enumerate(heads):
        end = heads[n + 1] if n + 1 < len(heads) else len(lines)
        body = "\n".join(ln for ln in lines[h + 2 : end] if not UNDERLINE.match(ln))
        out.append((lines[h].strip(), body))
    return out


def chunk(text: str) -> list[str]:
    """Greedy paragraph packing to <= MAX_WORDS words; long paragraphs are split on sentences/words."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces: list[str] = []
    for p in paras:
        words = p.split()
        while len(words) > MAX_WORDS:
            pieces.append(" ".join(words[:MAX_WORDS]))
            words = words[MAX_WORDS:]
        if words:
            pieces.append("\n".join([" ".join(ln.split()) for ln in " ".join(words).splitlines()]))
    chunks: list[str] = []
    cur: list[str] = []
    for piece in pieces:
        if cur and sum(len(x.split()) for x in cur) + len(piece.split()) > MAX_WORDS:
            chunks.append("\n\n".join(cur))
            cur = []
        cur.append(piece)
    if cur:
        chunks.append("\n\n".join(cur))
    return chunks


def is_question(heading: str) -> bool:
    return heading.endswith("?")


def main() -> None:
    docs: list[dict] = []
    questions: list[dict] = []
    for name in FAQ_FILES:
        raw = (PY_DOCS / "faq" / f"{name}.rst.txt").read_text()
        for n, (heading, body) in enumerate(rst_sections(raw)):
            if not is_question(heading):
                continue
            chunks = chunk(clean_rst(body))
            if not chunks or sum(len(c.split()) for c in chunks) < 8:
                continue  # "Yes." alone is not retrievable evidence
            doc_id = f"faq/{name}/{n:03d}"
            docs.append({"id": doc_id, "title": f"Python {name} FAQ, entry {n}", "kind": "target", "chunks": chunks})
            questions.append({"id": f"q{len(questions):04d}", "question": heading, "doc_id": doc_id})
    for name in HOWTO_FILES:
        raw = (PY_DOCS / "howto" / f"{name}.rst.txt").read_text()
        for n, (heading, body) in enumerate(rst_sections(raw)):
            chunks = chunk(clean_rst(body))
            if chunks:
                docs.append(
                    {"id": f"howto/{name}/{n:03d}", "title": f"{heading} ({name} HOWTO)", "kind": "distractor",
                     "chunks": chunks}
                )
    png = gzip.decompress(LIBPNG.read_bytes()).decode("utf-8", "replace")
    for n, part in enumerate(re.split(r"\n(?=[IVX]+\. )", png)):
        chunks = chunk(part)
        if chunks:
            docs.append({"id": f"libpng/{n:03d}", "title": f"libpng manual part {n}", "kind": "distractor",
                         "chunks": chunks})
    with open(HERE / "corpus.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    with open(HERE / "questions.jsonl", "w") as f:
        for q in questions:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    n_chunks = sum(len(d["chunks"]) for d in docs)
    n_target = sum(len(d["chunks"]) for d in docs if d["kind"] == "target")
    print(f"{len(docs)} documents, {n_chunks} chunks ({n_target} answer chunks), {len(questions)} questions")


if __name__ == "__main__":
    main()
