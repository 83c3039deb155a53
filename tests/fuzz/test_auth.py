"""MQTT 5 enhanced authentication (section 4.12) under random and broken AUTH exchanges.

A deterministic challenge-response authenticator is plugged in. A client starts the exchange
at CONNECT (or not), then sends AUTH packets with right or wrong data, other methods, no method,
re-authentication requests (0x19), ordinary packets and garbage, in any order, cut anywhere.
Whatever happens: before CONNACK the broker sends nothing but AUTH 0x18 (the exchange comes
before CONNACK, MQTT 5.0 section 4.12), a refusing CONNACK is its last packet (MQTT-3.2.2-7 v5),
every AUTH it sends names the method in use (MQTT-4.12.0-5 v5: the method does not change), a
DISCONNECT comes only after CONNACK and is its last word, and the rig checks it is unharmed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from midge.auth.base import Authenticator, AuthExchange, Capability, ConnectRequest
from midge.codec.packets import MQTT5, Auth, Connack, Connect, Disconnect, Packet, Pingreq
from midge.codec.properties import Prop
from midge.codec.reasons import Reason
from midge.config import Config
from tests.fuzz.harness import (
    LOCAL,
    SERVER_DISCONNECT_REASONS,
    Rig,
    chunked,
    client_packets,
    decode_all,
    encode_any,
    fuzz_settings,
    read_to_eof,
    rig_on,
    send_chunks,
    stream_items,
)

FUZZ = fuzz_settings(150)
METHOD = "FUZZ-CHALLENGE"


class _Exchange(AuthExchange):
    """start("hello") -> challenge; start("ok") -> success; step("answer") -> success;
    step("again") -> another challenge; anything else fails with 0x87."""

    def start(self, data: bytes | None) -> tuple[int, bytes | None]:
        if data == b"hello":
            return Reason.CONTINUE_AUTHENTICATION, b"nonce"
        if data == b"ok":
            return Reason.SUCCESS, b"welcome"
        return Reason.NOT_AUTHORIZED, None

    def step(self, data: bytes | None) -> tuple[int, bytes | None]:
        if data == b"answer":
            return Reason.SUCCESS, b"welcome"
        if data == b"again":
            return Reason.CONTINUE_AUTHENTICATION, b"more"
        return Reason.NOT_AUTHORIZED, None


class ChallengeAuthenticator(Authenticator):
    provides = frozenset({Capability.ENHANCED})

    def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
        return _Exchange() if request.auth_method == METHOD else None


DATA = st.sampled_from([b"hello", b"ok", b"answer", b"again", b"wrong", None])
METHODS = st.sampled_from([METHOD, METHOD, "OTHER", None])


@st.composite
def auth_props(draw: st.DrawFn) -> dict[int, Any]:
    props: dict[int, Any] = {}
    method = draw(METHODS)
    if method is not None:
        props[Prop.AUTHENTICATION_METHOD] = method
        data = draw(DATA)
        if data is not None:
            props[Prop.AUTHENTICATION_DATA] = data
    return props


AUTHS = st.builds(Auth, st.sampled_from([0x00, 0x18, 0x18, 0x19]), auth_props())


def _auth(reason: int, *data: bytes) -> st.SearchStrategy[Auth]:
    props = {
        Prop.AUTHENTICATION_METHOD: st.just(METHOD),
        Prop.AUTHENTICATION_DATA: st.sampled_from(data),
    }
    return st.builds(Auth, st.just(reason), st.fixed_dictionaries(props))


#: AUTH packets that follow the script, so that exchanges get far: re-authenticate (0x19) and
#: answer a challenge (0x18), rightly or not.
REAUTH = _auth(Reason.RE_AUTHENTICATE, b"hello", b"ok")
CONTINUE = _auth(Reason.CONTINUE_AUTHENTICATION, b"answer", b"again", b"wrong")


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A CONNECT (its Authentication Method returned too), then packets and maybe garbage."""
    props = draw(
        st.one_of(
            st.fixed_dictionaries(
                {
                    Prop.AUTHENTICATION_METHOD: st.just(METHOD),
                    Prop.AUTHENTICATION_DATA: st.sampled_from([b"hello", b"ok"]),
                }
            ),
            auth_props(),
        )
    )
    connect = Connect("", MQTT5, keep_alive=0, properties=props)
    # Weighted by hand: a nested one_of would flatten into many equal branches.
    kinds: list[st.SearchStrategy[Packet]] = [REAUTH, REAUTH, REAUTH, CONTINUE, CONTINUE, AUTHS]
    kinds += [st.just(Pingreq()), client_packets(MQTT5)]
    rest = [
        encode_any(draw(kinds[draw(st.integers(0, len(kinds) - 1))]), MQTT5)
        for _ in range(draw(st.integers(1, 6)))
    ]
    garbage = draw(st.lists(stream_items(MQTT5), max_size=1))  # maybe one bad item at the end
    stream = encode_any(connect, MQTT5) + b"".join(rest + garbage)
    return stream, props.get(Prop.AUTHENTICATION_METHOD)


