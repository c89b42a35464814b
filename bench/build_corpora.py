"""Rebuild the retrieval evaluation sets under bench/data/ from documentation installed by Debian packages.

    python bench/build_corpora.py            # all sets
    python bench/build_corpora.py man_pages  # one set

The committed jsonl files ARE the data (bench/retrieval_quality.py reads only them); this script documents how
they were made and rebuilds them on a Debian 12 machine with the packages named in each set's SOURCE.md.
Every set has the format of bench/data/python_faq: corpus.jsonl ({"id", "title", "kind", "chunks"}: one
document, pre-chunked to <= MAX_WORDS words per chunk so the figures do not move with the product's chunker)
and questions.jsonl ({"id", "question", "doc_id"}: exactly one relevant document per question). Questions
never occur verbatim in their answer document: the heading / NAME line / docstring summary they come from is
cut out of it. Samples are deterministic (ordered by a SHA-1 of a stable key), so a rebuild gives the same set.

Sets (four kinds of text, four kinds of query):
- sed_faq: the sed FAQ's questions against its answers; the GNU sed and grep manuals (info) as distractors.
- man_pages: a manual page's NAME description ("copy files and directories") against the rest of the page.
- python_code: a Python standard library function's docstring summary against its source code.
- x11_protocol: X11 protocol specification: a request/event/section name in words ("change window attributes")
  against its section.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
MAX_WORDS = 180
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
BOX = str.maketrans({c: " " for c in "│┌─┬┐├┼┤└┴┘━┃"})


def chunk(text: str, max_chunks: int | None = None) -> list[str]:
    """Greedy paragraph packing to <= MAX_WORDS words; longer paragraphs are cut at word boundaries."""
    text = CONTROL.sub("", text)  # PostgreSQL text cannot hold NUL; the sed FAQ quotes raw control codes
    pieces: list[str] = []
    for para in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not para:
            continue
        lines = [" ".join(ln.split()) for ln in para.splitlines()]
        words = " ".join(lines).split()
        if len(words) <= MAX_WORDS:
            pieces.append("\n".join(ln for ln in lines if ln))
            continue
        for i in range(0, len(words), MAX_WORDS):
            pieces.append(" ".join(words[i : i + MAX_WORDS]))
    chunks: list[str] = []
    cur: list[str] = []
    for piece in pieces:
        if cur and sum(len(x.split()) for x in cur) + len(piece.split()) > MAX_WORDS:
            chunks.append("\n\n".join(cur))
            cur = []
        cur.append(piece)
    if cur:
        chunks.append("\n\n".join(cur))
    return chunks[:max_chunks] if max_chunks else chunks


def stable_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: hashlib.sha1(k.encode()).hexdigest())  # noqa: S324 - ordering, not security


def write(name: str, docs: list[dict], questions: list[dict]) -> None:
    out = DATA / name
    out.mkdir(parents=True, exist_ok=True)
    ids = {d["id"] for d in docs}
    assert len(ids) == len(docs), "duplicate document ids"
    assert all(q["doc_id"] in ids for q in questions)
    with open(out / "corpus.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    with open(out / "questions.jsonl", "w") as f:
        for n, q in enumerate(questions):
            f.write(json.dumps({"id": f"q{n:04d}", **q}, ensure_ascii=False) + "\n")
    n_chunks = sum(len(d["chunks"]) for d in docs)
    print(f"{name}: {len(docs)} documents, {n_chunks} chunks, {len(questions)} questions")


# --- sed FAQ ---------------------------------------------------------------------------------------------

SECTION = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)*\.?\s+(\S.*)$")


def info_nodes(path: Path) -> list[tuple[str, str]]:
    """(node name, body) of every node of a GNU info file (menus and the title underline removed)."""
    raw = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    nodes = []
    for part in raw.split("\x1f")[1:]:
        head = re.search(r"Node: ([^,\n]+)", part)
        if not head or "Tag Table" in part[:40] or part.startswith("\nEnd Tag Table"):
            continue
        body = part.split("\n", 2)[-1]
        body = re.sub(r"^\* Menu:.*?(?=\n\n[^*\n]|\Z)", "", body, flags=re.S | re.M)
        body = re.sub(r"^[*=\-.]{3,}\s*$", "", body, flags=re.M)
        nodes.append((head.group(1).strip(), body))
    return nodes


def build_sed_faq() -> tuple[list[dict], list[dict]]:
    raw = gzip.decompress(Path("/usr/share/doc/sed/sedfaq.txt.gz").read_bytes()).decode("latin-1")
    body = raw.split("------------------------------", 1)[1]  # after the table of contents
    lines = body.splitlines()
    sections: list[tuple[str, str, list[str]]] = []  # (number, heading, body lines): level-2 sections only
    i = 0
    while i < len(lines):
        m = SECTION.match(lines[i])
        if m and lines[i].split()[0].count(".") in (1, 2) and len(lines[i].split()[0].rstrip(".").split(".")) == 2:
            heading = m.group(3).strip()
            # Wrapped headings continue on the next indented line.
            while not heading.endswith(("?", ".", ")")) and i + 1 < len(lines) and lines[i + 1].startswith("  "):
                if not lines[i + 1].strip():
                    break
                i += 1
                heading += " " + lines[i].strip()
            sections.append((f"{m.group(1)}.{m.group(2)}", heading, []))
        elif sections:
            sections[-1][2].append(lines[i])
        i += 1
    docs, questions = [], []
    for number, heading, text in sections:
        chunks = chunk("\n".join(text).replace("|\n", "\n"))
        if not chunks:
            continue
        doc_id = f"sedfaq/{number}"
        chapter = number.split(".")[0]
        asks = "?" in heading or chapter == "5"  # chapter 5 states problems ("Why don't my variables ...")
        docs.append(
            {
                "id": doc_id,
                "title": f"sed FAQ section {number}",
                "kind": "target" if asks else "distractor",
                "chunks": chunks,
            }
        )
        if asks and chapter not in ("1", "7"):  # 1 is about the FAQ itself, 7 lists version bugs
            questions.append({"question": heading, "doc_id": doc_id})
    for manual in ("sed", "grep"):
        for n, (node, text) in enumerate(info_nodes(Path(f"/usr/share/info/{manual}.info.gz"))):
            chunks = chunk(text)
            if chunks:
                docs.append(
                    {
                        "id": f"{manual}.info/{n:03d}",
                        "title": f"{manual} manual: {node}",
                        "kind": "distractor",
                        "chunks": chunks,
                    }
                )
    return docs, questions


# --- man pages -------------------------------------------------------------------------------------------

MAN_PACKAGES = [
    "coreutils", "util-linux", "findutils", "grep", "sed", "diffutils", "procps", "iproute2", "tar", "gzip",
    "man-db", "dpkg", "apt", "openssh-client", "bsdutils", "passwd", "login", "mount", "e2fsprogs", "git-man",
    "manpages", "manpages-dev",
]  # fmt: skip
MAN_DOCS, MAN_QUESTIONS, MAN_MAX_CHUNKS = 420, 160, 4


def render_man(path: str) -> str:
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="0")
    out = subprocess.run(["man", "--nh", "--nj", "-l", path], env=env, capture_output=True, check=False).stdout
    return subprocess.run(["col", "-bx"], input=out, capture_output=True, check=True).stdout.decode("utf-8", "replace")


def build_man_pages() -> tuple[list[dict], list[dict]]:
    pages: dict[str, str] = {}
    for pkg in MAN_PACKAGES:
        listing = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=False).stdout
        for path in listing.splitlines():
            if re.match(r"^/usr/share/man/man[1-8]/[^/]+\.[1-8][a-z]*\.gz$", path) and os.path.isfile(path):
                if not os.path.islink(path):
                    pages[Path(path).name.removesuffix(".gz")] = path
    docs, questions, seen = [], [], set()
    for name in stable_order(list(pages)):
        if len(docs) >= MAN_DOCS:
            break
        text = render_man(pages[name])
        lines = text.splitlines()[1:-1]  # running header and footer carry the page name
        m = re.search(r"^NAME\n(.*?)\n(?=\S)", "\n".join(lines) + "\n", flags=re.S | re.M)
        if not m:
            continue
        name_line = " ".join(m.group(1).split())
        description = re.split(r"\s+[-\u2010\u2013\u2014]+\s+", name_line, maxsplit=1)
        rest = ("\n".join(lines)).replace(m.group(0), "", 1)
        chunks = chunk(rest, MAN_MAX_CHUNKS)
        if len(description) != 2 or not chunks:
            continue
        doc_id = f"man/{name}"
        docs.append({"id": doc_id, "title": f"manual page {len(docs)}", "kind": "target", "chunks": chunks})
        question = description[1].strip().rstrip(".")
        if len(questions) < MAN_QUESTIONS and len(question.split()) >= 3 and question.lower() not in seen:
            seen.add(question.lower())
            questions.append({"question": question, "doc_id": doc_id})
    return docs, questions


# --- Python standard library code ------------------------------------------------------------------------

STDLIB = Path("/usr/lib/python3.11")
STDLIB_MODULES = [
    "shutil", "textwrap", "json/__init__", "json/decoder", "pathlib", "urllib/parse", "urllib/request",
    "email/utils", "http/cookies", "http/cookiejar", "string", "csv", "tarfile", "zipfile", "tempfile", "calendar",
    "difflib", "fnmatch", "glob", "gzip", "heapq", "bisect", "ipaddress", "mimetypes", "posixpath", "random",
    "statistics", "base64", "smtplib", "ftplib", "argparse", "logging/__init__", "configparser", "inspect",
    "functools", "collections/__init__", "datetime", "fractions", "shlex", "subprocess", "threading", "queue",
    "copy", "pprint", "traceback", "warnings", "contextlib", "dataclasses", "enum", "os", "socket", "ssl",
    "unittest/case", "doctest", "imaplib", "uuid", "hashlib", "hmac", "secrets", "locale", "gettext",
]  # fmt: skip
CODE_DOCS, CODE_QUESTIONS, CODE_MAX_CHUNKS = 480, 160, 3


def build_python_code() -> tuple[list[dict], list[dict]]:
    functions: dict[str, tuple[str, str | None]] = {}  # key -> (source without summary, summary)
    for module in STDLIB_MODULES:
        path = STDLIB / f"{module}.py"
        source = path.read_text()
        tree = ast.parse(source)
        lines = source.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.end_lineno is None:
                continue
            if node.end_lineno - node.lineno < 3:
                continue
            body_lines = lines[node.lineno - 1 : node.end_lineno]
            doc = ast.get_docstring(node, clean=False)
            summary = None
            if doc and node.body and isinstance(node.body[0], ast.Expr):
                first = node.body[0]
                para = doc.strip().split("\n\n", 1)
                summary = " ".join(para[0].split())
                rest = para[1].strip() if len(para) > 1 else ""
                indent = " " * (first.col_offset or 0)
                kept = [f'{indent}"""{rest}"""'] if rest else []
                start, end = first.lineno - node.lineno, (first.end_lineno or first.lineno) - node.lineno
                body_lines = body_lines[:start] + kept + body_lines[end + 1 :]
            functions[f"{module.removesuffix('/__init__').replace('/', '.')}:{node.lineno}:{node.name}"] = (
                "\n".join(body_lines),
                summary,
            )
    docs, questions, seen = [], [], set()
    for key in stable_order(list(functions)):
        if len(docs) >= CODE_DOCS:
            break
        code, summary = functions[key]
        # Code keeps its line structure: one paragraph per blank-line-separated block.
        chunks = chunk(code, CODE_MAX_CHUNKS)
        doc_id = f"py/{key}"
        docs.append({"id": doc_id, "title": f"stdlib function {len(docs)}", "kind": "target", "chunks": chunks})
        if (
            summary
            and len(questions) < CODE_QUESTIONS
            and 5 <= len(summary.split()) <= 40
            and summary.lower() not in seen
        ):
            seen.add(summary.lower())
            questions.append({"question": summary, "doc_id": doc_id})
    return docs, questions


# --- X11 protocol specification --------------------------------------------------------------------------


def words_of(name: str) -> str:
    """CreateWindow -> create window; PolyText8 -> poly text 8; GC stays an acronym."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=\d)", " ", name)
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in spaced.split())


