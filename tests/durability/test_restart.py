"""What else survives SIGKILL and a restart: retained messages, pending delayed wills, and the
wall-clock expiry of sessions and messages (issue 5)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from midge.codec.packets import Publish, Will
from midge.codec.properties import Prop
from tests.durability.harness import DurableBroker, connect
from tests.rawclient import RawClient


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[DurableBroker]:
    broker = DurableBroker(tmp_path)
    yield broker
    broker.close()


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


def test_retained_message_expiry_counts_across_restart(durable: DurableBroker) -> None:
    """A retained message's Message Expiry is wall-clock: it expires while the broker is down
    (MQTT-3.3.2-5 v5), and what is left is forwarded decremented (MQTT-3.3.2-6 v5)."""
    pub = durable.client(5)
    connect(pub, "pub", clean=True)
    pub.publish("e/short", b"s", qos=1, retain=True, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish("e/long", b"l", qos=1, retain=True, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 100})
    durable.kill()
    time.sleep(1.2)
    durable.restart()
    sub = durable.client(5)
    connect(sub, "sub", clean=True)
    sub.subscribe("e/#", 1)
    got = publishes(sub)
    assert [p.topic for p in got] == ["e/long"]
    assert got[0].properties[Prop.MESSAGE_EXPIRY_INTERVAL] <= 99


def test_queued_message_expiry_counts_across_restart(durable: DurableBroker) -> None:
    sub = durable.client(5)
    connect(sub, "sub")
    sub.subscribe("q/#", 1)
    sub.disconnect()
    pub = durable.client(5)
    connect(pub, "pub", clean=True)
    pub.publish("q/short", b"s", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish("q/long", b"l", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 100})
    durable.kill()
    time.sleep(1.2)
    durable.restart()
    sub = durable.client(5)
    assert connect(sub, "sub").session_present
    got = publishes(sub)
    assert [p.topic for p in got] == ["q/long"]
    assert got[0].properties[Prop.MESSAGE_EXPIRY_INTERVAL] <= 99


def test_session_expiry_is_wall_clock(durable: DurableBroker) -> None:
    """Session Expiry counts from the disconnection, also while the broker is down
    (MQTT-3.1.2-23 v5): a session whose interval passed during the outage is gone, one whose
    interval ends after the restart ends then, a longer one is still there."""
    for cid, expiry in (("short", 1), ("mid", 4), ("long", 300)):
        c = durable.client(5)
        connect(c, cid, expiry=expiry)
        c.subscribe(f"s/{cid}", 1)
        c.disconnect()
    v3 = durable.client(4)
    connect(v3, "v3")  # clean session 0: never expires (persistent_client_expiration unset)
    v3.disconnect()
    # Session changes are committed within the commit window (milliseconds); only PUBACK/PUBREC/
    # PUBCOMP wait for the commit, so give CONNECT/SUBSCRIBE/DISCONNECT a moment before the kill.
    time.sleep(0.2)
    started = time.monotonic()
    durable.kill()
    time.sleep(1.2)
    durable.restart()
    c = durable.client(5)
    assert not connect(c, "short", expiry=0).session_present
    c.close()
    c = durable.client(4)
    assert connect(c, "v3").session_present
    c.close()
    time.sleep(max(0.0, 4.3 - (time.monotonic() - started)))
    c = durable.client(5)
    assert not connect(c, "mid", expiry=0).session_present
    c.close()
    c = durable.client(5)
    assert connect(c, "long").session_present
    c.subscribe("probe", 0)
    c.close()


def test_pending_delayed_wills_survive(durable: DurableBroker) -> None:
    """A will waiting for its Will Delay Interval (MQTT-3.1.3-9 v5) is published after the
    restart: at once if it fell due during the outage, otherwise when it falls due."""
    watcher = durable.client(5)
    connect(watcher, "watcher")
    watcher.subscribe("will/#", 1)
    watcher.disconnect()
    for cid, delay in (("early", 1), ("late", 5)):
        c = durable.client(5)
        will = Will(f"will/{cid}", cid.encode(), 1, False, {Prop.WILL_DELAY_INTERVAL: delay})
        connect(c, cid, expiry=60, will=will)
        c.close()  # no DISCONNECT: the will is due after its delay
    time.sleep(0.3)  # the broker notices the closed sockets and records the wills
    started = time.monotonic()
    durable.kill()
    time.sleep(1.2)
    durable.restart()
    watcher = durable.client(5)
    assert connect(watcher, "watcher").session_present
    first = publishes(watcher, 0.5)
    assert [p.topic for p in first] == ["will/early"]
    assert time.monotonic() - started < 4.5, "too slow to tell the late will from the early one"
    later = publishes(watcher, 3.0)
    assert [p.topic for p in later] == ["will/late"]
    assert time.monotonic() - started >= 5.0
