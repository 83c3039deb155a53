"""Property tests: every packet type at every version it exists in survives encode -> decode.

The strategies generate only valid packets (the ones the encoder is documented to write
canonically), so decode(encode(p)) == p and encode(decode(encode(p))) == encode(p). The same
packets concatenated into one stream and split at random points decode to the same list.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midge.codec import Decoder, encode
from midge.codec.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from midge.codec.properties import SPEC, WILL, Prop, PropType
from midge.codec.reasons import REASONS_BY_PACKET

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ----------------------------------------------------------------------------------

# Characters MQTT (and Mosquitto) accept in strings: no controls, surrogates or non-characters.
_chars = st.characters(min_codepoint=0x20, exclude_categories=("Cs", "Cc", "Cn"))
text = st.text(_chars, max_size=12)
binary = st.binary(max_size=40)
u16_nonzero = st.integers(1, 65535)

_level = st.text(
    st.characters(
        min_codepoint=0x20, exclude_categories=("Cs", "Cc", "Cn"), exclude_characters="/+#"
    ),
    max_size=5,
)
topic_names = st.lists(_level, min_size=1, max_size=4).map("/".join).filter(bool)


@st.composite
def topic_filters(draw: st.DrawFn, shared: bool = True) -> str:
    levels = draw(st.lists(st.one_of(st.just("+"), _level), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    flt = "/".join(levels)
    if not flt:
        flt = "#"
    if shared and draw(st.integers(0, 5)) == 0:
        group = draw(
            st.text(
                st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/+#"),
                min_size=1,
                max_size=5,
            )
        )
        flt = f"$share/{group}/{flt}"
    return flt


_BOOLEAN = {
    Prop.PAYLOAD_FORMAT_INDICATOR,
    Prop.REQUEST_PROBLEM_INFORMATION,
    Prop.REQUEST_RESPONSE_INFORMATION,
    Prop.MAXIMUM_QOS,
    Prop.RETAIN_AVAILABLE,
    Prop.WILDCARD_SUBSCRIPTION_AVAILABLE,
    Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    Prop.SHARED_SUBSCRIPTION_AVAILABLE,
}
_NONZERO = {Prop.RECEIVE_MAXIMUM, Prop.MAXIMUM_PACKET_SIZE, Prop.TOPIC_ALIAS}


def _value(prop: int, where: int) -> st.SearchStrategy[Any]:
    ptype = SPEC[prop][0]
    if prop == Prop.USER_PROPERTY:
        return st.lists(st.tuples(text, text), min_size=1, max_size=3)
    if prop == Prop.SUBSCRIPTION_IDENTIFIER:
        most = 1 if where == PacketType.SUBSCRIBE else 3
        return st.lists(st.integers(1, 268_435_455), min_size=1, max_size=most)
    if prop in _BOOLEAN:
        return st.integers(0, 1)
    low = 1 if prop in _NONZERO else 0
    if ptype == PropType.BYTE:
        return st.integers(low, 255)
    if ptype == PropType.TWO_BYTE:
        return st.integers(low, 65535)
    if ptype == PropType.FOUR_BYTE:
        return st.integers(low, 2**32 - 1)
    if ptype == PropType.UTF8:
        return text
    assert ptype == PropType.BINARY
    return binary


def properties(where: int) -> st.SearchStrategy[dict[int, Any]]:
    """Valid v5 properties for packet type ``where`` (or WILL)."""
    allowed = {prop: _value(prop, where) for prop, (_, places) in SPEC.items() if where in places}

    def fix(props: dict[int, Any]) -> dict[int, Any]:
        # Authentication Data needs an Authentication Method (a protocol error otherwise).
        if Prop.AUTHENTICATION_DATA in props and Prop.AUTHENTICATION_METHOD not in props:
            props = {Prop.AUTHENTICATION_METHOD: "m", **props}
        return props

    return st.fixed_dictionaries({}, optional=allowed).map(fix)


def _none_below_v5(version: int, where: int) -> st.SearchStrategy[dict[int, Any]]:
    return properties(where) if version == 5 else st.just({})


def _reason(version: int, ptype: int) -> st.SearchStrategy[int]:
    if version == 5:
        return st.sampled_from(sorted(REASONS_BY_PACKET[ptype]))
    return st.just(0)


@st.composite
def connects(draw: st.DrawFn, version: int) -> Connect:
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(topic_names),
            draw(binary),
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(_none_below_v5(version, WILL)),
        )
    username = draw(st.none() | text)
    password = draw(st.none() | binary)
    if version < 5 and username is None:
        password = None  # MQTT-3.1.2-22
    return Connect(
        draw(text),
        version,
        "MQIsdp" if version == 3 else "MQTT",
        draw(st.booleans()),
        draw(st.integers(0, 65535)),
        will,
        username,
        password,
        draw(_none_below_v5(version, PacketType.CONNECT)),
    )


@st.composite
def connacks(draw: st.DrawFn, version: int) -> Connack:
    code = draw(_reason(version, PacketType.CONNACK) if version == 5 else st.integers(0, 5))
    session_present = draw(st.booleans()) if code == 0 else False
    return Connack(session_present, code, draw(_none_below_v5(version, PacketType.CONNACK)))


@st.composite
def publishes(draw: st.DrawFn, version: int) -> Publish:
    qos = draw(st.integers(0, 2))
    props = draw(_none_below_v5(version, PacketType.PUBLISH))
    topic = draw(topic_names)
    if Prop.TOPIC_ALIAS in props and draw(st.booleans()):
        topic = ""  # v5: an alias alone names the topic
    payload = draw(binary | st.binary(min_size=126, max_size=400) | st.just(b"z" * 17000))
    return Publish(
        topic,
        payload,
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(u16_nonzero) if qos else None,
        props,
    )


def acks(cls: Any, version: int) -> st.SearchStrategy[Packet]:
    ptype = int(PacketType[cls.__name__.upper()])
    return st.builds(cls, u16_nonzero, _reason(version, ptype), _none_below_v5(version, ptype))


@st.composite
def subscribes(draw: st.DrawFn, version: int) -> Subscribe:
    subs = []
    for _ in range(draw(st.integers(1, 4))):
        flt = draw(topic_filters())
        if version == 5:
            subs.append(
                Subscription(
                    flt,
                    draw(st.integers(0, 2)),
                    False if flt.startswith("$share/") else draw(st.booleans()),
                    draw(st.booleans()),
                    draw(st.integers(0, 2)),
                )
            )
        else:
            subs.append(Subscription(flt, draw(st.integers(0, 2))))
    return Subscribe(draw(u16_nonzero), subs, draw(_none_below_v5(version, PacketType.SUBSCRIBE)))


def subacks(version: int) -> st.SearchStrategy[Suback]:
    codes = (
        st.sampled_from(sorted(REASONS_BY_PACKET[PacketType.SUBACK]))
        if version == 5
        else st.sampled_from([0, 1, 2, 0x80])
    )
    return st.builds(
        Suback,
        u16_nonzero,
        st.lists(codes, min_size=1, max_size=5),
        _none_below_v5(version, PacketType.SUBACK),
    )


def unsubscribes(version: int) -> st.SearchStrategy[Unsubscribe]:
    return st.builds(
        Unsubscribe,
        u16_nonzero,
        st.lists(topic_filters(), min_size=1, max_size=4),
        _none_below_v5(version, PacketType.UNSUBSCRIBE),
    )


def unsubacks(version: int) -> st.SearchStrategy[Unsuback]:
    if version != 5:
        return st.builds(Unsuback, u16_nonzero)
    return st.builds(
        Unsuback,
        u16_nonzero,
        st.lists(
            st.sampled_from(sorted(REASONS_BY_PACKET[PacketType.UNSUBACK])), min_size=1, max_size=5
        ),
        properties(PacketType.UNSUBACK),
    )


def packets(version: int, connect: bool = True) -> st.SearchStrategy[Packet]:
    """Any valid packet at ``version`` (CONNECT optional: it resets a Decoder's version)."""
    options: list[st.SearchStrategy[Any]] = [
        connacks(version),
        publishes(version),
        acks(Puback, version),
        acks(Pubrec, version),
        acks(Pubrel, version),
        acks(Pubcomp, version),
        subscribes(version),
        subacks(version),
        unsubscribes(version),
        unsubacks(version),
        st.just(Pingreq()),
        st.just(Pingresp()),
        st.builds(
            Disconnect,
            _reason(version, PacketType.DISCONNECT),
            _none_below_v5(version, PacketType.DISCONNECT),
        ),
    ]
    if connect:
        options.append(connects(version))
    if version == 5:
        options.append(st.builds(Auth, _reason(5, PacketType.AUTH), properties(PacketType.AUTH)))
    return st.one_of(options)


versions = st.sampled_from([3, 4, 5])


@st.composite
def version_and_packet(draw: st.DrawFn) -> tuple[int, Packet]:
    version = draw(versions)
    return version, draw(packets(version))


@st.composite
def version_and_stream(draw: st.DrawFn) -> tuple[int, list[Packet]]:
    version = draw(versions)
    return version, draw(st.lists(packets(version, connect=False), min_size=1, max_size=8))


# --- tests ---------------------------------------------------------------------------------------


def decode_all(data: bytes, version: int | None) -> list[Packet]:
    decoder = Decoder(version)
    packets = decoder.feed(data)
    assert decoder.next_packet() is None
    return packets


@SETTINGS
@given(version_and_packet())
def test_encode_decode_roundtrip(case: tuple[int, Packet]) -> None:
    version, packet = case
    data = encode(packet, version)
    (decoded,) = decode_all(data, version)
    assert decoded == packet
    assert encode(decoded, version) == data


@SETTINGS
@given(st.sampled_from([3, 4, 5]).flatmap(connects))
def test_connect_sets_the_decoders_version(packet: Connect) -> None:
    version = packet.protocol_level
    follow = Disconnect(0x04) if version == 5 else Disconnect()
    decoder = Decoder()
    out = decoder.feed(encode(packet, version) + encode(follow, version))
    assert out == [packet, follow]
    assert decoder.version == version


@SETTINGS
@given(version_and_stream(), st.data())
def test_split_stream_decodes_the_same(case: tuple[int, list[Packet]], data: st.DataObject) -> None:
    version, packets = case
    stream = b"".join(encode(p, version) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = Decoder(version)
    out: list[Packet] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[last:cut]))
        last = cut
    assert out == packets
    assert decoder.next_packet() is None


