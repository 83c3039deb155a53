"""$SYS/broker/...: Mosquitto's broker status tree (midge.broker.systree), exact after a known
workload, in memory on a manual clock. The differential test (tests/differential/test_sys.py)
compares the topic names and payload formats with the real Mosquitto."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from midge.broker.model import Message
from midge.broker.systree import SysTree
from midge.codec.packets import Publish
from midge.codec.properties import Prop
from midge.codec.reasons import Reason
from midge.config import Config, parse_mosquitto_conf, parse_toml
from midge.store.memory import MemoryStore
from tests.conftest import RunningBroker
from tests.memory import MemoryBroker
from tests.rawclient import RawClient, tap

#: Every topic midge publishes under $SYS/broker/ (Mosquitto 2.0.11's, tests/differential).
LOADS = [
    f"load/{name}/{window}"
    for window in ("1min", "5min", "15min")
    for name in (
        "messages/received",
        "messages/sent",
        "publish/dropped",
        "publish/received",
        "publish/sent",
        "bytes/received",
        "bytes/sent",
        "sockets",
        "connections",
    )
]
SYS_TOPICS = [
    "version",
    "uptime",
    "clients/total",
    "clients/maximum",
    "clients/inactive",
    "clients/disconnected",
    "clients/active",
    "clients/connected",
    "clients/expired",
    *LOADS,
    "messages/stored",
    "store/messages/count",
    "store/messages/bytes",
    "subscriptions/count",
    "shared_subscriptions/count",
    "retained messages/count",
    "heap/current",
    "heap/maximum",
    "messages/received",
    "messages/sent",
    "publish/messages/dropped",
    "publish/messages/received",
    "publish/messages/sent",
    "bytes/received",
    "bytes/sent",
    "publish/bytes/received",
    "publish/bytes/sent",
]
#: Published after store/messages/bytes within one update (their previous values count there).
AFTER_STORE_BYTES = SYS_TOPICS[SYS_TOPICS.index("store/messages/bytes") :]


class Counted(RawClient):
    """A raw client that counts the bytes it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent = 0

    def send_raw(self, data: bytes) -> None:
        self.sent += len(data)
        super().send_raw(data)


def _retained(mb: MemoryBroker) -> dict[str, bytes]:
    prefix = "$SYS/broker/"
    return {
        m.topic[len(prefix) :]: m.payload
        for m in mb.call(lambda: list(mb.broker.retained.all()))
        if m.topic.startswith(prefix)
    }


