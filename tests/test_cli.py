"""The ``midge`` command as a process: start-up line, Mosquitto's flags, configuration files and
their errors, signals and shutdown, and the README's first steps.

Every broker here is a real subprocess (:mod:`tests.procbroker`) on a free port of 127.0.0.1, killed
at the end of the test whatever happens. No assertion is about timing: waits are bounded only so
that a broken broker fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.clients import WAIT, PahoClient
from tests.procbroker import (
    LISTENING,
    ProcBroker,
    free_port,
    module_command,
    run_midge,
    script_command,
)

COMMANDS = {"python -m midge": module_command, "midge": script_command}

StartBroker = Callable[..., ProcBroker]


@pytest.fixture
def start_broker() -> Iterator[StartBroker]:
    """``start_broker(args, listeners=1, ...)``: a running ProcBroker whose listeners are up."""
    started: list[ProcBroker] = []

    def start(args: list[str], listeners: int = 1, **options: Any) -> ProcBroker:
        broker = ProcBroker(args, listeners=listeners, **options)
        started.append(broker)
        broker.wait_listening()
        return broker

    yield start
    for broker in started:
        broker.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., PahoClient]]:
    """``clients(host, port, client_id, version, **options)``: a connected paho client."""
    opened: list[PahoClient] = []

    def open_client(
        host: str, port: int, client_id: str, version: int = 4, **kw: Any
    ) -> PahoClient:
        client = PahoClient(host, port, client_id, version, **kw)
        opened.append(client)
        client.connect()
        return client

    yield open_client
    for client in opened:
        client.close()


def roundtrip(
    clients: Callable[..., PahoClient], host: str, port: int, tag: str = "", keepalive: int = 60
) -> None:
    """The broker at host:port serves: a QoS 1 message goes from one client to another (the
    v3.1.1 one with ``keepalive``: a larger one than max_keepalive is refused)."""
    sub = clients(host, port, f"sub{tag}", 5)
    sub.subscribe("cli/check", 1)
    clients(host, port, f"pub{tag}", 4, keepalive=keepalive).publish("cli/check", b"served", 1)
    message = sub.expect()
    assert (message.topic, message.payload) == ("cli/check", b"served")


def listener_lines(broker: ProcBroker) -> list[str]:
    return [line for line in broker.stdout_lines if LISTENING.match(line)]


def assert_no_traceback(result: subprocess.CompletedProcess[str] | ProcBroker) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output


# -- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("args", [["--help"], ["broker", "--help"]], ids=["top", "broker"])
def test_help_exits_zero(command: str, args: list[str]) -> None:
    result = run_midge(args, COMMANDS[command]())
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    assert_no_traceback(result)


# -- start-up and serving --------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_port_zero_prints_real_port_and_serves(
    start_broker: StartBroker, clients: Callable[..., PahoClient], command: str
) -> None:
    """``--host 127.0.0.1 --port 0``: one listener line with the port the system chose."""
    broker = start_broker(["--host", "127.0.0.1", "--port", "0"], command=COMMANDS[command]())
    [listener] = broker.listeners
    assert (listener.host, listener.protocol) == ("127.0.0.1", "mqtt")
    assert listener.port > 0
    roundtrip(clients, broker.host, broker.port)
    assert broker.stop() == 0, broker.describe()
    assert len(listener_lines(broker)) == 1, broker.describe()
    assert_no_traceback(broker)


def test_ipv6_listener_line_brackets_the_address(
    start_broker: StartBroker, clients: Callable[..., PahoClient]
) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    broker = start_broker(["--host", "::1", "--port", "0"])
    [listener] = broker.listeners
    assert listener.host == "[::1]"
    roundtrip(clients, "::1", listener.port)
    assert broker.stop() == 0


# -- Mosquitto's flags -----------------------------------------------------------------------


def test_dash_p_listens_on_loopback(
    start_broker: StartBroker, clients: Callable[..., PahoClient]
) -> None:
    """``-p PORT``: as in Mosquitto 2, the -p listener is bound to the loopback interface only."""
    port = free_port()
    broker = start_broker(["-p", str(port)])
    [listener] = broker.listeners
    assert listener.port == port
    assert listener.host in {"127.0.0.1", "localhost", "[::1]"}
    roundtrip(clients, broker.host, port)
    assert broker.stop() == 0


def test_dash_p_repeated_opens_each_port(
    start_broker: StartBroker, clients: Callable[..., PahoClient]
) -> None:
    ports = [free_port(), free_port()]
    while ports[1] == ports[0]:
        ports[1] = free_port()
    broker = start_broker(["-p", str(ports[0]), "-p", str(ports[1])], listeners=2)
    assert sorted(lst.port for lst in broker.listeners) == sorted(ports)
    for i, listener in enumerate(broker.listeners):
        roundtrip(clients, listener.connect_host, listener.port, tag=str(i))
    assert broker.stop() == 0


def test_mosquitto_command_line_without_subcommand(
    start_broker: StartBroker, clients: Callable[..., PahoClient]
) -> None:
    """``midge -p PORT``: a service file written for ``mosquitto -p PORT`` only swaps the name."""
    port = free_port()
    broker = start_broker(["-p", str(port)], command=script_command(), broker_subcommand=False)
    assert broker.port == port
    roundtrip(clients, broker.host, port)
    assert broker.stop() == 0


def test_verbose_logs_connections_and_subscriptions(
    start_broker: StartBroker, clients: Callable[..., PahoClient]
) -> None:
    """``-v`` is Mosquitto's ``log_type all``: connections and subscriptions are logged."""
    broker = start_broker(["-v", "--host", "127.0.0.1", "--port", "0"])
    client = clients(broker.host, broker.port, "verbose-probe", 4)
    client.subscribe("probe/verbose/#", 1)
    assert broker.wait_output("verbose-probe"), broker.describe()
    assert broker.wait_output("probe/verbose/#"), broker.describe()
    assert broker.stop() == 0


