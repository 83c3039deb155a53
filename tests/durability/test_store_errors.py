"""A data directory the broker cannot use stops it at start, with the file and the fix; it never
starts empty silently (issue 5). Two brokers cannot share one data directory."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from midge.codec.packets import Publish
from midge.store.base import StoreError
from midge.store.sqlite import SqliteStore
from tests.conftest import RunningBroker
from tests.durability.harness import DurableBroker, connect
from tests.procbroker import ProcBroker, run_midge
from tests.rawclient import RawClient


def conf_for(tmp_path: Path, data_dir: Path) -> Path:
    conf = tmp_path / "midge.toml"
    conf.write_text(f'data_dir = "{data_dir}"\n')
    return conf


def start_fails(conf: Path) -> str:
    result = run_midge(["broker", "-c", str(conf), "--host", "127.0.0.1", "--port", "0"])
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "listening" not in result.stdout
    return result.stderr


def test_missing_data_dir_is_created(tmp_path: Path) -> None:
    data = tmp_path / "a" / "b" / "data"
    broker = DurableBroker(tmp_path)
    try:
        assert (broker.data_dir / "midge.db").exists()
    finally:
        broker.close()
    store = SqliteStore(str(data))
    store.open()
    store.close()
    assert (data / "midge.db").exists()


def test_garbage_database_stops_the_broker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "midge.db").write_bytes(b"this is not an SQLite database at all" * 100)
    err = start_fails(conf_for(tmp_path, data))
    assert str(data / "midge.db") in err
    assert "move" in err and "backup" in err


def test_damaged_database_stops_the_broker(tmp_path: Path) -> None:
    """A real database with a page overwritten: the start-up check finds it."""
    broker = DurableBroker(tmp_path)
    sub = broker.client(4)
    connect(sub, "sub")
    sub.subscribe("d/#", 1)
    sub.disconnect()
    pub = broker.client(4)
    connect(pub, "pub", clean=True)
    for i in range(300):
        pub.publish("d/x", b"x" * 500 + str(i).encode(), qos=1)
    broker.proc.stop()
    broker.close()
    db = broker.data_dir / "midge.db"
    size = db.stat().st_size
    assert size > 8 * 4096
    with open(db, "r+b") as f:
        f.seek(4 * 4096)
        f.write(os.urandom(3 * 4096))
    err = start_fails(broker.conf)
    assert str(db) in err


def test_second_broker_on_the_same_data_dir_stops(tmp_path: Path) -> None:
    broker = DurableBroker(tmp_path)
    try:
        err = start_fails(broker.conf)
        assert "in use by another broker" in err
        assert str(broker.data_dir / "midge.lock") in err
        assert f"pid {broker.proc.proc.pid}" in err
        # The first one is unharmed.
        c = broker.client(4)
        connect(c, "still-there")
        c.close()
    finally:
        broker.close()


def test_lock_is_released_by_sigkill(tmp_path: Path) -> None:
    broker = DurableBroker(tmp_path)
    try:
        broker.restart()  # SIGKILL, then a new broker takes the same directory
        assert broker.proc.proc.poll() is None
    finally:
        broker.close()


def test_in_process_second_open_is_refused(tmp_path: Path) -> None:
    first = SqliteStore(str(tmp_path))
    first.open()
    try:
        with pytest.raises(StoreError, match="in use by another broker"):
            SqliteStore(str(tmp_path)).open()
    finally:
        first.close()
    second = SqliteStore(str(tmp_path))
    second.open()
    second.close()


def test_data_dir_that_is_a_file_stops_the_broker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("a file")
    err = start_fails(conf_for(tmp_path, data))
    assert str(data) in err and "data_dir" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_database_stops_the_broker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sqlite3.connect(data / "midge.db").close()
    os.chmod(data / "midge.db", 0)
    try:
        err = start_fails(conf_for(tmp_path, data))
        assert str(data / "midge.db") in err and "permission" in err
    finally:
        os.chmod(data / "midge.db", 0o644)


def test_cli_broker_is_durable_by_default(tmp_path: Path) -> None:
    """``midge broker`` with no configuration keeps its state in ./data (``make run``)."""
    proc = ProcBroker(("--host", "127.0.0.1", "--port", "0"), cwd=tmp_path)
    try:
        proc.wait_listening()
        assert (tmp_path / "data" / "midge.db").exists()
        assert (tmp_path / "data" / "midge.lock").exists()
    finally:
        proc.close()


def test_persistence_false_keeps_nothing(tmp_path: Path) -> None:
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("persistence false\n")
    proc = ProcBroker(("-c", str(conf), "--host", "127.0.0.1", "--port", "0"), cwd=tmp_path)
    try:
        proc.wait_listening()
        assert not (tmp_path / "data").exists()
    finally:
        proc.close()


def test_write_failure_withholds_acks(
    make_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    """A write that fails while running (full disk, I/O error) stops acknowledgements: nothing is
    acknowledged that is not recorded."""
    broker = make_broker(data_dir=str(tmp_path))
    sub = RawClient(broker.host, broker.port, 4)
    connect(sub, "sub")
    sub.subscribe("w/#", 1)
    sub.disconnect()
    core = broker.server.broker
    assert core is not None
    store = broker.call(lambda: core.store)
    time.sleep(0.2)  # the writer is idle (the subscription committed)
    broker.call(lambda: store._db.close())  # every later statement fails
    pub = RawClient(broker.host, broker.port, 4)
    connect(pub, "pub", clean=True)
    pub.send(Publish("w/x", b"kept?", 1, False, False, 1))
    pub.expect_nothing(1.0)
    assert store._failed is not None
