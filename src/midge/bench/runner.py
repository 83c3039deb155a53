"""The coordinator of a run: starts the worker processes, keeps time, reads /proc, sums up.

The coordinator itself sends no MQTT. It spawns the workers (:mod:`midge.bench.worker`), lets them
all connect at once (that span gives connects/s), then subscribe, then hands out one schedule on
the shared monotonic clock: publish from ``t0``, measure over ``[t1, t2)``, stop at ``t2``. At
``t1`` and ``t2`` it samples the CPU time of the broker (``--broker-pid``) and of every worker, and
the broker's resident memory, so CPU per delivery covers exactly the measured window. The workers
report their counts and latency samples after a short drain; :func:`run_bench` returns the whole
run as a JSON-ready dict (its layout is documented in docs/performance.md).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import platform
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from midge import __version__
from midge.bench import procstat
from midge.bench.scenario import Options, plan_workers
from midge.bench.worker import _CONNECTED, _DELIVERED, _SENT, _SLOTS, worker_main

#: ``progress(phase, done, total, detail)``: called a few times a second while the run goes on.
Progress = Callable[[str, float, float, str], None]

#: A paced run "kept up" when it sent at least this share of the offered rate...
KEPT_UP_RATE = 0.98
#: ... and the generator's processes used less than this share of the CPUs they may run on.
KEPT_UP_CPU = 0.90

START_TIMEOUT = 60.0
POLL = 0.1


class BenchError(Exception):
    """The run failed (a worker's error, the broker refused or dropped clients, a timeout)."""


def percentile(ordered: list[int], q: float) -> int:
    """The nearest-rank ``q``-quantile (0 < q <= 1) of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class _Workers:
    """The worker processes and their pipes."""

    def __init__(self, options: Options, epoch_ns: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.plans = plan_workers(options, epoch_ns)
        self.counters: Any = ctx.RawArray("q", _SLOTS * len(self.plans))
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        for plan in self.plans:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main,
                args=(plan, child, self.counters),
                name=f"midge-bench-{plan.index}",
                daemon=True,
            )
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def total(self, slot: int) -> int:
        return sum(self.counters[i * _SLOTS + slot] for i in range(len(self.plans)))

    def send(self, *message: Any) -> None:
        for conn in self.conns:
            conn.send(message)

    def gather(
        self, name: str, timeout: float, tick: Callable[[], None] | None = None
    ) -> list[dict[str, Any]]:
        """Every worker's ``(name, info)`` answer, in worker order; BenchError on an error."""
        answers: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < len(self.conns):
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for the workers ({name})")
            pending = [c for i, c in enumerate(self.conns) if i not in answers]
            for conn in wait(pending, timeout=POLL):
                assert isinstance(conn, Connection)
                index = self.conns.index(conn)
                try:
                    kind, info = conn.recv()
                except (EOFError, OSError):
                    code = self.procs[index].exitcode
                    raise BenchError(f"worker {index} died (exit code {code})") from None
                if kind == "error":
                    raise BenchError(f"worker {index}: {info}")
                if kind != name:
                    raise BenchError(f"worker {index} answered {kind!r}, expected {name!r}")
                answers[index] = info
            if tick is not None:
                tick()
        return [answers[i] for i in range(len(self.conns))]

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("close",))
        deadline = time.monotonic() + 10.0
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
        for conn in self.conns:
            conn.close()


def _now(epoch: int) -> int:
    return time.monotonic_ns() - epoch


def _sleep_until(
    epoch: int, target: int, tick: Callable[[], None], stop: Callable[[], bool] | None = None
) -> None:
    while True:
        left = (target - _now(epoch)) / 1e9
        if left <= 0 or (stop is not None and stop()):
            return
        time.sleep(min(POLL, left))
        tick()


