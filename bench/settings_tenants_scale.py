"""bench/tenants_scale.py's settings: the test settings plus the benchmark's own tenant app (bench.scale_app), whose
migration package the benchmark switches to add one migration at a time."""

from config.settings.test import *  # noqa: F403
from config.settings.test import INSTALLED_APPS, TENANT_APPS

TENANT_APPS = [*TENANT_APPS, "bench.scale_app"]
INSTALLED_APPS = [*INSTALLED_APPS, "bench.scale_app"]
MIGRATION_MODULES = {"scale_app": "bench.scale_app.migrations_v1"}
