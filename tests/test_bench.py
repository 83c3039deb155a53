"""``midge bench`` smoke tests: tiny runs against a real midge, checking that it delivers and
reports sane JSON. No assertion here is about speed (the benchmark itself is ``make bench``).

The broker is the in-process ``broker`` fixture (a thread of this test process, so
``--broker-pid`` is our own pid); ``midge bench`` runs as a real process with its worker processes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from array import array
from collections.abc import Iterator
from typing import Any

import pytest

from midge.bench.runner import percentile
from midge.bench.scenario import Options, build_clients, plan_workers
from midge.bench.wire import PublishTemplate, Reader
from midge.bench.worker import loopback_sources
from midge.codec import encode
from midge.codec.packets import Pubrel
from tests.conftest import RunningBroker
from tests.differential.harness import mosquitto, needs_mosquitto
from tests.procbroker import free_port


@pytest.fixture
def bench_run() -> Iterator[Any]:
    """benchmarks/run.py (``make bench``) loaded as a module, for the tests of its rows."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("midge_bench_run", path)
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    sys.modules["midge_bench_run"] = run
    try:
        spec.loader.exec_module(run)
        yield run
    finally:
        del sys.modules["midge_bench_run"]


def bench(broker_port: int, *args: str, timeout: float = 50.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "midge", "bench", *args, "--port", str(broker_port), "--quiet"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def bench_json(broker: RunningBroker, *args: str) -> dict[str, Any]:
    quick = ("--warmup", "0.2", "--duration", "0.6", "--drain", "2", "--json")
    done = bench(broker.port, *args, *quick, "--broker-pid", str(os.getpid()))
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assert_delivered_everything(r: dict[str, Any], fanout: int = 1) -> None:
    delivered, sent = r["delivered"], r["sent"]
    assert sent["total"] > 0 and delivered["count"] > 0
    assert delivered["total"] == sent["total"] * fanout == delivered["expected_total"]
    assert delivered["lost"] == 0 and delivered["refused"] == 0 and delivered["unacked"] == 0
    lat = r["latency_us"]
    assert lat["samples"] == delivered["count"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    b = r["broker"]
    assert b["pid"] == os.getpid() and b["rss_kb"] > 0 and b["cpu_s"] >= 0
    assert b["cpu_us_per_delivery"] is not None
    assert r["generator"]["cpu_s"] >= 0 and r["generator"]["pids"]


def test_fanin_qos0_paced(broker: RunningBroker) -> None:
    r = bench_json(broker, "fanin", "-n", "3", "--rate", "600")
    assert (r["scenario"], r["mode"], r["qos"], r["publishers"], r["subscribers"]) == (
        "fanin",
        "paced",
        0,
        3,
        1,
    )
    assert r["offered"] == {"publish_rate": 600, "delivery_rate": 600}
    assert_delivered_everything(r)


def test_fanout_qos1(broker: RunningBroker) -> None:
    r = bench_json(broker, "fanout", "-n", "3", "--qos", "1", "--rate", "200")
    assert r["offered"]["delivery_rate"] == 600
    assert_delivered_everything(r, fanout=3)


def test_pairs_qos2_mqtt5_two_processes(broker: RunningBroker) -> None:
    r = bench_json(
        broker, "pairs", "-n", "2", "--qos", "2", "--rate", "200", "-V", "5", "--procs", "2"
    )
    assert r["procs"] == 2 and len(r["generator"]["pids"]) == 2
    assert_delivered_everything(r)


def test_max_mode(broker: RunningBroker) -> None:
    r = bench_json(broker, "fanin", "-n", "2", "--rate", "max", "--window", "200")
    assert r["mode"] == "max" and r["offered"]["publish_rate"] is None
    assert r["delivered"]["count"] > 0 and r["delivered"]["lost"] == 0


def test_conns_reports_connects_and_memory(broker: RunningBroker) -> None:
    r = bench_json(broker, "conns", "-n", "40")
    assert r["connections"] == 40 and r["sent"]["total"] == 0
    assert r["connect"]["per_second"] > 0 and r["connect"]["subscribes_per_second"] > 0
    assert "rss_kb_per_connection" in r["broker"]


def test_text_report(broker: RunningBroker) -> None:
    done = bench(broker.port, "fanin", "-n", "2", "--rate", "100", "-w", "0", "-d", "0.3")
    assert done.returncode == 0, done.stderr
    assert "delivered/s" in done.stdout and "generator kept up" in done.stdout


def test_no_broker_is_an_error() -> None:
    done = bench(free_port(), "fanin", "-n", "1", "-w", "0", "-d", "0.2")
    assert done.returncode == 1
    assert "midge bench: error:" in done.stderr and "cannot connect" in done.stderr


def test_bad_arguments() -> None:
    done = bench(free_port(), "fanin", "--payload", "4")
    assert done.returncode == 2 and "--payload" in done.stderr
    done = bench(free_port(), "nosuch")
    assert done.returncode == 2
    for args in (["fanin", "--ports", "1883,1884"], ["pairs"]):  # no pairs / one broker
        done = bench(free_port(), *args, "--same-node")
        assert done.returncode == 2 and "--same-node keeps each pair" in done.stderr


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_reader_any_split(version: int, qos: int) -> None:
    """The one-pass reader gives the same counts, latencies and acks however the stream is cut."""
    template = PublishTemplate("a/b", 300, qos, version)  # 300 B: a two-byte Remaining Length
    packets, _ = template.batch(3, 1000, 65534)  # packet ids 65534, 65535, 1
    stream = bytes(packets) + encode(Pubrel(7), version) + b"\x40\x02\x00\x09"  # PUBREL, PUBACK
    for cut in range(1, len(stream)):
        reader = Reader(version)
        reader.lat = array("q")
        out = reader.feed(stream[:cut], 1500) + reader.feed(stream[cut:], 1500)
        assert reader.delivered == 3 and list(reader.lat) == [500, 500, 500]
        assert reader.completed == 1 and reader.rest == b""
        acks = {0: b"", 1: b"\x40\x02", 2: b"\x50\x02"}[qos]
        expected = b"".join(acks + pid for pid in (b"\xff\xfe", b"\xff\xff", b"\x00\x01") if acks)
        assert out == expected + b"\x70\x02\x00\x07"


def test_loopback_sources() -> None:
    sources = loopback_sources("127.0.0.1", 300)
    assert len(set(sources)) == 300
    assert all(ipaddress.ip_address(s).is_loopback for s in sources)
    assert loopback_sources("localhost", 2) and not loopback_sources("127.0.0.1", 0)
    assert loopback_sources("::1", 4) == [] and loopback_sources("10.0.0.1", 4) == []
    assert loopback_sources("broker.example", 4) == []


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 1001))
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (
        500,
        990,
        1000,
    )
    assert percentile([7], 0.999) == 7


