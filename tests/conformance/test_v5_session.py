"""MQTT 5.0 Session State (sections 3.1.2.11.2 and 4.1), message delivery retry (4.4) and message
receipt (4.5)."""

from __future__ import annotations

from midge.codec.packets import Puback, Pubcomp, Pubrec, Pubrel
from midge.codec.properties import Prop
from tests.conformance.test_v5_support import Clients

SEI = Prop.SESSION_EXPIRY_INTERVAL


def test_MQTT_3_1_2_23_session_stored_while_expiry_above_0(clients: Clients) -> None:
    """MQTT-3.1.2-23: with a Session Expiry Interval above 0 the server keeps the Session State
    after the connection closes: subscriptions, and QoS 1/2 messages arriving meanwhile (QoS 0 ones
    are not queued, as in Mosquitto: queue_qos0_messages false)."""
    c = clients.connect("st23", clean_start=False, properties={SEI: 60})
    c.sub("st23/t", qos=2)
    c.close()
    pub = clients.connect("st23-pub")
    pub.pub("st23/t", b"q0", qos=0)
    pub.pub("st23/t", b"q1", qos=1)
    pub.pub("st23/t", b"q2", qos=2)
    again = clients.connect("st23", clean_start=False, properties={SEI: 60})
    assert again.connack is not None and again.connack.session_present
    got = again.publishes(2)
    assert [(p.payload, p.qos) for p in got] == [(b"q1", 1), (b"q2", 2)]
    for msg in got:
        again.ack(msg, others_stay_queued=True)
    again.no_publish()


def test_MQTT_3_1_2_23_session_not_stored_with_expiry_0(clients: Clients) -> None:
    """MQTT-3.1.2-23, the other side: with Session Expiry absent (0) the Session ends with the
    connection: the next Clean Start 0 connection finds no Session."""
    c = clients.connect("st23b", clean_start=False)
    c.sub("st23b/t", qos=1)
    c.disconnect()
    again = clients.connect("st23b", clean_start=False)
    assert again.connack is not None and again.connack.session_present is False


def test_MQTT_4_1_0_1_session_kept_while_connected(clients: Clients) -> None:
    """MQTT-4.1.0-1: the Session State is not discarded while the connection is open, however long
    past the Session Expiry Interval (1 s): the subscription still delivers after 1.5 s."""
    c = clients.connect("st41", properties={SEI: 1})
    c.sub("st41/t", qos=1)
    clients.advance(1.5)
    pub = clients.connect("st41-pub")
    pub.pub("st41/t", b"still here", qos=1)
    [msg] = c.publishes(1)
    assert msg.payload == b"still here"


def test_MQTT_4_1_0_2_session_discarded_after_expiry(clients: Clients) -> None:
    """MQTT-4.1.0-2: once the connection is closed and the Session Expiry Interval (1 s) has passed,
    the Session State is discarded: Session Present 0, no subscription, no queued message."""
    c = clients.connect("st42", clean_start=False, properties={SEI: 1})
    c.sub("st42/t", qos=1)
    c.disconnect()
    pub = clients.connect("st42-pub")
    pub.pub("st42/t", b"queued", qos=1)
    clients.advance(1.8)
    again = clients.connect("st42", clean_start=False, properties={SEI: 60})
    assert again.connack is not None and again.connack.session_present is False
    again.no_publish()
    pub.pub("st42/t", b"live", qos=1)
    again.no_publish()


def test_MQTT_4_1_0_2_disconnect_can_shorten_the_expiry(clients: Clients) -> None:
    """MQTT-4.1.0-2 with the Session Expiry Interval changed on DISCONNECT (60 -> 0): the Session
    ends at the close."""
    c = clients.connect("st42b", clean_start=False, properties={SEI: 60})
    c.sub("st42b/t", qos=1)
    c.disconnect(0, {SEI: 0})
    again = clients.connect("st42b", clean_start=False, properties={SEI: 60})
    assert again.connack is not None and again.connack.session_present is False


