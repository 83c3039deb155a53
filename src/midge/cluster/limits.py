"""Connection limits for the whole broker with ``--workers N``: one count, not one per worker.

``global_max_connections``, each listener's ``max_connections`` and ``max_connection_rate`` (a
token bucket per client address) hold for all the workers together. The parent makes a
:class:`SharedLimits` before it forks: its numbers live in a shared memory file (``memfd``) that
every worker maps, and a POSIX record lock on that file (``lockf``) makes each decision atomic
across the processes. A record lock is the process's: the kernel drops it if its worker dies,
so a killed worker never leaves the others waiting.

Each worker counts its own connections in a row of its own; a decision sums the rows. When a
worker dies the parent clears its row (its connections are gone with it).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from midge.codec.reasons import Reason
from midge.transport.accept import ConnectionLimits

if TYPE_CHECKING:
    from midge.transport.accept import ListenerState

#: Token buckets of max_connection_rate: slots of (address hash, tokens, time), looked up by
#: open addressing within PROBES slots.
SLOTS = 4096
PROBES = 16


def _address_key(address: str) -> int:
    key = int.from_bytes(hashlib.blake2b(address.encode(), digest_size=8).digest(), "big") >> 1
    return key or 1  # 0 marks a free slot


class SharedLimits(ConnectionLimits):
    def __init__(self, max_total: int, rate: int, listeners: int, workers: int) -> None:
        super().__init__(max_total, rate)
        self.listeners = listeners
        self.workers = workers
        #: This process's row (set in each worker by :meth:`for_worker`).
        self.wid = 0
        self.row = listeners + 1  # per worker: its total, then one count per listener
        counts = workers * self.row * 8
        size = counts + SLOTS * 24
        self.fd = os.memfd_create("midge-limits")
        os.ftruncate(self.fd, size)
        self._map = mmap.mmap(self.fd, size)
        view = memoryview(self._map)
        self.counts = view[:counts].cast("q")
        self.keys = view[counts : counts + SLOTS * 8].cast("q")
        self.tokens = view[counts + SLOTS * 8 : counts + SLOTS * 16].cast("d")
        self.stamps = view[counts + SLOTS * 16 :].cast("d")

    def for_worker(self, wid: int) -> None:
        self.wid = wid

    def _lock(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def _sum(self, column: int) -> int:
        counts = self.counts
        row = self.row
        return sum(counts[w * row + column] for w in range(self.workers))

    def take(self, listening: ListenerState, address: Callable[[], str]) -> int:
        limit = listening.config.max_connections
        column = 1 + listening.index
        self._lock()
        try:
            if (limit >= 0 and self._sum(column) >= limit) or (
                self.max_total >= 0 and self._sum(0) >= self.max_total
            ):
                return Reason.QUOTA_EXCEEDED
            if self.rate and not self._admit(address()):
                return Reason.CONNECTION_RATE_EXCEEDED
            base = self.wid * self.row
            self.counts[base] += 1
            self.counts[base + column] += 1
        finally:
            self._unlock()
        listening.active += 1
        self.active += 1
        return 0

    def release(self, listening: ListenerState) -> None:
        listening.active -= 1
        self.active -= 1
        base = self.wid * self.row
        self._lock()
        try:
            self.counts[base] -= 1
            self.counts[base + 1 + listening.index] -= 1
        finally:
            self._unlock()

    def _admit(self, address: str) -> bool:
        """max_connection_rate's bucket for ``address``, shared by the workers (under the lock):
        a second's worth of tokens, refilled at ``rate`` per second (CLOCK_MONOTONIC is the
        same clock in every process)."""
        key = _address_key(address)
        now = time.monotonic()
        rate = float(self.rate)
        keys, tokens, stamps = self.keys, self.tokens, self.stamps
        start = key % SLOTS
        slot = -1
        oldest = -1
        for k in range(PROBES):
            i = (start + k) % SLOTS
            if keys[i] == key:
                slot = i
                break
            if keys[i] == 0 or stamps[i] + 1.0 <= now:
                # free, or refilled (a full bucket is the same as none): reusable
                if slot < 0:
                    slot = i
            elif oldest < 0 or stamps[i] < stamps[oldest]:
                oldest = i
        if slot < 0:
            slot = oldest  # every probed bucket is in use: the least recent goes
        if keys[slot] != key:
            keys[slot] = key
            tokens[slot] = rate
            stamps[slot] = now
        left = min(rate, tokens[slot] + (now - stamps[slot]) * rate)
        stamps[slot] = now
        if left < 1:
            tokens[slot] = left
            return False
        tokens[slot] = left - 1
        return True

    def worker_gone(self, wid: int) -> None:
        """The parent: worker ``wid`` died; its connections went with it."""
        self._lock()
        try:
            base = wid * self.row
            for column in range(self.row):
                self.counts[base + column] = 0
        finally:
            self._unlock()