def test_sys_counters_are_exact_after_a_known_workload() -> None:
    mb = MemoryBroker(Config(max_queued_messages=1))
    systree = SysTree(mb.broker, 10)
    mb.call(systree.start)  # t=0: the version and a first update, before any client
    first = _retained(mb)
    assert first["version"].startswith(b"midge version ")
    assert first["uptime"] == b"0 seconds"
    assert "clients/maximum" not in first  # sent once the total exceeds 0, as in Mosquitto
    assert "heap/current" not in first  # no memory probe given
    assert {first[t] for t in LOADS} == {b"0.00"}
    assert first["clients/total"] == first["messages/received"] == b"0"

    clients: list[Counted] = []
    received: list[bytearray] = []

    def client(version: int) -> Counted:
        c = Counted(mb.link(), version=version)
        clients.append(c)
        received.append(tap(c))
        return c

    a = client(4)
    a.connect("a")
    a.subscribe("t/#", 0)
    a.subscribe("$share/g/s/#", 0)
    b = client(4)
    b.connect("b", clean_start=False)
    b.subscribe("b/x", 1)
    b.publish("t/1", b"hello", 0)
    b.publish("t/2", b"abc", 1, retain=True)
    assert [p.payload for p in (a.expect(Publish), a.expect(Publish))] == [b"hello", b"abc"]
    c = client(5)
    c.connect5("c", properties={Prop.SESSION_EXPIRY_INTERVAL: 5})
    c.subscribe("c/#", 0)
    # 9 packets in (A: CONNECT, 2 SUBSCRIBE; B: CONNECT, SUBSCRIBE, 2 PUBLISH; C: CONNECT,
    # SUBSCRIBE), 10 out (A: CONNACK, 2 SUBACK, 2 PUBLISH; B: CONNACK, SUBACK, PUBACK; C:
    # CONNACK, SUBACK).
    mb.advance(10)
    at10 = _retained(mb)
    assert at10["uptime"] == b"10 seconds"
    assert at10["clients/total"] == at10["clients/connected"] == at10["clients/active"] == b"3"
    assert at10["clients/maximum"] == b"3"
    assert at10["clients/disconnected"] == b"0"
    assert at10["messages/received"] == b"9" and at10["messages/sent"] == b"10"
    assert at10["subscriptions/count"] == b"3" and at10["shared_subscriptions/count"] == b"1"
    decay = math.exp(-10 / 60)
    load1 = 9 * 6 * (1 - decay)  # 9 packets in 10 s: 54 a minute, averaged from 0
    assert at10["load/messages/received/1min"] == f"{load1:.2f}".encode()
    assert at10["load/connections/1min"] == f"{3 * 6 * (1 - decay):.2f}".encode()
    assert at10["load/sockets/5min"] == f"{3 * 6 * (1 - math.exp(-10 / 300)):.2f}".encode()

    b.disconnect()  # persistent: its session stays, disconnected
    c.disconnect()  # expires 5 s later
    a.publish("b/x", b"queued", 1)  # queued for B
    a.publish("b/x", b"second", 1)  # B's queue is full (max_queued_messages 1): dropped
    mb.advance(10)
    at20 = _retained(mb)
    assert at20["uptime"] == b"20 seconds"
    assert at20["clients/total"] == b"2"  # A, and B's persistent session
    assert at20["clients/connected"] == at20["clients/active"] == b"1"
    assert at20["clients/disconnected"] == at20["clients/inactive"] == b"1"
    assert at20["clients/expired"] == b"1"
    assert at20["clients/maximum"] == b"3"
    # In: 9 + 2 DISCONNECT + 2 PUBLISH; out: 10 + 2 PUBACK.
    assert at20["messages/received"] == b"13" and at20["messages/sent"] == b"12"
    assert at20["publish/messages/received"] == b"4"
    assert at20["publish/messages/sent"] == b"2"
    assert at20["publish/messages/dropped"] == b"1"
    assert at20["publish/bytes/received"] == str(5 + 3 + 6 + 6).encode()
    assert at20["publish/bytes/sent"] == str(5 + 3).encode()
    assert at20["bytes/received"] == str(sum(c.sent for c in clients)).encode()
    assert at20["bytes/sent"] == str(sum(len(r) for r in received)).encode()
    assert at20["subscriptions/count"] == b"2"  # t/# and B's b/x
    assert at20["shared_subscriptions/count"] == b"1"
    sys_held = len(SYS_TOPICS) - 2  # every topic but heap/... is retained by now
    assert at20["retained messages/count"] == str(1 + sys_held).encode()  # and t/2
    assert at20["store/messages/count"] == at20["messages/stored"] == str(2 + sys_held).encode()
    # The payload bytes held when store/messages/bytes was computed: t/2's, B's queued message
    # and the $SYS values of the moment (this update's before it, the last update's after).
    held = {t: at20[t] for t in at20 if t not in AFTER_STORE_BYTES}
    held |= {t: at10[t] for t in AFTER_STORE_BYTES if t in at10}
    assert at20["store/messages/bytes"] == str(3 + 6 + sum(map(len, held.values()))).encode()
    rate = 4 * 6  # 4 packets in over the last 10 s
    load1 = rate + decay * (load1 - rate)
    assert at20["load/messages/received/1min"] == f"{load1:.2f}".encode()
    assert at20["load/publish/dropped/1min"] == f"{6 * (1 - decay):.2f}".encode()
    assert set(at20) == set(SYS_TOPICS) - {"heap/current", "heap/maximum"}

    # A $SYS/# subscriber gets the tree retained (QoS 0 here: B's full queue would not hold
    # QoS 2 ones beyond the in-flight window, max_queued_messages 1).
    s = RawClient(mb.link(), version=5)
    s.connect5("s")
    s.sub("$SYS/#", qos=0)
    got = s.more_publishes()
    assert {p.topic for p in got} == {"$SYS/broker/" + t for t in at20}
    assert all(p.retain and not p.properties for p in got)  # no Message Expiry (mosquitto.md)


