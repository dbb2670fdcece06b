"""Dunning for an account's own customers over the real processes (web, worker, Twilio simulator, Redis, PostgreSQL).

The test is the scheduler here, with a clock it moves: it asks which steps are due at day 0, 3 and 7 (the same
query the scheduler's tick runs) and enqueues them, so no test waits for days. Each site is a Twilio
subaccount of the simulator with a number of the account. Assertions are on what the simulator received, the
outbox, the ledger and the stored runs, never on how long anything took.
"""

import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from shared.billing import dunning
from shared.email import FileOutbox
from shared.messaging.statuses import FINAL_STATUSES
from shared.models import Account, DunningRun, DunningSiteOptOut, Entry, Message, WebhookEvent
from tests.e2e.test_send_pipeline_e2e import OPERATOR, new_account, simulated
from tests.support.ports import free_port
from tests.support.stack import Stack
from twilio_sim.signature import twilio_signature

pytestmark = pytest.mark.e2e

CUSTOMERS = 100
AMOUNT = "49.90"
DAY_0_SMS = ("Hi {{ customer.name }}, {{ amount_due }} for your {{ customer.fields.plan }} plan at {{ site }} "
             "failed: {{ update_url }} Reply HELP for help, STOP to opt out.")
DAY_3_SMS = "{{ customer.name }}: {{ amount_due }} {{ currency }} still due at {{ site }}. Reply HELP/STOP."
SCHEDULE = {"steps": [
    {"day": 0, "sms": {"body": DAY_0_SMS},
     "email": {"subject": "Payment of {{ amount_due }} failed", "body": "Hi {{ customer_name }}: {{ update_link }}"}},
    {"day": 3, "sms": {"body": DAY_3_SMS}},
    {"day": 7, "email": {"subject": "Final notice from {{ site }}", "body": "{{ amount_due }} is still due."}},
]}


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {"CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",  # 100 texts in no time
           "CREDITQ_SWEEP_STALE_SECONDS": "2", "TWILIO_SIM_CALLBACK_DELAY_MS": "20",
           "CREDITQ_HOLD_TTL_SECONDS": "10", "TWILIO_TIMEOUT_SECONDS": "5"}  # a text the kill left without its sid
    # is reconciled soon
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_site_dunning", env=env) as running:
        yield running


def outbox(stack) -> list:
    return FileOutbox(Path(stack.env["CREDITQ_DATA_DIR"]) / "outbox").messages()


def add_number(stack, account_id: str, phone: str) -> None:
    response = requests.post(f"{stack.url}/v1/accounts/{account_id}/numbers", headers=OPERATOR, timeout=10,
                             json={"phone": phone, "type": "long_code"})
    assert response.status_code == 201, response.text


