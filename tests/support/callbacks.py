"""A status callback as Twilio sends it, signed with the sending account's token, through the webhook's domain step."""

from datetime import UTC, datetime

from shared.messaging.statuses import StatusChange, ToConfirm, record_callback
from shared.twilio.signatures import Credentials, SignedForm
from twilio_sim.signature import twilio_signature

STATUS_URL = "https://creditq.example/webhooks/twilio/status"


def twilio_reports(database, credentials: Credentials, sid: str, status: str, *, deployment: Credentials | None = None,
                   **report) -> StatusChange | ToConfirm | None:
    """Record `status` for `sid` as a callback signed by `credentials`, the deployment's unless `deployment` says."""
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": credentials.account_sid}
    form = SignedForm(STATUS_URL, params, twilio_signature(credentials.auth_token, STATUS_URL, params))
    with database.unit_of_work() as session:
        return record_callback(session, form, deployment=deployment or credentials, sid=sid, status=status,
                               now=datetime.now(UTC), **report)
