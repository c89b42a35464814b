"""Settings shared by every environment. All knobs come from environment variables, read here."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

# --- Core -------------------------------------------------------------------------------------
SECRET_KEY = env("SECRET_KEY", default="dev-insecure-change-me")
DEBUG = env.bool("DEBUG", default=False)
BASE_DOMAIN = env("BASE_DOMAIN", default="localhost")
PUBLIC_PORT = env("PUBLIC_PORT", default="8000")  # port shown in links to tenant hosts ("" for 80/443)
PUBLIC_SCHEME = env("PUBLIC_SCHEME", default="http")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[BASE_DOMAIN, f".{BASE_DOMAIN}", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list(
    "CSRF_TRUSTED_ORIGINS",
    default=[f"{PUBLIC_SCHEME}://*.{BASE_DOMAIN}:{PUBLIC_PORT}", f"{PUBLIC_SCHEME}://{BASE_DOMAIN}:{PUBLIC_PORT}"],
)

# --- Apps: public schema (SHARED_APPS) vs. one schema per tenant (TENANT_APPS) -----------------
SHARED_APPS = [
    "daphne",  # first: provides the ASGI runserver
    "tenants",  # before django_tenants: our create_tenant/delete_tenant commands use our services
    "django_tenants",
    "core",
    "accounts",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
    "allauth",
    "allauth.account",
    "rest_framework",
    "drf_spectacular",
    "channels",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "iam",  # teams, sharing, API keys, invitations (per tenant)
    "knowledge",
    "agents",
    "usage",  # quotas sub-limits, metering, audit log
    "webhooks",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_URLCONF = "config.urls_public"
ROOT_URLCONF = "config.urls"
# New tenants are cloned from this migrated template schema instead of running every migration.
TENANT_BASE_SCHEMA = "_template"
TENANT_CREATION_FAKES_MIGRATIONS = True
# pgvector lives in its own schema, visible from every tenant's search_path.
PG_EXTRA_SEARCH_PATHS = ["extensions"]
TENANT_LIMIT_SET_CALLS = False  # always SET search_path: pooled connections must never keep a stale tenant

MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    "core.middleware.TenantMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.platform",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "config.asgi.application"

# --- Database: PostgreSQL with pgvector (embedded server in dev/test, any PostgreSQL in prod) --
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:54329/agentry")}
DATABASES["default"]["ENGINE"] = "django_tenants.postgresql_backend"
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
# Parallel test sessions (several developers on one machine) each get their own test database.
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DB_NAME", default="test_agentry")}
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, channel layer, Celery broker -------------------------------------------------
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # Every cache key (and so every rate-limit counter) carries the tenant's schema.
        "KEY_FUNCTION": "django_tenants.cache.make_key",
        "REVERSE_KEY_FUNCTION": "django_tenants.cache.reverse_key",
    }
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # Token streams are bursty: the default capacity of 100 drops messages (channels_redis #131).
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 5000, "expiry": 60},
    }
}

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TENANT_CACHE_SECONDS = 30
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # workers log through LOGGING below: JSON with tenant + request id

# --- Auth -------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", default="mandatory")
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Agentry <noreply@localhost>")

# --- API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["core.access.IsTenantMember"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Agentry API",
    "DESCRIPTION": "Multi-tenant AI agents over your own knowledge.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Static and media -------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))

# --- I18N -------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging: JSON lines carrying tenant and request id -----------------------------------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOG_FORMAT = env("LOG_FORMAT", default="json")  # "json" or "text"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "core.logging.ContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(tenant)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {"format": "%(asctime)s %(levelname)s [%(tenant)s %(request_id)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}

# django-tenants checks PG_EXTRA_SEARCH_PATHS against the database in AppConfig.ready(): expected.
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="Accessing the database during app initialization", category=RuntimeWarning)

# --- Dashboards (issue 7) -----------------------------------------------------------------------
# htmx partial updates: request.htmx tells a swap from a full page load.
INSTALLED_APPS += ["django_htmx"]  # noqa: F405
MIDDLEWARE += ["django_htmx.middleware.HtmxMiddleware"]  # noqa: F405

# --- Accounts, authentication and access control (issue 3) ---------------------------------------
# Public-schema apps: users, their emails, social logins, browser sessions and the JWT blacklist live
# with the user table (django-tenants #955: token_blacklist must share the schema of the user table).
_AUTH_SHARED_APPS = [
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "allauth.socialaccount.providers.github",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.usersessions",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
]
SHARED_APPS += _AUTH_SHARED_APPS
INSTALLED_APPS += [app for app in _AUTH_SHARED_APPS if app not in INSTALLED_APPS]
MIDDLEWARE += ["allauth.usersessions.middleware.UserSessionsMiddleware"]

# API authentication: tenant-bound JWT, then API keys, then the browser session (dashboard JS, Swagger UI).
# The first class answers unauthenticated calls with 401 + WWW-Authenticate.
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "accounts.authentication.TenantJWTAuthentication",
    "accounts.authentication.ApiKeyAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]
from datetime import timedelta  # noqa: E402

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "SIGNING_KEY": env("JWT_SIGNING_KEY", default=SECRET_KEY),
    "AUTH_HEADER_TYPES": ("Bearer",),
}
# Server-side pepper for API-key hashes (see iam.keys); rotating it invalidates every key.
API_KEY_PEPPER = env("API_KEY_PEPPER", default=SECRET_KEY)
INVITATION_MAX_AGE_DAYS = env.int("INVITATION_MAX_AGE_DAYS", default=7)

SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"] = ["core.access.IsTenantMember"]
SPECTACULAR_SETTINGS["SERVE_AUTHENTICATION"] = REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]

# allauth: mandatory verification, re-verified email changes, throttled logins (counters in the cache).
ACCOUNT_CHANGE_EMAIL = True
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Agentry] "
ACCOUNT_RATE_LIMITS = {
    "login_failed": env("RATE_LIMIT_LOGIN_FAILED", default="5/5m/ip,5/5m/key"),
    "login": "30/m/ip",
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "confirm_email": "1/3m/key",
    "change_password": "5/m/user",
    "manage_email": "10/m/user",
}
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True  # a verified provider email logs into the matching account
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_LOGIN_ON_GET = False  # the login start is a POST (CSRF-protected), never a bare link
SOCIALACCOUNT_STORE_TOKENS = False
USERSESSIONS_TRACK_ACTIVITY = True

# Third-party login: each provider is switched on by its env variables (or a SocialApp in the admin).
SOCIALACCOUNT_PROVIDERS: dict = {}
if env("GOOGLE_CLIENT_ID", default=""):
    SOCIALACCOUNT_PROVIDERS["google"] = {
        "APPS": [{"client_id": env("GOOGLE_CLIENT_ID"), "secret": env("GOOGLE_CLIENT_SECRET", default=""), "key": ""}],
        "SCOPE": ["profile", "email"],
    }
if env("GITHUB_CLIENT_ID", default=""):
    SOCIALACCOUNT_PROVIDERS["github"] = {
        "APPS": [{"client_id": env("GITHUB_CLIENT_ID"), "secret": env("GITHUB_CLIENT_SECRET", default=""), "key": ""}],
        "SCOPE": ["user:email"],
    }
if env("OIDC_CLIENT_ID", default=""):
    SOCIALACCOUNT_PROVIDERS["openid_connect"] = {
        "APPS": [
            {
                "provider_id": env("OIDC_PROVIDER_ID", default="oidc"),
                "name": env("OIDC_NAME", default="Single sign-on"),
                "client_id": env("OIDC_CLIENT_ID"),
                "secret": env("OIDC_CLIENT_SECRET", default=""),
                "settings": {"server_url": env("OIDC_SERVER_URL")},
            }
        ]
    }
