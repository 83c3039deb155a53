"""Write coalescing in the transport (midge.transport.writer): what a loop turn writes reaches the
socket in one call per socket at the end of the turn, in order; close writes what is kept."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from midge.transport.writer import CoalescingTransport, TurnWrites


async def _pair() -> tuple[asyncio.Transport, socket.socket]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    theirs.setblocking(False)
    return transport, theirs


async def _read(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, n - len(data)), 2)
        if not chunk:
            break
        data += chunk
    return data


def test_one_socket_write_per_loop_turn() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        turn = TurnWrites(loop)
        raw = [await _pair(), await _pair()]
        calls: list[tuple[int, str, int]] = []
        nested = [False]  # asyncio's writelines may call its write: count the outer call only
        for i, (tr, _) in enumerate(raw):
            write, writelines = tr.write, tr.writelines

            def counted_write(
                data: bytes, i: int = i, write: Callable[[bytes], None] = write
            ) -> None:
                if not nested[0]:
                    calls.append((i, "write", 1))
                write(data)

            def counted_lines(
                data: list[bytes], i: int = i, wl: Callable[[list[bytes]], None] = writelines
            ) -> None:
                calls.append((i, "writelines", len(data)))
                nested[0] = True
                try:
                    wl(data)
                finally:
                    nested[0] = False

            tr.write = counted_write  # type: ignore[method-assign, assignment]
            tr.writelines = counted_lines  # type: ignore[method-assign, assignment]
        a = CoalescingTransport(raw[0][0], turn)
        b = CoalescingTransport(raw[1][0], turn)
        a.write(b"1")
        b.write(b"x")
        a.write(b"2")
        a.write(b"3")
        a.write(b"4")
        assert calls == []  # nothing before the end of the turn
        assert await _read(raw[0][1], 4) == b"1234"
        assert await _read(raw[1][1], 1) == b"x"
        assert sorted(calls) == [(0, "writelines", 4), (1, "write", 1)]
        a.write(b"5")
        a.close()  # writes what it keeps, then closes
        assert await _read(raw[0][1], 2) == b"5"
        b.close()
        for _, sock in raw:
            sock.close()

    asyncio.run(run())