def run_bench(options: Options, progress: Progress | None = None) -> dict[str, Any]:
    """Run one benchmark as ``options`` say; the result is a JSON-ready dict (see module doc)."""
    report: Progress = progress or (lambda *_: None)
    epoch = time.monotonic_ns()
    broker = options.broker_pid
    for pid in (*([broker] if broker is not None else []), *options.more_broker_pids):
        if not os.path.exists(f"/proc/{pid}/stat"):
            raise BenchError(f"--broker-pid {pid}: no such process")
    for pid in options.aux_pids:
        if not os.path.exists(f"/proc/{pid}/stat"):
            raise BenchError(f"--aux-pid {pid}: no such process")
    # The broker and its worker processes (--workers N), summed; a cluster's nodes too.
    # (Not this process's own tree: a broker run by the process that runs the bench, as in the
    # test suite, must not count the generator.)
    brokers = None
    if broker is not None:
        ours = set(procstat.process_tree(os.getpid()))
        brokers = []
        for top in (broker, *options.more_broker_pids):
            brokers += [p for p in procstat.process_tree(top) if p not in ours or p == top]
    rss_start = procstat.tree_memory_kb(brokers)[0] if brokers is not None else None
    workers = _Workers(options, epoch)
    conns_total = options.connections
    try:

        def connecting() -> None:
            report("connect", workers.total(_CONNECTED), conns_total, "")

        workers.gather("ready", START_TIMEOUT)
        before_connect = _cpu(brokers, workers.pids)
        workers.send("connect")
        connect_timeout = START_TIMEOUT + conns_total / 100
        if options.connect_rate > 0:
            connect_timeout += conns_total / options.connect_rate
        connected = workers.gather("connected", connect_timeout, connecting)
        after_connect = _cpu(brokers, workers.pids)
        connecting()
        rss_connected = procstat.tree_memory_kb(brokers)[0] if brokers is not None else None
        workers.send("subscribe")
        subscribed = workers.gather("subscribed", connect_timeout)

        t0 = _now(epoch) + 50_000_000
        t1 = t0 + int(options.warmup * 1e9)
        t2 = t1 + int(options.duration * 1e9)
        workers.send("go", t0, t1, t2)
        last = [_now(epoch), workers.total(_SENT), workers.total(_DELIVERED)]

        def running() -> None:
            now = _now(epoch)
            sent, delivered = workers.total(_SENT), workers.total(_DELIVERED)
            span = max(1, now - last[0]) / 1e9
            detail = (
                f"{(sent - last[1]) / span:,.0f} msg/s sent, "
                f"{(delivered - last[2]) / span:,.0f} deliveries/s"
            )
            last[:] = [now, sent, delivered]
            phase = "warm-up" if now < t1 else "measure"
            report(phase, max(0, now - t0) / 1e9, (t2 - t0) / 1e9, detail)

        _sleep_until(epoch, t1, running)
        aux1 = procstat.CpuSample(list(options.aux_pids))
        cpu1 = _cpu(brokers, workers.pids)
        machine1 = procstat.cpus_busy()
        m1 = _now(epoch)

        # --messages: the window ends early once every message is sent.
        def all_sent() -> bool:
            return bool(options.messages) and workers.total(_SENT) >= options.messages

        _sleep_until(epoch, t2, running, all_sent)
        cpu2 = _cpu(brokers, workers.pids)
        aux2 = procstat.CpuSample(list(options.aux_pids))
        machine2 = procstat.cpus_busy()
        m2 = _now(epoch)
        memory = procstat.tree_memory_kb(brokers) if brokers is not None else None
        report("drain", 1, 1, "")
        results = workers.gather("result", options.drain + START_TIMEOUT)
    finally:
        workers.close()
    out = _summary(
        options,
        workers,
        results,
        connected,
        subscribed,
        (before_connect, after_connect),
        (m2 - m1),
        cpu1,
        cpu2,
        rss_start,
        rss_connected,
        memory,
        procstat.busy_percent(machine1, machine2),
        brokers,
    )
    if options.aux_pids:
        # --aux-pid (a cluster's Redis): its CPU over the same window, per message published.
        aux = (aux2.precise - aux1.precise) / 1e9
        window = out["window_s"]
        sent, delivered = out["sent"]["count"], out["delivered"]["count"]
        out["aux"] = {
            "pids": list(options.aux_pids),
            "cpu_s": round(aux, 5),
            "cpu_percent": round(100 * aux / window, 1) if window > 0 else None,
            "cpu_us_per_message": aux * 1e6 / sent if sent else None,
            "cpu_us_per_delivery": aux * 1e6 / delivered if delivered else None,
        }
    if options.ports:
        out["target"] = f"{options.host}:{','.join(map(str, options.ports))}"
    return out


