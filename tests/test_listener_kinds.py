"""Issue 11: listeners on a Unix socket (``listener 0 PATH``) and on a network interface
(``bind_interface``), and ``user`` (a broker started as root runs as that user once its
listeners are bound), each as Mosquitto 2.0 means it.

Brokers run in-process (``make_broker``) where the socket is the point, as ``midge broker``
processes where the process is (its user id, its files), and next to the real ``mosquitto``
where both can run the same file.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from midge.codec.packets import Connack, Publish
from midge.config import Config, ConfigError, ListenerConfig, parse_mosquitto_conf, parse_toml
from midge.server import Server
from tests.procbroker import ProcBroker, free_port, run_midge
from tests.rawclient import RawClient

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0
MOSQUITTO = shutil.which("mosquitto")


def _short_dir() -> Path:
    """A directory for socket files: pytest's tmp_path can be longer than a socket path may be."""
    directory = Path(tempfile.mkdtemp(prefix="midge-unix-"))
    directory.chmod(0o777)  # mosquitto binds its socket as its own user
    return directory


# --------------------------------------------------------------------------------------------
# Unix socket listeners


def test_unix_socket_listener_in_both_formats() -> None:
    conf = parse_mosquitto_conf(
        "listener 1883\nlistener 0 /run/midge/mqtt.sock\nmax_connections 3\n"
        "listener 0 127.0.0.1\nlistener 0 ./rel/mqtt.sock\n",
        "m.conf",
    )
    tcp, unix, free, relative = conf.listeners
    assert tcp.unix_socket_path is None and tcp.port == 1883
    assert unix.unix_socket_path == "/run/midge/mqtt.sock" and unix.port == 0
    assert unix.host is None and unix.max_connections == 3
    # port 0 with an address stays midge's "any free port"
    assert free.unix_socket_path is None and free.host == "127.0.0.1"
    assert relative.unix_socket_path == "./rel/mqtt.sock"
    toml = parse_toml(
        '[[listener]]\nunix_socket_path = "/run/midge/mqtt.sock"\nmax_connections = 3\n',
        "m.toml",
    )
    (lst,) = toml.listeners
    assert lst.unix_socket_path == "/run/midge/mqtt.sock" and lst.port == 0
    assert lst.max_connections == 3
    # The other options of this issue in TOML: user at the top, the rest in [[listener]].
    toml = parse_toml(
        'user = "nobody"\n[[listener]]\nport = 8883\nbind_interface = "lo"\n'
        'certfile = "/c"\nkeyfile = "/k"\ncafile = "/ca"\nrequire_certificate = true\n'
        'crlfile = "/crl"\ndhparamfile = "/dh"\n',
        "m.toml",
    )
    (lst,) = toml.listeners
    assert toml.user == "nobody" and lst.bind_interface == "lo"
    assert (lst.crlfile, lst.dhparamfile) == ("/crl", "/dh")
    assert parse_mosquitto_conf("user mosquitto\n", "m.conf").user == "mosquitto"
    for bad, line, words in (
        ('[[listener]]\nport = 1883\nunix_socket_path = "/a"\n', 2, "has no port"),
        ('[[listener]]\naddress = "::1"\nunix_socket_path = "/a"\n', 2, "has no 'address'"),
        (
            '[[listener]]\nunix_socket_path = "/a"\n[[listener]]\nunix_socket_path = "/a"\n',
            4,
            "defined twice",
        ),
    ):
        with pytest.raises(ConfigError) as info:
            parse_toml(bad, "m.toml")
        assert str(info.value).startswith(f"m.toml:{line}: "), info.value
        assert words in str(info.value)


