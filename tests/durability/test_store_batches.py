"""The SQLite store's batches: a delivery acknowledged (or a message released) before its batch
goes to the writer is cancelled, never written; everything else reaches the disk as reported.

A real store in a temporary directory, its real writer thread, and a second SQLite connection
reading what was committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from midge.broker.model import Message
from midge.store.sqlite import SqliteStore


def message(n: int) -> Message:
    return Message(f"t/{n}", b"payload %d" % n, 1, False, {}, None, "pub")


def rows(data: Path) -> tuple[int, int]:
    """(messages, deliveries) committed in ``data``."""
    db = sqlite3.connect(data / "midge.db")
    try:
        m = db.execute("SELECT count(*) FROM messages").fetchone()[0]
        d = db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        return int(m), int(d)
    finally:
        db.close()


def run(tmp_path: Path, *batches: Callable[[SqliteStore], None]) -> list[tuple[int, int]]:
    """Report each batch's changes, wait for its commit, and read the rows after each (and
    the store connection's count of changed rows into ``CHANGES``)."""
    CHANGES.clear()
    store = SqliteStore(str(tmp_path))
    store.open()
    store.load(time.time())
    seen: list[tuple[int, int]] = []

    async def go() -> None:
        store.start(asyncio.get_running_loop())
        for batch in batches:
            batch(store)
            done = asyncio.Event()
            store.commit(done.set)
            await asyncio.wait_for(done.wait(), 10)
            seen.append(rows(tmp_path))
            CHANGES.append(changes(store))

    try:
        asyncio.run(go())
    finally:
        store.close()
    return seen


CHANGES: list[int] = []


def changes(store: SqliteStore) -> int:
    """Rows the store's connection has inserted, updated or deleted since it was opened."""
    assert store._db is not None
    return store._db.total_changes


def session(store: SqliteStore) -> None:
    store.session_saved("c", 4, 100)


def test_acknowledged_within_the_batch_is_never_written(tmp_path: Path) -> None:
    m = message(1)

    def batch(store: SqliteStore) -> None:
        store.delivery_added("c", (m, 1, False, ()), 7)
        store.delivery_done("c", 7, m)

    assert run(tmp_path, session, batch) == [(0, 0), (0, 0)]
    assert CHANGES[1] == CHANGES[0]  # not one row written for it


def test_qos2_released_and_completed_within_the_batch(tmp_path: Path) -> None:
    m = message(1)

    def batch(store: SqliteStore) -> None:
        store.delivery_added("c", (m, 2, False, ()), 7)
        store.delivery_released("c", 7)
        store.delivery_done("c", 7, m)

    assert run(tmp_path, session, batch) == [(0, 0), (0, 0)]
    assert CHANGES[1] == CHANGES[0]


def test_what_is_not_cancelled_is_written(tmp_path: Path) -> None:
    """The counterpart: a delivery still in flight at the commit is written."""
    m = message(1)

    def batch(store: SqliteStore) -> None:
        store.delivery_added("c", (m, 1, False, ()), 7)

    assert run(tmp_path, session, batch) == [(0, 0), (1, 1)]
    assert CHANGES[1] == CHANGES[0] + 2  # the message and the delivery


def test_acknowledged_in_a_later_batch_is_deleted(tmp_path: Path) -> None:
    m = message(1)

    def first(store: SqliteStore) -> None:
        store.session_saved("c", 4, 100)
        store.delivery_added("c", (m, 1, False, ()), 7)

    def second(store: SqliteStore) -> None:
        store.delivery_done("c", 7, m)

    assert run(tmp_path, first, second) == [(1, 1), (0, 0)]


def test_a_message_for_two_sessions_stays_while_one_still_holds_it(tmp_path: Path) -> None:
    m = message(1)

    def batch(store: SqliteStore) -> None:
        store.session_saved("a", 4, 100)
        store.session_saved("b", 4, 100)
        store.delivery_added("a", (m, 1, False, ()), 1)
        store.delivery_added("b", (m, 1, False, ()), 0)  # b is offline: queued
        store.delivery_done("a", 1, m)

    assert run(tmp_path, batch) == [(1, 1)]


def test_queued_then_sent_then_acknowledged_within_the_batch(tmp_path: Path) -> None:
    """Queued deliveries are addressed by queue position: written, then deleted, as reported."""
    m1, m2 = message(1), message(2)

    def batch(store: SqliteStore) -> None:
        store.session_saved("c", 4, 100)
        store.delivery_added("c", (m1, 1, False, ()), 0)
        store.delivery_added("c", (m2, 1, False, ()), 0)
        store.delivery_sent("c", 5)
        store.delivery_done("c", 5, m1)

    assert run(tmp_path, batch) == [(1, 1)]


def test_a_session_deleted_in_the_batch_forgets_its_new_deliveries(tmp_path: Path) -> None:
    """The same client id and packet id, reused by a new session in the same batch, for a
    delivery that was queued: its acknowledgement deletes its row, not a cancelled one."""
    m1, m2 = message(1), message(2)

    def batch(store: SqliteStore) -> None:
        store.session_saved("c", 4, 100)
        store.delivery_added("c", (m1, 1, False, ()), 3)
        store.session_deleted("c", [m1])
        store.session_saved("c", 4, 100)
        store.delivery_added("c", (m2, 1, False, ()), 0)
        store.delivery_sent("c", 3)

    def later(store: SqliteStore) -> None:
        store.delivery_done("c", 3, m2)

    assert run(tmp_path, batch, later) == [(1, 1), (0, 0)]


def test_many_rows_in_one_batch_keep_their_order(tmp_path: Path) -> None:
    """A batch of 200 queued messages (multi-row inserts of 64, 64, 64, 8) comes back whole and
    in queue order."""
    messages = [message(n) for n in range(200)]

    def batch(store: SqliteStore) -> None:
        store.session_saved("c", 4, 100)
        for m in messages:
            store.delivery_added("c", (m, 1, False, (7,)), 0)

    assert run(tmp_path, batch) == [(200, 200)]
    store = SqliteStore(str(tmp_path))
    store.open()
    try:
        (restored,) = store.load(time.time()).sessions
    finally:
        store.close()
    assert [(d[0].topic, d[0].payload, d[3]) for d in restored.queue] == [
        (m.topic, m.payload, (7,)) for m in messages
    ]


def test_a_database_without_session_users_is_upgraded(tmp_path: Path) -> None:
    """Sessions kept by an earlier midge (no username column) load, and gain the column."""
    db = sqlite3.connect(tmp_path / "midge.db")
    db.executescript(
        "PRAGMA journal_mode = WAL;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE sessions (client_id TEXT PRIMARY KEY, version INTEGER NOT NULL,"
        " expiry INTEGER NOT NULL, disconnected_at REAL);"
        "INSERT INTO sessions VALUES ('old', 4, 3600, 1.0e12);"
    )
    db.close()
    store = SqliteStore(str(tmp_path))
    store.open()
    try:
        (session,) = store.load(time.time()).sessions
    finally:
        store.close()
    assert (session.client_id, session.username) == ("old", None)
    db = sqlite3.connect(tmp_path / "midge.db")
    try:
        assert "username" in {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
    finally:
        db.close()
