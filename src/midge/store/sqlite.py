"""The embedded durable store: SQLite (stdlib ``sqlite3``) in WAL mode, with group commit.

The broker's loop never waits for the disk. Reports become SQL statements appended to a batch;
one writer thread runs each batch in one transaction and, once it is committed (and fsynced, with
``durability = "fsync"``: ``synchronous=FULL``), hands the batch's :meth:`commit` callbacks back to
the loop. A batch is handed over :data:`COMMIT_WINDOW` after its first change, or after the
previous batch was written, whichever is later: under load many PUBLISHes share one transaction
and one fsync (group commit), and a delivery acknowledged by an online subscriber within the
window cancels its own statements, so it never reaches the disk.

Messages are numbered here (``Message.store_id``) so statements can refer to them before they are
written, and counted: a message row is deleted with its last reference (queue or in-flight entry,
or the retained store). Deleted pages are reused, and an incremental vacuum runs now and then, so
the file does not grow without bound under churn.

The data directory holds ``midge.db`` (with its ``-wal`` and ``-shm``) and ``midge.lock``, held
with an exclusive ``flock`` while the broker runs (another database name, Mosquitto's
``persistence_file``, names its lock the same way: ``mosquitto.db``, ``mosquitto.lock``): a second
broker on the same directory stops at start. A database that cannot be opened, is locked, is
Mosquitto's own file, or fails its check stops the broker at start with a
:class:`~midge.store.base.StoreError` naming the file and the fix: it never starts empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from midge.broker.model import Message, SessionState, SubOptions
from midge.codec.decode import decode_properties
from midge.codec.encode import encode_properties
from midge.codec.packets import PacketType
from midge.codec.properties import WILL
from midge.store.base import StoredWill, StoreError, StoreState

if TYPE_CHECKING:
    from midge.broker.model import Delivery

log = logging.getLogger("midge.store")

#: How long a batch collects changes before it is written (seconds). Longer: less CPU and fewer
#: fsyncs per message, and acks later (docs/performance.md, "Durability", measures 5 ms).
COMMIT_WINDOW = 0.005
#: One batch in this many has its commit timed (the store commit latency of /metrics).
COMMIT_SAMPLE = 8
#: The latency histogram's upper bounds, in seconds.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Run ``PRAGMA incremental_vacuum`` after this many committed batches.
VACUUM_EVERY = 2000
#: Bytes the WAL file is truncated to after a checkpoint.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
SCHEMA_VERSION = 1
DB_NAME = "midge.db"  # midge.config.DEFAULT_DB_NAME
LOCK_NAME = "midge.lock"

SYNCHRONOUS = {"fsync": "FULL", "os": "NORMAL"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT PRIMARY KEY, version INTEGER NOT NULL, expiry INTEGER NOT NULL,
    disconnected_at REAL, username TEXT);
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id TEXT NOT NULL, topic_filter TEXT NOT NULL, qos INTEGER NOT NULL,
    no_local INTEGER NOT NULL, rap INTEGER NOT NULL, rh INTEGER NOT NULL, sub_id INTEGER,
    PRIMARY KEY (client_id, topic_filter)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
    retain INTEGER NOT NULL, props BLOB, expires_at REAL, origin TEXT);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL, message_id INTEGER NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, sub_ids TEXT, pid INTEGER NOT NULL,
    state INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries (client_id, state, seq);
DROP INDEX IF EXISTS deliveries_pid;
CREATE TABLE IF NOT EXISTS inbound (
    client_id TEXT NOT NULL, pid INTEGER NOT NULL, PRIMARY KEY (client_id, pid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retained (
    topic TEXT PRIMARY KEY, message_id INTEGER NOT NULL, source_username TEXT,
    source_port INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS wills (
    client_id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, props BLOB, origin TEXT,
    due_at REAL NOT NULL, source_username TEXT, source_port INTEGER);
"""

#: Columns added since schema version 1 was first written, (table, column, type): an older
#: database gets them when opened (NULL in existing rows), and keeps its schema version.
_ADDED_COLUMNS = (
    ("sessions", "username", "TEXT"),
    # check_retain_source: who published a retained message or a will (Message.source).
    ("retained", "source_username", "TEXT"),
    ("retained", "source_port", "INTEGER"),
    ("wills", "source_username", "TEXT"),
    ("wills", "source_port", "INTEGER"),
)

