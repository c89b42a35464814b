"""Local development on the embedded stack (`make up`)."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", default="optional")
LOG_FORMAT = env("LOG_FORMAT", default="text")
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT  # noqa: F405
# A line per task received and finished (beat's fair dispatch every 5 s) would bury the URL `make up` prints.
LOGGING["loggers"].update({"celery.app.trace": {"level": "WARNING"}, "celery.worker.strategy": {"level": "WARNING"}})  # noqa: F405
