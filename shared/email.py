"""Outgoing email: one `EmailSender` protocol, SMTP in production, a file outbox in dev and tests.

Callers make their own sends idempotent (a claimed row per notice); `Email.key` only names the
message (its Message-ID, the outbox file), so a retried send overwrites its outbox file instead
of adding a second one.
"""

import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol

from shared.config import Settings, SmtpSettings
from shared.private_files import private_directory

# One @, something on each side, ASCII only (a relay without SMTPUTF8 refuses anything else), and nothing a mail
# header reads as syntax: no spaces or line breaks (a CR or LF would make every email to it fail, or smuggle in a
# header where a library let it through), no quotes, brackets, commas, colons or semicolons (a list or a group).
_ADDRESS = re.compile(r"[^\s@<>()\[\]\\,;:\"\x00-\x1f\x7f]+@[^\s@<>()\[\]\\,;:\"\x00-\x1f\x7f]+")


def is_address(value: str) -> bool:
    """Whether `value` can be the address an email is sent to."""
    return len(value) <= 320 and value.isascii() and _ADDRESS.fullmatch(value) is not None


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    body: str  # plain text
    key: str  # unique per notice, e.g. "low-balance:usr_...:2026-11-03"


class EmailSender(Protocol):
    def send(self, email: Email) -> None:
        """Hand the email over for delivery; raises OSError/smtplib.SMTPException when it cannot."""


def _message(email: Email, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(idstring=_safe_name(email.key), domain=sender.rpartition("@")[2])
    message.set_content(email.body)
    return message


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


class SmtpEmailSender:
    """One SMTP connection per email: notices are few, and a fresh connection never goes stale."""

    def __init__(self, host: str, port: int, *, security: str = "none", username: str | None = None,
                 password: str | None = None, sender: str = "creditq@localhost", timeout: float = 30.0):
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.sender, self.timeout = sender, timeout

    def send(self, email: Email) -> None:
        message = _message(email, self.sender)
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)


class FileOutbox:
    """Writes each email as `<key>.eml` in a directory: what dev and tests read instead of an inbox."""

    def __init__(self, directory: Path, *, sender: str = "creditq@localhost"):
        self.directory = Path(directory)
        self.sender = sender

    def send(self, email: Email) -> None:
        private_directory(self.directory)
        path = self.directory / f"{_safe_name(email.key)}.eml"
        partial = path.with_suffix(".eml.partial")
        partial.write_bytes(bytes(_message(email, self.sender)))
        partial.replace(path)  # atomic: a reader never sees half an email

    def messages(self) -> list[EmailMessage]:
        """The emails sent so far, oldest first."""
        paths = sorted(self.directory.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
        return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in paths]


def email_sender(settings: Settings) -> EmailSender:
    """SMTP when SMTP_URL is set, else the file outbox under the data directory."""
    smtp: SmtpSettings | None = settings.smtp
    if smtp is None:
        return FileOutbox(settings.data_dir / "outbox", sender=settings.email_from)
    return SmtpEmailSender(smtp.host, smtp.port, security=smtp.security, username=smtp.username,
                           password=smtp.password, sender=settings.email_from)
