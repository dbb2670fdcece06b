"""What a failed Twilio request means for the caller: retry later, give up on the message, or stop the account.

The gateway raises only these, so workers never inspect HTTP statuses or Twilio codes themselves.
"""

BAD_CREDENTIALS = 20003
TOO_MANY_REQUESTS = 20429
NOT_FOUND = 20404
UNSUBSCRIBED_RECIPIENT = 21610
# Codes that blame the sender, not the recipient: every message from that number will fail the same way.
SENDER_ERROR_CODES = frozenset({21212, 21606, 21659, 21603})
# 4xx answers that only mean "not now": the From number's queue at Twilio is full.
TRANSIENT_CODES = frozenset({TOO_MANY_REQUESTS, 21611})


class TwilioError(Exception):
    """Base of every classified Twilio failure."""


class TransientTwilioError(TwilioError):
    """Twilio or the network failed, or asked us to slow down; the same request may succeed later.

    `retry_after` is Twilio's Retry-After in seconds when it sent one (429), else None: back off.
    """

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class OutcomeUnknown(TransientTwilioError):
    """A create was sent but no answer came back (read timeout, connection dropped mid-request).

    Twilio may have accepted the message: sending it again could text the recipient twice. Leave the
    message `sending` without a sid for the callback or reconciliation instead of retrying the POST.
    """


class PermanentTwilioError(TwilioError):
    """Twilio refused this request for good (21211 invalid To, 21610 unsubscribed, 21614, 21408, ...).

    Never retried. 21610 means the recipient opted out at the carrier: callers record the opt-out.
    """

    def __init__(self, code: int, message: str, *, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    @property
    def recipient_opted_out(self) -> bool:
        return self.code == UNSUBSCRIBED_RECIPIENT

    @property
    def blames_sender(self) -> bool:
        """True when the From number itself is unusable, so its other messages will fail too."""
        return self.code in SENDER_ERROR_CODES


class CredentialsRejected(TwilioError):
    """Twilio does not accept the account sid / auth token (20003): stop that account's sending
    until the credentials are updated; retrying cannot help."""

    def __init__(self, account_sid: str, message: str):
        super().__init__(f"Twilio rejected the credentials of {account_sid}: {message}")
        self.account_sid = account_sid
