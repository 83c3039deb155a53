"""MQTT 5.0: the Client's Maximum Packet Size (sections 3.1.2.11.4 and the "MUST NOT send this
property if it would increase the size of the packet beyond the Maximum Packet Size" statements
for Reason String and User Property on CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK
and DISCONNECT).

The Client announces a small Maximum Packet Size and the test triggers answers where a server is
most tempted to add a Reason String (failures); every packet on the wire must fit.
"""

from __future__ import annotations

from typing import Any

import pytest

from midge.codec.packets import Connect, Puback, Pubcomp, Publish, Pubrec, Pubrel
from midge.codec.properties import Prop
from tests.conformance.test_v5_support import Clients, RawClient, frames, tap
from tests.rawclient import raw_connect

SEI = Prop.SESSION_EXPIRY_INTERVAL
MPS = Prop.MAXIMUM_PACKET_SIZE
SMALL = 16  # room for any ack with a Reason Code and no properties, not for a Reason String


def _small(
    clients: Clients, client_id: str, maximum: int = SMALL, **fields: Any
) -> tuple[RawClient, bytearray]:
    c = clients.open()
    wire = tap(c)
    properties = {MPS: maximum, Prop.REQUEST_PROBLEM_INFORMATION: 1, **fields.pop("properties", {})}
    c.connect5(client_id, properties=properties, **fields)
    return c, wire


def _sizes(wire: bytearray, packet_type: int) -> list[int]:
    return [len(f) for f in frames(wire) if f[0] >> 4 == packet_type]


def test_MQTT_3_1_2_24_server_respects_client_maximum_packet_size(clients: Clients) -> None:
    """MQTT-3.1.2-24: the server never sends a packet larger than the Client's Maximum Packet Size
    (100): a PUBLISH that would be 200+ bytes is not sent, smaller ones are."""
    sub, wire = _small(clients, "mps24", maximum=100)
    sub.sub("m24/t", qos=1)
    pub = clients.connect("mps24-pub")
    pub.pub("m24/t", bytes(200), qos=1)
    pub.pub("m24/t", bytes(60), qos=1)
    [msg] = sub.publishes(1)
    assert len(msg.payload) == 60
    sub.no_publish()
    assert max(len(f) for f in frames(wire)) <= 100


def test_MQTT_3_1_2_25_too_large_message_is_discarded_as_if_sent(clients: Clients) -> None:
    """MQTT-3.1.2-25: a packet too large to send is discarded and the server behaves as if it had
    completed sending it: with Receive Maximum 1 the next QoS 1 message is not held back behind
    it, and it is not sent when the Session resumes either."""
    sub, _ = _small(
        clients,
        "mps25",
        maximum=100,
        clean_start=False,
        properties={SEI: 60, Prop.RECEIVE_MAXIMUM: 1},
    )
    sub.sub("m25/t", qos=1)
    pub = clients.connect("mps25-pub")
    pub.pub("m25/t", bytes(300), qos=1)
    pub.pub("m25/t", b"small", qos=1)
    [msg] = sub.publishes(1)
    assert msg.payload == b"small"
    sub.send(Puback(msg.packet_id or 0))
    sub.ping()
    sub.close()
    again = clients.open()
    again.connect5("mps25", clean_start=False, properties={SEI: 60, MPS: 100})
    again.no_publish()


@pytest.mark.parametrize("refused", [False, True])
def test_MQTT_3_2_2_19_connack_fits_client_maximum(clients: Clients, refused: bool) -> None:
    """MQTT-3.2.2-19 and MQTT-3.2.2-20: no Reason String or User Property that would make the
    CONNACK exceed the Client's Maximum Packet Size (accepted, and refused for an unsupported
    Authentication Method)."""
    c = clients.open()
    wire = tap(c)
    properties: dict[int, Any] = {MPS: SMALL, Prop.REQUEST_PROBLEM_INFORMATION: 1}
    if refused:
        properties[Prop.AUTHENTICATION_METHOD] = "unsupported-method"
    c.send(Connect("mps19", protocol_level=5, keep_alive=0, properties=properties))
    if refused:
        c.expect_refused()
    else:
        c.recv()
    assert all(size <= SMALL for size in _sizes(wire, 2)), _sizes(wire, 2)


def test_MQTT_3_4_2_2_puback_fits_client_maximum(make_broker: Any) -> None:
    """MQTT-3.4.2-2 and MQTT-3.4.2-3: PUBACKs carry no Reason String or User Property beyond the
    Client's Maximum Packet Size (no subscribers; above message_size_limit)."""
    with Clients(make_broker(message_size_limit=5)) as clients:
        c, wire = _small(clients, "mps42")
        c.send(Publish("n", b"x", 1, packet_id=1))
        c.send(Publish("n", b"too large", 1, packet_id=2))
        c.wait_for(Puback)
        c.wait_for(Puback)
        c.ping()
        assert all(size <= SMALL for size in _sizes(wire, 4))


