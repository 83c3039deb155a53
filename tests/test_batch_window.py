"""``batch_window``: a busy broker process handles its sockets once per window and rests in
between (midge.transport.pacer). On a real socket, with real processes for ``--workers``: every
message arrives, in order and once, and the broker did rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from midge.codec.packets import Publish
from tests.conftest import RunningBroker
from tests.rawclient import RawClient, receive_publishes

WINDOW = 0.02


def test_a_busy_broker_rests_and_delivers_every_message_in_order(
    make_broker: Callable[..., RunningBroker], clients: Callable[..., RawClient]
) -> None:
    broker = make_broker(batch_window=WINDOW)
    sub = clients(broker, 4)
    sub.connect("sub")
    sub.subscribe("w/#", 2)
    pub = clients(broker, 5)
    pub.connect5("pub")
    # Each QoS 1/2 publish waits for its ack, so the broker turns once per window at most:
    # after the first turn of a quiet spell, each turn that answers rests.
    for i in range(12):
        pub.publish(f"w/{i}", f"m{i}".encode(), qos=1 + i % 2)
    got = receive_publishes(sub, 12, timeout=10)
    assert [(p.topic, p.payload, p.qos) for p in got] == [
        (f"w/{i}", f"m{i}".encode(), 1 + i % 2) for i in range(12)
    ]
    sub.expect_nothing(0.2)
    rests, slept = broker.call(lambda: (broker.server.pacer.rests, broker.server.pacer.slept))
    assert rests >= 6 and 0 < slept <= rests * WINDOW, (rests, slept)


def test_no_window_by_default(broker: RunningBroker, raw: Any) -> None:
    client = raw()
    client.connect("c")
    client.subscribe("t", 0)
    client.publish("t", b"x", qos=0)
    assert isinstance(client.expect(Publish), Publish)
    assert broker.server.pacer is None
