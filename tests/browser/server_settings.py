"""Settings for the daphne process the browser tests drive: the test settings, plus mail written to files the
test can read (the verification link), since a separate server process has no django.core.mail.outbox."""

from config.settings.test import *  # noqa: F403
from config.settings.test import env

EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = env("BROWSER_MAIL_DIR")
