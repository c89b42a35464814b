"""Settings for `bench/chat_streaming.py --limits-cache`: the test settings with the per-process quota-limits
cache at its production default (config/settings/base.py: 10 s; the test settings turn it off so tests see plan
changes at once), and no Celery result backend, as deployed (the test settings keep one for two diagnostic
tasks)."""

from config.settings.test import *  # noqa: F403

QUOTA_LIMITS_CACHE_SECONDS = 10
CELERY_RESULT_BACKEND = None
