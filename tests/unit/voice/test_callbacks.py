"""Call callbacks answer to the Twilio account the call was placed with (or its number's account), settle once in
any order, and an inbound call's parts are each charged once, whichever comes first."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from shared.errors import CallbackRejected, NotFinalYet, ValidationFailed
from shared.ledger import book
from shared.messaging.rates import default_rate_card
from shared.models import Account, Call, Entry, PhoneNumber
from shared.twilio.errors import PermanentTwilioError
from shared.twilio.gateway import TwilioCall
from shared.twilio.signatures import Credentials, SignedForm
from shared.voice import inbound
from shared.voice import sweeper as voice_sweeper
from shared.voice.progress import (
    CallReport,
    CallToConfirm,
    confirm_call,
    record_callback,
)
from twilio_sim.signature import twilio_signature

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://creditq.example/webhooks/twilio/call-status?call=call_own"
DEPLOYMENT = Credentials("AC" + "d" * 32, "deployment-token")
OWN = Credentials("AC" + "1" * 32, "own-token")  # acct_own's subaccount
ROGUE = Credentials("AC" + "9" * 32, "rogue-token")  # what another tenant stored as its own
SID, SID_PLAIN = "CA" + "a" * 32, "CA" + "c" * 32
NUMBER, CALLER = "+14155550111", "+14155550100"


@pytest.fixture
def db(database):
    """acct_own places calls with its subaccount and holds 10 credits, as does acct_plain with the deployment's
    credentials; acct_rogue stored credentials of its own. Each of the first two has a call queued at Twilio."""
    with database.unit_of_work() as session:
        session.add_all([
            Account(id="acct_own", name="Own", twilio_account_sid=OWN.account_sid, twilio_auth_token=OWN.auth_token),
            Account(id="acct_plain", name="Plain"),
            Account(id="acct_rogue", name="Rogue", twilio_account_sid=ROGUE.account_sid,
                    twilio_auth_token=ROGUE.auth_token)])
        session.flush()
        session.add(PhoneNumber(account_id="acct_own", phone=NUMBER, type="long_code", forward_to="+14155550199",
                                voicemail=True, transcribe=True))
        for account_id, call_id, sid, placed_with in (("acct_own", "call_own", SID, OWN),
                                                       ("acct_plain", "call_plain", SID_PLAIN, DEPLOYMENT)):
            book.grant(session, account_id, 10_000, "purchase", granted_at=T0, idempotency_key=f"grant:{account_id}")
            hold = book.reserve(session, account_id, 10_000, reference=call_id,
                                idempotency_key=f"call:{call_id}:hold:0", ttl_seconds=900, now=T0)
            session.add(Call(id=call_id, account_id=account_id, direction="outbound", to=CALLER, from_=NUMBER,
                             say="Hi", machine_detection=False, max_minutes=5, minutes_held=5, time_limit=300, legs=1,
                             rate=2000, status="queued", credits_estimated=10_000, hold_id=hold.id, twilio_sid=sid,
                             twilio_account_sid=placed_with.account_sid, attempts=1, created_at=T0, updated_at=T0))
    return database


def signed(params: dict, signer: Credentials, *, url: str = URL, naming: str | None = None) -> SignedForm:
    params = {**params, "AccountSid": naming or signer.account_sid}
    return SignedForm(url, params, twilio_signature(signer.auth_token, url, params))


def report(status: str, duration: int | None, signer: Credentials, sid: str) -> tuple[CallReport, SignedForm]:
    params = {"CallSid": sid, "CallStatus": status, **({"CallDuration": str(duration)} if duration is not None else {})}
    form = signed(params, signer)
    return CallReport(sid, form.account_sid, status, duration), form


def apply(db, call_id: str | None, status: str, duration: int | None = None, signer: Credentials = OWN, *,
          sid: str = SID):
    the_report, form = report(status, duration, signer, sid)
    with db.unit_of_work() as session:
        return record_callback(session, call_id, the_report, form, deployment=DEPLOYMENT,
                               rate_card=default_rate_card(), now=T0)


def apply_plain(db, call_id: str | None, status: str, duration: int | None = None):
    """A report of call_plain, signed with the deployment's token."""
    return apply(db, call_id, status, duration, DEPLOYMENT, sid=SID_PLAIN)


def money(db, account_id: str) -> tuple[int, int, int]:
    with db.unit_of_work() as session:
        account = session.get(Account, account_id)
        charges = session.scalar(select(func.count()).select_from(Entry).where(Entry.kind == "usage",
                                                                                Entry.account_id == account_id))
        return account.balance, account.held, charges


