"""The broker process's garbage-collector tuning (midge.gctune): survivors of a full collection
are frozen, a complete collection runs on its interval, and stop() puts everything back."""

from __future__ import annotations

import asyncio
import gc
import weakref

from midge.gctune import GcTuner


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_freezes_after_full_collections_and_collects_cycles_on_its_interval() -> None:
    async def go() -> None:
        tuner = GcTuner(asyncio.get_running_loop(), full_interval=0.05)
        tuner.start()
        try:
            assert gc.get_freeze_count() > 0  # what existed at start
            assert tuner._on_gc in gc.callbacks
            frozen = gc.get_freeze_count()
            keep = [Cycle() for _ in range(1000)]
            probe = weakref.ref(keep[0])
            gc.collect()  # a full collection: its survivors are frozen on the next turn
            await asyncio.sleep(0)
            assert tuner.freezes >= 1 and gc.get_freeze_count() >= frozen + 1000
            # Cycles that became garbage after they were frozen: an ordinary collection skips
            # them, the complete collection on the interval reclaims them.
            del keep
            gc.collect()
            assert probe() is not None
            await asyncio.sleep(0.2)
            assert tuner.full_collections >= 1
            assert probe() is None
        finally:
            tuner.stop()
        assert gc.get_freeze_count() == 0
        assert tuner._on_gc not in gc.callbacks

    gc.collect()
    asyncio.run(go())
