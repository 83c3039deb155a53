"""MQTT 5.0 sections 3.14 (DISCONNECT) and 3.15 (AUTH)."""

from __future__ import annotations

import pytest

from midge.codec import Decoder
from midge.codec.packets import Connack, Disconnect, Publish
from midge.codec.properties import Prop
from tests.conformance.test_v5_support import (
    DISCONNECT_REASONS,
    MALFORMED,
    PROTOCOL_ERROR,
    Clients,
    raw_until_closed,
    tap,
)
from tests.rawclient import Will, raw_connect, raw_packet, raw_publish

SEI = Prop.SESSION_EXPIRY_INTERVAL


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(raw_connect("d0", version=5, flags=0x03), id="malformed-connect"),
        pytest.param(raw_connect("d0", version=5, protocol_name="MQTX"), id="bad-protocol-name"),
        pytest.param(raw_publish("d0/t", b"x", version=5), id="publish-before-connect"),
        pytest.param(raw_packet(0xE0), id="disconnect-before-connect"),
        pytest.param(
            raw_connect("d0", version=5, properties=b"\x03\x15\x00\x00"), id="empty-auth-method"
        ),
    ],
)
def test_MQTT_3_14_0_1_no_disconnect_before_connack(clients: Clients, data: bytes) -> None:
    """MQTT-3.14.0-1: the server sends no DISCONNECT before a CONNACK with a Reason Code below 0x80:
    a refused or failed connection attempt ends with at most a CONNACK, then the close."""
    c = clients.open()
    c.send_raw(data)
    packets = Decoder(version=5).feed(raw_until_closed(c))
    assert not any(isinstance(p, Disconnect) for p in packets), packets
    assert all(isinstance(p, Connack) and p.reason_code >= 0x80 for p in packets), packets


def test_MQTT_3_14_1_1_disconnect_reserved_flags(clients: Clients) -> None:
    """MQTT-3.14.1-1: DISCONNECT reserved flag bits must be 0; if not, the server sends DISCONNECT
    0x81 (Malformed Packet) and closes; the bad DISCONNECT is not a normal disconnection, so the
    Will is published."""
    watcher = clients.connect("d1-watch")
    watcher.sub("d1/will")
    c = clients.connect("d1", will=Will("d1/will", b"not normal"))
    c.send_raw(raw_packet(0xE4, b"\x00"))
    c.expect_disconnect(MALFORMED)
    [will] = watcher.publishes(1)
    assert will.payload == b"not normal"


def test_MQTT_3_14_2_1_server_disconnect_reason_codes(clients: Clients) -> None:
    """MQTT-3.14.2-1: the server's DISCONNECTs use Disconnect Reason Codes (Table 3-10): after a
    takeover, a malformed packet, a protocol error and a bad Topic Alias."""
    codes = []
    old = clients.connect("d21")
    clients.connect("d21")
    codes.append(old.expect_disconnect().reason_code)
    for i, data in enumerate(
        [
            raw_packet(0x00),
            raw_connect("again", version=5),
            raw_publish("t", version=5, properties=b"\x03\x23\x00\x00"),
        ]
    ):
        c = clients.connect(f"d21-{i}")
        c.send_raw(data)
        codes.append(c.expect_disconnect().reason_code)
    assert all(code in DISCONNECT_REASONS for code in codes), [hex(x) for x in codes]
    assert all(code >= 0x80 for code in codes)


def test_MQTT_3_14_2_1_invalid_disconnect_reason_from_client(clients: Clients) -> None:
    """MQTT-3.14.2-1 seen from the server: a DISCONNECT from the Client must carry a Disconnect
    Reason Code; 0x03 is not one, so it is not a normal disconnection and the Will is published."""
    watcher = clients.connect("d21c-watch")
    watcher.sub("d21c/will")
    c = clients.connect("d21c", will=Will("d21c/will", b"bad reason"))
    c.send_raw(raw_packet(0xE0, b"\x03\x00"))
    answer = Decoder(version=5).feed(raw_until_closed(c))
    assert all(isinstance(p, Disconnect) and p.reason_code >= 0x80 for p in answer), answer
    [will] = watcher.publishes(1)
    assert will.payload == b"bad reason"


def test_MQTT_3_14_2_2_server_disconnect_has_no_session_expiry(clients: Clients) -> None:
    """MQTT-3.14.2-2: the server never sends a Session Expiry Interval on DISCONNECT (takeover of a
    Session with Session Expiry 60, protocol error)."""
    old = clients.connect("d22", clean_start=False, properties={SEI: 60})
    clients.connect("d22", clean_start=False, properties={SEI: 60})
    disconnect = old.expect_disconnect()
    assert SEI not in disconnect.properties
    c = clients.connect("d22b", properties={SEI: 60})
    c.send_raw(raw_connect("d22b", version=5))
    assert SEI not in c.expect_disconnect().properties


def test_MQTT_3_14_4_1_nothing_after_disconnect(clients: Clients) -> None:
    """MQTT-3.14.4-1: after sending DISCONNECT the server sends no more packets on the connection:
    a taken-over subscriber gets no PUBLISH after its DISCONNECT even though messages keep coming
    for its topic."""
    old = clients.open()
    wire = tap(old)
    old.connect5("d41", clean_start=False, properties={SEI: 60})
    old.sub("d41/t", qos=1)
    pub = clients.connect("d41-pub")
    pub.pub("d41/t", b"before", qos=1)
    old.publishes(1)
    clients.connect("d41", clean_start=False, properties={SEI: 60})
    for _ in range(5):
        pub.pub("d41/t", b"after", qos=1)
    old.expect_disconnect(0x8E)
    packets = Decoder(version=5).feed(bytes(wire))
    assert isinstance(packets[-1], Disconnect), packets[-3:]
    assert not any(isinstance(p, Publish) and p.payload == b"after" for p in packets)


def test_MQTT_3_14_4_2_server_closes_after_disconnect(clients: Clients) -> None:
    """MQTT-3.14.4-2: after sending DISCONNECT the server closes the connection (it does not wait
    for the Client to do it)."""
    c = clients.connect("d42")
    c.send_raw(raw_packet(0xC0 | 0x01))
    c.expect_disconnect()
    assert c.closed


def test_MQTT_3_14_4_3_normal_disconnect_discards_will(clients: Clients) -> None:
    """MQTT-3.14.4-3: on DISCONNECT 0x00 the server discards the connection's Will without
    publishing it (in both forms: Reason Code omitted, and explicit 0x00 with properties)."""
    watcher = clients.connect("d43-watch")
    watcher.sub("d43/#")
    short = clients.connect("d43a", will=Will("d43/a", b"no"))
    short.send_raw(raw_packet(0xE0))
    long = clients.connect("d43b", will=Will("d43/b", b"no"))
    long.send_raw(raw_packet(0xE0, b"\x00\x05\x1f\x00\x02ok"))
    clients.advance(0.8)
    watcher.no_publish()


def test_MQTT_3_15_1_1_auth_reserved_flags(clients: Clients) -> None:
    """MQTT-3.15.1-1: AUTH fixed-header flags must be 0000; other values are malformed: the server
    closes (DISCONNECT 0x81; 0x82 is tolerated as the AUTH is also unexpected without an
    Authentication Method)."""
    c = clients.connect("auth-flags")
    c.send_raw(raw_packet(0xF1, b"\x18\x00"))
    c.expect_disconnect({MALFORMED, PROTOCOL_ERROR})
