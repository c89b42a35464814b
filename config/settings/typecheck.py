"""Settings the type checker loads (django-stubs sets Django up to read the models): production's, without the
query django-tenants makes at start-up to validate PG_EXTRA_SEARCH_PATHS, so `make lint` needs no database.
Nothing runs with these settings."""

import os

# prod.py refuses to start without SECRET_KEY; reading models needs no secret one.
os.environ.setdefault("SECRET_KEY", "type-checking-only-not-a-secret-0123456789")
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", "dHlwZS1jaGVja2luZy1vbmx5LW5vdC1hLXNlY3JldC0=")  # nor encryption keys

from .prod import *  # noqa: E402, F403

SKIP_PG_EXTRA_VALIDATION = True
