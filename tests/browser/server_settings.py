"""Settings for the daphne process the browser tests drive: the test settings, plus mail written to files
the test can read (the verification link) and static files served straight from the finders."""

from config.settings.test import *  # noqa: F403
from config.settings.test import env

DEBUG = False  # the friendly error pages, as in production
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = env("BROWSER_MAIL_DIR")
WHITENOISE_USE_FINDERS = True  # no collectstatic step before the tests
WHITENOISE_AUTOREFRESH = True
