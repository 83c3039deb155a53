"""The counters /metrics reads (midge.broker.session.Stats), in memory on a manual clock: each
drop reason, the by-QoS counts, client DISCONNECT reasons; and the core's operator actions the
admin API calls (Connection.kick, Broker.delete_session, Broker.delete_retained)."""

from __future__ import annotations

import marshal
from typing import Any

from midge.cluster.totals import snapshot
from midge.codec.packets import Puback, Publish
from midge.codec.properties import Prop
from midge.codec.reasons import Reason
from midge.config import Config
from tests.memory import MemoryBroker
from tests.rawclient import RawClient


def test_each_drop_reason_is_counted_once() -> None:
    broker = MemoryBroker(Config(max_queued_messages=1, message_size_limit=100))
    stats = broker.broker.stats
    # A persistent v5 subscriber, gone: its queue takes one message.
    sub = RawClient(broker.link(), version=5)
    sub.connect5("keeper", properties={Prop.SESSION_EXPIRY_INTERVAL: 3600})
    sub.subscribe("q/#", 1)
    sub.disconnect()
    pub = RawClient(broker.link(), version=5)
    pub.connect5("pub")
    expiring: dict[int, Any] = {Prop.MESSAGE_EXPIRY_INTERVAL: 1}
    assert isinstance(pub.publish("q/1", b"expires", 1, properties=expiring), Puback)
    pub.publish("q/1", b"no room", 1)  # the queue is full
    assert stats.queue_dropped == 1
    broker.clock.advance(2)
    again = RawClient(broker.link(), version=5)
    again.connect5(
        "keeper",
        clean_start=False,
        properties={Prop.SESSION_EXPIRY_INTERVAL: 3600, Prop.MAXIMUM_PACKET_SIZE: 30},
    )
    again.no_publish()
    assert stats.dropped_expired == 1
    # Too large for the subscriber's Maximum Packet Size.
    pub.publish("q/1", bytes(40), 1)
    again.no_publish()
    assert stats.dropped_too_large == 1
    # Refused PUBLISHes, by reason: a reserved topic, over message_size_limit.
    ack = pub.publish("$SYS/x", b"", 1)
    assert isinstance(ack, Puback) and ack.reason_code == Reason.NOT_AUTHORIZED
    ack = pub.publish("q/1", bytes(101), 1)
    assert isinstance(ack, Puback) and ack.reason_code == Reason.IMPLEMENTATION_SPECIFIC_ERROR
    assert stats.publish_refused == {
        Reason.NOT_AUTHORIZED: 1,
        Reason.IMPLEMENTATION_SPECIFIC_ERROR: 1,
    }
    # What the other processes of the broker are sent of them (STATS with --workers, a cluster
    # node's snapshot): plain data, which marshal takes (Reason members are IntEnums).
    numbers = marshal.loads(marshal.dumps(snapshot(broker.broker, None)))
    assert numbers["stats"]["publish_refused"] == {0x87: 1, 0x83: 1}
    # No subscriber, at each QoS (QoS 2 is Success at PUBREC, and counted all the same).
    pub.publish("nobody", b"", 0)
    pub.publish("nobody", b"", 1)
    pub.publish("nobody", b"", 2)
    pub.ping()
    assert stats.no_subscribers == 3
    assert stats.received_by_qos == [1, 6, 1]
    assert stats.queue_dropped == 1 and stats.dropped_expired == 1
    assert stats.messages_dropped == 2  # queue full + too large (expiry is not a drop in $SYS)


def test_client_disconnect_reasons_and_the_operator_actions() -> None:
    broker = MemoryBroker(Config())
    core = broker.broker
    v5 = RawClient(broker.link(), version=5)
    v5.connect5("v5", properties={Prop.SESSION_EXPIRY_INTERVAL: 60})
    v5.disconnect(0x04)  # with will
    v3 = RawClient(broker.link(), version=4)
    v3.connect("v3")
    v3.disconnect()
    broker.call(lambda: None)
    assert core.stats.disconnects == {0: 1, 0x04: 1}
    # Kick: DISCONNECT with the operator's reason, counted with the broker's own closes.
    kicked = RawClient(broker.link(), version=5)
    kicked.connect5("kicked", properties={Prop.SESSION_EXPIRY_INTERVAL: 60})
    conn = core.sessions["kicked"].connection
    assert conn is not None
    assert broker.call(lambda: core.delete_session("kicked")) is False  # connected
    broker.call(lambda: conn.kick(Reason.ADMINISTRATIVE_ACTION, "test"))
    kicked.expect_disconnect(Reason.ADMINISTRATIVE_ACTION)
    assert core.stats.refused == {Reason.ADMINISTRATIVE_ACTION: 1}
    # The session stays (expiry 60) until deleted.
    assert "kicked" in core.sessions
    assert broker.call(lambda: core.delete_session("kicked")) is True
    assert "kicked" not in core.sessions
    assert broker.call(lambda: core.delete_session("kicked")) is False
    # Retained: cleared without routing anything to a subscriber.
    watcher = RawClient(broker.link(), version=5)
    watcher.connect5("watcher")
    pub = RawClient(broker.link(), version=5)
    pub.connect5("pub")
    pub.publish("r", b"kept", 1, retain=True)
    watcher.subscribe("r", 1)
    (first,) = watcher.publishes(1)
    watcher.ack(first)
    assert broker.call(lambda: core.delete_retained("r")) is True
    assert broker.call(lambda: core.delete_retained("r")) is False
    watcher.no_publish()
    assert core.retained.get("r") is None
    late = RawClient(broker.link(), version=5)
    late.connect5("late")
    late.subscribe("r", 1)
    late.no_publish()
    assert isinstance(first, Publish)
