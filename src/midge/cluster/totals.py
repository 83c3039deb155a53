"""The whole broker's numbers with ``--workers N``: each worker's, summed.

Every worker other than 0 sends worker 0, every :data:`INTERVAL` seconds, a snapshot of what it
counts (:func:`snapshot`: its :class:`~midge.broker.session.Stats` counters and the gauges
``$SYS`` and ``/metrics`` show). Worker 0, which alone publishes ``$SYS`` and serves ``/metrics``,
adds the latest snapshot of each live worker to its own (:func:`add_stats`, :func:`gauges`), so
both show the whole broker; a worker's numbers are at most :data:`INTERVAL` seconds old there.
The retained set is the same on every worker: it is not summed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from midge.broker.session import Stats, session_totals

if TYPE_CHECKING:
    from midge.broker.broker import Broker

#: Seconds between two snapshots of a worker.
INTERVAL = 1.0

#: The counters of Stats (its __slots__: a mypyc-compiled Stats has none to read them from).
STAT_FIELDS = (
    "bytes_received",
    "bytes_sent",
    "clients_expired",
    "connects",
    "disconnects",
    "dropped_expired",
    "dropped_memory",
    "dropped_too_large",
    "held_bytes",
    "limited_connection_rate",
    "limited_connections",
    "limited_publish_rate",
    "limited_subscriptions",
    "limited_topics",
    "messages_dropped",
    "messages_received",
    "messages_sent",
    "no_subscribers",
    "packets_received",
    "packets_sent",
    "publish_bytes_received",
    "publish_bytes_sent",
    "publish_received",
    "publish_refused",
    "queue_dropped",
    "received_by_qos",
    "received_bytes_by_qos",
    "refused",
    "sent_by_qos",
    "sent_bytes_by_qos",
    "sockets",
)

#: The gauges summed over the workers (besides the counters of Stats).
GAUGES = (
    "sessions",
    "connected",
    "held",
    "held_bytes",
    "queued",
    "queued_bytes",
    "inflight",
    "inflight_bytes",
    "subscriptions",
    "shared_subscriptions",
    "memory",
    "memory_peak",
)


def snapshot(broker: Broker, memory: Callable[[], tuple[int, int]] | None) -> dict[str, Any]:
    """What this worker counts, as plain data (marshal)."""
    stats = broker.stats
    counters: dict[str, Any] = {}
    for name in STAT_FIELDS:
        value = getattr(stats, name)
        # Counts by reason code: the codes may be Reason members (IntEnum), which marshal
        # refuses; plain ints on the wire.
        counters[name] = {int(k): n for k, n in value.items()} if isinstance(value, dict) else value
    t = session_totals(broker.sessions)
    tree = broker.tree
    current, peak = memory() if memory is not None else (0, 0)
    return {
        "stats": counters,
        "sessions": len(broker.sessions),
        "connected": t.connected,
        "held": t.held,
        "held_bytes": t.held_bytes,
        "queued": t.queued,
        "queued_bytes": t.queued_bytes,
        "inflight": t.inflight,
        "inflight_bytes": t.inflight_bytes,
        "deepest": t.deepest,
        "subscriptions": tree.count - tree.shared_count,
        "shared_subscriptions": tree.shared_count,
        "memory": current,
        "memory_peak": peak,
    }


def add_stats(stats: Stats, others: list[dict[str, Any]]) -> Stats:
    """``stats`` plus the counters of the ``others`` snapshots, as a new Stats."""
    total = Stats()
    for name in STAT_FIELDS:
        value = getattr(stats, name)
        if isinstance(value, dict):
            summed = dict(value)
            for other in others:
                for key, n in other["stats"].get(name, {}).items():
                    summed[key] = summed.get(key, 0) + n
            setattr(total, name, summed)
        elif isinstance(value, list):
            summed_list = list(value)
            for other in others:
                for i, n in enumerate(other["stats"].get(name, ())):
                    if i < len(summed_list):
                        summed_list[i] += n
            setattr(total, name, summed_list)
        else:
            setattr(total, name, value + sum(o["stats"].get(name, 0) for o in others))
    return total


def gauges(
    broker: Broker, memory: Callable[[], tuple[int, int]] | None, others: list[dict[str, Any]]
) -> dict[str, Any]:
    """This worker's gauges plus the ``others``' (``deepest``: the largest)."""
    return sum_gauges([snapshot(broker, memory), *others])


def sum_gauges(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The gauges of ``snapshots`` summed (``deepest``: the largest): the workers' of one
    broker, or the nodes' of a cluster (midge.cluster.cluster_view)."""
    total = {name: sum(s[name] for s in snapshots) for name in GAUGES}
    total["deepest"] = max((s["deepest"] for s in snapshots), default=0)
    return total
