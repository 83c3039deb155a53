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
import ssl
import stat
from collections.abc import Callable
from typing import cast

from midge.broker.broker import Broker
from midge.config import ListenerConfig
from midge.transport.accept import (
    ConnectionLimits,
    ListenerState,
    admit,
    attach,
    set_nodelay,
)
from midge.transport.proxy import Origin, ProxyServer, peer_of, refusal
from midge.transport.tls import ServerTls
from midge.transport.writer import CoalescingTransport, TurnWrites

log = logging.getLogger("midge.transport")


class MQTTProtocol(asyncio.Protocol):
    """One accepted socket: counts it, sets it up, and hands the transport to a Connection
    (``set_protocol``), which gets every later event directly. A refused socket is aborted here."""

    __slots__ = ("broker", "listener", "listening", "origin", "writes")

    def __init__(
        self,
        broker: Broker,
        listener: ListenerConfig,
        listening: ListenerState,
        writes: TurnWrites,
        origin: Origin | None = None,
    ) -> None:
        self.broker = broker
        self.listener = listener
        self.listening = listening
        self.writes = writes
        #: What the PROXY header said (midge.transport.proxy), on such a listener.
        self.origin = origin

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)
        refuse = admit(self.broker, self.listener, self.listening, tr, self.origin)
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
            self.origin,
        )
        # From here on the transport talks to the Connection directly: one Python call less per
        # read on the hot path.
        tr.set_protocol(conn)  # type: ignore[arg-type]


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

    protocol: Callable[..., asyncio.Protocol]
    if config.protocol == "websockets":
        from midge.transport.websocket import WebSocketProtocol

        def protocol(origin: Origin | None = None) -> asyncio.Protocol:
            """A new connection's protocol; ``origin``: what its PROXY header said."""
            assert state.broker is not None  # set before the listener serves
            return WebSocketProtocol(state.broker, config, state, turn, origin)

    else:

        def protocol(origin: Origin | None = None) -> asyncio.Protocol:
            """A new connection's protocol; ``origin``: what its PROXY header said."""
            assert state.broker is not None  # set before the listener serves
            return MQTTProtocol(state.broker, config, state, turn, origin)

    context = tls.front if tls is not None else None
    handshake_timeout = connect_timeout if tls is not None else None
    # A closed TLS connection waits this long for the client's close_notify (writer.LINGER).
    shutdown_timeout = turn.linger if tls is not None else None
    if config.enable_proxy_protocol:
        # asyncio binds the sockets but does not accept: ProxyServer accepts, reads the PROXY
        # header, and only then makes the transport (TLS after the header).
        inner = await _bind(config, protocol, reuse_port, None, None, None, state)
        timeout = connect_timeout if connect_timeout is not None else 10.0

        def header_timeout() -> float:
            return state.broker.config.connect_timeout if state.broker is not None else timeout

        async def handoff(sock: socket.socket, origin: Origin) -> None:
            why = refusal(config, origin)
            if why is not None:
                (log.debug if origin.local else log.info)(
                    "connection from %s refused: %s", origin.peer or peer_of(sock), why
                )
                sock.close()
                return
            if log.isEnabledFor(logging.DEBUG):
                log.debug("PROXY header from %s: %r", peer_of(sock), origin)
            try:
                await loop.connect_accepted_socket(
                    lambda: protocol(origin),
                    sock,
                    ssl=context,
                    ssl_handshake_timeout=handshake_timeout,
                    ssl_shutdown_timeout=shutdown_timeout,
                )
            except (OSError, ssl.SSLError, TimeoutError) as exc:  # a failed TLS handshake
                log.debug("connection from %s: %s", origin.peer or "?", exc)
                with contextlib.suppress(OSError):
                    sock.close()

        state.server = ProxyServer(inner, config.enable_proxy_protocol, header_timeout, handoff)
        if broker is not None:
            await state.server.start_serving()
        return state
    state.server = await _bind(
        config,
        protocol,
        reuse_port,
        context,
        handshake_timeout,
        shutdown_timeout,
        state,
        start_serving=broker is not None,
    )
    return state


async def _bind(
    config: ListenerConfig,
    protocol: Callable[[], asyncio.Protocol],
    reuse_port: bool,
    context: ssl.SSLContext | None,
    handshake_timeout: float | None,
    shutdown_timeout: float | None,
    state: ListenerState,
    start_serving: bool = False,
) -> asyncio.Server:
    """The listener's asyncio server: its sockets bound (a Unix socket, an interface's
    addresses, or the listener's address), serving at once if ``start_serving``."""
    loop = asyncio.get_running_loop()
    if config.unix_socket_path is not None:
        sock = _unix_socket(config)
        st = os.stat(config.unix_socket_path)
        state.unix_socket = (st.st_dev, st.st_ino)
        try:
            return await loop.create_unix_server(
                protocol,
                sock=sock,
                backlog=4096,
                start_serving=start_serving,
                ssl=context,
                ssl_handshake_timeout=handshake_timeout,
                ssl_shutdown_timeout=shutdown_timeout,
            )
        except BaseException:
            sock.close()
            state.remove_socket_file()
            raise
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
    return await loop.create_server(
        protocol,
        host=host,
        port=config.port,
        family=family,
        reuse_address=True,
        reuse_port=reuse_port or None,
        backlog=4096,
        start_serving=start_serving,
        ssl=context,
        ssl_handshake_timeout=handshake_timeout,
        ssl_shutdown_timeout=shutdown_timeout,
    )
