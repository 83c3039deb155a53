"""Short garbage-collector pauses for a broker holding many messages.

CPython's cyclic collector runs a full (generation 2) collection whenever the objects that
survived into the oldest generation have grown by a quarter since the last one, and a full
collection walks every tracked object. A broker that queues messages for offline sessions holds
a few tracked objects per message (the message, its queue entry), so with 100,000 queued a full
collection pauses the loop for tens of milliseconds, and acknowledgements with it (measured in
docs/performance.md, "Durability": the offline p99 ack was 31-167 ms with every durability).

Most of those objects live long and are never part of a cycle: their memory is reclaimed by
reference counting when the message is delivered. So, as services with large heaps do, we
``gc.freeze()`` what has survived a full collection: it moves to a permanent generation that
later collections skip, and the next full collection walks only what is newer. Frozen objects
are still freed by reference counting. Cyclic garbage among them (rare: a connection whose
objects point at each other) waits for the periodic complete collection, every
:data:`FULL_INTERVAL` seconds, which unfreezes, collects everything once, and freezes again.

Only the broker process does this (``midge broker``, each worker of ``--workers N``); the
broker core does not, so a program embedding it keeps its own GC settings.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

#: Seconds between complete collections (which also reclaim cycles among frozen objects).
FULL_INTERVAL = 600.0


class GcTuner:
    """Freeze the survivors of each full collection; a complete collection now and then."""

    def __init__(self, loop: asyncio.AbstractEventLoop, full_interval: float = FULL_INTERVAL):
        self.loop = loop
        self.full_interval = full_interval
        self.freezes = 0
        self.full_collections = 0
        self._freeze_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._running = False

    def start(self) -> None:
        """Collect and freeze what exists now (the code, a restored store), then keep at it."""
        if self._running:
            return
        self._running = True
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._on_gc)
        self._timer = self.loop.call_later(self.full_interval, self._full)

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Not from inside the collector: freeze on the loop's next turn.
        if phase == "stop" and info.get("generation") == 2 and not self._freeze_pending:
            self._freeze_pending = True
            try:
                self.loop.call_soon_threadsafe(self._freeze)
            except RuntimeError:  # the loop is closed: nothing to keep short any more
                self._freeze_pending = False

    def _freeze(self) -> None:
        self._freeze_pending = False
        if self._running:
            gc.freeze()
            self.freezes += 1

    def _full(self) -> None:
        """Collect everything once, cycles among frozen objects included, and freeze again."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.full_collections += 1
        if self._running:
            self._timer = self.loop.call_later(self.full_interval, self._full)
