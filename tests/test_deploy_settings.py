"""Production settings as an operator starts them: `check --deploy` has nothing to say, and secrets at rest need
encryption keys of their own. Each case loads the settings in a process of its own, with only the environment a
deployment must provide."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from cryptography.fernet import Fernet

from conftest import ROOT


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        # The deployment's own knobs are unset: production's defaults are what is checked.
        if not name.startswith(("SECURE_", "SESSION_", "CSRF_", "FIELD_ENCRYPTION", "SECRET_KEY", "DEBUG"))
    }
    environment.update(DJANGO_SETTINGS_MODULE="config.settings.prod", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def production_secrets() -> dict[str, str]:
    return {"SECRET_KEY": secrets.token_urlsafe(64), "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode()}


def test_check_deploy_on_production_settings_reports_nothing_and_https_is_enforced():
    script = (
        "from django.conf import settings; from django.core.management import call_command; "
        "call_command('check', deploy=True, fail_level='WARNING'); "
        "print(settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, settings.SECURE_REDIRECT_EXEMPT)"
    )
    result = manage("shell", "-c", script, **production_secrets())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout + result.stderr, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr
    # HSTS for a year on every organisation's host, HTTPS redirects (not for probes), cookies only over HTTPS.
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line == "True 31536000 True True True ['^healthz$', '^readyz$', '^metrics$']", result.stdout


def test_production_refuses_to_start_without_encryption_keys_of_its_own():
    without_keys = manage("check", SECRET_KEY=secrets.token_urlsafe(64))
    assert without_keys.returncode != 0 and "Set FIELD_ENCRYPTION_KEYS" in without_keys.stderr
    bad_key = manage("check", SECRET_KEY=secrets.token_urlsafe(64), FIELD_ENCRYPTION_KEYS="not-a-fernet-key")
    assert bad_key.returncode != 0 and "not a Fernet key" in bad_key.stderr
