"""The batch window (midge.transport.pacer, ``batch_window``): a busy process rests between
turns, after writing out what the turn made; an idle one answers at once; a saturated one never
rests. Real sockets and a real loop; the clock is the test's (advanced by the rests), not slept."""

from __future__ import annotations

import asyncio
import socket

import pytest

from midge.cluster.workers import FrameProtocol, encode_frame
from midge.transport.pacer import Pacer
from midge.transport.writer import CoalescingTransport, TurnWrites
from tests.unit.test_transport_writer import _pair

WINDOW = 0.005


class Clock:
    """A monotonic clock that moves only when told: by ``advance`` (work) or by a rest."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        #: What each rest found already sent to the peers: the bytes readable at that moment.
        self.seen: list[bytes] = []
        self.peers: list[socket.socket] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.seen.append(b"".join(_readable(peer) for peer in self.peers))
        self.now += seconds


def _readable(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


async def _turn() -> None:
    """Let the loop finish the current turn and the rest queued after it."""
    for _ in range(3):
        await asyncio.sleep(0)


def _pacer(clock: Clock) -> Pacer:
    return Pacer(asyncio.get_running_loop(), WINDOW, clock=clock, sleep=clock.sleep)


async def _paced(
    clock: Clock,
) -> tuple[Pacer, CoalescingTransport, asyncio.Transport, socket.socket]:
    """A pacer on ``clock``, and one connection whose writes it paces: (pacer, what the broker
    writes to, the raw transport, the peer's socket)."""
    pacer = _pacer(clock)
    turn = TurnWrites(asyncio.get_running_loop(), pacer=pacer)
    tr, sock = await _pair()
    return pacer, CoalescingTransport(tr, turn), tr, sock


def test_a_busy_turn_writes_everything_then_rests_what_is_left_of_the_window() -> None:
    async def run() -> None:
        clock = Clock()
        pacer = _pacer(clock)
        turn = TurnWrites(asyncio.get_running_loop(), pacer=pacer)
        raw = [await _pair(), await _pair()]
        clock.peers = [sock for _, sock in raw]
        a, b = (CoalescingTransport(tr, turn) for tr, _ in raw)
        # The first turn after a quiet spell: handled and answered at once, no rest.
        a.write(b"first")
        await _turn()
        assert clock.sleeps == [] and pacer.rests == 0
        assert _readable(raw[0][1]) == b"first"
        # The next turn comes 1 ms later (busy): it rests the other 4 ms, once however many
        # connections wrote, and only after their output is on its way.
        clock.advance(0.001)
        a.write(b"1")
        b.write(b"x")
        a.write(b"2")
        await _turn()
        assert clock.sleeps == [pytest.approx(WINDOW - 0.001)]
        assert clock.seen == [b"12x"]
        assert pacer.rests == 1 and pacer.slept == pytest.approx(WINDOW - 0.001)
        # A turn that writes nothing does not rest.
        await _turn()
        assert len(clock.sleeps) == 1
        for tr, sock in raw:
            tr.close()
            sock.close()

    asyncio.run(run())


def test_a_turn_as_long_as_the_window_is_followed_by_no_rest() -> None:
    """Saturated: the work itself fills the window, and the loop goes on at once."""

    async def run() -> None:
        clock = Clock()
        pacer, out, tr, sock = await _paced(clock)
        for _ in range(3):
            out.write(b"m")
            clock.advance(WINDOW)  # this turn's work took the whole window
            await _turn()
        assert clock.sleeps == [] and pacer.rests == 0
        assert _readable(sock) == b"mmm"
        tr.close()
        sock.close()

    asyncio.run(run())


def test_rests_are_a_window_apart_under_a_steady_load() -> None:
    """Whatever the turns take below the window, one turn with output per window."""

    async def run() -> None:
        clock = Clock()
        pacer, out, tr, sock = await _paced(clock)
        out.write(b"0")
        await _turn()
        start = clock.now
        for work in (0.0, 0.002, 0.004, 0.001):
            clock.advance(work)
            out.write(b"m")
            await _turn()
        assert clock.now == pytest.approx(start + 4 * WINDOW)
        assert pacer.rests == 4
        tr.close()
        sock.close()

    asyncio.run(run())


def test_a_window_of_0_never_rests_and_a_new_window_applies_from_the_next_turn() -> None:
    """Every process has a pacer; with a window of 0 it never rests (nothing is queued for
    it), and a window set later (SIGHUP, midge.reload) paces the turns from then on; set back
    to 0, none again."""

    async def run() -> None:
        clock = Clock()
        pacer, out, tr, sock = await _paced(clock)
        pacer.window = 0.0
        for _ in range(3):
            out.write(b"a")
            await _turn()
        assert clock.sleeps == [] and not pacer.armed
        pacer.window = WINDOW
        for _ in range(3):
            out.write(b"b")
            await _turn()
        # The first turn follows a quiet spell of a window (no rest since): no rest after it.
        assert pacer.rests == 2 and clock.sleeps == [pytest.approx(WINDOW)] * 2, clock.sleeps
        pacer.window = 0.0
        for _ in range(3):
            out.write(b"c")
            await _turn()
        assert pacer.rests == 2 and not pacer.armed
        assert _readable(sock) == b"aaabbbccc"
        tr.close()
        sock.close()

    asyncio.run(run())


def test_mesh_frames_are_written_before_the_rest() -> None:
    """A worker's frames to the other workers (its mesh links) do not wait for the rest: the
    rest writes them out first, whichever was queued first."""

    async def run() -> None:
        clock = Clock()
        pacer = _pacer(clock)
        loop = asyncio.get_running_loop()
        turn = TurnWrites(loop, pacer=pacer)
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        _, link = await loop.create_unix_connection(
            lambda: FrameProtocol(lambda frame: None, lambda: None, pacer), sock=ours
        )
        tr, client = await _pair()
        clock.peers = [theirs, client]
        out = CoalescingTransport(tr, turn)
        out.write(b"first")  # the first turn: no rest
        await _turn()
        _readable(client)
        clock.advance(0.001)
        link.send(("pub", "t", b"x"))  # the link's flush is queued before the rest...
        out.write(b"ack")
        await _turn()
        clock.advance(0.001)
        out.write(b"ack2")
        link.send(("pub", "t", b"y"))  # ...and here after it
        await _turn()
        frame_x, frame_y = encode_frame(("pub", "t", b"x")), encode_frame(("pub", "t", b"y"))
        assert clock.seen == [frame_x + b"ack", frame_y + b"ack2"]
        assert pacer.rests == 2
        link.close()
        await _turn()
        assert pacer.flushers == [turn.flush]  # a closed link is no longer written by rests
        tr.close()
        client.close()
        theirs.close()

    asyncio.run(run())


def test_no_rest_while_the_process_waits_for_another_processs_answer() -> None:
    """``hold`` (with workers: a claim, a SUBACK or an ack waiting for the other workers): the
    turn's output is still written out, but the loop goes on, so the answer is read as soon as
    it comes; once nothing waits, the window applies again from the last rest."""

    async def run() -> None:
        clock = Clock()
        pacer, out, tr, sock = await _paced(clock)
        waiting = [False]
        pacer.hold = lambda: waiting[0]
        out.write(b"a")  # the first turn after a quiet spell: no rest, the window starts
        await _turn()
        waiting[0] = True
        for data in (b"b", b"c"):
            clock.advance(0.001)
            out.write(data)
            await _turn()
            assert _readable(sock).endswith(data)  # written out, not held
        assert clock.sleeps == [] and pacer.rests == 0
        waiting[0] = False
        clock.advance(0.001)
        out.write(b"d")
        await _turn()
        assert clock.sleeps == [pytest.approx(WINDOW - 0.003)]
        tr.close()
        sock.close()

    asyncio.run(run())
