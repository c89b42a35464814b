"""Detect a document's type from its content and extract its text as ordered blocks.

    kind = detect_kind(fh, filename)          # "pdf" | "docx" | "html" | "markdown" | "text" | "csv" | "json"
                                               # | "png" | "jpeg" | "tiff" (only with an OCR engine)
    extracted = extract(fh, kind, ocr_language="eng", on_ocr_page=None)
                                               # Extracted(blocks=[Block(text, kind, level, page)], page_count)

Types are decided by content (magic bytes, zip structure, UTF-8 decoding); the extension only breaks
ties between text formats. Every refusal is a DomainError with a sentence a person can act on.

Paged documents (PDF, scans) lose their running headers and footers here: a line repeated at the top or
bottom of many pages ("ACME Corp - Confidential"), or a bare page number ("12", "Page 3 of 10"), would
otherwise land in every chunk and match every query that shares a word with it. Pages without a text layer
and image uploads are read by OCR (knowledge.ocr) when an engine is installed.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from django.conf import settings

from core.errors import DomainError, ErrorCode

from .ocr import ocr_available, ocr_image

if TYPE_CHECKING:
    from PIL.Image import Image
    from pypdfium2 import PdfPage

HEAD_BYTES = 8192
TEXT_KINDS = ("markdown", "text", "html", "csv", "json")
IMAGE_KINDS = ("png", "jpeg", "tiff")
MIME_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "html": "text/html",
    "markdown": "text/markdown",
    "text": "text/plain",
    "csv": "text/csv",
    "json": "application/json",
}
# Recognisable binary formats we do not ingest: named in the error so the person knows what they sent.
_BINARY_SIGNATURES = [
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "a Windows executable"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office document (.doc/.xls); save it as .docx"),
    (b"ID3", "an audio file"),
    (b"OggS", "an audio file"),
    (b"RIFF", "a media file"),
    (b"\x00\x00\x00", "a binary file"),
]
# Scanned pages and photos of documents, read by OCR when an engine is installed.
_IMAGE_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "png", "a PNG image"),
    (b"\xff\xd8\xff", "jpeg", "a JPEG image"),
    (b"II*\x00", "tiff", "a TIFF image"),
    (b"MM\x00*", "tiff", "a TIFF image"),
]
_MAX_ZIP_ENTRIES = 5000
_MAX_ZIP_RATIO = 200


class UnsupportedDocument(DomainError):
    code = ErrorCode.UNSUPPORTED_TYPE
    status = 415


class UnreadableDocument(DomainError):
    code = ErrorCode.UNREADABLE_DOCUMENT
    status = 422


class EmptyDocument(UnreadableDocument):
    code = ErrorCode.EMPTY_DOCUMENT


@dataclass
class Block:
    text: str
    kind: str = "para"  # "heading" or "para"
    level: int = 0  # heading level (1 = top)
    page: int | None = None


@dataclass
class Extracted:
    kind: str
    blocks: list[Block] = field(default_factory=list)
    page_count: int = 1
    title: str = ""


def _extension(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


def _decode_text(data: bytes, *, partial: bool = False) -> str:
    """UTF-8 (or UTF-16 with a BOM) text, or UnsupportedDocument for binary content."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise UnsupportedDocument("The file is not readable UTF-16 text.") from exc
    if b"\x00" in data:
        raise UnsupportedDocument("The file contains binary data, not text.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A 8 KiB head may cut a multi-byte character in half: only the tail may be incomplete.
        if partial and exc.start >= len(data) - 3:
            text = data[: exc.start].decode("utf-8-sig")
        else:
            raise UnsupportedDocument("The file is neither a supported document nor UTF-8 text.") from exc
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v")
    if controls > max(2, len(text) // 100):
        raise UnsupportedDocument("The file contains binary data, not text.")
    return text


def check_zip(fh: IO[bytes]) -> zipfile.ZipFile:
    """Open a zip and refuse archive bombs from the central directory, before decompressing anything.

    zipfile stops each member at its declared size (and fails the CRC past it), so bounding the
    declared sizes bounds what extraction can inflate."""
    try:
        archive = zipfile.ZipFile(fh)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnreadableDocument("The file is a damaged zip/DOCX archive.") from exc
    limit = settings.KNOWLEDGE_MAX_UNCOMPRESSED_BYTES
    if len(infos) > _MAX_ZIP_ENTRIES:
        raise UnreadableDocument(f"The archive has {len(infos)} entries: refused as a possible zip bomb.")
    total = sum(info.file_size for info in infos)
    if total > limit:
        raise UnreadableDocument(
            f"The archive expands to {total} bytes, over the limit of {limit}: refused as a possible zip bomb."
        )
    for info in infos:
        if info.file_size > 1_000_000 and info.file_size > _MAX_ZIP_RATIO * max(info.compress_size, 1):
            raise UnreadableDocument(
                f"{info.filename} compresses {info.file_size // max(info.compress_size, 1)}:1: "
                "refused as a possible zip bomb."
            )
    return archive


def _image_opens(fh: IO[bytes], kind: str) -> bool:
    """Whether Pillow recognises the image header (pixels are decoded only when the image is OCRed)."""
    from PIL import Image, UnidentifiedImageError  # image decoding loads only for images

    try:
        with Image.open(fh, formats=[kind.upper()]):
            return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    finally:
        fh.seek(0)


def detect_kind(fh: IO[bytes], filename: str = "") -> str:
    """Decide the document type from its bytes. Raises UnsupportedDocument / EmptyDocument."""
    fh.seek(0)
    head = fh.read(HEAD_BYTES)
    fh.seek(0)
    if not head or not head.strip():
        raise EmptyDocument("The file is empty.")
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        names = set(check_zip(fh).namelist())
        fh.seek(0)
        if "word/document.xml" in names:
            return "docx"
        if "xl/workbook.xml" in names:
            raise UnsupportedDocument("Spreadsheets (.xlsx) are not supported yet; export the sheet as CSV.")
        if "ppt/presentation.xml" in names:
            raise UnsupportedDocument("Presentations (.pptx) are not supported.")
        raise UnsupportedDocument("Zip archives are not supported; upload the documents themselves.")
    for signature, image_kind, what in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            if not ocr_available():
                raise UnsupportedDocument(
                    f"The file looks like {what}; images are read by OCR, which is not installed on this server."
                )
            if not _image_opens(fh, image_kind):
                raise UnsupportedDocument(f"The file looks like {what} but is not a readable one.")
            return image_kind
    if not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        for signature, what in _BINARY_SIGNATURES:
            if head.startswith(signature):
                raise UnsupportedDocument(f"The file looks like {what}, which is not a supported document type.")
    text = _decode_text(head, partial=True).lstrip()
    ext = _extension(filename)
    lowered = text[:500].lower()
    if ext == "json" or (text[:1] in "{[" and ext not in ("md", "markdown", "txt", "csv")):
        return "json"
    if ext in ("html", "htm") or lowered.startswith(("<!doctype html", "<html")) or "<body" in lowered:
        return "html"
    if ext in ("csv", "tsv"):
        return "csv"
    if ext in ("md", "markdown") or re.search(r"^#{1,6} \S", text, re.MULTILINE):
        return "markdown"
    return "text"


# --- Extractors --------------------------------------------------------------------------------------


def _paragraph_blocks(text: str, page: int | None = None) -> list[Block]:
    blocks = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if para:
            blocks.append(Block(text=para, page=page))
    return blocks


def _extract_text(text: str) -> Extracted:
    return Extracted(kind="text", blocks=_paragraph_blocks(text))


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def _extract_markdown(text: str) -> Extracted:
    blocks: list[Block] = []
    para: list[str] = []
    in_fence = False

    def flush() -> None:
        if para and "\n".join(para).strip():
            blocks.append(Block(text="\n".join(para).strip()))
        para.clear()

    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            para.append(line)
            continue
        match = None if in_fence else _HEADING.match(line)
        if match:
            flush()
            blocks.append(Block(text=match.group(2), kind="heading", level=len(match.group(1))))
        elif not line.strip() and not in_fence:
            flush()
        else:
            para.append(line)
    flush()
    return Extracted(kind="markdown", blocks=blocks)


_HTML_BLOCKS = {
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "p",
    "li",
    "pre",
    "blockquote",
    "td",
    "th",
    "dt",
    "dd",
    "figcaption",
    "caption",
}
_HTML_DROP = ["script", "style", "noscript", "nav", "footer", "form", "svg", "iframe", "template", "aside"]


def _extract_html(text: str) -> Extracted:
    from bs4 import BeautifulSoup  # parsers load with the first document of their kind, not with every process

    soup = BeautifulSoup(text, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(_HTML_DROP):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    blocks: list[Block] = []
    for element in root.find_all(_HTML_BLOCKS):
        if any(parent.name in _HTML_BLOCKS for parent in element.parents):
            continue  # nested (a <p> inside an <li>): its text is in the outer block
        content = element.get_text(" ", strip=True)
        if not content:
            continue
        if element.name[0] == "h" and element.name[1:].isdigit():
            blocks.append(Block(text=content, kind="heading", level=int(element.name[1:])))
        else:
            blocks.append(Block(text=content))
    if not blocks:
        blocks = _paragraph_blocks(root.get_text("\n"))
    return Extracted(kind="html", blocks=blocks, title=title)


def _extract_csv(text: str) -> Extracted:
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise UnreadableDocument(f"The CSV file is malformed: {exc}.") from exc
    if not rows:
        raise EmptyDocument("The CSV file has no rows.")
    header, body = rows[0], rows[1:] or [rows[0]]
    blocks = []
    for row in body:
        pairs = enumerate(zip(header, row, strict=False))
        cells = [f"{h.strip() or f'column {i + 1}'}: {v.strip()}" for i, (h, v) in pairs]
        blocks.append(Block(text="; ".join(cells)))
    return Extracted(kind="csv", blocks=blocks)


def _json_lines(value, path: str, out: list[str], depth: int = 0) -> None:
    if depth > 50:
        out.append(f"{path}: …")
    elif isinstance(value, dict):
        for key, item in value.items():
            _json_lines(item, f"{path}.{key}" if path else str(key), out, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _json_lines(item, f"{path}[{index}]", out, depth + 1)
    else:
        out.append(f"{path}: {value}")


def _extract_json(text: str) -> Extracted:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableDocument(f"The JSON is invalid (line {exc.lineno}, column {exc.colno}).") from exc
    # One block per record (list items / top-level keys): a record stays together in one chunk when it fits.
    items = list(enumerate(data)) if isinstance(data, list) else list(data.items()) if isinstance(data, dict) else []
    blocks = []
    if not items:
        blocks = [Block(text=str(data))]
    for key, item in items:
        lines: list[str] = []
        _json_lines(item, str(key) if isinstance(data, dict) else "", lines)
        if not lines and isinstance(data, dict):
            lines = [f"{key}: {item}"]
        if lines:
            blocks.append(Block(text="\n".join(lines)))
    return Extracted(kind="json", blocks=blocks)


OcrProgress = Callable[[int, int], None]  # (pages read so far, pages to read)
# Decoded pixels per page read by OCR: a small PNG or PDF can declare a huge canvas (a decompression bomb).
_MAX_IMAGE_PIXELS = 80_000_000

# Running headers and footers: a line is one when it sits among the first or last _RUNNING_ZONE lines of a
# page and repeats there on at least _RUNNING_SHARE of the pages (and on at least _RUNNING_MIN_PAGES), digits
# aside ("Annual report - page 3" and "... - page 4" are the same line).
_RUNNING_ZONE = 3
_RUNNING_SHARE = 0.5
_RUNNING_MIN_PAGES = 3
_PAGE_NUMBER = re.compile(
    r"^[\s\-\u2013\u2014|.\[\](){}]*(?:page|p\.|pg\.?)?\s*\d{1,5}(?:\s*(?:of|/|von|de|sur)\s*\d{1,5})?[\s\-\u2013\u2014|.\[\](){}]*$",
    re.IGNORECASE,
)


def _running_key(line: str) -> str:
    return re.sub(r"\d+", "#", " ".join(line.split()).lower())


def strip_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """The pages' lines without running headers/footers and bare page numbers (see _RUNNING_ZONE).

    Blank lines stay (they separate paragraphs) and do not count towards a page's first and last lines. Tops
    and bottoms are counted apart: a header repeats among page tops, a footer among page bottoms."""

    def edges(lines: list[str]) -> tuple[set[int], set[int]]:
        filled = [i for i, line in enumerate(lines) if line.strip()]
        return set(filled[:_RUNNING_ZONE]), set(filled[-_RUNNING_ZONE:])

    zones = [edges(lines) for lines in pages]
    seen: Counter[tuple[int, str]] = Counter()
    for lines, (top, bottom) in zip(pages, zones, strict=True):
        for side, zone in enumerate((top, bottom)):
            seen.update({(side, _running_key(lines[i])) for i in zone})
    threshold = max(_RUNNING_MIN_PAGES, _RUNNING_SHARE * len(pages))
    running = {key for key, count in seen.items() if count >= threshold}

    def is_running(line: str, index: int, top: set[int], bottom: set[int]) -> bool:
        key = _running_key(line)
        if index in top and ((0, key) in running or _PAGE_NUMBER.match(line)):
            return True
        return index in bottom and ((1, key) in running or bool(_PAGE_NUMBER.match(line)))

    return [
        [line for i, line in enumerate(lines) if not is_running(line, i, top, bottom)]
        for lines, (top, bottom) in zip(pages, zones, strict=True)
    ]


def _page_blocks(lines: list[str], page: int) -> list[Block]:
    text = re.sub(r"-\n(?=\w)", "", "\n".join(lines))  # words hyphenated across lines
    blocks = []
    for para in re.split(r"\n\s*\n", text):
        para = re.sub(r"\s*\n\s*", " ", para).strip()
        if para:
            blocks.append(Block(text=para, page=page))
    return blocks


def _paged_blocks(page_texts: list[str]) -> list[Block]:
    """Blocks of every page, numbered from 1, with running headers/footers removed."""
    pages = strip_running_lines([text.splitlines() for text in page_texts])
    return [block for number, lines in enumerate(pages, start=1) for block in _page_blocks(lines, number)]


def _render_pdf_page(page: PdfPage) -> Image:
    """A pypdfium2 page as a grayscale Pillow image at settings.KNOWLEDGE_OCR_DPI."""
    width, height = page.get_size()  # points (1/72 inch)
    # A page may declare any size: the bitmap stays within the pixel limit of image uploads.
    scale = min(settings.KNOWLEDGE_OCR_DPI / 72, (_MAX_IMAGE_PIXELS / max(width * height, 1.0)) ** 0.5)
    return page.render(scale=scale, grayscale=True).to_pil()


def _pdf_page_text(page: PdfPage) -> str:
    """The text layer of a pypdfium2 page, one line per text line, text outside the page's box included. PDFium
    joins a word hyphenated at a line end and marks the join with U+FFFE; it becomes "-" + line break again, so
    lines (running headers and footers are found by line) and the hyphen handling of _page_blocks stay what they
    are for any other paged text."""
    textpage = page.get_textpage()
    try:
        return textpage.get_text_range().replace("\ufffe", "-\n")
    finally:
        textpage.close()


def _extract_pdf(fh: IO[bytes], *, ocr_language: str, on_ocr_page: OcrProgress | None) -> Extracted:
    # PDFium (C++, the text layer and the page renderer of Chrome): ~2 ms of CPU per page where pypdf took ~13-25,
    # which made a 1,000-page PDF wait 15-25 s before its first chunk was embedded.
    import pypdfium2  # parsers load with the first document of their kind, not with every process
    import pypdfium2.raw as pdfium_raw

    try:
        # PDFium opens "owner-only" encrypted files (an empty user password) by itself.
        document = pypdfium2.PdfDocument(fh.read())
    except pypdfium2.PdfiumError as exc:
        if exc.err_code in (pdfium_raw.FPDF_ERR_PASSWORD, pdfium_raw.FPDF_ERR_SECURITY):
            raise UnreadableDocument("The PDF is encrypted (password protected); upload an unprotected copy.") from exc
        raise UnreadableDocument("The PDF is corrupted or unreadable.") from exc
    try:
        page_count = len(document)
        if page_count > settings.KNOWLEDGE_MAX_PAGES:
            raise UnreadableDocument(
                f"The PDF has {page_count} pages, over the limit of {settings.KNOWLEDGE_MAX_PAGES}."
            )
        page_texts: list[str] = []
        for number in range(1, page_count + 1):
            try:
                page = document[number - 1]
            except pypdfium2.PdfiumError as exc:
                raise UnreadableDocument(f"Page {number} of the PDF is corrupted.") from exc
            try:
                page_texts.append(_pdf_page_text(page))
            finally:
                page.close()
        scanned = [index for index, text in enumerate(page_texts) if not text.strip()]
        if scanned and ocr_available():
            for done, index in enumerate(scanned, start=1):
                try:
                    page = document[index]
                    try:
                        image = _render_pdf_page(page)
                    finally:
                        page.close()
                except Exception as exc:  # noqa: BLE001 - pdfium reports damage as one error type per call site
                    raise UnreadableDocument(f"Page {index + 1} of the PDF could not be rendered for OCR.") from exc
                page_texts[index] = ocr_image(image, language=ocr_language)
                if on_ocr_page is not None:
                    on_ocr_page(done, len(scanned))
    finally:
        document.close()
    blocks = _paged_blocks(page_texts)
    if not blocks:
        raise EmptyDocument("The PDF has no extractable text (scanned pages need OCR first).")
    return Extracted(kind="pdf", blocks=blocks, page_count=page_count)


def _extract_image(fh: IO[bytes], kind: str, *, ocr_language: str, on_ocr_page: OcrProgress | None) -> Extracted:
    from PIL import Image, ImageSequence, UnidentifiedImageError  # image decoding loads only for images

    try:
        image = Image.open(fh)
        frames = getattr(image, "n_frames", 1)  # multi-page TIFF
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableDocument("The image is damaged or in a format that cannot be read.") from exc
    if frames > settings.KNOWLEDGE_MAX_PAGES:
        raise UnreadableDocument(f"The image has {frames} pages, over the limit of {settings.KNOWLEDGE_MAX_PAGES}.")
    page_texts = []
    for done, frame in enumerate(ImageSequence.Iterator(image), start=1):
        width, height = frame.size
        if width * height > _MAX_IMAGE_PIXELS:
            raise UnreadableDocument(
                f"The image is {width}x{height} pixels, over the limit of {_MAX_IMAGE_PIXELS} pixels per page."
            )
        try:
            frame.load()
        except (OSError, ValueError) as exc:
            raise UnreadableDocument(f"Page {done} of the image is damaged.") from exc
        page_texts.append(ocr_image(frame, language=ocr_language))
        if on_ocr_page is not None:
            on_ocr_page(done, frames)
    blocks = _paged_blocks(page_texts)
    if not blocks:
        raise EmptyDocument("No text was found in the image by OCR.")
    return Extracted(kind=kind, blocks=blocks, page_count=frames)


def _extract_docx(fh: IO[bytes]) -> Extracted:
    import docx  # parsers load with the first document of their kind, not with every process
    from docx.table import Table

    check_zip(fh)
    fh.seek(0)
    try:
        document = docx.Document(fh)
    except Exception as exc:  # noqa: BLE001 - python-docx surfaces zip/xml/key errors alike
        raise UnreadableDocument("The DOCX file is damaged or not a Word document.") from exc
    blocks: list[Block] = []
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            for row in item.rows:
                cells = [cell.text.strip() for cell in row.cells]
                if any(cells):
                    blocks.append(Block(text=" | ".join(cells)))
            continue
        text = item.text.strip()
        if not text:
            continue
        style = (item.style.name if item.style is not None else "") or ""
        match = re.match(r"Heading (\d)", style)
        if style == "Title":
            blocks.append(Block(text=text, kind="heading", level=1))
        elif match:
            blocks.append(Block(text=text, kind="heading", level=int(match.group(1))))
        else:
            blocks.append(Block(text=text))
    title = document.core_properties.title or ""
    return Extracted(kind="docx", blocks=blocks, title=title)


def extract(
    fh: IO[bytes], kind: str, *, ocr_language: str = "eng", on_ocr_page: OcrProgress | None = None
) -> Extracted:
    """Extract blocks; raises UnreadableDocument/EmptyDocument with a human reason.

    `ocr_language` is Tesseract's ("eng", "eng+deu"); `on_ocr_page(done, total)` is called after each page read
    by OCR (slow: seconds per page), so the caller can report progress."""
    fh.seek(0)
    if kind == "pdf":
        extracted = _extract_pdf(fh, ocr_language=ocr_language, on_ocr_page=on_ocr_page)
    elif kind in IMAGE_KINDS:
        extracted = _extract_image(fh, kind, ocr_language=ocr_language, on_ocr_page=on_ocr_page)
    elif kind == "docx":
        extracted = _extract_docx(fh)
    elif kind in TEXT_KINDS:
        text = _decode_text(fh.read())
        extractor = {
            "markdown": _extract_markdown,
            "text": _extract_text,
            "html": _extract_html,
            "csv": _extract_csv,
            "json": _extract_json,
        }[kind]
        extracted = extractor(text)
    else:
        raise UnsupportedDocument(f"Unsupported document type {kind!r}.")
    if not any(block.text.strip() for block in extracted.blocks if block.kind == "para"):
        if not extracted.blocks:
            raise EmptyDocument("The document contains no text.")
    return extracted
