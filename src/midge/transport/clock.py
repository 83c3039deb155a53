"""The production clock of the broker core: an asyncio loop's timers and clocks
(:class:`midge.broker.clock.Scheduler`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class LoopClock:
    """The production :class:`Scheduler`: an asyncio loop's timers and clock, and the system's
    wall clock."""

    __slots__ = ("loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any
    ) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback, *args)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> asyncio.Handle:
        return self.loop.call_soon(callback, *args)

    def time(self) -> float:
        return self.loop.time()

    def wall(self) -> float:
        return time.time()
