"""Opt-outs: STOP/START/HELP keywords, idempotent recording, bulk checks, do-not-contact imports."""

import pytest

from shared.errors import Conflict, ValidationFailed
from shared.messaging import opt_outs
from shared.messaging.opt_outs import (
    FROM_API,
    FROM_STOP_KEYWORD,
    FROM_TWILIO_21610,
    classify_inbound,
    import_do_not_contact,
    is_opted_out,
    list_opt_outs,
    opt_in,
    opt_out,
    opted_out_among,
)
from shared.models import Account

ALICE = "+14155550100"
BOB = "+14155550101"


@pytest.mark.parametrize(("body", "keyword"), [
    *[(word, "opt_out") for word in ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")],
    *[(word, "opt_in") for word in ("START", "YES", "UNSTOP")],
    ("HELP", "help"), ("INFO", "help"),
    ("stop", "opt_out"), ("  Stop \n", "opt_out"), ("unStop", "opt_in"), ("\thelp ", "help"),
    ("STOP please", None), ("please stop", None), ("yes!", None), ("", None), ("   ", None),
    ("Hello, is this the open house?", None), ("STOPP", None),
])
def test_inbound_keywords_are_the_whole_trimmed_message_in_any_case(body, keyword):
    assert classify_inbound(body) == keyword


@pytest.fixture
def accounts(database):
    with database.unit_of_work() as session:
        session.add_all([Account(id="acct_1", name="Realty"), Account(id="acct_2", name="Church")])
    return database


def test_opting_out_twice_records_one_opt_out(accounts):
    with accounts.unit_of_work() as session:
        first = opt_out(session, "acct_1", ALICE, FROM_API)
        second = opt_out(session, "acct_1", ALICE, FROM_STOP_KEYWORD)

    with accounts.unit_of_work() as session:
        rows = list_opt_outs(session, "acct_1", limit=10)
        assert (first, second) == (True, False)
        assert [(row.phone, row.source) for row in rows] == [(ALICE, FROM_API)]
        assert is_opted_out(session, "acct_1", ALICE)


def test_an_opt_out_belongs_to_one_account(accounts):
    with accounts.unit_of_work() as session:
        opt_out(session, "acct_1", ALICE, FROM_API)

    with accounts.unit_of_work() as session:
        assert not is_opted_out(session, "acct_2", ALICE)
        assert not is_opted_out(session, "acct_1", BOB)


def test_the_bulk_check_finds_the_opted_out_among_many(accounts):
    # given 1,200 recipients of whom every hundredth opted out
    phones = [f"+1415555{n:04d}" for n in range(1200)]
    with accounts.unit_of_work() as session:
        for phone in phones[::100]:
            opt_out(session, "acct_1", phone, FROM_API)
        opt_out(session, "acct_2", phones[1], FROM_API)

    with accounts.unit_of_work() as session:
        found = opted_out_among(session, "acct_1", phones + phones[:5])

    assert found == set(phones[::100])


def test_the_recipient_can_lift_any_opt_out(accounts):
    with accounts.unit_of_work() as session:
        opt_out(session, "acct_1", ALICE, FROM_STOP_KEYWORD)

    with accounts.unit_of_work() as session:
        assert opt_in(session, "acct_1", ALICE, by_recipient=True)
        assert not opt_in(session, "acct_1", ALICE, by_recipient=True)
        assert not is_opted_out(session, "acct_1", ALICE)


@pytest.mark.parametrize("source", [FROM_STOP_KEYWORD, FROM_TWILIO_21610])
def test_the_customer_cannot_lift_a_recipients_own_opt_out(accounts, source):
    with accounts.unit_of_work() as session:
        opt_out(session, "acct_1", ALICE, source)

    with pytest.raises(Conflict, match="START"):
        with accounts.unit_of_work() as session:
            opt_in(session, "acct_1", ALICE, by_recipient=False)

    with accounts.unit_of_work() as session:
        assert is_opted_out(session, "acct_1", ALICE)


def test_the_customer_can_lift_its_own_opt_out(accounts):
    with accounts.unit_of_work() as session:
        opt_out(session, "acct_1", ALICE, FROM_API)

    with accounts.unit_of_work() as session:
        assert opt_in(session, "acct_1", ALICE, by_recipient=False)
        assert not is_opted_out(session, "acct_1", ALICE)


def test_an_import_adds_the_valid_rows_and_reports_the_others(accounts):
    csv_text = ("name,Phone\nAlice,+1 (415) 555-0100\nBob,not a number\n\n"
                "Carol,+14155550102\nAlice again,+14155550100\nDan,\n")

    added, invalid = import_do_not_contact(accounts, "acct_1", csv_text)

    assert added == 2
    assert [(row.line, row.value) for row in invalid] == [(3, "not a number"), (7, "")]
    assert all(row.reason for row in invalid)
    with accounts.unit_of_work() as session:
        assert opted_out_among(session, "acct_1", [ALICE, "+14155550102"]) == {ALICE, "+14155550102"}


def test_an_import_without_a_header_reads_the_first_column(accounts):
    added, invalid = import_do_not_contact(accounts, "acct_1", f"{ALICE},Alice\r\n{BOB},Bob\r\n")

    assert (added, invalid) == (2, [])


def test_importing_the_same_list_again_adds_nothing(accounts):
    with accounts.unit_of_work() as session:
        opt_out(session, "acct_1", ALICE, FROM_STOP_KEYWORD)
    import_do_not_contact(accounts, "acct_1", f"phone\n{BOB}\n")

    added, _ = import_do_not_contact(accounts, "acct_1", f"phone\n{ALICE}\n{BOB}\n")

    assert added == 0
    with accounts.unit_of_work() as session:
        sources = {row.phone: row.source for row in list_opt_outs(session, "acct_1", limit=10)}
    assert sources == {ALICE: FROM_STOP_KEYWORD, BOB: "import"}


@pytest.mark.parametrize("csv_text", ["", "\n\n", " , \n"])
def test_an_empty_import_is_refused(accounts, csv_text):
    with pytest.raises(ValidationFailed):
        import_do_not_contact(accounts, "acct_1", csv_text)


def test_opt_outs_list_newest_first_in_pages(accounts):
    phones = [f"+1415555{n:04d}" for n in range(5)]
    with accounts.unit_of_work() as session:
        for phone in phones:
            opt_out(session, "acct_1", phone, FROM_API)

    with accounts.unit_of_work() as session:
        first = list_opt_outs(session, "acct_1", limit=3)
        second = list_opt_outs(session, "acct_1", limit=3, before_id=first[-1].id)

    assert [row.phone for row in first + second] == list(reversed(phones))


def test_an_import_that_died_after_its_first_chunk_is_finished_by_sending_the_list_again(accounts, monkeypatch):
    phones = [f"+1415555{n:04d}" for n in range(12)]
    csv_text = "phone\n" + "\n".join(phones) + "\n"
    monkeypatch.setattr(opt_outs, "IMPORT_CHUNK", 5)
    write_chunk = opt_outs._opt_out_all
    chunks_written = []

    def dies_on_the_second_chunk(session, *args):
        if len(chunks_written) == 1:
            raise ConnectionError("the web process died")
        chunks_written.append(write_chunk(session, *args))
        return chunks_written[-1]

    with monkeypatch.context() as crash:
        crash.setattr(opt_outs, "_opt_out_all", dies_on_the_second_chunk)
        with pytest.raises(ConnectionError):
            import_do_not_contact(accounts, "acct_1", csv_text)
    with accounts.read_only() as session:
        assert opted_out_among(session, "acct_1", phones) == set(phones[:5])  # the first chunk, whole

    added, invalid = import_do_not_contact(accounts, "acct_1", csv_text)

    assert (added, invalid) == (7, [])
    with accounts.read_only() as session:
        assert sorted(row.phone for row in list_opt_outs(session, "acct_1", limit=100)) == phones
