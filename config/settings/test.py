"""pytest settings: real PostgreSQL and Redis, never SQLite or fakes."""

from .base import *  # noqa: F403
from .base import CACHES, CHANNEL_LAYERS, env

SECRET_KEY = "test-secret-key"
# Tests use their own Redis database so they never touch dev data.
TEST_REDIS_URL = env(
    "TEST_REDIS_URL", default=env("REDIS_URL", default="redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/14"
)
REDIS_URL = TEST_REDIS_URL
CACHES["default"]["LOCATION"] = TEST_REDIS_URL
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [{"address": TEST_REDIS_URL, "socket_timeout": 30}]
CELERY_BROKER_URL = TEST_REDIS_URL
CELERY_RESULT_BACKEND = TEST_REDIS_URL  # the diagnostic tasks' results (core.tenant_probe, usage.echo_context)
# Fast hashing in tests; production uses Argon2 (base.py).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
LOG_FORMAT = "text"
LOGGING["handlers"]["console"]["formatter"] = "text"  # noqa: F405
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Rate limits (issue 6): generous so suites never trip them by accident; rate-limit tests set their own.
RATE_LIMITS = {
    "chat": "100000/m",
    "search": "100000/m",
    "write": "100000/m",
    "read": "100000/m",
    "auth": "100000/m",
    "ws_message": "100000/m",
}
RATE_LIMITS_TENANT = dict(RATE_LIMITS)
QUOTA_LIMITS_CACHE_SECONDS = 0  # tests change plans and sub-limits and expect them at once
TENANT_HOST_CACHE_SECONDS = 0  # tests create and roll back tenants; tenants/tests/test_resolution.py turns it on
WORKER_PRELOAD_EMBEDDER = False  # test workers load the model only if a test needs it (keeps e2e start-up lean)

# Stored files of a test session live apart from dev data and from other sessions (TEST_DB_NAME);
# the session wipes them at start (conftest.py), since rolled-back rows leave their files behind.
MEDIA_ROOT = BASE_DIR / "var" / "test-media" / DATABASES["default"]["TEST"]["NAME"]  # noqa: F405
KNOWLEDGE_STORAGE = {
    "BACKEND": "django.core.files.storage.FileSystemStorage",
    "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": None},
}
