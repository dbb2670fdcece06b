"""Which token may sign a callback: the credentials of the resource it is about, and no other.

A status answers to the Twilio account its message was sent with; an inbound text to the account of
the number it was sent to; a report that beat its sid is kept with the account whose token verified it
and applied only if its message turns out to have been sent with that account.
"""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from shared.errors import CallbackRejected
from shared.messaging.inbound import Inbound, receive_inbound
from shared.messaging.statuses import ToConfirm, apply_early_statuses, record_callback
from shared.models import Account, DunningIntegration, EarlyStatus, Message, OptOut, PhoneNumber
from shared.twilio.signatures import Credentials, SignedForm
from twilio_sim.signature import twilio_signature

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://creditq.example/webhooks/twilio/status"
DEPLOYMENT = Credentials("AC" + "d" * 32, "deployment-token")
OWN = Credentials("AC" + "1" * 32, "own-token")  # acct_own's subaccount
ROGUE = Credentials("AC" + "9" * 32, "rogue-token")  # what another tenant stored as its own
SITE = Credentials("AC" + "5" * 32, "site-token")  # a dunning site's
PLAIN_NUMBER, OWN_NUMBER, CONTACT = "+14155550122", "+14155550111", "+14155550100"
SID_PLAIN, SID_OWN, SID_EARLY = "SM" + "a" * 32, "SM" + "b" * 32, "SM" + "c" * 32


@pytest.fixture
def db(database):
    """acct_plain sends with the deployment's credentials, acct_own with its subaccount's; acct_rogue stored its
    own; each has a number and one message handed to Twilio."""
    with database.unit_of_work() as session:
        session.add_all([
            Account(id="acct_plain", name="Plain"),
            Account(id="acct_own", name="Own", twilio_account_sid=OWN.account_sid, twilio_auth_token=OWN.auth_token),
            Account(id="acct_rogue", name="Rogue", twilio_account_sid=ROGUE.account_sid,
                    twilio_auth_token=ROGUE.auth_token),
            DunningIntegration(id="site_builtin_default", site="default", account_sid=SITE.account_sid,
                               auth_token=SITE.auth_token, from_number="+15005550006", updated_at=T0),
        ])
        session.flush()
        session.add_all([
            PhoneNumber(account_id="acct_plain", phone=PLAIN_NUMBER, type="long_code"),
            PhoneNumber(account_id="acct_own", phone=OWN_NUMBER, type="long_code"),
            Message(id="msg_plain", account_id="acct_plain", to=CONTACT, from_=PLAIN_NUMBER, body="hi", status="sent",
                    twilio_sid=SID_PLAIN, twilio_account_sid=DEPLOYMENT.account_sid, twilio_status="queued",
                    created_at=T0, updated_at=T0),
            Message(id="msg_own", account_id="acct_own", to=CONTACT, from_=OWN_NUMBER, body="hi", status="sent",
                    twilio_sid=SID_OWN, twilio_account_sid=OWN.account_sid, twilio_status="queued",
                    created_at=T0, updated_at=T0),
        ])
    return database


def signed(params: dict, signer: Credentials, *, naming: str | None = None) -> SignedForm:
    """A form naming `naming` (the signer's account by default), signed with the signer's token."""
    params = {**params, "AccountSid": naming or signer.account_sid}
    return SignedForm(URL, params, twilio_signature(signer.auth_token, URL, params))


def status_form(sid: str, status: str, signer: Credentials, *, naming: str | None = None, **extra) -> SignedForm:
    return signed({"MessageSid": sid, "MessageStatus": status, **extra}, signer, naming=naming)


def callback(db, form: SignedForm, **report):
    fields = {"sid": form.params["MessageSid"], "status": form.params["MessageStatus"], **report}
    with db.unit_of_work() as session:
        return record_callback(session, form, deployment=DEPLOYMENT, now=T0, **fields)


def status_of(db, message_id: str) -> tuple:
    with db.unit_of_work() as session:
        message = session.get(Message, message_id)
        return message.status, message.twilio_status, message.twilio_segments


def early_reports(db) -> list[tuple]:
    with db.unit_of_work() as session:
        return [(row.sid, row.account_sid, row.status) for row in session.scalars(select(EarlyStatus).order_by(EarlyStatus.id))]


