"""Known protocol violations after CONNECT, each with the reason codes the spec allows.

A hypothesis example picks a violation, a few valid packets before it, PINGREQs after it, and
where the stream is cut. The broker must answer the packets before it, close the connection at
the violation and answer nothing after it; at v5 it first sends DISCONNECT with a reason code the
MQTT 5.0 spec gives for that case (section 4.13 and the statement cited with each case); below v5
it closes without a packet (MQTT-4.8.0-1 3.1.1). Where the spec names no reason code, 0x81
(Malformed Packet) and 0x82 (Protocol Error) are both accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midge.codec import encode
from midge.codec.packets import (
    MQTT5,
    Auth,
    Connack,
    Connect,
    Packet,
    Pingreq,
    Pingresp,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
)
from midge.codec.properties import Prop
from midge.config import Config
from tests.fuzz.harness import (
    LOCAL,
    MALFORMED,
    MALFORMED_OR_PROTOCOL,
    PROTOCOL_ERROR,
    Expect,
    Rig,
    chunked,
    exercise,
    fuzz_settings,
    rig_on,
)
from tests.rawclient import (
    mqtt_string,
    raw_connect,
    raw_packet,
    raw_publish,
    raw_subscribe,
    raw_unsubscribe,
    varint,
)

FUZZ = fuzz_settings(12)

#: ``draw`` as hypothesis gives it (``st.DataObject.draw``).
Draw = Callable[..., Any]
#: ``build(draw, version, topic_prefix)``: the violating bytes.
Build = Callable[[Draw, int, str], bytes]


@dataclass(frozen=True)
class Case:
    """One kind of violation: ``build(draw, version, topic_prefix)`` makes its bytes."""

    id: str
    what: str
    build: Build
    #: The v5 DISCONNECT reason codes the spec allows here.
    reasons: frozenset[int]
    v5_only: bool = False

    def __repr__(self) -> str:
        return self.id


def props(data: bytes) -> bytes:
    """An encoded v5 property list: its length, then ``data``."""
    return varint(len(data)) + data


def pub(topic: str | bytes, version: int, properties: bytes = b"\x00", **kw: object) -> bytes:
    return raw_publish(topic, b"p", version=version, properties=properties, **kw)  # type: ignore[arg-type]


def _bad_flags(draw: Draw, version: int, prefix: str) -> bytes:
    ptype = draw(st.sampled_from([4, 5, 6, 7, 8, 10, 12, 14]))
    required = 2 if ptype in (6, 8, 10) else 0
    flags = draw(st.integers(0, 15).filter(lambda f: f != required))
    body = {12: b"", 14: b""}.get(ptype, b"\x00\x01" + (b"\x00" if version == MQTT5 else b""))
    if ptype in (8, 10):
        body += mqtt_string(prefix) + (b"\x00" if ptype == 8 else b"")
    return raw_packet(ptype << 4 | flags, body)


def _pid_zero(draw: Draw, version: int, prefix: str) -> bytes:
    kind = draw(st.sampled_from(["publish", "subscribe", "unsubscribe", "puback"]))
    if kind == "publish":
        return pub(prefix, version, qos=1, packet_id=0)
    if kind == "subscribe":
        return raw_subscribe(0, (prefix, 0), version=version)
    if kind == "unsubscribe":
        return raw_unsubscribe(0, prefix, version=version)
    return raw_packet(0x40, b"\x00\x00")


def _server_only(draw: Draw, version: int, prefix: str) -> bytes:
    choices: list[Packet] = [Connack(), Suback(1, [0]), Unsuback(1, [0x11])]
    packet = draw(st.sampled_from(choices))
    return encode(packet, version) if draw(st.booleans()) else b"\xd0\x00"


def _dup_prop(draw: Draw, version: int, prefix: str) -> bytes:
    prop = draw(st.sampled_from([b"\x01\x00", b"\x02\x00\x00\x00\x05", b"\x03\x00\x01x"]))
    return pub(prefix, version, props(prop + prop))


def _receive_max(draw: Draw, version: int, prefix: str) -> bytes:
    # The broker's Receive Maximum is 20 (max_inflight_messages): 20 QoS 2 PUBLISHes without
    # PUBREL fill it; one more QoS 1 or 2 PUBLISH exceeds it (MQTT-3.3.4-9 v5).
    qos = draw(st.integers(1, 2))
    flood = b"".join(pub(prefix, version, qos=2, packet_id=100 + i) for i in range(20))
    return flood + pub(prefix, version, qos=qos, packet_id=200)


CASES = [
    # -- Malformed Packet -----------------------------------------------------------------------
    Case(  # 2.1.2: type 0 is "Reserved, forbidden"
        "type-0",
        "reserved packet type 0",
        lambda d, v, p: raw_packet(d(st.integers(0, 15)), d(st.binary(max_size=4))),
        MALFORMED_OR_PROTOCOL,
    ),
    Case(
        "header-flags",
        "fixed header flags wrong for the type (MQTT-2.1.3-1)",
        _bad_flags,
        MALFORMED,
    ),
    Case(  # MQTT-3.3.1-4: both QoS bits set
        "publish-qos-3",
        "PUBLISH with QoS 3",
        lambda d, v, p: raw_packet(0x36 | d(st.integers(0, 1)), mqtt_string(p) + b"\x00\x01\x00"),
        MALFORMED,
    ),
    Case(  # MQTT-3.3.1-2: DUP must be 0 at QoS 0 (no reason code given)
        "dup-at-qos-0",
        "PUBLISH with DUP at QoS 0",
        lambda d, v, p: pub(p, v, dup=True),
        MALFORMED_OR_PROTOCOL,
    ),
    Case(  # 1.5.5 / 2.1.4: at most four bytes
        "length-5-bytes",
        "Remaining Length of five bytes",
        lambda d, v, p: bytes([d(st.sampled_from([0x30, 0x82, 0xC0]))]) + b"\x80\x80\x80\x80\x01",
        MALFORMED,
    ),
    Case(  # MQTT-1.5.4-1
        "topic-bad-utf8",
        "topic is not well-formed UTF-8",
        lambda d, v, p: pub(d(st.sampled_from([b"\xff", b"a\xc3", b"\xed\xa0\x80"])), v),
        MALFORMED,
    ),
    Case(
        "topic-nul",
        "topic holds U+0000 (MQTT-1.5.4-2)",
        lambda d, v, p: pub(p.encode() + b"\x00", v),
        MALFORMED,
    ),
    Case("packet-id-0", "packet identifier 0 (MQTT-2.2.1-3)", _pid_zero, MALFORMED_OR_PROTOCOL),
    Case(
        "string-overrun",
        "string runs past the packet",
        lambda d, v, p: raw_packet(0x30, b"\x00\x40" + p.encode()),
        MALFORMED,
    ),
    Case(
        "pingreq-body", "PINGREQ with a body", lambda d, v, p: raw_packet(0xC0, b"\x00"), MALFORMED
    ),
    Case(  # 4.7.1: '#' last and alone, '+' alone in its level
        "bad-filter",
        "invalid topic filter",
        lambda d, v, p: raw_subscribe(
            1, (p + d(st.sampled_from(["/#/x", "/a+", "#/"])), 0), version=v
        ),
        MALFORMED_OR_PROTOCOL,
    ),
    Case(  # MQTT-3.8.3-5 v5
        "sub-reserved-bits",
        "SUBSCRIBE options reserved bits",
        lambda d, v, p: raw_subscribe(1, (p, d(st.sampled_from([0x40, 0x80, 0xC0]))), version=v),
        MALFORMED,
        v5_only=True,
    ),
    Case(  # 2.2.2.2: an identifier not valid for the packet type
        "unknown-property",
        "unknown property identifier",
        lambda d, v, p: pub(p, v, props(bytes([d(st.sampled_from([0x00, 0x04, 0x7F, 0xFF]))]))),
        MALFORMED,
        v5_only=True,
    ),
    Case(
        "misplaced-property",
        "property not allowed in PUBLISH",
        lambda d, v, p: pub(p, v, props(d(st.sampled_from([b"\x21\x00\x05", b"\x11\0\0\0\1"])))),
        MALFORMED,
        v5_only=True,
    ),
    Case(
        "property-overrun",
        "property length runs past the packet",
        lambda d, v, p: raw_packet(0x30, mqtt_string(p) + b"\x05\x01"),
        MALFORMED,
        v5_only=True,
    ),
    # -- Protocol Error -------------------------------------------------------------------------
    Case("server-packet", "a packet only a server sends", _server_only, PROTOCOL_ERROR),
    Case(  # MQTT-3.1.0-2
        "second-connect",
        "second CONNECT",
        lambda d, v, p: encode(Connect("again", v if v != 3 else 4), v),
        PROTOCOL_ERROR,
    ),
    Case(  # MQTT-3.1.0-2; the unknown level makes it no less a second CONNECT
        "second-connect-bad-level",
        "second CONNECT with an unknown protocol level",
        lambda d, v, p: raw_connect("again", version=d(st.sampled_from([0, 2, 6, 255]))),
        MALFORMED_OR_PROTOCOL,
    ),
    Case(  # 4.12: no Authentication Method at CONNECT, so no AUTH
        "auth-without-method",
        "AUTH without an Authentication Method at CONNECT",
        lambda d, v, p: encode(
            Auth(
                d(st.sampled_from([0x00, 0x18, 0x19])),
                d(st.sampled_from([{}, {Prop.AUTHENTICATION_METHOD: "SCRAM-SHA-1"}])),
            ),
            MQTT5,
        ),
        PROTOCOL_ERROR,
        v5_only=True,
    ),
    Case(
        "duplicate-property", "a property twice (2.2.2.2)", _dup_prop, PROTOCOL_ERROR, v5_only=True
    ),
    Case(  # 3.8.3.1
        "sub-qos-3",
        "SUBSCRIBE Maximum QoS 3",
        lambda d, v, p: raw_subscribe(1, (p, 0x03), version=v),
        MALFORMED,  # Mosquitto 2.0.11's code (the spec says Protocol Error; both close)
        v5_only=True,
    ),
    Case(  # 3.8.3.1
        "retain-handling-3",
        "SUBSCRIBE Retain Handling 3",
        lambda d, v, p: raw_subscribe(1, (p, 0x30 | d(st.integers(0, 2))), version=v),
        MALFORMED,  # Mosquitto 2.0.11's code (the spec says Protocol Error; both close)
        v5_only=True,
    ),
    Case(  # MQTT-3.8.3-2 (v5: "is a Protocol Error")
        "sub-no-filters",
        "SUBSCRIBE without topic filters",
        lambda d, v, p: raw_subscribe(1, version=v),
        MALFORMED,  # Mosquitto 2.0.11's code (the spec says Protocol Error; both close)
    ),
    Case(  # MQTT-3.10.3-2
        "unsub-no-filters",
        "UNSUBSCRIBE without topic filters",
        lambda d, v, p: raw_unsubscribe(1, version=v),
        MALFORMED,  # Mosquitto 2.0.11's code (the spec says Protocol Error; both close)
    ),
    Case(  # MQTT-3.8.3-4 v5
        "no-local-shared",
        "No Local on a shared subscription",
        lambda d, v, p: raw_subscribe(1, ("$share/g/" + p, 0x04), version=v),
        PROTOCOL_ERROR,
        v5_only=True,
    ),
    Case(  # 3.8.2.1.2
        "sub-id-0",
        "Subscription Identifier 0",
        lambda d, v, p: raw_subscribe(1, (p, 0), version=v, properties=props(b"\x0b\x00")),
        MALFORMED,  # Mosquitto 2.0.11's code (the spec says Protocol Error; both close)
        v5_only=True,
    ),
    Case(  # MQTT-3.3.4-6 v5 (no reason code given)
        "sub-id-in-publish",
        "Subscription Identifier in a client's PUBLISH",
        lambda d, v, p: pub(p, v, props(b"\x0b\x01")),
        MALFORMED_OR_PROTOCOL,
        v5_only=True,
    ),
    Case(  # 3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there is no
        # Topic Alias"; below v5 an empty topic is invalid too (MQTT-4.7.3-1)
        "empty-topic",
        "empty topic name without a Topic Alias",
        lambda d, v, p: pub("", v),
        PROTOCOL_ERROR,
    ),
    Case(  # 3.3.4: no mapping for the alias and an empty topic name: 0x82
        "unknown-alias",
        "unknown Topic Alias",
        lambda d, v, p: pub("", v, props(b"\x23\x00" + bytes([d(st.integers(1, 10))]))),
        PROTOCOL_ERROR,
        v5_only=True,
    ),
    Case(  # 3.3.4: "A Topic Alias value of 0 or greater than the Maximum Topic Alias is a
        # Protocol Error, the receiver uses DISCONNECT with Reason Code of 0x94"
        "alias-0",
        "Topic Alias 0",
        lambda d, v, p: pub(p, v, props(b"\x23\x00\x00")),
        frozenset({0x94}),
        v5_only=True,
    ),
    Case(
        "alias-too-big",
        "Topic Alias above the maximum",
        lambda d, v, p: pub(p, v, props(b"\x23" + d(st.integers(11, 65535)).to_bytes(2, "big"))),
        frozenset({0x94}),
        v5_only=True,
    ),
    Case(  # MQTT-3.3.2-2: the spec gives no reason code; 0x90 is arguable (see the report)
        "wildcard-topic",
        "wildcard in the topic name",
        lambda d, v, p: pub(p + d(st.sampled_from(["/+", "/#", "/a+b"])), v),
        MALFORMED_OR_PROTOCOL | {0x90},
    ),
    Case(  # MQTT-3.14.2-2 v5
        "disconnect-expiry",
        "DISCONNECT sets a Session Expiry Interval after CONNECT had 0",
        lambda d, v, p: raw_packet(0xE0, b"\x00" + props(b"\x11\x00\x00\x00\x05")),
        PROTOCOL_ERROR,
        v5_only=True,
    ),
    Case(  # MQTT-3.14.2-1 v5, MQTT-3.6.2-1 v5 (no reason code given)
        "bad-reason-code",
        "reason code not allowed for the packet type",
        lambda d, v, p: d(st.sampled_from([b"\x62\x03\x00\x01\x10", b"\xe0\x01\x01"])),
        MALFORMED_OR_PROTOCOL,
        v5_only=True,
    ),
    Case(  # 3.3.2.3.2 (no reason code given)
        "payload-format-2",
        "Payload Format Indicator 2",
        lambda d, v, p: pub(p, v, props(b"\x01\x02")),
        MALFORMED_OR_PROTOCOL,
        v5_only=True,
    ),
    Case("receive-max", "Receive Maximum exceeded", _receive_max, frozenset({0x93}), v5_only=True),
]


@st.composite
def preambles(draw: st.DrawFn, version: int, prefix: str) -> tuple[bytes, int]:
    """Valid packets to send before the violation; returns them and how many are PINGREQs."""
    packets: list[Packet] = draw(
        st.lists(
            st.one_of(
                st.just(Pingreq()),
                st.builds(
                    Publish,
                    st.just(prefix + "/a"),
                    st.binary(max_size=8),
                    st.integers(0, 1),
                    st.just(False),
                    st.just(False),
                    st.integers(1, 9),
                ),
                st.builds(
                    Subscribe,
                    st.integers(1, 9),
                    st.lists(
                        st.builds(Subscription, st.sampled_from([prefix + "/a", prefix + "/#"])),
                        min_size=1,
                        max_size=2,
                    ),
                ),
                st.builds(Unsubscribe, st.integers(1, 9), st.just([prefix + "/a"])),
            ),
            max_size=4,
        )
    )
    for p in packets:
        if isinstance(p, Publish) and not p.qos:
            p.packet_id = None
    pings = sum(isinstance(p, Pingreq) for p in packets)
    return b"".join(encode(p, version) for p in packets), pings


def run_case(rig: Rig, version: int, case: Case, data: st.DataObject) -> None:
    with rig.example(sessions_clean=True):
        client, _ = rig.connected(version)
        prefix = rig.prefix()
        before, pings = data.draw(preambles(version, prefix), label="before")
        bad = case.build(data.draw, version, prefix)
        stream = before + bad + b"\xc0\x00\xc0\x00"  # PINGREQs the broker must not answer
        chunks = data.draw(chunked(stream), label="chunks")
        expect = Expect(
            version=version,
            closes=True,
            reasons=case.reasons if version == MQTT5 else None,
            why=case.what,
        )
        packets = exercise(client, chunks, expect)
        answered = sum(isinstance(p, Pingresp) for p in packets)
        assert answered == pings, f"{answered} PINGRESP for {pings} PINGREQ before the violation"


def params(cases: list[Case]) -> list[object]:
    return [
        pytest.param(version, case, id=f"v{version}-{case.id}")
        for version in (4, 5)
        for case in cases
        if version == MQTT5 or not case.v5_only
    ]


@pytest.fixture(scope="module")
def shared_rig() -> Iterator[Rig]:
    """One default broker for every case of this module (each case is a separate test)."""
    with rig_on(Config(listeners=[LOCAL])) as rig:
        yield rig


@pytest.mark.parametrize(("version", "case"), params(CASES))
@FUZZ
@given(data=st.data())
def test_violation(shared_rig: Rig, version: int, case: Case, data: st.DataObject) -> None:
    run_case(shared_rig, version, case, data)


LIMIT_CASES = [
    Case(  # 3.2.2.3.6 / 4.13: larger than the Maximum Packet Size in CONNACK
        "too-large",
        "packet larger than the Maximum Packet Size",
        lambda d, v, p: raw_publish(p, d(st.binary(min_size=130, max_size=400)), version=v),
        frozenset({0x95}),
    ),
    Case(  # MQTT-3.2.2-11 v5
        "qos-above-max",
        "PUBLISH above the Maximum QoS",
        lambda d, v, p: pub(p, v, qos=2, packet_id=1),
        frozenset({0x9B}),
    ),
    Case(  # MQTT-3.2.2-14 v5
        "retain-unavailable",
        "retained PUBLISH when Retain Available is 0",
        lambda d, v, p: pub(p, v, retain=True),
        frozenset({0x9A}),
    ),
    Case(
        "alias-above-config",
        "Topic Alias above the server's Topic Alias Maximum",
        lambda d, v, p: pub(p, v, props(b"\x23\x00\x03")),
        frozenset({0x94}),
        v5_only=True,
    ),
]

LIMITS = Config(
    listeners=[LOCAL], max_packet_size=128, max_qos=1, retain_available=False, max_topic_alias=2
)


@pytest.fixture(scope="module")
def limited_rig() -> Iterator[Rig]:
    with rig_on(LIMITS) as rig:
        yield rig


@pytest.mark.parametrize(("version", "case"), params(LIMIT_CASES))
@FUZZ
@given(data=st.data())
def test_violation_of_a_configured_limit(
    limited_rig: Rig, version: int, case: Case, data: st.DataObject
) -> None:
    run_case(limited_rig, version, case, data)


def test_connack_announces_the_limits(limited_rig: Rig) -> None:
    """The limits the cases above rely on are the ones a v5 client is told (MQTT 5.0 3.2.2.3)."""
    with limited_rig.example():
        _, connack = limited_rig.connected(MQTT5)
        assert connack.properties.get(Prop.MAXIMUM_PACKET_SIZE) == 128
        assert connack.properties.get(Prop.MAXIMUM_QOS) == 1
        assert connack.properties.get(Prop.RETAIN_AVAILABLE) == 0
        assert connack.properties.get(Prop.TOPIC_ALIAS_MAXIMUM) == 2
