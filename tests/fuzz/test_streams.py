"""Random, mutated and misordered byte streams, before and after CONNECT, at v3, v4 and v5.

Whatever arrives, the broker must answer with valid packets only, close the connection when the
stream breaks the protocol (at v5 after a DISCONNECT saying why, MQTT 5.0 section 4.13), close it
when the client goes away, never log an internal error, and keep serving everyone else (checked
after every example by :meth:`tests.fuzz.harness.Rig.example`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from midge.codec.packets import (
    Connack,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
)
from midge.codec.properties import Prop
from tests.fuzz.harness import (
    SOON,
    WILL_PREFIX,
    Expect,
    Oracle,
    Rig,
    check_output,
    chunked,
    connects,
    encode_any,
    exercise,
    fuzz_settings,
    mutated,
    read_to_eof,
    send_chunks,
    stream_items,
    streams,
)

FUZZ = fuzz_settings(150)


@st.composite
def first_streams(draw: st.DrawFn) -> bytes:
    """What a new connection sends first: random bytes, or a CONNECT (maybe mutated) and more."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(min_size=1, max_size=64))
    connect = draw(connects())
    version = connect.protocol_level
    data = encode_any(connect, version)
    if draw(st.booleans()):
        data = draw(mutated(data))
    rest = draw(st.lists(stream_items(version), max_size=3))
    return data + b"".join(rest)


@FUZZ
@given(data=st.data())
def test_bytes_from_a_new_connection(rig: Rig, data: st.DataObject) -> None:
    """Random bytes, or a CONNECT (maybe mutated) and more, on a new connection: a first packet
    that is not CONNECT closes it silently (MQTT-3.1.0-1), a bad CONNECT closes it (after at most
    a refusing CONNACK), a good one is accepted and the rest is judged as after CONNECT."""
    stream = data.draw(first_streams(), label="stream")
    chunks = data.draw(chunked(stream), label="chunks")
    with rig.example():
        client = rig.client()
        expect = Oracle().predict(stream)
        exercise(client, chunks, expect, connected=False)


@pytest.mark.parametrize("version", [3, 4, 5])
@FUZZ
@given(data=st.data())
def test_bytes_after_connect(rig: Rig, version: int, data: st.DataObject) -> None:
    """Valid, mutated, re-lengthed and random packets after a successful CONNECT (with a will):
    the broker closes exactly when the oracle says (v5: DISCONNECT with the predicted reason),
    and publishes the will unless the client ended with a normal DISCONNECT."""
    stream = data.draw(streams(version), label="stream")
    chunks = data.draw(chunked(stream), label="chunks")
    with rig.example(sessions_clean=True):
        will = Will(WILL_PREFIX + rig.prefix(), b"gone")
        client, _ = rig.connected(version, will=will)
        expect = Oracle(version).predict(stream)
        exercise(client, chunks, expect)
    wills = [p for p in rig.seen if p.topic == will.topic]
    assert len(wills) == expect.will, (
        f"the will was published {len(wills)} times; expected {int(expect.will)} ({expect.why})"
    )


@st.composite
def sessions(draw: st.DrawFn, ids: list[str]) -> tuple[int, bytes]:
    """One connection of a crowd: a valid CONNECT with one of a few client ids, then a stream."""
    connect = draw(connects())
    version = connect.protocol_level
    connect.client_id = draw(st.sampled_from(ids))
    connect.keep_alive = 0
    if version == 5 and draw(st.booleans()):
        connect.properties[Prop.SESSION_EXPIRY_INTERVAL] = draw(st.sampled_from([0, 1]))
    return version, encode_any(connect, version) + draw(streams(version, max_items=4))


