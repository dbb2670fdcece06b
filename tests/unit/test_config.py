"""Configuration: working defaults, and one clear line for every bad value."""

import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from shared.config import ConfigError, broker_choice, load_settings

# A complete production environment: each refusal test takes one thing away from it.
PRODUCTION = {
    "CREDITQ_ENV": "production",
    "CREDITQ_ADMIN_KEY": "production-operator-key-0123456789",
    "CREDITQ_SECRET_KEY": Fernet.generate_key().decode(),
    "TWILIO_API_BASE": "https://api.twilio.com",
    "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
    "TWILIO_AUTH_TOKEN": "a-production-auth-token",
    "SMTP_URL": "smtp+starttls://mailer:pw@mail.example.com",
    "STRIPE_API_KEY": "sk_live_production",
    "STRIPE_WEBHOOK_SECRET": "whsec_production",
}


def test_defaults_give_a_sqlite_file_embedded_redis_and_the_simulator(tmp_path):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path)})

    assert settings.database_url == f"sqlite:///{tmp_path / 'creditq.db'}"
    assert settings.redis_url is None
    assert settings.twilio_api_base is None
    assert settings.public_base_url == "http://127.0.0.1:8080"


def test_a_worker_defaults_to_one_process_of_sixteen_threads(tmp_path):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path)})

    assert (settings.worker_processes, settings.worker_threads) == (1, 16)
    assert load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "CREDITQ_WORKER_THREADS": "4"}).worker_threads == 4


def test_a_generated_admin_key_survives_restarts(tmp_path):
    first = load_settings({"CREDITQ_DATA_DIR": str(tmp_path)}).admin_key
    second = load_settings({"CREDITQ_DATA_DIR": str(tmp_path)}).admin_key

    assert first == second and len(first) >= 16


def test_postgres_urls_use_psycopg(tmp_path):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgres://u:p@db/creditq"})

    assert settings.database_url == "postgresql+psycopg://u:p@db/creditq"


def test_a_postgres_url_may_name_a_unix_socket_directory_as_libpq_takes_it(tmp_path):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path),
                              "DATABASE_URL": "postgresql://creditq@/creditq?host=/run/postgresql"})

    assert settings.database_url == "postgresql+psycopg://creditq@/creditq?host=/run/postgresql"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("DATABASE_URL", "mysql://db/x", "DATABASE_URL='mysql://db/x' must be a URL"),
    ("DATABASE_URL", "postgresql:///nohost", "has no host"),
    ("REDIS_URL", "localhost:6379", "REDIS_URL='localhost:6379' must be a URL"),
    ("PORT", "eighty", "PORT='eighty' is not a port number"),
    ("PORT", "70000", "out of the port range"),
    ("TWILIO_ACCOUNT_SID", "XX123", "must be 'AC' followed by 32 characters"),
    ("TWILIO_API_BASE", "ftp://twilio", "TWILIO_API_BASE='ftp://twilio' must be a URL"),
    ("CREDITQ_ADMIN_KEY", "short", "at least 16 characters"),
    ("CREDITQ_WORKER_THREADS", "0", "must be at least 1"),
    ("CREDITQ_WEB_THREADS", "none", "CREDITQ_WEB_THREADS"),
    ("CREDITQ_WEB_PROCESSES", "0", "CREDITQ_WEB_PROCESSES='0' must be at least 1"),
    ("CREDITQ_WORKER_NICE", "20", "CREDITQ_WORKER_NICE='20' must be 19 or less"),
    ("CREDITQ_WORKER_NICE", "-5", "CREDITQ_WORKER_NICE='-5' must be 0 or more"),
    ("CREDITQ_WEB_NICE", "5", "CREDITQ_WEB_NICE='5' must be 0 or less"),
    ("CREDITQ_WEB_NICE", "-21", "CREDITQ_WEB_NICE='-21' must be -20 or more"),
    ("CREDITQ_WEB_NICE", "high", "CREDITQ_WEB_NICE='high' is not a whole number"),
    ("CREDITQ_SWEEP_STALE_SECONDS", "soon", "CREDITQ_SWEEP_STALE_SECONDS='soon' is not a whole number"),
    ("CREDITQ_SWEEP_STALE_SECONDS", "0", "CREDITQ_SWEEP_STALE_SECONDS='0' must be at least 1"),
    ("CREDITQ_HOLD_TTL_SECONDS", "29", "CREDITQ_HOLD_TTL_SECONDS=29 must be at least twice TWILIO_TIMEOUT_SECONDS=15"),
    ("TWILIO_TIMEOUT_SECONDS", "450.5", "CREDITQ_HOLD_TTL_SECONDS=900 must be at least twice TWILIO_TIMEOUT_SECONDS"),
    ("CREDITQ_WEBHOOK_CONCURRENCY", "0", "CREDITQ_WEBHOOK_CONCURRENCY='0' must be at least 1"),
    ("CREDITQ_WEBHOOK_CONCURRENCY", "4.5", "CREDITQ_WEBHOOK_CONCURRENCY='4.5' is not a whole number"),
])
def test_bad_values_are_refused_with_a_message_naming_them(tmp_path, name, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load_settings({"CREDITQ_DATA_DIR": str(tmp_path), name: value})


def test_a_bad_value_stops_a_process_with_one_line_and_a_non_zero_exit(tmp_path):
    # given a misconfigured environment
    env = {"PATH": "/usr/bin:/bin", "CREDITQ_DATA_DIR": str(tmp_path), "DATABASE_URL": "mysql://db/x"}

    # when the web process starts
    result = subprocess.run([sys.executable, "-m", "creditq", "web"], env=env, capture_output=True, text=True,
                            timeout=60)

    # then it exits non-zero with a single line naming the setting
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "creditq: DATABASE_URL='mysql://db/x' must be a URL starting with one of: sqlite://, postgresql://, "
        "postgresql+psycopg://, postgres://"
    ]


