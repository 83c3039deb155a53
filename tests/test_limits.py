"""Limits (issue 6): each refused with the right reason code, in v3.1.1 and v5, and counted in the
broker's stats. A broker on a real socket, our raw client.

- connections over ``max_connections`` (per listener) or ``global_max_connections``: CONNACK
  0x97 Quota exceeded (v3.1.1: return code 3, server unavailable), then closed;
- new connections over ``max_connection_rate`` from one address: CONNACK 0x9F (v3.1.1: 3);
- PUBLISH over ``max_publish_rate``: DISCONNECT 0x96 Message rate too high (v3.1.1: closed);
- topics over ``max_topic_levels`` / ``max_topic_length``: PUBLISH not routed, PUBACK 0x90
  (v3.1.1: acknowledged, not routed); SUBSCRIBE 0x8F (v3.1.1: 0x80);
- filters over ``max_subscriptions``: SUBACK 0x97 (v3.1.1: 0x80).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from midge.codec import encode
from midge.codec.packets import Disconnect, Puback, Publish
from midge.codec.reasons import ConnackV3, Reason
from midge.config import ListenerConfig, parse_mosquitto_conf, parse_toml
from tests.conftest import RunningBroker
from tests.rawclient import RawClient

V5, V311 = 5, 4


def stats(broker: RunningBroker) -> Any:
    core = broker.server.broker
    assert core is not None
    return broker.call(lambda: core.stats)


def refused(client: RawClient, version: int, reason: int) -> None:
    """The client's CONNECT is answered with ``reason`` (v3.1.1: server unavailable), then the
    connection closes."""
    connack = client.connect(f"c-{time.monotonic_ns()}")
    expected = reason if version == V5 else ConnackV3.SERVER_UNAVAILABLE
    assert connack.reason_code == expected
    assert client.wait_closed(2)


@pytest.mark.parametrize("version", [V311, V5])
def test_max_connections_per_listener(
    make_broker: Callable[..., RunningBroker], clients: Callable[..., RawClient], version: int
) -> None:
    broker = make_broker(listeners=[ListenerConfig(port=0, host="127.0.0.1", max_connections=2)])
    first, second = clients(broker, version), clients(broker, version)
    assert first.connect("a").reason_code == 0
    assert second.connect("b").reason_code == 0
    refused(clients(broker, version), version, Reason.QUOTA_EXCEEDED)
    assert stats(broker).limited_connections == 1
    first.disconnect()
    deadline = time.monotonic() + 2
    accepted = False
    while not accepted and time.monotonic() < deadline:
        # The slot frees once the broker has seen the socket close.
        accepted = clients(broker, version).connect("c").reason_code == 0
    assert accepted


def test_global_max_connections_spans_listeners(
    make_broker: Callable[..., RunningBroker], clients: Callable[..., RawClient]
) -> None:
    broker = make_broker(
        listeners=[
            ListenerConfig(port=0, host="127.0.0.1"),
            ListenerConfig(port=0, host="127.0.0.1"),
        ],
        global_max_connections=1,
    )
    assert clients(broker).connect("a").reason_code == 0
    other_port = broker.server.addresses[1][1]
    late = RawClient(broker.host, other_port, V5)
    try:
        refused(late, V5, Reason.QUOTA_EXCEEDED)
    finally:
        late.close()
    assert stats(broker).limited_connections == 1


@pytest.mark.parametrize("version", [V311, V5])
def test_connection_rate_per_address(
    make_broker: Callable[..., RunningBroker], clients: Callable[..., RawClient], version: int
) -> None:
    broker = make_broker(max_connection_rate=3)
    for i in range(3):
        assert clients(broker, version).connect(f"ok{i}").reason_code == 0
    refused(clients(broker, version), version, Reason.CONNECTION_RATE_EXCEEDED)
    assert stats(broker).limited_connection_rate == 1
    time.sleep(1.1)  # a second's worth of tokens again
    assert clients(broker, version).connect("later").reason_code == 0


@pytest.mark.parametrize("version", [V311, V5])
def test_publish_rate(
    make_broker: Callable[..., RunningBroker], clients: Callable[..., RawClient], version: int
) -> None:
    broker = make_broker(max_publish_rate=5)
    calm = clients(broker, version)
    calm.connect("calm")
    for _ in range(4):  # within the burst
        calm.publish("r/calm", b"x", qos=1)
    fast = clients(broker, version)
    fast.connect("fast")
    # All 20 in one write: sent before the broker reads them, so none goes to a closed socket.
    fast.send_raw(encode(Publish("r/fast", b"x"), version) * 20)
    if version == V5:
        assert fast.expect(Disconnect).reason_code == Reason.MESSAGE_RATE_TOO_HIGH
    assert fast.wait_closed(2)
    assert stats(broker).limited_publish_rate == 1
    assert isinstance(calm.publish("r/calm", b"y", qos=1), Puback)  # the other client is fine


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize(
    ("limit", "ok", "too_long"),
    [
        ({"max_topic_levels": 3}, "a/b/c", "a/b/c/d"),
        ({"max_topic_length": 10}, "0123456789", "0123456789a"),
        ({"max_topic_length": 5}, "ééa", "ééé"),  # bytes, not characters: 6 > 5
    ],
)
def test_topic_limits(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    version: int,
    limit: dict[str, int],
    ok: str,
    too_long: str,
) -> None:
    broker = make_broker(**limit)
    sub = clients(broker, version)
    sub.connect("sub")
    assert sub.subscribe(ok, 1).reason_codes == [1]
    bad_code = Reason.TOPIC_FILTER_INVALID if version == V5 else 0x80
    assert sub.subscribe(too_long, 1).reason_codes == [bad_code]
    if "max_topic_levels" not in limit:
        assert sub.subscribe("#", 1).reason_codes == [1]
    pub = clients(broker, version)
    pub.connect("pub")
    puback = pub.publish(too_long, b"no", qos=1)
    assert isinstance(puback, Puback)
    assert puback.reason_code == (Reason.TOPIC_NAME_INVALID if version == V5 else 0)
    pub.publish(ok, b"yes", qos=1)
    # Also subscribed to "#": an MQTT 5 client gets a copy per subscription (as Mosquitto).
    copies = 2 if version == V5 and "max_topic_levels" not in limit else 1
    for _ in range(copies):
        got = sub.expect(Publish)
        assert (got.topic, got.payload) == (ok, b"yes")
        sub.ack(got)
    sub.expect_nothing(0.3)
    assert stats(broker).limited_topics == 2  # the filter and the publish


@pytest.mark.parametrize("version", [V311, V5])
def test_max_subscriptions(
    make_broker: Callable[..., RunningBroker], clients: Callable[..., RawClient], version: int
) -> None:
    broker = make_broker(max_subscriptions=2)
    client = clients(broker, version)
    client.connect("many")
    assert client.subscribe("s/1").reason_codes == [0]
    assert client.subscribe("s/2").reason_codes == [0]
    full = Reason.QUOTA_EXCEEDED if version == V5 else 0x80
    assert client.subscribe("s/3").reason_codes == [full]
    assert client.subscribe("s/1", 1).reason_codes == [1]  # replacing one is not another
    client.unsubscribe("s/2")
    assert client.subscribe("s/3").reason_codes == [0]
    assert stats(broker).limited_subscriptions == 1


def test_options_read_from_mosquitto_conf_and_toml() -> None:
    text = (
        "global_max_connections 100\nmax_connection_rate 50\nmax_publish_rate 1000\n"
        "max_subscriptions 10\nmax_topic_levels 8\nmax_topic_length 256\n"
    )
    c = parse_mosquitto_conf(text)
    got = (
        c.global_max_connections,
        c.max_connection_rate,
        c.max_publish_rate,
        c.max_subscriptions,
        c.max_topic_levels,
        c.max_topic_length,
    )
    assert got == (100, 50, 1000, 10, 8, 256)
    t = parse_toml(
        "global_max_connections = 100\nmax_connection_rate = 50\nmax_publish_rate = 1000\n"
        "max_subscriptions = 10\nmax_topic_levels = 8\nmax_topic_length = 256\n"
    )
    assert (t.max_publish_rate, t.max_subscriptions, t.max_topic_length) == (1000, 10, 256)


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize(
    ("config", "packet", "reason"),
    [
        ({"max_packet_size": 100}, Publish("p/big", b"x" * 200), Reason.PACKET_TOO_LARGE),
        ({"max_qos": 1}, Publish("p/q2", b"x", 2, packet_id=1), Reason.QOS_NOT_SUPPORTED),
        ({"retain_available": False}, Publish("p/r", b"x", retain=True), 0x9A),
    ],
)
def test_packet_limits_are_answered_and_counted(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    version: int,
    config: dict[str, Any],
    packet: Publish,
    reason: int,
) -> None:
    """max_packet_size, max_qos, retain_available: v5 DISCONNECT with the reason, v3 closed;
    each counted in the broker's stats by reason code."""
    broker = make_broker(**config)
    client = clients(broker, version)
    assert client.connect("big").reason_code == 0
    client.send(packet)
    if version == V5:
        assert client.expect(Disconnect).reason_code == reason
    assert client.wait_closed(2)
    assert stats(broker).refused.get(reason) == 1
