"""asyncio glue for TCP and TLS: hands bytes to a :class:`~midge.broker.connection.Connection`.

A TLS listener is the same listener with asyncio's TLS layer in front (``create_server(ssl=...)``,
contexts from :mod:`midge.transport.tls`); the connection sees the same bytes either way. Either
way the connection writes through a :class:`~midge.transport.writer.CoalescingTransport`: one
socket write per loop turn however many packets it produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from typing import cast

from midge.broker.broker import Broker
from midge.broker.connection import Connection
from midge.codec.reasons import Reason
from midge.config import ListenerConfig
from midge.transport.tls import ServerTls, peer_username
from midge.transport.writer import CoalescingTransport, TurnWrites

log = logging.getLogger("midge.transport")


class MQTTProtocol(asyncio.Protocol):
    """One accepted socket: counts it, sets it up, and hands the transport to a Connection
    (``set_protocol``), which gets every later event directly. A refused socket is aborted here."""

    __slots__ = ("broker", "listener", "listening", "writes")

    def __init__(
        self,
        broker: Broker,
        listener: ListenerConfig,
        listening: ListenerState,
        writes: TurnWrites,
    ) -> None:
        self.broker = broker
        self.listener = listener
        self.listening = listening
        self.writes = writes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)
        refuse = admit(self.broker, self.listener, self.listening, tr)
        if refuse < 0:
            tr.abort()
            return
        set_nodelay(self.broker, tr)
        conn = attach(
            self.broker,
            self.listener,
            self.listening,
            CoalescingTransport(tr, self.writes),
            tr,
            refuse,
        )
        # From here on the transport talks to the Connection directly: one Python call less per
        # read on the hot path.
        tr.set_protocol(conn)  # type: ignore[arg-type]


def admit(
    broker: Broker, listener: ListenerConfig, listening: ListenerState, tr: asyncio.BaseTransport
) -> int:
    """Whether a new connection may go on: 0 yes, a reason code to refuse it at CONNECT
    (``max_connections``, ``global_max_connections``, ``max_connection_rate``), -1 to close it
    at once (the broker is stopping, or too many refused ones are waiting already)."""
    if broker.shutting_down:
        return -1
    limits = listening.limits
    peername = tr.get_extra_info("peername")
    refuse = 0
    limit = listener.max_connections
    if (limit >= 0 and listening.active >= limit) or limits.full():
        refuse = Reason.QUOTA_EXCEEDED
        broker.stats.limited_connections += 1
    elif limits.rate and not limits.admit(
        peername[0] if peername and not isinstance(peername, str) else "?"
    ):
        refuse = Reason.CONNECTION_RATE_EXCEEDED
        broker.stats.limited_connection_rate += 1
    if refuse:
        if limits.refusing >= MAX_REFUSING:
            return -1  # too many waiting to be told: close at once, as Mosquitto does
        limits.refusing += 1
    else:
        listening.active += 1
        limits.active += 1
    return refuse


def set_nodelay(broker: Broker, tr: asyncio.BaseTransport) -> None:
    sock = tr.get_extra_info("socket")
    if sock is not None and broker.config.set_tcp_nodelay:
        with contextlib.suppress(OSError):  # not a TCP socket
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def attach(
    broker: Broker,
    listener: ListenerConfig,
    listening: ListenerState,
    out: CoalescingTransport,
    tr: asyncio.BaseTransport,
    refuse: int,
) -> Connection:
    """The Connection of an admitted socket (``refuse`` from :func:`admit`), writing to ``out``;
    ``tr`` is the socket's transport (its peer address and TLS certificate)."""
    if listener.unix_socket_path is not None:
        peer = "unix-socket"  # as Mosquitto names such a client's address
    else:
        peername = tr.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
    conn = Connection(broker, out, listener, peer)
    if listener.use_identity_as_username or listener.use_subject_as_username:
        conn.cert_username = peer_username(tr, listener)
    if refuse:
        # Told why at CONNECT (v5 0x97 / 0x9F, v3 "server unavailable"), then closed.
        conn.refuse_at_connect(refuse, REFUSE_TIMEOUT)

        def refused() -> None:
            listening.limits.refusing -= 1

        conn.on_lost = refused
    else:

        def lost() -> None:  # called once, when the transport is gone
            listening.active -= 1
            listening.limits.active -= 1

        conn.on_lost = lost
    return conn


#: Seconds a refused client has to send its CONNECT (and be told why) before it is closed.
REFUSE_TIMEOUT = 2.0
#: Refused connections waiting for their CONNECT at most; beyond, new ones are closed at once.
MAX_REFUSING = 256


class ConnectionLimits:
    """The broker-wide limits on accepting connections, shared by every listener:
    ``global_max_connections`` and ``max_connection_rate`` (new connections per second from one
    IP address: a token bucket per address holding a second's worth)."""

    def __init__(self, max_total: int = -1, rate: int = 0) -> None:
        self.max_total = max_total
        self.rate = rate
        self.active = 0
        self.refusing = 0
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)
        self._clock = time.monotonic

    def full(self) -> bool:
        return self.max_total >= 0 and self.active >= self.max_total

    def admit(self, address: str) -> bool:
        """Take a token for a connection from ``address``; False when there is none left."""
        now = self._clock()
        rate = self.rate
        buckets = self._buckets
        tokens, then = buckets.get(address, (float(rate), now))
        tokens = min(float(rate), tokens + (now - then) * rate)
        if len(buckets) > 100_000:
            # Forget addresses whose bucket has refilled (they start full anyway).
            for key in [k for k, (t, w) in buckets.items() if t + (now - w) * rate >= rate]:
                del buckets[key]
        if tokens < 1:
            buckets[address] = (tokens, now)
            return False
        buckets[address] = (tokens - 1, now)
        return True