def test_clients_are_dealt_over_workers() -> None:
    options = Options(scenario="conns", clients=19_000, procs=1)
    assert options.worker_count == 2  # no process may hold 19,000 sockets here
    plans = plan_workers(options, 0)
    assert [len(p.clients) for p in plans] == [9_500, 9_500]
    fanin = build_clients(Options(scenario="fanin", clients=4, rate=1000, prefix="bench/x"))
    assert fanin[0].subscribe == "bench/x/fanin/+" and fanin[0].publish is None
    assert [c.publish for c in fanin[1:]] == [f"bench/x/fanin/{i}" for i in range(4)]
    assert {c.rate for c in fanin[1:]} == {250.0}
    fanout = Options(scenario="fanout", clients=50, rate=1000)
    assert (fanout.publishers, fanout.subscribers, fanout.fanout) == (1, 50, 50)


# -- durability options (issue 5): persistent and offline subscribers, ack latency -------------


def assert_ack_latency(r: dict[str, Any]) -> None:
    ack = r["ack_latency_us"]
    assert ack is not None and ack["samples"] > 0
    assert 0 < ack["p50"] <= ack["p99"] <= ack["max"]
    assert r["broker"]["cpu_us_per_message"] is not None


def test_persistent_online_qos1(broker: RunningBroker) -> None:
    r = bench_json(broker, "fanin", "-n", "2", "--qos", "1", "--rate", "300", "--persistent")
    assert r["persistent"] is True and r["offline"] is None
    assert_delivered_everything(r)
    assert_ack_latency(r)


