"""What else survives SIGKILL and a restart: retained messages, pending delayed wills, and the
wall-clock expiry of sessions and messages (issue 5).

The wall-clock timing is tested in process (:class:`tests.memory.DurableMemoryBroker`: the real
SQLite store, killed and restarted on one manual clock that is advanced across the outage, no
sleeping); two tests keep the real process boundary (``midge broker`` killed with SIGKILL, the
system clock running while it is down) with the shortest outage that still lets a 1 s interval
pass.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from midge.codec.packets import Publish, Will
from midge.codec.properties import Prop
from tests.durability.harness import DurableBroker, connect
from tests.memory import DurableMemoryBroker
from tests.rawclient import RawClient


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[DurableBroker]:
    broker = DurableBroker(tmp_path)
    yield broker
    broker.close()


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[DurableMemoryBroker]:
    broker = DurableMemoryBroker(tmp_path / "data")
    yield broker
    broker.stop()


def publishes(client: RawClient, timeout: float = 1.0) -> list[Publish]:
    got = []
    for packet in client.recv_all(timeout):
        assert isinstance(packet, Publish), packet
        client.ack(packet)
        got.append(packet)
    return got


@pytest.mark.parametrize("version", [4, 5], ids=["v3.1.1", "v5"])
def test_retained_messages_survive(durable: DurableBroker, version: int) -> None:
    """Set, replaced and cleared retained messages come back as they were (MQTT-3.3.1-5..-7)."""
    pub = durable.client(version)
    connect(pub, "pub", clean=True)
    pub.publish("r/a", b"first", qos=1, retain=True)
    pub.publish("r/a", b"second", qos=1, retain=True)
    pub.publish("r/b", b"gone", qos=1, retain=True)
    pub.publish("r/b", b"", qos=1, retain=True)
    pub.publish("r/c", b"kept", qos=2, retain=True)
    durable.restart()
    sub = durable.client(version)
    connect(sub, "sub", clean=True)
    sub.subscribe("r/#", 2)
    got = {(p.topic, p.payload, p.qos, p.retain) for p in publishes(sub)}
    assert got == {("r/a", b"second", 1, True), ("r/c", b"kept", 2, True)}


def test_retained_message_expiry_counts_across_restart(memory: DurableMemoryBroker) -> None:
    """A retained message's Message Expiry is wall-clock: it expires while the broker is down
    (MQTT-3.3.2-5 v5), and what is left is forwarded decremented (MQTT-3.3.2-6 v5). Restarted
    0.5 s after the publish both are still there (the short one with 1 s left); restarted again
    1.2 s after it, the short one is gone and the long one has 98.8 s left (sent as 99)."""
    pub = memory.client(5)
    connect(pub, "pub", clean=True)
    pub.publish("e/short", b"s", qos=1, retain=True, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish("e/long", b"l", qos=1, retain=True, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 100})
    memory.restart(down=0.5)
    sub = memory.client(5)
    connect(sub, "sub", clean=True)
    sub.subscribe("e/#", 1)
    got = publishes(sub)
    assert sorted((p.topic, p.properties[Prop.MESSAGE_EXPIRY_INTERVAL]) for p in got) == [
        ("e/long", 100),
        ("e/short", 1),
    ]
    memory.restart(down=0.7)
    # The store's load purged the expired one from the disk (on the manual wall clock).
    db = sqlite3.connect(memory.data_dir / "midge.db")
    try:
        assert [t for (t,) in db.execute("SELECT topic FROM retained")] == ["e/long"]
    finally:
        db.close()
    sub = memory.client(5)
    connect(sub, "sub", clean=True)
    sub.subscribe("e/#", 1)
    got = publishes(sub)
    assert [p.topic for p in got] == ["e/long"]
    assert got[0].properties[Prop.MESSAGE_EXPIRY_INTERVAL] <= 99
    assert got[0].properties[Prop.MESSAGE_EXPIRY_INTERVAL] == 99


def test_queued_message_expiry_counts_across_restart(memory: DurableMemoryBroker) -> None:
    """A queued message's Message Expiry is wall-clock too: a session resumed 0.5 s after the
    publish (across a restart) gets both messages; one resumed after a second restart 1.2 s after
    it gets only the long one, decremented."""
    for cid in ("early", "sub"):
        sub = memory.client(5)
        connect(sub, cid)
        sub.subscribe("q/#", 1)
        sub.disconnect()
    pub = memory.client(5)
    connect(pub, "pub", clean=True)
    pub.publish("q/short", b"s", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish("q/long", b"l", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 100})
    memory.restart(down=0.5)
    early = memory.client(5)
    assert connect(early, "early").session_present
    assert [p.topic for p in publishes(early)] == ["q/short", "q/long"]
    memory.restart(down=0.7)
    sub = memory.client(5)
    assert connect(sub, "sub").session_present
    got = publishes(sub)
    assert [p.topic for p in got] == ["q/long"]
    assert got[0].properties[Prop.MESSAGE_EXPIRY_INTERVAL] <= 99
    assert got[0].properties[Prop.MESSAGE_EXPIRY_INTERVAL] == 99


def test_session_expiry_is_wall_clock(memory: DurableMemoryBroker) -> None:
    """Session Expiry counts from the disconnection, also while the broker is down
    (MQTT-3.1.2-23 v5): a session whose interval passed during the outage is gone, one whose
    interval ends after the restart ends then (still there 3.9 s after the disconnection, gone at
    4.1 s), a longer one is still there."""
    for cid, expiry in (("short", 1), ("mid", 4), ("long", 300)):
        c = memory.client(5)
        connect(c, cid, expiry=expiry)
        c.subscribe(f"s/{cid}", 1)
        c.disconnect()
    v3 = memory.client(4)
    connect(v3, "v3")  # clean session 0: never expires (persistent_client_expiration unset)
    v3.disconnect()
    memory.restart(down=1.2)

    def sessions() -> set[str]:
        return set(memory.call(lambda: memory.broker.sessions))

    assert sessions() == {"mid", "long", "v3"}
    c = memory.client(5)
    assert not connect(c, "short", expiry=0).session_present
    c.close()
    c = memory.client(4)
    assert connect(c, "v3").session_present
    c.close()
    memory.advance(3.9 - 1.2)
    assert "mid" in sessions()
    memory.advance(0.2)
    assert "mid" not in sessions()
    c = memory.client(5)
    assert not connect(c, "mid", expiry=0).session_present
    c.close()
    c = memory.client(5)
    assert connect(c, "long").session_present
    c.subscribe("probe", 0)
    c.close()


def test_pending_delayed_wills_survive(memory: DurableMemoryBroker) -> None:
    """A will waiting for its Will Delay Interval (MQTT-3.1.3-9 v5) is published after the
    restart: at once if it fell due during the outage, otherwise when it falls due (not 4.9 s
    after the connection closed, at 5.1 s)."""
    watcher = memory.client(5)
    connect(watcher, "watcher")
    watcher.subscribe("will/#", 1)
    watcher.disconnect()
    for cid, delay in (("early", 1), ("late", 5)):
        c = memory.client(5)
        will = Will(f"will/{cid}", cid.encode(), 1, False, {Prop.WILL_DELAY_INTERVAL: delay})
        connect(c, cid, expiry=60, will=will)
        c.close()  # no DISCONNECT: the will is due after its delay
    memory.restart(down=1.2)
    watcher = memory.client(5)
    assert connect(watcher, "watcher").session_present
    first = publishes(watcher)
    assert [p.topic for p in first] == ["will/early"]
    memory.advance(4.9 - 1.2)
    assert publishes(watcher) == []
    memory.advance(0.2)
    later = publishes(watcher)
    assert [p.topic for p in later] == ["will/late"]


# -- the process boundary ----------------------------------------------------------------------


def test_wall_clock_expiry_across_a_process_restart(durable: DurableBroker) -> None:
    """The real process, SIGKILLed, down for 1.2 s of the system clock: a session, a retained
    and a queued message whose 1 s interval passed meanwhile are gone, longer ones are there
    (MQTT-3.1.2-23, MQTT-3.3.2-5, MQTT-3.3.2-6 v5)."""
    for cid, expiry in (("short", 1), ("long", 300)):
        c = durable.client(5)
        connect(c, cid, expiry=expiry)
        c.subscribe(f"s/{cid}", 1)
        c.disconnect()
    sub = durable.client(5)
    connect(sub, "sub")
    sub.subscribe("q/#", 1)
    sub.disconnect()
    pub = durable.client(5)
    connect(pub, "pub", clean=True)
    pub.publish("e/short", b"s", qos=1, retain=True, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish("e/long", b"l", qos=1, retain=True, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 100})
    pub.publish("q/short", b"s", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish("q/long", b"l", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 100})
    # PUBACK waits for the commit; the sessions' CONNECT/SUBSCRIBE/DISCONNECT were committed in
    # the same or an earlier batch (batches are written in order).
    durable.kill()
    time.sleep(1.2)
    durable.restart()
    c = durable.client(5)
    assert not connect(c, "short", expiry=0).session_present
    c.close()
    c = durable.client(5)
    assert connect(c, "long").session_present
    c.close()
    sub = durable.client(5)
    assert connect(sub, "sub").session_present
    got = publishes(sub)
    assert [p.topic for p in got] == ["q/long"]
    assert got[0].properties[Prop.MESSAGE_EXPIRY_INTERVAL] <= 99
    probe = durable.client(5)
    connect(probe, "probe", clean=True)
    probe.subscribe("e/#", 1)
    got = publishes(probe)
    assert [p.topic for p in got] == ["e/long"]
    assert got[0].properties[Prop.MESSAGE_EXPIRY_INTERVAL] <= 99


def test_delayed_will_across_a_process_restart(durable: DurableBroker) -> None:
    """The real process, SIGKILLed before a will's 1 s delay ends and down for 1.2 s of the
    system clock: the will is published at once after the restart; one with a 1 h delay is
    not."""
    watcher = durable.client(5)
    connect(watcher, "watcher")
    watcher.subscribe("will/#", 1)
    watcher.disconnect()
    for cid, delay in (("early", 1), ("late", 3600)):
        c = durable.client(5)
        will = Will(f"will/{cid}", cid.encode(), 1, False, {Prop.WILL_DELAY_INTERVAL: delay})
        connect(c, cid, expiry=7200, will=will)
        c.close()  # no DISCONNECT: the will is due after its delay
    time.sleep(0.3)  # the broker notices the closed sockets and records the wills
    durable.kill()
    time.sleep(1.2)
    durable.restart()
    watcher = durable.client(5)
    assert connect(watcher, "watcher").session_present
    first = publishes(watcher, 0.5)
    assert [p.topic for p in first] == ["will/early"]