def test_MQTT_3_5_2_2_pubrec_fits_client_maximum(make_broker: Any) -> None:
    """MQTT-3.5.2-2 and MQTT-3.5.2-3: PUBRECs carry no Reason String or User Property beyond the
    Client's Maximum Packet Size."""
    with Clients(make_broker(message_size_limit=5)) as clients:
        c, wire = _small(clients, "mps52")
        c.send(Publish("n", b"x", 2, packet_id=1))
        c.send(Publish("n", b"too large", 2, packet_id=2))
        c.wait_for(Pubrec)
        c.wait_for(Pubrec)
        c.ping()
        assert all(size <= SMALL for size in _sizes(wire, 5))


def test_MQTT_3_6_2_2_pubrel_fits_client_maximum(clients: Clients) -> None:
    """MQTT-3.6.2-2 and MQTT-3.6.2-3: the server's PUBRELs (after a PUBREC 0x10 too) carry no
    Reason String or User Property beyond the Client's Maximum Packet Size."""
    c, wire = _small(clients, "mps62")
    c.sub("r", qos=2)
    pub = clients.connect("mps62-pub")
    pub.pub("r", b"x", qos=2)
    pub.pub("r", b"y", qos=2)
    a, b = c.publishes(2)
    c.send(Pubrec(a.packet_id or 0))
    c.send(Pubrec(b.packet_id or 0, 0x10))
    c.wait_for(Pubrel)
    c.wait_for(Pubrel)
    c.ping()
    assert all(size <= SMALL for size in _sizes(wire, 6))


def test_MQTT_3_7_2_2_pubcomp_fits_client_maximum(clients: Clients) -> None:
    """MQTT-3.7.2-2 and MQTT-3.7.2-3: PUBCOMPs (for a known and an unknown Packet Identifier) carry
    no Reason String or User Property beyond the Client's Maximum Packet Size."""
    c, wire = _small(clients, "mps72")
    c.send(Publish("n", b"x", 2, packet_id=1))
    c.wait_for(Pubrec)
    c.send(Pubrel(1))
    c.send(Pubrel(77))
    c.wait_for(Pubcomp)
    c.wait_for(Pubcomp)
    c.ping()
    assert all(size <= SMALL for size in _sizes(wire, 7))


def test_MQTT_3_9_2_1_suback_fits_client_maximum(clients: Clients) -> None:
    """MQTT-3.9.2-1 and MQTT-3.9.2-2: SUBACKs carry no Reason String or User Property beyond the
    Client's Maximum Packet Size (with a User Property on the SUBSCRIBE, shared and $ filters)."""
    c, wire = _small(clients, "mps92")
    c.sub("a", properties={Prop.USER_PROPERTY: [("please", "echo")]})
    c.sub("$share/g/b", qos=1)
    c.sub("$SYS/x", qos=2)
    c.ping()
    assert all(size <= SMALL for size in _sizes(wire, 9))


def test_MQTT_3_11_2_1_unsuback_fits_client_maximum(clients: Clients) -> None:
    """MQTT-3.11.2-1 and MQTT-3.11.2-2: UNSUBACKs (0x11 No subscription existed included) carry no
    Reason String or User Property beyond the Client's Maximum Packet Size."""
    c, wire = _small(clients, "mps112")
    c.sub("u")
    c.unsub("u")
    c.unsub("never")
    c.ping()
    assert all(size <= SMALL for size in _sizes(wire, 11))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(raw_connect("again", version=5), id="second-connect"),
        pytest.param(bytes([0xC1, 0x00]), id="malformed"),
    ],
)
def test_MQTT_3_14_2_3_disconnect_fits_client_maximum(clients: Clients, data: bytes) -> None:
    """MQTT-3.14.2-3 and MQTT-3.14.2-4: the server's DISCONNECT carries no Reason String or User
    Property beyond the Client's Maximum Packet Size; a takeover DISCONNECT neither."""
    c, wire = _small(clients, "mps143")
    c.send_raw(data)
    c.expect_disconnect()
    assert all(size <= SMALL for size in _sizes(wire, 14)), _sizes(wire, 14)
    old, old_wire = _small(clients, "mps143b")
    clients.connect("mps143b")
    old.expect_disconnect()
    assert all(size <= SMALL for size in _sizes(old_wire, 14)), _sizes(old_wire, 14)
