"""MQTT 5.0 sections 3.1 (CONNECT), 3.2 (CONNACK) and 4.12 (enhanced authentication).

Will Message statements are in test_v5_will.py, session lifetime in test_v5_session.py and the
Maximum Packet Size statements in test_v5_limits.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from midge.codec import Decoder
from midge.codec.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
)
from midge.codec.packets import Subscription as Sub
from midge.codec.properties import Prop
from tests.conformance.test_v5_support import (
    CONNACK_REASONS,
    MALFORMED,
    PROTOCOL_ERROR,
    Clients,
    frames,
    p_u16,
    p_u32,
    props,
    raw_until_closed,
    tap,
)
from tests.rawclient import (
    Closed,
    Will,
    mqtt_string,
    raw_connect,
    raw_packet,
    raw_publish,
    raw_subscribe,
)

SEI = Prop.SESSION_EXPIRY_INTERVAL
REFUSED_MALFORMED = {MALFORMED, PROTOCOL_ERROR}


# -- 3.1 CONNECT --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(raw_packet(0xC0), id="pingreq"),
        pytest.param(raw_publish("first/t", b"x"), id="publish"),
        pytest.param(raw_subscribe(1, ("first/#", 0)), id="subscribe"),
    ],
)
def test_MQTT_3_1_0_1_first_packet_must_be_connect(clients: Clients, packet: bytes) -> None:
    """MQTT-3.1.0-1 (a Client requirement) seen from the server: a connection whose first packet is
    not CONNECT is closed without an answer (no CONNACK, and no DISCONNECT before a CONNACK,
    MQTT-3.14.0-1) and the packet is not acted on."""
    watcher = clients.connect("first-watch")
    watcher.sub("first/#")
    c = clients.open()
    c.send_raw(packet)
    c.expect_closed()
    watcher.no_publish(0.3)


def test_MQTT_3_1_0_2_second_connect_is_a_protocol_error(clients: Clients) -> None:
    """MQTT-3.1.0-2: a second CONNECT on a connection is a Protocol Error: DISCONNECT 0x82 (not a
    second CONNACK, MQTT-3.2.0-2), then close."""
    c = clients.connect("twice")
    c.send_raw(raw_connect("twice", version=5))
    c.expect_disconnect(PROTOCOL_ERROR)


@pytest.mark.parametrize("name", ["MQTX", "mqtt", "MQT", "MQTTT", ""])
def test_MQTT_3_1_2_1_wrong_protocol_name_closes(clients: Clients, name: str) -> None:
    """MQTT-3.1.2-1: the protocol name must be "MQTT"; for any other name the server closes the
    connection (midge, like Mosquitto, without revealing itself by a CONNACK)."""
    c = clients.open()
    c.send_raw(raw_connect("name", version=5, protocol_name=name))
    assert raw_until_closed(c) == b""


@pytest.mark.parametrize("level", [0, 1, 2, 6, 7, 0x7F, 0xFF])
def test_MQTT_3_1_2_2_unsupported_protocol_version_closes(clients: Clients, level: int) -> None:
    """MQTT-3.1.2-2: "MQTT" with a Protocol Version the server does not accept: it may send CONNACK
    0x84 (Unsupported Protocol Version; v3-style return code 1 where the level is not 5) and then
    must close the connection."""
    c = clients.open()
    packet = bytearray(raw_connect("level", version=5))
    assert packet[4:9] == b"MQTT\x05"
    packet[8] = level
    c.send_raw(bytes(packet))
    data = raw_until_closed(c)
    if data:
        [frame] = frames(data)
        assert frame[0] == 0x20, f"not a CONNACK: {data.hex()}"
        if frame[1] == 2:  # 3.1.1-style CONNACK: flags, return code
            assert frame[2:] == b"\x00\x01", data.hex()
        else:
            assert frame[2] == 0 and frame[3] == 0x84, data.hex()


def test_MQTT_3_1_2_3_reserved_connect_flag_is_malformed(clients: Clients) -> None:
    """MQTT-3.1.2-3: the server validates that the reserved Connect Flag (bit 0) is 0; if not, it is
    a Malformed Packet: refused (at most CONNACK 0x81) and closed."""
    c = clients.open()
    c.send_raw(raw_connect("rsv", version=5, flags=0x03))
    c.expect_refused({MALFORMED})


def test_MQTT_3_1_2_4_clean_start_discards_the_session(clients: Clients) -> None:
    """MQTT-3.1.2-4: Clean Start 1 discards an existing Session: its subscriptions and the messages
    queued for it are gone and Session Present is 0 (MQTT-3.2.2-2)."""
    old = clients.connect("cs4", clean_start=False, properties={SEI: 60})
    old.sub("cs4/t", qos=1)
    old.disconnect()
    pub = clients.connect("cs4-pub")
    pub.pub("cs4/t", b"queued", qos=1)
    new = clients.open()
    assert new.connect5("cs4", clean_start=True, properties={SEI: 60}).session_present is False
    new.no_publish()
    pub.pub("cs4/t", b"live", qos=1)
    new.no_publish()


def test_MQTT_3_1_2_5_clean_start_0_resumes_the_session(clients: Clients) -> None:
    """MQTT-3.1.2-5: Clean Start 0 with an existing Session resumes it: Session Present 1, the
    message queued while offline is delivered and the subscription still works."""
    old = clients.connect("cs5", clean_start=False, properties={SEI: 60})
    old.sub("cs5/t", qos=1)
    old.disconnect()
    pub = clients.connect("cs5-pub")
    pub.pub("cs5/t", b"queued", qos=1)
    new = clients.open()
    assert new.connect5("cs5", clean_start=False, properties={SEI: 60}).session_present is True
    [msg] = new.publishes(1)
    assert msg.payload == b"queued"
    pub.pub("cs5/t", b"live", qos=1)
    [msg] = new.publishes(1)
    assert msg.payload == b"live"


def test_MQTT_3_1_2_6_clean_start_0_without_session_creates_one(clients: Clients) -> None:
    """MQTT-3.1.2-6: Clean Start 0 and no Session: a new Session is created (Session Present 0), and
    it exists afterwards (the next Clean Start 0 connection finds it)."""
    first = clients.open()
    assert first.connect5("cs6", clean_start=False, properties={SEI: 60}).session_present is False
    first.sub("cs6/t", qos=1)
    first.disconnect()
    again = clients.open()
    assert again.connect5("cs6", clean_start=False, properties={SEI: 60}).session_present is True


def test_MQTT_3_1_2_9_will_flag_without_will_fields_is_malformed(clients: Clients) -> None:
    """MQTT-3.1.2-9 (the Client must include Will Properties, Topic and Payload when the Will Flag
    is 1) seen from the server: a CONNECT with the flag and without the fields is malformed and is
    refused."""
    c = clients.open()
    c.send_raw(raw_connect("w9", version=5, flags=0x06))
    c.expect_refused(REFUSED_MALFORMED)


def test_MQTT_3_1_2_11_will_qos_without_will_flag_is_malformed(clients: Clients) -> None:
    """MQTT-3.1.2-11: with Will Flag 0 the Will QoS must be 0; a CONNECT breaking it is refused."""
    c = clients.open()
    c.send_raw(raw_connect("w11", version=5, flags=0x02 | 0x08))
    c.expect_refused(REFUSED_MALFORMED)


def test_MQTT_3_1_2_12_will_qos_3_is_malformed(clients: Clients) -> None:
    """MQTT-3.1.2-12: Will QoS is 0, 1 or 2; 3 is a Malformed Packet: refused and closed."""
    c = clients.open()
    c.send_raw(raw_connect("w12", version=5, will_topic="w12/t", will_payload=b"x", will_qos=3))
    c.expect_refused({MALFORMED})


def test_MQTT_3_1_2_13_will_retain_without_will_flag_is_malformed(clients: Clients) -> None:
    """MQTT-3.1.2-13: with Will Flag 0, Will Retain must be 0; a CONNECT breaking this is
    refused."""
    c = clients.open()
    c.send_raw(raw_connect("w13", version=5, flags=0x02 | 0x20))
    c.expect_refused(REFUSED_MALFORMED)


def test_MQTT_3_1_2_16_user_name_without_flag_is_malformed(clients: Clients) -> None:
    """MQTT-3.1.2-16: User Name Flag 0 means no User Name in the Payload; a CONNECT with one anyway
    (bytes left over after the Client Identifier) is refused."""
    c = clients.open()
    c.send_raw(raw_connect("u16", version=5, tail=mqtt_string("user")))
    c.expect_refused(REFUSED_MALFORMED)


def test_MQTT_3_1_2_17_user_name_flag_without_user_name_is_malformed(clients: Clients) -> None:
    """MQTT-3.1.2-17: User Name Flag 1 means a User Name follows; a CONNECT without it is
    refused."""
    c = clients.open()
    c.send_raw(raw_connect("u17", version=5, flags=0x02 | 0x80))
    c.expect_refused(REFUSED_MALFORMED)


def test_MQTT_3_1_2_18_password_without_flag_is_malformed(clients: Clients) -> None:
    """MQTT-3.1.2-18: Password Flag 0 means no Password; a CONNECT with one after the User Name
    is refused."""
    c = clients.open()
    c.send_raw(raw_connect("p18", version=5, username="user", tail=mqtt_string(b"secret")))
    c.expect_refused(REFUSED_MALFORMED)


def test_MQTT_3_1_2_19_password_flag_without_password_is_malformed(clients: Clients) -> None:
    """MQTT-3.1.2-19: Password Flag 1 means a Password follows; a CONNECT without it is refused."""
    c = clients.open()
    c.send_raw(raw_connect("p19", version=5, username="user", flags=0x02 | 0x80 | 0x40))
    c.expect_refused(REFUSED_MALFORMED)


def test_MQTT_3_1_2_19_password_without_user_name_is_allowed(clients: Clients) -> None:
    """MQTT 5 allows a Password without a User Name (section 3.1.2.9): MQTT-3.1.2-18/19 hold, so
    the CONNECT is accepted (by the default, anonymous broker)."""
    c = clients.open()
    c.send_raw(raw_connect("p19b", version=5, password=b"token"))
    connack = c.expect(Connack)
    assert connack.reason_code == 0


def test_MQTT_3_1_2_22_keep_alive_enforced_at_one_and_a_half(clients: Clients) -> None:
    """MQTT-3.1.2-22: with Keep Alive 1 s and no packets from the Client, the server closes the
    connection after 1.5 s "as if the network had failed": not before ~1.5 s (it is still open
    after 1.1 s), and the Will Message is published. (A DISCONNECT 0x8D Keep Alive timeout may
    precede the close.)"""
    watcher = clients.connect("ka-watch")
    watcher.sub("ka/will")
    c = clients.connect("ka", keep_alive=1, will=Will("ka/will", b"timed out"))
    clients.advance(1.4)
    assert c.is_open()
    watcher.no_publish()
    clients.advance(0.2)
    try:
        packet = c.recv()  # still open 1.6 s after the last packet: TimeoutError, fails
    except Closed:
        packet = None
    if packet is not None:
        assert isinstance(packet, Disconnect) and packet.reason_code == 0x8D, packet
        c.expect_closed()
    assert c.closed
    [will] = watcher.publishes(1)
    assert will.payload == b"timed out"


def test_MQTT_3_1_2_22_packets_within_keep_alive_keep_the_connection(clients: Clients) -> None:
    """MQTT-3.1.2-22: any Control Packet within 1.5 x Keep Alive resets the timer: a client with
    Keep Alive 1 s that sends PINGREQ every 0.6 s stays connected for 3 s."""
    c = clients.connect("ka-ping", keep_alive=1)
    for _ in range(5):
        clients.advance(0.6)
        c.send(Pingreq())
        c.expect(Pingresp)
    clients.advance(0.2)
    assert c.is_open()


@pytest.mark.parametrize("value", [None, 0])
def test_MQTT_3_1_2_28_no_response_information_unless_requested(
    clients: Clients, value: int | None
) -> None:
    """MQTT-3.1.2-28: Request Response Information absent or 0: the CONNACK has no Response
    Information."""
    properties = {} if value is None else {Prop.REQUEST_RESPONSE_INFORMATION: value}
    c = clients.connect("rri", properties=properties)
    assert c.connack is not None
    assert Prop.RESPONSE_INFORMATION not in c.connack.properties


def test_MQTT_3_1_2_29_no_reason_string_when_problem_information_0(clients: Clients) -> None:
    """MQTT-3.1.2-29: with Request Problem Information 0 the server sends no Reason String and no
    User Property on any packet but PUBLISH, CONNACK and DISCONNECT; here on PUBACK/PUBREC with
    0x10 (no subscribers), PUBCOMP for an unknown PUBREL, SUBACK, UNSUBACK 0x11, PUBREL."""
    c = clients.open()
    wire = tap(c)
    c.connect5("rpi", properties={Prop.REQUEST_PROBLEM_INFORMATION: 0})
    c.pub("rpi/nobody", b"x", qos=1)
    c.pub("rpi/nobody", b"x", qos=2)
    c.send(Pubrel(0x4242))
    c.wait_for(Pubcomp)
    c.sub("rpi/t", qos=2, properties={Prop.USER_PROPERTY: [("a", "b")]})
    c.unsub("rpi/not-subscribed")
    c.pub("rpi/t", b"y", qos=2)
    [msg] = c.publishes(1)
    c.send(Pubrec(msg.packet_id or 0))
    c.wait_for(Pubrel)
    c.send(Pubcomp(msg.packet_id or 0))
    c.ping()
    kinds = set()
    for packet in Decoder(version=5).feed(bytes(wire)):
        if isinstance(packet, Publish | Connack | Disconnect | Pingresp):
            continue
        assert not isinstance(packet, Pingreq), packet  # a client's packet, without properties
        kinds.add(type(packet).__name__)
        assert Prop.REASON_STRING not in packet.properties, packet
        assert Prop.USER_PROPERTY not in packet.properties, packet
    assert {"Puback", "Pubrec", "Pubrel", "Pubcomp", "Suback", "Unsuback"} <= kinds, kinds


def test_MQTT_3_1_3_2_client_identifier_identifies_the_session(clients: Clients) -> None:
    """MQTT-3.1.3-2: the Client Identifier identifies the Session State: another Client Identifier
    does not see it, the same one does."""
    a = clients.connect("ida", clean_start=False, properties={SEI: 60})
    a.sub("ida/t", qos=1)
    a.disconnect()
    b = clients.open()
    assert b.connect5("idb", clean_start=False, properties={SEI: 60}).session_present is False
    b.disconnect()
    a2 = clients.open()
    assert a2.connect5("ida", clean_start=False, properties={SEI: 60}).session_present is True


def test_MQTT_3_1_3_3_client_identifier_must_be_present(clients: Clients) -> None:
    """MQTT-3.1.3-3: the ClientID is the first field of the Payload and must be present; a CONNECT
    that ends after its properties is malformed and refused."""
    c = clients.open()
    c.send_raw(raw_packet(0x10, mqtt_string("MQTT") + bytes([5, 0x02, 0, 0, 0])))
    c.expect_refused(REFUSED_MALFORMED)


def test_MQTT_3_1_3_4_client_identifier_must_be_utf8(clients: Clients) -> None:
    """MQTT-3.1.3-4: the ClientID is a UTF-8 Encoded String; invalid UTF-8 is refused."""
    c = clients.open()
    c.send_raw(raw_connect(b"id\xff\xfe", version=5))
    c.expect_refused({MALFORMED})


@pytest.mark.parametrize(
    "client_id",
    ["0123456789abcdefghijklm", "ABCDEFGHIJKLMNOPQRSTUVW", "nopqrstuvwxyzXYZ", "Z", "7"],
)
def test_MQTT_3_1_3_5_server_allows_1_to_23_alphanumerics(clients: Clients, client_id: str) -> None:
    """MQTT-3.1.3-5: ClientIDs of 1 to 23 bytes of [0-9a-zA-Z] are allowed, and used as given (no
    Assigned Client Identifier)."""
    c = clients.connect(client_id)
    assert c.connack is not None
    assert Prop.ASSIGNED_CLIENT_IDENTIFIER not in c.connack.properties


def test_MQTT_3_1_3_6_zero_length_client_id_gets_a_unique_id(clients: Clients) -> None:
    """MQTT-3.1.3-6: a zero-length ClientID is accepted (allow_zero_length_clientid defaults to
    true, as in Mosquitto) and the server assigns a unique one: two such clients get different
    identifiers and are both connected (neither took the other over)."""
    a = clients.connect("")
    b = clients.connect("")
    assert a.connack is not None and b.connack is not None
    id_a = a.connack.properties[Prop.ASSIGNED_CLIENT_IDENTIFIER]
    id_b = b.connack.properties[Prop.ASSIGNED_CLIENT_IDENTIFIER]
    assert id_a and id_b and id_a != id_b
    a.ping()
    b.ping()


def test_MQTT_3_1_3_7_assigned_client_identifier_is_used_for_the_session(clients: Clients) -> None:
    """MQTT-3.1.3-7: the CONNECT is processed as if the Client had sent the assigned ClientID, which
    the CONNACK returns: reconnecting with that identifier resumes the Session."""
    first = clients.connect("", clean_start=False, properties={SEI: 60})
    assert first.connack is not None
    assigned = first.connack.properties[Prop.ASSIGNED_CLIENT_IDENTIFIER]
    first.sub("a7/t", qos=1)
    first.disconnect()
    pub = clients.connect("a7-pub")
    pub.pub("a7/t", b"for the assigned id", qos=1)
    again = clients.open()
    assert again.connect5(assigned, clean_start=False, properties={SEI: 60}).session_present
    [msg] = again.publishes(1)
    assert msg.payload == b"for the assigned id"


def test_MQTT_3_1_3_8_rejected_client_identifier_closes(make_broker: Any) -> None:
    """MQTT-3.1.3-8: when the server rejects the ClientID (here: zero length, with
    allow_zero_length_clientid false) it may send CONNACK 0x85 (Mosquitto sends 0x80) and must
    close."""
    with Clients(make_broker(allow_zero_length_clientid=False)) as clients:
        c = clients.open()
        c.send_raw(raw_connect("", version=5))
        connack = c.expect_refused({0x85, 0x80})
        assert connack is None or Prop.ASSIGNED_CLIENT_IDENTIFIER not in connack.properties


def test_MQTT_3_1_3_12_user_name_must_be_utf8(clients: Clients) -> None:
    """MQTT-3.1.3-12: the User Name is a UTF-8 Encoded String; invalid UTF-8 makes the CONNECT a
    Malformed Packet: refused (at most CONNACK 0x81) and closed."""
    c = clients.open()
    c.send_raw(raw_connect("u312", version=5, username=b"us\xc3er"))
    c.expect_refused({MALFORMED})


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(
            raw_connect("f1", version=5, properties=props(p_u16(Prop.TOPIC_ALIAS, 1))),
            id="property-not-allowed-in-connect",
        ),
        pytest.param(
            raw_connect("f1", version=5, properties=props(p_u16(Prop.RECEIVE_MAXIMUM, 0))),
            id="receive-maximum-0",
        ),
        pytest.param(
            raw_connect("f1", version=5, properties=props(p_u32(Prop.MAXIMUM_PACKET_SIZE, 0))),
            id="maximum-packet-size-0",
        ),
        pytest.param(
            raw_connect("f1", version=5, properties=props(p_u32(SEI, 1), p_u32(SEI, 2))),
            id="session-expiry-twice",
        ),
        pytest.param(raw_packet(0x10, raw_connect("f1", version=5)[2:-3]), id="truncated"),
        pytest.param(raw_packet(0x10, mqtt_string("MQTT") + b"\x05"), id="no-connect-flags"),
    ],
)
def test_MQTT_3_1_4_1_malformed_connect_closes(clients: Clients, packet: bytes) -> None:
    """MQTT-3.1.4-1: the server validates the CONNECT against section 3.1 and closes the connection
    if it does not match (it may send CONNACK 0x81/0x82 first)."""
    c = clients.open()
    c.send_raw(packet)
    c.expect_refused(REFUSED_MALFORMED)


def test_MQTT_3_1_4_2_failed_authentication_closes(clients: Clients) -> None:
    """MQTT-3.1.4-2: a CONNECT that fails a further check (here authentication: an Authentication
    Method the server does not support) is refused, at most with a CONNACK of 0x80 or more, and the
    connection is closed."""
    c = clients.open()
    c.send(_connect("auth-fail", {Prop.AUTHENTICATION_METHOD: "SCRAM-SHA-512-nope"}))
    c.expect_refused()


def test_MQTT_3_1_4_3_session_takeover(clients: Clients) -> None:
    """MQTT-3.1.4-3: a CONNECT with the ClientID of a connected Client: the existing Client gets
    DISCONNECT 0x8E (Session taken over) and its connection is closed; the new one is accepted."""
    old = clients.connect("takeover")
    new = clients.connect("takeover")
    old.expect_disconnect(0x8E)
    new.ping()


def test_MQTT_3_1_4_4_clean_start_processing(clients: Clients) -> None:
    """MQTT-3.1.4-4: the server performs the Clean Start processing of section 3.1.2.4 on every
    accepted CONNECT: 0 keeps the Session (Session Present 1), 1 discards it (Session Present 0)."""
    a = clients.connect("cs44", clean_start=False, properties={SEI: 60})
    a.disconnect()
    b = clients.open()
    assert b.connect5("cs44", clean_start=False, properties={SEI: 60}).session_present is True
    b.disconnect()
    c = clients.open()
    assert c.connect5("cs44", clean_start=True, properties={SEI: 60}).session_present is False
    c.disconnect()
    d = clients.open()
    assert d.connect5("cs44", clean_start=False, properties={SEI: 60}).session_present is True


def test_MQTT_3_1_4_5_connack_success(clients: Clients) -> None:
    """MQTT-3.1.4-5: an accepted CONNECT is acknowledged with CONNACK Reason Code 0x00."""
    c = clients.open()
    assert c.connect5("ok", ok=False).reason_code == 0x00


def test_MQTT_3_1_4_6_data_after_a_rejected_connect_is_ignored(make_broker: Any) -> None:
    """MQTT-3.1.4-6: if the server rejects the CONNECT it must not process any data the Client sent
    after it: a retained PUBLISH and a SUBSCRIBE sent in the same write are dropped."""
    with Clients(make_broker(allow_zero_length_clientid=False)) as clients:
        watcher = clients.connect("rej-watch")
        watcher.sub("rej/#")
        c = clients.open()
        c.send_raw(
            raw_connect("", version=5)
            + raw_publish("rej/t", b"must not be processed", retain=True, version=5)
            + raw_subscribe(1, ("rej/#", 0), version=5)
        )
        c.expect_refused()
        watcher.no_publish()
        late = clients.connect("rej-late")
        late.sub("rej/#")
        late.no_publish()


# -- 3.2 CONNACK --------------------------------------------------------------------------------


def test_MQTT_3_2_0_1_connack_is_the_first_packet_sent(clients: Clients) -> None:
    """MQTT-3.2.0-1: the server sends CONNACK 0x00 before any other packet, even when the Client
    pipelines SUBSCRIBE and PINGREQ behind its CONNECT and the Session has queued messages and a
    retained message waiting."""
    a = clients.connect("first-ack", clean_start=False, properties={SEI: 60})
    a.sub("fa/#", qos=1)
    a.disconnect()
    pub = clients.connect("fa-pub")
    pub.pub("fa/queued", b"q", qos=1)
    pub.pub("fa/retained", b"r", qos=1, retain=True)
    c = clients.open()
    c.send(_connect("first-ack", {SEI: 60}, clean_start=False))
    c.send_raw(raw_subscribe(7, ("fa/#", 1), version=5) + raw_packet(0xC0))
    first = c.recv()
    assert isinstance(first, Connack) and first.reason_code == 0, first


def test_MQTT_3_2_0_2_at_most_one_connack(clients: Clients) -> None:
    """MQTT-3.2.0-2: the server sends one CONNACK per connection: none for later traffic, and a
    second CONNECT gets DISCONNECT 0x82, not another CONNACK."""
    c = clients.connect("one-ack")
    c.sub("oa/t", qos=1)
    c.pub("oa/t", b"x", qos=1)
    c.ping()
    assert not any(isinstance(p, Connack) for p in c.pending)
    c.send_raw(raw_connect("one-ack", version=5))
    c.expect_disconnect(PROTOCOL_ERROR)


@pytest.mark.parametrize("session", [False, True])
def test_MQTT_3_2_2_1_connack_reserved_flag_bits_are_zero(clients: Clients, session: bool) -> None:
    """MQTT-3.2.2-1: bits 7-1 of the Connect Acknowledge Flags are 0 (with Session Present 0 and
    1)."""
    if session:
        clients.connect("flags7", clean_start=False, properties={SEI: 60}).disconnect()
    c = clients.open()
    wire = tap(c)
    c.connect5("flags7", clean_start=not session, properties={SEI: 60})
    frame = frames(wire)[0]
    assert frame[0] == 0x20
    assert frame[2] & 0xFE == 0, f"CONNACK flags {frame[2]:08b}"
    assert frame[2] == (1 if session else 0)


def test_MQTT_3_2_2_2_clean_start_1_session_present_0(clients: Clients) -> None:
    """MQTT-3.2.2-2: accepting Clean Start 1, the server sets Session Present 0 (and Reason Code 0)
    even though a Session existed."""
    clients.connect("sp2", clean_start=False, properties={SEI: 60}).disconnect()
    c = clients.open()
    connack = c.connect5("sp2", clean_start=True)
    assert connack.session_present is False and connack.reason_code == 0


def test_MQTT_3_2_2_3_clean_start_0_session_present_reflects_state(clients: Clients) -> None:
    """MQTT-3.2.2-3: accepting Clean Start 0, Session Present is 1 if the server has Session State
    for the ClientID and 0 if not; the Reason Code is 0 in both cases."""
    a = clients.open()
    connack = a.connect5("sp3", clean_start=False, properties={SEI: 60})
    assert connack.session_present is False and connack.reason_code == 0
    a.disconnect()
    b = clients.open()
    connack = b.connect5("sp3", clean_start=False, properties={SEI: 60})
    assert connack.session_present is True and connack.reason_code == 0


def test_MQTT_3_2_2_6_refusing_connack_has_session_present_0(clients: Clients) -> None:
    """MQTT-3.2.2-6: a CONNACK with a non-zero Reason Code has Session Present 0, even when a
    Session exists for the ClientID and Clean Start is 0."""
    clients.connect("sp6", clean_start=False, properties={SEI: 60}).disconnect()
    c = clients.open()
    c.send(_connect("sp6", {SEI: 60, Prop.AUTHENTICATION_METHOD: "nope"}, clean_start=False))
    connack = c.expect_refused()
    assert connack is None or connack.session_present is False


def test_MQTT_3_2_2_7_connack_0x80_or_more_closes(clients: Clients) -> None:
    """MQTT-3.2.2-7: after a CONNACK with a Reason Code of 128 or more the server closes the
    connection."""
    c = clients.open()
    connack = c.connect5("rc7", ok=False, properties={Prop.AUTHENTICATION_METHOD: "nope"})
    assert connack.reason_code >= 0x80
    c.expect_closed()


def test_MQTT_3_2_2_8_connack_uses_connect_reason_codes(make_broker: Any) -> None:
    """MQTT-3.2.2-8: every CONNACK Reason Code is one of Table 3-1: success, an unsupported
    Authentication Method, a Will QoS above Maximum QoS, a retained Will without Retain
    Available."""
    codes = []
    with Clients(make_broker(max_qos=1, retain_available=False)) as clients:
        codes.append(clients.open().connect5("rc8a", ok=False).reason_code)
        attempts: list[dict[str, Any]] = [
            {"properties": {Prop.AUTHENTICATION_METHOD: "nope"}},
            {"will": Will("rc8/w", b"x", qos=2)},
            {"will": Will("rc8/w", b"x", retain=True)},
        ]
        for i, fields in enumerate(attempts):
            c = clients.open()
            c.send(_connect(f"rc8-{i}", **fields))
            connack = c.expect_refused()
            if connack is not None:
                codes.append(connack.reason_code)
    assert codes[0] == 0
    assert all(code in CONNACK_REASONS for code in codes), [hex(c) for c in codes]


@pytest.mark.parametrize(("max_qos", "advertised"), [(0, 0), (1, 1), (2, None)])
def test_MQTT_3_2_2_9_maximum_qos_in_connack(
    make_broker: Any, max_qos: int, advertised: int | None
) -> None:
    """MQTT-3.2.2-9: a server that does not support QoS 1 or 2 sends Maximum QoS in the CONNACK
    with the highest QoS it supports; with QoS 2 supported it is absent."""
    with Clients(make_broker(max_qos=max_qos)) as clients:
        c = clients.connect("mq")
        assert c.connack is not None
        assert c.connack.properties.get(Prop.MAXIMUM_QOS) == advertised


@pytest.mark.parametrize("max_qos", [0, 1])
def test_MQTT_3_2_2_10_subscribe_accepted_at_any_qos(make_broker: Any, max_qos: int) -> None:
    """MQTT-3.2.2-10: a server without QoS 1 or 2 support still accepts SUBSCRIBE with Requested
    QoS 0, 1 and 2 (granting at most its Maximum QoS), and delivers on them."""
    with Clients(make_broker(max_qos=max_qos)) as clients:
        c = clients.connect("mq10")
        suback = c.sub(Sub("mq10/0", 0), Sub("mq10/1", 1), Sub("mq10/2", 2))
        assert suback.reason_codes == [min(q, max_qos) for q in (0, 1, 2)]
        c.pub("mq10/2", b"x", qos=0)
        [msg] = c.publishes(1)
        assert msg.qos == 0


def test_MQTT_3_2_2_11_publish_above_maximum_qos_is_refused(make_broker: Any) -> None:
    """MQTT-3.2.2-11 (the Client must not exceed Maximum QoS) seen from the server: a PUBLISH above
    the Maximum QoS it sent is a Protocol Error, answered with DISCONNECT 0x9B (QoS not
    supported)."""
    with Clients(make_broker(max_qos=1)) as clients:
        c = clients.connect("mq11")
        assert c.connack is not None and c.connack.properties.get(Prop.MAXIMUM_QOS) == 1
        c.send(Publish("mq11/t", b"x", 2, packet_id=1))
        c.expect_disconnect(0x9B)


def test_MQTT_3_2_2_12_will_qos_above_maximum_is_refused(make_broker: Any) -> None:
    """MQTT-3.2.2-12: a Will QoS above the server's capability rejects the connection: CONNACK 0x9B
    (QoS not supported), then close."""
    with Clients(make_broker(max_qos=1)) as clients:
        c = clients.open()
        c.send(_connect("mq12", will=Will("mq12/w", b"x", qos=2)))
        connack = c.expect_refused({0x9B})
        assert connack is not None, "Mosquitto sends CONNACK 0x9B"


def test_MQTT_3_2_2_13_retained_will_without_retain_support_is_refused(make_broker: Any) -> None:
    """MQTT-3.2.2-13: a Will with Will Retain 1 on a server without retained messages rejects the
    connection: CONNACK 0x9A (Retain not supported), then close."""
    with Clients(make_broker(retain_available=False)) as clients:
        c = clients.open()
        c.send(_connect("ra13", will=Will("ra13/w", b"x", retain=True)))
        connack = c.expect_refused({0x9A})
        assert connack is not None, "Mosquitto sends CONNACK 0x9A"


def test_MQTT_3_2_2_14_retained_publish_without_retain_support_is_refused(
    make_broker: Any,
) -> None:
    """MQTT-3.2.2-14 (the Client must not publish with RETAIN 1 after Retain Available 0) seen from
    the server: CONNACK carries Retain Available 0 and a retained PUBLISH gets DISCONNECT 0x9A."""
    with Clients(make_broker(retain_available=False)) as clients:
        c = clients.connect("ra14")
        assert c.connack is not None and c.connack.properties.get(Prop.RETAIN_AVAILABLE) == 0
        c.send(Publish("ra14/t", b"x", 0, retain=True))
        c.expect_disconnect(0x9A)


def test_MQTT_3_2_2_15_packet_above_maximum_packet_size_is_refused(make_broker: Any) -> None:
    """MQTT-3.2.2-15 (the Client must not exceed the server's Maximum Packet Size) seen from the
    server: CONNACK carries Maximum Packet Size 100 and a 101-byte packet gets DISCONNECT 0x95
    (Packet too large); a 100-byte one is fine."""
    with Clients(make_broker(max_packet_size=100)) as clients:
        c = clients.connect("mps15")
        assert c.connack is not None
        assert c.connack.properties.get(Prop.MAXIMUM_PACKET_SIZE) == 100
        fits = raw_publish("mps/t", b"", version=5)
        c.send_raw(raw_publish("mps/t", bytes(100 - len(fits)), version=5))
        c.ping()
        c.send_raw(raw_publish("mps/t", bytes(101 - len(fits)), version=5))
        c.expect_disconnect(0x95)


def test_MQTT_3_2_2_16_assigned_client_identifier_is_new(clients: Clients) -> None:
    """MQTT-3.2.2-16: a zero-length ClientID gets a CONNACK with an Assigned Client Identifier that
    no other Session in the server uses (here: several persistent and connected sessions)."""
    existing = set()
    for i in range(3):
        c = clients.connect(f"auto-{i}", clean_start=False, properties={SEI: 60})
        existing.add(f"auto-{i}")
        if i:
            c.disconnect()
    assigned = set()
    for _ in range(3):
        c = clients.connect("", properties={SEI: 60})
        assert c.connack is not None
        ident = c.connack.properties.get(Prop.ASSIGNED_CLIENT_IDENTIFIER)
        assert ident, "no Assigned Client Identifier"
        assigned.add(ident)
    assert len(assigned) == 3 and not assigned & existing


def test_MQTT_3_2_2_17_topic_alias_above_maximum_is_refused(clients: Clients) -> None:
    """MQTT-3.2.2-17 and MQTT-3.3.2-9 (the Client must not send a Topic Alias above the server's
    Topic Alias Maximum) seen from the server: CONNACK says 10 (max_topic_alias), alias 10 works
    and alias 11 gets DISCONNECT 0x94 (Topic Alias invalid)."""
    c = clients.connect("ta17")
    assert c.connack is not None and c.connack.properties.get(Prop.TOPIC_ALIAS_MAXIMUM) == 10
    c.pub("ta17/t", b"x", qos=1, properties={Prop.TOPIC_ALIAS: 10})
    c.send(Publish("ta17/t", b"x", 0, properties={Prop.TOPIC_ALIAS: 11}))
    c.expect_disconnect(0x94)


def test_MQTT_3_2_2_18_no_topic_alias_when_maximum_is_0(make_broker: Any) -> None:
    """MQTT-3.2.2-18 seen from the server: with max_topic_alias 0 the CONNACK has no Topic Alias
    Maximum (or 0), and any Topic Alias from the Client gets DISCONNECT 0x94."""
    with Clients(make_broker(max_topic_alias=0)) as clients:
        c = clients.connect("ta18")
        assert c.connack is not None
        assert c.connack.properties.get(Prop.TOPIC_ALIAS_MAXIMUM, 0) == 0
        c.send(Publish("ta18/t", b"x", 0, properties={Prop.TOPIC_ALIAS: 1}))
        c.expect_disconnect(0x94)


def test_MQTT_3_2_2_22_server_uses_the_client_keep_alive(clients: Clients) -> None:
    """MQTT-3.2.2-22: with no Server Keep Alive in the CONNACK the server uses the Client's Keep
    Alive (1 s here): the connection is closed about 1.5 s after the last packet."""
    c = clients.connect("ska", keep_alive=1)
    assert c.connack is not None and Prop.SERVER_KEEP_ALIVE not in c.connack.properties
    clients.advance(1.1)
    assert c.is_open()
    clients.advance(0.5)
    c.wait_closed()
    assert c.closed


def test_MQTT_3_2_2_22_server_keep_alive_replaces_the_client_value(make_broker: Any) -> None:
    """MQTT-3.2.2-22 with MQTT-3.1.2-21 and MQTT-3.2.2-21 from the server side: a Keep Alive above
    max_keepalive gets a Server Keep Alive (Mosquitto's behaviour) and the server then enforces
    that value, not the Client's."""
    with Clients(make_broker(max_keepalive=1)) as clients:
        c = clients.connect("ska2", keep_alive=60)
        assert c.connack is not None
        assert c.connack.properties.get(Prop.SERVER_KEEP_ALIVE) == 1
        clients.advance(1.0)
        assert c.is_open()
        clients.advance(0.6)
        c.wait_closed()
        assert c.closed


# -- 4.12 Enhanced authentication ---------------------------------------------------------------


def test_MQTT_4_12_0_1_unsupported_authentication_method_closes(clients: Clients) -> None:
    """MQTT-4.12.0-1 (and MQTT-4.12.0-4, rejecting an authentication): an Authentication Method the
    server does not support may get CONNACK 0x8C (Bad authentication method, what Mosquitto sends)
    or 0x87 (Not authorized), and the connection must be closed; no AUTH is sent."""
    c = clients.open()
    c.send(_connect("am", {Prop.AUTHENTICATION_METHOD: "X-NONE", Prop.AUTHENTICATION_DATA: b"1"}))
    c.expect_refused({0x8C, 0x87})


def test_MQTT_4_12_0_6_no_auth_without_authentication_method(clients: Clients) -> None:
    """MQTT-4.12.0-6: without an Authentication Method in the CONNECT the server sends no AUTH and
    no Authentication Method in the CONNACK."""
    c = clients.connect("noauth")
    assert c.connack is not None
    assert Prop.AUTHENTICATION_METHOD not in c.connack.properties
    assert Prop.AUTHENTICATION_DATA not in c.connack.properties
    c.sub("noauth/t", qos=1)
    c.pub("noauth/t", b"x", qos=1)
    c.publishes(1)
    c.ping()
    assert not any(isinstance(p, Auth) for p in c.pending)


@pytest.mark.parametrize("reason", [0x00, 0x18, 0x19])
def test_MQTT_4_12_0_7_auth_without_authentication_method_is_refused(
    clients: Clients, reason: int
) -> None:
    """MQTT-4.12.0-7 (the Client must not send AUTH without an Authentication Method in CONNECT)
    seen from the server: it is a Protocol Error (section 3.15), DISCONNECT 0x82, close."""
    c = clients.connect("authx")
    c.send(Auth(reason, {Prop.AUTHENTICATION_METHOD: "SCRAM-SHA-1"}))
    c.expect_disconnect(PROTOCOL_ERROR)


def _connect(
    client_id: str,
    properties: dict[int, Any] | None = None,
    clean_start: bool = True,
    will: Will | None = None,
) -> Connect:
    return Connect(
        client_id,
        protocol_level=5,
        clean_start=clean_start,
        keep_alive=0,
        will=will,
        properties=properties or {},
    )
