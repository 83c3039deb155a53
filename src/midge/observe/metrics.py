"""``/metrics``: the broker's counters in the Prometheus text format (``prometheus_client``).

:class:`BrokerCollector` is a custom collector: it keeps no metric objects of its own and reads,
at scrape time only, what the broker already counts as plain integers (:class:`~midge.broker.
session.Stats`, the auth chain's failures, each listener's connections, the SQLite store's
sampled commit latency). Queue depths, in-flight counts and the like are summed over the sessions
when Prometheus asks. So metrics cost the running broker nothing between scrapes: no label
lookups, no locks and no string formatting on the message path.

Names follow Prometheus conventions: ``midge_..._total`` for counters, base units (bytes,
seconds). docs/operations.md lists them; ``src/midge/data/grafana.json`` charts them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from midge import __version__
from midge.broker.session import session_totals
from midge.broker.systree import LOADS, WINDOWS
from midge.codec.reasons import Reason

if TYPE_CHECKING:
    from midge.broker.session import Stats
    from midge.cluster.cluster_view import ClusterView
    from midge.server import Server
    from midge.transport.accept import ListenerState

#: PUBLISH refusals (Stats.publish_refused) by reason code, as a drop reason label. 0x97 (over
#: memory_limit) is left out: Stats.dropped_memory counts it for v3 clients too.
REFUSED_DROPS = {
    Reason.NOT_AUTHORIZED: "not_authorized",
    Reason.IMPLEMENTATION_SPECIFIC_ERROR: "message_size_limit",
    Reason.TOPIC_NAME_INVALID: "topic_invalid",
}


def reason_name(code: int) -> str:
    """``0x87`` -> ``not_authorized`` (the MQTT 5 name, lower case); unknown codes in hex."""
    try:
        return Reason(code).name.lower()
    except ValueError:
        return f"0x{code:02x}"


def listener_name(state: ListenerState) -> str:
    """A listener's label: its port (the one bound, for port 0), or the Unix socket's path."""
    config = state.config
    if config.unix_socket_path:
        return config.unix_socket_path
    if state.server is not None and state.server.sockets:
        name = state.server.sockets[0].getsockname()
        if isinstance(name, tuple):
            return str(name[1])
    return str(config.port)


def drops(stats: Stats) -> list[tuple[str, int]]:
    """Messages not delivered or not routed, by reason (``midge_dropped_messages_total``)."""
    refused_publish = dict(stats.publish_refused)
    other = sum(n for code, n in refused_publish.items() if code not in REFUSED_DROPS)
    other -= refused_publish.get(Reason.QUOTA_EXCEEDED, 0)
    return [
        ("queue_full", stats.queue_dropped),
        ("expired", stats.dropped_expired),
        ("too_large", stats.dropped_too_large),
        ("memory_limit", stats.dropped_memory),
        *((name, refused_publish.get(code, 0)) for code, name in REFUSED_DROPS.items()),
        ("no_subscribers", stats.no_subscribers),
        ("other", max(other, 0)),
    ]


def dropped_total(stats: Stats) -> int:
    """All of :func:`drops` (the dashboard's chart)."""
    return sum(n for _, n in drops(stats))


class BrokerCollector(Collector):
    """Reads ``server``'s broker at each scrape (see the module)."""

    def __init__(self, server: Server, memory: Callable[[], tuple[int, int]] | None = None) -> None:
        self.server = server
        self.memory = memory
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        server = self.server
        broker = server.broker
        info = GaugeMetricFamily("midge_info", "The broker's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "midge_uptime_seconds", "Seconds since the broker started.", time.time() - self.started
        )
        if broker is None:
            return
        stats = broker.stats
        # With --workers (served by worker 0): the other workers' latest numbers are added.
        others = server.peer_snapshots() if server.peer_snapshots is not None else []
        if others:
            from midge.cluster.totals import add_stats

            stats = add_stats(stats, others)

        # -- clients and connections
        t = session_totals(broker.sessions)
        connected = t.connected
        queued, queued_bytes, deepest = t.queued, t.queued_bytes, t.deepest
        inflight, inflight_bytes = t.inflight, t.inflight_bytes
        sessions = len(broker.sessions)
        for peer in others:
            connected += peer["connected"]
            sessions += peer["sessions"]
            queued += peer["queued"]
            queued_bytes += peer["queued_bytes"]
            inflight += peer["inflight"]
            inflight_bytes += peer["inflight_bytes"]
            deepest = max(deepest, peer["deepest"])
        yield GaugeMetricFamily("midge_clients_connected", "Clients connected now.", connected)
        yield GaugeMetricFamily("midge_sessions", "Sessions held (connected and not).", sessions)
        yield CounterMetricFamily(
            "midge_sockets_accepted_total", "Network connections accepted.", stats.sockets
        )
        yield CounterMetricFamily(
            "midge_connects_total", "CONNECT packets handled.", stats.connects
        )
        refusals = CounterMetricFamily(
            "midge_refusals_total",
            "Connections refused at CONNECT and closed by the broker, by MQTT 5 reason code "
            "(v3 clients by the reason their close stands for).",
            labels=["reason"],
        )
        for code, n in sorted(stats.refused.items()):
            refusals.add_metric([reason_name(code)], n)
        yield refusals
        disconnects = CounterMetricFamily(
            "midge_client_disconnects_total",
            "DISCONNECT packets from clients, by reason code (v3: normal_disconnection).",
            labels=["reason"],
        )
        for code, n in sorted(stats.disconnects.items()):
            disconnects.add_metric(["normal_disconnection" if code == 0 else reason_name(code)], n)
        yield disconnects
        yield CounterMetricFamily(
            "midge_sessions_expired_total", "Sessions ended by their expiry.", stats.clients_expired
        )

        # -- messages and bytes
        for direction, counts, sizes, what in (
            ("received", stats.received_by_qos, stats.received_bytes_by_qos, "read from"),
            ("sent", stats.sent_by_qos, stats.sent_bytes_by_qos, "sent to"),
        ):
            messages = CounterMetricFamily(
                f"midge_publish_{direction}_total",
                f"PUBLISH packets {what} clients, by QoS.",
                labels=["qos"],
            )
            payload = CounterMetricFamily(
                f"midge_publish_{direction}_bytes_total",
                f"Payload bytes of the PUBLISH packets {what} clients, by QoS.",
                labels=["qos"],
            )
            for qos in range(3):
                messages.add_metric([str(qos)], counts[qos])
                payload.add_metric([str(qos)], sizes[qos])
            yield messages
            yield payload
        yield CounterMetricFamily(
            "midge_messages_routed_total",
            "Messages routed: PUBLISH accepted from clients, wills, $SYS updates.",
            stats.messages_received,
        )
        yield CounterMetricFamily(
            "midge_packets_received_total", "MQTT packets read.", stats.packets_received
        )
        yield CounterMetricFamily(
            "midge_packets_sent_total", "MQTT packets sent.", stats.packets_sent
        )
        yield CounterMetricFamily(
            "midge_received_bytes_total", "Bytes of MQTT packets read.", stats.bytes_received
        )
        yield CounterMetricFamily(
            "midge_sent_bytes_total", "Bytes of MQTT packets sent.", stats.bytes_sent
        )
        dropped = CounterMetricFamily(
            "midge_dropped_messages_total",
            "Messages not delivered or not routed, by reason.",
            labels=["reason"],
        )
        for label, n in drops(stats):
            dropped.add_metric([label], n)
        yield dropped

        # -- what the broker holds
        yield GaugeMetricFamily(
            "midge_queued_messages",
            "Messages queued for sessions (offline, behind the in-flight window, or waiting "
            "for a slow socket).",
            queued,
        )
        yield GaugeMetricFamily("midge_queued_bytes", "Payload bytes of those.", queued_bytes)
        yield GaugeMetricFamily(
            "midge_queue_depth_max", "The longest session queue, in messages.", deepest
        )
        yield GaugeMetricFamily(
            "midge_inflight_messages", "Outgoing QoS 1/2 messages not yet acknowledged.", inflight
        )
        yield GaugeMetricFamily("midge_inflight_bytes", "Payload bytes of those.", inflight_bytes)
        tree = broker.tree
        yield GaugeMetricFamily(
            "midge_subscriptions",
            "Subscriptions (not shared).",
            tree.count - tree.shared_count + sum(o["subscriptions"] for o in others),
        )
        yield GaugeMetricFamily(
            "midge_shared_subscriptions",
            "Shared subscriptions.",
            tree.shared_count + sum(o["shared_subscriptions"] for o in others),
        )
        yield GaugeMetricFamily(
            "midge_retained_messages", "Retained messages.", broker.retained.count
        )
        yield GaugeMetricFamily(
            "midge_retained_bytes", "Payload bytes of those.", broker.retained.payload_bytes
        )
        yield GaugeMetricFamily(
            "midge_memory_held_bytes",
            "Payload bytes memory_limit counts (queued, in flight, retained).",
            broker.memory_used(),
        )
        if self.memory is not None:
            current, peak = self.memory()
            current += sum(o["memory"] for o in others)
            peak += sum(o["memory_peak"] for o in others)
            yield GaugeMetricFamily(
                "midge_resident_memory_bytes", "The process's resident memory.", current
            )
            yield GaugeMetricFamily(
                "midge_resident_memory_max_bytes", "Its peak resident memory.", peak
            )

        # -- limits and authentication
        limited = CounterMetricFamily(
            "midge_limited_total", "What the limits refused, by limit.", labels=["limit"]
        )
        for label, n in (
            ("max_connections", stats.limited_connections),
            ("max_connection_rate", stats.limited_connection_rate),
            ("max_publish_rate", stats.limited_publish_rate),
            ("max_subscriptions", stats.limited_subscriptions),
            ("max_topic", stats.limited_topics),
        ):
            limited.add_metric([label], n)
        yield limited
        auth = CounterMetricFamily(
            "midge_auth_failures_total",
            "CONNECTs (and MQTT 5 authentication exchanges) a backend refused, by backend.",
            labels=["backend"],
        )
        failures = broker.authenticator.failures
        for name in broker.authenticator.backend_names:
            auth.add_metric([name], failures.get(name, 0))
        yield auth

        # -- listeners
        sockets = GaugeMetricFamily(
            "midge_listener_connections", "Open connections, by listener.", labels=["listener"]
        )
        accepted = CounterMetricFamily(
            "midge_listener_accepted_total",
            "Connections accepted, by listener.",
            labels=["listener"],
        )
        for state in server.listeners:
            name = listener_name(state)
            sockets.add_metric([name], state.active)
            accepted.add_metric([name], state.accepted)
        yield sockets
        yield accepted

        # -- the batch window (``batch_window``, midge.transport.pacer), by process: this one
        # (worker 0 with --workers) and the other workers
        pacer = server.pacer
        windows = [(0, pacer.window, pacer.rests, pacer.slept)] if pacer is not None else []
        windows += [tuple(o["pacer"]) for o in others if "pacer" in o]
        if windows:
            seconds_family = GaugeMetricFamily(
                "midge_batch_window_seconds",
                "The batch window (batch_window; 0: none), by broker process (worker).",
                labels=["worker"],
            )
            rests_family = CounterMetricFamily(
                "midge_batch_window_rests_total",
                "Times the process slept between busy turns (batch_window).",
                labels=["worker"],
            )
            slept_family = CounterMetricFamily(
                "midge_batch_window_slept_seconds_total",
                "Seconds it slept in them.",
                labels=["worker"],
            )
            for wid, seconds, n, total in sorted(windows):
                seconds_family.add_metric([str(wid)], seconds)
                rests_family.add_metric([str(wid)], n)
                slept_family.add_metric([str(wid)], total)
            yield seconds_family
            yield rests_family
            yield slept_family

        # -- $SYS load averages
        systree = server.sys_tree
        if systree is not None:
            load = GaugeMetricFamily(
                "midge_load_per_minute",
                "$SYS/broker/load: the moving average of a counter's per-minute rate.",
                labels=["counter", "window"],
            )
            k = 0
            for window, _ in WINDOWS:
                for name, _counter in LOADS:
                    load.add_metric([name, window], systree.loads[k])
                    k += 1
            yield load

        # -- the store
        store = broker.durable_store
        buckets = getattr(store, "commit_buckets", None)
        if store is not None and buckets is not None:
            from midge.store.sqlite import COMMIT_BUCKETS, SqliteStore

            assert isinstance(store, SqliteStore)
            cumulative = 0
            points: list[tuple[str, float]] = []
            for bound, n in zip((*COMMIT_BUCKETS, float("inf")), buckets, strict=True):
                cumulative += n
                points.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            yield HistogramMetricFamily(
                "midge_store_commit_seconds",
                "Time of one store commit (one batch in 8 is timed).",
                buckets=points,
                sum_value=store.commit_seconds,
            )
            size = 0
            for suffix in ("", "-wal"):
                with contextlib.suppress(OSError):
                    size += os.path.getsize(store.path + suffix)
            yield GaugeMetricFamily(
                "midge_store_size_bytes", "The database's size on disk (with its WAL).", size
            )
        cluster = self.server.cluster
        if cluster is not None:
            yield GaugeMetricFamily(
                "midge_cluster_redis_up",
                "1 while the cluster's Redis answers; 0: degraded (docs/cluster.md).",
                1 if cluster.healthy else 0,
            )
            yield GaugeMetricFamily(
                "midge_cluster_nodes",
                "Live nodes of the cluster, this one included.",
                len(cluster.nodes) + 1,
            )
            view = self.server.cluster_view
            if view is not None:
                yield from cluster_families(view)


def cluster_families(view: ClusterView) -> Iterator[Metric]:
    """The cluster's figures (midge.cluster.cluster_view.FIGURES): ``midge_cluster_NAME``, the
    sum over the nodes shown, and ``midge_cluster_node_NAME{node="ID"}``, each node's (from
    its latest snapshot in Redis; this node's now)."""
    total, mine, missing = view.summary()
    yield GaugeMetricFamily(
        "midge_cluster_nodes_shown",
        "Nodes whose figures the midge_cluster_ sums include (live nodes with a recent snapshot).",
        len(mine),
    )
    yield GaugeMetricFamily(
        "midge_cluster_nodes_missing",
        "Live nodes without a recent snapshot in Redis (left out of the sums).",
        len(missing),
    )
    for figure in view.table:
        kind = CounterMetricFamily if figure.counter else GaugeMetricFamily
        name = figure.metric.removesuffix("_total") if figure.counter else figure.metric
        yield kind(f"midge_cluster_{name}", f"{figure.help} The cluster's sum.", total[figure.key])
        per_node = kind(
            f"midge_cluster_node_{name}", f"{figure.help} Each node's.", labels=["node"]
        )
        for node, values in mine.items():
            per_node.add_metric([node], values[figure.key])
        yield per_node