@pytest.mark.parametrize("signer", [DEPLOYMENT, ROGUE])
def test_a_call_callback_signed_by_another_twilio_account_is_refused(db, signer):
    # given a call placed with acct_own's subaccount
    # when its report comes signed by the deployment's or another tenant's credentials
    with pytest.raises(CallbackRejected):
        apply(db, "call_own", "completed", 61, signer)

    # then nothing changed: the hold is still pending, nothing charged
    assert money(db, "acct_own") == (10_000, 10_000, 0)


def test_completed_before_ringing_and_repeated_settles_once(db):
    # given the final report first, then a late ringing, then the final one again (found by its sid)
    statuses = [apply_plain(db, "call_plain", "completed", 61), apply_plain(db, "call_plain", "ringing"),
                apply_plain(db, None, "completed", 61)]

    # then the call stays completed and is charged 2 minutes once; the rest of the hold is released
    assert statuses == ["completed", "completed", "completed"]
    assert money(db, "acct_plain") == (6_000, 0, 1)
    with db.unit_of_work() as session:
        call = session.get(Call, "call_plain")
        assert (call.duration_seconds, call.minutes_billed, call.credits_charged) == (61, 2, 4000)


def test_a_busy_call_releases_its_whole_hold(db):
    apply_plain(db, "call_plain", "busy", 0)

    assert money(db, "acct_plain") == (10_000, 0, 0)


@pytest.mark.parametrize(("status", "duration"), [("completed", 0), ("completed", 1), ("busy", None),
                                                  ("failed", None), ("no-answer", None), ("canceled", None)])
def test_a_final_report_signed_with_the_accounts_own_token_changes_nothing_until_twilio_confirms_it(db, status,
                                                                                                   duration):
    # given acct_own's call, and a final report of it signed with its subaccount's token (which acct_own holds)
    # when it arrives
    outcome = apply(db, "call_own", status, duration)

    # then Twilio is to be asked; the call is as it was, its hold pending, nothing charged or released
    assert outcome == CallToConfirm("call_own")
    assert money(db, "acct_own") == (10_000, 10_000, 0)
    with db.unit_of_work() as session:
        call = session.get(Call, "call_own")
        assert (call.status, call.duration_seconds, call.credits_charged) == ("queued", None, None)


def test_a_report_on_the_way_signed_with_the_accounts_own_token_moves_the_status_but_not_the_duration(db):
    assert apply(db, "call_own", "in-progress", 1) == "in-progress"

    with db.unit_of_work() as session:
        assert session.get(Call, "call_own").duration_seconds is None


def test_a_report_about_a_call_creditq_does_not_know_changes_nothing(db):
    assert apply(db, "call_unknown", "completed", 61) is None
    assert money(db, "acct_own") == (10_000, 10_000, 0)


def ring(db, signer: Credentials = OWN) -> str:
    form = signed({"CallSid": "CA" + "b" * 32, "From": CALLER, "To": NUMBER}, signer,
                  url="https://creditq.example/webhooks/twilio/voice")
    with db.unit_of_work() as session:
        return inbound.answer(session, inbound.Ringing("CA" + "b" * 32, CALLER, NUMBER), form, deployment=DEPLOYMENT,
                              rate_card=default_rate_card(), base_url="https://creditq.example", now=T0)


def test_an_inbound_call_is_forwarded_for_what_the_account_can_pay_plus_the_grace(db):
    # given acct_own has 10 credits, all held for a call: nothing available
    # when someone calls its number
    twiml = ring(db)

    # then the call is forwarded for the 5 grace minutes, with a dial action naming the call
    assert 'timeLimit="300"' in twiml and "+14155550199</Dial>" in twiml and "step=dialed" in twiml


@pytest.mark.parametrize("target", [NUMBER, "+14155550122"])
def test_a_number_cannot_forward_to_a_number_of_its_own_account_but_may_once_that_one_is_released(db, target):
    # given acct_own holds a second number besides NUMBER
    with db.unit_of_work() as session:
        session.add(PhoneNumber(account_id="acct_own", phone="+14155550122", type="long_code"))

    # when NUMBER is set to forward to itself, or to that other number
    with pytest.raises(ValidationFailed) as refused, db.unit_of_work() as session:
        inbound.set_number_voice(session, "acct_own", NUMBER, forward_to=target)

    # then it is refused naming forward_to (its calls would ring creditq again, and loop), and nothing changed
    assert "forward_to" in refused.value.errors
    with db.unit_of_work() as session:
        assert session.scalar(select(PhoneNumber.forward_to).where(PhoneNumber.phone == NUMBER)) == "+14155550199"
        session.scalars(select(PhoneNumber).where(PhoneNumber.phone == target)).first().released_at = T0
    with db.unit_of_work() as session:
        assert inbound.set_number_voice(session, "acct_own", NUMBER, forward_to=target).forward_to == target