@FUZZ
@given(data=st.data())
def test_connections_sharing_client_ids(rig: Rig, data: st.DataObject) -> None:
    """Two to four connections at once, with two client ids between them: each CONNECT may take
    over another's session (MQTT-3.1.4-2 3.1.1, MQTT-3.1.4-3 v5) in the middle of its flows,
    while the streams go on. Only generic checks hold per connection (answers are well-formed,
    a v5 DISCONNECT is last and an error, every connection ends); the rig checks the rest."""
    ids = [f"{rig.n + 1:08d}{c}" for c in "xy"]  # fixed length: replays draw the same bytes
    crowd = data.draw(st.lists(sessions(ids), min_size=2, max_size=4), label="connections")
    plans = [data.draw(chunked(stream, max_cuts=3), label="chunks") for _, stream in crowd]
    with rig.example():
        clients = [rig.client(version) for version, _ in crowd]
        # Interleave: one chunk of each connection in turn.
        open_ = [True] * len(clients)
        for turn in range(max(len(p) for p in plans)):
            for i, (client, plan) in enumerate(zip(clients, plans, strict=True)):
                if open_[i] and turn < len(plan):
                    open_[i] = send_chunks(client, [plan[turn]])
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown_write()
        for (version, _), client in zip(crowd, clients, strict=True):
            raw, eof = read_to_eof(client)
            assert eof, f"a v{version} connection was not closed {SOON} s after its EOF"
            packets = check_output(raw, Expect(version, connack=True, relaxed=True), False)
            first = packets[0] if packets else None
            if isinstance(first, Connack) and first.session_present:
                event("a session was resumed")
            if packets and isinstance(packets[-1], Disconnect):
                event(f"DISCONNECT {packets[-1].reason_code:#04x}")


@st.composite
def large_packets(draw: st.DrawFn, version: int) -> bytes:
    """Valid packets at the edges of the format: a 65,535-byte topic, tens of thousands of
    levels, a large payload, thousands of filters or of user properties."""
    kind = draw(st.sampled_from(["payload", "topic", "levels", "filters", "properties"]))
    n = draw(st.integers(1, 4))
    packets: list[Packet]
    if kind == "payload":
        payload = b"x" * draw(st.integers(100_000, 1_000_000))
        packets = [
            Subscribe(1, [Subscription("big/#", 1)]),
            Publish("big/p", payload, 1, False, False, 2),
        ]
    elif kind == "topic":
        topic = "t" * (65535 - n)
        packets = [Subscribe(1, [Subscription(topic, 2)]), Publish(topic, b"p", 2, True, False, 2)]
    elif kind == "levels":
        topic = "/".join(["l"] * (32767 - n))
        flt = "/".join(["+"] * (16383 - n)) + "/#"
        packets = [Subscribe(1, [Subscription(flt, 0)]), Publish(topic, b"p", 1, True, False, 2)]
        packets.append(Subscribe(3, [Subscription(topic, 1)]))  # the retained one comes back
    elif kind == "filters":
        filters = [f"f/{i}/+" for i in range(draw(st.integers(1000, 5000)))]
        packets = [Subscribe(1, [Subscription(f, i % 3) for i, f in enumerate(filters)])]
        packets += [Publish("f/7/x", b"p", 1, False, False, 2), Unsubscribe(3, filters)]
    else:
        props: dict[int, Any] = {
            Prop.USER_PROPERTY: [("k", str(i)) for i in range(draw(st.integers(100, 5000)))]
        }
        packets = [
            Subscribe(1, [Subscription("up", 1)]),
            Publish("up", b"p", 1, False, False, 2, props if version == 5 else {}),
        ]
    return b"".join(encode_any(p, version) for p in [*packets, Pingreq()])


@pytest.mark.parametrize("version", [4, 5])
@fuzz_settings(8)
@given(data=st.data())
def test_large_packets(rig: Rig, version: int, data: st.DataObject) -> None:
    stream = data.draw(large_packets(version), label="stream")
    chunks = data.draw(chunked(stream, max_cuts=20), label="chunks")
    with rig.example(sessions_clean=True):
        client, _ = rig.connected(version)
        expect = Oracle(version).predict(stream)
        assert not expect.closes, expect.why
        packets = exercise(client, chunks, expect)
        assert isinstance(packets[-1], Pingresp), f"the broker did not answer all: {packets[-3:]!r}"
