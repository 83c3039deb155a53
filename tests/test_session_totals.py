"""session_totals: what a broker's sessions hold, summed for /metrics, $SYS, the dashboard and
the numbers each worker sends worker 0 (one walk, compiled with the hot modules)."""

from __future__ import annotations

from midge.broker.session import session_totals
from midge.config import Config
from tests.memory import MemoryBroker
from tests.rawclient import RawClient


def test_session_totals_sum_queues_and_flights() -> None:
    broker = MemoryBroker(Config(max_inflight_messages=2))
    away = RawClient(broker.link())
    away.connect("away", clean_start=False)
    away.subscribe("t", 1)
    away.disconnect()
    slow = RawClient(broker.link())  # connected, never acknowledges
    slow.connect("slow")
    slow.subscribe("t", 1)
    pub = RawClient(broker.link())
    pub.connect("pub")
    for i in range(5):
        pub.publish("t", bytes(100 + i), qos=1)
    sizes = sum(100 + i for i in range(5))
    t = session_totals(broker.broker.sessions)
    assert t.connected == 2
    # "away": all 5 queued; "slow": 2 in flight (the window), 3 queued behind them.
    assert (t.inflight, t.inflight_bytes) == (2, 100 + 101)
    assert (t.queued, t.queued_bytes) == (5 + 3, sizes + sizes - 201)
    assert t.deepest == 5
    assert (t.held, t.held_bytes) == (10, 2 * sizes)