def test_a_call_is_not_forwarded_to_a_number_the_account_took_back_after_it_was_set(db):
    # given NUMBER forwards to +14155550199, which the account then adds as a number of its own
    with db.unit_of_work() as session:
        session.add(PhoneNumber(account_id="acct_own", phone="+14155550199", type="long_code"))

    # when someone calls NUMBER
    twiml = ring(db)

    # then the call is not forwarded back into creditq: it goes to voicemail, with no forwarding minutes
    assert "<Dial" not in twiml and "<Record" in twiml
    with db.unit_of_work() as session:
        call = session.scalars(select(Call).where(Call.direction == "inbound")).one()
    assert (call.connect_to, call.minutes_held) == (None, 0)


def test_an_inbound_call_signed_by_another_account_is_refused(db):
    with pytest.raises(CallbackRejected):
        ring(db, ROGUE)


def test_a_transcription_before_its_recording_and_each_twice_is_charged_once_each(db):
    # given a forwarded call nobody answered
    ring(db)
    with db.unit_of_work() as session:
        call_id = session.scalars(select(Call.id).where(Call.direction == "inbound")).one()
    url = f"https://creditq.example/webhooks/twilio/recording?call={call_id}"
    base = {"CallSid": "CA" + "b" * 32, "RecordingSid": "RE" + "c" * 32, "RecordingUrl": "https://r.example/RE"}
    transcription = signed({**base, "TranscriptionSid": "TR" + "d" * 32, "TranscriptionText": "Call me"}, OWN,
                           url=url)
    recording = signed(base, OWN, url=url)

    # when the transcription comes first, then the recording, then both again
    for form in (transcription, recording, transcription, recording):
        with db.unit_of_work() as session:
            inbound.recorded(session, call_id, form, deployment=DEPLOYMENT, rate_card=default_rate_card(), now=T0)

    # then the voicemail (1) and the transcription (4) are charged once each
    with db.unit_of_work() as session:
        call = session.get(Call, call_id)
        assert (call.credits_charged, call.transcription, call.recording_url) == (5000, "Call me", "https://r.example/RE")
        assert session.get(Account, "acct_own").balance == 5_000


class TwilioWithTheEndedCall:
    """Twilio with a forwarded call that ended after 200 s, its leg after 130 s."""

    account_sid = DEPLOYMENT.account_sid

    def fetch_call(self, sid):
        return TwilioCall(sid, OWN.account_sid, "completed", 200, None)

    def legs_of(self, sid):
        return [TwilioCall("CA" + "e" * 32, OWN.account_sid, "completed", 130, None)]


def test_a_forwarded_leg_reconciled_from_twilio_then_reported_late_is_charged_once(db):
    # given a forwarded call whose <Dial> action never came
    ring(db)
    with db.unit_of_work() as session:
        call_id = session.scalars(select(Call.id).where(Call.direction == "inbound")).one()

    # when the sweeper reconciles it from Twilio, and then the action arrives after all
    status = voice_sweeper.reconcile_inbound(db, call_id, gateway_for=lambda *_: TwilioWithTheEndedCall(),
                                             rate_card=default_rate_card(), now=T0)
    action = signed({"CallSid": "CA" + "b" * 32, "DialCallStatus": "completed", "DialCallDuration": "130"}, OWN,
                    url=f"https://creditq.example/webhooks/twilio/voice?call={call_id}&step=dialed")
    with db.unit_of_work() as session:
        inbound.dialed(session, call_id, action, deployment=DEPLOYMENT, base_url="https://creditq.example", now=T0)

    # then the leg's 3 started minutes were charged once, at the forwarding rate
    assert status == "completed"
    with db.unit_of_work() as session:
        call = session.get(Call, call_id)
        assert (call.minutes_billed, call.credits_charged) == (3, 9000)
        assert session.get(Account, "acct_own").balance == 1_000


