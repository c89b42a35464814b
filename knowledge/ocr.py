"""OCR for scanned PDF pages and image uploads: Tesseract (Debian's `tesseract-ocr`), run as a subprocess.

    if ocr_available():
        text = ocr_image(image, language="eng")       # one Pillow image (a rendered page, a TIFF frame)
    ocr_language_validate("eng+deu")                   # InvalidInput unless every language is installed

Why Tesseract and not an ONNX model from PyPI: it reads many languages (one Debian package each,
`tesseract-ocr-<lang>`), so a knowledge base can name its language and we can check it against what is
installed; it adds no Python wheels of its own. We call the binary directly (stdin -> stdout) rather than
through a wrapper: one call, no temporary files. Images are decoded by Pillow first (with a pixel limit
against decompression bombs) and handed over as PNG, so Tesseract only ever parses PNG we wrote.
"""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

from django.conf import settings

from core.errors import DomainError, ErrorCode, InvalidInput

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_OCR_LANGUAGE = "eng"
_LANGUAGE_SPEC = re.compile(r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
# Tesseract's own data that is not a language ("osd" detects orientation and script only).
_NOT_LANGUAGES = {"osd", "equ"}


class OcrFailed(DomainError):
    code = ErrorCode.UNREADABLE_DOCUMENT
    status = 422


def ocr_command() -> str | None:
    """The Tesseract executable, or None when no OCR engine is installed."""
    command: str = settings.KNOWLEDGE_OCR_COMMAND
    return shutil.which(command)


def ocr_available() -> bool:
    return ocr_command() is not None


@functools.cache
def _installed_languages(command: str) -> frozenset[str]:
    result = subprocess.run(  # noqa: S603 - fixed arguments, executable from settings
        [command, "--list-langs"], capture_output=True, text=True, timeout=30, check=False
    )
    lines = (result.stdout or result.stderr).splitlines()
    return frozenset(line.strip() for line in lines[1:] if line.strip() and line.strip() not in _NOT_LANGUAGES)


def installed_ocr_languages() -> frozenset[str]:
    """Languages the OCR engine can read here (empty without an engine). Cached per process."""
    command = ocr_command()
    return _installed_languages(command) if command else frozenset()


def ocr_language_validate(spec: str) -> str:
    """`spec` ("eng", or several joined by "+": "eng+deu") if every language in it is installed.

    Without an OCR engine any well-formed spec is accepted: the knowledge base keeps its setting and scanned
    documents fail with "scanned pages need OCR first" until an engine is installed."""
    spec = (spec or "").strip()
    if not _LANGUAGE_SPEC.match(spec):
        raise InvalidInput(
            "ocr_language must be Tesseract language codes joined by '+', e.g. 'eng' or 'eng+deu'.",
            field="ocr_language",
        )
    installed = installed_ocr_languages()
    missing = [lang for lang in spec.split("+") if lang not in installed]
    if installed and missing:
        raise InvalidInput(
            f"OCR language(s) not installed on this server: {', '.join(missing)}. "
            f"Installed: {', '.join(sorted(installed))}.",
            field="ocr_language",
        )
    return spec


def ocr_image(image: Image, *, language: str) -> str:
    """The text Tesseract reads in `image`. Raises OcrFailed if the engine fails or takes too long."""
    command = ocr_command()
    if command is None:
        raise OcrFailed("No OCR engine is installed on this server (scanned pages need OCR first).")
    png = io.BytesIO()
    image.convert("L").save(png, format="PNG")
    # One thread per call: workers already run one document per process, and Tesseract's OpenMP threads
    # make each page slower, not faster, on a shared CPU.
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        result = subprocess.run(  # noqa: S603 - argument list, language validated against installed ones
            [command, "stdin", "stdout", "-l", language, "--dpi", str(settings.KNOWLEDGE_OCR_DPI)],
            input=png.getvalue(),
            capture_output=True,
            timeout=settings.KNOWLEDGE_OCR_PAGE_TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OcrFailed(f"OCR took longer than {settings.KNOWLEDGE_OCR_PAGE_TIMEOUT} seconds on one page.") from exc
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OcrFailed(f"OCR failed: {detail[-1] if detail else 'the engine exited with an error'}.")
    return result.stdout.decode("utf-8", "replace").replace("\f", "")