@pytest.mark.parametrize("version", [4, 5])
def test_offline_queues_then_drains(broker: RunningBroker, version: int) -> None:
    """The subscriber is away during the window: nothing is delivered in it, all of it after."""
    r = bench_json(
        broker, "fanin", "-n", "2", "--qos", "1", "--rate", "300", "--offline", "-V", str(version)
    )
    off, delivered, sent = r["offline"], r["delivered"], r["sent"]
    assert r["persistent"] is True and off["reconnected"] is True
    assert delivered["count"] == 0 and off["delivered_while_offline"] == 0
    assert sent["total"] > 0 and off["delivered_after_reconnect"] == sent["total"]
    assert delivered["lost"] == 0 and delivered["unacked"] == 0
    assert off["drain_s"] is not None and off["reconnect_s"] is not None
    assert_ack_latency(r)


def test_offline_backlog_stays_queued(broker: RunningBroker) -> None:
    """--messages caps what is sent (max mode, paced by acks); --no-reconnect leaves it queued."""
    r = bench_json(
        broker,
        "fanin",
        "-n",
        "3",
        "--qos",
        "1",
        "--rate",
        "max",
        "--offline",
        "--no-reconnect",
        "--messages",
        "500",
    )
    assert r["sent"]["total"] == 500 and r["delivered"]["total"] == 0
    assert r["delivered"]["lost"] == 0 and r["delivered"]["unacked"] == 0
    assert r["offline"]["reconnected"] is False


def test_durability_options_plan() -> None:
    options = Options(scenario="fanin", clients=3, offline=True, messages=10, prefix="bench/x")
    assert options.persistent is True
    quotas = [c.quota for c in build_clients(options) if c.publish]
    assert quotas == [4, 3, 3]
    plan = plan_workers(options, 0)[0]
    assert plan.persistent and plan.offline and plan.reconnect
    few = build_clients(Options(scenario="fanin", clients=3, messages=2, prefix="bench/y"))
    assert [c.quota for c in few if c.publish] == [1, 1, -1]  # -1: sends nothing


def test_broker_cpu_and_memory_sum_over_worker_processes() -> None:
    """``--broker-pid`` of ``midge broker --workers 2`` counts both workers (children of it)."""
    from midge.bench.procstat import process_tree
    from tests.procbroker import ProcBroker

    with ProcBroker(("--host", "127.0.0.1", "--port", "0", "--workers", "2")) as proc:
        proc.wait_listening()
        tree = process_tree(proc.proc.pid)
        assert len(tree) == 3  # the supervisor and its two workers
        args = ("fanin", "-n", "4", "--rate", "2000", "--warmup", "0.2", "--duration", "0.6")
        done = bench(proc.port, *args, "--json", "--broker-pid", str(proc.proc.pid))
        assert done.returncode == 0, done.stderr
        b = json.loads(done.stdout)["broker"]
        assert sorted(b["pids"]) == sorted(tree)
        assert b["cpu_s"] > 0 and b["rss_kb"] > 0


# -- issue 15: the Open MQTT Benchmark Suite's scenarios, the seed's headline ------------------


