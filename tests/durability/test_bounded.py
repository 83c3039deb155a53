"""Bounded (issue 5): per-session queue limits hold on disk too, and steady churn leaves no rows
behind and does not grow the database file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from midge.codec.packets import Publish
from midge.codec.properties import Prop
from tests.conftest import RunningBroker
from tests.durability.harness import Publisher, Subscriber, connect, payloads
from tests.memory import DurableMemoryBroker
from tests.rawclient import RawClient


def rows(data_dir: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{data_dir / 'midge.db'}?mode=ro", uri=True)
    try:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("messages", "deliveries", "inbound", "retained", "wills")
        }
    finally:
        db.close()


def page_count(data_dir: Path) -> int:
    """The database's pages as a reader sees it (main file and WAL together)."""
    db = sqlite3.connect(f"file:{data_dir / 'midge.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("PRAGMA page_count").fetchone()[0])
    finally:
        db.close()


def wait_rows(data_dir: Path, expected: dict[str, int], timeout: float = 5.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        got = rows(data_dir)
        if all(got[k] == v for k, v in expected.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_queue_limit_drops_newest_and_counts(
    make_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    """max_queued_messages: a full queue drops the new message (Mosquitto's policy), counted in
    the session's ``dropped`` and the broker's stats; only what was queued is on disk and comes
    back after a restart."""
    broker = make_broker(data_dir=str(tmp_path), max_queued_messages=5)
    sub = RawClient(broker.host, broker.port, 4)
    connect(sub, "sub")
    sub.subscribe("l/#", 1)
    sub.disconnect()
    pub = RawClient(broker.host, broker.port, 4)
    connect(pub, "pub", clean=True)
    for i in range(12):
        pub.publish("l/x", str(i).encode(), qos=1)
    pub.close()
    core = broker.server.broker
    assert core is not None
    assert broker.call(lambda: core.sessions["sub"].dropped) == 7
    stats = broker.call(lambda: core.stats)
    assert stats.queue_dropped == 7 and stats.messages_dropped == 7  # the broker's counters
    broker.stop()
    assert wait_rows(tmp_path, {"deliveries": 5})["deliveries"] == 5
    broker = make_broker(data_dir=str(tmp_path), max_queued_messages=5)
    sub = RawClient(broker.host, broker.port, 4)
    assert connect(sub, "sub").session_present
    got = []
    for packet in sub.recv_all(0.5):
        assert isinstance(packet, Publish)
        sub.ack(packet)
        got.append(packet.payload)
    assert got == [b"0", b"1", b"2", b"3", b"4"]


def test_churn_leaves_no_rows_and_bounded_file(
    make_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    """Rounds of messages queued for an offline session, then drained; and delivered online:
    every acknowledged delivery and its message are deleted, and freed pages are reused."""
    broker = make_broker(data_dir=str(tmp_path), max_queued_messages=0, max_inflight_messages=0)
    sub = RawClient(broker.host, broker.port, 4)
    connect(sub, "sub")
    sub.subscribe("c/#", 2)
    sub.disconnect()
    pub = Publisher(RawClient(broker.host, broker.port, 4))
    connect(pub.client, "pub", clean=True)
    sizes = []
    receiver = Subscriber()
    for round_ in range(8):
        batch = payloads(f"r{round_}", 300)
        pub.send("c/1", batch[:150], 1)
        pub.send("c/2", batch[150:], 2)
        sub = RawClient(broker.host, broker.port, 4)
        assert connect(sub, "sub").session_present
        receiver.receive(sub, set(batch))
        sub.disconnect()
        got = wait_rows(tmp_path, {"messages": 0, "deliveries": 0, "inbound": 0})
        assert got["messages"] == 0 and got["deliveries"] == 0, got
        sizes.append(page_count(tmp_path))
    assert all(n == 1 for n in receiver.counts.values())
    # After the first rounds the database stops growing: pages of deleted rows are reused (the
    # WAL file itself is bounded by SQLite's automatic checkpoints and journal_size_limit).
    assert max(sizes[3:]) <= max(sizes[:3]) * 1.2, sizes


def test_expired_messages_leave_the_disk_while_the_session_is_offline(tmp_path: Path) -> None:
    """The periodic sweep (Broker.purge_expired) drops queued messages whose Message Expiry
    passed (MQTT-3.3.2-5 v5) from detached sessions, rows and messages included; 0.9 s after the
    publish it drops nothing, at 1.1 s the three with a 1 s interval. In process, on a manual
    clock, with the real store (every commit is waited for: the rows are read once settled)."""
    memory = DurableMemoryBroker(tmp_path)
    try:
        sub = memory.client(5)
        connect(sub, "sub")
        sub.subscribe("x/#", 1)
        sub.disconnect()
        pub = memory.client(5)
        connect(pub, "pub", clean=True)
        for i in range(5):
            props: dict[int, Any] = {Prop.MESSAGE_EXPIRY_INTERVAL: 1} if i % 2 == 0 else {}
            pub.publish("x/y", str(i).encode(), qos=1, properties=props)
        memory.settle()
        assert rows(tmp_path)["deliveries"] == 5
        memory.advance(0.9)
        assert memory.call(memory.broker.purge_expired) == 0
        memory.settle()
        assert (rows(tmp_path)["deliveries"], rows(tmp_path)["messages"]) == (5, 5)
        memory.advance(0.2)
        assert memory.call(memory.broker.purge_expired) == 3
        memory.settle()
        got = rows(tmp_path)
        assert (got["deliveries"], got["messages"]) == (2, 2), got
        sub = memory.client(5)
        assert connect(sub, "sub").session_present
        payloads_got = []
        for packet in sub.recv_all(0.5):
            assert isinstance(packet, Publish)
            sub.ack(packet)
            payloads_got.append(packet.payload)
        assert payloads_got == [b"1", b"3"]
    finally:
        memory.stop()