def test_limits_have_working_defaults(tmp_path):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path)})

    assert (settings.key_rate_limit.per_second, settings.key_rate_limit.burst) == (100.0, 200)
    assert settings.operator_rate_limit is None  # the operator key is exempt
    assert (settings.new_account_days, settings.new_account_daily_messages) == (7, 500)
    assert settings.idempotency_claim_timeout_seconds == 60


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CREDITQ_KEY_RATE_LIMIT", "fast", "CREDITQ_KEY_RATE_LIMIT='fast' is not a number of requests per second"),
    ("CREDITQ_KEY_RATE_LIMIT", "-1", "must be 0 (no limit) or more"),
    ("CREDITQ_KEY_RATE_LIMIT", "inf", "must be 0 (no limit) or more"),
    ("CREDITQ_KEY_RATE_BURST", "0", "CREDITQ_KEY_RATE_BURST='0' must be at least 1"),
    ("CREDITQ_OPERATOR_RATE_LIMIT", "nan", "must be 0 (no limit) or more"),
    ("CREDITQ_NEW_ACCOUNT_DAYS", "-1", "CREDITQ_NEW_ACCOUNT_DAYS='-1' must be 0 or more"),
    ("CREDITQ_NEW_ACCOUNT_DAILY_MESSAGES", "many", "is not a whole number"),
    ("CREDITQ_IDEMPOTENCY_CLAIM_TIMEOUT_SECONDS", "0", "must be at least 1"),
])
def test_bad_limits_are_refused_with_a_message_naming_them(tmp_path, name, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings({"CREDITQ_DATA_DIR": str(tmp_path), name: value})


def test_a_generated_secret_key_survives_restarts_and_a_configured_list_keeps_its_order(tmp_path):
    first = load_settings({"CREDITQ_DATA_DIR": str(tmp_path)}).secret_keys
    second = load_settings({"CREDITQ_DATA_DIR": str(tmp_path)}).secret_keys
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    configured = load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "CREDITQ_SECRET_KEY": f"{new}, {old}"})

    assert first == second and len(first) == 1
    assert configured.secret_keys == (new, old)