# --- a status answers to the credentials its message was sent with ----------------------------------------------

@pytest.mark.parametrize(("message", "signer", "naming", "fate"), [
    ("msg_plain", DEPLOYMENT, None, "applied"),
    ("msg_plain", ROGUE, None, "rejected"),  # another tenant's token, naming its own account
    ("msg_plain", ROGUE, DEPLOYMENT.account_sid, "rejected"),  # another tenant's token, naming the deployment
    ("msg_own", OWN, None, "asked of Twilio"),  # genuine, or the tenant's own forgery: Twilio decides
    ("msg_own", DEPLOYMENT, None, "rejected"),  # the deployment's token, but the message is the subaccount's
    ("msg_own", DEPLOYMENT, OWN.account_sid, "rejected"),  # the deployment's token naming the subaccount
    ("msg_own", ROGUE, OWN.account_sid, "rejected"),
], ids=["deployment-ok", "other-tenant", "other-tenant-naming-deployment", "own-ok", "deployment-for-subaccount",
        "deployment-token-naming-subaccount", "other-tenant-naming-subaccount"])
def test_a_status_is_applied_only_when_signed_by_the_credentials_its_message_was_sent_with(
        db, message, signer, naming, fate):
    # given a delivered report with 40 segments for the message, signed as the case says
    sid = {"msg_plain": SID_PLAIN, "msg_own": SID_OWN}[message]
    form = status_form(sid, "delivered", signer, naming=naming, NumSegments="40")

    # when it reaches the webhook's domain step
    if fate == "rejected":
        with pytest.raises(CallbackRejected):
            callback(db, form, num_segments=40)
    else:
        change = callback(db, form, num_segments=40)

    # then only the deployment's moved the message; the subaccount's is to be asked of Twilio, and changed nothing
    # yet; a rejected one left it as it was; none kept anything
    if fate == "applied":
        assert change.became_final and status_of(db, message) == ("delivered", "delivered", 40)
    else:
        assert status_of(db, message) == ("sent", "queued", None)
    if fate == "asked of Twilio":
        assert change == ToConfirm(sid)
    assert early_reports(db) == []


@pytest.mark.parametrize("forged", [dict(status="failed", ErrorCode="30008"),
                                    dict(status="delivered", NumSegments="0"),
                                    dict(status="undelivered", ErrorCode="30003"),
                                    dict(status="canceled")], ids=["failed", "delivered-0-segments", "undelivered",
                                                                   "canceled"])
def test_a_final_report_the_tenant_could_have_signed_itself_changes_nothing_until_twilio_confirms_it(db, forged):
    # given acct_own's message, and a final report signed with its subaccount's token (which acct_own holds)
    fields = {name: value for name, value in forged.items() if name != "status"}
    form = status_form(SID_OWN, forged["status"], OWN, **fields)

    # when it arrives
    change = callback(db, form, num_segments=int(fields.get("NumSegments", 0)) if "NumSegments" in fields else None,
                      error_code=int(fields["ErrorCode"]) if "ErrorCode" in fields else None)

    # then Twilio is to be asked, and the message is as it was: not final, nothing charged or voided
    assert change == ToConfirm(SID_OWN)
    assert status_of(db, "msg_own") == ("sent", "queued", None)


def test_a_tenants_report_on_the_way_moves_the_status_but_says_nothing_of_segments_price_or_errors(db):
    # given acct_own's "sent" report, signed with its token, claiming 0 segments, a price and an error
    form = status_form(SID_OWN, "sent", OWN, NumSegments="0", Price="0.00", ErrorCode="30008")

    # when it arrives
    change = callback(db, form, num_segments=0, price="0.00", price_unit="USD", error_code=30008,
                      error_message="forged")

    # then the message is sent, with none of what the report said of money or errors
    assert change.changed and not change.became_final
    assert status_of(db, "msg_own") == ("sent", "sent", None)
    with db.unit_of_work() as session:
        message = session.get(Message, "msg_own")
        assert (message.twilio_price, message.error_code, message.error_message) == (None, None, None)


