"""docker-compose.yml runs the product's image as web, workers and beat: every one of them mounts the same media
volume at the image's MEDIA_ROOT, so a file web accepted is there for the ingest worker (Docker does not run
here: the files are read instead)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _image_media_root() -> str:
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.rindex("\nFROM ") :]  # the stage that ships
    found = re.findall(r"\bMEDIA_ROOT=(\S+)", runtime)
    assert len(found) == 1, "the runtime image sets MEDIA_ROOT once"
    return found[0]


def _mounts(service: dict) -> dict[str, str]:
    """target -> source of the service's volumes (short syntax `source:target[:mode]` or long syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source"), volume["target"]
        mounts[target] = source
    return mounts


def test_every_service_running_the_product_mounts_one_media_volume_at_media_root():
    compose = _compose()
    media_root = _image_media_root()
    product = {name: service for name, service in compose["services"].items() if "build" in service}
    commands = {name: str(service.get("command", "")) for name, service in product.items()}
    assert "web" in product
    assert any("celery" in c and "worker" in c and "ingest" in c for c in commands.values()), commands
    assert any("celery" in c and " beat" in c for c in commands.values()), commands
    sources = set()
    for name, service in product.items():
        mounts = _mounts(service)
        assert media_root in mounts, f"{name} does not mount anything at MEDIA_ROOT ({media_root})"
        assert service.get("environment", {}).get("MEDIA_ROOT", media_root) == media_root, name
        sources.add(mounts[media_root])
    assert len(sources) == 1, f"services mount different volumes at MEDIA_ROOT: {sources}"
    assert sources <= set(compose.get("volumes") or {}), "the media volume is a named volume, declared once"


def test_the_image_creates_media_root_for_its_unprivileged_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.rindex("\nFROM ") :]
    media_root = _image_media_root()
    before_user = runtime[: runtime.index("\nUSER ")]
    assert re.search(rf"mkdir -p {re.escape(media_root)}\b", before_user)
    assert re.search(r"chown -R agentry:agentry /app/var\b", before_user)
