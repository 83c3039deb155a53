"""The client's session stores keep what a resumed session needs, in order (no broker here)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from midge.client import MemorySessionStore, Outgoing, SqliteSessionStore
from midge.client.store import SessionStore
from midge.codec.packets import Publish
from midge.codec.properties import Prop


def _publish(pid: int) -> Publish:
    props: dict[int, Any] = {
        Prop.USER_PROPERTY: [("k", "v"), ("k", "w")],
        Prop.CORRELATION_DATA: b"\x00\xff",
        Prop.CONTENT_TYPE: "text/plain",
        Prop.MESSAGE_EXPIRY_INTERVAL: 30,
    }
    return Publish(f"t/{pid}", b"payload %d" % pid, 1 + pid % 2, pid == 3, False, pid, props)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_store_round_trip(kind: str, tmp_path: Path) -> None:
    def open_store() -> SessionStore:
        if kind == "memory":
            return memory
        return SqliteSessionStore(str(tmp_path / "s.db"))

    memory = MemorySessionStore()
    store = open_store()
    for pid in (9, 3, 5):  # sent in this order, whatever the ids
        store.put_outgoing("c", pid, Outgoing(_publish(pid)))
    store.put_outgoing("c", 3, Outgoing(_publish(3), "pubrel"))  # PUBREC came: phase only
    store.remove_outgoing("c", 5)
    store.add_incoming("c", 7)
    store.add_incoming("c", 8)
    store.remove_incoming("c", 8)
    store.put_outgoing("other", 1, Outgoing(_publish(1)))
    if isinstance(store, SqliteSessionStore):
        store.close()
    state = open_store().load("c")
    assert list(state.outgoing) == [9, 3]
    assert state.outgoing[3].phase == "pubrel" and state.outgoing[9].phase == "publish"
    assert state.outgoing[9].publish == _publish(9)
    assert state.incoming == {7}
    again = open_store()
    again.clear("c")
    assert not again.load("c").outgoing and not again.load("c").incoming
    assert list(again.load("other").outgoing) == [1]


def test_atomic_commits_both_rows_or_neither(tmp_path: Path) -> None:
    """A bridge's hand-over: the message for the other side and the QoS 2 id received are one
    commit. An exception inside rolls both back; a process killed inside leaves neither."""
    path = str(tmp_path / "bridge.db")
    store = SqliteSessionStore(path)
    with pytest.raises(RuntimeError), store.atomic():
        store.put_outgoing("remote", 1, Outgoing(_publish(1)))
        store.add_incoming("local", 7)
        raise RuntimeError("crash")
    assert not store.load("remote").outgoing and not store.load("local").incoming
    with store.atomic():
        store.put_outgoing("remote", 2, Outgoing(_publish(2)))
        with store.atomic():  # nested: the outermost commits
            store.add_incoming("local", 8)
    store.close()
    # A real crash between the two writes: a child process writes both inside atomic() and
    # dies (SIGKILL) before the commit; a second child dies right after it.
    code = (
        "import os, signal, sys\n"
        "from midge.client import Outgoing, SqliteSessionStore\n"
        "from midge.codec.packets import Publish\n"
        f"store = SqliteSessionStore({path!r})\n"
        "with store.atomic():\n"
        "    store.put_outgoing('remote', 3, Outgoing(Publish('t', b'x', 2, False, False, 3)))\n"
        "    store.add_incoming('local', 9)\n"
        "    if sys.argv[1] == 'before':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    for when in ("before", "after"):
        child = subprocess.run([sys.executable, "-c", code, when], timeout=30, check=False)
        assert child.returncode == -signal.SIGKILL
        reopened = SqliteSessionStore(path)
        outgoing, incoming = reopened.load("remote").outgoing, reopened.load("local").incoming
        reopened.close()
        assert set(outgoing) == ({2} if when == "before" else {2, 3})
        assert incoming == ({8} if when == "before" else {8, 9})