def _cpu(brokers: list[int] | None, workers: list[int]) -> tuple[procstat.CpuSample | None, Any]:
    return (
        procstat.CpuSample(brokers) if brokers is not None else None,
        procstat.CpuSample(workers),
    )


def _latency(results: list[dict[str, Any]], key: str = "latency_ns") -> dict[str, Any] | None:
    from array import array

    samples: array[int] = array("q")
    for r in results:
        samples.frombytes(r[key])
    if not samples:
        return None
    ordered = sorted(samples)
    return {
        "samples": len(ordered),
        "p50": percentile(ordered, 0.50) / 1000,
        "p75": percentile(ordered, 0.75) / 1000,
        "p90": percentile(ordered, 0.90) / 1000,
        "p95": percentile(ordered, 0.95) / 1000,
        "p99": percentile(ordered, 0.99) / 1000,
        "p999": percentile(ordered, 0.999) / 1000,
        "max": ordered[-1] / 1000,
        "mean": sum(ordered) / len(ordered) / 1000,
    }


def _offline(options: Options, results: list[dict[str, Any]]) -> dict[str, Any]:
    """--offline: what was queued while the subscribers were away, and how it drained."""
    before = sum(r["delivered_before_reconnect"] for r in results)
    starts = [r["reconnect"][0] for r in results if r["reconnect"][0]]
    ends = [r["reconnect"][1] for r in results if r["reconnect"][1]]
    drained = [r["drained_at"] for r in results]
    out: dict[str, Any] = {
        "reconnected": options.reconnect and bool(starts),
        "delivered_while_offline": before,
        "delivered_after_reconnect": sum(r["delivered_total"] for r in results) - before,
        "reconnect_s": round((max(ends) - min(starts)) / 1e9, 4) if starts and ends else None,
        "drain_s": round((max(drained) - min(starts)) / 1e9, 4)
        if starts and all(drained)
        else None,
    }
    return out