def subaccount(stack) -> dict:
    response = requests.post(f"{stack.simulator_url}/_sim/accounts", json={}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def save_site(stack, headers: dict, name: str, sender: str, twilio: dict) -> requests.Response:
    return requests.put(f"{stack.url}/v1/dunning/integrations/{name}", headers=headers, timeout=30,
                        json={"from": sender, "account_sid": twilio["sid"], "auth_token": twilio["auth_token"],
                              "help_text": f"{name} billing: call 415-555-0100. Reply STOP to opt out."})


def dunning_account(stack, n: int, sites: list[str]) -> tuple[str, dict, dict[str, tuple[str, dict]]]:
    """An account with 1000 credits, no quiet hours, the schedule, and a site per name (its number, its
    subaccount): (id, headers, {site: (number, subaccount)})."""
    account_id, headers, _ = new_account(stack, n, "1000")
    response = requests.patch(f"{stack.url}/v1/accounts/{account_id}", headers=headers, timeout=10,
                              json={"settings": {"quiet_hours": {"start": "00:00", "end": "00:00"}}})
    assert response.status_code == 200, response.text
    response = requests.put(f"{stack.url}/v1/accounts/{account_id}/dunning", headers=headers, json=SCHEDULE,
                            timeout=10)
    assert response.status_code == 200 and response.json()["warnings"] == [], response.text
    found = {}
    for i, name in enumerate(sites):
        sender, twilio = f"+1628555{n // 100 % 100:02d}{i:02d}", subaccount(stack)
        add_number(stack, account_id, sender)
        assert save_site(stack, headers, name, sender, twilio).status_code == 200
        found[name] = (sender, twilio)
    return account_id, headers, found


def phone_of(i: int) -> str:
    return f"+1415666{i:04d}"


def open_run(stack, headers: dict, site: str, i: int, started_at: datetime) -> dict:
    response = requests.post(f"{stack.url}/v1/dunning/runs", headers=headers, timeout=10, json={
        "site": site, "amount_due": AMOUNT, "currency": "USD", "started_at": started_at.isoformat(),
        "update_url": f"https://pay.example.com/u/c{i}",
        "customer": {"id": f"c{i}", "name": f"Customer {i}", "phone": phone_of(i), "email": f"c{i}@example.com",
                     "fields": {"plan": "Gold"}}})
    assert response.status_code == 201, response.text
    return response.json()


def tick(stack, database, broker, at: datetime) -> int:
    """What the scheduler's dunning tick does, at the test's clock: enqueue every step due by `at`."""
    with database.unit_of_work() as session:
        due = dunning.due_steps(session, now=at, limit=1000)
    for run_id, step in due:
        stack.enqueue(broker, "run_dunning_step", run_id, step, queue_name="payments")
    return len(due)


def wait_until(stack, database, broker, done, what: str, *, at: datetime | None = None, timeout: float = 180) -> None:
    """Poll done() every 0.2 s; every 2 s sweep as the scheduler would (and, with `at`, tick at that time)."""
    deadline, next_sweep = time.monotonic() + timeout, 0.0
    while not done():
        assert time.monotonic() < deadline, f"{what}:\n{stack.log('worker')[-4000:]}"
        if time.monotonic() > next_sweep:
            stack.enqueue(broker, "sweep")
            if at is not None:
                tick(stack, database, broker, at)
            next_sweep = time.monotonic() + 2
        time.sleep(0.2)


def runs_past(database, run_ids: list[str], step: int) -> bool:
    """Every run has finished `step` (moved on, or ended) and every text it made is final and settled."""
    with database.unit_of_work() as session:
        runs = session.scalars(select(DunningRun).where(DunningRun.id.in_(run_ids))).all()
        unsettled = session.scalar(select(func.count()).select_from(Message).where(
            Message.dunning_site_id.is_not(None),
            Message.credits_charged.is_(None) | Message.status.not_in(FINAL_STATUSES),
            Message.account_id.in_({run.account_id for run in runs})))
        return unsettled == 0 and all(run.status != "open" or run.next_step > step for run in runs)


def texts_from(stack, sender: str) -> list[dict]:
    return [m for m in simulated(stack)["messages"] if m["from"] == sender]


def inbound(stack, twilio: dict, sender: str, phone: str, body: str) -> requests.Response:
    """A text from a customer to a site's number, as Twilio delivers it: signed with the site's subaccount token."""
    sid = "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": twilio["sid"], "From": phone, "To": sender,
              "Body": body, "NumSegments": "1", "NumMedia": "0", "ApiVersion": "2010-04-01"}
    url = f"{stack.url}/webhooks/twilio/inbound"
    return requests.post(url, data=params, timeout=10,
                         headers={"X-Twilio-Signature": twilio_signature(twilio["auth_token"], url, params)})


