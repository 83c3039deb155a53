"""MQTT 5 enhanced authentication (section 4.12) routed to a pluggable authenticator.

The authenticator here is a real challenge-response: the server sends a random nonce and the client
must answer with HMAC-SHA256(secret, nonce). The broker only routes AUTH packets to it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any

import pytest

from midge.auth.base import Authenticator, AuthExchange, Capability, ConnectRequest
from midge.codec.packets import Auth, Connack, Connect, Disconnect, Pingreq
from midge.codec.properties import Prop
from midge.codec.reasons import Reason
from tests.rawclient import RawClient

METHOD = "HMAC-CHALLENGE"
SECRET = b"s3cret"


class _Exchange(AuthExchange):
    def __init__(self) -> None:
        self.nonce = os.urandom(16)

    def start(self, data: bytes | None) -> tuple[int, bytes | None]:
        if data != b"hello":
            return Reason.NOT_AUTHORIZED, None
        return Reason.CONTINUE_AUTHENTICATION, self.nonce

    def step(self, data: bytes | None) -> tuple[int, bytes | None]:
        expected = hmac.new(SECRET, self.nonce, hashlib.sha256).digest()
        if data is not None and hmac.compare_digest(data, expected):
            return Reason.SUCCESS, b"welcome"
        return Reason.NOT_AUTHORIZED, None


class ChallengeAuthenticator(Authenticator):
    provides = frozenset({Capability.ENHANCED})

    def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
        return _Exchange() if request.auth_method == METHOD else None


def _answer(nonce: bytes, secret: bytes = SECRET) -> bytes:
    return hmac.new(secret, nonce, hashlib.sha256).digest()


def _auth_props(data: bytes) -> dict[int, Any]:
    return {Prop.AUTHENTICATION_METHOD: METHOD, Prop.AUTHENTICATION_DATA: data}


def _client(make_broker: Callable[..., Any]) -> RawClient:
    b = make_broker(authenticator=ChallengeAuthenticator())
    return RawClient(b.host, b.port, version=5)


def test_unsupported_method_refused_with_0x8c(raw: Callable[..., RawClient]) -> None:
    c = raw(5)
    c.send(Connect("c", protocol_level=5, properties=_auth_props(b"hello")))
    ack = c.expect(Connack)
    assert ack.reason_code == Reason.BAD_AUTHENTICATION_METHOD
    assert c.wait_closed(2)


def test_challenge_response_then_connack(make_broker: Callable[..., Any]) -> None:
    with _client(make_broker) as c:
        c.send(Connect("c", protocol_level=5, properties=_auth_props(b"hello")))
        challenge = c.expect(Auth)
        assert challenge.reason_code == Reason.CONTINUE_AUTHENTICATION
        assert challenge.properties[Prop.AUTHENTICATION_METHOD] == METHOD
        nonce = challenge.properties[Prop.AUTHENTICATION_DATA]
        c.send(Auth(Reason.CONTINUE_AUTHENTICATION, _auth_props(_answer(nonce))))
        ack = c.expect(Connack)
        assert ack.reason_code == 0
        assert ack.properties[Prop.AUTHENTICATION_METHOD] == METHOD
        assert ack.properties[Prop.AUTHENTICATION_DATA] == b"welcome"
        # The session works after the exchange.
        assert c.subscribe("t", 1).reason_codes == [1]


def test_wrong_answer_refused(make_broker: Callable[..., Any]) -> None:
    with _client(make_broker) as c:
        c.send(Connect("c", protocol_level=5, properties=_auth_props(b"hello")))
        nonce = c.expect(Auth).properties[Prop.AUTHENTICATION_DATA]
        c.send(Auth(Reason.CONTINUE_AUTHENTICATION, _auth_props(_answer(nonce, b"wrong"))))
        assert c.expect(Connack).reason_code == Reason.NOT_AUTHORIZED
        assert c.wait_closed(2)


def test_other_packets_during_exchange_are_an_error(make_broker: Callable[..., Any]) -> None:
    with _client(make_broker) as c:
        c.send(Connect("c", protocol_level=5, properties=_auth_props(b"hello")))
        c.expect(Auth)
        c.send(Pingreq())
        assert c.wait_closed(2)


def test_reauthentication(make_broker: Callable[..., Any]) -> None:
    with _client(make_broker) as c:
        c.send(Connect("c", protocol_level=5, properties=_auth_props(b"hello")))
        nonce = c.expect(Auth).properties[Prop.AUTHENTICATION_DATA]
        c.send(Auth(Reason.CONTINUE_AUTHENTICATION, _auth_props(_answer(nonce))))
        assert c.expect(Connack).reason_code == 0
        c.send(Auth(Reason.RE_AUTHENTICATE, _auth_props(b"hello")))
        challenge = c.expect(Auth)
        assert challenge.reason_code == Reason.CONTINUE_AUTHENTICATION
        nonce = challenge.properties[Prop.AUTHENTICATION_DATA]
        c.send(Auth(Reason.CONTINUE_AUTHENTICATION, _auth_props(_answer(nonce))))
        done = c.expect(Auth)
        assert done.reason_code == Reason.SUCCESS
        # A failed re-authentication ends the connection with the failure reason.
        c.send(Auth(Reason.RE_AUTHENTICATE, _auth_props(b"hello")))
        nonce = c.expect(Auth).properties[Prop.AUTHENTICATION_DATA]
        c.send(Auth(Reason.CONTINUE_AUTHENTICATION, _auth_props(_answer(nonce, b"x"))))
        assert c.expect(Disconnect).reason_code == Reason.NOT_AUTHORIZED
        assert c.wait_closed(2)


@pytest.mark.parametrize("method", [None, "OTHER"])
def test_auth_with_no_or_another_method_is_a_protocol_error(
    make_broker: Callable[..., Any], method: str | None
) -> None:
    with _client(make_broker) as c:
        if method is None:
            assert c.connect("c").reason_code == 0
            props: dict[int, Any] = {Prop.AUTHENTICATION_METHOD: METHOD}
        else:
            c.send(Connect("c", protocol_level=5, properties=_auth_props(b"hello")))
            nonce = c.expect(Auth).properties[Prop.AUTHENTICATION_DATA]
            c.send(Auth(Reason.CONTINUE_AUTHENTICATION, _auth_props(_answer(nonce))))
            assert c.expect(Connack).reason_code == 0
            props = {Prop.AUTHENTICATION_METHOD: method}
        c.send(Auth(Reason.RE_AUTHENTICATE, props))
        assert c.expect(Disconnect).reason_code == Reason.PROTOCOL_ERROR
        assert c.wait_closed(2)
