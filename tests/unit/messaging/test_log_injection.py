"""What an unauthenticated caller sends to a webhook is logged quoted: it cannot forge a log line."""

import logging
from datetime import UTC, datetime

from shared.config import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN
from shared.errors import CallbackRejected
from shared.messaging.statuses import record_callback
from shared.twilio.signatures import Credentials, SignedForm

FORGED_LINE = "SMx\n2026-11-28 10:16:06,139 CRITICAL shared.ledger: FORGED LINE"


def test_a_newline_in_an_unsigned_status_callback_stays_inside_its_log_line(database, caplog):
    # given a status callback whose MessageSid carries a line break and a fake log line, badly signed
    form = SignedForm(url="http://127.0.0.1/webhooks/twilio/status",
                      params={"MessageSid": FORGED_LINE, "AccountSid": SIMULATOR_ACCOUNT_SID}, signature="bad")

    # when it is refused
    with caplog.at_level(logging.INFO), database.unit_of_work() as session:
        try:
            record_callback(session, sid=FORGED_LINE, status="delivered", form=form,
                            deployment=Credentials(SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN),
                            now=datetime.now(UTC))
        except CallbackRejected:
            pass

    # then no line of the log starts with the forged text
    lines = caplog.text.splitlines()
    assert lines and not any(line.startswith("2026-11-28 10:16:06,139 CRITICAL") for line in lines)