def test_a_dial_action_signed_with_the_accounts_own_token_charges_nothing_on_its_word(db):
    # given a forwarded call to acct_own's number, which its subaccount answers
    ring(db)
    with db.unit_of_work() as session:
        call_id = session.scalars(select(Call.id).where(Call.direction == "inbound")).one()

    # when the <Dial> action says the leg talked 1 second, signed with the subaccount's token (acct_own's too)
    action = signed({"CallSid": "CA" + "b" * 32, "DialCallStatus": "completed", "DialCallDuration": "1"}, OWN,
                    url=f"https://creditq.example/webhooks/twilio/voice?call={call_id}&step=dialed")
    with db.unit_of_work() as session:
        inbound.dialed(session, call_id, action, deployment=DEPLOYMENT, base_url="https://creditq.example", now=T0)

    # then nothing is charged yet: the legs are charged as Twilio's record has them (130 s: 3 minutes)
    with db.unit_of_work() as session:
        assert session.get(Call, call_id).minutes_billed is None
        inbound.charge_forwarded(session, call_id, [TwilioCall("CA" + "e" * 32, OWN.account_sid, "completed", 130,
                                                               None)], T0)
    with db.unit_of_work() as session:
        call = session.get(Call, call_id)
        assert (call.minutes_billed, call.credits_charged) == (3, 9000)


def test_a_report_signed_with_the_accounts_own_token_cannot_give_a_call_its_sid(db):
    # given acct_own's call, its create not answered yet (no sid stored)
    with db.unit_of_work() as session:
        session.get(Call, "call_own").twilio_sid = None

    # when a "ringing" signed with the subaccount's token names a sid of the account's choosing
    assert apply(db, "call_own", "ringing", sid="CA" + "f" * 32) == "queued"

    # then the call still waits for the sid Twilio's answer to the create brings
    with db.unit_of_work() as session:
        assert session.get(Call, "call_own").twilio_sid is None


@pytest.mark.parametrize("signer", [OWN, DEPLOYMENT], ids=["the-accounts-own", "the-deployments"])
def test_a_status_twilio_never_reports_moves_no_call(db, signer):
    # given a call of each account, and a report of "skipped" (creditq's own status for a call it never placed)
    call_id, sid = ("call_own", SID) if signer is OWN else ("call_plain", SID_PLAIN)

    # when it comes signed with the token the call answers to
    status = apply(db, call_id, "skipped", signer=signer, sid=sid)

    # then the call is as it was, its hold pending: Twilio's own final report still settles it
    assert status == "queued"
    account_id = "acct_own" if signer is OWN else "acct_plain"
    assert money(db, account_id) == (10_000, 10_000, 0)


class TwilioWithout:
    """Twilio asked about a call whose record is gone (deleted by the account that owns it): 20404."""

    account_sid = DEPLOYMENT.account_sid

    def fetch_call(self, sid):
        raise PermanentTwilioError(20404, f"The requested resource /Calls/{sid}.json was not found", status=404)


class TwilioForwarding:
    """Twilio with an inbound call still talking (gone to voicemail) whose forwarded leg ended after 130 s."""

    account_sid = DEPLOYMENT.account_sid

    def fetch_call(self, sid):
        return TwilioCall(sid, OWN.account_sid, "in-progress", None, None)

    def legs_of(self, sid):
        return [TwilioCall("CA" + "e" * 32, OWN.account_sid, "completed", 130, None)]


def test_a_placed_call_whose_record_twilio_no_longer_has_is_charged_its_time_limit_not_freed(db):
    # given acct_own's call, placed (its sid from Twilio's answer), whose record the account deleted at Twilio
    # when its final status is confirmed with Twilio
    status = confirm_call(db, "call_own", gateway_for=lambda *_: TwilioWithout(), rate_card=default_rate_card(),
                          now=T0)

    # then it is completed and charged what its hold covers: its 300 s time limit, 5 minutes at 2 credits
    assert status == "completed"
    assert money(db, "acct_own") == (0, 0, 1)


def test_a_forwarded_leg_is_charged_as_twilio_records_it_as_soon_as_it_ends(db):
    # given a forwarded call to acct_own's number, its leg ended, the call gone on to voicemail
    ring(db)
    with db.unit_of_work() as session:
        call_id = session.scalars(select(Call.id).where(Call.direction == "inbound")).one()

    # when the confirmation its dial action enqueued asks Twilio
    with pytest.raises(NotFinalYet):
        confirm_call(db, call_id, gateway_for=lambda *_: TwilioForwarding(), rate_card=default_rate_card(), now=T0)

    # then the leg's 3 started minutes are charged already, the call's end still to come
    with db.unit_of_work() as session:
        call = session.get(Call, call_id)
        assert (call.status, call.minutes_billed, call.credits_charged) == ("in-progress", 3, 9000)
