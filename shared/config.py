"""Settings come from the environment (12-factor); a bad value stops start-up with one clear line."""

import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from cryptography.fernet import Fernet

from shared.private_files import written_once

SIMULATOR_ACCOUNT_SID = "AC" + "0" * 32
SIMULATOR_AUTH_TOKEN = "simulator-auth-token"
STAND_IN_STRIPE_API_KEY = "sk_test_creditq_stand_in"  # the Stripe stand-in's well-known key and webhook secret
STAND_IN_STRIPE_WEBHOOK_SECRET = "whsec_creditq_stand_in"
PAYMENT_GATEWAYS = ("stripe", "simulated")
BROKERS = ("redis", "rabbitmq")  # CREDITQ_BROKER: where the dramatiq jobs queue; Redis serves the rest either way
_LOOPBACK = ("127.0.0.1", "localhost", "::1")  # where a simulator may run with its own well-known credentials


class ConfigError(ValueError):
    """Raised with a message fit to print as the single line a failed start-up shows."""


@dataclass(frozen=True)
class SmtpSettings:
    """Where email goes when SMTP_URL is set: smtp:// (plain), smtp+starttls://, smtps:// (TLS from the start)."""

    host: str
    port: int
    security: str  # "none" | "starttls" | "tls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RateLimit:
    """Requests a key may make: `per_second` on average, up to `burst` at once."""

    per_second: float
    burst: int


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None  # None: start the embedded redis-server
    twilio_account_sid: str
    twilio_auth_token: str = field(repr=False)  # secrets stay out of any repr that reaches a log
    twilio_api_base: str | None  # None: the simulator started by `creditq dev`
    public_base_url: str
    admin_key: str = field(repr=False)
    data_dir: Path
    # CREDITQ_SECRET_KEY: Fernet keys, the first encrypts and all decrypt (shared.secrets)
    secret_keys: tuple[str, ...] = field(repr=False)
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_processes: int = 1  # processes serving the one listening socket (creditq web --processes)
    simulator_port: int = 8081
    worker_processes: int = 1
    # a send waits on Twilio most of its time (100-300 ms a create from outside its network): threads, not cores
    worker_threads: int = 16
    # how far the worker processes step back from the CPU (0-19, shared.cpu_priority; 0: not at all)
    worker_nice: int = 19
    # how far the web steps forward (-20-0; 0: not at all): needs CAP_SYS_NICE (or RLIMIT_NICE), else it keeps its nice
    web_nice: int = -20
    web_threads: int = 10  # the web process's threads for database work; its pool holds as many connections
    hold_ttl_seconds: int = 900
    # how long an accepted message or a call may wait before the sweeper enqueues it again (a call without a sid:
    # before it is looked for at Twilio)
    sweep_stale_seconds: int = 60
    # how long a Twilio request waits for its answer; a create left unanswered is reconciled, never resent
    twilio_timeout_seconds: float = 15.0
    # how long the active scheduler's lease outlives its last renewal: a standby takes over within this
    scheduler_lease_seconds: float = 15.0
    smtp: SmtpSettings | None = None  # None: emails go to the file outbox under data_dir/outbox
    email_from: str = "creditq@localhost"
    payment_gateway: str = "stripe"  # PAYMENT_GATEWAY, read by shared.billing.payments.gateway_from_settings
    stripe_api_key: str = field(default=STAND_IN_STRIPE_API_KEY, repr=False)
    stripe_webhook_secret: str = field(default=STAND_IN_STRIPE_WEBHOOK_SECRET, repr=False)
    stripe_api_base: str = "http://127.0.0.1:8082"  # STRIPE_API_BASE; the stand-in (`creditq stripe-sim`) by default
    stripe_sim_port: int = 8082
    payment_sweep_seconds: int = 120  # a payment open this long is reconciled with the gateway
    sweep_interval_seconds: int | None = None  # the scheduler's safety nets run this often; None: their own pace
    key_rate_limit: RateLimit | None = RateLimit(100.0, 200)  # per account key; None: not limited
    operator_rate_limit: RateLimit | None = None  # the operator's key; None: exempt
    idempotency_claim_timeout_seconds: int = 60  # a claim whose request never answered is released after this
    new_account_days: int = 7  # accounts younger than this have a daily send cap (0: no account has one)
    new_account_daily_messages: int = 500  # the cap: messages per local day
    shared_short_code: str | None = None  # SHARED_SHORT_CODE: accounts send from it under a keyword; None: off
    # CREDITQ_ENV: "production" refuses webhook endpoints on private addresses or over http, the simulated payment
    # gateway and the Stripe stand-in's well-known key and webhook secret; "development" (`creditq dev`) allows them
    environment: str = "development"
    webhooks: "WebhookSettings" = field(default_factory=lambda: WebhookSettings())
    metrics_host: str = "127.0.0.1"  # where the worker's and the scheduler's Prometheus servers listen
    worker_metrics_port: int = 9191
    scheduler_metrics_port: int = 9192
    shutdown_timeout_seconds: float = 30.0  # how long a stopping web process lets its requests in flight finish
    retention_days: int | None = None  # message bodies and recipients' numbers are redacted after this; None: kept

    # Webhook endpoints may be http and on this machine's or private addresses only when CREDITQ_ENV=development is
    # set (`creditq dev`, the test stacks): a deployment that says nothing keeps them to https on public addresses
    development: bool = False


