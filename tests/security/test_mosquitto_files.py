"""The issue's end-to-end test: only Mosquitto's tools and formats, and both brokers.

A ``mosquitto.conf`` with a listener, a ``password_file`` written by the real ``mosquitto_passwd``
and an ``acl_file`` with ``user``, ``topic`` and ``pattern`` lines, driven by ``mosquitto_pub`` and
``mosquitto_sub`` over MQTT 3.1.1 and 5 with ``-u``/``-P``. The same files are given to the real
``mosquitto`` and to ``midge broker``, and both must pass the same assertions. Then what only midge
is asked here: reload on SIGHUP, and a bad file refused with its line.

The configuration has a plain and a TLS listener (a server certificate made by the test, clients
given the CA with ``--cafile``); the password and ACL files apply to both.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from midge.codec.packets import Disconnect, Publish
from tests.procbroker import ProcBroker, free_port, run_midge
from tests.rawclient import Closed, RawClient
from tests.security.certs import Pki

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None or shutil.which("mosquitto_sub") is None,
    reason="mosquitto-clients / mosquitto are not installed (make debs)",
)
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MQTT_VERSION = {4: "mqttv311", 5: "mqttv5"}
REFUSED = {4: 5, 5: 0x87}  # mosquitto_pub's exit status is the CONNACK code
#: The CA file clients are given for each TLS port (set by the ``files`` fixture).
TLS_CA: dict[int, str] = {}

ACL = """\
# anonymous clients get nothing here (and are refused anyway: a listener is configured)
user alice
topic readwrite alice/#
topic write shared/#
topic deny alice/private
user bob
topic read alice/#
topic read shared/bob
pattern readwrite users/%u/#
"""


def write_config(directory: Path, port: int, tls_port: int) -> Path:
    passwd = directory / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "alice", "alice pw"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "bob", "bob-pw"], check=True)
    os.chmod(passwd, 0o644)
    (directory / "acl").write_text(ACL)
    conf = directory / "mosquitto.conf"
    pki = Pki(directory)
    for path in (pki.server_cert, pki.server_key, pki.cafile):
        os.chmod(path, 0o644)  # mosquitto reads them as the mosquitto user
    TLS_CA[tls_port] = pki.cafile
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"password_file {passwd}\n"
        f"acl_file {directory / 'acl'}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"certfile {pki.server_cert}\n"
        f"keyfile {pki.server_key}\n"
    )
    return conf


def client_args(port: int, version: int, user: str | None, password: str | None) -> list[str]:
    args = ["-h", "127.0.0.1", "-p", str(port), "-V", MQTT_VERSION[version]]
    if port in TLS_CA:
        args += ["--cafile", TLS_CA[port]]
    if user is not None:
        args += ["-u", user]
    if password is not None:
        args += ["-P", password]
    return args


def pub(
    port: int, version: int, user: str | None, password: str | None, topic: str, *extra: str
) -> int:
    result = subprocess.run(
        ["mosquitto_pub", *client_args(port, version, user, password), "-t", topic, *extra],
        capture_output=True,
        timeout=15,
        check=False,
    )
    return result.returncode


class Sub:
    """mosquitto_sub printing ``topic payload`` lines until it has ``count`` of them (at most 10
    seconds). Started with ``-d``, so the SUBACK is seen rather than waited for; the debug lines
    (``Client ... received ...``, ``Subscribed (mid: 1): 0``) are left out of :meth:`lines`."""

    def __init__(
        self, port: int, version: int, user: str, password: str, topic: str, count: int
    ) -> None:
        self.proc = subprocess.Popen(
            [
                "stdbuf",
                "-oL",
                "mosquitto_sub",
                *client_args(port, version, user, password),
                "-t",
                topic,
                "-v",
                "-d",
                "-C",
                str(count),
                "-W",
                "10",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # an error shows in the assertion's diff
            text=True,
        )
        assert self.proc.stdout is not None
        self.seen: list[str] = []
        for line in self.proc.stdout:
            self.seen.append(line.rstrip("\n"))
            if "received SUBACK" in line:
                break

    def lines(self) -> list[str]:
        # Read on through the same buffered file (communicate() would read the pipe beneath it
        # and lose what the loop above had already buffered); -W bounds how long this takes.
        assert self.proc.stdout is not None
        rest = self.proc.stdout.read()
        self.proc.wait(15)
        every = self.seen + rest.splitlines()
        return [line for line in every if not line.startswith(("Client ", "Subscribed (mid"))]


def scenario(port: int, version: int) -> None:
    """The assertions both brokers must pass."""
    refused = REFUSED[version]
    assert pub(port, version, "alice", "alice pw", "alice/t", "-m", "x") == 0
    assert pub(port, version, "alice", "wrong", "alice/t", "-m", "x") == refused
    assert pub(port, version, "mallory", "alice pw", "alice/t", "-m", "x") == refused
    assert pub(port, version, None, None, "alice/t", "-m", "x") == refused

    # topic lines: bob reads what alice writes, only where both rules agree; alice's last message
    # marks the end (the broker routes each client's messages in order, and these come one
    # client after the other), so anything delivered that should not be comes before it
    sub = Sub(port, version, "bob", "bob-pw", "#", count=4)
    assert pub(port, version, "alice", "alice pw", "shared/other", "-m", "not for bob") == 0
    assert pub(port, version, "alice", "alice pw", "alice/private", "-m", "denied") == 0
    assert pub(port, version, "alice", "alice pw", "shared/bob", "-m", "for bob") == 0
    assert pub(port, version, "alice", "alice pw", "alice/news", "-m", "hello", "-q", "1") == 0
    assert pub(port, version, "bob", "bob-pw", "alice/news", "-m", "bob cannot write") == 0
    # pattern line: %u
    assert pub(port, version, "bob", "bob-pw", "users/bob/x", "-m", "own", "-q", "1") == 0
    assert pub(port, version, "alice", "alice pw", "users/bob/x", "-m", "not alice's") == 0
    assert pub(port, version, "alice", "alice pw", "shared/bob", "-m", "end") == 0
    assert sub.lines() == [
        "shared/bob for bob",
        "alice/news hello",
        "users/bob/x own",
        "shared/bob end",
    ]

    # retained messages are read-checked too
    assert pub(port, version, "alice", "alice pw", "alice/r", "-m", "kept", "-r", "-q", "1") == 0
    assert pub(port, version, "alice", "alice pw", "shared/r", "-m", "hidden", "-r") == 0
    sub = Sub(port, version, "bob", "bob-pw", "#", count=2)
    assert pub(port, version, "alice", "alice pw", "shared/bob", "-m", "end") == 0
    assert sub.lines() == ["alice/r kept", "shared/bob end"]
    for topic in ("alice/r", "shared/r"):
        assert pub(port, version, "alice", "alice pw", topic, "-r", "-n") == 0


def tls_scenario(tls_port: int, port: int, version: int) -> None:
    """The same users and rules over the TLS listener, next to the plain one."""
    refused = REFUSED[version]
    assert pub(tls_port, version, "alice", "alice pw", "alice/t", "-m", "x") == 0
    assert pub(tls_port, version, "alice", "wrong", "alice/t", "-m", "x") == refused
    sub = Sub(tls_port, version, "bob", "bob-pw", "#", count=3)
    assert pub(port, version, "alice", "alice pw", "alice/private", "-m", "denied") == 0
    assert pub(port, version, "alice", "alice pw", "shared/bob", "-m", "plain to tls") == 0
    assert pub(tls_port, version, "alice", "alice pw", "alice/n", "-m", "tls", "-q", "1") == 0
    assert pub(port, version, "alice", "alice pw", "shared/bob", "-m", "end") == 0
    assert sub.lines() == ["shared/bob plain to tls", "alice/n tls", "shared/bob end"]


@pytest.fixture
def files(shared_dir: Path) -> Iterator[tuple[Path, int, int]]:
    port, tls_port = free_port(), free_port()
    yield write_config(shared_dir, port, tls_port), port, tls_port
    TLS_CA.pop(tls_port, None)


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_real_mosquitto_with_the_files(files: tuple[Path, int, int], version: int) -> None:
    conf, port, tls_port = files
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while pub(port, version, "alice", "alice pw", "alice/t", "-m", "") != 0:
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.1)
        scenario(port, version)
        tls_scenario(tls_port, port, version)
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_midge_with_the_files(files: tuple[Path, int, int], version: int) -> None:
    conf, port, tls_port = files
    with ProcBroker(["-c", str(conf)], listeners=2) as broker:
        broker.wait_listening()
        scenario(port, version)
        tls_scenario(tls_port, port, version)
        assert broker.stop() == 0


def test_sighup_reloads_without_dropping_connections(files: tuple[Path, int, int]) -> None:
    conf, port, _ = files
    passwd = conf.parent / "passwd"
    acl = conf.parent / "acl"
    with ProcBroker(["-c", str(conf)]) as broker:
        broker.wait_listening()
        alice = RawClient("127.0.0.1", port, version=5)
        assert alice.connect("alice-1", username="alice", password=b"alice pw").reason_code == 0
        bob = RawClient("127.0.0.1", port, version=5)
        assert bob.connect("bob-1", username="bob", password=b"bob-pw").reason_code == 0
        bob3 = RawClient("127.0.0.1", port, version=4)
        assert bob3.connect("bob-3", username="bob", password=b"bob-pw").reason_code == 0
        assert alice.subscribe("alice/#").reason_codes == [0]
        # Granted (an ACL file refuses no SUBSCRIBE, as Mosquitto 2); alice may not write there.
        assert alice.subscribe("extra/#").reason_codes == [0]
        assert alice.publish("extra/x", b"denied", qos=1).reason_code == 0x87  # type: ignore[union-attr]

        # The ACL grows a rule; bob leaves the password file (mosquitto_passwd -D).
        acl.write_text(ACL + "user alice\ntopic readwrite extra/#\n")
        subprocess.run(["mosquitto_passwd", "-D", str(passwd), "bob"], check=True)
        broker.send_signal(signal.SIGHUP)
        assert broker.wait_output("reloaded password and ACL files"), broker.describe()

        packet = bob.recv()  # v5: told why, then closed
        assert isinstance(packet, Disconnect) and packet.reason_code == 0x87
        assert bob.wait_closed()
        with pytest.raises(Closed):  # v3.1.1: closed without a word
            bob3.recv()
        # still connected, with the new rule
        alice.publish("extra/x", b"allowed")
        assert alice.expect(Publish).payload == b"allowed"
        alice.publish("alice/after", b"still here")
        assert alice.expect(Publish).payload == b"still here"
        assert pub(port, 5, "bob", "bob-pw", "alice/t", "-m", "x") == 0x87

        # A reload that does not parse keeps the old files, and says where.
        acl.write_text("user alice\ntopic readonly alice/#\n")
        broker.send_signal(signal.SIGHUP)
        assert broker.wait_output(f"{acl}:2: invalid access 'readonly'"), broker.describe()
        alice.publish("extra/y", b"kept", qos=0)  # the old rules still hold
        assert alice.expect(Publish).payload == b"kept"
        for c in (alice, bob, bob3):
            c.close()
        assert broker.stop() == 0


def test_bad_files_stop_the_start_with_file_and_line(files: tuple[Path, int, int]) -> None:
    conf, _, _ = files
    passwd = conf.parent / "passwd"
    passwd.write_text(passwd.read_text() + "carol:plaintext\n")
    result = run_midge(["broker", "-c", str(conf)])
    assert result.returncode == 1
    assert f"{passwd}:3: the password of user 'carol' is not hashed" in result.stderr
    assert "Traceback" not in result.stderr
    conf.write_text(conf.read_text().replace(str(passwd), str(passwd) + ".missing"))
    result = run_midge(["broker", "-c", str(conf)])
    assert result.returncode == 1
    assert "cannot read password file: No such file or directory" in result.stderr
