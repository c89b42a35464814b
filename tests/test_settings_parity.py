"""The tests run the product's settings: every setting of the test configurations equals production's, except
the few a test session must change, each listed here with its reason. A new override (or a production change
the tests do not follow) fails this test; so does a listed override that no longer differs.

Each configuration is loaded in its own process with the same environment, and its settings compared by value.
Where tests only rename a resource (their own Redis database, their own folders), the test value is mapped
back to production's before comparing, so the settings built from it (cache, channel layer, broker, storage)
must match in everything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

# Resources a test session renames: the test value stands for production's.
RENAMED = ("REDIS_URL", "MEDIA_ROOT", "STATIC_ROOT")
DUMP = f"""
import json
from django.conf import settings
settings._setup()
names = [name for name in dir(settings._wrapped) if name.isupper() and name != "SETTINGS_MODULE"]
print(json.dumps({{
    "values": {{name: repr(getattr(settings, name)) for name in names}},
    "renamed": {{name: str(getattr(settings, name)) for name in {RENAMED!r}}},
}}))
"""

TEST_OVERRIDES = {
    "TEST_REDIS_URL": "the session's own Redis database, flushed at session start",
    "EMAIL_BACKEND": "tests read sent mail from django.core.mail.outbox",
    "PASSWORD_HASHERS": "Argon2's deliberate slowness would dominate a suite with hundreds of users",
    "SECURE_SSL_REDIRECT": "the test client and the browser tests' server speak plain HTTP on loopback",
}
BROWSER_SERVER_OVERRIDES = {
    **TEST_OVERRIDES,
    "EMAIL_BACKEND": "the browser tests' server writes mail to files the test reads (no shared outbox)",
    "EMAIL_FILE_PATH": "where those files go",
}


def settings_of(module: str) -> dict[str, dict[str, str]]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": module,
        "SECRET_KEY": "settings-parity-check",  # production needs one; the same for every configuration
        "BROWSER_MAIL_DIR": "/nonexistent/mail",
    }
    env.pop("DB_POOL", None)
    output = subprocess.run(
        [sys.executable, "-c", DUMP], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def differences(module: str) -> dict[str, tuple[str | None, str | None]]:
    production, tested = settings_of("config.settings.prod"), settings_of(module)
    renames = [(tested["renamed"][name], production["renamed"][name]) for name in RENAMED]
    found = {}
    for name in sorted(set(production["values"]) | set(tested["values"])):
        value = original = tested["values"].get(name)
        for test_value, production_value in renames:
            value = value and value.replace(test_value, production_value)
        if name not in RENAMED and value != production["values"].get(name):
            found[name] = (production["values"].get(name), original)
    return found


@pytest.mark.parametrize(
    ("module", "allowed"),
    [("config.settings.test", TEST_OVERRIDES), ("tests.browser.server_settings", BROWSER_SERVER_OVERRIDES)],
)
def test_test_settings_differ_from_production_only_where_listed(module, allowed):
    found = differences(module)
    unexplained = {name: values for name, values in found.items() if name not in allowed}
    assert not unexplained, f"{module} differs from production beyond its listed overrides: {unexplained}"
    stale = sorted(set(allowed) - set(found))
    assert not stale, f"listed as overridden by {module} but equal to production: {stale}"
