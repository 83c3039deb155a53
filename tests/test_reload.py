"""SIGHUP re-reads mosquitto.conf (midge.reload): the options Mosquitto marks "Reloaded on
reload signal" take their new value, on ``midge broker -c`` and on the real Mosquitto 2.0.11
given the same file, compared byte for byte; a file that no longer parses changes nothing; an
option read at start only is named in a warning."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from midge.auth.passwd import hash_password
from midge.codec.packets import Connect
from tests.differential.harness import MOSQUITTO, needs_mosquitto
from tests.procbroker import ProcBroker, free_port
from tests.rawclient import Closed, RawClient, read_raw_packet


class Running:
    """One broker process reading ``conf``: ``reload()`` rewrites the file and sends SIGHUP,
    returning once the broker has read it (each logs it). ``extra``: lines only this broker's
    file has (Mosquitto's log file, which shows when it reloads)."""

    def __init__(
        self, conf: Path, port: int, reload: Callable[[], None], extra: list[str] | None = None
    ) -> None:
        self.conf = conf
        self.port = port
        self._reload = reload
        self.extra = extra or []

    def write(self, lines: list[str]) -> None:
        text = "\n".join([f"listener {self.port} 127.0.0.1", *lines, *self.extra]) + "\n"
        self.conf.write_text(text)
        self.conf.chmod(0o644)

    def reload(self, lines: list[str]) -> None:
        self.write(lines)
        self._reload()


def done(log: str) -> int:
    """How many reloads midge has finished, by their last log line."""
    return sum(
        ": SIGHUP: no password" in line or ": reloaded " in line or ": reload failed" in line
        for line in log.splitlines()
    )


@contextmanager
def midge_running(tmp: Path, lines: list[str]) -> Iterator[tuple[Running, ProcBroker]]:
    port = free_port()
    conf = tmp / "midge.conf"
    conf.write_text("\n".join([f"listener {port} 127.0.0.1", *lines]) + "\n")
    with ProcBroker(["-c", str(conf)]) as broker:
        broker.wait_listening()
        reloads = 0

        def reload() -> None:
            nonlocal reloads
            reloads += 1
            broker.send_signal(signal.SIGHUP)
            # The last line of a reload: the files' outcome (reloaded, failed, or none).
            deadline = time.monotonic() + 10
            while done(broker.stderr) < reloads and time.monotonic() < deadline:
                time.sleep(0.02)

        yield Running(conf, port, reload), broker
        assert broker.stop() == 0, broker.describe()


@contextmanager
def mosquitto_running(tmp: Path, lines: list[str]) -> Iterator[Running]:
    log = tmp / "mosquitto.log"
    log.touch()
    log.chmod(0o666)  # written by the mosquitto user
    running = Running(tmp / "mosquitto.conf", free_port(), lambda: None)
    running.extra = [f"log_dest file {log}", "log_type all"]
    running.write(lines)
    port, conf = running.port, running.conf
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                RawClient("127.0.0.1", port).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)

        def reload() -> None:
            # Mosquitto logs this line, then reads the file and applies it in the same turn
            # of its loop: a packet sent after the line is handled with the new settings.
            before = log.read_text().count("Reloading config.")
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while log.read_text().count("Reloading config.") == before:
                assert time.monotonic() < deadline, "mosquitto did not reload"
                time.sleep(0.02)

        running._reload = reload
        yield running
    finally:
        proc.terminate()
        proc.wait(10)


def connack(
    port: int, version: int, keep_alive: int = 60, client_id: str = "c-rl", **fields: object
) -> list[bytes]:
    """CONNECT, and every packet received until the broker closes or goes quiet."""
    client = RawClient("127.0.0.1", port, version=version)
    try:
        client.send(
            Connect(
                client_id,
                protocol_level=version,
                keep_alive=keep_alive,
                **fields,  # type: ignore[arg-type]
            )
        )
        return drain(client)
    finally:
        client.close()


def drain(client: RawClient, quiet: float = 0.5) -> list[bytes]:
    got: list[bytes] = []
    while True:
        try:
            got.append(read_raw_packet(client, quiet))
        except (Closed, ConnectionError):
            got.append(b"")
            return got
        except TimeoutError:
            return got


