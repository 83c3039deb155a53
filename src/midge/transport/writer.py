"""Write coalescing: one ``write``/``writelines`` per socket per loop turn.

A :class:`Connection <midge.broker.connection.Connection>` writes each packet as it is made (an
ack, a PUBLISH per delivery). :class:`CoalescingTransport` wraps the asyncio transport: it keeps
what a loop turn wrote and hands it to the socket at the end of the turn, in one call, for every
connection that has output (:class:`TurnWrites` schedules one callback per turn however many
connections wrote). Closing writes what is kept first.

Closing is graceful (:meth:`CoalescingTransport.close`): closing a socket whose peer is still
sending makes the kernel answer with RST, and a client that has not yet read our last packet
(DISCONNECT 0x93, a CONNACK that refuses it) loses it with the reset. So the transport writes what
is pending, half-closes (``write_eof``: FIN after the last byte), reads and discards what the
peer still sends until it closes too or :data:`LINGER` seconds pass, and only then closes. The
lingering sockets are kept in :attr:`TurnWrites.lingering` so that a stopping server can abort them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from midge.broker.outgoing import NativeWriter
from midge.transport.pacer import Pacer

#: Seconds a closed connection's socket keeps reading (and discarding) what the peer still sends,
#: waiting for it to close its side, before it is aborted. Long enough for a client to read the
#: packet that tells it why it is closed; short enough that a peer that never closes costs little.
LINGER = 2.0


class TurnWrites:
    """The transports that have output this loop turn; written out once, at its end."""

    __slots__ = ("dirty", "gate", "linger", "lingering", "loop", "pacer")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, linger: float = LINGER, pacer: Pacer | None = None
    ) -> None:
        self.loop = loop
        #: The process's batch window (``batch_window``, midge.transport.pacer), if it has one:
        #: told of every turn that writes, and it writes this turn's output before it rests.
        self.pacer = pacer
        if pacer is not None:
            pacer.watch(self.flush)
        self.dirty: list[CoalescingTransport] = []
        #: Durable before visible (a cluster node, docs/cluster.md): the output of a ``gated``
        #: transport (a client of a persistent session) is held until ``gate`` calls back,
        #: once what the turn changed is in the store (the store's ``commit``). So a client is
        #: never shown a delivery, or a PUBREL, that a node taking its session over would not
        #: know. None: everything is written at the end of the turn.
        self.gate: Callable[[Callable[[], None]], None] | None = None
        #: Seconds a closed socket lingers (see the module).
        self.linger = linger
        #: The sockets closed by their connection, still draining what the peer sends.
        self.lingering: set[Lingering] = set()

    def abort_lingering(self) -> None:
        """Abort every lingering socket now (the server is stopping)."""
        for lingering in list(self.lingering):
            lingering.transport.abort()

    def pending_output(self) -> bool:
        """Whether a lingering socket still has output asyncio has not handed to the kernel."""
        return any(ling.transport.get_write_buffer_size() for ling in self.lingering)

    def add(self, transport: CoalescingTransport) -> None:
        if not self.dirty:
            self.loop.call_soon(self.flush)
            pacer = self.pacer
            if pacer is not None:
                pacer.arm()
        self.dirty.append(transport)

    def flush(self) -> None:
        dirty = self.dirty
        self.dirty = []
        gate = self.gate
        if gate is None:
            for transport in dirty:
                transport.flush()
            return
        held: list[tuple[CoalescingTransport, list[bytes]]] = []
        for transport in dirty:
            if transport.gated:
                out = transport.out
                if out is not None:
                    transport.out = None
                    held.append((transport, out))
            else:
                transport.flush()
        if held:
            gate(lambda: _release(held))


def _release(held: list[tuple[CoalescingTransport, list[bytes]]]) -> None:
    """Write output held for the store (in the order it was made); a connection closed
    meanwhile gets none of it (its session is elsewhere, or will be resent from the store)."""
    for transport, out in held:
        raw = transport.transport
        if raw.is_closing() or isinstance(raw.get_protocol(), Lingering):
            continue
        with contextlib.suppress(RuntimeError, OSError):  # closed meanwhile (write_eof)
            raw.writelines(out)


class CoalescingTransport(NativeWriter):
    """An asyncio transport whose writes wait for the end of the loop turn (see the module)."""

    __slots__ = ("gated", "out", "transport", "turn")

    def __init__(self, transport: asyncio.Transport, turn: TurnWrites) -> None:
        self.transport = transport
        self.turn = turn
        #: This turn's output, None when there is none (then no flush is scheduled).
        self.out: list[bytes] | None = None
        #: Whether the output waits for the turn's store writes (TurnWrites.gate).
        self.gated = False

    def write(self, data: bytes) -> None:
        out = self.out
        if out is None:
            self.out = [data]
            self.turn.add(self)
        else:
            out.append(data)

    def flush(self) -> None:
        out = self.out
        if out is not None:
            self.out = None
            transport = self.transport
            if len(out) == 1:
                transport.write(out[0])
            else:
                transport.writelines(out)

    def close(self) -> None:
        """Write what is pending, then close gracefully (see the module): the socket lingers,
        reading into a :class:`Lingering` protocol, so what the peer still sends never reaches
        the connection. The connection is told it is lost (``connection_lost``) at once, on the
        next loop turn: the broker's connection counts drop when the connection closes, not when
        the socket is finally gone."""
        self.flush()
        transport = self.transport
        if transport.is_closing() or isinstance(transport.get_protocol(), Lingering):
            transport.close()  # closing already: the peer went, or close() was called before
            return
        protocol = transport.get_protocol()
        turn = self.turn
        lingering = Lingering(transport, turn)
        transport.set_protocol(lingering)
        turn.lingering.add(lingering)
        turn.loop.call_soon(protocol.connection_lost, None)
        if transport.can_write_eof():
            try:
                transport.write_eof()  # FIN once asyncio's buffer is written
            except OSError:
                # The peer is gone already (reset: ENOTCONN from shutdown): nothing to linger for.
                transport.abort()
                return
            if not transport.is_reading():
                transport.resume_reading()  # the connection may have paused it
        else:
            # TLS: asyncio cannot half-close a TLS stream. close() writes what is buffered, sends
            # close_notify and waits (ssl_shutdown_timeout, set to the linger by the listener)
            # for the peer's, discarding application data meanwhile, then closes the socket.
            transport.close()
        lingering.timer = turn.loop.call_later(turn.linger, transport.abort)

    def abort(self) -> None:
        self.out = None
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


class Lingering(asyncio.Protocol):
    """The protocol of a socket its connection closed: discards what the peer still sends and
    closes once the peer has closed its side (or is aborted when the linger is over)."""

    __slots__ = ("timer", "transport", "turn")

    def __init__(self, transport: asyncio.Transport, turn: TurnWrites) -> None:
        self.transport = transport
        self.turn = turn
        self.timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        pass  # the connection is closed: nothing more is read from this peer

    def eof_received(self) -> bool:
        return False  # the peer closed its side: close ours (after what is still buffered)

    def connection_lost(self, exc: Exception | None) -> None:
        self.turn.lingering.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