class ListenerState:
    """A listening socket and how many connections it holds (for ``max_connections``).

    ``unix_socket``: for a Unix socket listener, the socket file's (device, inode), so that
    :meth:`remove_socket_file` removes that file and never another one made since."""

    def __init__(self, config: ListenerConfig, limits: ConnectionLimits | None = None) -> None:
        self.config = config
        self.active = 0
        self.limits = limits if limits is not None else ConnectionLimits()
        self.server: asyncio.Server | None = None
        self.broker: Broker | None = None
        self.unix_socket: tuple[int, int] | None = None

    def remove_socket_file(self) -> None:
        """A Unix socket listener's file is removed when the broker stops, as Mosquitto does."""
        path = self.config.unix_socket_path
        if path is None or self.unix_socket is None:
            return
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == self.unix_socket:
                os.unlink(path)
        self.unix_socket = None


def _unix_socket(config: ListenerConfig) -> socket.socket:
    """A Unix socket bound at ``config.unix_socket_path``, as Mosquitto makes it: an old socket
    file there is removed first, and the socket's mode is 0770 (Mosquitto binds under umask 007):
    its owner and group may connect, nobody else. A file there that is not a socket is left alone
    and the listener fails."""
    path = config.unix_socket_path
    assert path is not None
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o770)
    except OSError:
        sock.close()
        raise
    return sock


async def listen(
    broker: Broker | None,
    config: ListenerConfig,
    reuse_port: bool = False,
    limits: ConnectionLimits | None = None,
    tls: ServerTls | None = None,
    writes: TurnWrites | None = None,
    connect_timeout: float | None = None,
) -> ListenerState:
    """Open one listener. ``reuse_port``: SO_REUSEPORT, so that the ``--workers`` processes each
    listen on the same port and the kernel spreads the connections among them. ``limits``: the
    broker-wide connection limits, shared by all its listeners. ``tls``: a TLS listener; its
    handshake must finish within ``connect_timeout``, the time a client has to send CONNECT.
    ``writes``: the loop turn's pending output, shared by all listeners (one flush per turn).

    ``broker`` None binds the socket without accepting: the caller sets ``state.broker`` and
    then calls ``state.server.start_serving()`` (the server binds as root, then changes user
    before it opens its database, as ``user`` asks). ``connect_timeout`` is then given here.

    A ``unix_socket_path`` listener listens on that Unix socket; a ``bind_interface`` listener
    on that interface's addresses (:mod:`midge.transport.interfaces`)."""
    loop = asyncio.get_running_loop()
    turn = writes if writes is not None else TurnWrites(loop)
    state = ListenerState(config, limits)
    state.broker = broker
    if broker is not None:
        connect_timeout = broker.config.connect_timeout

    protocol: Callable[[], asyncio.Protocol]
    if config.protocol == "websockets":
        from midge.transport.websocket import WebSocketProtocol

        def protocol() -> asyncio.Protocol:
            assert state.broker is not None  # set before the listener serves
            return WebSocketProtocol(state.broker, config, state, turn)

    else:

        def protocol() -> asyncio.Protocol:
            assert state.broker is not None  # set before the listener serves
            return MQTTProtocol(state.broker, config, state, turn)

    context = tls.front if tls is not None else None
    handshake_timeout = connect_timeout if tls is not None else None
    # A closed TLS connection waits this long for the client's close_notify (writer.LINGER).
    shutdown_timeout = turn.linger if tls is not None else None
    if config.unix_socket_path is not None:
        sock = _unix_socket(config)
        st = os.stat(config.unix_socket_path)
        state.unix_socket = (st.st_dev, st.st_ino)
        try:
            state.server = await loop.create_unix_server(
                protocol,
                sock=sock,
                backlog=4096,
                start_serving=broker is not None,
                ssl=context,
                ssl_handshake_timeout=handshake_timeout,
                ssl_shutdown_timeout=shutdown_timeout,
            )
        except BaseException:
            sock.close()
            state.remove_socket_file()
            raise
        return state
    host: str | list[str] | None = config.host or None
    if config.bind_interface is not None:
        from midge.transport.interfaces import interface_hosts

        host = interface_hosts(config)
    family = socket.AF_UNSPEC
    domain = getattr(config, "socket_domain", None)
    if domain == "ipv4":
        family = socket.AF_INET
    elif domain == "ipv6":
        family = socket.AF_INET6
    state.server = await loop.create_server(
        protocol,
        host=host,
        port=config.port,
        family=family,
        reuse_address=True,
        reuse_port=reuse_port or None,
        backlog=4096,
        start_serving=broker is not None,
        ssl=context,
        ssl_handshake_timeout=handshake_timeout,
        ssl_shutdown_timeout=shutdown_timeout,
    )
    return state
