"""Priced documents (the rate card, the price list) as versioned rows that every process of a deployment reads.

A version is immutable and numbered from 1 per kind; the newest one prices everything from the moment a process
sees it. `creditq db upgrade` loads the deployment's files (`load_file`): a new version only when a file's content
differs from the version that file last loaded, so running it twice, or from two hosts at once, adds nothing, and a
version an operator published since (`publish`) stays the newest until the file itself changes.

Each process keeps what it read in a `NewestVersions` (one per engine): it asks the database for the newest version
number at most every CHECK_SECONDS, and reads and parses a document only when that number moved. A version published
anywhere is used everywhere within that time, at the cost of one indexed lookup per kind per process every
CHECK_SECONDS, never one per message. A check cannot miss a change the way a lost Redis message could.
"""

import hashlib
import json
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from shared.config import ConfigError
from shared.db import insert_on_conflict, read_only_session
from shared.models import PriceVersion
from shared.text_files import read_text

CHECK_SECONDS = 2.0
MAX_FILE_BYTES = 1 << 20  # a rate card or price list file: a few kilobytes in truth
UPGRADE, PUBLISH = "upgrade", "publish"
_INSERT_ATTEMPTS = 5  # each lost race means another process added a version meanwhile
_views: "weakref.WeakKeyDictionary[Engine, NewestVersions]" = weakref.WeakKeyDictionary()
_views_lock = threading.Lock()


@dataclass(frozen=True)
class Kind:
    """One kind of priced document: its name in the table, how its JSON becomes an object (raising a one-line
    shared.config.ConfigError naming `source` for a bad document), and the file `creditq db upgrade` loads for it."""

    name: str
    parse: Callable[[Any, str, int | None], Any]  # (decoded JSON, source, version or None) -> the priced object
    file: Callable[[], str]  # the path db upgrade loads


def _canonical(document: Any) -> str:
    """The stored text: key order and spacing do not make a new version."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def publish(session: Session, kind: Kind, document: Any, *, origin: str = PUBLISH, now: datetime) -> tuple[int, bool]:
    """Add `document` (decoded JSON, already parsed by the caller) as the newest version of `kind`; (version, added).

    Nothing is added when it equals the newest version, or, for origin UPGRADE, the version db upgrade loaded last
    (not a version an operator published since, which every deploy would otherwise undo). Safe against another
    process adding one at the same moment: an insert of a taken number is skipped and the newest read again.
    """
    text = _canonical(document)
    digest = hashlib.sha256(text.encode()).hexdigest()
    for _ in range(_INSERT_ATTEMPTS):
        current = _newest(session, kind, origin=None)
        compared = _newest(session, kind, origin=UPGRADE) if origin == UPGRADE else current
        if compared is not None and compared.digest == digest:
            return compared.version, False
        version = 1 if current is None else current.version + 1
        if _insert(session, kind, version, text, digest, origin, now):
            return version, True
    raise RuntimeError(f"{kind.name}: other processes kept adding versions; try again")


def load_file(session: Session, kind: Kind, *, now: datetime) -> tuple[int, bool]:
    """What `creditq db upgrade` does for one kind: its file becomes a new version when its content changed."""
    path = kind.file()
    document = read_json(path, kind)
    kind.parse(document, path, None)
    return publish(session, kind, document, origin=UPGRADE, now=now)


def versions(session: Session, kind: Kind) -> list[PriceVersion]:
    """Every version of `kind`, newest first."""
    return list(session.scalars(select(PriceVersion).where(PriceVersion.kind == kind.name)
                                .order_by(PriceVersion.version.desc())))


def read_json(path: str, kind: Kind) -> Any:
    """A file's JSON, or a one-line ConfigError naming the file."""
    label = kind.name.replace("_", " ")
    text = read_text(path, most=MAX_FILE_BYTES, label=label)
    try:
        return json.loads(text)
    except ValueError as error:
        raise ConfigError(f"{label} {path}: is not valid JSON: {error}") from None


def current(bind: Engine | Session, kind: Kind) -> Any:
    """The newest version of `kind` as this process sees it through `bind`'s engine (see NewestVersions); a check
    that falls due reads through `bind` when it is a Session."""
    return view_of(bind).current(kind, bind if isinstance(bind, Session) else None)


def view_of(bind: Engine | Session) -> "NewestVersions":
    """The process's one view per engine: two Database objects on one server (two apps in a test) see apart."""
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    view = _views.get(engine)
    if view is None:
        with _views_lock:
            view = _views.get(engine)
            if view is None:
                view = _views[engine] = NewestVersions(engine)
    return view


def _newest(session: Session, kind: Kind, *, origin: str | None) -> PriceVersion | None:
    query = select(PriceVersion).where(PriceVersion.kind == kind.name)
    if origin is not None:
        query = query.where(PriceVersion.origin == origin)
    return session.scalars(query.order_by(PriceVersion.version.desc()).limit(1)
                           .execution_options(populate_existing=True)).first()


def _insert(session: Session, kind: Kind, version: int, text: str, digest: str, origin: str, now: datetime) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on (kind, version): False when another process took the number."""
    statement = insert_on_conflict(session, PriceVersion.__table__).values(
        kind=kind.name, version=version, document=text, digest=digest, origin=origin, published_at=now,
    ).on_conflict_do_nothing()
    return session.execute(statement.returning(PriceVersion.__table__.c.version)).first() is not None


class NewestVersions:
    """This process's view of the newest version of each kind, re-checked at most every `check_seconds`.

    Safe to share between threads: readers take no lock while the view is fresh; one thread re-checks. It checks
    through the caller's session when given one: a check that took a second connection, under the lock, could wait
    for the pool forever while every connection is held by a thread waiting for that lock. A database where no
    version was ever loaded (before `creditq db upgrade` ran) prices with the kind's file, version None.
    """

    def __init__(self, engine: Engine, *, check_seconds: float = CHECK_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._engine = weakref.ref(engine)  # the views map engines to views weakly: a view must not keep its engine
        self._check_seconds, self._clock = check_seconds, clock
        self._seen: dict[str, tuple[int | None, Any, float]] = {}  # kind -> (version, object, next check)
        self._lock = threading.Lock()

    def current(self, kind: Kind, session: Session | None = None) -> Any:
        seen = self._seen.get(kind.name)
        if seen is not None and self._clock() < seen[2]:
            return seen[1]
        with self._lock:
            seen = self._seen.get(kind.name)
            if seen is None or self._clock() >= seen[2]:
                with read_only_session(partial(Session, self._engine())) if session is None \
                        else nullcontext(session) as reader:
                    seen = self._seen[kind.name] = self._refresh(reader, kind, seen)
            return seen[1]

    def _refresh(self, session: Session, kind: Kind,
                 seen: tuple[int | None, Any, float] | None) -> tuple[int | None, Any, float]:
        version = session.scalar(select(func.max(PriceVersion.version)).where(PriceVersion.kind == kind.name))
        if seen is not None and seen[0] == version:
            priced = seen[1]
        elif version is None:
            path = kind.file()
            priced = kind.parse(read_json(path, kind), path, None)
        else:
            document = session.scalar(select(PriceVersion.document).where(PriceVersion.kind == kind.name,
                                                                         PriceVersion.version == version))
            priced = kind.parse(json.loads(document), f"version {version}", version)
        return version, priced, self._clock() + self._check_seconds