def test_a_three_step_schedule_for_100_customers_texts_and_mails_each_once_obeying_stop_resolve_and_a_broken_site(
        stack, database, broker):
    # given an account with three sites and an endpoint taking dunning events
    account_id, headers, sites = dunning_account(stack, 9101, ["downtown", "uptown", "harbor"])
    (downtown, downtown_twilio), (uptown, uptown_twilio), (harbor, harbor_twilio) = sites.values()
    endpoint = requests.post(f"{stack.url}/v1/accounts/{account_id}/webhook-endpoints", headers=headers, timeout=10,
                             json={"url": f"http://127.0.0.1:{free_port()}/hooks",
                                   "events": ["dunning.step_sent", "dunning.exhausted"]})
    assert endpoint.status_code == 201, endpoint.text
    # and 100 customers whose payments failed on downtown, customer 0 also on uptown, customers 0-1 on harbor
    started = datetime.now(UTC)
    runs = {("downtown", i): open_run(stack, headers, "downtown", i, started) for i in range(CUSTOMERS)}
    runs[("uptown", 0)] = open_run(stack, headers, "uptown", 0, started)
    runs.update({("harbor", i): open_run(stack, headers, "harbor", i, started) for i in range(2)})
    run_ids = [run["id"] for run in runs.values()]

    # when day 0 comes
    assert tick(stack, database, broker, started) == len(runs)
    wait_until(stack, database, broker, lambda: runs_past(database, run_ids, 0), "day 0")

    # then each customer got the day-0 text once, from the site's number, rendered for them
    day_0 = texts_from(stack, downtown)
    assert Counter(m["to"] for m in day_0) == Counter(phone_of(i) for i in range(CUSTOMERS))
    assert {m["body"] for m in day_0 if m["to"] == phone_of(7)} == {
        "Hi Customer 7, $49.90 for your Gold plan at downtown failed: https://pay.example.com/u/c7 "
        "Reply HELP for help, STOP to opt out."}
    assert len(texts_from(stack, uptown)) == 1 and len(texts_from(stack, harbor)) == 2
    assert simulated(stack)["duplicates"] == []
    # and each an e-mail
    mails = [m for m in outbox(stack) if m["To"].endswith("@example.com")]
    assert Counter(m["To"] for m in mails)["c0@example.com"] == 3  # downtown, uptown and harbor runs
    assert len(mails) == len(runs)
    # and the account paid for each segment, as the estimate prices it
    estimate = requests.post(f"{stack.url}/v1/estimate", headers=headers, timeout=10,
                             json={"body": day_0[0]["body"], "from": downtown}).json()
    with database.unit_of_work() as session:
        texts = session.scalars(select(Message).where(Message.account_id == account_id,
                                                      Message.direction == "outbound")).all()
        charged = session.scalar(select(func.sum(Entry.amount)).where(Entry.reference.in_([t.id for t in texts])))
    assert len(texts) == len(runs) and all(t.segments == 1 for t in texts)
    assert {t.credits_charged for t in texts} == {int(Decimal(estimate["credits_per_recipient"]) * 1000)}
    assert -charged == sum(t.credits_charged for t in texts) > 0

    # when customer 0 texts STOP to downtown, HELP gets the site's help text, and customer 1 pays
    assert inbound(stack, downtown_twilio, downtown, phone_of(0), "STOP").status_code == 200
    help_answer = inbound(stack, downtown_twilio, downtown, phone_of(3), "HELP")
    assert "downtown billing: call 415-555-0100" in help_answer.text
    resolved = requests.post(f"{stack.url}/v1/dunning/runs/{runs[('downtown', 1)]['id']}/resolve", headers=headers,
                             timeout=10)
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    # and harbor's credentials are regenerated at Twilio
    assert requests.post(f"{stack.simulator_url}/_sim/accounts/{harbor_twilio['sid']}/regenerate-token",
                         timeout=10).status_code == 200

    # and day 3 comes
    day_3_at = started + timedelta(days=3)
    assert tick(stack, database, broker, day_3_at) == len(runs) - 1  # not the resolved run
    wait_until(stack, database, broker, lambda: runs_past(database, [r for r in run_ids if r !=
                                                                     runs[("downtown", 1)]["id"]], 1), "day 3")

    # then downtown texted everyone but the customer who said STOP and the one who paid, each once
    day_3 = [m for m in texts_from(stack, downtown) if "still due" in m["body"]]
    assert Counter(m["to"] for m in day_3) == Counter(phone_of(i) for i in range(2, CUSTOMERS))
    assert {m["body"] for m in day_3 if m["to"] == phone_of(2)} == {
        "Customer 2: $49.90 USD still due at downtown. Reply HELP/STOP."}
    # and customer 0 still heard from uptown, another site of the same account
    assert [m["body"] for m in texts_from(stack, uptown) if "still due" in m["body"]] == [
        "Customer 0: $49.90 USD still due at uptown. Reply HELP/STOP."]
    # and harbor sent nothing more: it is broken, its steps say so, and only harbor stopped
    assert len(texts_from(stack, harbor)) == 2
    site = requests.get(f"{stack.url}/v1/dunning/integrations/harbor", headers=headers, timeout=10).json()
    assert site["status"] == "broken" and "20003" in site["broken_reason"]
    harbor_steps = [requests.get(f"{stack.url}/v1/dunning/runs/{runs[('harbor', i)]['id']}", headers=headers,
                                 timeout=10).json()["steps"][1] for i in range(2)]
    assert all((step["message"] or {}).get("error_code") == 20003 or step["sms"].startswith("blocked")
               for step in harbor_steps), harbor_steps
    with database.unit_of_work() as session:
        assert session.get(Account, account_id).sending_blocked_reason is None
        assert session.scalars(select(DunningSiteOptOut.phone)).all() == [phone_of(0)]

    # when day 7 comes (e-mail only)
    assert tick(stack, database, broker, started + timedelta(days=7)) == len(runs) - 1
    wait_until(stack, database, broker, lambda: runs_past(database, run_ids, 2), "day 7")

    # then the customer who said STOP still got the final e-mail, the one who paid did not, harbor's customers did
    finals = Counter(m["To"] for m in outbox(stack) if m["Subject"].startswith("Final notice from downtown"))
    assert finals[f"c{0}@example.com"] == 1 and f"c{1}@example.com" not in finals and len(finals) == CUSTOMERS - 1
    assert len([m for m in outbox(stack) if m["Subject"] == "Final notice from harbor"]) == 2
    # and every run is over, each step told once by an event
    shown = requests.get(f"{stack.url}/v1/dunning/runs/{runs[('downtown', 0)]['id']}", headers=headers,
                         timeout=10).json()
    assert shown["status"] == "exhausted" and shown["steps"][1]["sms"] == "skipped: the customer texted STOP to this site"
    assert shown["steps"][0]["message"]["status"] == "delivered" and shown["steps"][0]["message"]["from"] == downtown
    with database.unit_of_work() as session:
        events = Counter(session.scalars(select(WebhookEvent.type).where(WebhookEvent.account_id == account_id)))
    assert events == {"dunning.step_sent": 3 * len(runs) - 2, "dunning.exhausted": len(runs) - 1}
    assert simulated(stack)["duplicates"] == []


