"""MQTT 3.1.1 sections 3.1.2.4, 3.2.2.2, 4.1 and 4.4: sessions, server side.

CleanSession 0 keeps a session (subscriptions, unacknowledged and queued QoS 1/2 messages) after
the connection ends; CleanSession 1 discards it. QoS 0 messages for an offline session are
dropped (Mosquitto's default, ``queue_qos0_messages false``). Tests that also apply to MQTT 3.1
run for protocol levels 3 and 4; MQTT 3.1 has no Session Present flag (always 0 on the wire).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from midge.codec.packets import Pingreq, Pingresp, Puback, Pubcomp, Publish, Pubrec, Pubrel
from tests.rawclient import (
    Raw,
    RawClient,
    publishes,
    raw_publish,
    receive_publishes,
    subscribe_collecting,
)

BOTH = pytest.mark.parametrize("version", [3, 4], ids=["mqtt31", "mqtt311"])


def connect(
    raw: Raw, client_id: str, version: int = 4, clean: bool = True, **fields: Any
) -> tuple[RawClient, bool]:
    """A connected client and the CONNACK's Session Present flag."""
    client = raw(version)
    connack = client.connect(client_id, clean_start=clean, **fields)
    assert connack.reason_code == 0, connack
    return client, connack.session_present


def publisher(raw: Raw, version: int = 4) -> RawClient:
    return connect(raw, "v311-session-pub", version)[0]


