"""The in-memory harness itself (tests/memory.py): the manual clock, links, pending decisions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from midge.auth.base import Authenticator, Capability, ConnectRequest
from midge.codec.packets import Connack, Connect, Pingreq, Pingresp, Publish
from midge.codec.properties import Prop
from midge.config import Config
from tests.memory import DurableMemoryBroker, ManualClock, ManualPending, MemoryBroker
from tests.rawclient import Closed, RawClient


def test_timers_fire_in_time_order_only_when_time_is_advanced() -> None:
    clock = ManualClock()
    fired: list[tuple[str, float]] = []

    def note(name: str) -> None:
        fired.append((name, clock.time()))
        clock.call_soon(fired.append, (name + "-soon", clock.time()))

    clock.call_later(2.0, note, "b")
    clock.call_later(1.0, note, "a")
    clock.call_later(2.0, note, "c")  # same time as b: after it
    clock.call_later(1.5, note, "cancelled").cancel()
    clock.run()
    assert fired == []
    clock.advance(1.9)
    assert fired == [("a", 1.0), ("a-soon", 1.0)]
    assert clock.time() == 1.9
    assert round(clock.next_timer() or 0.0, 9) == 0.1
    clock.advance(0.1)
    assert [name for name, _ in fired] == ["a", "a-soon", "b", "b-soon", "c", "c-soon"]
    assert clock.wall() - clock.time() == ManualClock().wall()


def test_nothing_arrives_without_time_passing() -> None:
    broker = MemoryBroker(Config())
    client = RawClient(broker.link(), version=5)
    client.connect5("idle", keep_alive=1)
    assert client.is_open()
    broker.advance(1.4)
    assert client.is_open()
    broker.advance(0.2)
    assert client.wait_closed()


def test_bytes_sent_before_a_close_reach_the_broker_first() -> None:
    broker = MemoryBroker(Config())
    sub = RawClient(broker.link(), version=4)
    sub.connect("sub")
    sub.subscribe("t", 0)
    pub = RawClient(broker.link(), version=4)
    pub.connect("pub")
    pub.publish("t", b"last words")
    pub.close()
    assert sub.expect(Publish).payload == b"last words"


class _Deferred(Authenticator):
    """Every CONNECT waits for a decision the test makes."""

    provides = frozenset({Capability.CONNECT})

    def __init__(self) -> None:
        self.decisions: list[tuple[str, ManualPending]] = []

    def authenticate(self, request: ConnectRequest) -> ManualPending:
        pending = ManualPending()
        self.decisions.append((request.client_id, pending))
        return pending


def test_a_pending_authentication_is_decided_by_the_test() -> None:
    auth = _Deferred()
    broker = MemoryBroker(Config(), auth)
    ok = RawClient(broker.link(), version=5)
    no = RawClient(broker.link(), version=5)
    ok.send(Connect("ok", protocol_level=5, keep_alive=0))
    ok.send(Pingreq())  # waits, unread, behind the undecided CONNECT
    no.send(Connect("no", protocol_level=5, keep_alive=0))
    ok.expect_nothing()
    no.expect_nothing()
    assert [client_id for client_id, _ in auth.decisions] == ["ok", "no"]
    auth.decisions[0][1].set_result(0)
    auth.decisions[1][1].set_result(0x87)
    assert ok.expect(Connack).reason_code == 0
    ok.expect(Pingresp)
    assert no.expect(Connack).reason_code == 0x87
    try:
        no.recv()
    except Closed:
        pass
    else:
        raise AssertionError("a refused client stays connected")


def test_durable_broker_acknowledges_after_the_commit_and_restarts_on_the_same_clock(
    tmp_path: Path,
) -> None:
    """DurableMemoryBroker: a PUBACK (which waits for the store's commit) is there as soon as the
    broker settles, and the row is then on disk; a kill leaves no timer of the dead broker and its
    clients read EOF; the restart keeps the clock's time and restores from the directory."""
    memory = DurableMemoryBroker(tmp_path)
    try:
        sub = memory.client(5)
        sub.connect5("sub", clean_start=False, properties={Prop.SESSION_EXPIRY_INTERVAL: 60})
        sub.subscribe("t", 1)
        sub.disconnect()
        pub = memory.client(5)
        pub.connect5("pub")
        pub.publish("t", b"kept", qos=1)  # waits for the PUBACK
        db = sqlite3.connect(tmp_path / "midge.db")
        try:
            assert db.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 1
        finally:
            db.close()
        assert memory.clock.next_timer() is not None  # the session's expiry, the sweep
        wall = memory.clock.wall()
        memory.kill()
        assert memory.clock.next_timer() is None
        with pytest.raises(Closed):
            pub.recv()
        memory.restart(down=2.0)
        assert memory.clock.wall() == wall + 2.0
        again = memory.client(5)
        assert again.connect5("sub", clean_start=False).session_present
        assert again.expect(Publish).payload == b"kept"
        memory.advance(60.0)
        assert memory.call(lambda: "sub" in memory.broker.sessions)  # attached: no expiry
    finally:
        memory.stop()