def assert_shared_once(r: dict[str, Any], publishers: int, members: int) -> None:
    """Every message reached exactly one member of the group: a broker without shared
    subscriptions would deliver none (``$share/...`` matching no topic) or each to all members."""
    assert (r["scenario"], r["publishers"], r["subscribers"]) == ("sharedsub", publishers, members)
    assert r["connections"] == publishers + members
    assert_delivered_everything(r)


def test_sharedsub_delivers_each_message_once(broker: RunningBroker) -> None:
    r = bench_json(
        broker, "sharedsub", "-n", "6", "--share-subscribers", "3", "--qos", "1", "--rate", "300",
        "-V", "5", "--payload", "16",
    )  # fmt: skip
    assert_shared_once(r, 6, 3)
    assert r["latency_us"]["p75"] <= r["latency_us"]["p95"] <= r["latency_us"]["p99"]


@needs_mosquitto
def test_sharedsub_against_mosquitto() -> None:
    """The same scenario on the real Mosquitto (its $share from MQTT 3.1.1 clients too)."""
    with mosquitto(["allow_anonymous true"]) as port:
        quick = ("--warmup", "0.2", "--duration", "0.6", "--drain", "2", "--json")
        args = ("sharedsub", "-n", "4", "--share-subscribers", "2", "--rate", "200", "-V", "4")
        done = bench(port, *args, *quick)
        assert done.returncode == 0, done.stderr
        r = json.loads(done.stdout)
        assert (r["publishers"], r["subscribers"]) == (4, 2)
        assert r["sent"]["total"] > 0
        assert r["delivered"]["total"] == r["sent"]["total"] and r["delivered"]["lost"] == 0


def test_conns_paced_connect_rate_and_handshake_latency(broker: RunningBroker) -> None:
    """--connect-rate spaces the connections (n at CPS take at least (n - 1) / CPS seconds);
    each handshake's latency is reported; --no-subscribe leaves them without subscriptions."""
    r = bench_json(
        broker, "conns", "-n", "30", "--connect-rate", "60", "--no-subscribe", "-k", "300",
        "--procs", "2",
    )  # fmt: skip
    c = r["connect"]
    assert r["connections"] == 30 and r["subscribers"] == 0
    assert c["seconds"] >= 29 / 60 * 0.95 and c["per_second"] <= 60 * 1.1
    assert c["rate_offered"] == 60 and c["subscribes_per_second"] is None
    lat = c["latency_us"]
    assert lat["samples"] == 30 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert c["broker_cpu_percent"] is not None and r["broker"]["rss_kb_per_connection"] is not None


def test_stagger_spreads_slow_publishers(broker: RunningBroker) -> None:
    """20 publishers at 0.5 messages/s each: each would first be due after 2 s; taking turns
    (--stagger) they send the total rate, 10 messages/s, from the start, each message once."""
    r = bench_json(broker, "pairs", "-n", "20", "--rate", "10", "--qos", "1", "--stagger")
    assert r["sent"]["total"] >= 5
    assert_delivered_everything(r)
    assert r["broker"]["machine_percent"] is not None


def test_many_publishers_take_turns_over_processes(broker: RunningBroker) -> None:
    """Above ROUND_ROBIN_ABOVE publishers in a process the turns are automatic (the seed's
    100,000 clients at a fraction of a message/s each): 2 processes of 1,001 publishers."""
    from midge.bench.worker import ROUND_ROBIN_ABOVE

    n = 2 * (ROUND_ROBIN_ABOVE + 1)
    r = bench_json(broker, "pairs", "-n", str(n), "--rate", "400", "--procs", "2")
    assert r["connections"] == 2 * n and r["procs"] == 2
    assert r["sent"]["total"] >= 200
    assert_delivered_everything(r)