def test_byte_at_a_time() -> None:
    packets: list[Packet] = [
        Publish("a/b", b"x" * 300, 1, packet_id=5, properties={Prop.USER_PROPERTY: [("k", "v")]}),
        Puback(5),
        Pingreq(),
        Publish("a", b"", 0),
    ]
    stream = b"".join(encode(p, 5) for p in packets)
    decoder = Decoder(5)
    out: list[Packet] = []
    for i in range(len(stream)):
        decoder.receive(stream[i : i + 1])
        packet = decoder.next_packet()
        while packet is not None:
            out.append(packet)
            packet = decoder.next_packet()
    assert out == packets


def test_a_reused_buffer_is_copied() -> None:
    """A chunk that is not bytes (a bytearray, a memoryview: a transport may hand over its
    own buffer and refill it) is copied: what the decoder holds does not change with it."""
    stream = encode(Publish("a/b", b"payload", 0), 4) + encode(Publish("c", b"second", 0), 4)
    for cut in (3, len(stream) // 2, len(stream) - 2):
        decoder = Decoder(4)
        head = bytearray(stream[:cut])
        decoder.receive(head)
        head[:] = b"\xff" * len(head)
        tail = bytearray(stream[cut:])
        decoder.receive(memoryview(tail))
        tail[:] = b"\xff" * len(tail)
        out = []
        packet = decoder.next_packet()
        while packet is not None:
            out.append(packet)
            packet = decoder.next_packet()
        assert out == [Publish("a/b", b"payload", 0), Publish("c", b"second", 0)], cut


def test_many_packets_in_one_chunk_is_linear() -> None:
    """Thousands of small packets in one chunk: one pass, no quadratic buffer copying."""
    import time

    one = encode(Publish("t", b"p", 0), 4)
    chunk = one * 50_000
    decoder = Decoder(4)
    start = time.perf_counter()
    out = decoder.feed(chunk)
    elapsed = time.perf_counter() - start
    assert len(out) == 50_000
    assert elapsed < 5.0


def test_large_packet_in_small_chunks_is_linear() -> None:
    import time

    data = encode(Publish("t", b"y" * 4_000_000, 0), 4)
    decoder = Decoder(4)
    start = time.perf_counter()
    out: list[Packet] = []
    for i in range(0, len(data), 512):
        out.extend(decoder.feed(data[i : i + 512]))
    assert time.perf_counter() - start < 5.0
    assert len(out) == 1
    assert isinstance(out[0], Publish) and out[0].payload == b"y" * 4_000_000


# --- canonical forms the brief pins down ---------------------------------------------------------


def test_canonical_short_forms() -> None:
    assert encode(Puback(1), 5) == b"\x40\x02\x00\x01"
    assert encode(Puback(1, 0x10), 5) == b"\x40\x03\x00\x01\x10"
    assert encode(Pubrel(1), 5) == b"\x62\x02\x00\x01"
    assert encode(Disconnect(), 5) == b"\xe0\x00"
    assert encode(Disconnect(0x04), 5) == b"\xe0\x01\x04"
    assert encode(Auth(), 5) == b"\xf0\x00"
    assert encode(Auth(0x18), 5) == b"\xf0\x02\x18\x00"
    assert encode(Pingreq(), 4) == b"\xc0\x00"
    assert encode(Connack(False, 0), 5) == b"\x20\x03\x00\x00\x00"


def test_version_specific_encodings() -> None:
    # v3 CONNECT says MQIsdp/3; v4 MQTT/4; v5 MQTT/5 with a property length.
    assert encode(Connect("c"), 3)[2:11] == b"\x00\x06MQIsdp\x03"
    assert encode(Connect("c"), 4)[2:9] == b"\x00\x04MQTT\x04"
    assert (
        encode(Connect("c", keep_alive=0), 5)
        == b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x00\x00\x00\x01c"
    )
    # Below v5: no reason codes or properties.
    assert encode(Puback(1, 0x80, {Prop.REASON_STRING: "x"}), 4) == b"\x40\x02\x00\x01"
    assert encode(Disconnect(0x8E), 4) == b"\xe0\x00"
    assert encode(Unsuback(3, [0x11]), 4) == b"\xb0\x02\x00\x03"
    # v3 SUBACK codes: a v5 failure code becomes 0x80.
    assert encode(Suback(1, [0, 1, 2, 0x87, 0x80]), 4) == b"\x90\x07\x00\x01\x00\x01\x02\x80\x80"
    # v3 CONNACK return codes from v5 reasons; no session present on refusal.
    assert encode(Connack(True, 0x86), 4) == b"\x20\x02\x00\x04"
    assert encode(Connack(False, 0x85), 3) == b"\x20\x02\x00\x02"
    assert encode(Connack(False, 0x84), 4) == b"\x20\x02\x00\x01"
    # v5 subscription options byte.
    sub = Subscribe(1, [Subscription("a", 2, True, True, 2)])
    assert encode(sub, 5)[-1] == 2 | 4 | 8 | 32
    assert encode(sub, 4)[-1] == 2


def test_remaining_length_boundaries() -> None:
    for size in (0, 127, 128, 16383, 16384, 2_097_151, 2_097_152):
        packet = Publish("t", b"\x01" * size)
        data = encode(packet, 4)
        (decoded,) = decode_all(data, 4)
        assert decoded == packet