def build_x11_protocol() -> tuple[list[dict], list[dict]]:
    raw = gzip.decompress(Path("/usr/share/doc/xproto/x11protocol.txt.gz").read_bytes()).decode("utf-8")
    raw = raw.replace("\xa0", " ").translate(BOX)
    # Chapters only: skip the front matter with the book's table of contents, and the appendices (keysym and
    # byte-encoding tables).
    raw = raw[raw.rindex("\nChapter 1. ") : raw.rindex("\nAppendix A. ")]
    chapters = re.split(r"\n(?=Chapter \d+\. )", raw)
    docs, questions, seen = [], [], set()
    for chapter in chapters[1:]:
        title = chapter.splitlines()[0]
        number = title.split()[1].rstrip(".")
        text = chapter.split("\n", 1)[1]
        headings: list[str] = []
        if text.lstrip().startswith("Table of Contents"):
            toc, _, text = text.lstrip()[len("Table of Contents") :].lstrip("\n").partition("\n\n")
            headings = [h.strip() for h in toc.splitlines() if h.strip()]
        # Split the chapter at its section headings (a line equal to the next expected heading).
        sections: list[tuple[str, list[str]]] = [(title.split(". ", 1)[1], [])]
        pending = list(headings)
        for line in text.splitlines():
            if pending and line.strip() == pending[0]:
                sections.append((pending.pop(0), []))
            else:
                sections[-1][1].append(line)
        for n, (heading, body) in enumerate(sections):
            chunks = chunk("\n".join(body))
            if not chunks:
                continue
            doc_id = f"x11/{number}/{n:03d}"
            docs.append({"id": doc_id, "title": f"X11 protocol {number}.{n}", "kind": "target", "chunks": chunks})
            question = words_of(heading) if " " not in heading else heading.lower()
            if len(question.split()) >= 2 and question not in seen:
                seen.add(question)
                questions.append({"question": question, "doc_id": doc_id})
    order = {k: i for i, k in enumerate(stable_order([q["doc_id"] for q in questions]))}
    questions.sort(key=lambda q: order[q["doc_id"]])
    return docs, questions[:160]


BUILDERS: dict[str, Callable[[], tuple[list[dict], list[dict]]]] = {
    "sed_faq": build_sed_faq,
    "man_pages": build_man_pages,
    "python_code": build_python_code,
    "x11_protocol": build_x11_protocol,
}


def main(names: list[str]) -> None:
    for name in names or list(BUILDERS):
        write(name, *BUILDERS[name]())


if __name__ == "__main__":
    main(sys.argv[1:])
