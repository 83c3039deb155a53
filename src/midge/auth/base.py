"""The authentication and authorization interfaces the broker core calls.

Decisions are plain return values so the core stays synchronous; a backend that must wait on the
network (LDAP, OAuth, HTTP — later issues) answers from a cache and refreshes it in the background.
Reason codes are MQTT 5's; the connection maps them to v3 return codes (MQTT-3.2.2-5 3.1.1 table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from midge.codec.reasons import Reason

if TYPE_CHECKING:
    from midge.config import ListenerConfig


class ConnectRequest:
    """What a client presents at CONNECT."""

    __slots__ = (
        "auth_data",
        "auth_method",
        "client_id",
        "listener",
        "password",
        "peer",
        "username",
        "version",
    )

    def __init__(
        self,
        client_id: str,
        username: str | None,
        password: bytes | None,
        peer: str,
        version: int,
        auth_method: str | None = None,
        auth_data: bytes | None = None,
        listener: ListenerConfig | None = None,
    ) -> None:
        self.client_id = client_id
        self.username = username
        self.password = password
        self.peer = peer
        self.version = version
        self.auth_method = auth_method
        self.auth_data = auth_data
        #: The listener the client connected to (per_listener_settings decide by it).
        self.listener = listener


class AuthExchange(Protocol):
    """One MQTT 5 enhanced-authentication exchange (4.12), e.g. a SCRAM conversation.

    Each call returns (reason code, authentication data to send): 0x18 to continue (the server
    sends AUTH and waits for the client's), 0x00 for success, or a failure code (0x87, 0x86, ...).
    """

    def start(self, data: bytes | None) -> tuple[int, bytes | None]: ...

    def step(self, data: bytes | None) -> tuple[int, bytes | None]: ...


class Authenticator(Protocol):
    def authenticate(self, request: ConnectRequest) -> int:
        """Plain CONNECT (no Authentication Method): a reason code, 0 accepts; 0x86 bad user
        name or password, 0x87 not authorized."""
        ...

    def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
        """An exchange for ``request.auth_method``, or None if the method is not supported
        (the CONNECT is then refused with 0x8C, or the re-authentication ends the connection)."""
        ...

    def can_publish(self, client_id: str, username: str | None, topic: str) -> bool: ...

    def can_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool: ...

    def can_read(self, client_id: str, topic: str) -> bool:
        """May a message on ``topic`` be delivered to ``client_id`` (as it last authenticated)?
        Asked for every delivery — routed, retained on subscribe, will — when the
        authenticator's ``checks_read`` attribute is true (Mosquitto checks read access on
        delivery). Without the attribute the broker never asks."""
        ...


class AllowAll:
    """The default: anyone may connect, publish and subscribe; no enhanced authentication.

    A CONNECT naming an Authentication Method is refused with 0x8C, as Mosquitto does without an
    auth plugin (MQTT 5 4.12: the server must not accept a method it does not support).
    """

    def authenticate(self, request: ConnectRequest) -> int:
        return Reason.SUCCESS

    def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
        return None

    def can_publish(self, client_id: str, username: str | None, topic: str) -> bool:
        return True

    def can_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        return True

    def can_read(self, client_id: str, topic: str) -> bool:
        return True