# -- configuration files ---------------------------------------------------------------------


def _connack_properties(
    clients: Callable[..., PahoClient], host: str, port: int, client_id: str
) -> dict[str, Any]:
    client = clients(host, port, client_id, 5, keepalive=60)
    props = client.connack_properties
    names = ("ServerKeepAlive", "TopicAliasMaximum", "MaximumQoS", "RetainAvailable")
    return {name: getattr(props, name) for name in names if hasattr(props, name)}


def test_mosquitto_conf(
    start_broker: StartBroker, clients: Callable[..., PahoClient], tmp_path: Path
) -> None:
    """``-c mosquitto.conf``: two listener blocks with a listener option in one, global options
    anywhere; the v5 CONNACK shows them (Mosquitto 2.0.11 sends exactly these values)."""
    first, second = free_port(), free_port()
    while second == first:
        second = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        "# Place your local configuration in /etc/mosquitto/conf.d/\n"
        "max_keepalive 30\n"
        "retain_available false\n"
        "allow_anonymous true\n"  # listeners are configured: Mosquitto 2 refuses anonymous
        "\n"
        f"listener {first} 127.0.0.1\n"
        "max_topic_alias 5\n"
        "max_qos 1\n"
        f"listener {second} 127.0.0.1\n"
    )
    broker = start_broker(["-c", str(conf)], listeners=2)
    assert [lst.port for lst in broker.listeners] == [first, second]
    assert _connack_properties(clients, "127.0.0.1", first, "one") == {
        "ServerKeepAlive": 30,
        "TopicAliasMaximum": 5,
        "MaximumQoS": 1,
        "RetainAvailable": 0,
    }
    assert _connack_properties(clients, "127.0.0.1", second, "two") == {
        "ServerKeepAlive": 30,
        "TopicAliasMaximum": 10,
        "RetainAvailable": 0,
    }
    # A v3.1.1 client above max_keepalive would be refused (return code 2).
    qos2 = clients("127.0.0.1", first, "sub-max-qos", 4, keepalive=30)
    assert qos2.subscribe("t", 2) == [1]  # granted QoS capped by the listener's max_qos
    roundtrip(clients, "127.0.0.1", second, keepalive=30)
    assert broker.stop() == 0


def test_dash_p_ignored_when_config_defines_listeners(
    start_broker: StartBroker, tmp_path: Path
) -> None:
    """mosquitto(8): "If both -p is used and a listener is defined in a configuration file, then the
    -p options are IGNORED"."""
    configured, ignored = free_port(), free_port()
    while ignored == configured:
        ignored = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {configured} 127.0.0.1\n")
    broker = start_broker(["-c", str(conf), "-p", str(ignored)])
    time.sleep(0.3)  # a second listener line, if one were coming, would be out by now
    assert [lst.port for lst in broker.listeners] == [configured], broker.describe()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", ignored), timeout=WAIT).close()
    assert broker.stop() == 0


def test_midge_toml(
    start_broker: StartBroker, clients: Callable[..., PahoClient], tmp_path: Path
) -> None:
    first, second = free_port(), free_port()
    while second == first:
        second = free_port()
    conf = tmp_path / "midge.toml"
    conf.write_text(
        "# midge's own format\n"
        "max_keepalive = 30\n"
        "retain_available = false\n"
        "allow_anonymous = true\n"
        "\n"
        "[[listener]]\n"
        f"port = {first}\n"
        'address = "127.0.0.1"\n'
        "max_topic_alias = 5\n"
        "\n"
        "[[listener]]\n"
        f"port = {second}\n"
        'address = "127.0.0.1"\n'
    )
    broker = start_broker(["-c", str(conf)], listeners=2)
    assert [lst.port for lst in broker.listeners] == [first, second]
    assert _connack_properties(clients, "127.0.0.1", first, "one") == {
        "ServerKeepAlive": 30,
        "TopicAliasMaximum": 5,
        "RetainAvailable": 0,
    }
    roundtrip(clients, "127.0.0.1", second, keepalive=30)
    assert broker.stop() == 0


