"""The call sweeper's judgment of a call claimed without a sid (never while its create may still be under way), and of
an inbound call whose record Twilio no longer has or keeps in the deployment's account."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from shared.ledger import book
from shared.messaging.rates import default_rate_card
from shared.models import (
    Account,
    Call,
    WebhookEndpoint,
    WebhookEvent,
    WebhookSubscription,
)
from shared.twilio.errors import CredentialsRejected, PermanentTwilioError, TransientTwilioError
from shared.twilio.gateway import TwilioCall
from shared.voice import progress, sweeper
from shared.voice.placing import RING_ALLOWANCE_SECONDS
from shared.voice.twiml import VOICEMAIL_MAX_SECONDS

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
STALE = timedelta(seconds=3)  # the e2e suites' eager sweeper
PLACING = timedelta(seconds=30)  # twice a Twilio timeout of 15 s
SECOND = timedelta(seconds=1)


DEPLOYMENT_SID = "AC" + "d" * 32


class TwilioListingNothing:
    """Twilio whose call list is empty, counting how often it was asked."""

    account_sid = DEPLOYMENT_SID

    def __init__(self):
        self.asked = 0

    def find_calls(self, **_):
        self.asked += 1
        return []


def account_1(session) -> None:
    if session.get(Account, "acct_1") is None:
        session.add(Account(id="acct_1", name="Realty", balance=100_000))
        session.flush()


def claimed_call(database, call_id: str = "call_1", *, at: datetime = T0) -> str:
    """An outbound call of acct_1 claimed `at`, its hold taken, its create not answered yet (no sid)."""
    with database.unit_of_work() as session:
        account_1(session)
        hold = book.reserve(session, "acct_1", 10_000, idempotency_key=f"{call_id}:hold", ttl_seconds=900, now=at)
        session.add(Call(id=call_id, account_id="acct_1", direction="outbound", to="+14155550100",
                         from_="+14155550199", say="Hi", max_minutes=5, minutes_held=5, time_limit=300, rate=2000,
                         status="queued", credits_estimated=10_000, hold_id=hold.id, attempts=1, claimed_at=at,
                         created_at=at, updated_at=at))
    return call_id


def sweep(database, twilio, at: datetime):
    return sweeper.sweep_calls(database, gateway_for=lambda *_: twilio, rate_card=default_rate_card(), now=at,
                               stale_after=STALE, placing_takes=PLACING)


def test_a_call_whose_create_may_still_be_under_way_is_not_judged_never_placed(database):
    # given a call claimed without a sid yet, and a Twilio whose list does not show it (yet)
    call_id, twilio = claimed_call(database), TwilioListingNothing()

    # when the sweeper runs past its stale time, but within the time a create may take
    early = sweep(database, twilio, T0 + timedelta(seconds=20))

    # then it leaves the call alone: its hold stays for the create that may yet land
    assert (early.reconciled, twilio.asked) == ({}, 0)
    with database.unit_of_work() as session:
        assert session.get(Call, call_id).status == "queued"

    # and once a create can no longer be under way, Twilio is asked, and a call it never placed fails, uncharged
    late = sweep(database, twilio, T0 + timedelta(seconds=31))
    assert (late.reconciled, twilio.asked) == ({call_id: "failed"}, 1)
    with database.unit_of_work() as session:
        assert session.get(Call, call_id).credits_charged == 0


class TwilioFailing(TwilioListingNothing):
    """Twilio answering every question with a 500, counting how often it was asked."""

    def find_calls(self, **_):
        self.asked += 1
        raise TransientTwilioError("Twilio answered 500", status=500, code=20500)


def queued_calls(database) -> list[str]:
    with database.unit_of_work() as session:
        return sorted(session.scalars(select(Call.id).where(Call.status == "queued")))


def test_a_sweep_asks_twilio_nothing_more_once_twilio_asked_it_to_try_again_later(sqlite_database):
    # given two calls claimed without a sid long ago, and Twilio failing every question
    calls = [claimed_call(sqlite_database, "call_1"), claimed_call(sqlite_database, "call_2", at=T0 + SECOND)]
    failing = TwilioFailing()

    # when a sweep comes
    report = sweep(sqlite_database, failing, T0 + timedelta(hours=1))

    # then Twilio was asked once, and both calls wait for a later sweep
    assert (report.reconciled, failing.asked, queued_calls(sqlite_database)) == ({}, 1, calls)

    # and once Twilio answers again, the next sweep judges both
    listing = TwilioListingNothing()
    assert sweep(sqlite_database, listing, T0 + timedelta(hours=1)).reconciled == dict.fromkeys(calls, "failed")


def test_tenants_whose_own_twilio_fails_their_asks_stop_no_other_accounts_calls(sqlite_database):
    # given three accounts with Twilio credentials of their own, each failing every question (rate-limited, say), each
    # with two calls claimed without a sid, claimed first; and an account on the deployment's Twilio with a call
    # claimed after them
    own_sids = ["AC" + str(n) * 32 for n in (2, 3, 4)]
    with sqlite_database.unit_of_work() as session:
        for n, own_sid in enumerate(own_sids):
            session.add(Account(id=f"acct_{own_sid[2]}", name="Rate-limited", balance=100_000,
                                twilio_account_sid=own_sid, twilio_auth_token="token"))
            session.add_all(Call(id=f"call_{own_sid[2]}{k}", account_id=f"acct_{own_sid[2]}", direction="outbound",
                                 to="+14155550100", from_="+14155550198", say="Hi", max_minutes=5, minutes_held=0,
                                 time_limit=300, rate=2000, status="queued", credits_estimated=0, attempts=1,
                                 claimed_at=T0 - timedelta(minutes=10 - 2 * n - k), created_at=T0, updated_at=T0)
                            for k in range(2))
    call_id = claimed_call(sqlite_database)
    failing = {own_sid: TwilioFailing() for own_sid in own_sids}
    twilio = {**failing, None: TwilioListingNothing()}

    # when the sweeper runs an hour on, each account asking its own Twilio
    report = sweeper.sweep_calls(sqlite_database, gateway_for=lambda sid, _token: twilio[sid],
                                 rate_card=default_rate_card(), now=T0 + timedelta(hours=1), stale_after=STALE,
                                 placing_takes=PLACING)

    # then each failing Twilio was asked once and its account's calls wait, and the other account's call is judged
    assert (report.reconciled, [t.asked for t in failing.values()]) == ({call_id: "failed"}, [1, 1, 1])
    assert len(queued_calls(sqlite_database)) == 6


def placed_call(database, call_id: str, *, direction: str = "outbound", at: datetime, time_limit: int) -> str:
    """A call of acct_1 placed (outbound) or rung (inbound) `at`, with its sid, that may talk `time_limit` seconds."""
    with database.unit_of_work() as session:
        account_1(session)
        session.add(Call(id=call_id, account_id="acct_1", direction=direction, to="+14155550100",
                         from_="+14155550199", max_minutes=time_limit // 60, minutes_held=0, time_limit=time_limit,
                         rate=2000, status="in-progress", credits_estimated=0,
                         twilio_sid="CA" + call_id.encode().hex().ljust(32, "0"), attempts=1, claimed_at=at,
                         created_at=at, updated_at=at))
    return call_id


def test_calls_not_due_yet_however_many_keep_no_due_call_from_a_sweep(database, monkeypatch):
    # given a sweep batch's worth of outbound and of inbound calls talking since long ago, each allowed four hours;
    # and behind them, a call claimed without a sid and an inbound call allowed a minute, both long overdue
    monkeypatch.setattr(sweeper, "BATCH", 2)
    lost_create = claimed_call(database, "call_lost", at=T0)
    for n in range(2):
        placed_call(database, f"call_out{n}", at=T0 - timedelta(hours=1), time_limit=4 * 3600)
        placed_call(database, f"call_in{n}", direction="inbound", at=T0 - timedelta(hours=1), time_limit=4 * 3600)
    unreported = placed_call(database, "call_in9", direction="inbound", at=T0, time_limit=60)

    # when a sweep comes an hour on
    report = sweep(database, _ListingNothingKnowingNoSuchCall(), T0 + timedelta(hours=1))

    # then it reaches the two due calls (Twilio placed neither) and leaves the others talking
    assert report.reconciled == {unreported: "failed", lost_create: "failed"}


@pytest.mark.parametrize(("direction", "may_talk"), [
    ("outbound", timedelta(seconds=300 + RING_ALLOWANCE_SECONDS) + STALE),  # its time limit, its ringing, the sweep's
    ("inbound", timedelta(seconds=300 + RING_ALLOWANCE_SECONDS + VOICEMAIL_MAX_SECONDS) + STALE),  # and a voicemail
])
def test_a_talking_call_is_asked_about_once_its_time_limit_and_allowances_are_over_and_not_before(
        database, direction, may_talk):
    # given a call talking since T0, allowed five minutes
    call_id = placed_call(database, "call_talking", direction=direction, at=T0, time_limit=300)
    twilio = _ListingNothingKnowingNoSuchCall()

    # when sweeps come a second before all it may take is over, and a second after
    early, late = (sweep(database, twilio, T0 + may_talk + offset) for offset in (-SECOND, SECOND))

    # then only the second asks Twilio about it
    assert (early.reconciled, list(late.reconciled)) == ({}, [call_id])


def calls_of_revoked_accounts(database) -> tuple[str, list[str]]:
    """Two accounts whose Twilio credentials are revoked, with three calls claimed without a sid each, claimed
    first, and another account's call claimed after them: that call's id, and the revoked Twilio account sids."""
    revoked_sids = ["AC" + str(n) * 32 for n in (2, 3)]
    with database.unit_of_work() as session:
        for n, revoked_sid in enumerate(revoked_sids):
            session.add(Account(id=f"acct_{revoked_sid[2]}", name="Revoked", balance=100_000,
                                twilio_account_sid=revoked_sid, twilio_auth_token="token"))
            session.flush()
            session.add_all(Call(id=f"call_{revoked_sid[2]}{k}", account_id=f"acct_{revoked_sid[2]}",
                                 direction="outbound", to="+14155550100", from_="+14155550198", say="Hi",
                                 max_minutes=5, minutes_held=0, time_limit=300, rate=2000, status="queued",
                                 credits_estimated=0, attempts=1, claimed_at=T0 - timedelta(minutes=10 - 3 * n - k),
                                 created_at=T0, updated_at=T0)
                            for k in range(3))
    return claimed_call(database), revoked_sids


def sweep_asking_each_its_own(database, twilio: dict) -> sweeper.CallSweep:
    """A sweep an hour on, each account asking its own Twilio (`twilio` by account sid, None: the deployment's)."""
    return sweeper.sweep_calls(database, gateway_for=lambda sid, _token: twilio[sid], rate_card=default_rate_card(),
                               now=T0 + timedelta(hours=1), stale_after=STALE, placing_takes=PLACING)


def test_accounts_whose_asks_are_refused_fill_no_sweep_batch_with_their_calls(database, monkeypatch):
    # given two accounts whose Twilio credentials are revoked, with a sweep batch's worth of calls claimed without a
    # sid each, claimed first; and another account's call claimed after them
    monkeypatch.setattr(sweeper, "BATCH", 3)
    call_id, revoked_sids = calls_of_revoked_accounts(database)

    # when the sweeper runs an hour on, each account asking its own Twilio
    report = sweep_asking_each_its_own(database, {**{sid: TwilioRefusingTheCredentials() for sid in revoked_sids},
                                                  None: TwilioListingNothing()})

    # then it took each account's oldest call in turn: one of each revoked account's (refused, left for later), then
    # the other account's, which Twilio never placed
    assert report.reconciled == {call_id: "failed"}
    assert len(queued_calls(database)) == 6


def test_a_sweep_asks_no_more_with_credentials_twilio_refused(database):
    # given two revoked accounts' three calls each, claimed without a sid, and another account's call after them
    call_id, revoked_sids = calls_of_revoked_accounts(database)
    refusing = {sid: TwilioRefusingTheCredentials() for sid in revoked_sids}

    # when the sweeper runs
    report = sweep_asking_each_its_own(database, {**refusing, None: TwilioListingNothing()})

    # then Twilio was asked once with each revoked account's credentials, and the other account's call was judged
    assert ([twilio.asked for twilio in refusing.values()], report.reconciled) == ([1, 1], {call_id: "failed"})


class TwilioKnowingNoSuchCall:
    """Twilio asked about a sid it never had: 20404, as for a ring forged by an account with its own credentials."""

    account_sid = DEPLOYMENT_SID

    def fetch_call(self, sid):
        raise PermanentTwilioError(20404, f"The requested resource /Calls/{sid}.json was not found", status=404)

    def legs_of(self, sid):
        return []


class TwilioRefusingTheCredentials:
    """Credentials an account revoked: every question is refused, and counted."""

    def __init__(self):
        self.asked = 0

    def find_calls(self, **_):
        self.asked += 1
        raise CredentialsRejected("AC" + "2" * 32, "20003: Authenticate")

    fetch_call = find_calls


def test_a_call_twilio_will_not_answer_for_stops_neither_the_sweep_nor_the_other_accounts_calls(sqlite_database):
    # given an account whose Twilio credentials are revoked, with a call claimed without a sid, claimed first
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_2", name="Revoked", balance=100_000, twilio_account_sid="AC" + "2" * 32,
                            twilio_auth_token="token"))
        session.add(Call(id="call_2", account_id="acct_2", direction="outbound", to="+14155550100",
                         from_="+14155550198", say="Hi", max_minutes=5, minutes_held=0, time_limit=300, rate=2000,
                         status="queued", credits_estimated=0, attempts=1, claimed_at=T0 - timedelta(minutes=1),
                         created_at=T0, updated_at=T0))
    # and another account's call claimed after it, and an inbound call rung with a sid Twilio never had
    call_id = claimed_call(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        session.add(Call(id="call_in", account_id="acct_1", direction="inbound", to="+14155550199",
                         from_="+14155550100", max_minutes=0, minutes_held=0, time_limit=0, rate=3000,
                         status="in-progress", credits_estimated=0, twilio_sid="CA" + "f" * 32, attempts=0,
                         created_at=T0, updated_at=T0))
    twilio = {"AC" + "2" * 32: TwilioRefusingTheCredentials(), None: _ListingNothingKnowingNoSuchCall()}

    # when the sweeper runs an hour on, each account asking its own Twilio
    report = sweeper.sweep_calls(sqlite_database, gateway_for=lambda sid, _token: twilio[sid],
                                 rate_card=default_rate_card(), now=T0 + timedelta(hours=1), stale_after=STALE,
                                 placing_takes=PLACING)

    # then the refused call is left for a later sweep, the other account's call is judged behind it, and the
    # inbound call Twilio never had ends, charged nothing
    assert report.reconciled == {"call_in": "failed", call_id: "failed"}
    with sqlite_database.unit_of_work() as session:
        assert session.get(Call, "call_2").status == "queued"
        inbound = session.get(Call, "call_in")
        assert (inbound.status, inbound.minutes_billed) == ("failed", 0)


class _ListingNothingKnowingNoSuchCall(TwilioListingNothing, TwilioKnowingNoSuchCall):
    """acct_1's Twilio: no call in its list, and no such inbound call."""


OWN_SID = "AC" + "3" * 32


class TwilioWithTheCall:
    """Twilio that has the inbound call, completed, and its forwarded leg, which talked 125 s."""

    account_sid = DEPLOYMENT_SID

    def fetch_call(self, sid):
        return TwilioCall(sid, DEPLOYMENT_SID, "completed", 130, None)

    def legs_of(self, sid):
        return [TwilioCall("CA" + "1" * 32, DEPLOYMENT_SID, "completed", 125, None)]


def forwarded_inbound_call(database, *, rung_with: str) -> str:
    """A forwarded inbound call rung at T0 on an account that has its own Twilio account, with the token of
    `rung_with`, that may talk 10 minutes at 3 credits a minute; its <Dial> action never came."""
    with database.unit_of_work() as session:
        session.add(Account(id="acct_own", name="Own Twilio", balance=100_000, twilio_account_sid=OWN_SID,
                            twilio_auth_token="token"))
        session.add(Call(id="call_fwd", account_id="acct_own", direction="inbound", to="+14155550199",
                         from_="+14155550100", connect_to="+14155550123", max_minutes=10, minutes_held=10,
                         time_limit=600, rate=3000, status="in-progress", credits_estimated=30_000,
                         twilio_sid="CA" + "e" * 32, twilio_account_sid=rung_with, attempts=0, created_at=T0,
                         updated_at=T0))
    return "call_fwd"


def charged(database, call_id: str) -> tuple:
    with database.unit_of_work() as session:
        call = session.get(Call, call_id)
        return call.status, call.minutes_billed, call.credits_charged, session.get(Account, call.account_id).balance


def test_an_inbound_call_whose_record_its_account_deleted_from_its_own_twilio_is_charged_its_whole_time_limit(
        sqlite_database):
    # given a forwarded call rung on the account's own Twilio account, whose record the account then deleted there
    call_id = forwarded_inbound_call(sqlite_database, rung_with=OWN_SID)
    asked = []

    def gateway_for(sid, _token):
        asked.append(sid)
        return TwilioKnowingNoSuchCall()

    # when the sweeper reconciles it, twice
    for _ in range(2):
        sweeper.sweep_calls(sqlite_database, gateway_for=gateway_for, rate_card=default_rate_card(),
                            now=T0 + timedelta(hours=1), stale_after=STALE, placing_takes=PLACING)

    # then it was asked of the account's own Twilio, and is charged as talked to its time limit, once
    assert asked[0] == OWN_SID
    assert charged(sqlite_database, call_id) == ("completed", 10, 30_000, 70_000)


def test_an_inbound_call_rung_with_the_deployments_token_is_asked_of_the_deployments_twilio(sqlite_database):
    # given a forwarded call rung on the deployment's Twilio account, before the account brought its own, on an
    # account with an endpoint that takes call.completed
    call_id = forwarded_inbound_call(sqlite_database, rung_with=DEPLOYMENT_SID)
    with sqlite_database.unit_of_work() as session:
        session.add(WebhookEndpoint(id="we_1", account_id="acct_own", url="https://example.com/hook", secret="s",
                                    created_at=T0, updated_at=T0))
        session.flush()
        session.add(WebhookSubscription(endpoint_id="we_1", account_id="acct_own", event_type="call.completed"))
    twilio = {None: TwilioWithTheCall(), OWN_SID: TwilioKnowingNoSuchCall()}

    # when the sweeper reconciles it, twice
    reports = [sweeper.sweep_calls(sqlite_database, gateway_for=lambda sid, _token: twilio[sid],
                                   rate_card=default_rate_card(), now=T0 + timedelta(hours=1), stale_after=STALE,
                                   placing_takes=PLACING) for _ in range(2)]

    # then the deployment's Twilio, which has it, told what its leg talked: 3 started minutes charged, and the
    # call's end announced once, as its final report would have
    assert [report.reconciled for report in reports] == [{call_id: "completed"}, {}]
    assert charged(sqlite_database, call_id) == ("completed", 3, 9_000, 91_000)
    with sqlite_database.unit_of_work() as session:
        [event] = session.scalars(select(WebhookEvent).where(WebhookEvent.type == "call.completed"))
        assert (event.data["id"], event.data["status"]) == (call_id, "completed")


def test_a_confirmation_of_an_inbound_call_whose_record_its_account_deleted_charges_its_whole_time_limit(
        sqlite_database):
    # given a forwarded call on the account's own Twilio account, its final report signed with the account's token
    # (so asked of Twilio), and its record deleted there
    call_id = forwarded_inbound_call(sqlite_database, rung_with=OWN_SID)

    # when the confirmation asks Twilio, twice
    for _ in range(2):
        status = progress.confirm_call(sqlite_database, call_id, gateway_for=lambda *_: TwilioKnowingNoSuchCall(),
                                       rate_card=default_rate_card(), now=T0 + timedelta(minutes=11))

    # then the call is completed and charged as talked to its time limit, once
    assert status == "completed"
    assert charged(sqlite_database, call_id) == ("completed", 10, 30_000, 70_000)


class TwilioWithoutTheLegs(TwilioWithTheCall):
    """Twilio that has the inbound call, completed after 130 s, but no longer its forwarded leg."""

    def legs_of(self, sid):
        return []


def test_an_inbound_call_whose_leg_its_account_deleted_is_charged_for_as_long_as_the_call_lasted(sqlite_database):
    # given a forwarded call on the account's own Twilio account, which lasted 130 s, and whose forwarded leg's
    # record the account deleted there
    call_id = forwarded_inbound_call(sqlite_database, rung_with=OWN_SID)

    # when the sweeper reconciles it
    sweeper.sweep_calls(sqlite_database, gateway_for=lambda *_: TwilioWithoutTheLegs(),
                        rate_card=default_rate_card(), now=T0 + timedelta(hours=1), stale_after=STALE,
                        placing_takes=PLACING)

    # then the leg is charged as talked for the call's 130 s: 3 started minutes
    assert charged(sqlite_database, call_id) == ("completed", 3, 9_000, 91_000)


def test_an_inbound_call_on_a_twilio_account_its_account_no_longer_names_is_charged_its_whole_time_limit(
        sqlite_database):
    # given a forwarded call rung on the account's own Twilio account, which the account then replaced with no
    # credentials of its own, so its record is asked of the deployment's Twilio, which never had it
    call_id = forwarded_inbound_call(sqlite_database, rung_with=OWN_SID)
    with sqlite_database.unit_of_work() as session:
        account = session.get(Account, "acct_own")
        account.twilio_account_sid = account.twilio_auth_token = None

    # when the sweeper reconciles it
    sweeper.sweep_calls(sqlite_database, gateway_for=lambda *_: _ListingNothingKnowingNoSuchCall(),
                        rate_card=default_rate_card(), now=T0 + timedelta(hours=1), stale_after=STALE,
                        placing_takes=PLACING)

    # then it is charged as talked to its time limit: changing credentials never makes a call free
    assert charged(sqlite_database, call_id) == ("completed", 10, 30_000, 70_000)
