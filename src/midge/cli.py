"""``midge``: the command line. ``midge broker`` runs the broker.

``midge broker`` takes Mosquitto's own flags (``-c FILE``, ``-p PORT``, ``-v``) so that scripts and
service files written for ``mosquitto`` start midge unchanged; ``midge -c FILE`` (no subcommand)
works too, for ``ExecStart=`` lines that only swap the program name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from midge import logs
from midge.auth import scram_cli
from midge.auth.files import build_authenticator
from midge.auth.plugin import PluginError
from midge.bench import cli as bench_cli
from midge.build import describe
from midge.cluster.router import ClusterError
from midge.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_DB_NAME,
    MOSQUITTO_DATA_DIR,
    MOSQUITTO_DB_NAME,
    Config,
    ConfigError,
    apply_cli_overrides,
    load_config,
)
from midge.gctune import GcTuner
from midge.observe import ctl
from midge.server import Server
from midge.store.base import StoreError
from midge.transport.tls import make_context

log = logging.getLogger("midge.server")

#: Flags that mean "run the broker" when given without a subcommand (Mosquitto's command line).
_MOSQUITTO_FLAGS = {"-c", "--config-file", "-p", "--port", "-v", "--verbose"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="midge", description="midge: an MQTT 3.1, 3.1.1 and 5.0 broker and tools."
    )
    parser.add_argument("--version", action="version", version=describe())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    broker = sub.add_parser(
        "broker",
        help="run the broker",
        description="Run the MQTT broker. Takes Mosquitto's -c, -p and -v flags.",
    )
    broker.add_argument(
        "-c",
        "--config-file",
        metavar="FILE",
        help="configuration: midge TOML (*.toml) or a mosquitto.conf (any other name)",
    )
    broker.add_argument(
        "-p",
        "--port",
        type=int,
        action="append",
        default=[],
        metavar="PORT",
        help="listen on PORT (repeatable; 0 picks a free port). As in Mosquitto 2, ignored when "
        "the configuration file defines listeners",
    )
    broker.add_argument(
        "--host",
        metavar="ADDRESS",
        help="address for the default or -p listeners (default 127.0.0.1, local only)",
    )
    broker.add_argument(
        "-v", "--verbose", action="store_true", help="log everything (Mosquitto's -v)"
    )
    broker.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run N broker processes sharing the listeners (SO_REUSEPORT), with cross-worker "
        "routing; overrides the 'workers' option (default 1)",
    )
    broker.add_argument(
        "--cluster",
        metavar="URL",
        help="join the cluster of midge nodes meeting in this Redis (redis://HOST:PORT/DB); "
        "overrides the 'cluster_redis' option (docs/cluster.md)",
    )
    broker.add_argument(
        "--node-id",
        metavar="NAME",
        help="this node's name in the cluster; overrides 'cluster_node_id' (default HOSTNAME-PID)",
    )
    sub.add_parser(
        "passwd",
        help="manage a password file (mosquitto_passwd's options; 'midge passwd -h')",
        add_help=False,
    )
    for name, what in (
        ("pub", "publish a message (mosquitto_pub's options; 'midge pub --help')"),
        ("sub", "subscribe and print messages (mosquitto_sub's options; 'midge sub --help')"),
        ("rr", "request/response (mosquitto_rr's options; 'midge rr --help')"),
    ):
        sub.add_parser(name, help=what, add_help=False)
    bench_cli.add_parser(sub)
    scram_cli.add_parser(sub)
    ctl.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in _MOSQUITTO_FLAGS:
        args_list.insert(0, "broker")
    if args_list and args_list[0] == "passwd":
        # mosquitto_passwd's positional command line, parsed as mosquitto_passwd does.
        from midge.auth import passwd_cmd

        return passwd_cmd.main(args_list[1:])
    if args_list and args_list[0] in ("pub", "sub", "rr"):
        # mosquitto_pub's, mosquitto_sub's and mosquitto_rr's command lines, parsed as they do.
        from midge.tools import commands

        return commands.main(args_list[0], args_list[1:])
    parser = _parser()
    args = parser.parse_args(args_list)
    if args.command == "broker":
        return run_broker(
            args.config_file,
            args.host,
            args.port,
            args.verbose,
            args.workers,
            args.cluster,
            args.node_id,
        )
    if args.command == "bench":
        return bench_cli.run(args)
    if args.command == "scram":
        return scram_cli.run(args)
    if args.command == "ctl":
        return ctl.run(args)
    parser.print_help()
    return 0


def run_broker(
    config_file: str | None,
    host: str | None,
    ports: list[int],
    verbose: bool,
    workers: int | None = None,
    cluster: str | None = None,
    node_id: str | None = None,
) -> int:
    try:
        config = load_config(config_file) if config_file else Config()
        config = apply_cli_overrides(config, host, ports, verbose)
        if workers is not None:
            if workers < 1:
                raise ConfigError(f"invalid --workers {workers}: expected 1 or more")
            config.workers = workers
        _cluster_options(config, cluster, node_id)
        _durable_by_default(config)
        # Read the password and ACL files now: a bad line stops the start with file:line.
        build_authenticator(config)
        # Certificates are read before anything starts (and before --workers fork), so a bad
        # certfile or keyfile is reported once, with its line, and nothing is left running.
        for listener in config.listeners:
            if listener.tls:
                make_context(listener)
    except ConfigError as exc:
        print(f"midge: error: {exc}", file=sys.stderr)
        return 1
    if not _setup_logging(config):
        return 1
    log.info("%s starting", describe())
    for notice in config.notices:
        log.warning("%s", notice)
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a default dependency on Linux
        loop_factory = None
    if config.workers > 1:
        from midge.cluster.workers import run as run_workers

        return run_workers(config, loop_factory)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_serve(config))
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled in _serve
        return 0


def _cluster_options(config: Config, cluster: str | None, node_id: str | None) -> None:
    """``--cluster URL`` and ``--node-id NAME`` over ``cluster_redis`` and ``cluster_node_id``."""
    from midge.config import checks
    from midge.config.errors import BadValue

    try:
        if cluster is not None:
            config.cluster_redis = checks.redis_url(cluster)
        if node_id is not None:
            config.cluster_node_id = checks.node_id(node_id)
    except BadValue as exc:
        raise ConfigError(str(exc)) from None
    if config.cluster_redis is None:
        return
    if config.workers > 1:
        raise ConfigError(
            "a cluster node runs one worker for now: drop --workers (or 'workers') or the cluster",
            config.source,
        )


def _durable_by_default(config: Config) -> None:
    """The broker keeps its state in SQLite in ./data unless told otherwise (``persistence
    false`` or ``durability = "none"``, or another ``data_dir``). Under a mosquitto.conf the reader
    has already turned persistence off unless the file turns it on; when it is on, the database is
    Mosquitto's default, ``mosquitto.db`` in the current directory, unless ``persistence_file`` or
    ``persistence_location`` say otherwise. With ``--workers N`` each worker has a database of
    its own next to that one (:func:`midge.cluster.workers.worker_db_name`)."""
    if config.durability == "none":
        return
    if config.cluster_redis is not None:
        # A cluster node keeps its persistent sessions in the cluster's Redis (midge.store.redis),
        # not in a file of its own.
        if config.data_dir is not None or config.persistence_file is not None:
            raise ConfigError(
                "a cluster node keeps its persistent sessions in Redis, not in a database file: "
                "drop persistence_location/persistence_file (or data_dir), or set "
                "'persistence false' (durability = \"none\") to keep sessions in memory",
                config.source,
            )
        return
    if config.data_dir is None:
        config.data_dir = MOSQUITTO_DATA_DIR if config.mosquitto_conf else DEFAULT_DATA_DIR
    if config.persistence_file is None:
        config.persistence_file = MOSQUITTO_DB_NAME if config.mosquitto_conf else DEFAULT_DB_NAME


async def _serve(config: Config) -> int:
    server = Server(config)
    try:
        await server.start()
    except (StoreError, ConfigError, PluginError, ClusterError) as exc:
        print(f"midge: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"midge: error: cannot open listener: {exc.strerror or exc}", file=sys.stderr)
        return 1
    # The signals are ours before anyone is told the broker listens (a supervisor may send
    # SIGHUP or SIGTERM the moment it reads the listening line or the pid file).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP re-reads the configuration file's reloadable options and the password, ACL and
    # SCRAM files (midge.reload).
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    if config.pid_file:
        try:
            with open(config.pid_file, "w", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as exc:
            print(f"midge: error: cannot write pid_file {config.pid_file}: {exc}", file=sys.stderr)
            await server.stop()
            return 1
    for address, protocol in zip(server.addresses, server.protocols, strict=True):
        if len(address) == 1:  # a Unix socket listener: its path
            print(f"midge: listening on unix socket {address[0]} ({protocol})", flush=True)
            continue
        host, port = address[0], address[1]
        shown = f"[{host}]" if ":" in host else host
        print(f"midge: listening on {shown}:{port} ({protocol})", flush=True)
    log.info("%s running", describe())
    gc_tuner = GcTuner(loop)
    gc_tuner.start()
    await stop.wait()
    log.info("shutting down")
    gc_tuner.stop()
    await server.stop()
    if config.pid_file:
        with contextlib.suppress(OSError):
            os.unlink(config.pid_file)
    return 0


def _setup_logging(config: Config) -> bool:
    """midge.logs.setup; False (said on stderr) if the log file cannot be opened."""
    try:
        logs.setup(config)
    except OSError as exc:
        print(f"midge: error: cannot open log_dest file {config.log_file}: {exc}", file=sys.stderr)
        return False
    return True
