"""The production clock of the broker core: an asyncio loop's timers and clocks
(:class:`midge.broker.clock.Scheduler`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopClock:
    """The production :class:`~midge.broker.clock.Scheduler`: an asyncio loop's timers and
    monotonic clock, and the system's wall clock."""

    __slots__ = ("call_later", "call_soon", "loop", "time", "wall")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # The loop's own bound methods, not forwarding methods: ``time()`` is read on every
        # read from a socket, and a forwarding frame there costs measurably.
        self.call_later: Callable[..., asyncio.TimerHandle] = loop.call_later
        self.call_soon: Callable[..., asyncio.Handle] = loop.call_soon
        self.time: Callable[[], float] = loop.time
        # Read on every QoS 1/2 acknowledgement (the session's queue may move then).
        self.wall: Callable[[], float] = time.time
