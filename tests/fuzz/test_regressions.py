"""Broker bugs the fuzz tests found, each minimised to the exact bytes that show it.

Each test connects one v5 client, sends one packet, and checks the exact bytes the broker answers
before it closes: a DISCONNECT (``e0 01 <reason>``) with the reason code the MQTT 5.0 spec gives.
"""

from __future__ import annotations

from midge.codec.packets import Pingresp
from tests.fuzz.harness import read_to_eof
from tests.memory import MemoryBroker
from tests.rawclient import RawClient, read_raw_packet


def answer_to(broker: MemoryBroker, packet: bytes) -> bytes:
    """Everything the broker sends a connected v5 client after ``packet``, until it closes."""
    with RawClient.to(broker, version=5) as client:
        assert client.connect("regression", keep_alive=0).reason_code == 0
        client.send_raw(packet)
        data, closed = read_to_eof(client)
    assert closed, f"the broker did not close the connection; it sent {data!r}"
    return data


def test_empty_topic_without_alias_is_a_protocol_error(broker: MemoryBroker) -> None:
    """PUBLISH QoS 0, topic "" (00 00), no properties, payload "p".

    MQTT 5.0 section 3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there
    is no Topic Alias" -> DISCONNECT 0x82. (Found: midge answered 0x90 Topic Name invalid, which
    table 3-10 describes as "the Topic Name is correct, but is not accepted"; Mosquitto 2.0.11
    answers 0x82.)
    """
    assert answer_to(broker, b"\x30\x04\x00\x00\x00p") == b"\xe0\x01\x82"


def test_subscribe_maximum_qos_3_is_answered_as_mosquitto_does(broker: MemoryBroker) -> None:
    """SUBSCRIBE id 1, no properties, filter "a" with options 0x03 (Maximum QoS 3).

    MQTT 5.0 section 3.8.3.1 calls it a Protocol Error; either 0x81 or 0x82 closes the connection
    (MQTT 5 4.13), and Mosquitto 2.0.11 sends DISCONNECT 0x81, so midge does too (issue 11: where
    several codes fit, Mosquitto's). Earlier midge sent 0x82; this pins the choice.
    """
    assert answer_to(broker, b"\x82\x07\x00\x01\x00\x00\x01a\x03") == b"\xe0\x01\x81"


def test_second_connect_with_unknown_level_is_a_protocol_error(broker: MemoryBroker) -> None:
    """A second CONNECT whose protocol level is 0: ``10 07 00 04 'MQTT' 00``.

    MQTT-3.1.0-2: a second CONNECT is a Protocol Error -> DISCONNECT 0x82. (Found: midge answered
    DISCONNECT 0x84, a CONNACK-only reason code that no client can decode in a DISCONNECT;
    fixed in 3f2a5d6, kept as a regression test.)
    """
    assert answer_to(broker, b"\x10\x07\x00\x04MQTT\x00") == b"\xe0\x01\x82"


def test_topic_alias_0_is_topic_alias_invalid(broker: MemoryBroker) -> None:
    """PUBLISH QoS 0 to "a" with Topic Alias 0 (properties ``03 23 00 00``).

    MQTT 5.0 section 3.3.4: "A Topic Alias value of 0 or greater than the Maximum Topic Alias is
    a Protocol Error, the receiver uses DISCONNECT with Reason Code of 0x94". (Found: midge
    answered 0x82; fixed in 3f2a5d6, kept as a regression test.)
    """
    assert answer_to(broker, b"\x30\x08\x00\x01a\x03\x23\x00\x00p") == b"\xe0\x01\x94"


def test_forwarded_publish_has_a_minimal_remaining_length(broker: MemoryBroker) -> None:
    """A v5 PUBLISH to "a" whose Remaining Length 4 is written in two bytes (``84 00``).

    The broker accepts a non-minimal Remaining Length from a client (as Mosquitto does), but
    what it sends must use "the minimum number of bytes necessary" (MQTT-1.5.5-1). (Found after
    182d272: the received PUBLISH bytes were forwarded unchanged, ``30 84 00 ...``, to the
    subscriber.)
    """
    with (
        RawClient.to(broker, version=5) as sub,
        RawClient.to(broker, version=5) as pub,
    ):
        assert sub.connect("sub", keep_alive=0).reason_code == 0
        sub.subscribe("a")
        assert pub.connect("pub", keep_alive=0).reason_code == 0
        pub.send_raw(b"\x30\x84\x00\x00\x01a\x00")
        pub.send_raw(b"\xc0\x00")  # PINGREQ: the PUBLISH was processed once PINGRESP is back
        assert isinstance(pub.recv(), Pingresp)
        assert read_raw_packet(sub) == b"\x30\x04\x00\x01a\x00"