def test_unix_socket_listener_serves_like_tcp(make_broker: Any) -> None:
    """A Unix socket listener next to a TCP one: the socket file is made with mode 0770 (as
    Mosquitto's umask 007), an old socket file left at its path is replaced, clients on either
    listener exchange messages (our raw client and paho's ``transport="unix"``), the listener's
    own max_connections holds, and the file is gone once the broker stops."""
    directory = _short_dir()
    path = str(directory / "mqtt.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # a socket file left behind by an earlier run
    stale.close()
    try:
        broker = make_broker(
            listeners=[
                ListenerConfig(port=0, host="127.0.0.1"),
                ListenerConfig(port=0, host=None, unix_socket_path=path, max_connections=2),
            ],
            local_only=False,
            allow_anonymous=True,
        )
        assert broker.server.addresses[1] == (path,)
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o770

        received: list[paho.MQTTMessage] = []
        sub = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id="paho-unix",
            protocol=paho.MQTTv5,
            transport="unix",
        )
        sub.on_message = lambda client, userdata, message: received.append(message)
        sub.connect(path)
        sub.loop_start()
        try:
            sub.subscribe("u/#", qos=1)
            tcp = RawClient("127.0.0.1", broker.port, version=5)
            assert tcp.connect5("tcp").reason_code == 0
            deadline = time.monotonic() + WAIT
            while not received and time.monotonic() < deadline:
                tcp.publish("u/1", b"over tcp", qos=1)
                time.sleep(0.2)
            assert received and received[0].payload == b"over tcp"
            # A raw client on the Unix socket gets what a TCP client publishes.
            raw = RawClient.unix(path, version=4)
            raw.connect("raw-unix")
            raw.subscribe("u/#", qos=0)
            tcp.publish("u/2", b"to raw", qos=0)
            packet = raw.recv(WAIT)
            assert isinstance(packet, Publish) and packet.payload == b"to raw"
            # max_connections 2 on the Unix listener: paho and the raw client hold it.
            third = RawClient.unix(path, version=5)
            ack = third.connect5("third", ok=False)
            assert isinstance(ack, Connack) and ack.reason_code == 0x97
            for client in (raw, third, tcp):
                client.close()
        finally:
            sub.loop_stop()
            sub.disconnect()
        broker.stop()
        assert not os.path.exists(path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_unix_socket_listener_has_its_own_security(make_broker: Any) -> None:
    """With per_listener_settings, a Unix socket listener's allow_anonymous is its own: anonymous
    clients are let in there and refused on the TCP listener (v5 0x87)."""
    directory = _short_dir()
    path = str(directory / "mqtt.sock")
    try:
        broker = make_broker(
            listeners=[
                ListenerConfig(port=0, host="127.0.0.1", allow_anonymous=False),
                ListenerConfig(port=0, host=None, unix_socket_path=path, allow_anonymous=True),
            ],
            local_only=False,
            per_listener_settings=True,
        )
        local = RawClient.unix(path, version=5)
        assert local.connect5("local").reason_code == 0
        remote = RawClient("127.0.0.1", broker.port, version=5)
        assert remote.connect5("remote", ok=False).reason_code == 0x87
        local.close()
        remote.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_unix_socket_path_in_use_by_a_file_stops_the_start(tmp_path: Path) -> None:
    """Only an old socket is removed: a regular file at the path is not, and the start fails."""
    directory = _short_dir()
    try:
        path = directory / "not-a-socket"
        path.write_text("keep me")
        config = Config(listeners=[ListenerConfig(port=0, host=None, unix_socket_path=str(path))])
        with pytest.raises(OSError):
            asyncio.run(Server(config).start())
        assert path.read_text() == "keep me"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for(path: Path, proc: Any) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert proc.poll() is None, "the broker exited"
        assert time.monotonic() < deadline, "no socket file"
        time.sleep(0.05)


@pytest.mark.interop
@pytest.mark.parametrize("broker_kind", ["midge", "mosquitto"])
def test_mosquitto_clients_over_a_unix_socket(broker_kind: str) -> None:
    """The same mosquitto.conf (``listener 0 PATH``) in midge and in the real mosquitto:
    mosquitto_sub/pub --unix exchange a message, the socket file has the same mode, and both
    remove it when they stop."""
    if broker_kind == "mosquitto" and MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    directory = _short_dir()
    path = directory / "mqtt.sock"
    conf = directory / "mosquitto.conf"
    conf.write_text(f"listener 0 {path}\nallow_anonymous true\n")
    conf.chmod(0o644)
    proc: Any
    midge: ProcBroker | None = None
    if broker_kind == "mosquitto":
        assert MOSQUITTO is not None
        proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    else:
        midge = ProcBroker(["-c", str(conf)], listeners=0, cwd=directory)
        proc = midge.proc
    sub: subprocess.Popen[str] | None = None
    try:
        _wait_for(path, proc)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o770
        sub = subprocess.Popen(
            ["mosquitto_sub", "--unix", str(path), "-t", "u/#", "-C", "1", "-W", "10"],
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + WAIT
        while sub.poll() is None and time.monotonic() < deadline:
            subprocess.run(
                ["mosquitto_pub", "--unix", str(path), "-t", "u/1", "-m", "hello"],
                check=True,
                timeout=10,
            )
            time.sleep(0.2)
        out, _ = sub.communicate(timeout=10)
        assert out == "hello\n"
    finally:
        if sub is not None and sub.poll() is None:
            sub.kill()
            sub.wait()
        proc.terminate()
        proc.wait(10)
        if midge is not None:
            midge.close()
    try:
        assert not path.exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# bind_interface


def _loopback_name() -> str:
    for _, name in socket.if_nameindex():
        if name == "lo":
            return name
    pytest.skip("no loopback interface named lo")


def test_bind_interface_listens_on_the_interface_addresses(make_broker: Any) -> None:
    """As Mosquitto's net__bind_interface: the listener binds to the interface's address of
    each family (``lo``: 127.0.0.1, and ::1 when it has IPv6), not to every address."""
    lo = _loopback_name()
    broker = make_broker(
        listeners=[ListenerConfig(port=0, host=None, bind_interface=lo)], allow_anonymous=True
    )
    hosts = {address[0] for address in broker.server.addresses}
    assert "127.0.0.1" in hosts and hosts <= {"127.0.0.1", "::1"}
    (port,) = [a[1] for a in broker.server.addresses if a[0] == "127.0.0.1"]
    client = RawClient("127.0.0.1", port)
    client.connect("on-lo")
    client.close()
    # socket_domain ipv4 keeps the IPv4 address only; an address of the interface is allowed.
    only4 = make_broker(
        listeners=[ListenerConfig(port=0, host=None, bind_interface=lo, socket_domain="ipv4")]
    )
    assert {a[0] for a in only4.server.addresses} == {"127.0.0.1"}
    same = make_broker(listeners=[ListenerConfig(port=0, host="127.0.0.1", bind_interface=lo)])
    assert {a[0] for a in same.server.addresses} == {"127.0.0.1"}


def test_bind_interface_errors_name_the_line(tmp_path: Path) -> None:
    """An unknown interface, or a listener address that is not the interface's, stops the
    start with the file and line of ``bind_interface``."""
    lo = _loopback_name()
    cases = [
        ("listener 0\nbind_interface nosuch0\n", "no network interface 'nosuch0'"),
        (f"listener 0 192.0.2.1\nbind_interface {lo}\n", "is not an address of interface"),
    ]
    for text, words in cases:
        config = parse_mosquitto_conf(text, "m.conf")
        with pytest.raises(ConfigError) as info:
            asyncio.run(Server(config).start())
        assert str(info.value).startswith("m.conf:2: bind_interface: "), info.value
        assert words in str(info.value)
    result = run_midge(["broker", "-c", str(_conf(tmp_path, "listener 0\nbind_interface x9\n"))])
    assert result.returncode == 1
    assert ":2: bind_interface: no network interface 'x9'" in result.stderr


def _conf(directory: Path, text: str, name: str = "m.conf") -> Path:
    path = directory / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# user


def _status_ids(pid: int) -> tuple[list[int], list[int]]:
    """(real, effective, saved, fs uids), the same for gids, from /proc/PID/status."""
    fields: dict[str, list[int]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid"):
            fields[key] = [int(v) for v in value.split()]
    return fields["Uid"], fields["Gid"]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")


@needs_root
def test_user_runs_the_broker_as_that_user() -> None:
    """Started as root with ``user nobody``: every uid and gid of the process is nobody's once
    it listens (its listener bound before the change); the database in
    persistence_location (writable by nobody, as Mosquitto requires) is written as nobody,
    and a retained message survives a restart. The pid file is written as the user too."""
    nobody = pwd.getpwnam("nobody")
    directory = Path(tempfile.mkdtemp(prefix="midge-user-"))
    directory.chmod(0o755)
    data = directory / "data"
    data.mkdir()
    os.chown(data, nobody.pw_uid, nobody.pw_gid)
    run = directory / "run"
    run.mkdir()
    os.chown(run, nobody.pw_uid, nobody.pw_gid)
    port = free_port()
    conf = _conf(
        directory,
        f"user nobody\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {data}\npid_file {run}/midge.pid\n",
    )
    conf.chmod(0o644)
    try:
        for round_ in range(2):
            with ProcBroker(["-c", str(conf)], cwd=directory) as broker:
                broker.wait_listening()
                uids, gids = _status_ids(broker.proc.pid)
                assert uids == [nobody.pw_uid] * 4 and gids == [nobody.pw_gid] * 4
                assert "running as user nobody" in broker.stderr or broker.wait_output(
                    "running as user nobody"
                )
                assert (run / "midge.pid").read_text().strip() == str(broker.proc.pid)
                client = RawClient("127.0.0.1", port)
                client.connect(f"c{round_}")
                if round_ == 0:
                    client.publish("kept", b"retained", qos=1, retain=True)
                else:
                    client.subscribe("kept", qos=1)
                    packet = client.recv(WAIT)
                    assert isinstance(packet, Publish) and packet.payload == b"retained"
                client.close()
                assert broker.stop() == 0
            db = data / "mosquitto.db"
            assert db.stat().st_uid == nobody.pw_uid
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@needs_root
def test_unknown_user_stops_the_start(tmp_path: Path) -> None:
    """As Mosquitto: a user that does not exist is an error (only Mosquitto's own default,
    ``mosquitto``, falls back to ``nobody``)."""
    conf = _conf(tmp_path, "user no-such-user-here\nlistener 0 127.0.0.1\n")
    result = run_midge(["broker", "-c", str(conf)])
    assert result.returncode == 1
    assert "user: cannot run as 'no-such-user-here': no such user" in result.stderr


def test_user_without_root_changes_nothing() -> None:
    """Not root: ``user`` has no effect (Mosquitto does the same, silently)."""
    from midge.privileges import drop_privileges

    if os.geteuid() == 0:
        assert drop_privileges(Config(user="root")) is None
        assert drop_privileges(Config()) is None
        assert os.geteuid() == 0
    else:  # pragma: no cover - the CI runs as root
        assert drop_privileges(Config(user="nobody")) is None