def test_ack_send_times_wrap_with_the_packet_identifiers() -> None:
    """A publisher keeps its send times modulo a power of two above its in-flight window:
    identifiers 65534, 65535, 1, 2 (the wrap) land in distinct slots."""
    reader = Reader(4)
    reader.sent_ts = array("q", bytes(8 * 8))
    reader.ts_mask = 7
    for i, pid in enumerate((65534, 65535, 1, 2)):
        reader.sent_ts[pid & 7] = 100 * (i + 1)
    reader.ack_lat = array("q")
    acks = b"".join(b"\x40\x02" + pid.to_bytes(2, "big") for pid in (65534, 65535, 1, 2))
    reader.feed(acks, 1000)
    assert list(reader.ack_lat) == [900, 800, 700, 600] and reader.completed == 4


def test_sharedsub_and_conn_plans() -> None:
    shared = Options(scenario="sharedsub", clients=3, share_subscribers=2, rate=30, prefix="b/x")
    clients = build_clients(shared)
    assert [c.subscribe for c in clients[:2]] == ["$share/perf/b/x/sharedsub/#"] * 2
    assert [c.publish for c in clients[2:]] == [f"b/x/sharedsub/mb-x-p{i}" for i in range(3)]
    assert {c.rate for c in clients[2:]} == {10.0}
    conns = Options(scenario="conns", clients=10, subscribe_idle=False, connect_rate=100, procs=2)
    assert (conns.connections, conns.subscribers) == (10, 0)
    assert all(c.subscribe is None for c in build_clients(conns))
    assert [p.connect_rate for p in plan_workers(conns, 0)] == [50.0, 50.0]


def test_make_bench_scales_and_caps_the_big_rows(bench_run: Any) -> None:
    """benchmarks/run.py: ``--scale`` shrinks a scalable row's clients and rate together (each
    client's rate kept; a connection-rate row keeps its connects/s); a broker's cap limits the
    clients, keeping each publisher's rate (p2p-50K) or the row's total rate (the headline)."""
    run = bench_run
    rows = {r.key: r for r in run.ROWS}

    def n_rate(key: str, broker: str, scale: float) -> tuple[str, str | None, int | None]:
        args, capped = run.big_args(rows[key], broker, scale)
        return args[args.index("-n") + 1], run._arg(args, "--rate"), capped

    assert n_rate("omb-p2p-50k", "midge", 1.0) == ("50000", "50000", None)
    assert n_rate("omb-p2p-50k", "mosquitto", 1.0) == ("9500", "9500", 9500)
    assert n_rate("omb-p2p-50k", "midge", 0.01) == ("500", "500", None)
    assert n_rate("seed-q0", "mosquitto", 1.0) == ("9500", "13000", 9500)
    assert n_rate("seed-q0", "aedes", 1.0) == ("9500", "13000", 9500)
    assert rows["omb-sharedsub-1k"].only == ("midge", "mosquitto")  # Aedes: no $share
    assert n_rate("seed-q2", "midge", 0.01) == ("500", "60", None)
    assert n_rate("seed-q0", "mosquitto", 0.01) == ("500", "130", None)
    args, _ = run.big_args(rows["omb-conn-10k"], "aedes", 0.1)
    assert run._arg(args, "-n") == "1000" and run._arg(args, "--connect-rate") == "100"
    assert n_rate("omb-p2p-1k", "midge", 0.01) == ("1000", "1000", None)  # not scalable
    assert rows["workers"].variants == (1, 2, 4)
    assert all(not rows[k].in_quick for k in ("omb-p2p-1k", "seed-q0", "omb-conn-10k"))


def _tiny_seed_row(run: Any, workers: int) -> Any:
    """A seed row at a tiny size: 6 pairs (12 connections) at 30 msg/s, midge with
    ``workers``, the one-process brokers capped at 3 pairs with the row's whole rate."""
    return run.Row(
        "seed-q0",
        "tiny seed",
        ["pairs", "-n", "6", "--qos", "0", "--rate", "30", "--procs", "1"],
        "seed",
        "broker CPU ≤ 25 % of the machine",
        workers=workers,
        caps={"mosquitto": 3},
        cap_keeps_rate=True,
        pin=False,
        timeout=120.0,
    )


