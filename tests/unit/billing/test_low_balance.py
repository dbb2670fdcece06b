"""Low-credit notices written by the settlement that leaves a wallet under the threshold, and the email adapter."""

import socketserver
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from shared.billing import low_balance
from shared.config import ConfigError, load_settings
from shared.email import Email, FileOutbox, SmtpEmailSender, email_sender
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.lifecycle import account_life
from shared.messaging.messages import MessageRequest, accept_message
from shared.messaging.rates import default_rate_card
from shared.messaging.send_cap import SendCap
from shared.messaging.settlement import settle_message
from shared.models import Account, LowBalanceNotice, Message, PhoneNumber, User

SENDER = "+14155550000"
CARD = default_rate_card()
UNCAPPED = SendCap(young_days=0, per_day=1)
MORNING = datetime(2026, 3, 3, 20, tzinfo=UTC)  # Mar 4 09:00 in Auckland
EVENING = datetime(2026, 3, 4, 9, tzinfo=UTC)  # Mar 4 22:00 there: the same local day
NEXT_DAY = datetime(2026, 3, 4, 12, tzinfo=UTC)  # Mar 5 01:00 there


def seat(user_id, role, email=None):
    return User(id=user_id, account_id="acct_low", name=user_id, email=f"{user_id}@example.com" if email is None
                else email, role=role, monthly_credits=None if role != "user" else 10_000, balance=0, held=0,
                created_at=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture
def account(database):
    """An Auckland account with a 5-credit threshold: a pool of 8 credits, a user with 6 credits of its own."""
    with database.unit_of_work() as session:
        session.add(Account(id="acct_low", name="Low Co", timezone="Pacific/Auckland", low_balance_threshold=5_000,
                            status="active", balance=0, held=0, allocated=0, allocated_held=0,
                            overdraft_policy="prepaid", overdraft_limit=0))
        session.add(PhoneNumber(account_id="acct_low", phone=SENDER, type="long_code"))
        session.flush()
        session.add_all([seat("user_owner", "owner"), seat("user_owner2", "owner"), seat("user_admin", "admin"),
                         seat("user_admin2", "admin"), seat("user_own", "user"), seat("user_silent", "owner", "")])
        session.flush()
        book.grant(session, "acct_low", 8_000, "purchase", granted_at=MORNING, idempotency_key="seed:pool")
        book.transfer(session, "acct_low", "user_own", 6_000, now=MORNING, idempotency_key="seed:own")
        book.grant(session, "acct_low", 6_000, "purchase", granted_at=MORNING, idempotency_key="seed:pool2")
    return "acct_low"


def settled_send(database, outbox, user_id, now, *, segments=2):
    """A message of `segments` credits sent by `user_id` (None: with the account key), delivered and settled
    the way the settle job does it: the notices are written in the settlement's transaction, sent after it."""
    with database.unit_of_work() as session:
        message, _ = accept_message(session, "acct_low", MessageRequest(to="+14155550100", from_=SENDER,
                                                                        body="ж" * 67 * segments, user_id=user_id),
                                    rate_card=CARD, now=now, cap=UNCAPPED)
        hold = book.reserve(session, "acct_low", message.credits_estimated, user_id=user_id, reference=message.id,
                            idempotency_key=f"message:{message.id}:hold", ttl_seconds=900, now=now)
        session.execute(update(Message).where(Message.id == message.id).values(hold_id=hold.id, status="delivered"))
        message_id = message.id
    settle_and_notify(database, outbox, message_id, now)
    return message_id


def settle_and_notify(database, outbox, message_id, now):
    with database.unit_of_work() as session:
        if settle_message(session, message_id, rate_card=CARD, now=now).outcome == "settled":
            low_balance.note_settlement(session, message_id, now=now)
    return low_balance.send_pending(database, outbox, message_id=message_id, now=now)


@pytest.fixture
def outbox(tmp_path):
    return FileOutbox(tmp_path / "outbox")


def get_message(database, message_id) -> Message:
    with database.unit_of_work() as session:
        message = session.get(Message, message_id)
        session.expunge(message)
        return message


def recipients(outbox):
    return sorted(m["To"] for m in outbox.messages())


class FailingSender:
    def send(self, email):
        raise OSError("smtp down")


def test_an_admin_whose_send_takes_the_pool_under_the_threshold_and_the_owners_get_one_email_a_day(
        database, account, outbox):
    # given a pool of 8 credits over a 5-credit threshold
    # when an admin's send of 2 credits leaves 6 (over), then a second one leaves 4 (under)
    settled_send(database, outbox, "user_admin", MORNING)
    assert outbox.messages() == []
    settled_send(database, outbox, "user_admin", MORNING)

    # then the admin and both owners are told once, about the company's shared credits
    assert recipients(outbox) == ["user_admin@example.com", "user_owner2@example.com", "user_owner@example.com"]
    owner_mail = next(m for m in outbox.messages() if m["To"] == "user_owner@example.com")
    assert "shared credits" in owner_mail.get_content() and "4 available" in owner_mail.get_content()

    # and another send the same local day (22:00 in Auckland) tells nobody again
    settled_send(database, outbox, "user_admin", EVENING)
    assert len(outbox.messages()) == 3


def test_another_user_crossing_the_next_day_gets_its_own_and_the_owners_theirs(database, account, outbox):
    # given the admin and the owners were told today
    settled_send(database, outbox, "user_admin", MORNING, segments=4)
    # when another admin sends later that day, then on the next local day
    settled_send(database, outbox, "user_admin2", EVENING, segments=1)
    that_day = recipients(outbox)
    settled_send(database, outbox, "user_admin2", NEXT_DAY, segments=1)

    # then the second admin is told once that day (the owners were already), and the owners again the next day
    assert that_day == ["user_admin2@example.com", "user_admin@example.com", "user_owner2@example.com",
                        "user_owner@example.com"]
    assert len(outbox.messages()) == 4 + 3
    assert {m["Subject"] for m in outbox.messages() if m["To"] == "user_admin2@example.com"} == {
        "creditq: low balance (3 credits)", "creditq: low balance (2 credits)"}


def test_a_send_with_the_account_key_tells_the_owners_only(database, account, outbox):
    settled_send(database, outbox, None, MORNING, segments=4)

    assert recipients(outbox) == ["user_owner2@example.com", "user_owner@example.com"]


def test_a_user_with_its_own_credits_is_told_about_its_own_wallet_and_so_are_the_owners(database, account, outbox):
    # given a role-user user with 6 credits of its own (the pool has 8)
    # when its send of 2 credits leaves 4 of its own
    settled_send(database, outbox, "user_own", MORNING)

    # then it is told about its own credits, and each owner about that user's
    mails = {mail["To"]: mail.get_content() for mail in outbox.messages()}
    assert "Your credits are" in mails.pop("user_own@example.com")
    assert mails and all("own credits are" in body and "4 available" in body for body in mails.values())
    assert not any(to.startswith("user_admin") for to in mails)


def test_a_message_that_settles_after_its_account_was_canceled_tells_nobody_to_buy_credits(
        database, account, outbox):
    # given an admin's 4-credit message with Twilio, held from the 8-credit pool
    with database.unit_of_work() as session:
        message, _ = accept_message(session, "acct_low", MessageRequest(to="+14155550100", from_=SENDER,
                                                                        body="ж" * 67 * 4, user_id="user_admin"),
                                    rate_card=CARD, now=MORNING, cap=UNCAPPED)
        hold = book.reserve(session, "acct_low", message.credits_estimated, user_id="user_admin",
                            reference=message.id, idempotency_key=f"message:{message.id}:hold", ttl_seconds=900,
                            now=MORNING)
        session.execute(update(Message).where(Message.id == message.id).values(hold_id=hold.id, status="delivered"))
        message_id = message.id

    # when the account is canceled, then the message settles and leaves the pool under the threshold
    with database.unit_of_work() as session:
        account_life.cancel_account(session, "acct_low", actor="operator", now=MORNING)
    settle_and_notify(database, outbox, message_id, EVENING)

    # then the message is charged, but nobody is emailed: the account can neither buy nor send any more
    assert get_message(database, message_id).credits_charged == 4_000
    assert outbox.messages() == []


def test_a_replayed_settlement_sends_nothing_more(database, account, outbox):
    message_id = settled_send(database, outbox, "user_admin", MORNING, segments=4)

    replayed = settle_and_notify(database, outbox, message_id, MORNING)

    assert replayed == 0 and len(outbox.messages()) == 3


def test_an_address_no_header_can_carry_holds_up_no_other_notice_and_waits_out_its_lease(
        database, account, outbox, caplog):
    # given an owner whose address carries a line break, and a notice to it written before such addresses were
    # refused (and are no longer owed one)
    with database.unit_of_work() as session:
        session.add(seat("user_broken", "owner", "victim@example.com\r\nBcc: attacker@evil.example"))
        session.flush()
        session.add(LowBalanceNotice(account_id="acct_low", user_id="user_broken", day="2026-03-03", message_id="old",
                                     pool=True, available=4_000, threshold=5_000, created_at=MORNING))

    # when an admin's sends take the pool under the threshold, which tells the admin and the two other owners
    settled_send(database, outbox, "user_admin", MORNING)
    settled_send(database, outbox, "user_admin", MORNING)
    caught_up = low_balance.send_pending(database, outbox, now=MORNING)

    # then every other notice went out, none was written to the broken address, and its old notice kept its claim
    # with a warning that names no address
    assert recipients(outbox) == ["user_admin@example.com", "user_owner2@example.com", "user_owner@example.com"]
    assert caught_up == 0
    assert "no address an email can go to" in caplog.text and "attacker" not in caplog.text

    def broken_notices():
        with database.unit_of_work() as session:
            return [(notice.day, notice.sent_at, utc(notice.claimed_at)) for notice in
                    session.query(LowBalanceNotice).filter_by(user_id="user_broken")]

    assert broken_notices() == [("2026-03-03", None, MORNING)]
    # and the catch-up leaves it alone until the lease has passed, then claims it again, still sending nothing
    assert low_balance.send_pending(database, outbox, now=MORNING + low_balance.CLAIM_LEASE) == 0
    assert broken_notices() == [("2026-03-03", None, MORNING + low_balance.CLAIM_LEASE)]
    assert len(outbox.messages()) == 3


def test_a_failed_send_gives_the_notice_back_and_a_killed_claim_is_taken_again_after_its_lease(
        database, account, outbox):
    # given a settlement whose emails could not be handed over
    with database.unit_of_work() as session:
        message, _ = accept_message(session, "acct_low", MessageRequest(to="+14155550100", from_=SENDER,
                                                                        body="ж" * 67 * 4), rate_card=CARD,
                                    now=MORNING, cap=UNCAPPED)
        hold = book.reserve(session, "acct_low", message.credits_estimated, reference=message.id,
                            idempotency_key="hold", ttl_seconds=900, now=MORNING)
        session.execute(update(Message).where(Message.id == message.id).values(hold_id=hold.id, status="delivered"))
        message_id = message.id
    with database.unit_of_work() as session:
        settle_message(session, message_id, rate_card=CARD, now=MORNING)
        assert low_balance.note_settlement(session, message_id, now=MORNING) == 2
    with pytest.raises(OSError):
        low_balance.send_pending(database, FailingSender(), message_id=message_id, now=MORNING)

    # and one whose worker died after claiming it (the claim is left, nothing was sent)
    with database.unit_of_work() as session:
        session.execute(update(LowBalanceNotice).where(LowBalanceNotice.user_id == "user_owner2")
                        .values(claimed_at=MORNING))

    # when the catch-up runs at once, then after the lease
    at_once = low_balance.send_pending(database, outbox, now=MORNING)
    after_lease = low_balance.send_pending(database, outbox, now=MORNING + low_balance.CLAIM_LEASE)

    # then the given-back notice goes at once, the dead claim after its lease, each once
    assert (at_once, after_lease) == (1, 1)
    assert recipients(outbox) == ["user_owner2@example.com", "user_owner@example.com"]


def test_the_file_outbox_writes_one_eml_per_key_and_a_resend_overwrites_it(tmp_path):
    outbox = FileOutbox(tmp_path, sender="billing@creditq.test")
    email = Email(to="ana@example.com", subject="Low balance", body="Hello", key="low-balance:user_1:2026-03-04")

    outbox.send(email)
    outbox.send(email)

    [message] = outbox.messages()
    assert (message["From"], message["To"], message["Subject"]) == ("billing@creditq.test", "ana@example.com",
                                                                    "Low balance")
    assert message.get_content().strip() == "Hello"


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP to accept one message."""

    def handle(self):
        self.wfile.write(b"220 test ESMTP\r\n")
        data, in_data = [], False
        for raw in self.rfile:
            line = raw.decode().rstrip("\r\n")
            if in_data:
                if line == ".":
                    in_data = False
                    self.server.received.append("\n".join(data))
                    self.wfile.write(b"250 queued\r\n")
                else:
                    data.append(line)
                continue
            verb = line.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250 test\r\n")
            elif verb == "DATA":
                in_data = True
                self.wfile.write(b"354 go\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_the_smtp_sender_delivers_to_an_smtp_server():
    server = socketserver.TCPServer(("127.0.0.1", 0), _SmtpHandler)
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sender = SmtpEmailSender("127.0.0.1", server.server_address[1], sender="billing@creditq.test")
        sender.send(Email(to="ana@example.com", subject="Low balance", body="Hello Ana", key="k1"))
    finally:
        server.shutdown()
        server.server_close()

    [message] = server.received
    assert "To: ana@example.com" in message and "Hello Ana" in message


def test_smtp_url_picks_smtp_and_no_url_the_file_outbox(tmp_path):
    base = {"CREDITQ_DATA_DIR": str(tmp_path), "CREDITQ_ADMIN_KEY": "test-operator-key-0123456789"}

    smtp = email_sender(load_settings({**base, "SMTP_URL": "smtp+starttls://me%40x.com:s3cret@mail.example.com"}))
    outbox = email_sender(load_settings(base))

    assert isinstance(smtp, SmtpEmailSender)
    assert (smtp.host, smtp.port, smtp.security, smtp.username, smtp.password) == (
        "mail.example.com", 587, "starttls", "me@x.com", "s3cret")
    assert isinstance(outbox, FileOutbox) and outbox.directory == tmp_path / "outbox"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SMTP_URL", "mail.example.com:25", "SMTP_URL='mail.example.com:25' must be a URL starting with one of"),
    ("SMTP_URL", "smtp://", "has no host"),
    ("SMTP_URL", "smtp://mail:port", "has a bad port"),
    ("EMAIL_FROM", "nobody", "is not an email address"),
])
def test_bad_email_settings_are_one_line(tmp_path, name, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "CREDITQ_ADMIN_KEY": "test-operator-key-0123456789",
                       name: value})
