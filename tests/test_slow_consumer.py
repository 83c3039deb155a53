"""QoS 0 to a connected client that reads slower than messages come (issue 11), in memory.

A connected client's QoS 0 messages wait in its session while its socket is backed up (the
transport paused writing), bounded by ``max_queued_messages`` / ``max_queued_bytes`` as Mosquitto
bounds the QoS 0 packets it has not written yet; they go out, in order, as the transport resumes.
Only a reader that really stalls loses messages, each counted. The link models a socket under
asyncio (:meth:`tests.memory.MemoryLink.limit_output`); the real-socket burst is in
tests/interop/test_paho.py.
"""

from __future__ import annotations

import pytest

from midge.broker.session import DRAIN_BYTES
from midge.codec.packets import Puback, Publish
from midge.config import Config
from tests.memory import MemoryBroker
from tests.rawclient import RawClient

#: The stalled reader's socket: the kernel holds KERNEL bytes, asyncio pauses above HIGH.
KERNEL = 1000
HIGH = 1000
SIZE = 10_000  # each payload: one PUBLISH fills the socket and pauses the transport


def stalled(broker: MemoryBroker, version: int = 4) -> RawClient:
    """A subscriber to ``t`` at QoS 0 whose socket is then limited; it reads nothing until the
    test calls ``recv``."""
    sub = RawClient(broker.link(), version=version)
    if version == 5:
        sub.connect5("slow")
    else:
        sub.connect("slow")
    sub.subscribe("t", 0)
    assert sub.link is not None
    sub.link.limit_output(KERNEL, HIGH)
    return sub


def publish_burst(broker: MemoryBroker, count: int, size: int = SIZE) -> None:
    pub = RawClient(broker.link(), version=4)
    pub.connect("pub")
    for i in range(count):
        pub.send(Publish("t", i.to_bytes(4, "big") + bytes(size - 4), 0))
        broker.clock.run()  # each arrives on a loop turn of its own
    pub.disconnect()


def numbers(messages: list[Publish]) -> list[int]:
    return [int.from_bytes(m.payload[:4], "big") for m in messages]


@pytest.mark.parametrize("version", [4, 5])
def test_a_stalled_reader_keeps_max_queued_messages_and_loses_the_rest_counted(
    version: int,
) -> None:
    broker = MemoryBroker(Config(max_queued_messages=5))
    sub = stalled(broker, version)
    publish_burst(broker, 20)
    stats = broker.broker.stats
    # The first PUBLISH went to the socket (and paused it); 5 wait in the session; 14 dropped.
    assert (stats.messages_dropped, stats.queue_dropped) == (14, 14)
    session = broker.broker.sessions["slow"]
    assert session.backlog is not None and len(session.backlog) == 5
    assert session.dropped == 14
    assert broker.broker.memory_used() == 5 * SIZE
    received = sub.more_publishes()
    assert numbers(received) == list(range(6)), "the kept ones, in order"
    assert session.backlog is None and broker.broker.memory_used() == 0
    assert stats.messages_dropped == 14


def test_max_queued_bytes_bounds_what_waits_for_the_socket() -> None:
    broker = MemoryBroker(Config(max_queued_messages=0, max_queued_bytes=3 * SIZE + SIZE // 2))
    sub = stalled(broker)
    publish_burst(broker, 10)
    stats = broker.broker.stats
    # Bytes are queued until the limit is exceeded (Mosquitto): the message that crosses it,
    # the fourth waiting one, is kept; the first was written before the socket backed up.
    assert (stats.messages_dropped, stats.queue_dropped) == (5, 5)
    assert numbers(sub.more_publishes()) == [0, 1, 2, 3, 4]
    # Reading frees the room: the next burst is kept again, up to the limit.
    publish_burst(broker, 10)
    assert stats.messages_dropped == 10
    assert numbers(sub.more_publishes()) == [0, 1, 2, 3, 4]


def test_a_reader_that_keeps_reading_gets_every_message_in_order() -> None:
    """Resuming writes what waited before anything newer: a slow but steady reader loses
    nothing while it keeps within the limit."""
    broker = MemoryBroker(Config(max_queued_messages=3))
    sub = stalled(broker)
    pub = RawClient(broker.link(), version=4)
    pub.connect("pub")
    got: list[Publish] = []
    for i in range(30):
        pub.send(Publish("t", i.to_bytes(4, "big") + bytes(SIZE - 4), 0))
        if i % 2:
            got.extend(sub.more_publishes())  # reads after every second message
    got.extend(sub.more_publishes())
    assert numbers(got) == list(range(30))
    assert broker.broker.stats.messages_dropped == 0


def test_qos1_is_not_held_back_by_a_paused_socket_and_qos0_keeps_its_order() -> None:
    broker = MemoryBroker(Config(max_queued_messages=10))
    sub = RawClient(broker.link(), version=4)
    sub.connect("slow")
    sub.subscribe("t", 1)
    assert sub.link is not None
    sub.link.limit_output(KERNEL, HIGH)
    pub = RawClient(broker.link(), version=4)
    pub.connect("pub")
    for packet in (
        Publish("t", b"a" * SIZE, 0),  # written: the socket is backed up from now on
        Publish("t", b"b" * SIZE, 0),  # waits in the session
        Publish("t", b"c", 1, packet_id=1),  # QoS 1: the in-flight window bounds it, not the socket
        Publish("t", b"d" * SIZE, 0),  # waits, after b
    ):
        pub.send(packet)
        broker.clock.run()  # each on a loop turn of its own
    session = broker.broker.sessions["slow"]
    assert session.backlog is not None and len(session.backlog) == 2
    assert len(session.inflight) == 1
    ack = pub.recv()
    assert isinstance(ack, Puback) and ack.packet_id == 1
    got = sub.more_publishes(ack=True)
    assert [m.payload[:1] for m in got] == [b"a", b"c", b"b", b"d"]
    assert broker.broker.stats.messages_dropped == 0


def test_a_client_that_goes_away_takes_its_waiting_qos0_with_it() -> None:
    broker = MemoryBroker(Config(max_queued_messages=5))
    sub = stalled(broker)
    publish_burst(broker, 4)
    assert broker.broker.memory_used() == 3 * SIZE
    sub.close()
    broker.clock.run()
    assert broker.broker.memory_used() == 0
    assert "slow" not in broker.broker.sessions


def test_resuming_writes_a_loop_turn_s_worth_at_a_time() -> None:
    """What waited goes out about DRAIN_BYTES per loop turn, not all at once: the transport's
    buffer stays near its high-water mark instead of taking the whole backlog."""
    high = 200_000
    broker = MemoryBroker(Config(max_queued_messages=100))
    sub = RawClient(broker.link(), version=4)
    sub.connect("slow")
    sub.subscribe("t", 0)
    assert sub.link is not None
    sub.link.limit_output(KERNEL, high)
    publish_burst(broker, 60)
    session = broker.broker.sessions["slow"]
    assert session.backlog is not None and len(session.backlog) > 30
    assert numbers(sub.more_publishes()) == list(range(60))
    assert broker.broker.stats.messages_dropped == 0
    assert DRAIN_BYTES <= 64 * 1024
    assert sub.link.max_buffered <= high + 64 * 1024 + SIZE
