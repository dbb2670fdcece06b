"""Every process exports Prometheus metrics and writes JSON lines naming the work they are about.

The worker's forked processes each count their own jobs and Twilio outcomes; dramatiq's exposition server sums
them at the worker's metrics port. Twilio refuses every create with 429 for a while, so the sends are retried (the
retries are logged, with the job's and the message's ids) before they go out.
"""

import json
import re
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_send_pipeline_e2e import OPERATOR, all_final, ledger_verify, new_account, post_messages, wait_until
from tests.support.stack import ADMIN_KEY, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {"CREDITQ_LOG_FORMAT": "json", "CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",
           "TWILIO_SIM_CALLBACK_DELAY_MS": "50"}
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_observability",
               worker_processes=2, env=env) as running:
        yield running


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Each sample by name and labels; samples that differ only by pid (several processes) are summed."""
    summed: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid")))
            summed[key] = summed.get(key, 0) + sample.value
    return summed


def json_lines(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_metrics_and_json_logs_follow_the_work_across_processes(stack, database, broker):
    # given Twilio refusing every create with 429
    requests.post(f"{stack.simulator_url}/_sim/config", json={"rate_429": 1.0}, timeout=10).raise_for_status()
    account_id, headers, sender = new_account(stack, 1, "100")

    # when five messages are sent
    ids = post_messages(stack, [(headers, sender, f"observed {n}") for n in range(5)])

    # then the worker's retries are logged as JSON lines naming the job, the message and the actor
    deadline = time.monotonic() + 60
    while not {line.get("message_id") for line in json_lines(stack.log("worker"))
               if "Retrying message" in line["message"]} >= set(ids):
        assert time.monotonic() < deadline, stack.log("worker")[-3000:]
        time.sleep(0.3)
    retried = [line for line in json_lines(stack.log("worker")) if "Retrying message" in line["message"]]
    bad = [line for line in retried if not (line["actor"] == "send_message" and line["job_id"] in line["message"])]
    assert not bad, bad

    # and once Twilio answers again, they all go out
    requests.post(f"{stack.simulator_url}/_sim/config", json={"rate_429": 0.0}, timeout=10).raise_for_status()
    wait_until(database, stack, broker, ids, all_final)

    # then the worker's metrics port sums its processes: jobs, retries, and Twilio's answers by error code
    worker = samples(requests.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics", timeout=10).text)
    send = (("actor_name", "send_message"), ("queue_name", "send"))
    assert worker[("creditq_twilio_sends_total", (("error_code", ""), ("outcome", "accepted")))] == 5
    assert worker[("creditq_twilio_sends_total", (("error_code", "20429"), ("outcome", "transient")))] >= 5
    assert worker[("dramatiq_messages_total", send)] >= 10
    assert worker[("dramatiq_message_retries_total", send)] >= 5
    assert worker[("dramatiq_message_duration_milliseconds_count", send)] >= 10

    # and the web's /metrics answers only the operator, with the deployment's gauges
    assert requests.get(f"{stack.url}/metrics", timeout=10).status_code == 401
    assert requests.get(f"{stack.url}/metrics", headers=headers, timeout=10).status_code == 403
    web = samples(requests.get(f"{stack.url}/metrics", headers=OPERATOR, timeout=10).text)
    assert web[("creditq_holds_outstanding", ())] == 0
    assert web[("creditq_messages_final_recent", (("error_code", ""), ("status", "delivered")))] >= 1
    assert web[("creditq_http_requests_total", (("method", "POST"), ("route", "/v1/messages"),
                                                ("status", "202")))] == 5

    # and a scheduler serves the same gauges at its own port, with whether it holds the lease
    scheduler_url = stack.start_scheduler()
    scheduler = samples(requests.get(scheduler_url, timeout=10).text)
    assert scheduler[("creditq_accounts", ())] == web[("creditq_accounts", ())] >= 1
    assert ("creditq_scheduler_active", ()) in scheduler

    # and no process wrote a key: the operator's, the account's, the secret key
    account_key = headers["Authorization"].removeprefix("Bearer ")
    for name, log in stack.logs().items():
        for secret in (ADMIN_KEY, account_key, stack.env["CREDITQ_SECRET_KEY"]):
            assert secret not in log, name
    assert all(re.fullmatch(r"\{.*\}", line) for line in stack.log("worker").splitlines() if line.strip()), \
        "every worker line is JSON"
    assert ledger_verify(stack).returncode == 0