def test_a_replayed_callback_with_one_field_changed_is_rejected(db):
    # given a genuine "sent" callback for the message
    genuine = status_form(SID_PLAIN, "sent", DEPLOYMENT)
    callback(db, genuine)

    # when it is replayed with MessageStatus changed to failed (the signature kept)
    replayed = SignedForm(URL, {**genuine.params, "MessageStatus": "failed"}, genuine.signature)

    # then it is refused and the message stays sent
    with pytest.raises(CallbackRejected):
        callback(db, replayed)
    assert status_of(db, "msg_plain") == ("sent", "sent", None)


def test_a_message_sent_with_the_deployments_credentials_still_answers_to_them_after_its_account_brings_its_own(db):
    # given acct_plain switches to its own subaccount after msg_plain went out with the deployment's credentials
    with db.unit_of_work() as session:
        account = session.get(Account, "acct_plain")
        account.twilio_account_sid, account.twilio_auth_token = OWN.account_sid, OWN.auth_token

    # then the message's callbacks answer to the deployment's credentials, not the new ones
    with pytest.raises(CallbackRejected):
        callback(db, status_form(SID_PLAIN, "delivered", OWN))
    assert callback(db, status_form(SID_PLAIN, "delivered", DEPLOYMENT)).became_final


def test_a_message_whose_account_replaced_its_credentials_can_no_longer_be_vouched_for(db):
    # given acct_own replaced the subaccount msg_own was sent with (the old token is gone)
    with db.unit_of_work() as session:
        account = session.get(Account, "acct_own")
        account.twilio_account_sid, account.twilio_auth_token = SITE.account_sid, SITE.auth_token

    # then no callback for it is believed (the sweeper reconciles it with Twilio instead)
    for signer in (OWN, SITE, DEPLOYMENT):
        with pytest.raises(CallbackRejected):
            callback(db, status_form(SID_OWN, "delivered", signer))
    assert status_of(db, "msg_own") == ("sent", "queued", None)


def test_a_message_stored_before_senders_were_recorded_answers_to_its_accounts_credentials(db):
    # given messages stored without the account they were sent with
    with db.unit_of_work() as session:
        for message_id in ("msg_plain", "msg_own"):
            session.get(Message, message_id).twilio_account_sid = None

    # then each answers to its account's current credentials: the deployment's, or its own
    with pytest.raises(CallbackRejected):
        callback(db, status_form(SID_OWN, "delivered", DEPLOYMENT))
    assert callback(db, status_form(SID_OWN, "delivered", OWN)) == ToConfirm(SID_OWN)
    assert callback(db, status_form(SID_PLAIN, "delivered", DEPLOYMENT)).became_final


# --- a report that beat its sid -------------------------------------------------------------------------------

@pytest.mark.parametrize("signer", [DEPLOYMENT, ROGUE, SITE], ids=["deployment", "an-accounts-own", "dunning-site"])
def test_a_report_for_a_sid_not_stored_yet_is_kept_with_the_account_whose_token_verified_it(db, signer):
    assert callback(db, status_form(SID_EARLY, "sent", signer)) is None

    assert early_reports(db) == [(SID_EARLY, signer.account_sid, "sent")]


@pytest.mark.parametrize("signer", [ROGUE, SITE], ids=["an-accounts-own", "dunning-site"])
def test_a_final_report_for_a_sid_not_stored_yet_signed_by_a_tenants_token_is_asked_of_twilio_not_kept(db, signer):
    assert callback(db, status_form(SID_EARLY, "failed", signer)) == ToConfirm(SID_EARLY)

    assert early_reports(db) == []


def test_a_final_report_for_a_sid_not_stored_yet_signed_by_the_deployment_is_kept(db):
    assert callback(db, status_form(SID_EARLY, "delivered", DEPLOYMENT)) is None

    assert early_reports(db) == [(SID_EARLY, DEPLOYMENT.account_sid, "delivered")]


@pytest.mark.parametrize(("signer", "naming"), [
    (Credentials("AC" + "7" * 32, "made-up"), None),  # credentials nobody stored
    (ROGUE, DEPLOYMENT.account_sid),  # a stored token, naming the deployment
    (DEPLOYMENT, ROGUE.account_sid),  # the deployment's token, naming a tenant's account
], ids=["unknown-credentials", "tenant-token-naming-deployment", "deployment-token-naming-tenant"])
def test_a_report_for_a_sid_not_stored_yet_signed_by_no_credentials_of_its_account_is_rejected(db, signer, naming):
    with pytest.raises(CallbackRejected):
        callback(db, status_form(SID_EARLY, "delivered", signer, naming=naming))

    assert early_reports(db) == []