def test_another_account_cannot_read_or_overwrite_a_site_nor_text_from_a_number_it_does_not_own(stack):
    # given account A with a site and a run on it, and account B
    a_id, a_headers, a_sites = dunning_account(stack, 9201, ["downtown"])
    a_sender, a_twilio = a_sites["downtown"]
    a_run = open_run(stack, a_headers, "downtown", 1, datetime.now(UTC))
    b_id, b_headers, b_sender = new_account(stack, 9202, "10")
    b_twilio = subaccount(stack)

    # when B reads A's site and run, or ends A's run
    assert requests.get(f"{stack.url}/v1/dunning/integrations/downtown", headers=b_headers, timeout=10).status_code == 404
    for path in ("", "/resolve", "/cancel"):
        method = requests.get if path == "" else requests.post
        answer = method(f"{stack.url}/v1/dunning/runs/{a_run['id']}{path}", headers=b_headers, timeout=10)
        assert answer.status_code == 404 and answer.headers["Content-Type"].startswith("application/problem+json")
    # or saves a site from A's number, or opens a run on A's site
    stolen = save_site(stack, b_headers, "downtown", a_sender, b_twilio)
    assert stolen.status_code == 422 and "from" in stolen.json()["errors"]
    response = requests.post(f"{stack.url}/v1/dunning/runs", headers=b_headers, timeout=10, json={
        "site": "downtown", "amount_due": "1.00", "currency": "USD", "update_url": "https://pay.example.com/x",
        "customer": {"id": "c1", "name": "C", "phone": phone_of(1)}})
    assert response.status_code == 422 and "site" in response.json()["errors"]
    # and saves a site of its own by the same name, from its own number
    assert save_site(stack, b_headers, "downtown", b_sender, b_twilio).status_code == 200

    # then A's site and run are as they were
    a_site = requests.get(f"{stack.url}/v1/dunning/integrations/downtown", headers=a_headers, timeout=10).json()
    assert (a_site["from"], a_site["account_sid"]) == (a_sender, a_twilio["sid"])
    shown = requests.get(f"{stack.url}/v1/dunning/runs/{a_run['id']}", headers=a_headers, timeout=10).json()
    assert shown["status"] == "open"
    # and credentials Twilio does not accept are refused before they are stored
    forged = save_site(stack, b_headers, "other", b_sender, {"sid": a_twilio["sid"], "auth_token": "guess"})
    assert forged.status_code == 422


