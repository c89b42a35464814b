"""The client's models (clients/python/agentry/models.py) are what its generator makes of today's API contract."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from agentry import models
from django.core.management import call_command

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
REGENERATE = (
    "DJANGO_SETTINGS_MODULE=config.settings.typecheck .venv/bin/python manage.py spectacular --format openapi-json "
    "--file /tmp/agentry-schema.json && .venv/bin/python clients/python/scripts/generate_models.py "
    "/tmp/agentry-schema.json > clients/python/agentry/models.py"
)


def _generator():
    spec = importlib.util.spec_from_file_location("generate_models", CLIENT / "scripts" / "generate_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_models_match_the_api_schema(tmp_path):
    path = tmp_path / "schema.json"
    call_command("spectacular", "--format", "openapi-json", "--file", str(path))
    generated = _generator().render(json.loads(path.read_text()))
    committed = (CLIENT / "agentry" / "models.py").read_text()
    assert generated == committed, f"The API contract changed: regenerate the client's models with\n{REGENERATE}"


def test_models_name_every_component_and_keep_optional_and_nullable_fields_apart():
    schema_names = {"Document", "SearchResult", "ChatAnswer", "RunEvent", "Error", "TokenPair", "AgentVersionDiff"}
    assert schema_names <= set(vars(models))
    assert models.Error.__annotations__["code"] == models.ErrorCodeEnum
    assert models.Document.__annotations__["error"] == str | None
    assert models.Error.__required_keys__ == frozenset({"code", "detail"})
    assert models.AgentVersionDiff.__required_keys__ == frozenset({"from", "to", "changes"})  # "from": functional form
