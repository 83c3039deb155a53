"""``midge bench``: load-test any MQTT broker at HOST:PORT; report what it delivered and its cost.

``midge.cli`` registers the subcommand with :func:`add_parser` and calls :func:`run`; everything the
command does lives in this package. Examples::

    midge bench fanin -n 10 --rate 20000 --broker-pid $(pidof mosquitto)
    midge bench fanout -n 50 --rate 1000 --qos 1 --json
    midge bench pairs -n 50 --rate max --procs 2
    midge bench conns -n 19000 --broker-pid 1234
    midge bench sharedsub -n 1000 --share-subscribers 5 --rate 1000 --qos 1 -V 5
    midge bench conns -n 10000 --connect-rate 100 --no-subscribe -k 300
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from midge.bench.scenario import DEFAULT_CLIENTS, SCENARIOS, Options
from midge.bench.wire import MIN_PAYLOAD


def _rate(text: str) -> float:
    if text.lower() == "max":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (a number, or 'max')") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the rate cannot be negative")
    return value


def _ports(text: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of ports: {text!r}") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"not a list of ports: {text!r}")
    return ports


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0: {text}")
        return value

    return parse


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on ``subparsers`` (the ``add_subparsers()`` of ``midge``'s parser)."""
    defaults = ", ".join(f"{k} {v}" for k, v in DEFAULT_CLIENTS.items())
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="load-test an MQTT broker (any broker) and report rates, latency and broker cost",
        description=(
            "Load-test the MQTT broker at HOST:PORT. Scenarios: fanin (N publishers -> 1 "
            "subscriber on a wildcard), fanout (1 publisher -> N subscribers), pairs (N "
            "publisher/subscriber pairs), sharedsub (N publishers -> a shared subscription of "
            "--share-subscribers members), conns (N idle connections with a subscription each). "
            "Publishers send at a paced total --rate (or 'max') for --warmup then --duration "
            "seconds; the report gives offered vs delivered rates, latency percentiles and, with "
            "--broker-pid, the broker's CPU per delivered message and its memory."
        ),
    )
    p.add_argument("scenario", nargs="?", default="fanin", choices=SCENARIOS)
    p.add_argument("-H", "--host", default="127.0.0.1", help="broker address (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=1883, help="broker port (default 1883)")
    p.add_argument(
        "-n",
        "--clients",
        type=_positive(int),
        default=0,
        metavar="N",
        help="publishers (fanin, sharedsub), subscribers (fanout), pairs, or connections "
        f"(defaults: {defaults})",
    )
    p.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=0, help="QoS (default 0)")
    p.add_argument(
        "-s",
        "--payload",
        type=int,
        default=64,
        metavar="BYTES",
        help=f"payload size in bytes, at least {MIN_PAYLOAD} (default 64)",
    )
    p.add_argument(
        "-r",
        "--rate",
        type=_rate,
        default=10_000.0,
        metavar="MSGS",
        help="PUBLISH messages per second from all publishers together, or 'max' (default 10000)",
    )
    p.add_argument("-w", "--warmup", type=float, default=2.0, metavar="S", help="default 2 s")
    p.add_argument(
        "-d", "--duration", type=_positive(float), default=5.0, metavar="S", help="default 5 s"
    )
    p.add_argument(
        "--procs",
        type=_positive(int),
        default=1,
        help="generator processes to spread the clients over (raised as needed to keep each "
        "process under 15,000 connections)",
    )
    p.add_argument(
        "-V", "--mqtt-version", type=int, choices=(3, 4, 5), default=4, help="3, 4 (3.1.1) or 5"
    )
    p.add_argument(
        "--websocket",
        action="store_true",
        help="speak MQTT over WebSocket (ws://HOST:PORT/mqtt, a 'protocol websockets' listener)",
    )
    p.add_argument(
        "--ports",
        type=_ports,
        default=(),
        metavar="P1,P2,...",
        help="several brokers at HOST (the nodes of a cluster): the clients are spread over them "
        "so that messages cross nodes (subscriber i on node i mod N, its publisher on the next)",
    )
    p.add_argument(
        "--same-node",
        action="store_true",
        help="with --ports, pairs: each publisher on its subscriber's node, so that nothing "
        "crosses (the load of N separate brokers)",
    )
    p.add_argument(
        "--broker-pid",
        type=int,
        action="append",
        metavar="PID",
        help="the broker's process id (on this machine): report its CPU per delivery and RSS,"
        " summed with its child processes' (midge --workers N); given again (a cluster's "
        "nodes), all are summed",
    )
    p.add_argument(
        "--aux-pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="a process the broker relies on (a cluster's Redis): its CPU over the window is "
        "reported apart (aux), not in the broker's",
    )
    p.add_argument(
        "--inflight",
        type=_positive(int),
        default=64,
        help="QoS 1/2: unacknowledged messages per publisher (default 64)",
    )
    p.add_argument(
        "--window",
        type=_positive(int),
        default=5000,
        help="max mode: undelivered deliveries outstanding, all publishers together (default 5000)",
    )
    p.add_argument(
        "-k", "--keepalive", type=int, default=0, help="keep alive in seconds (default 0: none)"
    )
    p.add_argument(
        "--drain",
        type=float,
        default=2.0,
        metavar="S",
        help="after the window, wait up to S seconds for messages in flight (default 2)",
    )
    p.add_argument(
        "--tick-ms", type=_positive(float), default=1.0, help="pacing interval (default 1 ms)"
    )
    p.add_argument(
        "--connect-concurrency",
        type=_positive(int),
        default=64,
        metavar="N",
        help="CONNECT handshakes in flight at once (default 64)",
    )
    p.add_argument(
        "--source-addresses",
        type=int,
        default=16,
        metavar="N",
        help="to a broker on 127.x: spread the clients over N source addresses 127.0.0.2... "
        "(default 16; 0: connect from the default address)",
    )
    p.add_argument(
        "--share-subscribers",
        type=_positive(int),
        default=5,
        metavar="M",
        help="sharedsub: members of the shared subscription $share/perf/PREFIX/sharedsub/# "
        "(default 5)",
    )
    p.add_argument(
        "--connect-rate",
        type=_positive(float),
        default=None,
        metavar="CPS",
        help="open at most CPS connections per second, all processes together (default: as fast "
        "as --connect-concurrency allows); the report gives each handshake's latency",
    )
    p.add_argument(
        "--no-subscribe",
        dest="subscribe_idle",
        action="store_false",
        help="conns: the connections only connect (no subscription each)",
    )
    p.add_argument(
        "--stagger",
        action="store_true",
        help="paced: the publishers take turns, one message each, so their messages are spread "
        "evenly in time (as devices on their own clocks) rather than sent together when each "
        "one's rate says one is due (always so above 1,000 publishers in a process)",
    )
    p.add_argument(
        "--persistent",
        action="store_true",
        help="subscribers keep a session (3.1.1 clean session 0; v5 Clean Start 0 and a session "
        "expiry): a durable broker records each QoS 1/2 message for them before its ack",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="persistent subscribers subscribe, then disconnect; the load is queued for them "
        "(counted when acknowledged); after the window they reconnect and drain it "
        "(raise --drain for a big backlog)",
    )
    p.add_argument(
        "--no-reconnect",
        dest="reconnect",
        action="store_false",
        help="--offline: leave the backlog queued in the broker (e.g. to time its restore)",
    )
    p.add_argument(
        "--messages",
        type=_positive(int),
        default=0,
        metavar="N",
        help="publish at most N messages in all (default: no cap)",
    )
    p.add_argument("-u", "--username")
    p.add_argument("-P", "--password")
    p.add_argument("--prefix", default="", help="topic prefix (default bench/<random>)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        scenario=args.scenario,
        host=args.host,
        port=args.ports[0] if args.ports else args.port,
        ports=args.ports,
        same_node=args.same_node,
        clients=args.clients,
        qos=args.qos,
        payload=args.payload,
        rate=args.rate,
        warmup=args.warmup,
        duration=args.duration,
        procs=args.procs,
        version=args.mqtt_version,
        inflight=args.inflight,
        window=args.window,
        keepalive=args.keepalive,
        drain=args.drain,
        tick=args.tick_ms / 1000,
        connect_concurrency=args.connect_concurrency,
        source_addresses=args.source_addresses,
        broker_pid=args.broker_pid[0] if args.broker_pid else None,
        more_broker_pids=tuple(args.broker_pid[1:]) if args.broker_pid else (),
        aux_pids=tuple(args.aux_pid),
        username=args.username,
        password=args.password,
        prefix=args.prefix,
        persistent=args.persistent or args.offline,
        offline=args.offline,
        messages=args.messages,
        reconnect=args.reconnect,
        websocket=args.websocket,
        share_subscribers=args.share_subscribers,
        connect_rate=args.connect_rate or 0.0,
        subscribe_idle=args.subscribe_idle,
        stagger=args.stagger,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``midge bench`` with parsed ``args``; the process exit status."""
    if args.payload < MIN_PAYLOAD:
        print(f"midge bench: error: --payload must be at least {MIN_PAYLOAD}", file=sys.stderr)
        return 2
    if args.warmup < 0 or args.drain < 0:
        print("midge bench: error: --warmup and --drain cannot be negative", file=sys.stderr)
        return 2
    if args.same_node and (args.scenario != "pairs" or len(args.ports) < 2):
        print(
            "midge bench: error: --same-node keeps each pair on one broker: it needs the pairs "
            "scenario and --ports with two ports or more",
            file=sys.stderr,
        )
        return 2
    from midge.bench.runner import BenchError, run_bench

    options = options_from_args(args)
    try:
        if args.quiet or not sys.stderr.isatty():
            result = run_bench(options)
        else:
            result = _with_progress(options)
    except BenchError as exc:
        print(f"midge bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    if not result["generator"]["kept_up"]:
        print(
            "midge bench: warning: the generator did not keep up (it sent less than offered or "
            "ran out of CPU): the broker's numbers are a lower bound; try --procs",
            file=sys.stderr,
        )
    return 0


def _with_progress(options: Options) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from midge.bench.runner import run_bench

    columns = (
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("start", total=None, detail="")

        def report(phase: str, done: float, total: float, detail: str) -> None:
            bar.update(task, description=phase, completed=done, total=total, detail=detail)

        return run_bench(options, report)


def _num(value: float | None, fmt: str = ",.0f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def _print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"{r['scenario']} n={r['clients']} QoS {r['qos']} {r['payload']} B, {r['mode']} "
        f"-> {r['target']} ({r['window_s']:.1f} s window)"
    )
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    offered = r["offered"]
    if r["scenario"] == "conns":
        c = r["connect"]
        table.add_row("connections", f"{r['connections']:,}")
        table.add_row("connects/s", _num(c["per_second"]))
        table.add_row("subscribes/s", _num(c["subscribes_per_second"]))
        cl = c.get("latency_us")
        if cl:
            table.add_row(
                "connect latency mean/p50/p99",
                f"{cl['mean']:,.0f} / {cl['p50']:,.0f} / {cl['p99']:,.0f} µs",
            )
    else:
        table.add_row("offered msg/s", _num(offered["publish_rate"]))
        table.add_row("offered deliveries/s", _num(offered["delivery_rate"]))
        table.add_row("sent msg/s", _num(r["sent"]["rate"]))
        table.add_row("delivered/s", _num(r["delivered"]["rate"]))
        table.add_row("lost", f"{r['delivered']['lost']:,}")
        off = r.get("offline")
        if off:
            table.add_row("delivered after reconnect", f"{off['delivered_after_reconnect']:,}")
            table.add_row("drain after reconnect", _num(off["drain_s"], ".2f", " s"))
        ack = r.get("ack_latency_us")
        if ack:
            table.add_row(
                "ack latency p50/p99/p99.9",
                f"{ack['p50']:,.0f} / {ack['p99']:,.0f} / {ack['p999']:,.0f} µs",
            )
        lat = r["latency_us"]
        if lat:
            table.add_row(
                "latency p50/p99/p99.9",
                f"{lat['p50']:,.0f} / {lat['p99']:,.0f} / {lat['p999']:,.0f} µs",
            )
    b = r["broker"]
    if b:
        table.add_row("broker CPU", _num(b["cpu_percent"], ".1f", " %"))
        if r["scenario"] != "conns":
            table.add_row("broker CPU/delivery", _num(b["cpu_us_per_delivery"], ".2f", " µs"))
            table.add_row("broker CPU/message", _num(b["cpu_us_per_message"], ".2f", " µs"))
        table.add_row("broker RSS", f"{b['rss_kb']:,} KiB")
        if "rss_kb_per_connection" in b:
            table.add_row("broker RSS/connection", f"{b['rss_kb_per_connection']:.2f} KiB")
    g = r["generator"]
    table.add_row("generator CPU", f"{_num(g['cpu_percent'], '.1f', ' %')} on {g['cores']} core(s)")
    table.add_row("generator kept up", "yes" if g["kept_up"] else "NO")
    Console().print(table)