def test_MQTT_4_4_0_1_resend_unacknowledged_on_reconnect_only(clients: Clients) -> None:
    """MQTT-4.4.0-1: unacknowledged QoS 1 and 2 PUBLISHes (and PUBRELs) are re-sent, with their
    original Packet Identifiers, when the Client reconnects with Clean Start 0 and the Session is
    present, and at no other time (nothing is re-sent on the open connection)."""
    sub = clients.connect("rt1", clean_start=False, properties={SEI: 60})
    sub.sub("rt1/#", qos=2)
    pub = clients.connect("rt1-pub")
    pub.pub("rt1/a", b"one", qos=1)
    pub.pub("rt1/b", b"two", qos=2)
    pub.pub("rt1/c", b"three", qos=2)
    one, two, three = sub.publishes(3)
    sub.send(Pubrec(three.packet_id or 0))  # three moves on to PUBREL
    sub.wait_for(Pubrel)
    clients.advance(1.5)
    sub.no_publish()  # no retry on the live connection
    assert not any(isinstance(p, Pubrel) for p in sub.pending)
    sub.close()
    again = clients.connect("rt1", clean_start=False, properties={SEI: 60})
    resent = [again.recv(), again.recv(), again.recv()]
    publishes = [p for p in resent if not isinstance(p, Pubrel)]
    pubrels = [p for p in resent if isinstance(p, Pubrel)]
    assert [(p.packet_id, p.payload, p.dup) for p in publishes] == [  # type: ignore[union-attr]
        (one.packet_id, b"one", True),
        (two.packet_id, b"two", True),
    ]
    assert [p.packet_id for p in pubrels] == [three.packet_id]
    again.send(Puback(one.packet_id or 0))
    again.send(Pubrec(two.packet_id or 0))
    again.wait_for(Pubrel)
    again.send(Pubcomp(two.packet_id or 0))
    again.send(Pubcomp(three.packet_id or 0))
    clients.advance(0.5)
    again.no_publish()
    assert not again.pending


def test_MQTT_4_4_0_2_negative_ack_is_an_acknowledgement(clients: Clients) -> None:
    """MQTT-4.4.0-2: a PUBACK or PUBREC with a Reason Code of 0x80 or more acknowledges the PUBLISH:
    it is not re-sent, not even when the Session is resumed."""
    sub = clients.connect("rt2", clean_start=False, properties={SEI: 60})
    sub.sub("rt2/#", qos=2)
    pub = clients.connect("rt2-pub")
    pub.pub("rt2/a", b"refused 1", qos=1)
    pub.pub("rt2/b", b"refused 2", qos=2)
    a, b = sub.publishes(2)
    sub.send(Puback(a.packet_id or 0, 0x80))
    sub.send(Pubrec(b.packet_id or 0, 0x83))
    sub.ping()
    sub.close()
    again = clients.connect("rt2", clean_start=False, properties={SEI: 60})
    clients.advance(0.6)
    again.no_publish()
    assert not any(isinstance(p, Pubrel) for p in again.pending)


def test_MQTT_4_5_0_1_message_added_to_matching_sessions(clients: Clients) -> None:
    """MQTT-4.5.0-1: a message the server takes ownership of is added to the Session State of every
    Client with a matching subscription: connected ones and a disconnected persistent one."""
    online = clients.connect("rc-on")
    online.sub("rc/+", qos=1)
    offline = clients.connect("rc-off", clean_start=False, properties={SEI: 60})
    offline.sub("rc/#", qos=1)
    offline.disconnect()
    other = clients.connect("rc-other")
    other.sub("elsewhere/#", qos=1)
    pub = clients.connect("rc-pub")
    pub.pub("rc/t", b"for everyone", qos=1)
    assert online.publishes(1)[0].payload == b"for everyone"
    again = clients.connect("rc-off", clean_start=False, properties={SEI: 60})
    assert again.publishes(1)[0].payload == b"for everyone"
    other.no_publish(0.2)