# Delivery states.
QUEUED, SENT, RELEASED = 0, 1, 2

_SESSION_SAVE = (
    "INSERT INTO sessions (client_id, version, expiry, disconnected_at, username) "
    "VALUES (?, ?, ?, NULL, ?) "
    "ON CONFLICT (client_id) DO UPDATE SET version = excluded.version, "
    "expiry = excluded.expiry, disconnected_at = NULL, username = excluded.username"
)
_SESSION_DETACH = "UPDATE sessions SET expiry = ?, disconnected_at = ? WHERE client_id = ?"
_SUB_SAVE = (
    "INSERT OR REPLACE INTO subscriptions (client_id, topic_filter, qos, no_local, rap, rh, "
    "sub_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SUB_DELETE = "DELETE FROM subscriptions WHERE client_id = ? AND topic_filter = ?"
_MSG_INSERT = (
    "INSERT INTO messages (id, topic, payload, qos, retain, props, expires_at, origin) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_MSG_DELETE = "DELETE FROM messages WHERE id = ?"
_DELIVERY_ADD = (
    "INSERT INTO deliveries (client_id, message_id, qos, retain, sub_ids, pid, state) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_HEAD = "(SELECT min(seq) FROM deliveries WHERE client_id = ? AND state = 0)"
_DELIVERY_SENT = f"UPDATE deliveries SET pid = ?, state = 1 WHERE seq = {_HEAD}"
_DELIVERY_REMOVE = f"DELETE FROM deliveries WHERE seq = {_HEAD}"
_DELIVERY_EXPIRED = "DELETE FROM deliveries WHERE client_id = ? AND state = 0 AND message_id = ?"
_DELIVERY_RELEASED = "UPDATE deliveries SET state = 2 WHERE client_id = ? AND pid = ? AND state > 0"
_DELIVERY_DONE = "DELETE FROM deliveries WHERE client_id = ? AND pid = ? AND state > 0"
_INBOUND_ADD = "INSERT OR IGNORE INTO inbound (client_id, pid) VALUES (?, ?)"
_INBOUND_DELETE = "DELETE FROM inbound WHERE client_id = ? AND pid = ?"
_RETAINED_SET = (
    "INSERT OR REPLACE INTO retained (topic, message_id, source_username, source_port) "
    "VALUES (?, ?, ?, ?)"
)
_RETAINED_DELETE = "DELETE FROM retained WHERE topic = ?"
_WILL_SAVE = (
    "INSERT OR REPLACE INTO wills (client_id, topic, payload, qos, retain, props, origin, due_at, "
    "source_username, source_port) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_WILL_DELETE = "DELETE FROM wills WHERE client_id = ?"
_SESSION_DELETES = tuple(
    f"DELETE FROM {table} WHERE client_id = ?"
    for table in ("deliveries", "subscriptions", "inbound", "sessions")
)

Op = tuple[str, tuple[Any, ...]]
#: A batch: statements in order; None where a statement was cancelled before it was written.
Ops = list[Op | None]


def _props_blob(props: dict[int, Any]) -> bytes | None:
    return encode_properties(props) if props else None


def _props_from(blob: bytes | None, where: int) -> dict[int, Any]:
    if not blob:
        return {}
    props, _ = decode_properties(blob, 0, len(blob), where)
    return props


#: Rows per multi-row INSERT (at most 8 columns: 512 parameters, well under SQLite's limit).
_CHUNK = 64
#: The two inserts that run once per stored message, as "INSERT ... VALUES " and their width.
_MULTI = {
    _MSG_INSERT: (_MSG_INSERT[: _MSG_INSERT.index("VALUES") + 7], 8),
    _DELIVERY_ADD: (_DELIVERY_ADD[: _DELIVERY_ADD.index("VALUES") + 7], 7),
}
_multi_sql: dict[tuple[str, int], str] = {}


def _run(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Run ``sql`` for each of ``rows``, in order.

    The per-message inserts go as multi-row ``INSERT ... VALUES (...), (...)`` in chunks of
    64, 32, ... 1 rows (few distinct statements, all in sqlite3's statement cache): the sqlite3
    module releases and re-takes the GIL around every statement step, and with the broker's
    loop busy on the other thread each of those hand-offs costs a context switch. One step per
    chunk instead of one per row: measured, 10.7 -> 10.0 us of broker CPU per queued message.
    """
    multi = _MULTI.get(sql)
    if multi is None or len(rows) == 1:
        db.executemany(sql, rows)
        return
    head, width = multi
    i = 0
    n = len(rows)
    size = _CHUNK
    while i < n:
        while size > n - i:
            size //= 2
        key = (sql, size)
        text = _multi_sql.get(key)
        if text is None:
            group = "(" + ", ".join("?" * width) + ")"
            text = _multi_sql[key] = head + ", ".join([group] * size)
        db.execute(text, [value for row in rows[i : i + size] for value in row])
        i += size


def _write(db: sqlite3.Connection, ops: Ops) -> None:
    """One batch in one transaction. New messages go first, all together (their ids are never
    reused, and nothing refers to a message by constraint, so the order of those inserts against
    the rest does not matter); the rest keep their order, with runs of the same statement (a
    message queued for many sessions, say) run together (:func:`_run`)."""
    live = [op for op in ops if op is not None]
    if not live:
        return  # everything in it was cancelled: nothing to write
    db.execute("BEGIN")
    inserts = [params for sql, params in live if sql is _MSG_INSERT]
    if inserts:
        _run(db, _MSG_INSERT, inserts)
    run_sql: str | None = None
    run: list[tuple[Any, ...]] = []
    for sql, params in live:
        if sql is _MSG_INSERT:
            continue
        if sql is not run_sql:
            if run_sql is not None:
                _run(db, run_sql, run)
            run_sql = sql
            run = [params]
        else:
            run.append(params)
    if run_sql is not None:
        _run(db, run_sql, run)
    db.execute("COMMIT")


#: The first bytes of a database Mosquitto wrote (its ``mosquitto.db``).
MOSQUITTO_MAGIC = b"\x00\xb5\x00mosquitto db"


def _check_not_mosquitto(path: str) -> None:
    """Refuse Mosquitto's own database (a mosquitto.conf with ``persistence true`` names
    ``mosquitto.db`` by default) before SQLite gets to touch it; any other file that is not
    SQLite is reported by the checks that follow."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MOSQUITTO_MAGIC))
    except OSError:
        return  # missing (a new database) or unreadable: the checks that follow say which
    if head == MOSQUITTO_MAGIC:
        raise StoreError(
            f"{path} is Mosquitto's database, not midge's: midge keeps its state in its own "
            "SQLite format and cannot read it; move it away (midge then starts empty) or set "
            "persistence_file (or persistence_location) to another name"
        )


class SqliteStore:
    """The SQLite store for ``data_dir``; ``durability`` is ``"fsync"`` or ``"os"``.

    Open it with :meth:`open` (lock, open, check, create the schema), then :meth:`load`, then
    :meth:`start` on the broker's loop; :meth:`close` at shutdown.
    """

    durable = True

    def __init__(self, data_dir: str, durability: str = "fsync", db_name: str = DB_NAME) -> None:
        if durability not in SYNCHRONOUS:
            raise ValueError(f"durability {durability!r}: expected 'fsync' or 'os'")
        self.durability = durability
        self.path = os.path.join(data_dir, db_name)
        # The directory that holds the file (persistence_file may name a subdirectory).
        self.data_dir = os.path.dirname(self.path) or "."
        stem, ext = os.path.splitext(self.path)
        self.lock_path = stem + ".lock" if ext != ".lock" else self.path + ".lock"
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The batch being filled on the loop: statements and the callbacks waiting for them.
        self._ops: Ops = []
        #: While their statements are still in that batch: the insert of each new message (by
        #: id), and the statements of each delivery sent at once (by client id and packet id).
        #: A delivery acknowledged, or a message released, before the batch goes to the writer
        #: cancels them instead of adding a delete: an online subscriber's acks usually arrive
        #: within the commit window, and then its messages never touch the disk.
        self._new_messages: dict[int, int] = {}
        self._new_deliveries: dict[tuple[str, int], list[int]] = {}
        self._callbacks: list[Callable[[], None]] = []
        self._scheduled = False
        self._writing = False  # a batch is with the writer thread
        self._queue: queue.SimpleQueue[tuple[Ops, list[Callable[[], None]]] | None] = (
            queue.SimpleQueue()
        )
        self._writer_thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._batches = 0
        #: The commit latency, sampled (one batch in COMMIT_SAMPLE is timed, on the writer
        #: thread): counts per upper bound of COMMIT_BUCKETS (the last: +Inf), their sum in
        #: seconds and their number. Read by /metrics (midge.observe.metrics) at scrape time.
        self.commit_buckets: list[int] = [0] * (len(COMMIT_BUCKETS) + 1)
        self.commit_seconds = 0.0
        self.commit_samples = 0
        #: message id -> references (queue/in-flight entries and the retained store).
        self._refs: dict[int, int] = {}
        self._next_id = 1
        #: topic -> the retained message's id, to release the one a new retained message replaces.
        self._retained: dict[str, Message] = {}

    # -- opening -----------------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory if missing, take the lock, open and check the database."""
        try:
            os.makedirs(self.data_dir, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create data directory {self.data_dir}: {exc.strerror or exc}; "
                "create it, make it writable, or set data_dir (persistence_location)"
            ) from None
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot open lock file {self.lock_path}: {exc.strerror or exc}; "
                "make the data directory writable by the broker"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 32, 0).decode("ascii").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise StoreError(
                f"data directory {self.data_dir} is in use by another broker{who}: "
                f"{self.lock_path} is locked; stop that broker or give this one another data_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock_fd = fd
        try:
            self._db = self._connect()
        except BaseException:
            self._unlock()
            raise

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        fix = (
            f"move {path} (and its -wal and -shm files) away to start with an empty store, "
            "or restore it from a backup"
        )
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(
                f"cannot open database {path}: permission denied; "
                "give the broker read and write access to it"
            )
        _check_not_mosquitto(path)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}; {fix}") from None
        try:
            db.execute("PRAGMA busy_timeout = 0")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(
                    f"cannot put database {path} in WAL mode (got {mode}); "
                    "is it on a file system without shared memory, or used by another program?"
                )
            check = db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                detail = "; ".join(str(row[0]) for row in check[:3])
                raise StoreError(f"database {path} is corrupt ({detail}); {fix}")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if not tables:
                # A new file: incremental auto-vacuum must be chosen before the first table.
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.executescript(_SCHEMA)
            for table, column, kind in _ADDED_COLUMNS:
                columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    # Written by a midge before this column existed (same schema version).
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"database {path} has schema version {row[0]}, this midge reads "
                    f"{SCHEMA_VERSION}; run the midge version that wrote it, or {fix}"
                )
            db.execute(f"PRAGMA synchronous = {SYNCHRONOUS[self.durability]}")
            # The WAL is reset after each checkpoint; this caps the file it leaves behind.
            db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        except StoreError:
            db.close()
            raise
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(
                    f"database {path} is locked by another program ({exc}); stop it and retry"
                ) from None
            raise StoreError(f"cannot read database {path} ({exc}); {fix}") from None
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(f"database {path} is unreadable or corrupt ({exc}); {fix}") from None
        return db

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- loading -------------------------------------------------------------------------------

    def load(self, now: float) -> StoreState:
        """Read everything back; what expired by ``now`` (wall clock, from the broker's
        Scheduler), and orphans, are purged first."""
        db = self._db
        assert db is not None, "open() first"
        state = StoreState()
        try:
            db.execute("BEGIN")
            self._purge(db, now)
            messages: dict[int, Message] = {}
            for mid, topic, payload, qos, retain, props, expires_at, origin in db.execute(
                "SELECT id, topic, payload, qos, retain, props, expires_at, origin FROM messages"
            ):
                m = Message(
                    topic,
                    bytes(payload),
                    qos,
                    bool(retain),
                    _props_from(props, PacketType.PUBLISH),
                    expires_at,
                    origin,
                )
                m.store_id = mid
                messages[mid] = m
            self._next_id = max(messages, default=0) + 1
            refs = self._refs
            sessions: dict[str, SessionState] = {}
            for cid, version, expiry, disconnected_at, username in db.execute(
                "SELECT client_id, version, expiry, disconnected_at, username FROM sessions"
            ):
                sessions[cid] = SessionState(cid, version, expiry, disconnected_at, username)
            for cid, tf, qos, no_local, rap, rh, sub_id in db.execute(
                "SELECT client_id, topic_filter, qos, no_local, rap, rh, sub_id FROM subscriptions"
            ):
                s = sessions.get(cid)
                if s is not None:
                    s.subscriptions[tf] = SubOptions(qos, bool(no_local), bool(rap), rh, sub_id)
            for cid, mid, qos, retain, sub_ids, pid, st in db.execute(
                "SELECT client_id, message_id, qos, retain, sub_ids, pid, state FROM deliveries "
                "ORDER BY seq"
            ):
                s = sessions.get(cid)
                dm = messages.get(mid)
                if s is None or dm is None:
                    continue
                ids = tuple(int(i) for i in sub_ids.split(",")) if sub_ids else ()
                delivery: Delivery = (dm, qos, bool(retain), ids)
                if st == QUEUED:
                    s.queue.append(delivery)
                else:
                    s.inflight.append((pid, delivery, st == RELEASED))
                refs[mid] = refs.get(mid, 0) + 1
            for cid, pid in db.execute("SELECT client_id, pid FROM inbound"):
                s = sessions.get(cid)
                if s is not None:
                    s.awaiting_rel.append(pid)
            for topic, mid, source_username, source_port in db.execute(
                "SELECT topic, message_id, source_username, source_port FROM retained"
            ):
                rm = messages.get(mid)
                if rm is not None:
                    if source_port is not None:
                        rm.source = (source_username, source_port)
                    state.retained.append(rm)
                    self._retained[topic] = rm
                    refs[mid] = refs.get(mid, 0) + 1
            for cid, topic, payload, qos, retain, props, origin, due_at, su, sp in db.execute(
                "SELECT client_id, topic, payload, qos, retain, props, origin, due_at, "
                "source_username, source_port FROM wills"
            ):
                will = Message(
                    topic, bytes(payload), qos, bool(retain), _props_from(props, WILL), None, origin
                )
                if sp is not None:
                    will.source = (su, sp)
                state.wills.append(StoredWill(cid, will, due_at))
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise StoreError(
                f"cannot read database {self.path} ({exc}); move it (and its -wal and -shm "
                "files) away to start with an empty store, or restore it from a backup"
            ) from None
        state.sessions = list(sessions.values())
        log.info(
            "store %s: %d sessions, %d queued or in-flight messages, %d retained",
            self.path,
            len(state.sessions),
            sum(len(s.queue) + len(s.inflight) for s in state.sessions),
            len(state.retained),
        )
        return state

    @staticmethod
    def _purge(db: sqlite3.Connection, now: float) -> None:
        """Delete what expired while the broker was down (MQTT-3.1.2-23 v5, MQTT-3.3.2-5 v5).

        A session expires ``expiry`` seconds after its connection closed (0xFFFFFFFF: never); one
        still connected when the broker stopped counts from now. Queued (unsent) deliveries of
        expired messages go; in-flight ones stay, as onward delivery has begun (MQTT-4.3.3-7 v5).
        """
        db.execute(
            "DELETE FROM sessions WHERE expiry != 4294967295 AND disconnected_at IS NOT NULL "
            "AND disconnected_at + expiry <= ?",
            (now,),
        )
        for table in ("subscriptions", "deliveries", "inbound"):
            db.execute(
                f"DELETE FROM {table} WHERE client_id NOT IN (SELECT client_id FROM sessions)"
            )
        db.execute(
            "DELETE FROM deliveries WHERE state = 0 AND message_id IN "
            "(SELECT id FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?)",
            (now,),
        )
        db.execute(
            "DELETE FROM retained WHERE message_id IN "
            "(SELECT id FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?)",
            (now,),
        )
        db.execute(
            "DELETE FROM messages WHERE id NOT IN (SELECT message_id FROM deliveries) "
            "AND id NOT IN (SELECT message_id FROM retained)"
        )

    # -- the writer ------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the writer thread; callbacks run on ``loop``."""
        self._loop = loop
        self._writer_thread = threading.Thread(target=self._writer, name="midge-store", daemon=True)
        self._writer_thread.start()
        if self._ops or self._callbacks:
            self._schedule()

    def _writer(self) -> None:
        db = self._db
        assert db is not None
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            ops, callbacks = batch
            try:
                if ops:
                    if self._batches % COMMIT_SAMPLE == 0:
                        started = time.perf_counter()
                        _write(db, ops)
                        self._sampled(time.perf_counter() - started)
                    else:
                        _write(db, ops)
                    self._batches += 1
                    if self._batches % VACUUM_EVERY == 0:
                        db.execute("PRAGMA incremental_vacuum(1000)")
            except BaseException as exc:  # a full disk, an I/O error: acks must not go out
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                self._failed = exc
                log.critical(
                    "store %s: write failed (%s); no acknowledgement will be sent until the "
                    "broker is restarted",
                    self.path,
                    exc,
                )
                return
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._written, callbacks)

    def _sampled(self, seconds: float) -> None:
        """One timed commit, into the latency histogram."""
        i = 0
        while i < len(COMMIT_BUCKETS) and seconds > COMMIT_BUCKETS[i]:
            i += 1
        self.commit_buckets[i] += 1
        self.commit_seconds += seconds
        self.commit_samples += 1

    def _written(self, callbacks: list[Callable[[], None]]) -> None:
        """On the loop: a batch is durable; run its callbacks, send the next batch if any."""
        self._writing = False
        for callback in callbacks:
            try:
                callback()
            except Exception:  # pragma: no cover - a bug in a callback must not stop the others
                log.exception("store commit callback failed")
        if self._ops or self._callbacks:
            self._schedule()

    def _schedule(self) -> None:
        loop = self._loop
        if loop is None:
            return  # not started yet: start() schedules what was reported before
        if not self._scheduled and not self._writing:
            self._scheduled = True
            loop.call_later(COMMIT_WINDOW, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._writing and (self._ops or self._callbacks):
            self._submit()

    def _submit(self) -> None:
        if self._failed is not None:
            return
        ops, self._ops = self._ops, []
        callbacks, self._callbacks = self._callbacks, []
        self._new_messages.clear()
        self._new_deliveries.clear()
        self._writing = True
        self._queue.put((ops, callbacks))

    # -- Store ---------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        # After a failed write nothing becomes durable again: every ack must wait (forever).
        return bool(self._ops) or self._failed is not None

    def commit(self, callback: Callable[[], None]) -> None:
        if not self._ops and not self._writing and not self._callbacks:
            callback()
            return
        if self._failed is not None:
            return  # never durable: the ack is never sent
        self._callbacks.append(callback)
        self._schedule()

    def close(self) -> None:
        """Write what is left, stop the writer, close the database and release the lock."""
        thread = self._writer_thread
        if thread is not None:
            if self._failed is None and (self._ops or self._callbacks):
                # Batches are written in order: this last one goes after any still being written
                # (its callbacks never run: the loop is stopping).
                self._queue.put((self._ops, []))
                self._ops = []
                self._callbacks = []
                self._new_messages.clear()
                self._new_deliveries.clear()
            self._queue.put(None)
            thread.join(30)
            self._writer_thread = None
        elif self._db is not None and self._ops:
            _write(self._db, self._ops)
            self._ops = []
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None
        self._unlock()

    def _op(self, sql: str, params: tuple[Any, ...]) -> int:
        """Add a statement to the batch; its index there."""
        if self._failed is not None:
            return -1  # nothing is written any more (and nothing acknowledged): do not pile up
        ops = self._ops
        ops.append((sql, params))
        if not self._scheduled:
            self._schedule()
        return len(ops) - 1

    def _ref(self, message: Message) -> int:
        mid = message.store_id
        if mid:
            self._refs[mid] += 1
            return mid
        mid = message.store_id = self._next_id
        self._next_id = mid + 1
        self._refs[mid] = 1
        self._new_messages[mid] = self._op(
            _MSG_INSERT,
            (
                mid,
                message.topic,
                message.payload,
                message.qos,
                int(message.retain),
                _props_blob(message.properties),
                message.expires_at,
                message.origin,
            ),
        )
        return mid

    def _unref(self, message: Message) -> None:
        mid = message.store_id
        if not mid:
            return
        n = self._refs.get(mid, 0) - 1
        if n > 0:
            self._refs[mid] = n
            return
        self._refs.pop(mid, None)
        message.store_id = 0
        index = self._new_messages.pop(mid, -1)
        if index >= 0:
            self._ops[index] = None  # inserted and released within one batch: never written
        else:
            self._op(_MSG_DELETE, (mid,))

    def session_saved(
        self, client_id: str, version: int, expiry_interval: int, username: str | None = None
    ) -> None:
        self._op(_SESSION_SAVE, (client_id, version, expiry_interval, username))

    def session_detached(self, client_id: str, expiry_interval: int, at: float) -> None:
        self._op(_SESSION_DETACH, (expiry_interval, at, client_id))

    def session_deleted(self, client_id: str, messages: Iterable[Message]) -> None:
        for key in [k for k in self._new_deliveries if k[0] == client_id]:
            del self._new_deliveries[key]  # their rows go with the session's
        for sql in _SESSION_DELETES:
            self._op(sql, (client_id,))
        for message in messages:
            self._unref(message)

    def subscription_added(self, client_id: str, topic_filter: str, options: SubOptions) -> None:
        o = options
        self._op(
            _SUB_SAVE,
            (
                client_id,
                topic_filter,
                o.qos,
                int(o.no_local),
                int(o.retain_as_published),
                o.retain_handling,
                o.subscription_id,
            ),
        )

    def subscription_removed(self, client_id: str, topic_filter: str) -> None:
        self._op(_SUB_DELETE, (client_id, topic_filter))

    def delivery_added(self, client_id: str, delivery: Delivery, pid: int) -> None:
        message, qos, retain, sub_ids = delivery
        mid = self._ref(message)
        ids = ",".join(map(str, sub_ids)) if sub_ids else None
        index = self._op(
            _DELIVERY_ADD, (client_id, mid, qos, int(retain), ids, pid, SENT if pid else QUEUED)
        )
        if pid and index >= 0:
            self._new_deliveries[(client_id, pid)] = [index]

    def delivery_sent(self, client_id: str, pid: int) -> None:
        # A queued delivery is addressed by queue position, not by a statement of this batch.
        self._new_deliveries.pop((client_id, pid), None)
        self._op(_DELIVERY_SENT, (pid, client_id))

    def delivery_removed(self, client_id: str, message: Message) -> None:
        self._op(_DELIVERY_REMOVE, (client_id,))
        self._unref(message)

    def deliveries_expired(self, client_id: str, messages: list[Message]) -> None:
        done: set[int] = set()
        for message in messages:
            mid = message.store_id
            if mid and mid not in done:
                done.add(mid)
                self._op(_DELIVERY_EXPIRED, (client_id, mid))
            self._unref(message)

    def delivery_released(self, client_id: str, pid: int) -> None:
        index = self._op(_DELIVERY_RELEASED, (client_id, pid))
        new = self._new_deliveries.get((client_id, pid))
        if new is not None:
            new.append(index)

    def delivery_done(self, client_id: str, pid: int, message: Message) -> None:
        new = self._new_deliveries.pop((client_id, pid), None)
        if new is not None:
            ops = self._ops
            for index in new:
                ops[index] = None  # added and acknowledged within one batch: never written
        else:
            self._op(_DELIVERY_DONE, (client_id, pid))
        self._unref(message)

    def inbound_added(self, client_id: str, pid: int) -> None:
        self._op(_INBOUND_ADD, (client_id, pid))

    def inbound_removed(self, client_id: str, pid: int) -> None:
        self._op(_INBOUND_DELETE, (client_id, pid))

    def retained_changed(self, message: Message) -> None:
        topic = message.topic
        old = self._retained.pop(topic, None)
        if message.payload:
            # The retained copy is a message of its own (its QoS and properties as published).
            self._ref(message)
            self._retained[topic] = message
            source = message.source
            self._op(
                _RETAINED_SET,
                (topic, message.store_id, *(source if source is not None else (None, None))),
            )
        else:
            self._op(_RETAINED_DELETE, (topic,))
        if old is not None:
            self._unref(old)

    def will_saved(self, client_id: str, message: Message, due_at: float) -> None:
        m = message
        self._op(
            _WILL_SAVE,
            (
                client_id,
                m.topic,
                m.payload,
                m.qos,
                int(m.retain),
                _props_blob(m.properties),
                m.origin,
                due_at,
                *(m.source if m.source is not None else (None, None)),
            ),
        )

    def will_cleared(self, client_id: str) -> None:
        self._op(_WILL_DELETE, (client_id,))