def test_make_bench_seed_row_runs_midge_also_as_one_process_at_the_cap(
    tmp_path: Any, bench_run: Any
) -> None:
    """A seed row, for real at a tiny size: midge with the row's workers at the row's size,
    then midge as one process at the one-process brokers' cap (the same load as Mosquitto's,
    under a name of its own), each with nothing lost; the table shows both."""
    run = bench_run
    row = _tiny_seed_row(run, workers=2)
    entries = run.run_big(run.Midge(), row, 1, True, tmp_path)
    names = ["midge", run.ONE_PROCESS, run.WINDOWED, "midge-separate"]
    assert [e["broker"] for e in entries] == names
    assert all("error" not in e for e in entries), entries
    workers, one, windowed, separate = entries
    assert workers["workers"] == 2 and "workers" not in one
    assert run._arg(workers["args"], "-n") == "6" and workers["capped"] is None
    assert run._arg(one["args"], "-n") == "3" and one["capped"] == 3
    assert run._arg(one["args"], "--rate") == "30"  # the row's total rate, as Mosquitto's
    assert len(workers["result"]["broker"]["pids"]) == 3  # the parent and 2 workers
    assert len(one["result"]["broker"]["pids"]) == 1
    # The workers again, with a batch window: the same load, the broker's file says so.
    assert windowed["workers"] == 2 and windowed["batch_window"] == run.SEED_WINDOW
    assert windowed["args"] == workers["args"]
    assert len(windowed["result"]["broker"]["pids"]) == 3
    windowed_midge = run.Midge()
    assert "batch_window" not in windowed_midge.config(1)
    windowed_midge.batch_window = run.SEED_WINDOW
    assert "\nbatch_window 0.005\n" in windowed_midge.config(1)
    # The whole load (uncapped) on 2 separate one-process brokers, each pair on one of them.
    assert separate["separate"] == 2 and "--same-node" in separate["args"]
    assert run._arg(separate["args"], "-n") == "6"
    assert len(separate["result"]["broker"]["pids"]) == 2
    for e in entries:
        assert e["result"]["delivered"]["lost"] == 0 and e["result"]["delivered"]["total"] > 0
    table = run.summarise({"runs": entries})
    page = run.seed_section([row], table, {"midge": "midge"}, {"quick": True})
    lines = [line for line in page if line.startswith("| ")]
    assert "| midge | 12 |" in lines[1]
    one_process = "| midge, one process (capped: 6 connections, the most one process holds here) |"
    assert "| midge, batch_window 0.005 (5 ms) | 12 |" in lines[2]
    assert one_process + " 6 |" in lines[3]
    assert "| midge, 2 separate processes (nothing routed between them) | 12 |" in lines[4]


@needs_mosquitto
def test_make_bench_seed_row_runs_mosquitto_capped_and_as_separate_processes(
    tmp_path: Any, bench_run: Any
) -> None:
    """A seed row on Mosquitto, for real at a tiny size: one process at its cap, then the
    row's whole load on as many separate Mosquittos as midge has workers, each pair on one of
    them (the only way Mosquitto holds 100,000 connections here), with nothing lost."""
    run = bench_run
    row = _tiny_seed_row(run, workers=3)
    entries = run.run_big(run.Mosquitto(), row, 1, True, tmp_path)
    assert [e["broker"] for e in entries] == ["mosquitto", "mosquitto-separate"]
    assert all("error" not in e for e in entries), entries
    capped, separate = entries
    assert capped["capped"] == 3 and run._arg(separate["args"], "-n") == "6"
    assert len(separate["result"]["broker"]["pids"]) == 3
    for e in entries:
        assert e["result"]["delivered"]["lost"] == 0 and e["result"]["delivered"]["total"] > 0


# -- issue 15: cross-node rows (a cluster of nodes meeting in Redis) ---------------------------


