"""No secret in a log line: a filter on the process's log handlers masks what must never be written.

Code never logs a secret on purpose; this is the net under an exception message, a repr or a library's
debug line that carries one by accident. It masks, in the message, its arguments and the traceback text:
the secrets this process is configured with (CREDITQ_ADMIN_KEY, TWILIO_AUTH_TOKEN, CREDITQ_SECRET_KEY,
STRIPE_API_KEY, STRIPE_WEBHOOK_SECRET), anything shaped like a creditq key (cq_live_..., cq_admin_...), a Stripe
secret key (sk_live_..., rk_live_...), a Stripe webhook secret (whsec_...) or a Fernet key, the credential of an
`Authorization: Bearer/Basic` header, the password of a URL, the value of a field named like a secret
(auth_token=..., "password": "..."), and card numbers (12 to 19 digits that pass the Luhn check).
"""

import logging
import os
import re
from collections.abc import Iterable, Mapping

MASK = "[redacted]"
_MIN_KNOWN_LENGTH = 8  # shorter configured values would mask ordinary words

_PATTERNS = (
    (re.compile(r"\b(cq_(?:live|admin)_)[A-Za-z0-9_-]+"), rf"\1{MASK}"),
    (re.compile(r"\b((?:sk|rk)_(?:live|test)_|whsec_)[A-Za-z0-9_]+"), rf"\1{MASK}"),
    (re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}="), MASK),  # a Fernet key: 32 bytes, url-safe base64
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+"), rf"\1\2{MASK}"),
    (re.compile(r"(://[^/\s:@]*:)[^/\s@]+@"), rf"\1{MASK}@"),
    (re.compile(r"""(?ix)(["']?\b(?:auth_?token|api_?key|password|passwd|secret(?:_key)?|token|authorization)
                     \b["']?\s*[:=]\s*["']?)([^"'\s,;&)}]+)"""), rf"\1{MASK}"),
)
# A UUID (dramatiq's job ids, among others) is matched whole and left alone: its last group, or two groups and the
# hyphen between them, can be 12 to 19 digits that pass the Luhn check (about one UUID in a thousand), which masked
# part of a job id in the logs.
_UUID = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_CARD_CANDIDATE = re.compile(rf"(?<![0-9A-Za-z])(?:(?P<uuid>{_UUID})|[0-9](?:[ -]?[0-9]){{11,18}})(?![0-9A-Za-z])")


def _luhn(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _mask_card(match: re.Match) -> str:
    if match.group("uuid"):
        return match.group()
    digits = re.sub(r"[ -]", "", match.group())
    return MASK if _luhn(digits) else match.group()


class RedactSecrets(logging.Filter):
    """A handler filter: every record leaves with its secrets masked (it never drops a record)."""

    def __init__(self, known: Iterable[str] = ()):
        super().__init__()
        # Longest first, so a secret that contains another is masked whole.
        self._known = sorted({value for value in known if value and len(value) >= _MIN_KNOWN_LENGTH},
                             key=len, reverse=True)

    def redact(self, text: str) -> str:
        for value in self._known:
            text = text.replace(value, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return _CARD_CANDIDATE.sub(_mask_card, text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def configured_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values the environment hands this process."""
    env = os.environ if environ is None else environ
    keys = env.get("CREDITQ_SECRET_KEY", "").split(",")
    return [env.get("CREDITQ_ADMIN_KEY", ""), env.get("TWILIO_AUTH_TOKEN", ""), env.get("STRIPE_API_KEY", ""),
            env.get("STRIPE_WEBHOOK_SECRET", ""), *(key.strip() for key in keys)]


def install(logger: logging.Logger | None = None) -> None:
    """Put one RedactSecrets on every handler of `logger` (the root logger): call after logging is set up.

    Worker processes forked by dramatiq inherit the handlers, and with them the filter.
    """
    guard = RedactSecrets(configured_secrets())
    for handler in (logger or logging.getLogger()).handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactSecrets)]:
            handler.removeFilter(old)
        handler.addFilter(guard)
