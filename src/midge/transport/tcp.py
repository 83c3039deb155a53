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
from midge.transport.tls import ServerTls
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
