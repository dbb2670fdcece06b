"""Low-balance notices and the email adapter: at most one email per user per local day."""

import socketserver
import threading
from datetime import UTC, datetime

import pytest

from shared.billing import low_balance
from shared.config import ConfigError, load_settings
from shared.email import Email, FileOutbox, SmtpEmailSender, email_sender
from shared.models import Account, User


def seat(user_id, role, balance=0, email=None):
    return User(id=user_id, account_id="acct_low", name=user_id, email=email or f"{user_id}@example.com", role=role,
                monthly_credits=None if role != "user" else 10_000, balance=balance, held=0,
                created_at=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture
def account(database):
    # a pool of 4 credits under a 5-credit threshold; one user with 20 credits of its own, one with 1
    with database.unit_of_work() as session:
        session.add(Account(id="acct_low", name="Low Co", timezone="Pacific/Auckland", low_balance_threshold=5_000,
                            status="active", balance=25_000, held=0, allocated=21_000, allocated_held=0))
        session.flush()
        session.add_all([seat("user_owner", "owner"), seat("user_admin", "admin"),
                         seat("user_rich", "user", 20_000), seat("user_poor", "user", 1_000)])
    return "acct_low"


class FailingSender:
    def send(self, email):
        raise OSError("smtp down")


def test_owners_admins_and_users_under_the_threshold_get_one_email_a_day(database, account, tmp_path):
    outbox = FileOutbox(tmp_path)
    morning = datetime(2026, 3, 3, 20, tzinfo=UTC)  # Mar 4 09:00 in Auckland

    sent = low_balance.send_notices(database, outbox, now=morning)
    again_that_day = low_balance.send_notices(database, outbox, now=morning.replace(hour=23))
    next_day = low_balance.send_notices(database, outbox, now=datetime(2026, 3, 4, 12, tzinfo=UTC))

    assert (sent, again_that_day, next_day) == (3, 0, 3)
    recipients = sorted(m["To"] for m in outbox.messages())
    assert recipients == sorted(["user_admin@example.com", "user_owner@example.com", "user_poor@example.com"] * 2)
    owner_mail = next(m for m in outbox.messages() if m["To"] == "user_owner@example.com")
    assert "shared credits" in owner_mail.get_content() and "4 available" in owner_mail.get_content()


def test_a_failed_send_gives_the_day_back_so_the_next_run_sends(database, account, tmp_path):
    now = datetime(2026, 3, 3, 20, tzinfo=UTC)

    with pytest.raises(OSError):
        low_balance.send_notices(database, FailingSender(), now=now)
    outbox = FileOutbox(tmp_path)

    assert low_balance.send_notices(database, outbox, now=now) == 3


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
