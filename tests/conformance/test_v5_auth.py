"""MQTT 5.0 enhanced authentication (sections 3.15 and 4.12) and authentication failures (3.1.4).

The default broker supports no Authentication Method (like Mosquitto without an auth plugin), so
these tests run a broker with a small test Authenticator, plugged in through the server's
``authenticator`` seam: method "TEST-CHALLENGE" answers AUTH 0x18 with data b"challenge" and accepts
the response b"response"; user "alice" must give password b"secret".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from midge.auth.base import Authenticator, AuthExchange, Capability, ConnectRequest
from midge.codec import Decoder
from midge.codec.packets import Auth, Connack, Connect, Disconnect, Subscribe, Subscription
from midge.codec.properties import Prop
from midge.codec.reasons import Reason
from tests.conformance.test_v5_support import Clients, RawClient, frames, tap

METHOD = "TEST-CHALLENGE"
AM = Prop.AUTHENTICATION_METHOD
AD = Prop.AUTHENTICATION_DATA


class _Challenge(AuthExchange):
    """One exchange: challenge, then the response must be b"response"."""

    def start(self, data: bytes | None) -> tuple[int, bytes | None]:
        return Reason.CONTINUE_AUTHENTICATION, b"challenge"

    def step(self, data: bytes | None) -> tuple[int, bytes | None]:
        if data == b"response":
            return Reason.SUCCESS, b"welcome"
        return Reason.NOT_AUTHORIZED, None


class _TestAuthenticator(Authenticator):
    provides = frozenset({Capability.CONNECT, Capability.ENHANCED})

    def authenticate(self, request: ConnectRequest) -> int:
        if request.username == "alice" and request.password != b"secret":
            return Reason.BAD_USER_NAME_OR_PASSWORD
        return Reason.SUCCESS

    def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
        return _Challenge() if request.auth_method == METHOD else None


@pytest.fixture
def clients(make_broker: Callable[..., Any]) -> Iterator[Clients]:
    with Clients(make_broker(authenticator=_TestAuthenticator())) as opened:
        yield opened


def _start(c: RawClient, client_id: str, properties: dict[int, Any] | None = None) -> Auth:
    """CONNECT with the test method; returns the server's first AUTH."""
    props = {AM: METHOD, **(properties or {})}
    c.send(Connect(client_id, protocol_level=5, keep_alive=0, properties=props))
    return c.expect(Auth)


def _authenticated(clients: Clients, client_id: str) -> RawClient:
    c = clients.open()
    _start(c, client_id)
    c.send(Auth(Reason.CONTINUE_AUTHENTICATION, {AM: METHOD, AD: b"response"}))
    connack = c.expect(Connack)
    assert connack.reason_code == 0, connack
    c.connack = connack
    return c


def test_MQTT_3_1_4_2_bad_credentials_refused(clients: Clients) -> None:
    """MQTT-3.1.4-2: a CONNECT failing authentication is refused: CONNACK 0x86 (Bad User Name or
    Password), then close; the right password is accepted."""
    bad = clients.open()
    connack = bad.connect5("alice", ok=False, username="alice", password=b"wrong")
    assert connack.reason_code == 0x86 and connack.session_present is False
    bad.expect_closed()
    good = clients.open()
    assert good.connect5("alice", username="alice", password=b"secret").reason_code == 0


def test_MQTT_3_1_2_30_only_auth_before_connack(clients: Clients) -> None:
    """MQTT-3.1.2-30 (with an Authentication Method the Client sends only AUTH or DISCONNECT until
    CONNACK) seen from the server: a SUBSCRIBE in the middle of the exchange ends the connection,
    without a DISCONNECT before CONNACK (MQTT-3.14.0-1) and without subscribing."""
    c = clients.open()
    _start(c, "early")
    c.send(Subscribe(1, [Subscription("early/t", 0)]))
    connack = c.expect_refused()
    assert connack is None or connack.reason_code >= 0x80


def test_MQTT_3_15_2_1_server_auth_reason_codes(clients: Clients) -> None:
    """MQTT-3.15.2-1: the server's AUTH packets use Authenticate Reason Codes (Table 3-11): 0x18
    while the exchange continues, 0x00 when a re-authentication succeeds."""
    c = _authenticated(clients, "rc")
    c.send(Auth(Reason.RE_AUTHENTICATE, {AM: METHOD}))
    first = c.expect(Auth)
    c.send(Auth(Reason.CONTINUE_AUTHENTICATION, {AM: METHOD, AD: b"response"}))
    last = c.expect(Auth)
    assert (first.reason_code, last.reason_code) == (0x18, 0x00)


