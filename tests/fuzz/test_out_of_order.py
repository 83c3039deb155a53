"""Valid packets in the wrong order, with exact expectations, at v3, v4 and v5.

A model of the one connection says what the broker must answer to each packet: acknowledgements
for packet identifiers it does not know (MQTT-4.3.3; Success, as Mosquitto, where 0x92 would
fit), QoS 2 duplicates (MQTT-4.3.3-2), Receive Maximum (MQTT-3.3.4-9 v5), and the packets that
end the connection:
packets only a server sends, a second CONNECT (MQTT-3.1.0-2), AUTH without an Authentication
Method (MQTT 5.0 4.12), and the client's DISCONNECT, after which nothing is answered. At v5 the
broker says why it closes with a DISCONNECT (MQTT 5.0 section 4.13); below v5 it just closes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from midge.codec.packets import (
    MQTT5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Unsuback,
    Unsubscribe,
)
from tests.fuzz.harness import (
    DEFAULT_RECEIVE_MAX,
    Rig,
    chunked,
    decode_all,
    encode_any,
    fuzz_settings,
    read_to_eof,
    send_chunks,
)

FUZZ = fuzz_settings(150)

PIDS = st.one_of(st.integers(1, 6), st.integers(1, 65535))
#: PUBACK/PUBREC reason codes a client may send (MQTT 5.0 tables 3-4, 3-5).
ACK_REASONS = st.sampled_from([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99])


@dataclass(frozen=True)
class Act:
    kind: str
    pid: int = 1
    arg: int = 0


ORDINARY = st.one_of(
    st.builds(Act, st.just("puback"), PIDS, ACK_REASONS),
    st.builds(Act, st.just("pubrec"), PIDS, ACK_REASONS),
    st.builds(Act, st.just("pubrel"), PIDS),
    st.builds(Act, st.just("pubcomp"), PIDS),
    st.builds(Act, st.just("publish"), PIDS, st.integers(1, 2)),
    # Many QoS 2 PUBLISHes without PUBREL, around the Receive Maximum.
    st.builds(Act, st.just("flood"), st.integers(1000, 2000), st.sampled_from([1, 19, 20, 21])),
    st.builds(Act, st.just("ping")),
    st.builds(Act, st.just("unsubscribe"), PIDS),
)
ENDING = st.one_of(
    st.builds(Act, st.sampled_from(["connack", "suback", "unsuback", "pingresp"]), PIDS),
    st.builds(Act, st.just("connect")),
    st.builds(Act, st.just("auth"), st.just(1), st.sampled_from([0x00, 0x18, 0x19])),
    st.builds(Act, st.just("disconnect")),
)


@st.composite
def scripts(draw: st.DrawFn) -> list[Act]:
    """Ordinary packets, and maybe one that ends the connection somewhere among them."""
    actions = draw(st.lists(ORDINARY, min_size=1, max_size=10))
    ending = draw(st.none() | ENDING)
    if ending is not None:
        actions.insert(draw(st.integers(0, len(actions))), ending)
    return actions


class Model:
    """What the broker answers one connection that has no subscriptions (so no deliveries)."""

    def __init__(self, version: int, topic: str) -> None:
        self.version = version
        self.v5 = version == MQTT5
        self.topic = topic
        self.awaiting_rel: set[int] = set()
        #: The packets the broker must send, in order.
        self.answers: list[Packet] = []
        #: None while open; "quiet" after the client's DISCONNECT; else the v5 reason code.
        self.ended: int | str | None = None

    def reason(self, code: int) -> int:
        return code if self.v5 else 0

    def packets(self, act: Act) -> list[Packet]:
        """What the client sends for ``act``."""
        k, pid = act.kind, act.pid
        if k == "puback":
            return [Puback(pid, act.arg if self.v5 else 0)]
        if k == "pubrec":
            return [Pubrec(pid, act.arg if self.v5 else 0)]
        if k == "pubrel":
            return [Pubrel(pid)]
        if k == "pubcomp":
            return [Pubcomp(pid)]
        if k == "publish":
            return [Publish(self.topic, b"x", act.arg, False, False, pid)]
        if k == "flood":
            return [Publish(self.topic, b"f", 2, False, False, pid + i) for i in range(act.arg)]
        if k == "ping":
            return [Pingreq()]
        if k == "unsubscribe":
            return [Unsubscribe(pid, [self.topic])]
        if k == "connack":
            return [Connack()]
        if k == "suback":
            return [Suback(pid, [0])]
        if k == "unsuback":
            return [Unsuback(pid, [0])]
        if k == "pingresp":
            return [Pingresp()]
        if k == "connect":
            return [Connect("second")]
        if k == "auth":
            return [Auth(act.arg)]
        assert k == "disconnect"
        return [Disconnect()]

    def receive(self, packet: Packet) -> None:
        """The broker receives ``packet``: record its answers (nothing once it has closed)."""
        if self.ended is not None:
            return
        v5 = self.v5
        if isinstance(packet, Publish):
            pid = packet.packet_id
            assert pid is not None
            if packet.qos == 2 and pid in self.awaiting_rel:
                self.answers.append(Pubrec(pid))  # MQTT-4.3.3-2: acknowledged again, not routed
                return
            if v5 and len(self.awaiting_rel) >= DEFAULT_RECEIVE_MAX:
                self.ended = 0x93  # MQTT-3.3.4-9 v5
                return
            if packet.qos == 1:
                self.answers.append(Puback(pid, self.reason(0x10)))  # no matching subscribers
            else:
                self.awaiting_rel.add(pid)
                self.answers.append(Pubrec(pid))  # Success: Mosquitto's, whoever subscribed
        elif isinstance(packet, Pubrel):
            self.awaiting_rel.discard(packet.packet_id)
            self.answers.append(Pubcomp(packet.packet_id))  # Success even if unknown, as Mosquitto
        elif isinstance(packet, Pubrec):
            if packet.reason_code < 0x80:  # a failure ends the flow, nothing to answer
                self.answers.append(Pubrel(packet.packet_id))  # Success, as Mosquitto
        elif isinstance(packet, (Puback, Pubcomp)):
            pass  # for nothing in flight: ignored
        elif isinstance(packet, Pingreq):
            self.answers.append(Pingresp())
        elif isinstance(packet, Unsubscribe):
            self.answers.append(Unsuback(packet.packet_id, [0x11] if v5 else []))
        elif isinstance(packet, Disconnect):
            self.ended = "quiet"
        else:
            # Server-only packets, a second CONNECT, AUTH: protocol errors (below v5 an AUTH is a
            # reserved packet type, malformed; either way the connection closes).
            self.ended = 0x82


@pytest.mark.parametrize("version", [3, 4, 5])
@FUZZ
@given(data=st.data())
def test_out_of_order_packets(rig: Rig, version: int, data: st.DataObject) -> None:
    actions = data.draw(scripts(), label="actions")
    with rig.example(sessions_clean=True):
        client, _ = rig.connected(version)
        model = Model(version, rig.prefix() + "/t")
        stream = b""
        for act in actions:
            for packet in model.packets(act):
                stream += encode_any(packet, version)
                model.receive(packet)
        # A barrier, then a normal DISCONNECT: if the broker is still open, it answers PINGREQ
        # and then closes, so reading to EOF sees every answer.
        for packet in (Pingreq(), Disconnect()):
            stream += encode_any(packet, version)
            model.receive(packet)
        event(f"ends: {model.ended!r}")
        chunks = data.draw(chunked(stream), label="chunks")
        send_chunks(client, chunks)
        raw, eof = read_to_eof(client)
        assert eof, "the broker did not close the connection"
        got = decode_all(raw, version)
        expected: list[Packet] = list(model.answers)
        if isinstance(model.ended, int) and version == MQTT5:
            expected.append(Disconnect(model.ended))
        assert got == expected
