"""The shared short code on SQLite and PostgreSQL: keywords (validation, uniqueness, release), the prefix, the
sender type, and where an inbound text to the code belongs."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shared.config import ConfigError, load_settings
from shared.errors import CallbackRejected, Conflict, ValidationFailed
from shared.messaging.estimate import sender_type_of
from shared.messaging.inbound import Inbound, receive_inbound
from shared.messaging.opt_outs import FROM_IMPORT, opt_out
from shared.messaging.shared_short_code import (
    FIELD,
    Route,
    parse_keyword,
    prefixed,
    resolve,
    route,
    set_keyword,
    setting,
)
from shared.models import Account, Message, OptOut
from shared.twilio.signatures import Credentials, SignedForm
from twilio_sim.signature import twilio_signature

CODE = "12345"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONTACT, OTHER_CONTACT = "+14155550100", "+14155550101"
DEPLOYMENT = Credentials("AC" + "d" * 32, "deployment-token")
URL = "https://creditq.example/webhooks/twilio/inbound"


@pytest.fixture
def db(database):
    with database.unit_of_work() as session:
        session.add_all([Account(id="acct_acme", name="Acme", help_text="Acme Realty: reply STOP ACME to opt out."),
                         Account(id="acct_zen", name="Zen"), Account(id="acct_rogue", name="Rogue")])
    return database


def keyword(db, account_id: str, raw: str | None, *, code: str | None = CODE) -> dict | None:
    with db.unit_of_work() as session:
        account = set_keyword(session, account_id, None if raw is None else parse_keyword(raw), code=code)
        return setting(account)


def setting_of(db, account_id: str) -> dict | None:
    with db.unit_of_work() as session:
        return setting(session.get(Account, account_id))


# --- keywords ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "stored"), [("acme", "ACME"), (" Zen2 ", "ZEN2"), ("GO", "GO"),
                                             ("A" * 15, "A" * 15)])
def test_a_keyword_is_letters_and_digits_kept_in_capitals(raw, stored):
    assert parse_keyword(raw) == stored


@pytest.mark.parametrize("raw", ["A", "A" * 16, "ac-me", "ac me", "acmé", "ＡＣＭＥ", "١٢٣", "", None, 42])
def test_a_keyword_that_is_not_2_to_15_ascii_letters_and_digits_is_refused_naming_the_field(raw):
    with pytest.raises(ValidationFailed) as refused:
        parse_keyword(raw)
    assert set(refused.value.errors) == {FIELD}


@pytest.mark.parametrize("raw", ["STOP", "start", "Help", "UNSTOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT",
                                 "INFO", "YES", "NO", "OPTOUT", "REVOKE", "SUBSCRIBE"])
def test_a_reserved_word_is_never_a_keyword(raw):
    with pytest.raises(ValidationFailed) as refused:
        parse_keyword(raw)
    assert "reserved" in refused.value.errors[FIELD]


def test_a_keyword_taken_in_any_case_is_a_conflict_naming_the_keyword_not_its_holder(db):
    # given acme holds ACME
    assert keyword(db, "acct_acme", "Acme") == {"keyword": "ACME", "code": CODE}

    # when another account asks for acme, in any case
    for attempt in ("acme", "ACME", "aCmE"):
        with pytest.raises(Conflict) as refused:
            keyword(db, "acct_rogue", attempt)

        # then it is refused, the answer names the keyword only, and acme keeps it
        assert "ACME" in str(refused.value) and "acct_acme" not in str(refused.value)
    assert setting_of(db, "acct_acme") == {"keyword": "ACME", "code": CODE}
    assert setting_of(db, "acct_rogue") is None


def test_a_keyword_set_again_by_its_holder_or_changed_stays_one_keyword(db):
    keyword(db, "acct_acme", "ACME")
    assert keyword(db, "acct_acme", "acme") == {"keyword": "ACME", "code": CODE}
    assert keyword(db, "acct_acme", "ACME2") == {"keyword": "ACME2", "code": CODE}
    assert keyword(db, "acct_zen", "ACME") == {"keyword": "ACME", "code": CODE}  # the old one was released


def test_null_releases_the_keyword_for_another_account(db):
    keyword(db, "acct_acme", "ACME")
    assert keyword(db, "acct_acme", None) is None
    assert keyword(db, "acct_zen", "acme") == {"keyword": "ACME", "code": CODE}


def test_without_a_shared_short_code_no_keyword_can_be_set_but_one_can_be_released(db):
    keyword(db, "acct_acme", "ACME")
    with pytest.raises(Conflict, match="SHARED_SHORT_CODE"):
        keyword(db, "acct_zen", "ZEN", code=None)
    assert keyword(db, "acct_acme", None, code=None) is None


def test_the_database_refuses_a_second_holder_of_a_keyword(db):
    keyword(db, "acct_acme", "ACME")
    with pytest.raises(IntegrityError):  # the unique index, whatever path wrote the row
        with db.unit_of_work() as session:
            session.get(Account, "acct_zen").shared_short_code_keyword = "ACME"
    assert setting_of(db, "acct_zen") is None


# --- sending ---------------------------------------------------------------------------------------------------

def test_a_text_through_the_shared_code_carries_its_keyword_in_front():
    assert prefixed("ACME", "Open house Sunday") == "ACME: Open house Sunday"
    assert prefixed(None, "Open house Sunday") == "Open house Sunday"
    assert prefixed("ACME", "  ") == "  "  # still refused as empty, not sent as "ACME:   "


def test_the_shared_code_is_a_short_code_sender_only_for_an_account_with_a_keyword_on_it(db):
    keyword(db, "acct_acme", "ACME")
    with db.unit_of_work() as session:
        assert sender_type_of(session, CODE, account_id="acct_acme") == "short_code"
        assert sender_type_of(session, CODE, account_id="acct_zen") == "long_code"
        assert sender_type_of(session, CODE, account_id=None) == "short_code"  # the operator's estimate


def test_texts_sent_before_a_release_still_settle_as_short_code_ones(db):
    # given ACME sent from the shared code, then released its keyword while a text was in flight
    keyword(db, "acct_acme", "ACME")
    keyword(db, "acct_acme", None)

    # then the text's sender is still a short code for the throttle and settlement
    with db.unit_of_work() as session:
        assert sender_type_of(session, CODE, account_id="acct_acme") == "short_code"


@pytest.mark.parametrize(("environ", "code"), [({}, None), ({"SHARED_SHORT_CODE": ""}, None),
                                               ({"SHARED_SHORT_CODE": "12345"}, "12345"),
                                               ({"SHARED_SHORT_CODE": "123456"}, "123456")])
def test_the_deployment_configures_one_shared_short_code_or_none(tmp_path, environ, code):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "CREDITQ_ADMIN_KEY": "k" * 20, **environ})
    assert settings.shared_short_code == code


@pytest.mark.parametrize("raw", ["1234", "1234567", "+14155550100", "12a45"])
def test_a_shared_short_code_that_is_not_5_or_6_digits_stops_start_up(tmp_path, raw):
    with pytest.raises(ConfigError, match="SHARED_SHORT_CODE"):
        load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "CREDITQ_ADMIN_KEY": "k" * 20, "SHARED_SHORT_CODE": raw})


# --- inbound routing -----------------------------------------------------------------------------------------

KEYWORDS = {"ACME", "ZEN"}


@pytest.mark.parametrize(("body", "expected"), [
    ("ACME is the open house still on?", Route("ACME", None)),
    ("acme", Route("ACME", None)),
    ("  Zen   hello", Route("ZEN", None)),
    ("ACME STOP", Route("ACME", "opt_out")),
    ("STOP ACME", Route("ACME", "opt_out")),
    ("stop zen", Route("ZEN", "opt_out")),
    ("START ACME", Route("ACME", "opt_in")),
    ("HELP ACME", Route("ACME", "help")),
    ("STOP", Route(None, "opt_out", every_account=True)),
    ("unsubscribe", Route(None, "opt_out", every_account=True)),
    ("START", Route(None, "opt_in", every_account=True)),
    ("HELP", Route(None, "help")),
    ("STOP OTHER", Route(None, None)),
    ("stop texting me", Route(None, None)),
    ("Is the open house still on?", Route(None, None)),
    ("ACMEX hi", Route(None, None)),
    ("", Route(None, None)),
])
def test_an_inbound_text_is_routed_by_its_first_word(body, expected):
    assert route(body, KEYWORDS) == expected


def sent(db, account_id: str, to: str, at: datetime) -> None:
    with db.unit_of_work() as session:
        session.add(Message(id=f"msg_{account_id}_{at.timestamp():.0f}", account_id=account_id, to=to, from_=CODE,
                            body="x", status="delivered", created_at=at, updated_at=at))


def test_a_text_naming_no_keyword_belongs_to_the_account_that_last_texted_the_sender_from_the_code(db):
    keyword(db, "acct_acme", "ACME")
    keyword(db, "acct_zen", "ZEN")
    sent(db, "acct_acme", CONTACT, T0)
    sent(db, "acct_zen", CONTACT, T0 + timedelta(minutes=1))
    sent(db, "acct_acme", OTHER_CONTACT, T0 + timedelta(minutes=2))
    with db.unit_of_work() as session:
        assert resolve(session, "sounds good", CONTACT, code=CODE).account_id == "acct_zen"
        assert resolve(session, "ACME sounds good", CONTACT, code=CODE).account_id == "acct_acme"
        assert resolve(session, "sounds good", "+14155550199", code=CODE).account_id is None


def inbound(db, body: str, *, sid: str, sender: str = CONTACT, signer: Credentials = DEPLOYMENT):
    params = {"MessageSid": sid, "From": sender, "To": CODE, "Body": body, "AccountSid": signer.account_sid}
    form = SignedForm(URL, params, twilio_signature(signer.auth_token, URL, params))
    with db.unit_of_work() as session:
        return receive_inbound(session, Inbound(sid=sid, from_=sender, to=CODE, body=body), form,
                               deployment=DEPLOYMENT, now=T0, shared_short_code=CODE)


def opt_outs(db) -> set[tuple[str, str]]:
    with db.unit_of_work() as session:
        return {(row.account_id, row.phone) for row in session.scalars(select(OptOut))}


def stored(db) -> list[tuple[str, str]]:
    with db.unit_of_work() as session:
        return [(m.account_id, m.body) for m in session.scalars(select(Message).where(Message.direction == "inbound")
                                                                .order_by(Message.created_at, Message.id))]


def test_stop_with_a_keyword_opts_out_of_that_account_and_a_bare_stop_out_of_every_one(db):
    keyword(db, "acct_acme", "ACME")
    keyword(db, "acct_zen", "ZEN")

    assert inbound(db, "STOP ACME", sid="SM" + "1" * 32).account_id == "acct_acme"
    assert opt_outs(db) == {("acct_acme", CONTACT)}

    inbound(db, "STOP", sid="SM" + "2" * 32, sender=OTHER_CONTACT)
    assert opt_outs(db) == {("acct_acme", CONTACT), ("acct_acme", OTHER_CONTACT), ("acct_zen", OTHER_CONTACT)}

    inbound(db, "START ACME", sid="SM" + "3" * 32)
    assert opt_outs(db) == {("acct_acme", OTHER_CONTACT), ("acct_zen", OTHER_CONTACT)}


def test_a_bare_stop_also_reaches_an_account_that_texted_the_sender_from_the_code_and_released_its_keyword(db):
    # given Acme texted the contact from the code, then released its keyword (its texts may still be in flight)
    keyword(db, "acct_acme", "ACME")
    keyword(db, "acct_zen", "ZEN")
    sent(db, "acct_acme", CONTACT, T0)
    keyword(db, "acct_acme", None)

    # when the contact texts a bare STOP to the code
    inbound(db, "STOP", sid="SM" + "7" * 32)

    # then neither Zen nor Acme may text them again; Rogue, which never used the code, is untouched
    assert opt_outs(db) == {("acct_acme", CONTACT), ("acct_zen", CONTACT)}


def test_a_bare_start_lifts_the_recipients_own_stops_but_never_an_accounts_do_not_contact_list(db):
    # given Acme's contact texted a bare STOP, and Zen listed them as do-not-contact
    keyword(db, "acct_acme", "ACME")
    keyword(db, "acct_zen", "ZEN")
    with db.unit_of_work() as session:
        opt_out(session, "acct_zen", CONTACT, FROM_IMPORT)
    inbound(db, "STOP", sid="SM" + "8" * 32)
    assert opt_outs(db) == {("acct_acme", CONTACT), ("acct_zen", CONTACT)}

    # when they text a bare START
    inbound(db, "START", sid="SM" + "9" * 32)

    # then Acme may text them again; Zen's list stands
    assert opt_outs(db) == {("acct_zen", CONTACT)}


def test_a_keyword_text_lands_in_its_account_and_help_is_answered_with_that_accounts_text(db):
    keyword(db, "acct_acme", "ACME")
    received = inbound(db, "acme is Sunday still on?", sid="SM" + "4" * 32)
    assert (received.account_id, received.reply) == ("acct_acme", None)
    assert inbound(db, "HELP ACME", sid="SM" + "5" * 32).reply == "Acme Realty: reply STOP ACME to opt out."
    assert stored(db) == [("acct_acme", "acme is Sunday still on?"), ("acct_acme", "HELP ACME")]


def test_a_text_naming_no_keyword_that_no_account_sent_to_is_stored_nowhere(db, caplog):
    keyword(db, "acct_acme", "ACME")
    assert inbound(db, "who is this?", sid="SM" + "6" * 32) is None
    assert stored(db) == [] and opt_outs(db) == set()
    assert "names no keyword" in caplog.text


def test_a_text_to_the_shared_code_not_signed_by_the_deployment_changes_nothing(db):
    keyword(db, "acct_acme", "ACME")
    with pytest.raises(CallbackRejected):
        inbound(db, "STOP", sid="SM" + "7" * 32, signer=Credentials("AC" + "9" * 32, "rogue-token"))
    assert opt_outs(db) == set()
    assert stored(db) == []