#: What a scenario returns, from each broker (what the test compares).
T = TypeVar("T")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the ``mosquitto`` user can read: Mosquitto started as root runs as that
    user and reads the file again on SIGHUP as that user (pytest's tmp_path is root's only)."""
    directory = Path(tempfile.mkdtemp(prefix="midge-reload-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def both(directory: Path, lines: list[str], scenario: Callable[[Running], T]) -> tuple[T, T]:
    """The scenario on the real Mosquitto, then on midge, each reading its own copy of the
    file: what each returned."""
    for sub in ("m", "x"):
        (directory / sub).mkdir()
        (directory / sub).chmod(0o755)
    with mosquitto_running(directory / "m", lines) as theirs:
        got_theirs = scenario(theirs)
    with midge_running(directory / "x", lines) as (mine, _):
        got_mine = scenario(mine)
    return got_theirs, got_mine


@needs_mosquitto
@pytest.mark.parametrize("version", [4, 5])
def test_max_keepalive_stays_as_in_mosquitto(shared_dir: Path, version: int) -> None:
    """mosquitto.conf(5) says max_keepalive is reloaded, but Mosquitto 2.0.11 keeps the value
    it started with (its config__copy leaves it out), and so does midge: a keep alive of 80
    is accepted under max_keepalive 100 before and after a SIGHUP that says 60."""

    def scenario(broker: Running) -> list[list[bytes]]:
        before = connack(broker.port, version, keep_alive=80)
        broker.reload(["allow_anonymous true", "max_keepalive 60"])
        after = connack(broker.port, version, keep_alive=80)
        return [before, after]

    theirs, mine = both(shared_dir, ["allow_anonymous true", "max_keepalive 100"], scenario)
    assert mine == theirs
    assert mine[0] == mine[1] and mine[0][0][3] == 0  # accepted, no Server Keep Alive


@needs_mosquitto
@pytest.mark.parametrize("version", [4, 5])
def test_client_id_rules_are_reloaded(shared_dir: Path, version: int) -> None:
    """allow_zero_length_clientid, auto_id_prefix and clientid_prefixes take their new
    values: an empty client id accepted before is refused after, and only ids with the new
    prefix get in."""

    def scenario(
        broker: Running,
    ) -> tuple[bytes, list[bytes], list[bytes], list[bytes], list[bytes]]:
        before = connack(broker.port, version, client_id="")
        prefixed = connack(broker.port, version, client_id="x-1")
        broker.reload(
            ["allow_anonymous true", "allow_zero_length_clientid false", "clientid_prefixes y-"]
        )
        empty = connack(broker.port, version, client_id="")
        old_prefix = connack(broker.port, version, client_id="x-1")
        new_prefix = connack(broker.port, version, client_id="y-1")
        return (before[0][:4], prefixed, empty, old_prefix, new_prefix)

    lines = ["allow_anonymous true", "clientid_prefixes x-"]
    theirs, mine = both(shared_dir, lines, scenario)
    assert mine == theirs
    assert mine[2][-1] == b"" and mine[3][-1] == b""  # refused and closed
    assert mine[4][0][3] == 0  # accepted


@needs_mosquitto
def test_allow_anonymous_false_disconnects_anonymous_clients(shared_dir: Path) -> None:
    """allow_anonymous true -> false with a password file: the anonymous client connected
    before is disconnected, a new anonymous CONNECT is refused, a user still gets in."""
    passwd = shared_dir / "passwd"
    passwd.write_text(f"alice:{hash_password(b'secret').encode()}\n")
    passwd.chmod(0o644)
    base = [f"password_file {passwd}"]

    def scenario(broker: Running) -> list[list[bytes]]:
        anon = RawClient("127.0.0.1", broker.port, version=5)
        anon.send(Connect("anon", protocol_level=5, keep_alive=60))
        first = drain(anon)
        broker.reload([*base, "allow_anonymous false"])
        kicked = drain(anon)
        anon.close()
        refused = connack(broker.port, 5)
        user = connack(broker.port, 5, username="alice", password=b"secret")
        return [first, kicked, refused, user]

    theirs, mine = both(shared_dir, [*base, "allow_anonymous true"], scenario)
    assert mine[2] == theirs[2]  # CONNACK 0x87 and the close
    assert mine[3][0][3] == theirs[3][0][3] == 0  # alice gets in (the properties differ)
    # The anonymous client connected before is disconnected by both; a v5 client is told why
    # by midge (DISCONNECT 0x87), Mosquitto just closes (docs/mosquitto.md).
    assert theirs[1] == [b""]
    assert mine[1] == [b"\xe0\x01\x87", b""]


def test_a_bad_file_changes_nothing_and_says_where(tmp_path: Path) -> None:
    with midge_running(tmp_path, ["allow_anonymous true", "max_keepalive 100"]) as (b, proc):
        b.conf.write_text(
            f"listener {b.port} 127.0.0.1\nallow_anonymous true\nmax_keepalive sixty\n"
        )
        proc.send_signal(signal.SIGHUP)
        assert proc.wait_output(f"reload: {b.conf}:3:"), proc.describe()
        assert proc.wait_output("the configuration stays as it was"), proc.describe()
        assert connack(b.port, 4, keep_alive=80) == [b"\x20\x02\x00\x00"]  # still 100


def test_options_read_at_start_only_are_named(tmp_path: Path) -> None:
    lines = ["allow_anonymous true", "sys_interval 10"]
    with midge_running(tmp_path, lines) as (b, proc):
        b.reload(["allow_anonymous true", "sys_interval 20", "upgrade_outgoing_qos true"])
        assert proc.wait_output("reload: sys_interval 20 (was 10)"), proc.describe()
        assert proc.wait_output("reload: upgrade_outgoing_qos true (was false)"), proc.describe()
        b.reload(["allow_anonymous true", "sys_interval 20", "max_queued_messages 7"])
        assert proc.wait_output(
            "reload: max_queued_messages changed in the file but is read at start only"
        ), proc.describe()
        # upgrade_outgoing_qos true -> false again (the file no longer says it): applied too.
        assert proc.wait_output("reload: upgrade_outgoing_qos false (was true)"), proc.describe()


@needs_mosquitto
def test_a_new_password_file_is_taken(shared_dir: Path) -> None:
    """password_file names another file: alice (only in the old one) is disconnected and
    refused, bob (only in the new one) gets in; v3.1.1 on both brokers, byte for byte."""
    old, new = shared_dir / "old.passwd", shared_dir / "new.passwd"
    old.write_text(f"alice:{hash_password(b'a-pw').encode()}\n")
    new.write_text(f"bob:{hash_password(b'b-pw').encode()}\n")
    for path in (old, new):
        path.chmod(0o644)

    def scenario(broker: Running) -> list[list[bytes]]:
        alice = RawClient("127.0.0.1", broker.port, version=4)
        alice.send(
            Connect("c-alice", protocol_level=4, keep_alive=60, username="alice", password=b"a-pw")
        )
        first = drain(alice)
        broker.reload(["allow_anonymous false", f"password_file {new}"])
        kicked = drain(alice)
        alice.close()
        again = connack(broker.port, 4, username="alice", password=b"a-pw")
        bob = connack(broker.port, 4, username="bob", password=b"b-pw")
        return [first, kicked, again, bob]

    theirs, mine = both(shared_dir, ["allow_anonymous false", f"password_file {old}"], scenario)
    assert mine == theirs
    assert mine == [[b"\x20\x02\x00\x00"], [b""], [b"\x20\x02\x00\x05", b""], [b"\x20\x02\x00\x00"]]


def test_logging_options_are_reloaded(tmp_path: Path) -> None:
    """connection_messages false -> true, and a log file added with log_dest: the logging is
    set up again, as Mosquitto's reload does."""
    log_file = tmp_path / "midge.log"
    with midge_running(tmp_path, ["allow_anonymous true", "connection_messages false"]) as (
        b,
        proc,
    ):
        assert connack(b.port, 4, client_id="c-quiet")[0][3] == 0
        b.reload(
            [
                "allow_anonymous true",
                "connection_messages true",
                "log_dest stderr",
                f"log_dest file {log_file}",
            ]
        )
        assert connack(b.port, 4, client_id="c-loud")[0][3] == 0
        assert proc.wait_output("as c-loud"), proc.describe()
        deadline = time.monotonic() + 5
        while "as c-loud" not in (log_file.read_text() if log_file.exists() else ""):
            assert time.monotonic() < deadline, proc.describe()
            time.sleep(0.02)
        assert "c-quiet" not in proc.stderr
