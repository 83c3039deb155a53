"""Time for the broker core: the one place it learns what time it is.

The core never reads a clock itself. It is given a :class:`Scheduler`: timers (``call_later``,
``call_soon``) and two readings, ``time()`` (monotonic seconds: keep-alive, rate limits, the
timers' own clock) and ``wall()`` (seconds since the epoch: message expiry, delayed wills and
session expiry, which must survive a restart and so are stored as wall-clock times).

In production :class:`midge.transport.clock.LoopClock` adapts the asyncio loop (``midge.server``
builds it); tests may pass a manual clock implementing the same four methods and advance it by
hand (tests/memory.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Cancellable(Protocol):
    """What ``call_later`` / ``call_soon`` return (an ``asyncio.Handle`` is one)."""

    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What the core needs of time: two timers and two clock readings.

    - ``call_later(delay, callback, *args)``: run ``callback(*args)`` ``delay`` seconds from now
      (by ``time()``); returns a handle with ``cancel()``.
    - ``call_soon(callback, *args)``: run it after the current callback (this loop turn).
    - ``time()``: monotonic seconds, the timers' clock.
    - ``wall()``: wall-clock seconds since the epoch (the system clock in production).
    """

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Any: ...

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Any: ...

    def time(self) -> float: ...

    def wall(self) -> float: ...
