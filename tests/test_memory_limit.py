"""``memory_limit`` (issue 11), in memory: once the messages the broker holds would go beyond it,
an incoming PUBLISH is refused and counted. MQTT 5: QoS 1/2 with 0x97 Quota exceeded in the
PUBACK/PUBREC, QoS 0 dropped; MQTT 3.1.1: the publisher is disconnected, as Mosquitto does. It
counts the payloads of retained messages and of what sessions hold (Broker.memory_used)."""

from __future__ import annotations

from midge.codec.packets import Puback, Publish, Pubrec
from midge.codec.reasons import Reason
from midge.config import Config, parse_mosquitto_conf
from tests.memory import MemoryBroker
from tests.rawclient import RawClient

SIZE = 1000
LIMIT = 3 * SIZE


def offline_subscriber(broker: MemoryBroker) -> None:
    """A persistent QoS 1 subscriber to ``t``, gone: what is published to ``t`` is queued."""
    sub = RawClient(broker.link(), version=5)
    sub.connect5("keeper", properties={0x11: 3600})
    sub.subscribe("t", 1)
    sub.disconnect()


def reconnect(broker: MemoryBroker) -> list[Publish]:
    sub = RawClient(broker.link(), version=5)
    sub.connect5("keeper", clean_start=False, properties={0x11: 3600})
    return sub.more_publishes(ack=True)


def test_v5_publishes_over_the_limit_are_refused_with_quota_exceeded_until_memory_frees() -> None:
    broker = MemoryBroker(parse_mosquitto_conf(f"memory_limit {LIMIT}\n"))
    core = broker.broker
    offline_subscriber(broker)
    pub = RawClient(broker.link(), version=5)
    pub.connect5("pub")
    for _ in range(3):
        ack = pub.publish("t", bytes(SIZE), 1)
        assert isinstance(ack, Puback) and ack.reason_code == 0
    assert broker.call(core.memory_used) == LIMIT
    ack = pub.publish("t", b"one byte too many", 1)
    assert isinstance(ack, Puback) and ack.reason_code == Reason.QUOTA_EXCEEDED
    rec = pub.publish("t", b"x", 2)
    assert isinstance(rec, Pubrec) and rec.reason_code == Reason.QUOTA_EXCEEDED
    pub.send(Publish("t", b"qos 0", 0))  # dropped, counted; the publisher stays connected
    pub.ping()
    assert core.stats.messages_dropped == 3
    assert broker.call(core.memory_used) == LIMIT
    # Delivery frees the memory: publishing works again.
    assert [m.payload for m in reconnect(broker)] == [bytes(SIZE)] * 3
    assert broker.call(core.memory_used) == 0
    ack = pub.publish("t", b"again", 1)
    assert isinstance(ack, Puback) and ack.reason_code == 0
    assert [m.payload for m in reconnect(broker)] == [b"again"]
    assert core.stats.refused == {}


def test_v311_publisher_over_the_limit_is_disconnected_as_mosquitto_does() -> None:
    broker = MemoryBroker(Config(memory_limit=LIMIT))
    core = broker.broker
    offline_subscriber(broker)
    pub = RawClient(broker.link(), version=4)
    pub.connect("pub")
    pub.publish("t", bytes(LIMIT), 1)
    pub.send(Publish("t", b"x", 1, packet_id=2))
    pub.expect_closed()
    assert core.stats.messages_dropped == 1
    assert core.stats.refused == {Reason.QUOTA_EXCEEDED: 1}
    qos0 = RawClient(broker.link(), version=4)
    qos0.connect("pub0")
    qos0.send(Publish("t", b"x", 0))
    qos0.expect_closed()
    assert core.stats.messages_dropped == 2
    assert [m.payload for m in reconnect(broker)] == [bytes(LIMIT)]
    again = RawClient(broker.link(), version=4)
    again.connect("pub")
    again.publish("t", b"x", 1)
    assert broker.call(core.memory_used) == 1


def test_retained_messages_count_and_clearing_one_frees_its_bytes() -> None:
    broker = MemoryBroker(Config(memory_limit=LIMIT))
    core = broker.broker
    pub = RawClient(broker.link(), version=5)
    pub.connect5("pub")
    ack = pub.publish("r/1", bytes(2 * SIZE), 1, retain=True)
    assert isinstance(ack, Puback) and ack.reason_code == Reason.NO_MATCHING_SUBSCRIBERS
    pub.publish("r/1", bytes(SIZE), 1, retain=True)  # replaces it: counted once
    pub.publish("r/2", bytes(2 * SIZE), 1, retain=True)
    assert broker.call(core.memory_used) == LIMIT
    ack = pub.publish("r/3", b"x", 1, retain=True)
    assert isinstance(ack, Puback) and ack.reason_code == Reason.QUOTA_EXCEEDED
    assert core.retained.get("r/3") is None
    pub.publish("r/2", b"", 1, retain=True)  # an empty payload clears it (and costs nothing)
    assert broker.call(core.memory_used) == SIZE
    ack = pub.publish("r/3", b"x", 1, retain=True)
    assert isinstance(ack, Puback) and ack.reason_code < 0x80


def test_what_sessions_hold_is_counted_exactly_through_a_session_s_life() -> None:
    """The count follows queue, in-flight window, acks, a clean start and session expiry, so
    the limit never stays reached by bytes nobody holds."""
    broker = MemoryBroker(Config(max_inflight_messages=2))
    core = broker.broker
    sub = RawClient(broker.link(), version=5)
    sub.connect5("s", properties={0x11: 10})
    sub.subscribe("t", 2)
    pub = RawClient(broker.link(), version=5)
    pub.connect5("pub")
    for i in range(5):
        pub.publish("t", bytes(100 + i), 1 + i % 2)
    assert broker.call(core.memory_used) == sum(100 + i for i in range(5))  # 2 in flight, 3 queued
    first = sub.wait_for(Publish)
    sub.ack(first, others_stay_queued=True)
    assert broker.call(core.memory_used) == sum(101 + i for i in range(4))
    sub.close()
    broker.clock.run()
    assert broker.call(core.memory_used) == sum(101 + i for i in range(4))  # kept for the session
    broker.advance(11)  # the session expires
    assert "s" not in core.sessions and broker.call(core.memory_used) == 0
    sub = RawClient(broker.link(), version=5)
    sub.connect5("s", properties={0x11: 10})
    sub.subscribe("t", 1)
    sub.close()
    pub.publish("t", bytes(50), 1)
    assert broker.call(core.memory_used) == 50
    clean = RawClient(broker.link(), version=5)
    clean.connect5("s")  # a clean start discards it
    assert broker.call(core.memory_used) == 0
    assert core.stats.held_bytes == sum(s.held() for s in core.sessions.values())
