"""asyncio glue for TCP and TLS: hands bytes to a :class:`~midge.broker.connection.Connection`.

A TLS listener is the same listener with asyncio's TLS layer in front (``create_server(ssl=...)``,
contexts from :mod:`midge.transport.tls`); the connection sees the same bytes either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import cast

from midge.broker.broker import Broker
from midge.broker.connection import Connection
from midge.config import ListenerConfig
from midge.transport.tls import ServerTls, peer_username

log = logging.getLogger("midge.transport")


class MQTTProtocol(asyncio.Protocol):
    """One accepted socket: counts it, sets it up, and hands the transport to a Connection
    (``set_protocol``), which gets every later event directly. A refused socket is aborted here."""

    __slots__ = ("broker", "listener", "listening")

    def __init__(self, broker: Broker, listener: ListenerConfig, listening: ListenerState) -> None:
        self.broker = broker
        self.listener = listener
        self.listening = listening

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)
        limit = self.listener.max_connections
        if self.broker.shutting_down or (limit >= 0 and self.listening.active >= limit):
            # Mosquitto closes connections beyond max_connections straight away.
            tr.abort()
            return
        self.listening.active += 1
        sock = tr.get_extra_info("socket")
        if sock is not None and self.broker.config.set_tcp_nodelay:
            with contextlib.suppress(OSError):  # not a TCP socket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peername = tr.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        conn = Connection(self.broker, tr, self.listener, peer)
        listener = self.listener
        if listener.use_identity_as_username or listener.use_subject_as_username:
            conn.cert_username = peer_username(tr, listener)
        conn.on_lost = self._lost  # called once, when the transport is gone
        # From here on the transport talks to the Connection directly: one Python call less per
        # read on the hot path.
        tr.set_protocol(conn)  # type: ignore[arg-type]

    def _lost(self) -> None:
        self.listening.active -= 1


class ListenerState:
    """A listening socket and how many connections it holds (for ``max_connections``)."""

    def __init__(self, config: ListenerConfig) -> None:
        self.config = config
        self.active = 0
        self.server: asyncio.Server | None = None


async def listen(
    broker: Broker,
    config: ListenerConfig,
    reuse_port: bool = False,
    tls: ServerTls | None = None,
) -> ListenerState:
    """Open one listener. ``reuse_port``: SO_REUSEPORT, so that the ``--workers`` processes each
    listen on the same port and the kernel spreads the connections among them. ``tls``: a TLS
    listener; its handshake must finish within ``connect_timeout``, the time a client has to
    send CONNECT."""
    loop = asyncio.get_running_loop()
    state = ListenerState(config)
    host: str | None = config.host or None
    family = socket.AF_UNSPEC
    domain = getattr(config, "socket_domain", None)
    if domain == "ipv4":
        family = socket.AF_INET
    elif domain == "ipv6":
        family = socket.AF_INET6
    state.server = await loop.create_server(
        lambda: MQTTProtocol(broker, config, state),
        host=host,
        port=config.port,
        family=family,
        reuse_address=True,
        reuse_port=reuse_port or None,
        backlog=4096,
        ssl=tls.front if tls is not None else None,
        ssl_handshake_timeout=broker.config.connect_timeout if tls is not None else None,
    )
    return state
