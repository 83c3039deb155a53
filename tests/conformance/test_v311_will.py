"""MQTT 3.1.1 section 3.1.2.5-3.1.2.7 and 3.14.4: the Will Message, server side.

A Will is stored with the connection and published when the connection ends in any way but a
DISCONNECT (MQTT-3.1.2-8); it is published once and then forgotten (MQTT-3.1.2-10). Tests that
also apply to MQTT 3.1 run for protocol levels 3 and 4.
"""

from __future__ import annotations

import pytest

from midge.codec.packets import Disconnect, Publish, Will
from tests.rawclient import (
    Raw,
    RawClient,
    accepted,
    expect_closed_silently,
    raw_publish,
    subscribe_collecting,
)

BOTH = pytest.mark.parametrize("version", [3, 4], ids=["mqtt31", "mqtt311"])


def watcher(raw: Raw, topic_filter: str = "v311/will/#", qos: int = 2) -> RawClient:
    """A client subscribed to where the Wills go."""
    client = accepted(raw, "v311-will-watcher")
    client.subscribe(topic_filter, qos)
    return client


@BOTH
@pytest.mark.parametrize("how", ["socket-closed", "protocol-error", "keep-alive-expired"])
def test_MQTT_3_1_2_8_will_published_when_connection_lost(raw: Raw, version: int, how: str) -> None:
    """MQTT-3.1.2-8: a Will is stored with the connection and published when the connection closes
    without a DISCONNECT: the client dropping the socket, the server closing it for a protocol
    error, or the Keep Alive expiring."""
    watch = watcher(raw)
    will = Will("v311/will/lost", b"lost: " + how.encode())
    keep_alive = 1 if how == "keep-alive-expired" else 60
    client = accepted(raw, "v311-will-lost", version, will=will, keep_alive=keep_alive)
    if how == "socket-closed":
        client.close()
    elif how == "protocol-error":
        client.send_raw(raw_publish("v311/will/x", b"", qos=3, packet_id=1))
        expect_closed_silently(client)
    else:
        client.advance(1.0)
        watch.expect_nothing()  # not before the Keep Alive has passed
        client.advance(1.0)
    published = watch.expect(Publish, timeout=4.0)
    assert (published.topic, published.payload) == ("v311/will/lost", will.payload)


@BOTH
def test_MQTT_3_1_2_10_will_removed_once_published(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-10: once published the Will is removed from the session: a persistent session
    resumed without a Will and then lost publishes nothing more."""
    watch = watcher(raw)
    will = Will("v311/will/once", b"once")
    first = accepted(raw, "v311-will-once", version, will=will, clean_start=False)
    first.close()
    assert watch.expect(Publish, timeout=2.0).payload == b"once"
    second = accepted(raw, "v311-will-once", version, clean_start=False)
    second.close()
    watch.advance(0.5)
    watch.expect_nothing()


@BOTH
def test_MQTT_3_14_4_3_disconnect_discards_will(raw: Raw, version: int) -> None:
    """MQTT-3.14.4-3: on DISCONNECT the server discards the Will without publishing it. Also
    MQTT-3.1.2-10 (the Will is removed on DISCONNECT): a later loss of a resumed session without a
    Will publishes nothing either."""
    watch = watcher(raw)
    client = accepted(
        raw, "v311-will-bye", version, will=Will("v311/will/bye", b"bye"), clean_start=False
    )
    client.send(Disconnect())
    expect_closed_silently(client)
    watch.advance(0.5)
    watch.expect_nothing()
    resumed = accepted(raw, "v311-will-bye", version, clean_start=False)
    resumed.close()
    watch.advance(0.5)
    watch.expect_nothing()


@BOTH
def test_MQTT_3_1_2_12_no_will_flag_publishes_nothing(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-12: without the Will Flag nothing is published when the connection ends, however
    it ends."""
    watch = watcher(raw, "#", 0)
    client = accepted(raw, "v311-nowill", version)
    client.close()
    watch.advance(0.7)
    watch.expect_nothing()


@BOTH
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_MQTT_3_1_2_14_will_qos_used(raw: Raw, version: int, qos: int) -> None:
    """MQTT-3.1.2-14 (Will QoS 0, 1 or 2) with MQTT-3.1.2-9 (the server uses the Will QoS): the
    Will is published at its QoS, so a QoS 2 subscriber receives it at exactly that QoS."""
    watch = watcher(raw, "v311/will/qos", 2)
    client = accepted(raw, "v311-will-qos", version, will=Will("v311/will/qos", b"q", qos=qos))
    client.close()
    published = watch.expect(Publish, timeout=2.0)
    assert published.qos == qos
    watch.ack(published)


@BOTH
def test_MQTT_3_1_2_16_will_retain_0_not_retained(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-16: with Will Retain 0 the Will is published as a non-retained message: the
    live subscriber gets it with RETAIN 0 and a later subscriber gets nothing."""
    watch = watcher(raw)
    client = accepted(raw, "v311-will-r0", version, will=Will("v311/will/r0", b"r0", retain=False))
    client.close()
    published = watch.expect(Publish, timeout=2.0)
    assert (published.payload, published.retain) == (b"r0", False)
    later = accepted(raw, "v311-will-later", version)
    later.subscribe("v311/will/#", 0)
    later.expect_nothing(0.5)


@BOTH
def test_MQTT_3_1_2_17_will_retain_1_retained(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-17: with Will Retain 1 the Will is published as a retained message: a later
    subscriber receives it with RETAIN 1 (the live subscriber gets RETAIN 0, MQTT-3.3.1-9)."""
    watch = watcher(raw)
    will = Will("v311/will/r1", b"r1", qos=1, retain=True)
    client = accepted(raw, "v311-will-r1", version, will=will)
    client.close()
    live = watch.expect(Publish, timeout=2.0)
    assert (live.payload, live.retain) == (b"r1", False)
    watch.ack(live)
    later = accepted(raw, "v311-will-later", version)
    suback, before = subscribe_collecting(later, ("v311/will/#", 1))
    assert suback.reason_codes == [1]
    retained = [p for p in before + later.recv_all(0.5) if isinstance(p, Publish)]
    assert [(p.topic, p.payload, p.retain, p.qos) for p in retained] == [
        ("v311/will/r1", b"r1", True, 1)
    ]
