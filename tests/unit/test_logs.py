"""JSON log lines carry the ids of the work at hand, and the secret masking applies to them as to plain lines."""

import io
import json
import logging

import dramatiq
import pytest

from shared import logs
from shared.log_redaction import install

OPERATOR_KEY = "operator-key-0123456789abcdef"
TWILIO_TOKEN = "deployment-token-0123456789"


@pytest.fixture
def json_lines(monkeypatch):
    """A logger writing JSON lines as a process started with CREDITQ_LOG_FORMAT=json does, its handler guarded by
    the redaction filter (installed from the environment, as the CLI does)."""
    monkeypatch.setenv("CREDITQ_ADMIN_KEY", OPERATOR_KEY)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    logger = logging.getLogger("tests.logs")
    logger.propagate, logger.level = False, logging.INFO
    handler = logs.handler("json")
    handler.stream = io.StringIO()
    logger.addHandler(handler)
    install(logger)

    def lines() -> list[dict]:
        return [json.loads(line) for line in handler.stream.getvalue().splitlines()]

    yield logger, lines, handler.stream
    logger.removeHandler(handler)


def test_every_line_of_bound_work_carries_its_ids(json_lines):
    logger, lines, _ = json_lines

    with logs.bound(job_id="job_1", actor="send_message", message_id="msg_1", account_id="acct_1"):
        logger.info("claimed")
        logger.warning("Twilio is slow")
    logger.info("idle")

    claimed, slow, idle = lines()
    assert claimed["message"] == "claimed" and claimed["level"] == "INFO" and claimed["logger"] == "tests.logs"
    for line in (claimed, slow):
        assert (line["job_id"], line["message_id"], line["account_id"]) == ("job_1", "msg_1", "acct_1")
    assert not {"job_id", "message_id", "account_id"} & idle.keys()


def test_no_key_or_token_reaches_a_json_line_even_in_a_traceback(json_lines):
    logger, lines, stream = json_lines

    with logs.bound(request_id="req_1", account_id="acct_1"):
        logger.info("operator %s, account key %s", OPERATOR_KEY, "cq_live_AbCdEf0123456789")
        logger.info("twilio %r", {"auth_token": TWILIO_TOKEN})
        try:
            raise RuntimeError(f"Authorization: Bearer {OPERATOR_KEY}")
        except RuntimeError:
            logger.exception("request failed")

    written = stream.getvalue()
    for secret in (OPERATOR_KEY, TWILIO_TOKEN, "AbCdEf0123456789"):
        assert secret not in written
    first, second, failed = lines()
    assert "[redacted]" in first["message"] and "[redacted]" in second["message"]
    assert "RuntimeError" in failed["exception"] and failed["request_id"] == "req_1"


def test_text_lines_name_the_ids_too():
    handler = logs.handler("text")
    handler.stream = io.StringIO()
    logger = logging.getLogger("tests.logs.text")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    try:
        with logs.bound(job_id="job_9", message_id="msg_9"):
            logger.info("sent")
    finally:
        logger.removeHandler(handler)

    assert handler.stream.getvalue().rstrip().endswith("sent job_id=job_9 message_id=msg_9")


def test_a_jobs_lines_carry_its_job_id_and_the_message_it_is_about(fake_broker, json_lines):
    # given an actor that logs, on a broker with the job log context, run by a real dramatiq worker
    from workers.log_context import JobLogContext

    logger, lines, _ = json_lines
    fake_broker.add_middleware(JobLogContext())

    @dramatiq.actor(broker=fake_broker, queue_name="logs_test")
    def deliver(message_id: str, attempt: int = 0) -> None:
        logger.info("delivering")

    sent = deliver.send("msg_42")
    worker = dramatiq.Worker(fake_broker, worker_timeout=100)
    worker.start()
    try:
        fake_broker.join("logs_test")
        worker.join()
    finally:
        worker.stop()

    [line] = lines()
    assert (line["job_id"], line["actor"], line["message_id"]) == (sent.message_id, "deliver", "msg_42")
    assert "account_id" not in line


@pytest.fixture
def info_logging():
    """The root logger at INFO, as a process's is; the levels as they were afterwards."""
    root, library = logging.getLogger(), logging.getLogger("apscheduler")
    levels = root.level, library.level
    root.setLevel(logging.INFO)
    library.setLevel(logging.NOTSET)
    yield
    root.setLevel(levels[0])
    library.setLevel(levels[1])


def test_the_schedulers_library_says_only_what_went_wrong(info_logging):
    # given a process's logging, configured as the CLI does
    logs.configure("text")

    # then APScheduler's lines about each run of a job are dropped, and its warnings (a missed run) and errors (a
    # job that raised) are kept
    scheduler_log = logging.getLogger("apscheduler.executors.default")
    assert not scheduler_log.isEnabledFor(logging.INFO)
    assert scheduler_log.isEnabledFor(logging.WARNING) and scheduler_log.isEnabledFor(logging.ERROR)
