"""The authentication and authorization interfaces the broker core calls.

Decisions are plain return values, so the core stays synchronous. A backend that must ask
elsewhere (a plugin, the network: midge.auth.plugin) may instead return a :class:`Pending`
decision (an ``asyncio.Future`` is one) from ``authenticate``, ``can_publish`` or
``can_subscribe``: the connection then stops reading, keeps the packet, and handles it again once
the decision is done. For CONNECT the connection takes the pending's result itself; for PUBLISH and
SUBSCRIBE the backend must answer the same question from its cache when asked again. Packets after
the waiting one wait too, so their order holds (MQTT-4.6.0).

Reason codes are MQTT 5's; the connection maps them to v3 return codes (MQTT-3.2.2-5 3.1.1 table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from midge.codec.reasons import Reason

T = TypeVar("T")

if TYPE_CHECKING:
    from midge.config import ListenerConfig


class ConnectRequest:
    """What a client presents at CONNECT, and what its authenticator concluded.

    An authenticator that accepts may set ``identity``, the user name the connection takes
    instead of the CONNECT's (what ACLs and logs see; e.g. a token's ``sub`` claim), and
    ``expires``, the time (``time.time()``) at which the credentials stop being valid: the
    connection is closed then (v5: DISCONNECT 0x87 Not authorized). Set them before returning
    the decision (or before its Pending is done).
    """

    __slots__ = (
        "auth_data",
        "auth_method",
        "client_id",
        "expires",
        "identity",
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
        self.identity: str | None = None
        self.expires: float | None = None


class Pending(Protocol):
    """A decision not made yet (``asyncio.Future`` is one). Its result is what the synchronous
    call would have returned: a reason code for ``authenticate``, a bool for the others."""

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...

    def done(self) -> bool: ...

    def result(self) -> Any: ...


class AuthExchange(Protocol):
    """One MQTT 5 enhanced-authentication exchange (4.12), e.g. a SCRAM conversation.

    Each call returns (reason code, authentication data to send): 0x18 to continue (the server
    sends AUTH and waits for the client's), 0x00 for success, or a failure code (0x87, 0x86, ...).
    """

    def start(self, data: bytes | None) -> tuple[int, bytes | None]: ...

    def step(self, data: bytes | None) -> tuple[int, bytes | None]: ...


class Authenticator(Protocol):
    def authenticate(self, request: ConnectRequest) -> int | Pending:
        """Plain CONNECT (no Authentication Method): a reason code, 0 accepts; 0x86 bad user
        name or password, 0x87 not authorized (or a Pending one)."""
        ...

    def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
        """An exchange for ``request.auth_method``, or None if the method is not supported
        (the CONNECT is then refused with 0x8C, or the re-authentication ends the connection)."""
        ...

    def can_publish(self, client_id: str, username: str | None, topic: str) -> bool | Pending: ...

    def can_subscribe(
        self, client_id: str, username: str | None, topic_filter: str
    ) -> bool | Pending: ...

    # Optional, outside the protocol: an authenticator (or a layer it wraps, see layers()) with a
    # true ``checks_read`` attribute is asked ``can_read(client_id, topic) -> bool`` for every
    # delivery — routed, retained on subscribe — as Mosquitto checks read access on delivery;
    # one with ``session_ended(client_id)`` is told when a client's session ends.


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


def checks_publish(authenticator: Authenticator) -> bool:
    """Whether ``authenticator`` may refuse a PUBLISH at all (False: the broker skips the call
    on every message). AllowAll never does; a wrapper says so with a ``checks_publish``
    attribute; any other authenticator is asked."""
    if isinstance(authenticator, AllowAll):
        return False
    return bool(getattr(authenticator, "checks_publish", True))


def layers(authenticator: Any) -> Iterator[Any]:
    """``authenticator`` and those it wraps (each wrapper keeps the next in ``inner``: plugins
    around SCRAM around the password/ACL files)."""
    seen = 0
    while authenticator is not None and seen < 16:
        yield authenticator
        authenticator = getattr(authenticator, "inner", None)
        seen += 1


def find_layer(authenticator: Any, kind: type[T]) -> T | None:
    """The first layer of ``authenticator`` that is a ``kind``."""
    for layer in layers(authenticator):
        if isinstance(layer, kind):
            return layer
    return None