def _summary(
    options: Options,
    workers: _Workers,
    results: list[dict[str, Any]],
    connected: list[dict[str, Any]],
    subscribed: list[dict[str, Any]],
    connect_cpu: tuple[
        tuple[procstat.CpuSample | None, procstat.CpuSample],
        tuple[procstat.CpuSample | None, procstat.CpuSample],
    ],
    window_ns: int,
    cpu1: tuple[procstat.CpuSample | None, procstat.CpuSample],
    cpu2: tuple[procstat.CpuSample | None, procstat.CpuSample],
    rss_start: int | None,
    rss_connected: int | None,
    memory: tuple[int, int] | None,
    cpu_busy: list[float],
    brokers: list[int] | None,
) -> dict[str, Any]:
    window = window_ns / 1e9
    sent_window = sum(r["sent_window"] for r in results)
    delivered_window = sum(r["delivered_window"] for r in results)
    sent_total = sum(r["sent_total"] for r in results)
    delivered_total = sum(r["delivered_total"] for r in results)
    expected = sent_total * options.fanout
    conn_span = (max(c["end"] for c in connected) - min(c["start"] for c in connected)) / 1e9
    sub_span = (max(s["end"] for s in subscribed) - min(s["start"] for s in subscribed)) / 1e9
    connections = options.connections
    subscriptions = options.subscribers

    generator_cpu = (cpu2[1].precise - cpu1[1].precise) / 1e9
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = min(cores or 1, len(results))
    gen_share = generator_cpu / window / cores if window > 0 else 0.0
    offered = options.rate if not options.max_mode else None
    sent_rate = sent_window / window if window > 0 else 0.0
    kept_up = gen_share < KEPT_UP_CPU
    if offered and options.publishers:
        kept_up = kept_up and sent_rate >= KEPT_UP_RATE * offered

    out: dict[str, Any] = {
        "tool": f"midge bench {__version__}",
        "scenario": options.scenario,
        "target": f"{options.host}:{options.port}",
        "mqtt_version": options.version,
        "qos": options.qos,
        "payload": options.payload,
        "mode": "max" if options.max_mode else "paced",
        "clients": options.clients,
        "publishers": options.publishers,
        "subscribers": options.subscribers,
        "connections": connections,
        "procs": len(results),
        "warmup_s": options.warmup,
        "window_s": round(window, 4),
        "offered": {
            "publish_rate": offered,
            "delivery_rate": offered * options.fanout if offered else None,
        },
        "sent": {"count": sent_window, "rate": sent_rate, "total": sent_total},
        "delivered": {
            "count": delivered_window,
            "rate": delivered_window / window if window > 0 else 0.0,
            "total": delivered_total,
            "expected_total": expected,
            # --offline --no-reconnect: the messages stay queued, none is due yet.
            "lost": max(0, expected - delivered_total)
            if options.reconnect or not options.offline
            else 0,
            "refused": sum(r["refused"] for r in results),
            "unacked": sum(r["unacked"] for r in results),
            "presumed_lost": sum(r["presumed_lost"] for r in results),
        },
        "latency_us": _latency(results),
        # Publisher send -> PUBACK (QoS 1) / PUBREC (QoS 2), over the acks in the window.
        "ack_latency_us": _latency(results, "ack_latency_ns") if options.qos else None,
        "persistent": options.persistent,
        "offline": _offline(options, results) if options.offline else None,
        "connect": {
            "seconds": round(conn_span, 4),
            "per_second": connections / conn_span if conn_span > 0 else None,
            "subscribe_seconds": round(sub_span, 4),
            "subscribes_per_second": subscriptions / sub_span
            if sub_span > 0 and subscriptions
            else None,
            "rate_offered": options.connect_rate or None,
            # Each handshake, from the TCP connect to the CONNACK.
            "latency_us": _latency(connected),
            "generator_cpu_s": round(
                (connect_cpu[1][1].precise - connect_cpu[0][1].precise) / 1e9, 4
            ),
        },
        "generator": {
            "pids": workers.pids,
            "cores": cores,
            "cpu_s": round(generator_cpu, 4),
            "cpu_percent": round(100 * generator_cpu / window, 1) if window > 0 else None,
            "cpu_us_per_delivery": (
                generator_cpu * 1e6 / delivered_window if delivered_window else None
            ),
            "kept_up": kept_up,
        },
        "broker": None,
        "machine": {
            "python": platform.python_version(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            # Each CPU's busy share over the window, whoever used it: with the broker's and the
            # generator's own CPU this shows how much other work shared their CPUs.
            "cpu_busy_percent": cpu_busy,
            "generator_affinity": sorted(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
        },
    }
    b1, b2 = cpu1[0], cpu2[0]
    if b1 is not None and b2 is not None and memory is not None:
        cpu = (b2.precise - b1.precise) / 1e9
        ticks = (b2.ticks - b1.ticks) / 1e9
        broker: dict[str, Any] = {
            "pid": options.broker_pid,
            "pids": brokers,
            "cpu_s": round(cpu, 5),
            "cpu_s_stat": round(ticks, 3),
            "cpu_percent": round(100 * cpu / window, 1) if window > 0 else None,
            # The same as a share of the whole machine (every CPU), as IBM's figures are given.
            "machine_percent": round(100 * cpu / window / (os.cpu_count() or 1), 2)
            if window > 0
            else None,
            "cpu_us_per_delivery": cpu * 1e6 / delivered_window if delivered_window else None,
            # Per message published in the window (offline: nothing is delivered in it).
            "cpu_us_per_message": cpu * 1e6 / sent_window if sent_window else None,
            "rss_kb": memory[0],
            "hwm_kb": memory[1],
            "rss_kb_start": rss_start,
            "rss_kb_connected": rss_connected,
        }
        c0, c1 = connect_cpu[0][0], connect_cpu[1][0]
        if c0 is not None and c1 is not None:
            connect_s = (c1.precise - c0.precise) / 1e9
            out["connect"]["broker_cpu_s"] = round(connect_s, 4)
            span = out["connect"]["seconds"]
            out["connect"]["broker_cpu_percent"] = (
                round(100 * connect_s / span, 1) if span > 0 else None
            )
            out["connect"]["broker_cpu_us_per_connect"] = connect_s * 1e6 / connections
        if rss_start is not None:
            # The broker's growth from before the first connection to the end of the window,
            # per connection (with messages flowing, their buffers and queues are in it too).
            broker["rss_kb_per_connection"] = (memory[0] - rss_start) / connections
        out["broker"] = broker
    return out