@pytest.mark.parametrize("value", ["not-a-key", "{key},", "{key},0123456789abcdef0123456789abcdef0123456789="])
def test_a_bad_secret_key_is_refused_by_position_without_repeating_it(tmp_path, value):
    value = value.format(key=Fernet.generate_key().decode())
    with pytest.raises(ConfigError, match=r"^CREDITQ_SECRET_KEY: key \d of \d is not a Fernet key") as refused:
        load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "CREDITQ_SECRET_KEY": value})
    assert not any(part and part in str(refused.value) for part in value.split(","))


def test_settings_never_show_their_secrets_in_a_repr(tmp_path):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "CREDITQ_ADMIN_KEY": "operator-key-0123456789",
                              "TWILIO_AUTH_TOKEN": "deployment-token-0123", "SMTP_URL": "smtps://u:mail-pass@mx"})
    shown = repr(settings)
    assert "operator-key" not in shown and "deployment-token" not in shown and "mail-pass" not in shown
    assert settings.secret_keys[0] not in shown


@pytest.mark.parametrize("twilio", [
    {"TWILIO_API_BASE": "https://api.twilio.com"},
    {"TWILIO_API_BASE": "https://api.twilio.com", "TWILIO_ACCOUNT_SID": "AC" + "1" * 32},
    {"TWILIO_API_BASE": "https://api.twilio.com", "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
     "TWILIO_AUTH_TOKEN": "simulator-auth-token"},
])
def test_a_real_twilio_without_its_own_credentials_is_refused(tmp_path, twilio):
    # the simulator's well-known token would make the deployment's callbacks forgeable
    with pytest.raises(ConfigError, match="set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN too"):
        load_settings({"CREDITQ_DATA_DIR": str(tmp_path), **twilio})


def test_a_simulator_on_this_host_keeps_its_own_credentials(tmp_path):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "TWILIO_API_BASE": "http://127.0.0.1:8081"})

    assert settings.twilio_auth_token == "simulator-auth-token"


def test_payments_go_to_the_stripe_stand_in_on_this_host_by_default(tmp_path):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "CREDITQ_STRIPE_SIM_PORT": "9999"})

    assert (settings.payment_gateway, settings.stripe_api_base) == ("stripe", "http://127.0.0.1:9999")
    assert "sk_test" not in repr(settings) and "whsec" not in repr(settings)


def test_production_refuses_the_simulated_gateway(tmp_path):
    with pytest.raises(ConfigError, match="PAYMENT_GATEWAY=simulated is for tests only"):
        load_settings({"CREDITQ_DATA_DIR": str(tmp_path), **PRODUCTION, "PAYMENT_GATEWAY": "simulated"})


@pytest.mark.parametrize("stripe", [
    {**PRODUCTION, "STRIPE_API_KEY": None, "STRIPE_WEBHOOK_SECRET": None},
    {"STRIPE_API_BASE": "https://api.stripe.com"},
    {"STRIPE_API_BASE": "https://api.stripe.com", "STRIPE_API_KEY": "sk_live_x"},
    {**PRODUCTION, "STRIPE_API_KEY": None},
])
def test_a_real_stripe_without_its_own_key_and_webhook_secret_is_refused(tmp_path, stripe):
    # the stand-in's well-known webhook secret would make every Stripe event forgeable
    env = {name: value for name, value in stripe.items() if value is not None}
    with pytest.raises(ConfigError, match="needs STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET"):
        load_settings({"CREDITQ_DATA_DIR": str(tmp_path), **env})


def test_an_unknown_payment_gateway_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="PAYMENT_GATEWAY='paypal'"):
        load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "PAYMENT_GATEWAY": "paypal"})


@pytest.mark.parametrize(("environment", "private_webhooks"), [(None, False), ("production", False),
                                                              ("development", True)])
def test_webhooks_may_reach_private_addresses_only_when_development_is_said(tmp_path, environment, private_webhooks):
    # given a deployment that says nothing of its environment, says production, or says development (creditq dev)
    env = {"CREDITQ_DATA_DIR": str(tmp_path), **({"CREDITQ_ENV": environment} if environment else {})}
    if environment == "production":
        env.update(PRODUCTION)

    # then only the last lets webhook endpoints be http or on private addresses
    assert load_settings(env).development is private_webhooks