def test_MQTT_3_15_2_2_auth_fits_client_maximum(clients: Clients) -> None:
    """MQTT-3.15.2-2 and MQTT-3.15.2-3: the server's AUTH carries no Reason String or User Property
    beyond the Client's Maximum Packet Size (64)."""
    c = clients.open()
    wire = tap(c)
    _start(c, "small", {Prop.MAXIMUM_PACKET_SIZE: 64, Prop.REQUEST_PROBLEM_INFORMATION: 1})
    c.send(Auth(Reason.CONTINUE_AUTHENTICATION, {AM: METHOD, AD: b"response"}))
    c.expect(Connack)
    c.ping()
    assert all(len(f) <= 64 for f in frames(wire))


def test_MQTT_4_12_0_2_server_auth_continue(clients: Clients) -> None:
    """MQTT-4.12.0-2: when the server needs more information it sends AUTH with Reason Code 0x18
    (Continue authentication), carrying the method's data."""
    c = clients.open()
    auth = _start(c, "cont", {AD: b"hello"})
    assert auth.reason_code == 0x18
    assert auth.properties.get(AD) == b"challenge"


def test_MQTT_4_12_0_4_rejected_authentication_closes(clients: Clients) -> None:
    """MQTT-4.12.0-4: the server may reject the authentication at any point, with a CONNACK of 0x80
    or more, and must close the connection (here: a wrong response to the challenge)."""
    c = clients.open()
    _start(c, "reject")
    c.send(Auth(Reason.CONTINUE_AUTHENTICATION, {AM: METHOD, AD: b"wrong"}))
    connack = c.expect_refused()
    assert connack is None or connack.reason_code in (0x87, 0x86, 0x80, 0x8C)


def test_MQTT_4_12_0_5_auth_and_connack_carry_the_method(clients: Clients) -> None:
    """MQTT-4.12.0-5: with an Authentication Method in the CONNECT, every AUTH and the successful
    CONNACK carry the same Authentication Method (re-authentication included)."""
    c = clients.open()
    wire = tap(c)
    _start(c, "method")
    c.send(Auth(Reason.CONTINUE_AUTHENTICATION, {AM: METHOD, AD: b"response"}))
    c.expect(Connack)
    c.send(Auth(Reason.RE_AUTHENTICATE, {AM: METHOD}))
    c.expect(Auth)
    c.send(Auth(Reason.CONTINUE_AUTHENTICATION, {AM: METHOD, AD: b"response"}))
    c.expect(Auth)
    c.ping()
    packets = Decoder(version=5).feed(bytes(wire))
    carrying = [p for p in packets if isinstance(p, Auth | Connack)]
    assert len(carrying) == 4
    assert all(p.properties.get(AM) == METHOD for p in carrying), carrying


def test_MQTT_4_12_1_2_failed_reauthentication_closes(clients: Clients) -> None:
    """MQTT-4.12.1-2: if a re-authentication fails the server should send DISCONNECT with a Reason
    Code (midge: 0x87 Not authorized) and must close the connection."""
    c = _authenticated(clients, "reauth")
    c.send(Auth(Reason.RE_AUTHENTICATE, {AM: METHOD}))
    c.expect(Auth)
    c.send(Auth(Reason.CONTINUE_AUTHENTICATION, {AM: METHOD, AD: b"wrong"}))
    disconnect: Disconnect = c.expect_disconnect()
    assert disconnect.reason_code >= 0x80


def test_MQTT_4_12_1_1_reauthentication_with_another_method_is_refused(clients: Clients) -> None:
    """MQTT-4.12.1-1 (the Client re-authenticates with the original Authentication Method) seen from
    the server: an AUTH 0x19 naming another method is a Protocol Error: DISCONNECT 0x82, close."""
    c = _authenticated(clients, "other-method")
    c.send(Auth(Reason.RE_AUTHENTICATE, {AM: "SCRAM-SHA-256"}))
    c.expect_disconnect(0x82)
