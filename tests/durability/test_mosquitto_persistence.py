"""A mosquitto.conf means what it means to Mosquitto (issue 11): persistence is off unless the file
says ``persistence true``, and then ``persistence_location``/``persistence_file`` name the
database. With no file or a TOML file midge stays durable in ./data.

Each scenario is a real broker process restarted between two clients: the first makes a
persistent session (clean session off, one subscription) and a retained message; after the
restart the same client id looks at CONNACK's session present and at the retained message. The
same scenario runs against Mosquitto itself where it is installed (differential)."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from tests.procbroker import STARTUP_TIMEOUT, ProcBroker, free_port, run_midge
from tests.rawclient import RawClient

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HAS_MOSQUITTO = os.access(MOSQUITTO, os.X_OK)

Start = Callable[[], AbstractContextManager[None]]


def wait_port(port: int, proc: ProcBroker) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.describe()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} never opened:\n{proc.describe()}")


def starter(conf: Path, cwd: Path, port: int, mosquitto: bool = False) -> Start:
    """Runs the broker on ``conf`` for the length of a ``with`` block, and stops it with SIGTERM
    (Mosquitto writes its database then)."""

    @contextmanager
    def start() -> Iterator[None]:
        if mosquitto:
            proc = ProcBroker(
                ["-c", str(conf)], command=[MOSQUITTO], cwd=cwd, broker_subcommand=False
            )
        else:
            proc = ProcBroker(["-c", str(conf)], cwd=cwd)
        try:
            wait_port(port, proc)
            yield
            assert proc.stop() == 0, proc.describe()
        finally:
            proc.close()

    return start


def restart_scenario(start: Start, port: int) -> tuple[bool, list[bytes]]:
    """Before a restart: "keep" (clean session off) subscribes to k/#, and "old" is retained on
    r/1. After it: CONNACK's session present for "keep", and the retained payloads its new
    subscription to r/# receives."""
    with start():
        keep = RawClient("127.0.0.1", port, 4)
        assert keep.connect("keep", clean_start=False).reason_code == 0
        keep.subscribe("k/#", 1)
        keep.disconnect()
        pub = RawClient("127.0.0.1", port, 4)
        assert pub.connect("pub", clean_start=True).reason_code == 0
        pub.publish("r/1", b"old", qos=1, retain=True)
        pub.disconnect()
        time.sleep(0.2)  # the DISCONNECTs are taken in before the broker stops
    with start():
        keep = RawClient("127.0.0.1", port, 4)
        connack = keep.connect("keep", clean_start=False)
        assert connack.reason_code == 0
        keep.subscribe("r/#", 1)
        retained = [p.payload for p in keep.more_publishes(0.5, ack=True)]
        keep.disconnect()
    return connack.session_present, retained


def conf_text(port: int, extra: str, mosquitto: bool) -> str:
    # As root, Mosquitto would switch to the user "mosquitto", which cannot write in tmp_path;
    # midge refuses `user` (it does not switch users), so only Mosquitto's copy has it.
    user = "user root\n" if mosquitto else ""
    return f"{user}listener {port} 127.0.0.1\nallow_anonymous true\n{extra}"


def files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


@pytest.mark.parametrize(
    "extra",
    ["", "persistence false\n", "autosave_interval 1\nautosave_on_changes true\n"],
    ids=["no-persistence-line", "persistence-false", "autosave-only"],
)
def test_mosquitto_conf_without_persistence_keeps_nothing(tmp_path: Path, extra: str) -> None:
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(conf_text(port, extra, mosquitto=False))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    present, retained = restart_scenario(starter(conf, run_dir, port), port)
    assert (present, retained) == (False, [])
    assert files(run_dir) == set()  # no ./data, no mosquitto.db


def test_mosquitto_conf_with_persistence_names_the_database(tmp_path: Path) -> None:
    port = free_port()
    db_dir = tmp_path / "state"
    conf = tmp_path / "mosquitto.conf"
    extra = (
        f"persistence true\npersistence_location {db_dir}/\npersistence_file broker.db\n"
        "autosave_interval 1800\n"
    )
    conf.write_text(conf_text(port, extra, mosquitto=False))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    present, retained = restart_scenario(starter(conf, run_dir, port), port)
    assert (present, retained) == (True, [b"old"])
    assert {"broker.db", "broker.lock"} <= files(db_dir)
    assert files(run_dir) == set()
    db = sqlite3.connect(f"file:{db_dir / 'broker.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT client_id FROM sessions").fetchall() == [("keep",)]
    finally:
        db.close()


def test_mosquitto_conf_persistence_true_defaults_to_mosquitto_db_here(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(conf_text(port, "persistence true\n", mosquitto=False))
    present, retained = restart_scenario(starter(conf, tmp_path, port), port)
    assert (present, retained) == (True, [b"old"])
    assert "mosquitto.db" in files(tmp_path) and "data" not in files(tmp_path)


def test_toml_stays_durable_in_data(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "midge.toml"
    conf.write_text(f'allow_anonymous = true\n[[listener]]\nport = {port}\nhost = "127.0.0.1"\n')
    present, retained = restart_scenario(starter(conf, tmp_path, port), port)
    assert (present, retained) == (True, [b"old"])
    assert (tmp_path / "data" / "midge.db").exists()


def test_mosquittos_own_database_stops_the_start(tmp_path: Path) -> None:
    """Migrating with the same file: midge does not read, or overwrite, Mosquitto's database."""
    mosquitto_db = b"\x00\xb5\x00mosquitto db" + bytes(100)
    (tmp_path / "mosquitto.db").write_bytes(mosquitto_db)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"persistence true\npersistence_location {tmp_path}\n")
    result = run_midge(["broker", "-c", str(conf), "--host", "127.0.0.1", "--port", "0"])
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert f"{tmp_path / 'mosquitto.db'} is Mosquitto's database" in result.stderr
    assert "persistence_file" in result.stderr
    assert (tmp_path / "mosquitto.db").read_bytes() == mosquitto_db


@pytest.mark.skipif(not HAS_MOSQUITTO, reason="mosquitto is not installed")
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", (False, [])),
        ("persistence false\n", (False, [])),
        (
            "persistence true\npersistence_location {dir}/\npersistence_file b.db\n",
            (True, [b"old"]),
        ),
    ],
    ids=["no-persistence-line", "persistence-false", "persistence-true"],
)
def test_same_as_mosquitto(tmp_path: Path, extra: str, expected: tuple[bool, list[bytes]]) -> None:
    """Differential: the same file (but for `user`) and the same restart give the same session
    present and retained messages under Mosquitto and midge."""
    results = {}
    for name in ("mosquitto", "midge"):
        port = free_port()
        home = tmp_path / name
        home.mkdir()
        conf = home / "mosquitto.conf"
        conf.write_text(conf_text(port, extra.format(dir=home / "db"), name == "mosquitto"))
        (home / "db").mkdir()
        results[name] = restart_scenario(starter(conf, home, port, name == "mosquitto"), port)
    assert results["midge"] == results["mosquitto"] == expected
