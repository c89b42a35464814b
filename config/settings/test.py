"""pytest settings: the production settings, changed only where a test session must differ.

Each override below says why. config/tests/test_settings_parity.py compares these settings (and the browser
tests' server settings) with production's and fails on any other difference, so a test can never pass on a
configuration the product does not ship. Real PostgreSQL and Redis, never SQLite or fakes.
"""

import os

# prod.py refuses to start without SECRET_KEY in the environment; a test session needs no secret one.
os.environ.setdefault("SECRET_KEY", "test-session-key-not-a-secret-0123456789")
# ...nor without FIELD_ENCRYPTION_KEYS of its own; a fixed, published key encrypts test secrets.
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", "dGVzdC1zZXNzaW9uLWtleS1ub3QtYS1zZWNyZXQtMDA=")

from .prod import *  # noqa: E402, F403
from .prod import BASE_DIR, CACHES, CHANNEL_LAYERS, DATABASES, REDIS_URL, env  # noqa: E402

# The test client and the browser tests' daphne speak plain HTTP on loopback; TLS is the ingress's job.
SECURE_SSL_REDIRECT = False

# A Redis database of the session's own (flushed at session start), so tests never touch dev data.
TEST_REDIS_URL = env("TEST_REDIS_URL", default=REDIS_URL.rsplit("/", 1)[0] + "/14")
REDIS_URL = TEST_REDIS_URL
CACHES["default"]["LOCATION"] = TEST_REDIS_URL
CACHES["sessions"]["LOCATION"] = TEST_REDIS_URL
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"] = TEST_REDIS_URL
CELERY_BROKER_URL = TEST_REDIS_URL

# Tests read sent mail from django.core.mail.outbox instead of an SMTP server.
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Hundreds of test users: Argon2's deliberate slowness would dominate the suite. Hashing is not under test.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Stored files and collected static files of a test session live apart from dev data and from other
# sessions (TEST_DB_NAME); the session wipes its media at start (conftest.py), since rolled-back rows leave
# their files behind, and collects static files once (conftest.py), as a deployment does.
_session_dir = BASE_DIR / "var" / "test-media" / DATABASES["default"]["TEST"]["NAME"]
MEDIA_ROOT = _session_dir / "media"
STATIC_ROOT = _session_dir / "static"
KNOWLEDGE_STORAGE = {
    "BACKEND": "django.core.files.storage.FileSystemStorage",
    "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": None},
}