def test_the_broker_is_redis_unless_rabbitmq_is_chosen():
    assert broker_choice({}) == ("redis", None)
    assert broker_choice({"AMQP_URL": "amqp://mq.internal"}) == ("redis", None)
    assert broker_choice({"CREDITQ_BROKER": "rabbitmq", "AMQP_URL": "amqps://creditq:s3cret@mq.internal/creditq"}) == (
        "rabbitmq", "amqps://creditq:s3cret@mq.internal/creditq")


@pytest.mark.parametrize(("process", "env", "line"), [
    ("web", {"CREDITQ_BROKER": "kafka"}, "creditq: CREDITQ_BROKER='kafka' is not one of: redis, rabbitmq"),
    ("worker", {"CREDITQ_BROKER": "rabbitmq"},
     "creditq: CREDITQ_BROKER=rabbitmq needs AMQP_URL (amqp://user:password@host:5672/vhost)"),
    ("scheduler", {"CREDITQ_BROKER": "rabbitmq", "AMQP_URL": "http://guest:s3cret@mq.internal"},
     "creditq: AMQP_URL must be a URL starting with amqp:// or amqps://, with a host"),
])
def test_a_bad_broker_choice_stops_a_process_with_one_line(tmp_path, process, env, line):
    # given a broker choice that cannot work
    env = {"PATH": "/usr/bin:/bin", "CREDITQ_DATA_DIR": str(tmp_path), **env}

    # when a process starts
    result = subprocess.run([sys.executable, "-m", "creditq", process], env=env, capture_output=True, text=True,
                            timeout=60)

    # then it exits non-zero with a single line naming the setting (and never the URL's password)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]


def test_a_complete_production_environment_starts(tmp_path):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path), **PRODUCTION})

    assert settings.environment == "production"
    assert settings.admin_key == PRODUCTION["CREDITQ_ADMIN_KEY"]
    assert not (tmp_path / "admin_key").exists() and not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(("change", "reason"), [
    ({"CREDITQ_ADMIN_KEY": None}, "CREDITQ_ADMIN_KEY must be set when CREDITQ_ENV=production"),
    ({"CREDITQ_SECRET_KEY": None}, "CREDITQ_SECRET_KEY must be set when CREDITQ_ENV=production"),
    ({"TWILIO_API_BASE": None}, "TWILIO_API_BASE must name the real Twilio"),
    ({"TWILIO_API_BASE": "http://127.0.0.1:8081"}, "TWILIO_API_BASE must name the real Twilio"),
    ({"TWILIO_API_BASE": "http://localhost:8081"}, "TWILIO_API_BASE must name the real Twilio"),
    ({"SMTP_URL": None}, "SMTP_URL must be set when CREDITQ_ENV=production"),
])
def test_production_refuses_generated_keys_the_twilio_simulator_and_the_file_outbox(tmp_path, change, reason):
    # given a production environment missing one thing (None: unset)
    env = {"CREDITQ_DATA_DIR": str(tmp_path), **PRODUCTION, **change}
    env = {name: value for name, value in env.items() if value is not None}

    # then it does not load, and says why in one line
    with pytest.raises(ConfigError, match=reason) as refused:
        load_settings(env)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "admin_key").exists() and not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("command", ["web", "worker", "scheduler"])
def test_each_process_refuses_to_start_in_production_without_the_operator_key(tmp_path, command):
    env = {"PATH": "/usr/bin:/bin", "CREDITQ_DATA_DIR": str(tmp_path), **PRODUCTION}
    del env["CREDITQ_ADMIN_KEY"]

    started = subprocess.run([sys.executable, "-m", "creditq", command], env=env, capture_output=True, text=True,
                             timeout=60)

    assert started.returncode == 2
    assert started.stderr.strip().splitlines() == [
        "creditq: CREDITQ_ADMIN_KEY must be set when CREDITQ_ENV=production (every process of a deployment needs "
        "the same value)"]


def test_each_accounts_webhook_attempts_at_once_default_to_four_and_may_be_set(tmp_path):
    assert load_settings({"CREDITQ_DATA_DIR": str(tmp_path)}).webhooks.concurrency == 4
    configured = load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "CREDITQ_WEBHOOK_CONCURRENCY": "7"})
    assert configured.webhooks.concurrency == 7
