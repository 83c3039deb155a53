"""Where the client keeps its session state: the in-flight QoS 1/2 messages (MQTT 5.0 4.1).

A persistent session (``clean_start=False``, a session expiry above 0 in MQTT 5) survives a
reconnect in memory whatever the store; a :class:`SqliteSessionStore` makes it survive a restart
of the client process too. What is kept, per client identifier:

* outgoing: every QoS 1/2 PUBLISH not yet completed, with its packet identifier and phase
  (``"publish"``: sent, no PUBACK/PUBREC yet; ``"pubrel"``: PUBREC received, PUBCOMP awaited), in
  the order sent, so that a resumed session resends them in that order (MQTT-4.4.0-1, 4.6.0-1);
* incoming: the packet identifiers of QoS 2 messages delivered but not yet released (PUBREL), so
  that a PUBLISH the server resends is not delivered twice (exactly once, MQTT-4.3.3-9).

The store is written synchronously, once per change, before the packet that depends on it goes
out (a write to SQLite per QoS>0 message). Implement :class:`SessionStore` for any other medium.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from midge.codec.packets import Publish


@dataclass(slots=True)
class Outgoing:
    """An outgoing QoS 1/2 PUBLISH in flight."""

    publish: Publish
    phase: str = "publish"  # or "pubrel"


@dataclass(slots=True)
class SessionState:
    outgoing: dict[int, Outgoing] = field(default_factory=dict)  # in the order sent
    incoming: set[int] = field(default_factory=set)  # QoS 2 ids delivered, not yet released


class SessionStore(Protocol):
    """The persistence seam of the client's session (MemorySessionStore, SqliteSessionStore)."""

    def load(self, client_id: str) -> SessionState: ...

    def put_outgoing(self, client_id: str, packet_id: int, entry: Outgoing) -> None: ...

    def remove_outgoing(self, client_id: str, packet_id: int) -> None: ...

    def add_incoming(self, client_id: str, packet_id: int) -> None: ...

    def remove_incoming(self, client_id: str, packet_id: int) -> None: ...

    def clear(self, client_id: str) -> None: ...

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """The changes made inside are committed together or not at all (a bridge records
        the message it forwards and the id it received in one commit: exactly once across a
        crash)."""
        ...


class MemorySessionStore:
    """The default: the state lives as long as this object (across reconnects of a Client, and
    across Clients given the same store object)."""

    def __init__(self) -> None:
        self._states: dict[str, SessionState] = {}

    def load(self, client_id: str) -> SessionState:
        state = self._states.get(client_id)
        if state is None:
            return SessionState()
        return SessionState(dict(state.outgoing), set(state.incoming))

    def _state(self, client_id: str) -> SessionState:
        return self._states.setdefault(client_id, SessionState())

    def put_outgoing(self, client_id: str, packet_id: int, entry: Outgoing) -> None:
        self._state(client_id).outgoing[packet_id] = entry

    def remove_outgoing(self, client_id: str, packet_id: int) -> None:
        self._state(client_id).outgoing.pop(packet_id, None)

    def add_incoming(self, client_id: str, packet_id: int) -> None:
        self._state(client_id).incoming.add(packet_id)

    def remove_incoming(self, client_id: str, packet_id: int) -> None:
        self._state(client_id).incoming.discard(packet_id)

    def clear(self, client_id: str) -> None:
        self._states.pop(client_id, None)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        yield  # nothing survives a crash anyway


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outgoing (
    client_id TEXT NOT NULL, packet_id INTEGER NOT NULL, seq INTEGER NOT NULL,
    phase TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
    retain INTEGER NOT NULL, properties TEXT NOT NULL,
    PRIMARY KEY (client_id, packet_id));
CREATE TABLE IF NOT EXISTS incoming (
    client_id TEXT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY (client_id, packet_id));
"""


def _props_to_json(props: dict[int, object]) -> str:
    out: dict[str, object] = {}
    for key, value in props.items():
        if isinstance(value, bytes):
            out[str(int(key))] = {"hex": value.hex()}
        else:
            out[str(int(key))] = value
    return json.dumps(out)


def _props_from_json(text: str) -> dict[int, object]:
    out: dict[int, object] = {}
    for key, value in json.loads(text).items():
        if isinstance(value, dict):
            out[int(key)] = bytes.fromhex(value["hex"])
        elif isinstance(value, list) and value and isinstance(value[0], list):
            out[int(key)] = [tuple(pair) for pair in value]  # user properties
        else:
            out[int(key)] = value
    return out


class SqliteSessionStore:
    """The session in an SQLite file, so that it survives a restart of the client process.

    Every change is one committed transaction, or several in one with :meth:`atomic` (WAL
    journal, ``synchronous=NORMAL``: durable against a crash of the process; ``durable=True``
    makes it ``FULL``, durable against a power failure too). Several clients (client
    identifiers) may share one file.
    """

    def __init__(self, path: str, *, durable: bool = False) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()  # atomic() holds it around the changes it groups
        self._depth = 0
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._seq = 0

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction over the changes made inside (nested: the outermost commits); an
        exception rolls them all back."""
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if self._depth == 1:
                    self._db.execute("ROLLBACK")
                raise
            else:
                if self._depth == 1:
                    self._db.execute("COMMIT")
            finally:
                self._depth -= 1

    def load(self, client_id: str) -> SessionState:
        state = SessionState()
        with self._lock:
            rows = self._db.execute(
                "SELECT packet_id, phase, topic, payload, qos, retain, properties, seq"
                " FROM outgoing WHERE client_id = ? ORDER BY seq",
                (client_id,),
            ).fetchall()
            for pid, phase, topic, payload, qos, retain, props, seq in rows:
                publish = Publish(topic, payload, qos, bool(retain), False, pid)
                publish.properties = _props_from_json(props)
                state.outgoing[pid] = Outgoing(publish, phase)
                self._seq = max(self._seq, seq)
            for (pid,) in self._db.execute(
                "SELECT packet_id FROM incoming WHERE client_id = ?", (client_id,)
            ):
                state.incoming.add(pid)
        return state

    def put_outgoing(self, client_id: str, packet_id: int, entry: Outgoing) -> None:
        p = entry.publish
        with self._lock:
            self._seq += 1
            self._db.execute(
                "INSERT INTO outgoing VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (client_id, packet_id) DO UPDATE SET phase = excluded.phase",
                (
                    client_id,
                    packet_id,
                    self._seq,
                    entry.phase,
                    p.topic,
                    p.payload,
                    p.qos,
                    int(p.retain),
                    _props_to_json(p.properties),
                ),
            )

    def remove_outgoing(self, client_id: str, packet_id: int) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM outgoing WHERE client_id = ? AND packet_id = ?", (client_id, packet_id)
            )

    def add_incoming(self, client_id: str, packet_id: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO incoming VALUES (?, ?)", (client_id, packet_id))

    def remove_incoming(self, client_id: str, packet_id: int) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM incoming WHERE client_id = ? AND packet_id = ?", (client_id, packet_id)
            )

    def clear(self, client_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outgoing WHERE client_id = ?", (client_id,))
            self._db.execute("DELETE FROM incoming WHERE client_id = ?", (client_id,))
