"""Settings, read from the environment through django-environ.

Every variable falls back to an embedded default (SQLite and a filesystem broker in
``HISP_DATA_DIR``, secrets generated there on first run) so the quick start needs nothing.
Every variable is documented in README.md and docker/.env.example.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from hisp.bootstrap import generated_secret, new_kek, new_secret_key
from hisp.durations import parse_duration
from hisp.proxies import Network, parse_networks
from hisp.smtp.trace import is_host_name

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.FileAwareEnv()  # NAME_FILE variants for every secret


def _whole(name: str, text: str, *, minimum: int = 1) -> int:
    """A count from the environment, or a start-up error that names the variable."""
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ImproperlyConfigured(f"{name} must be a whole number of at least {minimum}: {text!r}")
    return value


def _duration(name: str, text: str, *, positive: bool = True) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}: {error}") from None
    if positive and not value:
        raise ImproperlyConfigured(f"{name} must be longer than 0 seconds: {text!r}")
    return value


def _rate(name: str, text: str) -> float:
    """A positive, finite number (a rate) from the environment, or a start-up error."""
    try:
        value = float(text.strip())
    except ValueError:
        value = 0.0
    if not (value > 0.0 and math.isfinite(value)):
        raise ImproperlyConfigured(f"{name} must be a number above 0: {text!r}")
    return value


def _share(name: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = 0.0
    if not 0.0 < value <= 1.0:
        raise ImproperlyConfigured(f"{name} must be a fraction above 0 and at most 1: {text!r}")
    return value


def _host_name(name: str, text: str) -> str:
    value = text.strip().rstrip(".")
    # What SMTP's EHLO, Message-IDs and every Received stamp carry (hisp/smtp/trace.py).
    if not is_host_name(value):
        raise ImproperlyConfigured(
            f"{name} must be a host name in ASCII letters, digits, hyphens and dots (an "
            f"internationalised name in its xn-- form): {text!r}"
        )
    return value


def _networks(name: str, text: str) -> tuple[Network, ...]:
    try:
        return parse_networks(text)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}: {error}") from None


# --- Data folder and secrets -----------------------------------------------------------------
DATA_DIR = Path(env.str("HISP_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
# Private: it holds the generated SECRET_KEY and key-encryption key, and the SQLite database.
DATA_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
REQUIRE_SECRETS = env.bool("HISP_REQUIRE_SECRETS", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="") or generated_secret(
    DATA_DIR / "secret_key", name="SECRET_KEY", make=new_secret_key, require=REQUIRE_SECRETS
)
HISP_KEY_ENCRYPTION_KEY = env.str("HISP_KEY_ENCRYPTION_KEY", default="") or generated_secret(
    DATA_DIR / "key_encryption_key",
    name="HISP_KEY_ENCRYPTION_KEY",
    make=new_kek,
    require=REQUIRE_SECRETS,
)

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Reverse proxies in front of the web role (addresses and CIDR networks): only a request from
# one of these has its client address taken from X-Forwarded-For and is secure by its
# X-Forwarded-Proto (hisp/proxies.py). Empty: nobody's headers are believed.
HISP_TRUSTED_PROXIES = _networks(
    "HISP_TRUSTED_PROXIES", env.str("HISP_TRUSTED_PROXIES", default="")
)

# --- Identity of this HISP -------------------------------------------------------------------
HISP_HOSTNAME = _host_name("HISP_HOSTNAME", env.str("HISP_HOSTNAME", default="localhost"))
# Base URL of the web service: CRL distribution points, AIA and OCSP URLs are built on it.
HISP_WEB_URL = env.str("HISP_WEB_URL", default="http://localhost:8000").rstrip("/")
# Partners fetch our CRLs, CA certificates and OCSP answers at HISP_WEB_URL: always answer it.
_web_host = urlsplit(HISP_WEB_URL).hostname
if _web_host and _web_host not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(_web_host)

# --- Mail flow -------------------------------------------------------------------------------
HISP_MAX_MESSAGE_BYTES = env.int("HISP_MAX_MESSAGE_BYTES", default=25 * 1024 * 1024)
# Requests one user's programs may make to the mail API in a minute (0: no limit): a program
# in a tight loop, or a stolen app password, then cannot crowd out the others.
HISP_API_REQUESTS_PER_MINUTE = _whole(
    "HISP_API_REQUESTS_PER_MINUTE",
    env.str("HISP_API_REQUESTS_PER_MINUTE", default="600"),
    minimum=0,
)
# Recipients one hosted address may be given in any hour through the webmail, the submission
# port and the mail API (0: no limit). A stolen password then sends that much at most before
# staff notice; the operator's `manage.py send` is not counted.
HISP_SEND_RECIPIENTS_PER_HOUR = _whole(
    "HISP_SEND_RECIPIENTS_PER_HOUR",
    env.str("HISP_SEND_RECIPIENTS_PER_HOUR", default="1000"),
    minimum=0,
)
HISP_MDN_PROCESSED_TIMEOUT = parse_duration(env.str("HISP_MDN_PROCESSED_TIMEOUT", default="1h"))
HISP_MDN_DISPATCHED_TIMEOUT = parse_duration(
    env.str("HISP_MDN_DISPATCHED_TIMEOUT", default="24h")
)
HISP_RETRY_PERIOD = parse_duration(env.str("HISP_RETRY_PERIOD", default="3d"))
# A received message whose processing fails for a transient reason (a signer's CRL or OCSP
# responder unreachable) is retried this long after it arrived; keep it under the senders'
# processed-MDN timeout (the Implementation Guide's hour), after which they count it failed.
HISP_INBOUND_RETRY_PERIOD = parse_duration(env.str("HISP_INBOUND_RETRY_PERIOD", default="45m"))
HISP_SMTP_PORT = env.int("HISP_SMTP_PORT", default=2525)
HISP_SUBMISSION_PORT = env.int("HISP_SUBMISSION_PORT", default=2587)
HISP_SMTP_BIND = env.str("HISP_SMTP_BIND", default="127.0.0.1")
# Listener limits (hisp/smtp/protocol.py says why each exists; the defaults are its own). Checked
# here, so a bad value stops the start with its name rather than failing a session later.
# Sessions one listener holds from all addresses, and from one address (IPv6: its /64).
HISP_SMTP_MAX_SESSIONS = _whole(
    "HISP_SMTP_MAX_SESSIONS", env.str("HISP_SMTP_MAX_SESSIONS", default="400")
)
HISP_SMTP_MAX_SESSIONS_PER_ADDRESS = _whole(
    "HISP_SMTP_MAX_SESSIONS_PER_ADDRESS",
    env.str("HISP_SMTP_MAX_SESSIONS_PER_ADDRESS", default="50"),
)
# Idle timeout (RFC 5321 4.5.3.2.7: at least 5 minutes), and the shorter one of a listener
# holding HISP_SMTP_STRESS_SHARE of its sessions.
HISP_SMTP_IDLE_TIMEOUT = _duration(
    "HISP_SMTP_IDLE_TIMEOUT", env.str("HISP_SMTP_IDLE_TIMEOUT", default="5m")
)
HISP_SMTP_STRESS_SHARE = _share(
    "HISP_SMTP_STRESS_SHARE", env.str("HISP_SMTP_STRESS_SHARE", default="0.75")
)
HISP_SMTP_STRESS_TIMEOUT = _duration(
    "HISP_SMTP_STRESS_TIMEOUT", env.str("HISP_SMTP_STRESS_TIMEOUT", default="10s")
)
# Messages of HISP_MAX_MESSAGE_BYTES a listener's sessions may hold in memory at once.
HISP_SMTP_DATA_BUDGET_MESSAGES = _whole(
    "HISP_SMTP_DATA_BUDGET_MESSAGES", env.str("HISP_SMTP_DATA_BUDGET_MESSAGES", default="16")
)
# Recipients of one message (RFC 5321 4.5.3.1.8: at least 100), commands a session may send in
# a row without a mail transaction, and in all.
HISP_SMTP_MAX_RECIPIENTS = _whole(
    "HISP_SMTP_MAX_RECIPIENTS", env.str("HISP_SMTP_MAX_RECIPIENTS", default="100"), minimum=100
)
HISP_SMTP_JUNK_COMMAND_LIMIT = _whole(
    "HISP_SMTP_JUNK_COMMAND_LIMIT", env.str("HISP_SMTP_JUNK_COMMAND_LIMIT", default="100")
)
HISP_SMTP_SESSION_COMMAND_LIMIT = _whole(
    "HISP_SMTP_SESSION_COMMAND_LIMIT",
    env.str("HISP_SMTP_SESSION_COMMAND_LIMIT", default="20000"),
)
# Refused recipients per session: this many answered at once, then each after the delay, and
# past the limit the session is closed (slows down guessing which addresses exist).
HISP_SMTP_FAST_REFUSALS = _whole(
    "HISP_SMTP_FAST_REFUSALS", env.str("HISP_SMTP_FAST_REFUSALS", default="10"), minimum=0
)
HISP_SMTP_REFUSED_RECIPIENT_DELAY = _duration(
    "HISP_SMTP_REFUSED_RECIPIENT_DELAY",
    env.str("HISP_SMTP_REFUSED_RECIPIENT_DELAY", default="1s"),
    positive=False,
)
HISP_SMTP_REFUSED_RECIPIENT_LIMIT = _whole(
    "HISP_SMTP_REFUSED_RECIPIENT_LIMIT",
    env.str("HISP_SMTP_REFUSED_RECIPIENT_LIMIT", default="100"),
)
# AUTH commands one session may send (each one a password guess; the per-account limits of
# hisp/smtp/credentials.py count across sessions); one more gets 421 and the session is closed.
HISP_SMTP_AUTH_COMMAND_LIMIT = _whole(
    "HISP_SMTP_AUTH_COMMAND_LIMIT", env.str("HISP_SMTP_AUTH_COMMAND_LIMIT", default="5")
)
# POP3 retrieval over implicit TLS (hisp/pop3/), started by runsmtp beside the SMTP listeners
# on HISP_SMTP_BIND; 0 leaves it closed. Its idle timeout is RFC 1939's auto-logout timer,
# which must be at least 10 minutes; sessions are bounded like the SMTP listeners' (the stress
# share and timeout above apply to connections that have not logged in).
HISP_POP3_PORT = _whole("HISP_POP3_PORT", env.str("HISP_POP3_PORT", default="0"), minimum=0)
if HISP_POP3_PORT > 65535:
    raise ImproperlyConfigured(f"HISP_POP3_PORT must be between 0 and 65535: {HISP_POP3_PORT}")
HISP_POP3_IDLE_TIMEOUT = _duration(
    "HISP_POP3_IDLE_TIMEOUT", env.str("HISP_POP3_IDLE_TIMEOUT", default="10m")
)
if HISP_POP3_IDLE_TIMEOUT < timedelta(minutes=10):
    raise ImproperlyConfigured(
        "HISP_POP3_IDLE_TIMEOUT must be at least 10 minutes (RFC 1939 section 3)"
    )
HISP_POP3_MAX_SESSIONS = _whole(
    "HISP_POP3_MAX_SESSIONS", env.str("HISP_POP3_MAX_SESSIONS", default="200")
)
HISP_POP3_MAX_SESSIONS_PER_ADDRESS = _whole(
    "HISP_POP3_MAX_SESSIONS_PER_ADDRESS",
    env.str("HISP_POP3_MAX_SESSIONS_PER_ADDRESS", default="20"),
)
HISP_POP3_SESSION_COMMAND_LIMIT = _whole(
    "HISP_POP3_SESSION_COMMAND_LIMIT",
    env.str("HISP_POP3_SESSION_COMMAND_LIMIT", default="20000"),
)
HISP_TLS_CERT_FILE = env.str("HISP_TLS_CERT_FILE", default=str(DATA_DIR / "tls" / "cert.pem"))
HISP_TLS_KEY_FILE = env.str("HISP_TLS_KEY_FILE", default=str(DATA_DIR / "tls" / "key.pem"))
# Outer Subject replaced by this text when set (the real Subject travels inside the encryption).
HISP_NEUTRAL_SUBJECT = env.str("HISP_NEUTRAL_SUBJECT", default="")
# A worker's claim on a message or delivery; past it the sweeper presumes the worker dead and
# re-queues the work. Work stored but never picked up is re-queued after the grace period.
HISP_CLAIM_LEASE = parse_duration(env.str("HISP_CLAIM_LEASE", default="10m"))
HISP_QUEUE_GRACE = parse_duration(env.str("HISP_QUEUE_GRACE", default="2m"))
# The SMTP listener hands the ids of accepted messages to the workers in tasks of up to
# HISP_INGRESS_BATCH ids, waiting at most HISP_INGRESS_LINGER_MS after the first for more
# (hisp/services/batches.py). 1 id or 0 ms: one task per message, published at once.
HISP_INGRESS_BATCH = env.int("HISP_INGRESS_BATCH", default=16)
HISP_INGRESS_LINGER_MS = env.int("HISP_INGRESS_LINGER_MS", default=20)
# Longest a database statement of the SMTP listener may run (PostgreSQL; SQLite waits at most
# its 30 s busy timeout): past it the client gets 451 and retries (hisp/smtp/threads.py).
HISP_SMTP_DB_TIMEOUT = parse_duration(env.str("HISP_SMTP_DB_TIMEOUT", default="30s"))
HISP_SWEEP_INTERVAL = parse_duration(env.str("HISP_SWEEP_INTERVAL", default="60s"))
# Routes with hold_pending_certificate: how long a delivery waits for a usable certificate, and
# how often discovery is retried meanwhile.
HISP_PENDING_CERTIFICATE_HOLD = parse_duration(
    env.str("HISP_PENDING_CERTIFICATE_HOLD", default="3d")
)
HISP_PENDING_CERTIFICATE_RECHECK = parse_duration(
    env.str("HISP_PENDING_CERTIFICATE_RECHECK", default="15m")
)
# Unsecured inbound mail (not signed or not encrypted) is rejected; optionally the sender gets
# one courtesy notice per interval (never for auto-generated mail, never without encryption).
HISP_COURTESY_NOTICES = env.bool("HISP_COURTESY_NOTICES", default=False)
HISP_COURTESY_INTERVAL = parse_duration(env.str("HISP_COURTESY_INTERVAL", default="24h"))

# --- Certificate authority, key custody and trust bundles ----------------------------------
# "domain": one issuing CA per hosted domain; "community": one CA shared by all provider domains
# (and another shared by all patient-portal domains).
HISP_CA_SCOPE = env.str("HISP_CA_SCOPE", default="domain")
HISP_CA_KEY_BITS = env.int("HISP_CA_KEY_BITS", default=3072)
HISP_CA_VALIDITY = parse_duration(env.str("HISP_CA_VALIDITY", default="3650d"))
HISP_CERT_KEY_BITS = env.int("HISP_CERT_KEY_BITS", default=2048)  # 2048, 3072 or 4096
# Separate signing and encryption certificates (and keys) instead of one dual-use pair.
HISP_CERT_SEPARATE_KEYS = env.bool("HISP_CERT_SEPARATE_KEYS", default=False)
HISP_CERT_VALIDITY = parse_duration(env.str("HISP_CERT_VALIDITY", default="548d"))  # 18 months
HISP_CERT_RENEW_AFTER = parse_duration(env.str("HISP_CERT_RENEW_AFTER", default="365d"))
# Certificate policy OIDs put in every end-entity certificate (e.g. DirectTrust LoA/category).
HISP_CERT_POLICY_OIDS = env.list("HISP_CERT_POLICY_OIDS", default=[])
HISP_CRL_VALIDITY = parse_duration(env.str("HISP_CRL_VALIDITY", default="7d"))
HISP_CRL_REFRESH_BEFORE = parse_duration(env.str("HISP_CRL_REFRESH_BEFORE", default="2d"))
HISP_BUNDLE_REFRESH_INTERVAL = parse_duration(
    env.str("HISP_BUNDLE_REFRESH_INTERVAL", default="1h")
)
# Let CRL/OCSP/AIA fetches reach private and loopback addresses (closed deployments, tests).
HISP_FETCH_ALLOW_PRIVATE_NETWORKS = env.bool("HISP_FETCH_ALLOW_PRIVATE_NETWORKS", default=False)

# --- Discovery and DNS -----------------------------------------------------------------------
HISP_DNS_SERVERS = env.list("HISP_DNS_SERVERS", default=[])
# Let MX records lead egress to loopback, private and link-local addresses (a closed test
# network); otherwise only Route rows may, so a partner's DNS cannot aim us at internal services.
HISP_EGRESS_INTERNAL_MX = env.bool("HISP_EGRESS_INTERNAL_MX", default=False)
HISP_DNS_PORT = env.int("HISP_DNS_PORT", default=5353)
HISP_DNS_BIND = env.str("HISP_DNS_BIND", default="127.0.0.1")
# Response-rate limiting of UDP answers (hisp/dns/ratelimit.py says why; the defaults are its
# own): answers per second and burst per client network (/24, /56), every Nth answer over the
# limit sent empty and truncated so a real resolver retries over TCP (0: drop them all), and
# the client networks tracked at once. There is no "off": a rate of 0 is refused at start.
HISP_DNS_RATE_LIMIT = _rate("HISP_DNS_RATE_LIMIT", env.str("HISP_DNS_RATE_LIMIT", default="100"))
HISP_DNS_RATE_BURST = _whole(
    "HISP_DNS_RATE_BURST", env.str("HISP_DNS_RATE_BURST", default="200")
)
HISP_DNS_RATE_SLIP = _whole(
    "HISP_DNS_RATE_SLIP", env.str("HISP_DNS_RATE_SLIP", default="2"), minimum=0
)
HISP_DNS_RATE_NETWORKS = _whole(
    "HISP_DNS_RATE_NETWORKS", env.str("HISP_DNS_RATE_NETWORKS", default="16384")
)
# Time limit for one discovery level (DNS CERT with its IPKIX fetch, or LDAP), and how long LDAP
# results are kept (LDAP carries no TTL; DNS answers are kept for their own TTL).
HISP_DISCOVERY_TIMEOUT = parse_duration(env.str("HISP_DISCOVERY_TIMEOUT", default="10s"))
HISP_LDAP_CACHE_TTL = parse_duration(env.str("HISP_LDAP_CACHE_TTL", default="1h"))
# Publication (rundns, dnszone): A/AAAA of HISP_HOSTNAME when it lies in a hosted zone, and the
# directory (host[:port]) loaded with `manage.py ldif`, announced by SRV _ldap._tcp when set.
HISP_PUBLIC_IPV4 = env.str("HISP_PUBLIC_IPV4", default="")
HISP_PUBLIC_IPV6 = env.str("HISP_PUBLIC_IPV6", default="")
HISP_LDAP_SERVER = env.str("HISP_LDAP_SERVER", default="")

# --- Webmail ---------------------------------------------------------------------------------
HISP_SESSION_IDLE_TIMEOUT = parse_duration(env.str("HISP_SESSION_IDLE_TIMEOUT", default="15m"))
# Entries in Trash are purged after this long (webmail purge task / `manage.py webmail_purge`).
HISP_TRASH_RETENTION = parse_duration(env.str("HISP_TRASH_RETENTION", default="30d"))
# At most one "a message is waiting" notice (no PHI) per user per interval, for users who opt in.
HISP_NOTIFY_INTERVAL = parse_duration(env.str("HISP_NOTIFY_INTERVAL", default="1h"))
# How long a patient's invitation link (console -> webmail) can be used to set up the account.
HISP_INVITATION_TTL = parse_duration(env.str("HISP_INVITATION_TTL", default="7d"))

# --- Ordinary email (no PHI: waiting notices, patient invitations) --------------------------
# e.g. smtp+tls://user:password@relay.example.org:587 (EMAIL_URL_FILE for the secret form).
_email = env.email_url("EMAIL_URL", default="smtp://localhost:25")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email["EMAIL_HOST"]
EMAIL_PORT = _email["EMAIL_PORT"]
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"] or ""
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = 10  # seconds: a staff page waits for the relay; a dead one must not hang it
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default=f"no-reply@{HISP_HOSTNAME}")

# --- Django core -----------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "template_partials",
    "hisp",
    "webmail",
    "adminconsole",
]

MIDDLEWARE = [
    # First: everything after it, axes and the audit log included, sees the client's address.
    "hisp.proxies.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "hisp.sessions.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "webmail.uploads.UploadLimitMiddleware",
]

ROOT_URLCONF = "hisp.urls"
WSGI_APPLICATION = "hisp.wsgi.application"

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
                "csp.context_processors.nonce",
            ],
        },
    }
]

# libpq connection parameters (seconds; tcp_user_timeout in ms); DATABASE_URL's query overrides.
DATABASE_TCP_OPTIONS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60000,
}
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'hisp.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and immediate transactions let the web, SMTP and worker processes of the quick start
    # share one SQLite file without "database is locked" errors.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # psycopg 3 server-side binding: parameters travel apart from the SQL (bytea in binary),
        # instead of being escaped into the query text on the client (message bytes are large).
        options = DATABASES["default"].setdefault("OPTIONS", {})
        options.setdefault("server_side_binding", True)
        # Statements a connection runs often (the mail flow's dozen per message) are prepared
        # after 5 runs, so PostgreSQL stops parsing and planning them again. Needs direct
        # connections or session pooling (no transaction-mode pooler); set None to turn off.
        options.setdefault("prepare_threshold", 5)
        # A database host that vanishes without closing its connections (power lost, packets
        # dropped) must not hold a listener, worker or page for as long as the kernel's TCP
        # retries last (about 15 minutes): a minute to notice, then the usual retry paths.
        for name, value in DATABASE_TCP_OPTIONS.items():
            options.setdefault(name, value)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "webmail:login"
LOGIN_REDIRECT_URL = "webmail:inbox"

# Sessions: short idle timeout (refreshed on every request), never readable by scripts.
SESSION_COOKIE_AGE = int(HISP_SESSION_IDLE_TIMEOUT.total_seconds())
SESSION_SAVE_EVERY_REQUEST = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env.bool("HISP_SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Lockout of repeated failed sign-ins (django-axes).
AXES_FAILURE_LIMIT = env.int("HISP_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = parse_duration(env.str("HISP_LOGIN_COOLOFF", default="15m"))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "webmail/locked.html"  # a readable page instead of plain text

# Content Security Policy (django-csp 4): our own assets only, no inline scripts.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise scans it at start-up
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # the quick start serves assets without collectstatic

DATA_UPLOAD_MAX_MEMORY_SIZE = HISP_MAX_MESSAGE_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Files are not counted by DATA_UPLOAD_MAX_MEMORY_SIZE: this handler caps the whole body first.
FILE_UPLOAD_HANDLERS = [
    "webmail.uploads.BoundedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# --- Cache (discovery answers, revocation responses, rate limits) ----------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                          "LOCATION": str(DATA_DIR / "cache")}}

# --- Celery ----------------------------------------------------------------------------------
_broker_dir = DATA_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL in ("filesystem://", "filesystem:///"):
    # The same broker, named with the host kombu otherwise warns it "reverted" to on every
    # connection (every manage.py send, every worker start).
    CELERY_BROKER_URL = "filesystem://localhost//"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # default is ./control in the cwd
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_IGNORE_RESULT = True
# Deployments (and test runs) sharing one Redis keep their tasks apart by queue name.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task leaves the task for another worker
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Celery's Django fixup closes the worker's database connection before and after every task
# unless told to reuse it; a new PostgreSQL connection per task cost more than the task's own
# queries. hisp/celery.py recycles connections like Django's request cycle instead
# (close_old_connections: CONN_MAX_AGE, CONN_HEALTH_CHECKS, connections left broken by errors).
CELERY_DB_REUSE_MAX = 1_000_000
# Each worker process reserves a few tasks ahead so it never waits on a broker round trip
# between two messages. Safe with acks_late + reject_on_worker_lost: a reserved task stays
# unacknowledged in the broker until it has run, is handed back if the worker dies or shuts
# down, and every task claims its row with a conditional UPDATE, so a redelivery is harmless.
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = globals().get("CELERY_BEAT_SCHEDULE", {})
CELERY_BEAT_SCHEDULE.update({
    # PKI: renewal from 12 months, CRLs before nextUpdate, bundles when their interval is up.
    "pki-renew-certificates": {"task": "hisp.pki.renew_certificates", "schedule": 6 * 3600.0},
    "pki-regenerate-crls": {"task": "hisp.pki.regenerate_crls", "schedule": 3600.0},
    "pki-refresh-bundles": {"task": "hisp.pki.refresh_bundles", "schedule": 300.0},
    # Outside CAs' certificates we host: asked hourly, each one every 6 hours (revoked: unpublished).
    "pki-check-outside-revocation": {"task": "hisp.pki.check_outside_revocation",
                                     "schedule": 3600.0},
    # Mail flow: lost claims and due retries back to the queue; missing MDNs turned to failures.
    "mail-sweep": {"task": "hisp.mail.sweep",
                   "schedule": HISP_SWEEP_INTERVAL.total_seconds()},
    "mail-delivery-timeouts": {"task": "hisp.mail.check_delivery_timeouts",
                               "schedule": HISP_SWEEP_INTERVAL.total_seconds()},
    # Webmail: Trash past HISP_TRASH_RETENTION purged; "a message is waiting" notices (no PHI).
    "webmail-purge-trash": {"task": "webmail.purge_trash", "schedule": 3600.0},
    "webmail-waiting-notices": {"task": "webmail.send_waiting_notices", "schedule": 60.0},
    # Mail API: Idempotency-Keys older than webmail.api.submissions.KEY_LIFETIME forgotten.
    "webmail-forget-idempotency-keys": {"task": "webmail.forget_idempotency_keys",
                                        "schedule": 3600.0},
})
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Logging: ids and Message-IDs only, never bodies, subjects or keys -----------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Words from outside (SMTP commands, remote replies) reach the log: hisp.logsafety says why.
    "filters": {"control_characters": {"()": "hisp.logsafety.ControlCharacterFilter"},
                "expected_refusal": {"()": "hisp.logsafety.ExpectedRefusal"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["control_characters"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # django-axes announces its version and mode at INFO in every process, so every manage.py
    # command would print it before its output or its one-line error (README, Operator CLI).
    "loggers": {"axes.apps": {"level": "WARNING"},
                "django.security.DisallowedHost": {"filters": ["expected_refusal"]}},
}
