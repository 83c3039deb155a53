"""Accepting a connection, whatever the transport: the connection limits (``max_connections``,
``global_max_connections``, ``max_connection_rate``), the listener's bookkeeping, and the
:class:`~midge.broker.connection.Connection` of an admitted socket. TCP (:mod:`midge.transport.tcp`)
and WebSocket (:mod:`midge.transport.websocket`) listeners share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable

from midge.broker.broker import Broker
from midge.broker.connection import Connection
from midge.codec.reasons import Reason
from midge.config import ListenerConfig
from midge.transport.proxy import Origin, ProxyServer
from midge.transport.tls import peer_username
from midge.transport.writer import CoalescingTransport


def client_address(
    transport: asyncio.BaseTransport, listener: ListenerConfig, origin: Origin | None
) -> tuple[str, str]:
    """The one place a client's address comes from: (host, ``host:port``), the host for the
    per-address limits and the whole for the log lines and the authentication plugins' ``peer``.

    The PROXY header's address when the listener has one (``origin``), else the socket's own; a
    Unix socket's client is ``unix-socket``, as Mosquitto names it."""
    if origin is not None and origin.host is not None:
        return origin.host, origin.peer or origin.host
    if listener.unix_socket_path is not None:
        return "unix-socket", "unix-socket"
    peername = transport.get_extra_info("peername")
    if not peername or isinstance(peername, str):
        return "?", "?"
    return str(peername[0]), f"{peername[0]}:{peername[1]}"


def admit(
    broker: Broker,
    listener: ListenerConfig,
    listening: ListenerState,
    tr: asyncio.BaseTransport,
    origin: Origin | None = None,
) -> int:
    """Whether a new connection may go on: 0 yes, a reason code to refuse it at CONNECT
    (``max_connections``, ``global_max_connections``, ``max_connection_rate``), -1 to close it
    at once (the broker is stopping, or too many refused ones are waiting already).
    ``origin``: what the connection's PROXY header said (its address is the client's)."""
    if broker.shutting_down:
        return -1
    limits = listening.limits
    refuse = limits.take(listening, lambda: client_address(tr, listener, origin)[0])
    if refuse:
        if refuse == Reason.QUOTA_EXCEEDED:
            broker.stats.limited_connections += 1
        else:
            broker.stats.limited_connection_rate += 1
        if limits.refusing >= MAX_REFUSING:
            return -1  # too many waiting to be told: close at once, as Mosquitto does
        limits.refusing += 1
    else:
        listening.accepted += 1
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
    origin: Origin | None = None,
) -> Connection:
    """The Connection of an admitted socket (``refuse`` from :func:`admit`), writing to ``out``;
    ``tr`` is the socket's transport (its peer address and TLS certificate), ``origin`` what
    its PROXY header said."""
    conn = Connection(broker, out, listener, client_address(tr, listener, origin)[1])
    if listener.use_identity_as_username or listener.use_subject_as_username:
        if listener.tls or origin is None:
            conn.cert_username = peer_username(tr, listener)
        elif origin.cert_verified:
            # The proxy terminated the TLS: its v2 header names the certificate's CN.
            conn.cert_username = origin.common_name
    if refuse:
        # Told why at CONNECT (v5 0x97 / 0x9F, v3 "server unavailable"), then closed.
        conn.refuse_at_connect(refuse, REFUSE_TIMEOUT)

        def refused() -> None:
            listening.limits.refusing -= 1

        conn.on_lost = refused
    else:

        def lost() -> None:  # called once, when the transport is gone
            listening.limits.release(listening)

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

    def take(self, listening: ListenerState, address: Callable[[], str]) -> int:
        """Count a new connection on ``listening`` in, or say why not: 0, or
        ``max_connections`` / ``global_max_connections`` (QUOTA_EXCEEDED) or
        ``max_connection_rate`` (CONNECTION_RATE_EXCEEDED, for the address ``address()``).
        With ``--workers`` the limits are the whole broker's (midge.cluster.limits)."""
        limit = listening.config.max_connections
        if (limit >= 0 and listening.active >= limit) or self.full():
            return Reason.QUOTA_EXCEEDED
        if self.rate and not self.admit(address()):
            return Reason.CONNECTION_RATE_EXCEEDED
        listening.active += 1
        self.active += 1
        return 0

    def release(self, listening: ListenerState) -> None:
        """A connection counted in by :meth:`take` is gone."""
        listening.active -= 1
        self.active -= 1

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
        #: Connections accepted since the start (/metrics, per listener).
        self.accepted = 0
        self.limits = limits if limits is not None else ConnectionLimits()
        self.server: asyncio.Server | ProxyServer | None = None
        self.broker: Broker | None = None
        self.unix_socket: tuple[int, int] | None = None
        #: Its position among the broker's listeners (the same in every worker).
        self.index = 0

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