def test_only_changed_values_are_published_and_uptime_always() -> None:
    mb = MemoryBroker(Config())
    systree = SysTree(mb.broker, 5, memory=lambda: (1000, 2000))
    mb.call(systree.start)
    assert _retained(mb)["heap/current"] == b"1000"
    assert _retained(mb)["heap/maximum"] == b"2000"
    s = RawClient(mb.link(), version=4)
    s.connect("s")
    s.sub("$SYS/broker/#", qos=2)
    first = s.more_publishes(ack=True)
    assert len(first) == len(SYS_TOPICS) - 1  # no clients/maximum yet
    assert all(p.retain and p.qos == 2 for p in first)  # QoS 2, as Mosquitto's SYS_TREE_QOS
    mb.advance(5)
    # The subscriber itself changed the client counts, the subscription count, the packet and
    # byte counters and their loads; the version, the stores and the heap did not change.
    topics = [p.topic[len("$SYS/broker/") :] for p in s.more_publishes(ack=True)]
    assert topics[0] == "uptime"
    assert "clients/maximum" in topics and "version" not in topics
    unchanged = {"heap/current", "heap/maximum", "clients/expired", "publish/messages/dropped"}
    assert not unchanged & set(topics)
    assert "load/publish/dropped/1min" not in topics  # still 0.00
    mb.advance(5)
    again = [p.topic for p in s.more_publishes(ack=True)]
    assert "$SYS/broker/uptime" in again and "$SYS/broker/clients/total" not in again
    assert s.more_publishes() == []
    systree.stop()
    mb.advance(5)
    assert s.more_publishes() == []


def test_clients_cannot_publish_to_sys() -> None:
    """Mosquitto denies client publishes to $SYS (src/security.c, acl__check_dollar): v5
    PUBACK 0x87, and the value is not changed."""
    mb = MemoryBroker(Config())
    mb.call(SysTree(mb.broker, 10).start)
    c = RawClient(mb.link(), version=5)
    c.connect5("forger")
    ack = c.publish("$SYS/broker/uptime", b"forged", qos=1, retain=True)
    assert ack is not None and getattr(ack, "reason_code", None) == Reason.NOT_AUTHORIZED
    assert _retained(mb)["uptime"] == b"0 seconds"


def test_sys_values_are_not_written_to_the_store() -> None:
    """As Mosquitto (persist_write.c), $SYS is never persisted: it describes this run only."""

    class Recording(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.written: list[str] = []

        def retained_changed(self, message: Message) -> None:
            self.written.append(message.topic)

    from midge.broker.broker import Broker
    from tests.memory import ManualClock

    store = Recording()
    broker = Broker(Config(), ManualClock(), store=store)
    SysTree(broker, 10).start()
    assert broker.retained.count > 40
    broker.publish(Message("t", b"kept", 0, True))
    assert store.written == ["t"]


def test_sys_interval_in_both_formats() -> None:
    assert Config().sys_interval == 10
    assert parse_mosquitto_conf("sys_interval 0\n", "m.conf").sys_interval == 0
    assert parse_toml("sys_interval = 60\n", "m.toml").sys_interval == 60


def test_the_server_publishes_sys_unless_sys_interval_is_0(
    make_broker: Callable[..., RunningBroker],
) -> None:
    on = make_broker()
    on_core = on.server.broker
    assert on_core is not None
    values = on.call(lambda: {m.topic: m.payload for m in on_core.retained.all()})
    # heap/...: the process's resident memory and its peak (docs/mosquitto.md, "$SYS").
    current = int(values["$SYS/broker/heap/current"])
    assert 1_000_000 < current <= int(values["$SYS/broker/heap/maximum"])
    assert values["$SYS/broker/uptime"] == b"0 seconds"
    off = make_broker(sys_interval=0)
    assert off.server.sys_tree is None
    off_core = off.server.broker
    assert off_core is not None
    assert off.call(lambda: off_core.retained.count) == 0


def test_a_new_sys_interval_takes_effect_from_the_reload() -> None:
    """SIGHUP with another sys_interval (midge.reload calls set_interval): the next update
    comes the new interval after the reload, then every new interval."""
    mb = MemoryBroker(Config())
    systree = SysTree(mb.broker, 100)
    mb.call(systree.start)
    s = RawClient(mb.link(), version=4)
    s.connect("s")
    s.sub("$SYS/broker/uptime", qos=0)
    assert s.more_publishes()  # the retained value
    mb.advance(40)
    mb.call(lambda: systree.set_interval(5))
    mb.advance(4.9)
    assert s.more_publishes() == []
    mb.advance(0.2)
    assert [p.payload for p in s.more_publishes()] == [b"45 seconds"]
    mb.advance(5)
    assert [p.payload for p in s.more_publishes()] == [b"50 seconds"]