def test_ports_spread_each_pair_over_two_nodes() -> None:
    """``--ports``: subscriber i on node i mod N, its publisher on the next node, so every
    message of ``pairs`` crosses nodes; ``fanin``'s publishers are on the other nodes."""
    pairs = build_clients(Options(scenario="pairs", clients=5, ports=(11, 12, 13), prefix="b/x"))
    subs = {c.subscribe: c.port for c in pairs if c.subscribe}
    pubs = {c.publish: c.port for c in pairs if c.publish}
    assert sorted(subs.values()) == [11, 11, 12, 12, 13]
    assert all(pubs[topic] != port for topic, port in subs.items())
    fanin = build_clients(Options(scenario="fanin", clients=4, ports=(11, 12, 13), prefix="b/x"))
    assert [c.port for c in fanin] == [11, 12, 13, 12, 13]
    assert {c.port for c in build_clients(Options(scenario="pairs", clients=3))} == {0}


def test_same_node_keeps_each_publisher_on_its_subscribers_node() -> None:
    """``--ports ... --same-node``: the pairs spread over the nodes as with ``--ports``, but
    each publisher on its subscriber's node, so that nothing crosses (separate brokers); the
    other scenarios have no pairs to keep together."""
    opts = Options(scenario="pairs", clients=5, ports=(11, 12, 13), same_node=True, prefix="b/x")
    pairs = build_clients(opts)
    subs = {c.subscribe: c.port for c in pairs if c.subscribe}
    pubs = {c.publish: c.port for c in pairs if c.publish}
    assert sorted(subs.values()) == [11, 11, 12, 12, 13]
    assert pubs == subs
    with pytest.raises(ValueError, match="--same-node is for pairs"):
        build_clients(Options(scenario="fanin", clients=4, ports=(11, 12), same_node=True))


def test_make_bench_cross_node_row_runs_on_three_nodes_and_redis(
    tmp_path: Any, bench_run: Any
) -> None:
    """benchmarks/run.py's cross-node row, for real at a tiny size: midge as one process, then
    3 ``midge broker --cluster`` nodes and a redis-server, each pair across two nodes (``midge
    bench --ports``); the nodes' CPU summed, Redis's apart, its commands per message counted
    (QoS 1: XADD, XACK, XDEL and the ACCEPTED PUBLISH at least), the table rendered."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (make debs)")
    run = bench_run
    rows = {r.key: r for r in run.ROWS}
    assert rows["cluster-q0"].kind == rows["cluster-q1"].kind == "cluster"
    assert rows["cluster-q1"].args[-2:] == ["--qos", "1"]
    row = run.Row("cluster-q1", "tiny", ["pairs", "-n", "4", "--qos", "1"], "cluster", "")
    entries = run.run_cluster(run.Midge(), row, 1, True, tmp_path)
    assert [e["broker"] for e in entries] == ["midge", "midge@3nodes"]
    assert all("error" not in e for e in entries), entries
    one, three = (e["result"] for e in entries)
    assert len(one["broker"]["pids"]) == 1 and "aux" not in one
    assert len(three["broker"]["pids"]) == 3
    assert three["delivered"]["lost"] == 0 and three["delivered"]["total"] > 0
    assert three["aux"]["cpu_s"] > 0 and three["max_rate"] > 0
    calls = three["redis_commands"]
    sent = three["sent"]["total"]
    for command in ("xadd", "xack", "xdel"):
        assert calls[command] >= sent  # every message crossed nodes
    assert calls["publish"] >= sent and three["redis_commands_per_message"] >= 4
    # Each 64-byte payload went into Redis (XADD) and out of it (XREADGROUP).
    assert three["redis_bytes_per_message"] > 2 * 64
    table = run.summarise({"runs": entries})
    page = run.cluster_section([row], table, {"midge": "midge"}, {"quick": True})
    assert any("| one node |" in line for line in page)
    assert any("| 3 nodes + Redis |" in line for line in page)
