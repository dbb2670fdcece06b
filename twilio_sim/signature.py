"""``X-Twilio-Signature``: how Twilio signs the webhooks it sends.

HMAC-SHA1 keyed with the auth token over the full URL followed by every POST parameter
name and value, sorted by name, base64-encoded. Written out here rather than borrowed from
the twilio package, so tests checking with its RequestValidator check two implementations.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
