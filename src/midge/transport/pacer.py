"""The batch window (``batch_window``): while busy, a broker process handles its sockets at most
once per window, and sleeps in between.

A process woken for every packet pays for every wake-up: the poll, the scheduler's switch, caches
that other processes filled meanwhile. At a steady load that is a large part of what a delivery
costs once several processes share few CPUs (docs/workers.md). With a window, the loop rests
after each turn that wrote something, until ``window`` seconds have passed since the end of its
last rest, so that the kernel gathers what arrives meanwhile and the next turn handles it all at
once: fewer wake-ups per message, for a latency of up to a window per process a message passes
through.

What it keeps:
- **What a turn made is not held back by its rest.** The rest first writes out what the turn
  made: the clients' output (:class:`~midge.transport.writer.TurnWrites`) and the frames
  for the other workers (the mesh links), so a message never waits in the broker's buffers.
- **An idle broker answers at once.** The loop rests only after a turn that wrote, and never longer
  than what is left of the window since its last rest: the first packet after a quiet spell is
  handled, and answered, as soon as it arrives.
- **Throughput.** A turn that took a window or longer is followed by no rest at all: a saturated
  broker never sleeps.

- **Round trips between processes.** A process that waits for another's answer (``hold``: with
  ``--workers``, a CONNECT's claim, a SUBACK's or an ack's confirmation; and in any process an
  authentication or authorization decision still to come from an auth plugin, LDAP or HTTP)
  does not rest, so the answer is read as soon as it comes; only the other process's window is
  in the way.

What it costs: timers, signals and the other processes' frames wait too, up to a window each,
so with ``--workers`` each CONNECT and SUBSCRIBE (a round trip to every other worker) takes up to
a window more. Default 0: no window, every packet handled as it arrives.

Every broker process has its pacer, a window of 0 included (it then never rests), so that SIGHUP
can set a new window (midge.reload); ``/metrics`` shows each process's window, rests and time
slept (midge.observe.metrics).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Pacer:
    """A process's batch window (see the module). ``arm`` is called when a turn writes; the rest
    runs once per such turn, after the callbacks already queued. ``clock`` and ``sleep`` are the
    monotonic clock and the blocking sleep (a test gives its own)."""

    __slots__ = (
        "armed",
        "clock",
        "flushers",
        "hold",
        "last",
        "loop",
        "rests",
        "sleep",
        "slept",
        "window",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.loop = loop
        self.window = window
        self.clock = clock
        self.sleep = sleep
        #: What to write out before resting: each holder of output (TurnWrites, mesh links).
        self.flushers: list[Callable[[], None]] = []
        self.armed = False
        #: Whether the process waits for another process's answer: no rest then (see the
        #: module); None: it never does.
        self.hold: Callable[[], bool] | None = None
        #: When the last rest ended (never: long enough ago that the first turn does not rest).
        self.last = clock() - window
        #: Rests taken, and the seconds slept in them (for tests and the curious).
        self.rests = 0
        self.slept = 0.0

    def watch(self, flush: Callable[[], None]) -> None:
        """``flush`` writes out output that a rest must not hold back."""
        self.flushers.append(flush)

    def unwatch(self, flush: Callable[[], None]) -> None:
        if flush in self.flushers:
            self.flushers.remove(flush)

    def arm(self) -> None:
        """This turn wrote: rest after it (once, however many times this is called). No
        window (0): nothing to do."""
        if not self.armed and self.window > 0:
            self.armed = True
            self.loop.call_soon(self.rest)

    def rest(self) -> None:
        self.armed = False
        for flush in tuple(self.flushers):
            flush()
        hold = self.hold
        if hold is not None and hold():
            return
        wait = self.last + self.window - self.clock()
        if wait > 0:
            self.sleep(wait)
            self.rests += 1
            self.slept += wait
        self.last = self.clock()
