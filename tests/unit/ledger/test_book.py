"""The ledger on SQLite and PostgreSQL: holds, settlements, replays, policies, flags, users' credits."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from shared.errors import AccountLocked, Conflict, InsufficientCredits, NotFound, ValidationFailed
from shared.ledger import accounts, allocations, book
from shared.ledger.verify import verify
from shared.models import Account, Entry, Hold, Message

UTC = timezone.utc
NOW = datetime(2021, 3, 10, 12, tzinfo=UTC)


def new_account(database, *, policy="prepaid", limit=0, credits=0, kind="purchase", plan=0) -> str:
    with database.unit_of_work() as session:
        account, _ = accounts.create_account(
            session, name="Acme", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly",
            plan_rollover="none", overdraft=accounts.Overdraft(policy, limit), low_balance_threshold=0, now=NOW)
        account.plan_monthly_credits = plan  # the plan without its first cycle's grant: `credits` is the whole pool
        if credits:
            book.grant(session, account.id, credits, kind, granted_at=NOW, idempotency_key=f"seed-{account.id}")
        return account.id


def reserve(database, account_id, amount, key, **kwargs):
    with database.unit_of_work() as session:
        return book.reserve(session, account_id, amount, idempotency_key=key, ttl_seconds=600, now=NOW, **kwargs)


def settle(database, hold, actual, key, **kwargs):
    with database.unit_of_work() as session:
        return book.settle(session, hold, actual, idempotency_key=key, now=NOW, **kwargs)


def view(database, account_id) -> book.BalanceView:
    with database.unit_of_work() as session:
        return book.balance(session, account_id, now=NOW)


def assert_clean(database):
    with database.unit_of_work() as session:
        assert verify(session) == []


def test_reserve_then_settle_less_than_the_hold(database):
    account_id = new_account(database, credits=10_000)
    hold = reserve(database, account_id, 3_000, "r1", reference="msg_1")
    assert (view(database, account_id).held, view(database, account_id).available) == (3_000, 7_000)

    result = settle(database, hold.id, 2_000, "s1", carrier_fee_mc=500)

    assert (result.charged, result.balance, result.hold.status) == (2_500, 7_500, "settled")
    balance = view(database, account_id)
    assert (balance.balance, balance.held, balance.available) == (7_500, 0, 7_500)
    with database.unit_of_work() as session:
        kinds = [(row.kind, row.amount, row.balance_after) for row in book.transactions(session, account_id, limit=10)]
    assert kinds == [("carrier_fee", -500, 7_500), ("usage", -2_000, 8_000), ("purchase", 10_000, 10_000)]
    assert_clean(database)


def test_every_operation_replayed_with_its_key_changes_nothing(database):
    account_id = new_account(database, credits=10_000)
    hold = reserve(database, account_id, 3_000, "r1")
    assert reserve(database, account_id, 3_000, "r1") == hold
    first = settle(database, "r1", 3_500, "s1")
    assert settle(database, "r1", 3_500, "s1") == first
    assert reserve(database, account_id, 3_000, "r1").id == hold.id  # even after it was settled
    with database.unit_of_work() as session:
        lot = book.grant(session, account_id, 1_000, "bonus", granted_at=NOW, idempotency_key="g")
        assert book.grant(session, account_id, 1_000, "bonus", granted_at=NOW, idempotency_key="g") == lot
    other = reserve(database, account_id, 1_000, "r2")
    with database.unit_of_work() as session:
        book.void(session, other.id, now=NOW)
        assert book.void(session, other.id, now=NOW).status == "voided"

    balance = view(database, account_id)
    assert (balance.balance, balance.held) == (10_000 - 3_500 + 1_000, 0)
    with database.unit_of_work() as session:
        assert session.query(Entry).filter_by(account_id=account_id).count() == 3
    assert_clean(database)


def test_a_replayed_settlement_answers_the_balance_its_first_run_left_after_its_carrier_fee(database):
    # given a settlement with a carrier fee, then a later one on the same account
    account_id = new_account(database, credits=10_000)
    first = settle(database, reserve(database, account_id, 3_000, "r1").id, 2_000, "s1", carrier_fee_mc=500)
    settle(database, reserve(database, account_id, 1_000, "r2").id, 1_000, "s2", carrier_fee_mc=250)

    # when the first is replayed
    replayed = settle(database, "r1", 2_000, "s1", carrier_fee_mc=500)

    # then it answers what it answered, the balance after its own fee, not the account's balance now
    assert (replayed.charged, replayed.balance, replayed.replayed) == (2_500, 7_500, True)
    assert first.balance == 7_500
    assert view(database, account_id).balance == 6_250


def test_a_hold_is_resolved_exactly_once(database):
    account_id = new_account(database, credits=10_000)
    hold = reserve(database, account_id, 1_000, "r1")
    settle(database, hold.id, 1_000, "s1")
    with pytest.raises(Conflict):
        settle(database, hold.id, 1_000, "s-other")
    with database.unit_of_work() as session, pytest.raises(Conflict):
        book.void(session, hold.id, now=NOW)
    voided = reserve(database, account_id, 1_000, "r2")
    with database.unit_of_work() as session:
        book.void(session, voided.id, now=NOW)
    with pytest.raises(Conflict):
        settle(database, voided.id, 1_000, "s2")
    assert view(database, account_id).balance == 9_000
    assert_clean(database)


def test_expired_hold_releases_and_can_still_be_settled_once_by_reconciliation(database):
    account_id = new_account(database, credits=10_000)
    hold = reserve(database, account_id, 4_000, "r1")
    with database.unit_of_work() as session:
        assert book.expire(session, hold.id, now=NOW).status == "pending"  # not due yet: no-op
        later = NOW + timedelta(seconds=601)
        assert book.due_holds(session, later) == [hold.id]
        assert book.expire(session, hold.id, now=later).status == "expired"
        assert book.expire(session, hold.id, now=later).status == "expired"
    assert view(database, account_id).held == 0

    settle(database, hold.id, 1_000, "late")

    assert (view(database, account_id).balance, view(database, account_id).held) == (9_000, 0)
    with pytest.raises(Conflict):
        settle(database, hold.id, 1_000, "late-again")
    assert_clean(database)


def test_prepaid_refuses_a_hold_that_does_not_fit_and_names_what_is_available(database):
    account_id = new_account(database, credits=5_000)
    reserve(database, account_id, 4_000, "r1")

    with pytest.raises(InsufficientCredits) as refused:
        reserve(database, account_id, 2_000, "r2")

    assert (refused.value.available, refused.value.required) == (1_000, 2_000)
    assert view(database, account_id).held == 4_000


def test_settling_above_the_hold_below_zero_locks_a_prepaid_account_until_credits_return(database):
    # Given a prepaid account with 1 credit and a 1-credit hold
    account_id = new_account(database, credits=1_000)
    hold = reserve(database, account_id, 1_000, "r1")
    # When the real cost is 3 credits
    result = settle(database, hold.id, 3_000, "s1")
    # Then the account is locked with a reason and refuses new holds
    assert (result.balance, result.status) == (-2_000, "locked")
    with database.unit_of_work() as session:
        account = session.get(Account, account_id)
        assert account.status == "locked" and "below zero" in account.status_reason
    with pytest.raises(AccountLocked):
        reserve(database, account_id, 1, "r2")
    with database.unit_of_work() as session, pytest.raises(AccountLocked):
        book.available_for(session, account_id, now=NOW)
    # A grant that leaves it still negative keeps it locked; one that reaches zero unlocks it
    with database.unit_of_work() as session:
        book.grant(session, account_id, 1_000, "purchase", granted_at=NOW, idempotency_key="p1")
        assert session.get(Account, account_id).status == "locked"
    with database.unit_of_work() as session:
        lot = book.grant(session, account_id, 5_000, "purchase", granted_at=NOW, idempotency_key="p2")
    # And the debt was repaid first: the lot keeps only what is left
    assert lot.remaining == 4_000
    balance = view(database, account_id)
    assert (balance.status, balance.balance, [x.remaining for x in balance.lots]) == ("active", 4_000, [4_000])
    assert_clean(database)


def test_overdraft_allows_holds_down_to_minus_the_limit_and_postpaid_has_no_limit(database):
    overdraft = new_account(database, policy="overdraft", limit=5_000, credits=1_000)
    reserve(database, overdraft, 6_000, "o1")
    with pytest.raises(InsufficientCredits):
        reserve(database, overdraft, 1, "o2")
    with database.unit_of_work() as session:
        assert book.available_for(session, overdraft, now=NOW) == 0

    postpaid = new_account(database, policy="postpaid")
    hold = reserve(database, postpaid, 1_000_000, "p1")
    result = settle(database, hold.id, 2_000_000, "p2")
    assert (result.balance, result.status) == (-2_000_000, "active")  # only prepaid accounts lock
    with database.unit_of_work() as session:
        assert book.available_for(session, postpaid, now=NOW) is None
    assert_clean(database)


def test_credit_hold_refuses_plan_credits_only(database):
    account_id = new_account(database)
    with database.unit_of_work() as session:
        accounts.update_account(session, account_id, now=NOW, flags={"credit_hold": True})
    with database.unit_of_work() as session, pytest.raises(Conflict):
        book.grant(session, account_id, 1_000, "plan", granted_at=NOW, idempotency_key="plan")
    with database.unit_of_work() as session:
        book.grant(session, account_id, 1_000, "purchase", granted_at=NOW, idempotency_key="buy")
    assert view(database, account_id).balance == 1_000


def test_expiry_writes_off_due_lots_and_rollover_protection_keeps_plan_credits(database):
    account_id = new_account(database)
    with database.unit_of_work() as session:
        book.grant(session, account_id, 1_000, "plan", granted_at=datetime(2021, 3, 1, tzinfo=UTC),
                     idempotency_key="plan")  # its cycle ends when March does
        book.grant(session, account_id, 2_000, "bonus", granted_at=NOW, expires_at=NOW + timedelta(days=1),
                     idempotency_key="bonus")
        book.grant(session, account_id, 4_000, "purchase", granted_at=NOW, idempotency_key="buy")
        assert book.balance(session, account_id, now=NOW).expiring_end_of_month == 3_000
        accounts.update_account(session, account_id, now=NOW, flags={"rollover_protection": True})
        assert book.balance(session, account_id, now=NOW).expiring_end_of_month == 2_000
    later = datetime(2021, 5, 1, tzinfo=UTC)
    with database.unit_of_work() as session:
        assert book.expire_lots(session, account_id, now=later) == 2_000
        assert book.expire_lots(session, account_id, now=later) == 0
        # when protection is lifted, the plan credits it kept past their expiry lapse at once
        accounts.update_account(session, account_id, now=later, flags={"rollover_protection": False})
        assert book.balance(session, account_id, now=later).balance == 4_000
        assert book.expire_lots(session, account_id, now=later) == 0
    assert view(database, account_id).balance == 4_000
    assert_clean(database)


def test_spam_flag_removes_purchased_and_bonus_credits_each_with_an_entry(database):
    # given 5 purchased credits, 1 bonus credit and 2 plan credits
    account_id = new_account(database, credits=5_000)
    with database.unit_of_work() as session:
        book.grant(session, account_id, 1_000, "bonus", granted_at=NOW, idempotency_key="bonus")
        book.grant(session, account_id, 2_000, "plan", granted_at=NOW, idempotency_key="plan")

        # when the account is flagged as spam
        account = accounts.update_account(session, account_id, now=NOW, flags={"spam": True})

        # then only the plan credits are left, and each removed lot has its own adjustment entry
        assert (account.spam, account.balance) == (True, 2_000)
        removed = [(e.kind, e.amount) for e in book.transactions(session, account_id, limit=2)]
    assert sorted(removed) == [("adjustment", -5_000), ("adjustment", -1_000)]
    assert_clean(database)


def test_rollover_protection_keeps_rollover_lots_past_their_twelve_months(database):
    # given a rollover lot granted 2020-09-01 (it expires 2021-09-01) on a protected account
    account_id = new_account(database)
    with database.unit_of_work() as session:
        book.grant(session, account_id, 3_000, "rollover", granted_at=datetime(2020, 9, 1, tzinfo=UTC),
                   idempotency_key="rollover")
        accounts.update_account(session, account_id, now=NOW, flags={"rollover_protection": True})
    past_expiry = datetime(2021, 10, 1, tzinfo=UTC)

    # when lots are expired after its expiry, then nothing goes while protected
    with database.unit_of_work() as session:
        assert book.expire_lots(session, account_id, now=past_expiry) == 0
        assert book.balance(session, account_id, now=past_expiry).expiring_end_of_month == 0

    # and it expires once protection is lifted
    with database.unit_of_work() as session:
        accounts.update_account(session, account_id, now=past_expiry, flags={"rollover_protection": False})
        assert book.balance(session, account_id, now=past_expiry).balance == 0
        assert book.expire_lots(session, account_id, now=past_expiry) == 0
    assert_clean(database)


def test_users_credits_are_theirs_alone_and_return_to_the_pool_when_deleted(database):
    # Given a pool of 10 credits, a user holding 4 of them and an owner
    account_id = new_account(database, credits=10_000, plan=10_000)
    with database.unit_of_work() as session:
        user = allocations.create_user(session, account_id, name="U", email="u@x", phone=None, role="user",
                                       monthly_credits=4_000, now=NOW)
        owner = allocations.create_user(session, account_id, name="O", email="o@x", phone=None, role="owner",
                                        monthly_credits=None, now=NOW)
        allocations.update_user(session, account_id, user.id, now=NOW, total_credits=4_000)
    # The user's sends draw on its 4 credits only; the owner's on the pool's 6
    with pytest.raises(InsufficientCredits) as refused:
        reserve(database, account_id, 5_000, "u1", user_id=user.id)
    assert refused.value.available == 4_000
    user_hold = reserve(database, account_id, 3_000, "u2", user_id=user.id)
    with pytest.raises(InsufficientCredits):
        reserve(database, account_id, 6_001, "o1", user_id=owner.id)
    owner_hold = reserve(database, account_id, 6_000, "o2", user_id=owner.id)
    with database.unit_of_work() as session:
        assert book.available_for(session, account_id, user.id, now=NOW) == 1_000
        assert book.available_for(session, account_id, owner.id, now=NOW) == 0
    settle(database, user_hold.id, 2_000, "su")
    settle(database, owner_hold.id, 1_000, "so")
    with database.unit_of_work() as session:
        seat = allocations.get_user(session, account_id, user.id)
        assert (seat.balance, seat.held) == (2_000, 0)
        # Deleting the user returns its 2 credits to the pool
        allocations.delete_user(session, account_id, user.id, now=NOW)
    balance = view(database, account_id)
    assert (balance.balance, balance.pool_available) == (7_000, 7_000)
    assert [u.id for u in balance.users] == [owner.id]
    assert_clean(database)


def test_allocations_are_capped_and_the_refusal_names_the_maximum(database):
    account_id = new_account(database, credits=3_000, plan=10_000)
    with database.unit_of_work() as session:
        first = allocations.create_user(session, account_id, name="A", email="a@x", phone=None, role="user",
                                        monthly_credits=6_000, now=NOW)
    with database.unit_of_work() as session, pytest.raises(ValidationFailed, match="at most 4"):
        allocations.create_user(session, account_id, name="B", email="b@x", phone=None, role="user",
                                monthly_credits=4_001, now=NOW)
    with database.unit_of_work() as session, pytest.raises(ValidationFailed, match="at most 3") as refused:
        allocations.update_user(session, account_id, first.id, now=NOW, total_credits=3_001)
    assert "total_credits" in refused.value.errors
    with database.unit_of_work() as session:
        allocations.update_user(session, account_id, first.id, now=NOW, total_credits=3_000)
        allocations.update_user(session, account_id, first.id, now=NOW, total_credits=1_000)
    assert view(database, account_id).pool_available == 2_000
    assert_clean(database)


def test_the_refusal_names_a_maximum_with_a_fraction_of_a_credit(database):
    # given a 10-credit plan of which a user already has 6.5 credits a month
    account_id = new_account(database, plan=10_000)
    with database.unit_of_work() as session:
        allocations.create_user(session, account_id, name="A", email="a@x", phone=None, role="user",
                                monthly_credits=6_500, now=NOW)

    # when another user asks for 3.501, then the refusal names 3.5 (PostgreSQL sums BIGINTs as numerics)
    with database.unit_of_work() as session, pytest.raises(ValidationFailed, match=r"at most 3\.5 ") as refused:
        allocations.create_user(session, account_id, name="B", email="b@x", phone=None, role="user",
                                monthly_credits=3_501, now=NOW)
    assert "monthly_credits" in refused.value.errors


def test_a_settlement_overrun_of_a_users_credits_locks_that_user_alone_until_it_is_given_more(database):
    # given a 10-credit pool of which a user holds 1 credit, and an admin sharing the pool
    account_id = new_account(database, credits=10_000, plan=10_000)
    with database.unit_of_work() as session:
        user = allocations.create_user(session, account_id, name="U", email="u@x", phone=None, role="user",
                                       monthly_credits=1_000, now=NOW)
        admin = allocations.create_user(session, account_id, name="A", email="a@x", phone=None, role="admin",
                                        monthly_credits=None, now=NOW)
        allocations.update_user(session, account_id, user.id, now=NOW, total_credits=1_000)
    hold = reserve(database, account_id, 1_000, "u1", user_id=user.id)

    # when its send settles at 2.5 credits (more segments than estimated)
    settle(database, hold.id, 2_500, "s1")

    # then the user's own credits pay all of it and go below zero; the pool is untouched and the account active
    balance = view(database, account_id)
    assert (balance.balance, balance.pool_available, balance.status) == (7_500, 9_000, "active")
    assert [(seat.id, seat.balance) for seat in balance.users if seat.role == "user"] == [(user.id, -1_500)]
    assert_clean(database)
    # and that user is locked (not merely short of credits), while the admin still spends from the pool
    with pytest.raises(AccountLocked, match=f"user {user.id} is locked"):
        reserve(database, account_id, 1, "u2", user_id=user.id)
    with database.unit_of_work() as session, pytest.raises(AccountLocked, match="locked"):
        book.available_for(session, account_id, user.id, now=NOW)
    assert reserve(database, account_id, 1_000, "a1", user_id=admin.id).from_allocation is False

    # when an admin gives the user 2 credits: 1.5 repay its debt, 0.5 is left to spend, and it is unlocked
    with database.unit_of_work() as session:
        allocations.update_user(session, account_id, user.id, now=NOW, total_credits=500)
    assert reserve(database, account_id, 500, "u3", user_id=user.id).from_allocation is True
    assert [seat.balance for seat in view(database, account_id).users if seat.role == "user"] == [500]
    assert_clean(database)


def test_a_grant_to_a_user_in_debt_repays_the_debt_before_its_lot_keeps_anything(database):
    # given a user whose send overran its 1 credit by 1.5
    account_id = new_account(database, credits=10_000, plan=10_000)
    with database.unit_of_work() as session:
        user = allocations.create_user(session, account_id, name="U", email="u@x", phone=None, role="user",
                                       monthly_credits=1_000, now=NOW)
        allocations.update_user(session, account_id, user.id, now=NOW, total_credits=1_000)
    settle(database, reserve(database, account_id, 1_000, "u1", user_id=user.id).id, 2_500, "s1")

    # when the operator grants the user 2 bonus credits
    with database.unit_of_work() as session:
        lot = book.grant(session, account_id, 2_000, "bonus", granted_at=NOW, user_id=user.id, idempotency_key="g")

    # then its lot keeps what is left after the debt, and the user may send again
    assert (lot.amount, lot.remaining) == (2_000, 500)
    assert [seat.balance for seat in view(database, account_id).users if seat.role == "user"] == [500]
    assert reserve(database, account_id, 500, "u2", user_id=user.id).amount == 500
    assert_clean(database)


def test_unknown_account_and_user(database):
    with database.unit_of_work() as session, pytest.raises(NotFound):
        book.reserve(session, "acct_missing", 1, idempotency_key="x", ttl_seconds=1, now=NOW)
    account_id = new_account(database, credits=1_000)
    with database.unit_of_work() as session, pytest.raises(NotFound):
        book.reserve(session, account_id, 1, user_id="user_missing", idempotency_key="y", ttl_seconds=1, now=NOW)
    with database.unit_of_work() as session, pytest.raises(ValidationFailed):
        book.reserve(session, account_id, 0, idempotency_key="z", ttl_seconds=1, now=NOW)


def test_verify_reports_a_hand_edited_balance(database):
    account_id = new_account(database, credits=1_000)
    with database.unit_of_work() as session:
        session.get(Account, account_id).balance = 1_500
    with database.unit_of_work() as session:
        drifts = verify(session, account_id)
    assert any("balance 1500 != sum of entries 1000" in drift for drift in drifts)


def test_verify_reports_holds_and_messages_naming_no_account_and_a_message_holding_another_accounts_hold(database):
    # Given two accounts, a hold of each, and rows no foreign key guards (migration 0025) written wrong by hand
    ours, theirs = new_account(database, credits=1_000), new_account(database, credits=1_000)
    our_hold, their_hold = reserve(database, ours, 100, "ours"), reserve(database, theirs, 100, "theirs")
    with database.unit_of_work() as session:
        session.add(Hold(account_id="acct_gone", amount=1, status="voided", idempotency_key="orphan", created_at=NOW,
                         expires_at=NOW))
        for message_id, account_id, hold_id in [("msg_orphan", "acct_gone", None), ("msg_own", ours, our_hold.id),
                                                ("msg_borrowed", ours, their_hold.id), ("msg_lost", ours, 10**9)]:
            session.add(Message(id=message_id, account_id=account_id, to="+14155550100", from_="+14155550199",
                                body="hi", status="sending", hold_id=hold_id, created_at=NOW, updated_at=NOW))
    # When the ledger is verified
    with database.unit_of_work() as session:
        drifts = verify(session)
        ours_only, theirs_only = verify(session, ours), verify(session, theirs)
    # Then each wrong row is one line, and the message holding its own account's hold is not among them
    orphan_hold = next(line for line in drifts if "names an account" in line and "hold" in line)
    assert orphan_hold.startswith("account acct_gone: hold ")
    assert "account acct_gone: message msg_orphan names an account that does not exist" in drifts
    borrowed = f"account {ours}: message msg_borrowed's hold {their_hold.id} is account {theirs}'s"
    assert borrowed in ours_only and borrowed in theirs_only  # the account whose hold it names pays for it
    assert f"account {ours}: message msg_lost's hold {10**9} does not exist" in ours_only
    assert not [line for line in drifts if "msg_own" in line]
    assert not [line for line in ours_only if "acct_gone" in line]


def test_verify_reports_entries_naming_no_account_and_an_entry_naming_another_accounts_or_no_hold(database):
    # Given two accounts, a hold of each, and entries no foreign key guards (migration 0032) written wrong by hand:
    # adjustments of nothing, so that no balance drifts
    ours, theirs = new_account(database, credits=1_000), new_account(database, credits=1_000)
    our_hold, their_hold = reserve(database, ours, 100, "ours"), reserve(database, theirs, 100, "theirs")
    with database.unit_of_work() as session:
        for key, account_id, hold_id, balance in [("orphan", "acct_gone", None, 0),
                                                  ("own", ours, our_hold.id, 1_000),
                                                  ("borrowed", ours, their_hold.id, 1_000),
                                                  ("lost", ours, 10**9, 1_000)]:
            session.add(Entry(account_id=account_id, at=NOW, kind="adjustment", amount=0, balance_after=balance,
                              hold_id=hold_id, idempotency_key=key))
    # When the ledger is verified
    with database.unit_of_work() as session:
        drifts = verify(session)
        ours_only, theirs_only = verify(session, ours), verify(session, theirs)
        ids = {entry.idempotency_key: entry.id for entry in session.scalars(select(Entry))}
    # Then each wrong entry is one line, and the entry naming its own account's hold is not among them
    assert f"account acct_gone: entry {ids['orphan']} names an account that does not exist" in drifts
    borrowed = f"account {ours}: entry {ids['borrowed']}'s hold {their_hold.id} is account {theirs}'s"
    assert borrowed in ours_only and borrowed in theirs_only
    assert f"account {ours}: entry {ids['lost']}'s hold {10**9} does not exist" in ours_only
    assert not [line for line in drifts if f"entry {ids['own']}" in line]
    assert len(drifts) == 3
