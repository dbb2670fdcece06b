"""The stand-in's state in one SQLite file: objects, idempotent answers, events to deliver.

Each API request is one transaction: the objects it makes and the answer kept for its Idempotency-Key
commit together, so a stand-in killed mid-request has done all of it or none of it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, body TEXT NOT NULL, card TEXT, idempotency_key TEXT,
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS objects_kind ON objects (kind);
CREATE TABLE IF NOT EXISTS idempotent_answers (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, body TEXT NOT NULL,
    due REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0);
"""


class Store:
    def __init__(self, path: str | Path):
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def put(self, obj: dict, *, card: str | None = None, idempotency_key: str | None = None) -> dict:
        """Insert or replace an object (its test card and the key that made it are kept beside it)."""
        self._db.execute(
            "INSERT INTO objects (id, kind, body, card, idempotency_key, created) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            (obj["id"], obj["object"], json.dumps(obj), card, idempotency_key, time.time()))
        return obj

    def get(self, object_id: str, kind: str | None = None) -> dict | None:
        row = self._db.execute("SELECT body, kind FROM objects WHERE id = ?", (object_id,)).fetchone()
        if row is None or (kind is not None and row[1] != kind):
            return None
        return json.loads(row[0])

    def card_of(self, object_id: str) -> str | None:
        row = self._db.execute("SELECT card FROM objects WHERE id = ?", (object_id,)).fetchone()
        return row[0] if row else None

    def all(self, kind: str) -> list[dict]:
        return [json.loads(body) for (body,) in
                self._db.execute("SELECT body FROM objects WHERE kind = ? ORDER BY created", (kind,))]

    def created_by_key(self, kind: str) -> list[dict]:
        """Every object of a kind with the Idempotency-Key of the request that made it: the charge log."""
        return [{"id": object_id, "idempotency_key": key, "object": json.loads(body)} for object_id, key, body in
                self._db.execute("SELECT id, idempotency_key, body FROM objects WHERE kind = ? ORDER BY created",
                                 (kind,))]

    def answer_for(self, key: str) -> tuple[str, int, dict] | None:
        row = self._db.execute("SELECT fingerprint, status, body FROM idempotent_answers WHERE key = ?",
                               (key,)).fetchone()
        return (row[0], row[1], json.loads(row[2])) if row else None

    def keep_answer(self, key: str, fingerprint: str, status: int, body: dict) -> None:
        self._db.execute("INSERT INTO idempotent_answers (key, fingerprint, status, body) VALUES (?, ?, ?, ?)",
                         (key, fingerprint, status, json.dumps(body)))

    def add_event(self, event: dict, due: float) -> None:
        self._db.execute("INSERT INTO events (id, body, due) VALUES (?, ?, ?)", (event["id"], json.dumps(event), due))

    def due_events(self, now: float, *, newest_first: bool) -> list[tuple[int, dict, int]]:
        order = "DESC" if newest_first else "ASC"
        return [(seq, json.loads(body), attempts) for seq, body, attempts in self._db.execute(
            f"SELECT seq, body, attempts FROM events WHERE delivered = 0 AND due <= ? ORDER BY seq {order}", (now,))]

    def mark_delivered(self, seq: int) -> None:
        self._db.execute("UPDATE events SET delivered = 1 WHERE seq = ?", (seq,))

    def retry_later(self, seq: int, due: float) -> None:
        self._db.execute("UPDATE events SET attempts = attempts + 1, due = ? WHERE seq = ?", (due, seq))

    def events(self) -> list[dict]:
        return [{**json.loads(body), "_delivered": bool(delivered), "_attempts": attempts}
                for body, delivered, attempts in
                self._db.execute("SELECT body, delivered, attempts FROM events ORDER BY seq")]

    def close(self) -> None:
        self._db.close()
