"""The rules of an account's customers' dunning runs and sites, on SQLite (the sends are proven end to end in
tests/e2e/test_site_dunning_e2e.py)."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.billing import dunning, dunning_texts
from shared.errors import Conflict, ValidationFailed
from shared.messaging.senders import add_number
from tests.unit.billing.test_purchases import new_account
from tests.unit.campaigns.test_templates import DOUBLING

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
SID = "AC" + "1" * 32
SITE_NUMBER = "+14155550177"
STEPS = [{"day": 0, "sms": {"body": "{{ customer.name }}: {{ amount_due }} due. Reply HELP for help, STOP to opt out."}},
         {"day": 3, "email": {"subject": "{{ amount_due }} due", "body": "{{ update_url }}"}}]
CUSTOMER = {"id": "cus_1", "name": "Dana", "phone": "+14155550100", "email": "dana@example.com", "fields": {}}


def account_with_site(database) -> str:
    account_id = new_account(database)
    with database.unit_of_work() as session:
        add_number(session, account_id, SITE_NUMBER, "long_code")
        dunning_texts.set_integration(session, "downtown", account_id=account_id, account_sid=SID,
                                      auth_token="token", from_number=SITE_NUMBER, now=NOW)
        dunning.set_schedule(session, account_id, steps=STEPS, site="downtown", now=NOW)
    return account_id


def open_run(database, account_id, **changes):
    fields = dict(site="downtown", customer=CUSTOMER, amount_due="49.90", currency="USD",
                  update_url="https://pay.example.com/u/1") | changes
    with database.unit_of_work() as session:
        return dunning.open_customer_run(session, account_id, now=NOW, **fields)


def test_a_text_that_renders_past_one_segment_is_warned_with_its_segments_and_encoding(sqlite_database):
    # given an account and a text whose emoji makes it UCS-2 (70 characters a segment)
    account_id = new_account(sqlite_database)
    body = "{{ customer.name }} 🙂 " + "x" * 60 + " {{ customer.fields.plan }} Reply HELP for help, STOP to opt out."

    # when the schedule is saved
    with sqlite_database.unit_of_work() as session:
        view = dunning.set_schedule(session, account_id, steps=[{"day": 0, "sms": {"body": body}}], now=NOW)

    # then it is saved, with a warning naming the segments and the encoding for a sample customer
    [warning] = view.warnings
    assert warning.startswith("steps[0].sms.body renders to 2 segments (UCS-2, ") and "sample customer" in warning


@pytest.mark.parametrize(("body", "limit"), [
    ("{% for i in (1..2000) %}{% endfor %}Pay now. Reply HELP for help, STOP to opt out.", "loop iteration limit"),
    (DOUBLING, "local namespace limit"),
    ("{% for i in (1..900) %}{{ customer.name }} is late. {% endfor %}", "output stream limit"),
])
def test_a_text_whose_render_runs_past_a_limit_is_refused_and_nothing_is_saved(sqlite_database, body, limit):
    # given an account; when a schedule whose text loops too long, grows a value or writes too much is saved
    account_id = new_account(sqlite_database)
    with pytest.raises(ValidationFailed) as refused, sqlite_database.unit_of_work() as session:
        dunning.set_schedule(session, account_id, steps=[{"day": 0, "sms": {"body": body}}], now=NOW)

    # then it is refused naming the text and the limit, and the account keeps the built-in schedule
    assert limit in refused.value.errors["steps[0].sms.body"]
    with sqlite_database.unit_of_work() as session:
        assert dunning.get_schedule(session, account_id).steps == dunning.DEFAULT_STEPS


def test_a_run_names_a_site_of_the_account_a_customer_and_a_decimal_amount_or_is_refused_field_by_field(
        sqlite_database):
    account_id = account_with_site(sqlite_database)

    with pytest.raises(ValidationFailed) as refused:
        open_run(sqlite_database, account_id, site="uptown", customer={"id": "", "name": "D"}, amount_due="49.999",
                 currency="dollars", update_url="ftp://x", started_at="2020-01-01T00:00:00+00:00")

    assert set(refused.value.errors) == {"site", "customer.id", "customer", "amount_due", "currency", "update_url",
                                         "started_at"}


def test_a_customer_has_one_open_run_per_site_until_it_is_resolved(sqlite_database):
    # given a run for a customer, backdated two days
    account_id = account_with_site(sqlite_database)
    run = open_run(sqlite_database, account_id, started_at=(NOW - timedelta(days=2)).isoformat())
    assert (run.amount_cents, run.next_step_at) == (4990, NOW - timedelta(days=2))

    # when another run is opened for the same customer on the same site
    with pytest.raises(Conflict):
        open_run(sqlite_database, account_id)

    # then once the first is resolved, nothing of it is due any more and a new run may open
    with sqlite_database.unit_of_work() as session:
        ended = dunning.end_customer_run(session, account_id, run.id, "resolved", now=NOW)
        assert ended.status == "resolved" and dunning.due_steps(session, now=NOW + timedelta(days=30)) == []
    assert open_run(sqlite_database, account_id).status == "open"


def test_a_site_texts_only_from_a_number_of_its_account_that_no_other_site_uses(sqlite_database):
    account_id = account_with_site(sqlite_database)
    other = new_account(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        with pytest.raises(ValidationFailed) as not_owned:
            dunning_texts.set_integration(session, "downtown", account_id=other, account_sid=SID, auth_token="t",
                                          from_number=SITE_NUMBER, now=NOW)
        with pytest.raises(ValidationFailed) as shared:
            dunning_texts.set_integration(session, "uptown", account_id=account_id, account_sid=SID, auth_token="t",
                                          from_number=SITE_NUMBER, now=NOW)
    assert not_owned.value.errors == {"from": "is not a number of this account"}
    assert shared.value.errors == {"from": "is the number of another site"}


def test_a_customer_reachable_only_at_an_office_lines_extension_is_refused(sqlite_database):
    # given a customer with no email, whose phone is an office line with an extension (a text cannot reach it)
    account_id = account_with_site(sqlite_database)
    customer = {"id": "cus_2", "name": "Lee", "phone": "+1 415 555 0100 ext. 7", "fields": {}}

    # when a run is opened for them / then it is refused, naming the extension, since no reminder could go out
    with pytest.raises(ValidationFailed) as refused:
        open_run(sqlite_database, account_id, customer=customer)
    assert "extension (7)" in refused.value.errors["customer.phone"]
