"""Prerequisites outside Python that a marked suite needs (Chromium for `browser`, a Citus build, an OCR engine).

Missing one skips the suite on a developer's machine, with the hint to install it. Under CI (CI=true) it fails
instead: a CI run must never pass by skipping the suites it exists to run.
"""

from __future__ import annotations

import os

import pytest


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_prerequisite(what: str, *, present: bool, hint: str) -> None:
    """Skip (locally) or fail (CI=true) the calling test or fixture unless `present`; `hint` says how to get it."""
    if present:
        return
    if running_in_ci():
        pytest.fail(f"{what} is missing and CI=true: a CI run must not skip this suite. {hint}", pytrace=False)
    pytest.skip(f"{what} is missing: {hint}")