def check(packets: list[Packet], method: str | None) -> None:
    """``method``: the Authentication Method of the CONNECT."""
    connacks = [p for p in packets if isinstance(p, Connack)]
    assert len(connacks) <= 1, f"more than one CONNACK: {packets!r}"
    connack = connacks[0] if connacks else None
    end = packets.index(connack) if connack is not None else len(packets)
    for p in packets[:end]:
        assert isinstance(p, Auth), f"{p!r} before CONNACK (only AUTH may come first, 4.12)"
        assert p.reason_code == Reason.CONTINUE_AUTHENTICATION, p
    if connack is not None and connack.reason_code:
        assert end == len(packets) - 1, f"packets after a refusing CONNACK: {packets!r}"
        event(f"refused {connack.reason_code:#04x}")
    elif connack is not None:
        event("accepted")
        # MQTT-4.12.0-5 / -6 v5: a successful CONNACK repeats the CONNECT's method, or names
        # none when the CONNECT named none.
        assert connack.properties.get(Prop.AUTHENTICATION_METHOD) == method, connack
    if method is None:
        assert not any(isinstance(p, Auth) for p in packets), f"AUTH without a method: {packets}"
    elif method != METHOD:
        assert connack is not None, f"no CONNACK for an unknown method: {packets!r}"
        assert connack.reason_code == Reason.BAD_AUTHENTICATION_METHOD, connack
    if any(isinstance(p, Auth) for p in packets[end:]):
        event("re-authentication")
    for p in packets:
        if isinstance(p, Auth):
            assert p.properties.get(Prop.AUTHENTICATION_METHOD) == METHOD, p  # MQTT-4.12.0-5
            assert p.reason_code in (0x00, 0x18), p
    for i, p in enumerate(packets):
        if isinstance(p, Disconnect):
            assert i == len(packets) - 1, f"packets after DISCONNECT: {packets!r}"
            assert p.reason_code >= 0x80 and p.reason_code in SERVER_DISCONNECT_REASONS, p
            assert connack is not None, "DISCONNECT before CONNACK (4.13: a CONNACK or nothing)"


@pytest.fixture(scope="module")
def auth_rig() -> Iterator[Rig]:
    with rig_on(Config(listeners=[LOCAL]), ChallengeAuthenticator()) as rig:
        yield rig


@FUZZ
@given(data=st.data())
def test_enhanced_authentication_exchanges(auth_rig: Rig, data: st.DataObject) -> None:
    stream, method = data.draw(exchanges(), label="stream")
    chunks = data.draw(chunked(stream), label="chunks")
    with auth_rig.example():
        client = auth_rig.client(MQTT5)
        if send_chunks(client, chunks):
            with contextlib.suppress(OSError):  # SHUT_WR: the broker must close too
                client.shutdown_write()
        raw, eof = read_to_eof(client)
        assert eof, "the broker did not close the connection after the client's EOF"
        check(decode_all(raw, MQTT5), method)