ENVIRONMENTS = ("production", "development")


@dataclass(frozen=True)
class WebhookSettings:
    """How events are delivered to webhook endpoints (shared.events.delivery): each attempt waits `timeout_seconds`;
    a failed one is retried after `retry_base_seconds`, doubling up to `retry_max_seconds`, until
    `retry_window_seconds` after the first try; `concurrency` attempts of one account at once at most
    (shared.events.slots)."""

    timeout_seconds: float = 10.0
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 8 * 3600.0
    retry_window_seconds: float = 3 * 24 * 3600.0
    concurrency: int = 4


def _port(name: str, raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}={raw!r} is out of the port range 0-65535")
    return port


def _whole_number(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None


def _positive_int(name: str, raw: str) -> int:
    value = _whole_number(name, raw)
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1")
    return value


def _non_negative_int(name: str, raw: str) -> int:
    value = _whole_number(name, raw)
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must be 0 or more")
    return value


def _nice(name: str, raw: str) -> int:
    value = _non_negative_int(name, raw)
    if value > 19:
        raise ConfigError(f"{name}={raw!r} must be 19 or less (the lowest CPU priority)")
    return value


def _negative_nice(name: str, raw: str) -> int:
    value = _whole_number(name, raw)
    if value > 0:
        raise ConfigError(f"{name}={raw!r} must be 0 or less (0: the priority the process started with)")
    if value < -20:
        raise ConfigError(f"{name}={raw!r} must be -20 or more (the highest CPU priority)")
    return value


def _positive_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not 0 < value < math.inf:
        raise ConfigError(f"{name}={raw!r} must be more than 0 seconds")
    return value


def _webhooks(env) -> WebhookSettings:
    defaults = WebhookSettings()
    read = {name: _positive_seconds(variable, env[variable]) if env.get(variable) else getattr(defaults, name)
            for name, variable in (("timeout_seconds", "CREDITQ_WEBHOOK_TIMEOUT_SECONDS"),
                                   ("retry_base_seconds", "CREDITQ_WEBHOOK_RETRY_BASE_SECONDS"),
                                   ("retry_max_seconds", "CREDITQ_WEBHOOK_RETRY_MAX_SECONDS"),
                                   ("retry_window_seconds", "CREDITQ_WEBHOOK_RETRY_WINDOW_SECONDS"))}
    if env.get("CREDITQ_WEBHOOK_CONCURRENCY"):
        read["concurrency"] = _positive_int("CREDITQ_WEBHOOK_CONCURRENCY", env["CREDITQ_WEBHOOK_CONCURRENCY"])
    return WebhookSettings(**read)


def _environment(raw: str) -> str:
    if raw not in ENVIRONMENTS:
        raise ConfigError(f"CREDITQ_ENV={raw!r} must be one of: {', '.join(ENVIRONMENTS)}")
    return raw


def _short_code(raw: str) -> str:
    """A US short code: five or six digits, as Twilio writes it in From and To."""
    if not re.fullmatch(r"[0-9]{5,6}", raw):
        raise ConfigError(f"SHARED_SHORT_CODE={raw!r} must be a short code of 5 or 6 digits, such as 12345")
    return raw


def _rate_limit(env, rate_name: str, burst_name: str, default: tuple[str, str]) -> RateLimit | None:
    """A rate (requests per second, decimals allowed) and a burst; a rate of 0 means no limit."""
    raw_rate, raw_burst = env.get(rate_name, default[0]), env.get(burst_name, default[1])
    try:
        rate = float(raw_rate)
    except ValueError:
        raise ConfigError(f"{rate_name}={raw_rate!r} is not a number of requests per second") from None
    if not 0 <= rate < math.inf:
        raise ConfigError(f"{rate_name}={raw_rate!r} must be 0 (no limit) or more")
    burst = _positive_int(burst_name, raw_burst)
    return RateLimit(rate, burst) if rate > 0 else None


def broker_choice(env) -> tuple[str, str | None]:
    """CREDITQ_BROKER (default redis) and, for rabbitmq, AMQP_URL; read by every process before it binds its actors."""
    broker = env.get("CREDITQ_BROKER") or "redis"
    if broker not in BROKERS:
        raise ConfigError(f"CREDITQ_BROKER={broker!r} is not one of: {', '.join(BROKERS)}")
    if broker == "redis":
        return broker, None
    amqp_url = env.get("AMQP_URL") or None
    if amqp_url is None:
        raise ConfigError("CREDITQ_BROKER=rabbitmq needs AMQP_URL (amqp://user:password@host:5672/vhost)")
    parsed = urlparse(amqp_url)
    if parsed.scheme not in ("amqp", "amqps") or not parsed.hostname:  # the URL is not echoed: it holds a password
        raise ConfigError("AMQP_URL must be a URL starting with amqp:// or amqps://, with a host")
    return broker, amqp_url


def _url(name: str, raw: str, schemes: tuple[str, ...], *, host_in_query: bool = False) -> str:
    """`host_in_query`: the host may be the `host` query parameter instead, as libpq takes a unix-socket
    directory (`postgresql://user@/db?host=/run/postgresql`)."""
    parsed = urlparse(raw)
    if parsed.scheme not in schemes:
        raise ConfigError(f"{name}={raw!r} must be a URL starting with one of: {', '.join(s + '://' for s in schemes)}")
    queried_host = host_in_query and any(parse_qs(parsed.query).get("host", []))
    if parsed.scheme not in ("sqlite", "unix") and not parsed.hostname and not queried_host:
        raise ConfigError(f"{name}={raw!r} has no host" + (
            " (a unix socket is named as ?host=/run/postgresql)" if host_in_query else ""))
    return raw


def _database_url(raw: str) -> str:
    url = _url("DATABASE_URL", raw, ("sqlite", "postgresql", "postgresql+psycopg", "postgres"), host_in_query=True)
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://"):]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


_SMTP_SCHEMES = {"smtp": ("none", 25), "smtp+starttls": ("starttls", 587), "smtps": ("tls", 465)}


def _smtp(raw: str) -> SmtpSettings:
    parsed = urlparse(raw)
    if parsed.scheme not in _SMTP_SCHEMES:
        raise ConfigError(f"SMTP_URL={raw!r} must be a URL starting with one of: "
                          f"{', '.join(s + '://' for s in _SMTP_SCHEMES)}")
    if not parsed.hostname:
        raise ConfigError(f"SMTP_URL={raw!r} has no host")
    security, default_port = _SMTP_SCHEMES[parsed.scheme]
    try:
        port = parsed.port or default_port
    except ValueError:
        raise ConfigError(f"SMTP_URL={raw!r} has a bad port") from None
    return SmtpSettings(
        host=parsed.hostname,
        port=port,
        security=security,
        username=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else None,
    )


def _secret_keys(raw: str) -> tuple[str, ...]:
    """Comma-separated Fernet keys; a bad one is named by its position, never echoed."""
    keys = tuple(key.strip() for key in raw.split(","))
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError:
            raise ConfigError(f"CREDITQ_SECRET_KEY: key {position} of {len(keys)} is not a Fernet key (32 url-safe "
                              "base64-encoded bytes; `creditq secrets new-key` makes one)") from None
    return keys


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read and validate every setting; defaults give a working single-machine stack."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("CREDITQ_DATA_DIR", ".creditq")).resolve()
    database_url = _database_url(env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'creditq.db'}")
    redis_url = env.get("REDIS_URL") or None
    if redis_url is not None:
        _url("REDIS_URL", redis_url, ("redis", "rediss", "unix"))
    broker_choice(env)  # shared.broker reads it again when it binds the actors; a bad choice stops start-up here
    web_port = _port("PORT", env.get("PORT", "8080"))
    simulator_port = _port("CREDITQ_SIMULATOR_PORT", env.get("CREDITQ_SIMULATOR_PORT", "8081"))
    twilio_api_base = env.get("TWILIO_API_BASE") or None
    if twilio_api_base is not None:
        _url("TWILIO_API_BASE", twilio_api_base, ("http", "https"))
    sid = env.get("TWILIO_ACCOUNT_SID", SIMULATOR_ACCOUNT_SID)
    if not (sid.startswith("AC") and len(sid) == 34):
        raise ConfigError(f"TWILIO_ACCOUNT_SID={sid!r} must be 'AC' followed by 32 characters")
    token = env.get("TWILIO_AUTH_TOKEN", SIMULATOR_AUTH_TOKEN)
    if not token:
        raise ConfigError("TWILIO_AUTH_TOKEN is empty")
    if twilio_api_base is not None and urlparse(twilio_api_base).hostname not in _LOOPBACK and (
            "TWILIO_ACCOUNT_SID" not in env or "TWILIO_AUTH_TOKEN" not in env or token == SIMULATOR_AUTH_TOKEN):
        # the simulator's well-known token would make every callback checked against it forgeable
        raise ConfigError("TWILIO_API_BASE names a real Twilio: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN too")
    public_base_url = _url(
        "PUBLIC_BASE_URL", env.get("PUBLIC_BASE_URL", f"http://127.0.0.1:{web_port}"), ("http", "https")
    ).rstrip("/")
    smtp = _smtp(env["SMTP_URL"]) if env.get("SMTP_URL") else None
    email_from = env.get("EMAIL_FROM", "creditq@localhost")
    if "@" not in email_from:
        raise ConfigError(f"EMAIL_FROM={email_from!r} is not an email address")
    environment = _environment(env.get("CREDITQ_ENV") or "development")
    if environment == "production":
        _refuse_stand_ins(env, twilio_api_base)
    admin_key = env.get("CREDITQ_ADMIN_KEY") or _dev_admin_key(data_dir)
    if len(admin_key) < 16:
        raise ConfigError("CREDITQ_ADMIN_KEY must be at least 16 characters")
    secret_keys = _secret_keys(env.get("CREDITQ_SECRET_KEY") or _dev_secret_key(data_dir))
    payment_gateway = env.get("PAYMENT_GATEWAY", "stripe")
    if payment_gateway not in PAYMENT_GATEWAYS:
        raise ConfigError(f"PAYMENT_GATEWAY={payment_gateway!r} is not one of: {', '.join(PAYMENT_GATEWAYS)}")
    if payment_gateway == "simulated" and environment == "production":
        raise ConfigError("PAYMENT_GATEWAY=simulated is for tests only: refused when CREDITQ_ENV=production")
    stripe_sim_port = _port("CREDITQ_STRIPE_SIM_PORT", env.get("CREDITQ_STRIPE_SIM_PORT", "8082"))
    stripe_api_base = _url("STRIPE_API_BASE", env.get("STRIPE_API_BASE") or f"http://127.0.0.1:{stripe_sim_port}",
                           ("http", "https")).rstrip("/")
    stripe_api_key = env.get("STRIPE_API_KEY", STAND_IN_STRIPE_API_KEY)
    stripe_webhook_secret = env.get("STRIPE_WEBHOOK_SECRET", STAND_IN_STRIPE_WEBHOOK_SECRET)
    if payment_gateway == "stripe" and (environment == "production" or urlparse(stripe_api_base).hostname
                                        not in _LOOPBACK) and (stripe_api_key == STAND_IN_STRIPE_API_KEY or
                                                               stripe_webhook_secret == STAND_IN_STRIPE_WEBHOOK_SECRET):
        # the stand-in's well-known webhook secret would make every Stripe event forgeable
        raise ConfigError("a real Stripe (CREDITQ_ENV=production or STRIPE_API_BASE not on this host) needs "
                          "STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET")
    hold_ttl_seconds = _positive_int("CREDITQ_HOLD_TTL_SECONDS", env.get("CREDITQ_HOLD_TTL_SECONDS", "900"))
    twilio_timeout_seconds = _positive_seconds("TWILIO_TIMEOUT_SECONDS", env.get("TWILIO_TIMEOUT_SECONDS", "15"))
    if hold_ttl_seconds < 2 * twilio_timeout_seconds:  # connecting and reading may each take the whole timeout
        raise ConfigError(f"CREDITQ_HOLD_TTL_SECONDS={hold_ttl_seconds} must be at least twice "
                          f"TWILIO_TIMEOUT_SECONDS={twilio_timeout_seconds:g}: a text still being posted to Twilio "
                          "would be taken for lost and sent again")
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        twilio_account_sid=sid,
        twilio_auth_token=token,
        twilio_api_base=twilio_api_base,
        public_base_url=public_base_url,
        admin_key=admin_key,
        data_dir=data_dir,
        secret_keys=secret_keys,
        web_host=env.get("HOST", "127.0.0.1"),
        web_port=web_port,
        web_processes=_positive_int("CREDITQ_WEB_PROCESSES", env.get("CREDITQ_WEB_PROCESSES", "1")),
        simulator_port=simulator_port,
        worker_processes=_positive_int("CREDITQ_WORKER_PROCESSES", env.get("CREDITQ_WORKER_PROCESSES", "1")),
        worker_threads=_positive_int("CREDITQ_WORKER_THREADS", env.get("CREDITQ_WORKER_THREADS", "16")),
        worker_nice=_nice("CREDITQ_WORKER_NICE", env.get("CREDITQ_WORKER_NICE", "19")),
        web_nice=_negative_nice("CREDITQ_WEB_NICE", env.get("CREDITQ_WEB_NICE", "-20")),
        web_threads=_positive_int("CREDITQ_WEB_THREADS", env.get("CREDITQ_WEB_THREADS", "10")),
        hold_ttl_seconds=hold_ttl_seconds,
        sweep_stale_seconds=_positive_int("CREDITQ_SWEEP_STALE_SECONDS", env.get("CREDITQ_SWEEP_STALE_SECONDS", "60")),
        twilio_timeout_seconds=twilio_timeout_seconds,
        scheduler_lease_seconds=_positive_seconds("CREDITQ_SCHEDULER_LEASE_SECONDS",
                                                  env.get("CREDITQ_SCHEDULER_LEASE_SECONDS", "15")),
        smtp=smtp,
        email_from=email_from,
        payment_gateway=payment_gateway,
        environment=environment,
        development=env.get("CREDITQ_ENV") == "development",
        stripe_api_key=stripe_api_key,
        stripe_webhook_secret=stripe_webhook_secret,
        stripe_api_base=stripe_api_base,
        stripe_sim_port=stripe_sim_port,
        payment_sweep_seconds=_positive_int("CREDITQ_PAYMENT_SWEEP_SECONDS",
                                            env.get("CREDITQ_PAYMENT_SWEEP_SECONDS", "120")),
        sweep_interval_seconds=_positive_int("CREDITQ_SWEEP_INTERVAL_SECONDS", env["CREDITQ_SWEEP_INTERVAL_SECONDS"])
        if env.get("CREDITQ_SWEEP_INTERVAL_SECONDS") else None,
        key_rate_limit=_rate_limit(env, "CREDITQ_KEY_RATE_LIMIT", "CREDITQ_KEY_RATE_BURST", ("100", "200")),
        operator_rate_limit=_rate_limit(env, "CREDITQ_OPERATOR_RATE_LIMIT", "CREDITQ_OPERATOR_RATE_BURST",
                                        ("0", "200")),
        idempotency_claim_timeout_seconds=_positive_int(
            "CREDITQ_IDEMPOTENCY_CLAIM_TIMEOUT_SECONDS", env.get("CREDITQ_IDEMPOTENCY_CLAIM_TIMEOUT_SECONDS", "60")),
        new_account_days=_non_negative_int("CREDITQ_NEW_ACCOUNT_DAYS", env.get("CREDITQ_NEW_ACCOUNT_DAYS", "7")),
        new_account_daily_messages=_positive_int(
            "CREDITQ_NEW_ACCOUNT_DAILY_MESSAGES", env.get("CREDITQ_NEW_ACCOUNT_DAILY_MESSAGES", "500")),
        shared_short_code=_short_code(env["SHARED_SHORT_CODE"]) if env.get("SHARED_SHORT_CODE") else None,
        webhooks=_webhooks(env),
        metrics_host=env.get("CREDITQ_METRICS_HOST", "127.0.0.1"),
        worker_metrics_port=_port("CREDITQ_WORKER_METRICS_PORT", env.get("CREDITQ_WORKER_METRICS_PORT", "9191")),
        scheduler_metrics_port=_port("CREDITQ_SCHEDULER_METRICS_PORT",
                                     env.get("CREDITQ_SCHEDULER_METRICS_PORT", "9192")),
        shutdown_timeout_seconds=_positive_seconds("CREDITQ_SHUTDOWN_TIMEOUT_SECONDS",
                                                   env.get("CREDITQ_SHUTDOWN_TIMEOUT_SECONDS", "30")),
        retention_days=_positive_int("CREDITQ_RETENTION_DAYS", env["CREDITQ_RETENTION_DAYS"])
        if env.get("CREDITQ_RETENTION_DAYS") else None,
    )


