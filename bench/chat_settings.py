"""Settings for `bench/chat_streaming.py --limits-cache`: the test settings with what they turn off for tests put
back as deployed: the per-process quota-limits and host -> tenant caches (10 s each, config/settings/base.py), and
no Celery result backend (the test settings keep one for two diagnostic tasks)."""

import os

from config.settings.test import *  # noqa: F403

QUOTA_LIMITS_CACHE_SECONDS = 10
TENANT_HOST_CACHE_SECONDS = 10  # host -> tenant cache at its production default too
CELERY_RESULT_BACKEND = None

# --compare: each stack's web process and worker share a broker key prefix of their own, so a stack's runs are
# executed by its own worker (one "agents" queue for both would mix the before and after code and CPU figures).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,  # noqa: F405
    "global_keyprefix": os.environ.get("BENCH_BROKER_PREFIX", ""),
}
