"""No secret in a log line: the filter on the log handlers masks secrets wherever a record carries them."""

import base64
import logging

import pytest
from cryptography.fernet import Fernet

from shared.log_redaction import MASK, RedactSecrets, configured_secrets, install

FERNET_KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()  # fixed: test ids are the same in every xdist worker
ANOTHER_FERNET_KEY = base64.urlsafe_b64encode(bytes(range(32, 64))).decode()


@pytest.fixture
def logged():
    """A logger with its own handler, guarded like the processes' root handlers: what it wrote, as text."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    logger = logging.getLogger("tests.log_redaction")
    logger.propagate, logger.level = False, logging.INFO
    handler = Collect()
    logger.addHandler(handler)
    environ = {"CREDITQ_ADMIN_KEY": "operator-key-0123456789", "TWILIO_AUTH_TOKEN": "deployment-token-0123",
               "CREDITQ_SECRET_KEY": f"{FERNET_KEY}, {Fernet.generate_key().decode()}",
               "STRIPE_API_KEY": "stripe-configured-key-0123", "STRIPE_WEBHOOK_SECRET": "stripe-endpoint-secret-99"}
    handler.addFilter(RedactSecrets(configured_secrets(environ)))
    yield logger, lines
    logger.removeHandler(handler)


@pytest.mark.parametrize(("message", "args", "secret"), [
    ("started with key %s", ("operator-key-0123456789",), "operator-key-0123456789"),
    ("twilio %r", ({"token": "deployment-token-0123"},), "deployment-token-0123"),
    ("key ring %s", (FERNET_KEY,), FERNET_KEY),
    ("another fernet key %s", (ANOTHER_FERNET_KEY,), None),
    ("created %s", ('{"id": "acct_1", "api_key": "cq_live_AbC-123_xyz"}',), "cq_live_AbC-123_xyz"),
    ("dev key cq_admin_s3cr3tValue", (), "s3cr3tValue"),
    ("headers %s", ("Authorization: Bearer sk_abcdef123456",), "sk_abcdef123456"),
    ("headers %s", ("Authorization: Basic QUMxMjM6dG9rZW4=",), "QUMxMjM6dG9rZW4="),
    ("connect %s", ("postgresql://creditq:db-pass-99@db:5432/creditq",), "db-pass-99"),
    ("form %s", ("AccountSid=AC1&auth_token=tok-abc-123&To=%2B1",), "tok-abc-123"),
    ("saved %r", ({"account_sid": "AC1", "auth_token": "tok-abc-123"},), "tok-abc-123"),
    ("smtp password=hunter2hunter2", (), "hunter2hunter2"),
    ("payment_method %s", ("4242 4242 4242 4242",), "4242 4242 4242 4242"),
    ("payment_method %s", ("4000-0566-5566-5556",), "5566-5556"),
    ("payment_method %s", ("5555555555554444",), "5555555555554444"),
    ("stripe %s", ("stripe-configured-key-0123",), "stripe-configured-key-0123"),
    ("webhook %s", ("stripe-endpoint-secret-99",), "stripe-endpoint-secret-99"),
    ("stripe error for sk_live_51AbCdEfGh123", (), "51AbCdEfGh123"),
    ("verifying with whsec_AbC123xyz", (), "AbC123xyz"),
])
def test_a_secret_in_a_message_or_its_arguments_is_masked(logged, message, args, secret):
    logger, lines = logged
    logger.info(message, *args)
    assert MASK in lines[0]
    if secret is not None:
        assert secret not in lines[0]


def test_a_secret_in_a_traceback_is_masked(logged):
    logger, lines = logged
    try:
        raise ValueError("could not store auth_token='tok-abc-123' for cq_live_AbC-123_xyz")
    except ValueError:
        logger.exception("saving credentials failed")
    assert "Traceback" in lines[0] and "ValueError" in lines[0]
    assert "tok-abc-123" not in lines[0] and "cq_live_AbC" not in lines[0]


@pytest.mark.parametrize("message", [
    "sweep: 3 enqueued, 0 reconciled, 1 unparked, 2 to settle",
    "inbound SMaaaabbbbccccddddeeeeffff00001111 to +14155550100: no account has that number",
    "auto-recharge pay_01m8gq4322tp940nqenzg799zq for acct_01m8gq4322tp940nqenzg799zq: succeeded",
    "order 4242424242424241 is not a card: its Luhn check fails",
    "Retrying message '0b8a3c1e-7d2f-4e5a-9c1b-123456789015' in 1000 milliseconds.",  # its last group passes Luhn
    "month-end 2026-10 failed for acct_1, acct_2",
])
def test_ordinary_lines_are_left_alone(logged, message):
    logger, lines = logged
    logger.info(message)
    assert lines == [message]


def test_a_card_beside_a_job_id_is_masked_and_the_job_id_left_whole(logged):
    # given a job id whose last group would pass for a card number, and a real card number after it
    logger, lines = logged

    # when both are logged on one line
    logger.info("job 0b8a3c1e-7d2f-4e5a-9c1b-123456789015 charged 4242 4242 4242 4242")

    # then only the card is masked
    assert lines == [f"job 0b8a3c1e-7d2f-4e5a-9c1b-123456789015 charged {MASK}"]


def test_install_guards_every_handler_once(monkeypatch):
    monkeypatch.setenv("CREDITQ_ADMIN_KEY", "operator-key-0123456789")
    logger = logging.getLogger("tests.log_redaction.install")
    handlers = [logging.StreamHandler(), logging.NullHandler()]
    for handler in handlers:
        logger.addHandler(handler)

    install(logger)
    install(logger)

    for handler in handlers:
        guards = [f for f in handler.filters if isinstance(f, RedactSecrets)]
        assert len(guards) == 1 and guards[0].redact("key operator-key-0123456789") == f"key {MASK}"
        logger.removeHandler(handler)