BAD_CONFIGS = {
    "conf-unknown-option": (
        "mosquitto.conf",
        "listener {port} 127.0.0.1\nmax_inflight_messages 20\nbogus_option 3\n",
        3,
        "bogus_option",
    ),
    "conf-out-of-range": (
        "mosquitto.conf",
        "# comment\nlistener {port} 127.0.0.1\nmax_qos 7\n",
        3,
        "max_qos",
    ),
    "conf-not-a-number": ("mosquitto.conf", "max_keepalive many\n", 1, "max_keepalive"),
    "toml-unknown-key": (
        "midge.toml",
        "max_keepalive = 30\n\n[[listener]]\nport = {port}\nbogus_key = 1\n",
        5,
        "bogus_key",
    ),
    "toml-wrong-type": (
        "midge.toml",
        'retain_available = "maybe"\n[[listener]]\nport = {port}\n',
        1,
        "retain_available",
    ),
    "toml-syntax": ("midge.toml", "[[listener]]\nport = {port}\nmax_qos =\n", 3, ""),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_exits_nonzero_naming_file_line_and_option(tmp_path: Path, case: str) -> None:
    name, text, line, option = BAD_CONFIGS[case]
    path = tmp_path / name
    path.write_text(text.format(port=free_port()))
    result = run_midge(["broker", "-c", str(path)])
    assert result.returncode != 0
    assert f"{path}:{line}" in result.stderr, result.stderr
    assert option in result.stderr
    assert not LISTENING.search(result.stdout)
    assert_no_traceback(result)


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.conf"
    result = run_midge(["broker", "-c", str(path)])
    assert result.returncode != 0
    assert str(path) in result.stderr
    assert_no_traceback(result)


def test_port_in_use_is_an_error_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_midge(["broker", "--host", "127.0.0.1", "--port", str(port)])
    assert result.returncode != 0
    assert str(port) in result.stderr or "in use" in result.stderr.lower(), result.stderr
    assert_no_traceback(result)


# -- signals and shutdown --------------------------------------------------------------------

SIGNALS = pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])


@SIGNALS
def test_signal_exits_zero_and_closes_clients(
    start_broker: StartBroker, clients: Callable[..., PahoClient], sig: int
) -> None:
    """SIGTERM/SIGINT: exit status 0, every connection closed; v5 clients are told why first
    (DISCONNECT 0x8B Server shutting down, as the README promises; MQTT 5 3.14.2.1)."""
    broker = start_broker(["--host", "127.0.0.1", "--port", "0"])
    v4 = clients(broker.host, broker.port, "c4", 4)
    v5 = clients(broker.host, broker.port, "c5", 5)
    idle = socket.create_connection((broker.host, broker.port), timeout=WAIT)  # no CONNECT yet
    try:
        assert broker.stop(sig) == 0, broker.describe()
        assert v4.disconnected.wait(WAIT)
        assert v5.disconnected.wait(WAIT)
        assert v5.disconnect_reason is not None and v5.disconnect_reason.value == 0x8B, (
            v5.disconnect_reason
        )
        with contextlib.suppress(ConnectionResetError):
            assert idle.recv(1) == b""
    finally:
        idle.close()
    assert_no_traceback(broker)


@SIGNALS
@pytest.mark.parametrize("version", [4, 5], ids=["v3.1.1", "v5"])
def test_wills_published_on_shutdown(
    start_broker: StartBroker, clients: Callable[..., PahoClient], sig: int, version: int
) -> None:
    """The broker closing a connection without the client's DISCONNECT publishes its will
    (MQTT-3.1.2-8); a subscriber still connected gets it before the broker exits."""
    broker = start_broker(["--host", "127.0.0.1", "--port", "0"])
    watcher = clients(broker.host, broker.port, "watcher", version)
    watcher.subscribe("will/#", 1)
    clients(broker.host, broker.port, "willer", version, will=("will/shutdown", b"bye", 1, False))
    assert broker.stop(sig) == 0, broker.describe()
    message = watcher.expect()
    assert (message.topic, message.payload) == ("will/shutdown", b"bye")


# -- the README ------------------------------------------------------------------------------


@pytest.mark.interop
def test_readme_first_steps(start_broker: StartBroker) -> None:
    """README: ``mosquitto_sub -V 5 -t 'a/#' -q 2`` then ``mosquitto_pub -V 5 -t a/b -m hi -q 2``
    and the subscriber prints ``hi``. (``-C 1`` makes it exit after that message.)"""
    broker = start_broker(["--host", "127.0.0.1", "--port", "0"])
    where = ["-h", broker.host, "-p", str(broker.port)]
    sub = subprocess.Popen(
        ["mosquitto_sub", *where, "-V", "5", "-t", "a/#", "-q", "2", "-C", "1", "-W", "30"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The subscriber reports nothing when its subscription is in place, so publish until it
        # has printed its one message (each try is a complete mosquitto_pub run).
        for _ in range(50):
            subprocess.run(
                ["mosquitto_pub", *where, "-V", "5", "-t", "a/b", "-m", "hi", "-q", "2"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=WAIT,
                check=True,
            )
            try:
                out, err = sub.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            pytest.fail("mosquitto_sub did not receive the message")
        assert sub.returncode == 0, err
        assert out == "hi\n"
    finally:
        if sub.poll() is None:
            sub.kill()
        sub.communicate(timeout=WAIT)
    assert broker.stop() == 0