@BOTH
def test_MQTT_3_1_2_4_persistent_session_resumed(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-4: with CleanSession 0 the server resumes the session named by the Client
    Identifier and stores it after the disconnection: the subscription made before is still in
    force, without subscribing again. Also MQTT-3.1.4-3 (CleanSession processing on CONNECT) and
    MQTT-3.2.2-2 (Session Present 1 when a session was stored; MQTT 3.1.1 only)."""
    client, present = connect(raw, "v311-resume", version, clean=False)
    assert not present
    client.subscribe("v311/resume/t", 1)
    client.disconnect()
    client, present = connect(raw, "v311-resume", version, clean=False)
    if version == 4:
        assert present, "Session Present is 0 for a stored session"
    publisher(raw, version).publish("v311/resume/t", b"still subscribed", qos=1)
    message = client.expect(Publish, timeout=2)
    assert (message.payload, message.qos) == (b"still subscribed", 1)


@BOTH
def test_MQTT_3_1_2_5_offline_qos1_qos2_messages_stored(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-5: while a CleanSession 0 client is away the server stores the QoS 1 and QoS 2
    messages matching its subscriptions and delivers them when it comes back, in order and at
    their QoS. QoS 0 messages are not kept (the spec allows either; Mosquitto drops them)."""
    client, _ = connect(raw, "v311-offline", version, clean=False)
    client.subscribe("v311/offline/#", 2)
    client.disconnect()
    pub = publisher(raw, version)
    pub.publish("v311/offline/a", b"qos0", qos=0)
    pub.publish("v311/offline/b", b"qos1", qos=1)
    pub.publish("v311/offline/c", b"qos2", qos=2)
    pub.publish("v311/offline/d", b"qos1 again", qos=1)
    client, _ = connect(raw, "v311-offline", version, clean=False)
    received = [(p.payload, p.qos) for p in receive_publishes(client, 3, timeout=2)]
    assert received == [(b"qos1", 1), (b"qos2", 2), (b"qos1 again", 1)]
    client.expect_nothing(0.3)


def test_MQTT_3_1_2_5_offline_queue_limited(make_broker: Callable[..., Any]) -> None:
    """MQTT-3.1.2-5 with a bounded store (Mosquitto's ``max_queued_messages``): an offline
    session keeps the oldest QoS 1/2 messages up to the limit and drops the newer ones."""
    broker = make_broker(max_queued_messages=3)
    with RawClient.to(broker) as client:
        assert client.connect("v311-queue", clean_start=False).reason_code == 0
        client.subscribe("v311/queue/#", 1)
        client.disconnect()
    with RawClient.to(broker) as pub:
        assert pub.connect("v311-queue-pub").reason_code == 0
        for n in range(10):
            pub.publish(f"v311/queue/{n}", f"{n}".encode(), qos=1 + n % 2)
    with RawClient.to(broker) as client:
        assert client.connect("v311-queue", clean_start=False).session_present
        got = receive_publishes(client, 3, timeout=2)
        assert [p.payload for p in got] == [b"0", b"1", b"2"]
        client.expect_nothing(0.3)


@BOTH
def test_MQTT_3_1_2_6_clean_session_discards_previous(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-6: CleanSession 1 discards any previous session (subscriptions and queued
    messages) and the new one lasts only as long as the connection: its state is not reused by a
    later CleanSession 0 connection. Also MQTT-3.2.2-1 and MQTT-3.2.2-3 (Session Present 0)."""
    client, _ = connect(raw, "v311-clean", version, clean=False)
    client.subscribe("v311/clean/#", 1)
    client.disconnect()
    pub = publisher(raw, version)
    pub.publish("v311/clean/queued", b"queued", qos=1)
    client, present = connect(raw, "v311-clean", version, clean=True)
    assert not present
    client.expect_nothing(0.3)  # the queued message went with the old session
    pub.publish("v311/clean/live", b"live", qos=1)
    client.expect_nothing(0.3)  # and so did the subscription
    client.subscribe("v311/clean/#", 1)
    client.disconnect()
    client, present = connect(raw, "v311-clean", version, clean=False)
    assert not present, "a CleanSession 1 session was kept after its connection ended"
    pub.publish("v311/clean/after", b"after", qos=1)
    client.expect_nothing(0.3)


@BOTH
def test_MQTT_3_1_2_6_clean_session_taken_over_is_not_reused(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-6: a CleanSession 1 session lasts as long as its connection, also when a new
    connection takes that connection over: a CleanSession 0 take-over gets no session (Session
    Present 0, no subscription), as from Mosquitto 2.0.11."""
    old, _ = connect(raw, "v311-clean-taken", version, clean=True)
    old.subscribe("v311/taken/#", 1)
    new, present = connect(raw, "v311-clean-taken", version, clean=False)
    assert not present, "the taken-over CleanSession 1 session was reused"
    publisher(raw, version).publish("v311/taken/x", b"x", qos=1)
    new.expect_nothing(0.3)


@BOTH
def test_MQTT_3_1_2_7_retained_messages_outlive_sessions(raw: Raw, version: int) -> None:
    """MQTT-3.1.2.7: retained messages are not part of a session and are not deleted when the
    session of the client that published them ends."""
    client, _ = connect(raw, "v311-retainer", version, clean=True)
    client.publish("v311/outlive/t", b"kept", qos=1, retain=True)
    client.disconnect()
    other, _ = connect(raw, "v311-retainer", version, clean=True)  # same id: a new session
    other.disconnect()
    later, _ = connect(raw, "v311-outlive-sub", version)
    _, before = subscribe_collecting(later, ("v311/outlive/#", 1))
    got = publishes(before + later.recv_all(0.5))
    assert [(p.topic, p.payload, p.retain) for p in got] == [("v311/outlive/t", b"kept", True)]


@BOTH
def test_MQTT_3_1_3_2_client_id_identifies_session(raw: Raw, version: int) -> None:
    """MQTT-3.1.3-2: the server identifies session state by ClientId: another ClientId does not
    get that session (its Session Present is 0, it receives nothing of the other's), and the same
    ClientId does."""
    alice, _ = connect(raw, "v311-alice", version, clean=False)
    alice.subscribe("v311/ident/alice", 1)
    alice.disconnect()
    publisher(raw, version).publish("v311/ident/alice", b"for alice", qos=1)
    bob, present = connect(raw, "v311-bob", version, clean=False)
    assert not present
    bob.expect_nothing(0.3)
    alice, present = connect(raw, "v311-alice", version, clean=False)
    assert present or version == 3
    assert alice.expect(Publish, timeout=2).payload == b"for alice"


def test_MQTT_3_2_2_1_clean_session_present_0(raw: Raw) -> None:
    """MQTT-3.2.2-1: accepting a CleanSession 1 connection, the server sets Session Present 0
    (with return code 0) even though it had a session for that ClientId."""
    client, _ = connect(raw, "v311-sp1", clean=False)
    client.subscribe("v311/sp/t", 1)
    client.disconnect()
    _, present = connect(raw, "v311-sp1", clean=True)
    assert not present


def test_MQTT_3_2_2_2_stored_session_present_1(raw: Raw) -> None:
    """MQTT-3.2.2-2: accepting a CleanSession 0 connection for which a session is stored, the
    server sets Session Present 1, whether the old connection ended with DISCONNECT or not."""
    client, _ = connect(raw, "v311-sp2", clean=False)
    client.disconnect()
    client, present = connect(raw, "v311-sp2", clean=False)
    assert present
    client.close()  # no DISCONNECT this time
    _, present = connect(raw, "v311-sp2", clean=False)
    assert present


def test_MQTT_3_2_2_3_no_stored_session_present_0(raw: Raw) -> None:
    """MQTT-3.2.2-3: accepting a CleanSession 0 connection with no stored session, the server sets
    Session Present 0 (and return code 0)."""
    _, present = connect(raw, "v311-sp3-new", clean=False)
    assert not present


@BOTH
def test_MQTT_4_1_0_1_inbound_qos2_state_survives_reconnect(raw: Raw, version: int) -> None:
    """MQTT-4.1.0-1: the server keeps session state for the whole session, including QoS 2
    messages received but not completely acknowledged: after reconnecting, the client's PUBREL
    completes the exchange, and the message reaches subscribers exactly once."""
    sub, _ = connect(raw, "v311-q2-sub", version)
    sub.subscribe("v311/q2state/t", 2)
    client, _ = connect(raw, "v311-q2-pub", version, clean=False)
    client.send_raw(raw_publish("v311/q2state/t", b"exactly once", qos=2, packet_id=77))
    assert client.expect(Pubrec).packet_id == 77
    client.close()
    client, present = connect(raw, "v311-q2-pub", version, clean=False)
    assert present or version == 3
    client.send_raw(raw_publish("v311/q2state/t", b"exactly once", qos=2, dup=True, packet_id=77))
    assert client.expect(Pubrec).packet_id == 77
    client.send(Pubrel(77))
    assert client.expect(Pubcomp).packet_id == 77
    delivered = publishes(sub.recv_all(0.7))
    assert [p.payload for p in delivered] == [b"exactly once"]


def test_MQTT_4_1_0_2_session_lasts_while_connected(raw: Raw) -> None:
    """MQTT-4.1.0-2: a session lasts at least as long as its network connection: a CleanSession 1
    client's subscription still works after several Keep Alive periods of pinging."""
    client, _ = connect(raw, "v311-lasting", keep_alive=1)
    client.subscribe("v311/lasting/t", 1)
    for _ in range(5):
        client.recv_all(0.4)
        client.send(Pingreq())
        client.expect(Pingresp)
    publisher(raw).publish("v311/lasting/t", b"later", qos=1)
    assert client.expect(Publish, timeout=2).payload == b"later"


@BOTH
def test_MQTT_4_4_0_1_unacknowledged_resent_on_reconnect(raw: Raw, version: int) -> None:
    """MQTT-4.4.0-1: when a CleanSession 0 client reconnects the server re-sends unacknowledged
    PUBLISH packets and PUBRELs with their original Packet Identifiers. Also MQTT-3.3.1-1 (DUP 1
    on a re-delivered PUBLISH) and MQTT-4.3.3-1 (after PUBREL the PUBLISH is not re-sent)."""
    client, _ = connect(raw, "v311-resend", version, clean=False)
    client.subscribe("v311/resend/#", 2)
    pub = publisher(raw, version)
    pub.publish("v311/resend/1", b"q1 unacked", qos=1)
    pub.publish("v311/resend/2", b"q2 unacked", qos=2)
    pub.publish("v311/resend/3", b"q2 pubrec sent", qos=2)
    first = [client.expect(Publish, timeout=2) for _ in range(3)]
    assert [p.payload for p in first] == [b"q1 unacked", b"q2 unacked", b"q2 pubrec sent"]
    assert not any(p.dup for p in first)
    client.send(Pubrec(first[2].packet_id or 0))
    assert client.expect(Pubrel).packet_id == first[2].packet_id
    client.close()  # nothing more acknowledged

    client, _ = connect(raw, "v311-resend", version, clean=False)
    again = client.recv_all(0.7)
    resent = publishes(again)
    assert [(p.payload, p.packet_id, p.dup) for p in resent] == [
        (b"q1 unacked", first[0].packet_id, True),
        (b"q2 unacked", first[1].packet_id, True),
    ]
    pubrels = [p for p in again if isinstance(p, Pubrel)]
    assert [p.packet_id for p in pubrels] == [first[2].packet_id]
    client.send(Puback(first[0].packet_id or 0))
    client.send(Pubrec(first[1].packet_id or 0))
    assert client.expect(Pubrel).packet_id == first[1].packet_id
    client.send(Pubcomp(first[1].packet_id or 0))
    client.send(Pubcomp(first[2].packet_id or 0))
    client.expect_nothing(0.3)


@BOTH
def test_MQTT_3_3_1_1_dup_set_on_redelivery(raw: Raw, version: int) -> None:
    """MQTT-3.3.1-1: the server sets DUP 1 when it re-delivers a PUBLISH (here the QoS 1 message
    left unacknowledged when the persistent session's connection dropped); the first attempt had
    DUP 0."""
    client, _ = connect(raw, "v311-dup", version, clean=False)
    client.subscribe("v311/dup/t", 1)
    publisher(raw, version).publish("v311/dup/t", b"again", qos=1)
    original = client.expect(Publish, timeout=2)
    assert not original.dup
    client.close()
    client, _ = connect(raw, "v311-dup", version, clean=False)
    redelivered = client.expect(Publish, timeout=2)
    assert (redelivered.payload, redelivered.dup) == (b"again", True)
    assert redelivered.packet_id == original.packet_id


@BOTH
def test_MQTT_4_6_0_1_resent_in_original_order(raw: Raw, version: int) -> None:
    """MQTT-4.6.0-1 (which MQTT-4.6.0-6 makes a server rule too): re-sent PUBLISH packets go out
    in the order the originals were sent."""
    client, _ = connect(raw, "v311-reorder", version, clean=False)
    client.subscribe("v311/reorder/#", 1)
    pub = publisher(raw, version)
    for n in range(8):
        pub.publish(f"v311/reorder/{n % 3}", f"m{n}".encode(), qos=1)
    first = [client.expect(Publish, timeout=2) for _ in range(8)]
    client.close()
    client, _ = connect(raw, "v311-reorder", version, clean=False)
    resent = [client.expect(Publish, timeout=2) for _ in range(8)]
    assert [p.payload for p in resent] == [p.payload for p in first]
    assert [p.payload for p in first] == [f"m{n}".encode() for n in range(8)]
