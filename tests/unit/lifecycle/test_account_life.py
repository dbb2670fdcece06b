"""Cancel, reactivate and mark spam on SQLite: credits, holds, messages, campaigns, numbers, keys, month-end, events."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from shared.api_keys import find_live_key
from shared.billing import auto_recharge, month_end
from shared.billing.calendar import Period
from shared.campaigns.creation import CampaignRequest, create_campaign
from shared.errors import AccountLocked, Conflict, ValidationFailed
from shared.ledger import account_events, accounts, book
from shared.ledger.verify import verify
from shared.lifecycle import account_life
from shared.messaging import senders
from shared.messaging.inbound import Inbound, receive_inbound
from shared.messaging.messages import MessageRequest, accept_message
from shared.messaging.rates import default_rate_card
from shared.messaging.send_cap import SendCap
from shared.models import (
    Account,
    Call,
    Campaign,
    CampaignStep,
    Entry,
    Hold,
    Message,
    PhoneNumber,
    VoiceBroadcast,
)
from shared.twilio.signatures import Credentials, SignedForm

CREDIT = 1000
CREATED = datetime(2026, 3, 10, 12, tzinfo=UTC)
CANCELED = datetime(2026, 3, 20, 9, tzinfo=UTC)
REACTIVATED = datetime(2026, 6, 17, 15, tzinfo=UTC)
SENDER, RECIPIENT = "+14155550000", "+14155550100"
CARD = default_rate_card()
UNCAPPED = SendCap(young_days=0, per_day=1)


def new_account(database, *, monthly=100, purchased=50, policy="prepaid") -> tuple[str, str]:
    """An account with a 100-credit monthly plan (its first cycle granted), 50 purchased credits and a number."""
    with database.unit_of_work() as session:
        account, key = accounts.create_account(
            session, name="Acme", timezone="UTC", plan_monthly_credits=monthly * CREDIT, plan_cycle="monthly",
            plan_rollover="none", overdraft=accounts.Overdraft(policy), low_balance_threshold=0, now=CREATED)
        if purchased:
            book.grant(session, account.id, purchased * CREDIT, "purchase", granted_at=CREATED,
                       idempotency_key=f"bought:{account.id}")
        senders.add_number(session, account.id, SENDER, "long_code")
        return account.id, key


def accept(database, account_id, **fields) -> str:
    with database.unit_of_work() as session:
        message, _ = accept_message(session, account_id, MessageRequest(to=RECIPIENT, from_=SENDER, body="hi",
                                                                        **fields),
                                    rate_card=CARD, now=CREATED, cap=UNCAPPED)
        return message.id


def with_twilio(database, account_id) -> str:
    """A message the send step handed to Twilio: its hold pending, its sid stored."""
    message_id = accept(database, account_id)
    with database.unit_of_work() as session:
        message = session.get(Message, message_id)
        hold = book.reserve(session, account_id, message.credits_estimated, reference=message_id,
                            idempotency_key=f"message:{message_id}:hold:0", ttl_seconds=900, now=CREATED)
        message.status, message.hold_id, message.twilio_sid = "sent", hold.id, f"SM{message_id[-32:]}"
    return message_id


def cancel(database, account_id, now=CANCELED) -> account_life.Canceled:
    with database.unit_of_work() as session:
        return account_life.cancel_account(session, account_id, actor="operator", now=now)


def get(database, model, key):
    with database.unit_of_work() as session:
        row = session.get(model, key)
        session.expunge(row)
        return row


def lots_by_kind(database, account_id) -> dict[str, int]:
    with database.unit_of_work() as session:
        view = book.balance(session, account_id, now=CANCELED)
    totals: dict[str, int] = {}
    for lot in view.lots:
        totals[lot.kind] = totals.get(lot.kind, 0) + lot.remaining
    return totals


def events(database, account_id) -> list[tuple[str, dict]]:
    with database.unit_of_work() as session:
        return [(event.action, event.detail) for event in account_events.list_events(session, account_id, limit=50)]


def assert_clean(database):
    with database.unit_of_work() as session:
        assert verify(session) == []


def test_cancel_writes_off_plan_credits_but_what_a_message_with_twilio_needs_and_keeps_purchased_ones(
        sqlite_database):
    # given 100 plan and 50 purchased credits and a 1-credit message with Twilio
    account_id, _ = new_account(sqlite_database)
    in_flight = with_twilio(sqlite_database, account_id)

    # when the account is canceled
    outcome = cancel(sqlite_database, account_id)

    # then it is canceled, 99 plan credits expired (one expiry entry), the message's credit kept, 50 purchased stay
    assert (outcome.changed, outcome.account.status, outcome.account.status_reason) == (
        True, "canceled", account_life.CANCELED_BY_OPERATOR)
    assert outcome.account.canceled_at is not None
    assert lots_by_kind(sqlite_database, account_id) == {"plan": 1 * CREDIT, "purchase": 50 * CREDIT}
    with sqlite_database.unit_of_work() as session:
        expiries = list(session.scalars(select(Entry.amount).where(Entry.account_id == account_id,
                                                                   Entry.kind == "expiry")))
    assert expiries == [-99 * CREDIT]
    assert get(sqlite_database, Message, in_flight).status == "sent"
    assert_clean(sqlite_database)


def test_cancel_ends_unsent_messages_canceled_uncharged_with_their_holds_voided(sqlite_database):
    # given an accepted, a scheduled and a parked message, and one whose campaign chunk reserved its hold
    account_id, _ = new_account(sqlite_database)
    accepted = accept(sqlite_database, account_id)
    scheduled = accept(sqlite_database, account_id, send_at=(CREATED + timedelta(days=2)).isoformat())
    parked = accept(sqlite_database, account_id)
    held = accept(sqlite_database, account_id)
    with sqlite_database.unit_of_work() as session:
        session.get(Message, parked).status = "parked"
        hold = book.reserve(session, account_id, CREDIT, reference=held, idempotency_key="chunk", ttl_seconds=900,
                            now=CREATED)
        session.get(Message, held).hold_id = hold.id

    # when the account is canceled
    cancel(sqlite_database, account_id)

    # then each is canceled with the reason, none charged, the reserved hold voided and nothing held
    for message_id in (accepted, scheduled, parked, held):
        message = get(sqlite_database, Message, message_id)
        assert (message.status, message.error_message) == ("canceled", "Account is canceled: canceled by the operator.")
        assert message.credits_charged in (None, 0)
    assert get(sqlite_database, Hold, hold.id).status == "voided"
    assert get(sqlite_database, Account, account_id).held == 0
    assert_clean(sqlite_database)


def test_a_canceled_account_takes_no_hold_and_no_message(sqlite_database):
    account_id, _ = new_account(sqlite_database)
    cancel(sqlite_database, account_id)

    with pytest.raises(AccountLocked, match="canceled by the operator"):
        accept(sqlite_database, account_id)
    with pytest.raises(AccountLocked, match="canceled"):
        with sqlite_database.unit_of_work() as session:
            book.reserve(session, account_id, CREDIT, idempotency_key="late", ttl_seconds=900, now=CANCELED)


def test_cancel_cancels_running_campaigns_releases_numbers_and_revokes_keys(sqlite_database):
    # given a running campaign with a pending drip step, a number and the account's key
    account_id, key = new_account(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        session.add(Campaign(id="cmp_1", account_id=account_id, name="Open house", from_=SENDER, status="running",
                             send_at=CREATED, created_at=CREATED, updated_at=CREATED))
        session.add(CampaignStep(campaign_id="cmp_1", step=1, delay_days=3, body="again", status="pending",
                                 starts_at=CREATED + timedelta(days=3)))

    # when the account is canceled
    cancel(sqlite_database, account_id)

    # then the campaign and its drip are canceled, the number released and the key no longer works
    with sqlite_database.unit_of_work() as session:
        assert session.get(Campaign, "cmp_1").status == "canceled"
        assert session.scalar(select(CampaignStep.status).where(CampaignStep.campaign_id == "cmp_1")) == "canceled"
        assert session.scalar(select(PhoneNumber.released_at).where(PhoneNumber.phone == SENDER)) is not None
        assert senders.list_numbers(session, account_id) == []
        assert find_live_key(session, key, now=CANCELED) is None


def test_cancel_cancels_broadcasts_and_calls_not_placed_so_reactivation_does_not_place_them(sqlite_database):
    # given a running voice broadcast with a call accepted and one parked, a lone call accepted, and one with Twilio
    account_id, _ = new_account(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        session.add(VoiceBroadcast(id="vb_1", account_id=account_id, name="Reminder", from_=SENDER, say="Hi",
                                   status="running", created_at=CREATED, updated_at=CREATED))
        session.flush()
        calls = (("call_a", "accepted", "vb_1"), ("call_p", "parked", "vb_1"), ("call_l", "accepted", None),
                 ("call_t", "in-progress", None))
        for n, (call_id, status, broadcast) in enumerate(calls):
            session.add(Call(id=call_id, account_id=account_id, direction="outbound", to=f"+1415555010{n}",
                             from_=SENDER, say="Hi", max_minutes=5, rate=2000, status=status, broadcast_id=broadcast,
                             credits_estimated=10_000, attempts=0, created_at=CREATED, updated_at=CREATED))

    # when the account is canceled, then reactivated
    cancel(sqlite_database, account_id)
    with sqlite_database.unit_of_work() as session:
        account_life.reactivate_account(session, account_id, plan_monthly_credits=50_000, plan_cycle="monthly",
                                        plan_rollover="none", actor="operator", now=CANCELED + timedelta(days=1))

    # then the broadcast and the calls not placed stay canceled, uncharged; the call with Twilio ends as usual
    with sqlite_database.unit_of_work() as session:
        assert session.get(VoiceBroadcast, "vb_1").status == "canceled"
        statuses = {call.id: (call.status, call.credits_charged) for call in session.scalars(select(Call))}
    assert statuses == {"call_a": ("canceled", 0), "call_p": ("canceled", 0), "call_l": ("canceled", 0),
                        "call_t": ("in-progress", None)}


def test_cancel_stops_auto_recharge_so_the_card_is_not_charged(sqlite_database):
    # given auto-recharge of 100 credits under a 200-credit threshold
    account_id, _ = new_account(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        auto_recharge.configure(session, account_id, enabled=True, threshold_mc=200 * CREDIT, credits_mc=100 * CREDIT,
                                payment_method="pm_card_visa", now=CREATED)

    # when the account is canceled (its plan credits gone, the pool far under the threshold)
    cancel(sqlite_database, account_id)

    # then no recharge is due, and the settings say why
    with sqlite_database.unit_of_work() as session:
        assert auto_recharge.due(session, account_id, now=CANCELED) is False
        assert auto_recharge.get_settings(session, account_id).disabled_reason == (
            "account canceled: canceled by the operator")


def test_a_card_saved_again_while_canceled_is_not_charged_until_reactivation(sqlite_database):
    # given auto-recharge of 100 credits under a 200-credit threshold, stopped by a cancel
    account_id, _ = new_account(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        auto_recharge.configure(session, account_id, enabled=True, threshold_mc=200 * CREDIT, credits_mc=100 * CREDIT,
                                payment_method="pm_card_visa", now=CREATED)
    cancel(sqlite_database, account_id)

    # when a payment method is saved again while the account is canceled (a setup page finished late)
    with sqlite_database.unit_of_work() as session:
        auto_recharge.configure(session, account_id, enabled=True, threshold_mc=200 * CREDIT, credits_mc=100 * CREDIT,
                                payment_method="pm_card_visa", now=CANCELED)

    # then no recharge is due nor claimed: a canceled account's card is not charged, by the settle path or the sweep
    with sqlite_database.unit_of_work() as session:
        assert auto_recharge.due(session, account_id, now=CANCELED) is False
        assert account_id not in auto_recharge.accounts_due(session, now=CANCELED)
        assert auto_recharge.claim(session, account_id, now=CANCELED) is None

    # and once it is reactivated on a plan that leaves it under the threshold, the saved card recharges it again
    with sqlite_database.unit_of_work() as session:
        account_life.reactivate_account(session, account_id, plan_monthly_credits=10 * CREDIT, plan_cycle="monthly",
                                        plan_rollover="none", actor="operator", now=REACTIVATED)
        assert auto_recharge.due(session, account_id, now=REACTIVATED) is True


def test_inbound_texts_to_a_released_number_still_land_in_the_account(sqlite_database):
    account_id, _ = new_account(sqlite_database)
    cancel(sqlite_database, account_id)
    deployment = Credentials("AC" + "0" * 32, "token")
    url = "https://example.test/webhooks/twilio/inbound"
    params = {"AccountSid": deployment.account_sid, "To": SENDER, "From": RECIPIENT, "Body": "hello?"}
    form = SignedForm(url, params, RequestValidator(deployment.auth_token).compute_signature(url, params))

    with sqlite_database.unit_of_work() as session:
        received = receive_inbound(session, Inbound(sid="SM" + "1" * 32, from_=RECIPIENT, to=SENDER, body="hello?"),
                                   form, deployment=deployment, now=CANCELED)

    assert received is not None and received.account_id == account_id


def test_canceling_twice_changes_nothing_and_records_one_event(sqlite_database):
    account_id, _ = new_account(sqlite_database)
    first = cancel(sqlite_database, account_id)
    again = cancel(sqlite_database, account_id, now=CANCELED + timedelta(hours=1))

    assert (first.changed, again.changed) == (True, False)
    assert again.account.canceled_at == first.account.canceled_at
    assert [action for action, _ in events(sqlite_database, account_id)] == ["cancel"]
    assert events(sqlite_database, account_id)[0][1]["credits_expired"] == 100 * CREDIT


def test_month_end_grants_a_canceled_account_nothing_charges_no_number_fee_and_still_bills_its_debt(
        sqlite_database):
    # given an overdraft account 5 credits in debt when it is canceled (its plan credits gone first)
    account_id, _ = new_account(sqlite_database, purchased=0, policy="postpaid")
    with sqlite_database.unit_of_work() as session:
        book.charge_pool(session, account_id, 105 * CREDIT, kind="usage", idempotency_key="spent", now=CREATED)
    cancel(sqlite_database, account_id)

    # when March closes
    summary = month_end.close_accounts(sqlite_database, [account_id], Period(2026, 3),
                                       now=datetime(2026, 4, 1, 1, tzinfo=UTC))

    # then the debt is billed and reset, and nothing is granted or charged for the released number
    assert (summary.billed, summary.granted, summary.number_fees) == (5 * CREDIT, 0, 0)
    assert get(sqlite_database, Account, account_id).balance == 0
    assert_clean(sqlite_database)


def test_reactivation_anchors_the_cycle_grants_the_first_one_in_full_and_issues_a_new_key(sqlite_database):
    # given an account canceled in March with 50 purchased credits kept
    account_id, old_key = new_account(sqlite_database)
    cancel(sqlite_database, account_id)

    # when it is reactivated on June 17 on a quarterly 200-credit plan
    with sqlite_database.unit_of_work() as session:
        account, new_key = account_life.reactivate_account(
            session, account_id, plan_monthly_credits=200 * CREDIT, plan_cycle="quarterly", plan_rollover="none",
            actor="operator", now=REACTIVATED)
        plan_lot = next(lot for lot in book.balance(session, account_id, now=REACTIVATED).lots if lot.kind == "plan")

        # then it is active, the purchased credits spendable, and its first quarter granted in full,
        # expiring when the quarter that starts in June ends (Sep 1), not on the creation's quarters
        assert (account.status, account.canceled_at, account.balance) == ("active", None, 650 * CREDIT)
        assert book.available_for(session, account_id, now=REACTIVATED) == 650 * CREDIT
        assert plan_lot.remaining == 600 * CREDIT
        assert plan_lot.expires_at == datetime(2026, 9, 1, tzinfo=UTC)
        assert find_live_key(session, new_key, now=REACTIVATED).account_id == account_id
        assert find_live_key(session, old_key, now=REACTIVATED) is None

    # and month-end grants the next quarter only when that quarter ends (August), not with the creation's cycle
    for period, granted in ((Period(2026, 6), 0), (Period(2026, 7), 0), (Period(2026, 8), 600 * CREDIT)):
        summary = month_end.close_accounts(sqlite_database, [account_id], period,
                                           now=datetime(2026, 9, 1, 1, tzinfo=UTC))
        assert summary.granted == granted, period
    assert [action for action, _ in events(sqlite_database, account_id)] == ["reactivate", "cancel"]
    assert_clean(sqlite_database)


def test_a_released_number_cannot_be_sent_from_after_reactivation_until_it_is_added_again(sqlite_database):
    # given an account canceled (its number released) and reactivated
    account_id, _ = new_account(sqlite_database)
    cancel(sqlite_database, account_id)
    with sqlite_database.unit_of_work() as session:
        account_life.reactivate_account(session, account_id, plan_monthly_credits=100 * CREDIT, plan_cycle="monthly",
                                        plan_rollover="none", actor="operator", now=REACTIVATED)

    # when it sends from its old number, it is refused naming `from`
    with pytest.raises(ValidationFailed) as refused:
        accept(sqlite_database, account_id)
    assert list(refused.value.errors) == ["from"]

    # and once it adds the number again, the number is its sender again
    with sqlite_database.unit_of_work() as session:
        senders.add_number(session, account_id, SENDER, "long_code")
    assert get(sqlite_database, Message, accept(sqlite_database, account_id)).status == "accepted"


def test_a_released_number_cannot_send_a_campaign_after_reactivation_until_it_is_added_again(sqlite_database):
    # given an account canceled (its number released) and reactivated
    account_id, _ = new_account(sqlite_database)
    cancel(sqlite_database, account_id)
    with sqlite_database.unit_of_work() as session:
        account_life.reactivate_account(session, account_id, plan_monthly_credits=100 * CREDIT, plan_cycle="monthly",
                                        plan_rollover="none", actor="operator", now=REACTIVATED)

    # when it creates a campaign from its old number, it is refused naming `from`, and nothing is held
    with pytest.raises(ValidationFailed) as refused:
        create_campaign(sqlite_database, account_id, CampaignRequest(
            name="Open house", from_=SENDER, body="Open house Sunday", recipients=[{"to": RECIPIENT}]),
            rate_card=CARD, now=REACTIVATED, cap=UNCAPPED)
    assert list(refused.value.errors) == ["from"]
    assert get(sqlite_database, Account, account_id).held == 0

    # and once it adds the number again, the campaign is made
    with sqlite_database.unit_of_work() as session:
        senders.add_number(session, account_id, SENDER, "long_code")
    campaign, _ = create_campaign(sqlite_database, account_id, CampaignRequest(
        name="Open house", from_=SENDER, body="Open house Sunday", recipients=[{"to": RECIPIENT}]),
        rate_card=CARD, now=REACTIVATED, cap=UNCAPPED)
    assert campaign.from_ == SENDER


def test_each_reactivation_grants_its_first_cycle_even_at_the_same_instant_as_the_last(sqlite_database):
    # given an account canceled and reactivated, then canceled again, all at one instant of the clock
    account_id, _ = new_account(sqlite_database, monthly=0, purchased=0)
    for _ in range(2):
        cancel(sqlite_database, account_id, now=REACTIVATED)
        with sqlite_database.unit_of_work() as session:
            account_life.reactivate_account(session, account_id, plan_monthly_credits=100 * CREDIT,
                                            plan_cycle="monthly", plan_rollover="none", actor="operator",
                                            now=REACTIVATED)

    # then the second reactivation granted its own first cycle: 100 plan credits to spend, not a replay of the first
    with sqlite_database.unit_of_work() as session:
        view = book.balance(session, account_id, now=REACTIVATED)
    assert [(lot.kind, lot.remaining) for lot in view.lots] == [("plan", 100 * CREDIT)]
    assert_clean(sqlite_database)


def test_reactivating_an_account_in_debt_repays_the_debt_from_its_first_cycle_first(sqlite_database):
    # given a postpaid account without credits that sent 101 credits' worth, then was canceled with that debt
    account_id, _ = new_account(sqlite_database, monthly=0, purchased=0, policy="postpaid")
    with sqlite_database.unit_of_work() as session:
        hold = book.reserve(session, account_id, 101 * CREDIT, idempotency_key="sent", ttl_seconds=900, now=CREATED)
        book.settle(session, hold.id, 101 * CREDIT, idempotency_key="sent:settle", now=CREATED)
    cancel(sqlite_database, account_id)

    # when it is reactivated on a 100-credit plan, then again (canceled in between) on a 300-credit one
    balances = []
    for monthly in (100, 300):
        with sqlite_database.unit_of_work() as session:
            account_life.reactivate_account(session, account_id, plan_monthly_credits=monthly * CREDIT,
                                            plan_cycle="monthly", plan_rollover="none", actor="operator",
                                            now=REACTIVATED)
            view = book.balance(session, account_id, now=REACTIVATED)
        balances.append((view.balance, [(lot.kind, lot.remaining) for lot in view.lots]))
        cancel(sqlite_database, account_id, now=REACTIVATED)

    # then the first grant went to the debt whole (1 credit still owed), the second repaid that credit and left
    # 299 to spend
    assert balances == [(-1 * CREDIT, []), (299 * CREDIT, [("plan", 299 * CREDIT)])]
    assert_clean(sqlite_database)


def test_only_a_canceled_account_is_reactivated(sqlite_database):
    account_id, _ = new_account(sqlite_database)
    with pytest.raises(Conflict, match="only a canceled account"):
        with sqlite_database.unit_of_work() as session:
            account_life.reactivate_account(session, account_id, plan_monthly_credits=0, plan_cycle="monthly",
                                            plan_rollover="none", actor="operator", now=REACTIVATED)


def test_mark_spam_takes_every_credit_but_what_in_flight_messages_need_and_cancels(sqlite_database):
    # given 100 plan and 50 purchased credits and a 1-credit message with Twilio
    account_id, _ = new_account(sqlite_database)
    with_twilio(sqlite_database, account_id)

    # when the account is marked as spam
    with sqlite_database.unit_of_work() as session:
        outcome = account_life.mark_spam(session, account_id, actor="operator", now=CANCELED)

    # then it is canceled and flagged; the purchased credits are removed too; the in-flight credit is kept
    assert (outcome.account.status, outcome.account.status_reason, outcome.account.spam) == (
        "canceled", account_life.MARKED_AS_SPAM, True)
    assert lots_by_kind(sqlite_database, account_id) == {"plan": 1 * CREDIT}
    assert [action for action, _ in events(sqlite_database, account_id)] == ["update", "mark_spam"]
    with sqlite_database.unit_of_work() as session:
        again = account_life.mark_spam(session, account_id, actor="operator", now=CANCELED)
    assert again.changed is False and len(events(sqlite_database, account_id)) == 2
    assert_clean(sqlite_database)


@pytest.mark.parametrize("charged", [pytest.param(CREDIT, id="delivered"), pytest.param(0, id="failed")])
def test_mark_spam_keeps_the_purchased_credit_a_message_with_twilio_holds_so_it_is_not_paid_twice(
        sqlite_database, charged):
    # given an account with only 50 purchased credits and a 1-credit message with Twilio held from them
    account_id, _ = new_account(sqlite_database, monthly=0)
    in_flight = with_twilio(sqlite_database, account_id)

    # when the account is marked as spam
    with sqlite_database.unit_of_work() as session:
        account_life.mark_spam(session, account_id, actor="operator", now=CANCELED)

    # then 49 purchased credits are removed (one adjustment entry) and the message's credit is kept for it
    assert lots_by_kind(sqlite_database, account_id) == {"purchase": 1 * CREDIT}
    with sqlite_database.unit_of_work() as session:
        adjustments = list(session.scalars(select(Entry.amount).where(Entry.account_id == account_id,
                                                                      Entry.kind == "adjustment")))
    assert adjustments == [-49 * CREDIT]

    # and when the message settles, it is paid from that credit and what it did not use lapses: no debt to bill
    with sqlite_database.unit_of_work() as session:
        book.settle(session, get(sqlite_database, Message, in_flight).hold_id, charged,
                    idempotency_key=f"settle:{in_flight}", now=CANCELED + timedelta(minutes=1))
    account = get(sqlite_database, Account, account_id)
    assert (account.balance, account.held) == (0, 0)
    assert lots_by_kind(sqlite_database, account_id) == {}
    assert_clean(sqlite_database)


def test_plan_and_flag_changes_are_recorded_with_who_made_them(sqlite_database):
    account_id, _ = new_account(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        accounts.update_account(session, account_id, now=CANCELED, plan_monthly_credits=300 * CREDIT,
                                flags={"credit_hold": True}, actor="operator")
        accounts.update_account(session, account_id, now=CANCELED, low_balance_threshold=CREDIT, actor=account_id)

    assert events(sqlite_database, account_id) == [
        ("update", {"plan": {"monthly_credits": 300 * CREDIT, "cycle": None, "rollover": None},
                    "flags": {"credit_hold": True}})]