def test_a_worker_killed_during_the_steps_sends_no_text_or_email_twice(stack, database, broker):
    # given 30 customers on a site, and a simulator slow enough that the kill lands mid-request
    account_id, headers, sites = dunning_account(stack, 9301, ["downtown"])
    sender, _ = sites["downtown"]
    started = datetime.now(UTC)
    run_ids = [open_run(stack, headers, "downtown", 500 + i, started)["id"] for i in range(30)]
    requests.post(f"{stack.simulator_url}/_sim/config", json={"latency_ms": 300}, timeout=10)
    try:
        # when day 0's steps run and the worker is killed -9 once some of them sent
        tick(stack, database, broker, started)
        wait_until(stack, database, broker, lambda: 0 < len(texts_from(stack, sender)), "a first text")
        stack.kill_worker()
        stack.start_worker()
        # and the scheduler's tick and sweeps go on until every step is done
        wait_until(stack, database, broker, lambda: runs_past(database, run_ids, 0), "day 0 after the kill",
                   at=started)
    finally:
        requests.post(f"{stack.simulator_url}/_sim/config", json={"latency_ms": 0}, timeout=10)

    # then no customer got a text or an e-mail twice
    received = Counter(m["to"] for m in texts_from(stack, sender))
    assert set(received.values()) == {1} and [m for m in simulated(stack)["duplicates"] if m["from"] == sender] == []
    mails = [m for m in outbox(stack) if m["To"] in {f"c{500 + i}@example.com" for i in range(30)}]
    assert Counter(m["To"] for m in mails) == Counter(f"c{500 + i}@example.com" for i in range(30))
    # and every customer has exactly one text, delivered and charged once (one the kill left unanswered and that
    # Twilio never took was sent again after its hold's TTL)
    with database.unit_of_work() as session:
        texts = session.scalars(select(Message).where(Message.account_id == account_id)).all()
    assert sorted(t.to for t in texts) == sorted(phone_of(500 + i) for i in range(30))
    assert set(received) == {text.to for text in texts}
    for text in texts:
        assert text.status == "delivered" and text.credits_charged == text.credits_estimated > 0
