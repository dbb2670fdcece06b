"""The (sub)accounts the simulator knows: the main one of its config, and subaccounts added by tests.

Twilio authenticates each API request as one account (HTTP Basic: its sid and auth token), lets a
parent reach its subaccounts' resources, and signs each callback with the auth token of the account
that sent the message. Several accounts let tests play tenants that each bring their own credentials.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from .config import SimulatorConfig
from .message import API_VERSION

ACCOUNT_STATUSES = ("active", "suspended", "closed")
_SUBRESOURCES = {"messages": "Messages.json", "calls": "Calls.json",
                 "incoming_phone_numbers": "IncomingPhoneNumbers.json", "balance": "Balance.json"}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Account:
    sid: str
    auth_token: str
    friendly_name: str
    owner_account_sid: str  # a parent account owns itself
    status: str = "active"
    date_created: datetime = field(default_factory=_now)

    def as_resource(self) -> dict[str, Any]:
        """The JSON Twilio returns for an account fetch (the auth token included, as Twilio does)."""
        uri = f"/{API_VERSION}/Accounts/{self.sid}"
        return {
            "auth_token": self.auth_token,
            "date_created": format_datetime(self.date_created),
            "date_updated": format_datetime(self.date_created),
            "friendly_name": self.friendly_name,
            "owner_account_sid": self.owner_account_sid,
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {name: f"{uri}/{path}" for name, path in _SUBRESOURCES.items()},
            "type": "Full",
            "uri": f"{uri}.json",
        }


class AccountRegistry:
    """The main account follows the config (its sid and token can be changed at run time); subaccounts are kept."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._created = _now()
        self._subaccounts: dict[str, Account] = {}

    def main(self) -> Account:
        sid = self._config.account_sid
        return Account(sid, self._config.auth_token, "Simulated main account", sid, date_created=self._created)

    def get(self, sid: str) -> Account | None:
        return self.main() if sid == self._config.account_sid else self._subaccounts.get(sid)

    def authenticate(self, sid: str, auth_token: str) -> Account | None:
        account = self.get(sid)
        if account is None or not hmac.compare_digest(account.auth_token.encode(), auth_token.encode()):
            return None
        return account

    def may_reach(self, account: Account, sid: str) -> bool:
        """An account reaches its own resources, and a parent those of its subaccounts."""
        target = self.get(sid)
        return target is not None and account.sid in (target.sid, target.owner_account_sid)

    def add(self, *, friendly_name: str | None = None, sid: str | None = None, auth_token: str | None = None,
            status: str = "active") -> Account:
        sid = sid or "AC" + os.urandom(16).hex()
        if self.get(sid) is not None:
            raise ValueError(f"account {sid} exists")
        account = Account(sid, auth_token or os.urandom(16).hex(), friendly_name or f"Subaccount {sid[-6:]}",
                          self._config.account_sid, status)
        self._subaccounts[sid] = account
        return account

    def regenerate_token(self, sid: str) -> Account | None:
        """A new auth token for a subaccount, as Twilio's console does: the old one is refused (20003) from now on."""
        account = self._subaccounts.get(sid)
        if account is not None:
            account.auth_token = os.urandom(16).hex()
        return account

    def clear(self) -> None:
        """Forget the subaccounts (a reset)."""
        self._subaccounts.clear()

    def __iter__(self) -> Iterator[Account]:
        yield self.main()
        yield from self._subaccounts.values()
