"""Robustness: random and mutated bytes only ever raise CodecError subclasses, and terminate.

Whatever the decoder does accept must be encodable, and decoding that encoding gives the same
packet back (the decoder's output is always canonicalisable).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midge.codec import Decoder, encode
from midge.codec.packets import Connect, Packet
from midge.codec.reasons import CodecError
from tests.unit.test_codec_roundtrip import packets

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

decoder_versions = st.sampled_from([None, 3, 4, 5])


def run(data: bytes, version: int | None, cuts: list[int]) -> list[tuple[int, Packet]]:
    """Feed ``data`` split at ``cuts``; return (version it was read at, packet) until an error."""
    decoder = Decoder(version)
    out: list[tuple[int, Packet]] = []
    last = 0
    try:
        for cut in [*sorted(cuts), len(data)]:
            decoder.receive(data[last:cut])
            last = cut
            while True:
                before = decoder.version or 4
                packet = decoder.next_packet()
                if packet is None:
                    break
                at = packet.protocol_level if isinstance(packet, Connect) else before
                out.append((at, packet))
    except CodecError:
        # Sticky: the same error again, never anything else.
        try:
            decoder.next_packet()
        except CodecError:
            pass
        else:  # pragma: no cover - a failure of the test
            raise AssertionError("decoder did not stay failed") from None
    return out


def check_reencodes(decoded: list[tuple[int, Packet]]) -> None:
    for version, packet in decoded:
        data = encode(packet, version)
        assert Decoder(version).feed(data) == [packet], (version, packet, data)


@FUZZ
@given(st.binary(max_size=300), decoder_versions, st.lists(st.integers(0, 300), max_size=6))
def test_random_bytes(data: bytes, version: int | None, cuts: list[int]) -> None:
    check_reencodes(run(data, version, [c for c in cuts if c <= len(data)]))


@FUZZ
@given(
    st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]).flatmap(
        lambda t: st.tuples(
            st.integers(0, 255) if t is None else st.integers(t << 4, (t << 4) | 15),
            st.binary(max_size=120),
        )
    ),
    decoder_versions,
)
def test_random_bodies_with_a_plausible_header(
    case: tuple[int, bytes], version: int | None
) -> None:
    first, body = case
    n = len(body)
    header = bytes((first, n)) if n < 128 else bytes((first, (n & 0x7F) | 0x80, n >> 7))
    check_reencodes(run(header + body, version, []))


@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[int, bytes, list[int]]:
    version = draw(st.sampled_from([3, 4, 5]))
    stream = bytearray(
        b"".join(
            encode(p, version) for p in draw(st.lists(packets(version), min_size=1, max_size=4))
        )
    )
    for _ in range(draw(st.integers(1, 4))):
        if not stream:
            break
        i = draw(st.integers(0, len(stream) - 1))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if op == "flip":
            stream[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            stream[i] = draw(st.integers(0, 255))
        elif op == "insert":
            stream[i:i] = draw(st.binary(min_size=1, max_size=3))
        else:
            del stream[i : i + draw(st.integers(1, 3))]
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=5))
    return version, bytes(stream), cuts


@FUZZ
@given(mutated_streams(), st.booleans())
def test_mutated_valid_packets(case: tuple[int, bytes, list[int]], unknown_version: bool) -> None:
    version, data, cuts = case
    check_reencodes(run(data, None if unknown_version else version, cuts))
