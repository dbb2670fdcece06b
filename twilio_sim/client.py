"""The official twilio client, pointed at the simulator instead of api.twilio.com."""

from __future__ import annotations

from twilio.http import HttpClient
from twilio.rest import Client


def simulated_client(
    base_url: str, account_sid: str, auth_token: str, http_client: HttpClient | None = None
) -> Client:
    """A ``twilio.rest.Client`` whose Api domain (Messages, Calls, ...) lives at ``base_url``.

    Only the domain's base URL changes, so paths, auth, form encoding, paging and error
    parsing are all the twilio package's own. Edge/region are cleared because they would
    rewrite the simulator's host name into ``api.<edge>.<region>.twilio.com``.
    """
    client = Client(account_sid, auth_token, http_client=http_client)
    client.edge = client.region = None
    client.api.base_url = base_url.rstrip("/")
    return client