def _refuse_stand_ins(env, twilio_api_base: str | None) -> None:
    """A production process shares its keys with every other process of the deployment, so they come from the
    environment (a key generated into one host's data dir would differ on the next host), and it talks to the real
    Twilio and a real mail server, never to a stand-in."""
    for name in ("CREDITQ_ADMIN_KEY", "CREDITQ_SECRET_KEY"):
        if not env.get(name):
            raise ConfigError(f"{name} must be set when CREDITQ_ENV=production (every process of a deployment "
                              "needs the same value)")
    if twilio_api_base is None or urlparse(twilio_api_base).hostname in _LOOPBACK:
        raise ConfigError("TWILIO_API_BASE must name the real Twilio (https://api.twilio.com) when "
                          "CREDITQ_ENV=production, not the simulator")
    if not env.get("SMTP_URL"):
        raise ConfigError("SMTP_URL must be set when CREDITQ_ENV=production: the file e-mail outbox is for "
                          "development only")


def _dev_admin_key(data_dir: Path) -> str:
    """Without CREDITQ_ADMIN_KEY, a key is made once per data dir so dev restarts keep it."""
    return written_once(data_dir / "admin_key", lambda: "cq_admin_" + secrets.token_urlsafe(24))


def _dev_secret_key(data_dir: Path) -> str:
    """Without CREDITQ_SECRET_KEY, one is made once per data dir: every process of the stack reads the same."""
    return written_once(data_dir / "secret_key", lambda: Fernet.generate_key().decode())
