"""Write coalescing: one ``write``/``writelines`` per socket per loop turn.

A :class:`Connection <midge.broker.connection.Connection>` writes each packet as it is made (an
ack, a PUBLISH per delivery). :class:`CoalescingTransport` wraps the asyncio transport: it keeps
what a loop turn wrote and hands it to the socket at the end of the turn, in one call, for every
connection that has output (:class:`TurnWrites` schedules one callback per turn however many
connections wrote). Closing writes what is kept first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from midge.broker.outgoing import NativeWriter


class TurnWrites:
    """The transports that have output this loop turn; written out once, at its end."""

    __slots__ = ("dirty", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dirty: list[CoalescingTransport] = []

    def add(self, transport: CoalescingTransport) -> None:
        if not self.dirty:
            self.loop.call_soon(self.flush)
        self.dirty.append(transport)

    def flush(self) -> None:
        dirty = self.dirty
        self.dirty = []
        for transport in dirty:
            transport.flush()


class CoalescingTransport(NativeWriter):
    """An asyncio transport whose writes wait for the end of the loop turn (see the module)."""

    __slots__ = ("out", "transport", "turn")

    def __init__(self, transport: asyncio.Transport, turn: TurnWrites) -> None:
        self.transport = transport
        self.turn = turn
        #: This turn's output, None when there is none (then no flush is scheduled).
        self.out: list[bytes] | None = None

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
        self.flush()
        self.transport.close()

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