def test_the_deployments_account_sid_is_checked_with_the_deployments_token_only(db):
    # given a tenant that stored the deployment's AccountSid with a token of its choosing
    with db.unit_of_work() as session:
        session.get(Account, "acct_rogue").twilio_account_sid = DEPLOYMENT.account_sid

    # when it signs an early report naming the deployment with that token
    forged = status_form(SID_EARLY, "delivered", Credentials(DEPLOYMENT.account_sid, ROGUE.auth_token))

    # then it is refused and nothing is kept
    with pytest.raises(CallbackRejected):
        callback(db, forged)
    assert early_reports(db) == []


def test_early_reports_are_applied_only_when_they_name_the_account_the_message_was_sent_with(db):
    # given a genuine early "sending" and another tenant's early "sent" for a sid not stored yet
    callback(db, status_form(SID_EARLY, "sending", DEPLOYMENT))
    callback(db, status_form(SID_EARLY, "sent", ROGUE))

    # when the worker stores the sid of acct_plain's message, sent with the deployment's credentials
    with db.unit_of_work() as session:
        session.add(Message(id="msg_early", account_id="acct_plain", to=CONTACT, from_=PLAIN_NUMBER, body="hi",
                            status="sent", twilio_sid=SID_EARLY, twilio_account_sid=DEPLOYMENT.account_sid,
                            created_at=T0, updated_at=T0))
        status = apply_early_statuses(session, SID_EARLY, now=T0)

    # then only the genuine report was applied: Twilio's word is "sending", not the other tenant's "sent"
    assert status == "sent"
    assert status_of(db, "msg_early") == ("sent", "sending", None)
    assert early_reports(db) == []


# --- an inbound text answers to the credentials of the number's owner -----------------------------------------

def inbound(db, to: str, body: str, signer: Credentials, *, naming: str | None = None):
    sid = "SM" + "e" * 32
    form = signed({"MessageSid": sid, "From": CONTACT, "To": to, "Body": body}, signer, naming=naming)
    with db.unit_of_work() as session:
        return receive_inbound(session, Inbound(sid=sid, from_=CONTACT, to=to, body=body), form,
                               deployment=DEPLOYMENT, now=T0)


def opted_out(db) -> list[tuple[str, str]]:
    with db.unit_of_work() as session:
        return [(row.account_id, row.phone) for row in session.scalars(select(OptOut))]


@pytest.mark.parametrize(("to", "signer", "naming", "accepted"), [
    (PLAIN_NUMBER, DEPLOYMENT, None, True),
    (PLAIN_NUMBER, ROGUE, None, False),
    (PLAIN_NUMBER, DEPLOYMENT, ROGUE.account_sid, False),
    (OWN_NUMBER, OWN, None, True),
    (OWN_NUMBER, DEPLOYMENT, None, False),
    (OWN_NUMBER, ROGUE, OWN.account_sid, False),
], ids=["deployment-ok", "other-tenant", "deployment-token-naming-tenant", "own-ok", "deployment-for-subaccount",
        "other-tenant-naming-subaccount"])
def test_an_inbound_stop_opts_out_only_when_signed_by_the_numbers_twilio_account(db, to, signer, naming, accepted):
    owner = {PLAIN_NUMBER: "acct_plain", OWN_NUMBER: "acct_own"}[to]

    if accepted:
        assert inbound(db, to, "STOP", signer, naming=naming).account_id == owner
        assert opted_out(db) == [(owner, CONTACT)]
    else:
        with pytest.raises(CallbackRejected):
            inbound(db, to, "STOP", signer, naming=naming)
        assert opted_out(db) == []


def test_inbound_to_a_number_no_account_has_is_dropped_when_genuine_and_rejected_when_not(db):
    assert inbound(db, "+14155550999", "STOP", SITE) is None  # e.g. a reply to a dunning site's number
    with pytest.raises(CallbackRejected):
        inbound(db, "+14155550999", "STOP", Credentials("AC" + "7" * 32, "made-up"))
    assert opted_out(db) == []
