"""In-memory record of every message the simulator accepted, plus how often each was sent.

Plain dicts: one event loop owns it, and creates must stay cheap at thousands per second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from .message import Message


class MessageStore:
    def __init__(self) -> None:
        self._messages: dict[str, Message] = {}
        self._creates: Counter[tuple[str, str]] = Counter()

    def add(self, message: Message) -> None:
        self._messages[message.sid] = message
        self._creates[(message.to, message.body)] += 1

    def get(self, sid: str) -> Message | None:
        return self._messages.get(sid)

    def newest_first(self, account_sid: str, *, to: str | None = None, from_: str | None = None) -> list[Message]:
        """An account's messages, most recent first as Twilio lists them, optionally filtered by To / From."""
        return [
            message
            for message in reversed(self._messages.values())
            if message.account_sid == account_sid
            and (to is None or message.to == to)
            and (from_ is None or message.from_ == from_)
        ]

    def creates_of(self, message: Message) -> int:
        """How many messages were created with this message's To and Body."""
        return self._creates[(message.to, message.body)]

    def clear(self) -> None:
        self._messages.clear()
        self._creates.clear()

    def __iter__(self) -> Iterator[Message]:
        return iter(self._messages.values())

    def __len__(self) -> int:
        return len(self._messages)
