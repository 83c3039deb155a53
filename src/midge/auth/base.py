"""The authentication and authorization seam: declared capabilities and the chain.

An :class:`Authenticator` declares what it provides (``provides``, a set of :class:`Capability`)
and implements the matching methods; the base class answers the rest as if nothing were
configured (accept, allow, no enhanced authentication). The broker is given one
:class:`AuthChain` of layers and asks it; the chain asks every layer that provides the capability,
in order (mochi-mqtt's ``Hook.Provides`` is the model). What the chain's answers combine to is
documented on :class:`AuthChain`.

Decisions are plain return values, so the core stays synchronous. A layer that must ask
elsewhere (a plugin, the network: midge.auth.plugin) may instead return a :class:`Pending`
decision (an ``asyncio.Future`` is one) from ``authenticate``, ``can_publish`` or
``can_subscribe``: the connection then stops reading, keeps the packet, and once the decision is
done goes on with it from where it stopped, with the decision's result (the packet is not handled
twice). The chain's pending covers the layers after the waiting one too: once it allows, they are
asked. Packets after the waiting one wait too, so their order holds (MQTT-4.6.0).

Reason codes are MQTT 5's; the connection maps them to v3 return codes (MQTT-3.2.2-5 3.1.1 table).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from midge.codec.reasons import Reason
from midge.config import ConfigError

if TYPE_CHECKING:
    from midge.config import ListenerConfig

log = logging.getLogger("midge.auth")


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


class AuthExchange:
    """One MQTT 5 enhanced-authentication exchange (4.12), e.g. a SCRAM conversation.

    Each call returns (reason code, authentication data to send): 0x18 to continue (the server
    sends AUTH and waits for the client's), 0x00 for success, or a failure code (0x87, 0x86, ...).
    An exchange that establishes who the client is (SCRAM's ``n=``) sets ``username`` on success:
    the connection takes it as its user name (what ACLs see) when the CONNECT carried none.
    """

    username: str | None = None

    def start(self, data: bytes | None) -> tuple[int, bytes | None]:
        raise NotImplementedError

    def step(self, data: bytes | None) -> tuple[int, bytes | None]:
        raise NotImplementedError


class _CountedExchange(AuthExchange):
    """A layer's exchange as the chain hands it out: the same answers, and a failure code
    (anything but success and continue) counted against the layer's backend once."""

    def __init__(self, exchange: AuthExchange, chain: AuthChain, backend: str) -> None:
        self.exchange = exchange
        self.chain = chain
        self.backend = backend

    def _counted(self, answer: tuple[int, bytes | None]) -> tuple[int, bytes | None]:
        self.username = self.exchange.username
        if answer[0] not in (0x00, 0x18):
            self.chain.count_failure(self.backend)
        return answer

    def start(self, data: bytes | None) -> tuple[int, bytes | None]:
        return self._counted(self.exchange.start(data))

    def step(self, data: bytes | None) -> tuple[int, bytes | None]:
        return self._counted(self.exchange.step(data))


class Capability(enum.Enum):
    """What an authenticator may provide; the value is the method that provides it."""

    #: ``authenticate``: plain CONNECT (no Authentication Method).
    CONNECT = "authenticate"
    #: ``enhanced``: MQTT 5 enhanced authentication (4.12) and re-authentication.
    ENHANCED = "enhanced"
    #: ``can_publish``: PUBLISH, and wills when they are published.
    PUBLISH = "can_publish"
    #: ``can_subscribe``: each SUBSCRIBE topic filter.
    SUBSCRIBE = "can_subscribe"
    #: ``can_read``: every delivery (routed, retained on subscribe), as Mosquitto checks read
    #: access; synchronous only.
    READ = "can_read"
    #: ``reload``: SIGHUP.
    RELOAD = "reload"
    #: ``session_ended``: a client's session ended (drop what is kept for it).
    SESSION_END = "session_ended"
    #: ``session_restored``: a session came back from disk before its client did.
    SESSION_RESTORED = "session_restored"
    #: ``close``: the broker stops (release connections, pools).
    CLOSE = "close"


@dataclass(slots=True)
class Reloaded:
    """What a reload did: ``notices`` to log, ``revoked``: client ids whose credentials are no
    longer valid (the server disconnects them, v5 with DISCONNECT 0x87), and, from a chain, the
    ``errors`` of the layers that kept their previous state."""

    notices: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)


class Authenticator:
    """An authentication/authorization layer. It declares what it provides in ``provides`` (on
    the class, or narrowed per instance in ``__init__``: an ACL-less file layer checks no
    PUBLISH) and implements those methods; what it does not provide is never called by the
    chain. The defaults here are the answers of a broker with nothing configured.

    A subclass that overrides a capability's method without declaring it in the class's
    ``provides`` is refused when the class is defined (the method would silently never be
    called).
    """

    #: What this layer provides (see :class:`Capability`).
    provides: frozenset[Capability] = frozenset()
    #: How logs name it (reload: "reloaded NAME").
    name: str = "authenticator"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.provides
        for klass in cls.__mro__:
            if klass is Authenticator:
                break
            for cap in Capability:
                if cap.value in vars(klass) and cap not in declared:
                    raise TypeError(
                        f"{cls.__qualname__} defines {cap.value}() but does not declare "
                        f"Capability.{cap.name} in 'provides': add it, or the chain never "
                        "calls it"
                    )

    def authenticate(self, request: ConnectRequest) -> int | Pending:
        """CONNECT: a reason code, 0 accepts; 0x86 bad user name or password, 0x87 not
        authorized (or a Pending one)."""
        return Reason.SUCCESS

    def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
        """An exchange for ``request.auth_method``, or None if the method is not supported
        (another layer may support it; if none does the CONNECT is refused with 0x8C, or the
        re-authentication ends the connection)."""
        return None

    def can_publish(self, client_id: str, username: str | None, topic: str) -> bool | Pending:
        return True

    def can_subscribe(
        self, client_id: str, username: str | None, topic_filter: str
    ) -> bool | Pending:
        return True

    def source_can_publish(
        self, client_id: str, username: str | None, port: int | None, topic: str
    ) -> bool | Pending:
        """check_retain_source: may the client that published a retained message (connected
        or not) still publish to ``topic``? It connected as ``username`` to the listener on
        ``port`` (None: not known). Asked of the layers that provide ``can_publish``; by
        default their ``can_publish`` with that identity."""
        return self.can_publish(client_id, username, topic)

    def can_read(self, client_id: str, topic: str) -> bool:
        """Delivery of a message on ``topic`` to ``client_id`` (as it last authenticated)."""
        return True

    def reload(self) -> Reloaded:
        """Re-read what this layer reads (SIGHUP). Raises :class:`ConfigError` when that fails:
        the layer then keeps its previous state."""
        return Reloaded()

    def session_ended(self, client_id: str) -> None:
        """The client's session ended: drop what was kept for it."""

    def session_restored(self, client_id: str, username: str | None) -> None:
        """A persistent session came back from disk (its client not connected yet): it last
        authenticated as ``username``."""

    async def close(self) -> None:
        """The broker stops."""


class AllowAll(Authenticator):
    """The default: anyone may connect, publish and subscribe; no enhanced authentication.

    A CONNECT naming an Authentication Method is refused with 0x8C, as Mosquitto does without an
    auth plugin (MQTT 5 4.12: the server must not accept a method it does not support).
    """


class AuthChain(Authenticator):
    """The layers the broker asks, in order; each capability asks every layer that provides it.

    How the answers combine (the behaviour of the wrappers this replaces, in their order):

    - ``authenticate``: every layer must accept (0); the first refusal is the answer and the
      layers after it are not asked. A Pending answer makes the chain's answer a Pending that,
      once it accepts, asks the layers after it (and is done when they are).
    - ``enhanced``: the first layer that returns an exchange serves the method; None if none.
    - ``can_publish`` / ``can_subscribe``: every layer must allow; the first False is the answer
      and the layers after it are not asked. A Pending answer makes the chain's answer a Pending
      that, once it allows, asks the layers after it (and is done when they are).
    - ``can_read``: every layer must allow (synchronous).
    - ``session_ended`` / ``session_restored`` / ``close``: every layer is told.
    - ``reload``: every layer is reloaded; one that fails keeps its state, the others still
      reload; the notices, revoked client ids and errors are gathered (the chain never raises).

    With no layer providing a capability the answer is the base class's (accept, allow, no
    exchange). ``checks_publish``, ``checks_subscribe`` and ``read_check`` are computed once, for
    the broker's per-message paths.
    """

    #: Per chain: what any of its layers provides (a chain may be a layer of another).
    provides = frozenset(Capability)
    name = "authentication chain"

    def __init__(self, layers: Iterable[Authenticator] = ()) -> None:
        self.layers: tuple[Authenticator, ...] = tuple(layers)
        for layer in self.layers:
            if not isinstance(layer, Authenticator):
                raise TypeError(
                    f"{layer!r} is not a midge.auth.base.Authenticator: subclass it and declare "
                    "what it provides"
                )
        self.provides = frozenset(cap for layer in self.layers for cap in layer.provides)

        def having(cap: Capability) -> tuple[Authenticator, ...]:
            return tuple(layer for layer in self.layers if cap in layer.provides)

        self._connect = tuple(layer.authenticate for layer in having(Capability.CONNECT))
        #: The connect layers' names (their ``backend`` attribute, else their class name) and
        #: the CONNECTs each refused (/metrics: midge_auth_failures_total{backend}).
        self.connect_names = tuple(
            str(getattr(layer, "backend", None) or type(layer).__name__)
            for layer in having(Capability.CONNECT)
        )
        self.failures: dict[str, int] = {}
        self._enhanced = tuple(layer.enhanced for layer in having(Capability.ENHANCED))
        #: The enhanced-authentication layers' names, counted the same way: an exchange that
        #: ends in a failure code (SCRAM's wrong proof, ...) is that backend's failure.
        self.enhanced_names = tuple(
            str(getattr(layer, "backend", None) or type(layer).__name__)
            for layer in having(Capability.ENHANCED)
        )
        #: Every backend name once, connect layers first (the labels of the failures metric).
        self.backend_names = tuple(dict.fromkeys(self.connect_names + self.enhanced_names))
        self._publish = tuple(layer.can_publish for layer in having(Capability.PUBLISH))
        self._subscribe = tuple(layer.can_subscribe for layer in having(Capability.SUBSCRIBE))
        self._read = tuple(layer.can_read for layer in having(Capability.READ))
        self._reload = having(Capability.RELOAD)
        self._ended = tuple(layer.session_ended for layer in having(Capability.SESSION_END))
        self._restored = tuple(
            layer.session_restored for layer in having(Capability.SESSION_RESTORED)
        )
        self._close = having(Capability.CLOSE)
        #: False when no layer may refuse a PUBLISH: the broker skips the call on every message.
        self.checks_publish = bool(self._publish)
        #: False when no layer may refuse a SUBSCRIBE.
        self.checks_subscribe = bool(self._subscribe)
        #: The read check for every delivery, or None when no layer restricts reads (routing then
        #: pays nothing): the one layer's own method when only one provides it.
        self.read_check: Callable[[str, str], bool] | None = (
            None if not self._read else self._read[0] if len(self._read) == 1 else self.can_read
        )

    def __repr__(self) -> str:
        return f"AuthChain({list(self.layers)!r})"

    # -- connect ---------------------------------------------------------------------------------

    def authenticate(self, request: ConnectRequest) -> int | Pending:
        return self._authenticate_from(request, 0)

    def _authenticate_from(self, request: ConnectRequest, start: int) -> int | Pending:
        checks = self._connect
        for i in range(start, len(checks)):
            code = checks[i](request)
            if not isinstance(code, int):
                return _Then(code, partial(self._after_pending, request, i + 1))
            if code:
                self._failed(i)
                return code
        return Reason.SUCCESS

    def _failed(self, i: int) -> None:
        self.count_failure(self.connect_names[i])

    def count_failure(self, backend: str) -> None:
        """One more refusal by ``backend`` (/metrics: midge_auth_failures_total)."""
        self.failures[backend] = self.failures.get(backend, 0) + 1

    def _after_pending(self, request: ConnectRequest, nxt: int, result: Any) -> Any:
        """A layer's pending answer is in: a refusal (or not a code at all: the connection
        fails closed) is the answer, an acceptance goes on with layer ``nxt``."""
        if not isinstance(result, int) or result:
            self._failed(nxt - 1)
            return result
        return self._authenticate_from(request, nxt)

    def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
        for enhanced, name in zip(self._enhanced, self.enhanced_names, strict=True):
            exchange = enhanced(request)
            if exchange is not None:
                return _CountedExchange(exchange, self, name)
        return None

    # -- authorization ---------------------------------------------------------------------------

    def can_publish(self, client_id: str, username: str | None, topic: str) -> bool | Pending:
        return self._allowed_from(self._publish, (client_id, username, topic), 0)

    def can_subscribe(
        self, client_id: str, username: str | None, topic_filter: str
    ) -> bool | Pending:
        return self._allowed_from(self._subscribe, (client_id, username, topic_filter), 0)

    def _allowed_from(
        self,
        checks: tuple[Callable[[str, str | None, str], bool | Pending], ...],
        args: tuple[str, str | None, str],
        start: int,
    ) -> bool | Pending:
        for i in range(start, len(checks)):
            allowed = checks[i](*args)
            if allowed is True:
                continue
            if allowed is False:
                return False
            return _Then(allowed, partial(self._after_allowed, checks, args, i + 1))
        return True

    def _after_allowed(
        self,
        checks: tuple[Callable[[str, str | None, str], bool | Pending], ...],
        args: tuple[str, str | None, str],
        nxt: int,
        result: Any,
    ) -> Any:
        """A layer's pending answer is in: anything but True is the answer (a non-bool fails
        closed at the connection), True goes on with layer ``nxt``."""
        if result is not True:
            return result
        return self._allowed_from(checks, args, nxt)

    def can_read(self, client_id: str, topic: str) -> bool:
        return all(check(client_id, topic) for check in self._read)

    def source_can_publish(
        self, client_id: str, username: str | None, port: int | None, topic: str
    ) -> bool | Pending:
        """Every layer that checks PUBLISH must allow (a pending answer is returned as is: the
        broker then does not hold the message back)."""
        for layer in self.layers:
            if Capability.PUBLISH not in layer.provides:
                continue
            allowed = layer.source_can_publish(client_id, username, port, topic)
            if allowed is not True:
                return allowed
        return True

    # -- lifecycle -------------------------------------------------------------------------------

    def session_ended(self, client_id: str) -> None:
        for ended in self._ended:
            ended(client_id)

    def session_restored(self, client_id: str, username: str | None) -> None:
        for restored in self._restored:
            restored(client_id, username)

    def reload(self) -> Reloaded:
        total = Reloaded()
        for layer in self._reload:
            try:
                done = layer.reload()
            except ConfigError as exc:
                log.error("reload failed, keeping the previous %s: %s", layer.name, exc)
                total.errors.append(exc)
                continue
            total.notices.extend(done.notices)
            total.revoked.extend(done.revoked)
            total.errors.extend(done.errors)
            if not isinstance(layer, AuthChain):
                log.info("reloaded %s (%d client(s) disconnected)", layer.name, len(done.revoked))
        return total

    async def close(self) -> None:
        for layer in self._close:
            try:
                await layer.close()
            except Exception:  # pragma: no cover - a layer's own trouble at exit
                log.exception("closing %s", layer.name)


def chain(authenticator: Authenticator | None) -> AuthChain:
    """``authenticator`` as a chain: itself if it is one, else a chain of it (of nothing: None)."""
    if isinstance(authenticator, AuthChain):
        return authenticator
    return AuthChain(() if authenticator is None else (authenticator,))


class _Then:
    """A :class:`Pending` that, once ``first`` is done, is done with ``then(first's result)``;
    ``then`` may itself return a Pending, which this one then waits for."""

    __slots__ = ("_callbacks", "_done", "_error", "_result")

    def __init__(self, first: Pending, then: Callable[[Any], Any]) -> None:
        self._callbacks: list[Callable[[Any], object]] = []
        self._done = False
        self._result: Any = None
        self._error: BaseException | None = None
        first.add_done_callback(lambda _: self._continue(first, then))

    def _continue(self, first: Pending, then: Callable[[Any], Any]) -> None:
        try:
            following = then(first.result())
        except Exception as exc:
            self._finish(None, exc)
            return
        if isinstance(following, _Then):
            following.add_done_callback(self._take)
        else:
            self._finish(following, None)

    def _take(self, pending: _Then) -> None:
        try:
            self._finish(pending.result(), None)
        except Exception as exc:
            self._finish(None, exc)

    def _finish(self, result: Any, error: BaseException | None) -> None:
        self._result, self._error, self._done = result, error, True
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None:
        if self._done:
            fn(self)
        else:
            self._callbacks.append(fn)

    def done(self) -> bool:
        return self._done

    def result(self) -> Any:
        if not self._done:
            raise RuntimeError("the decision is still pending")
        if self._error is not None:
            raise self._error
        return self._result
