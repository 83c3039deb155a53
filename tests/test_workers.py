"""``midge broker --workers N``: real worker processes on one port, routing to each other.

Which worker serves a connection is found from /proc (no $SYS): the broker-side socket of a
client is the one whose remote port is the client's local port, and the worker holding it has
that socket's inode among its file descriptors. A SUBACK (and a CONNACK that moved a session)
comes only once every worker knows the subscriptions, so tests publish on another worker straight
after it; only a retained message is given time to reach the other workers (see docs/workers.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from midge.codec import encode
from midge.codec.packets import (
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
    Will,
)
from midge.codec.properties import Prop
from tests.procbroker import ProcBroker
from tests.rawclient import Closed, RawClient, receive_publishes

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/net"), reason="needs Linux /proc")

#: Time for a retained message published on one worker to reach the others.
SETTLE = 0.3
#: A broker of 2 workers on a free loopback port (the tests that restart or kill it in a
#: directory of their own).
TWO_WORKERS = ("--host", "127.0.0.1", "--port", "0", "--workers", "2")


@pytest.fixture
def start() -> Iterator[Any]:
    started: list[ProcBroker] = []

    def run(workers: int, *extra: str) -> ProcBroker:
        proc = ProcBroker(("--host", "127.0.0.1", "--port", "0", "--workers", str(workers), *extra))
        started.append(proc)
        proc.wait_listening()
        return proc

    yield run
    for proc in started:
        proc.close()


@pytest.fixture
def clients() -> Iterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        client.close()


def worker_pids(proc: ProcBroker) -> list[int]:
    with open(f"/proc/{proc.proc.pid}/task/{proc.proc.pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _inode(port: int, client_port: int) -> str:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if int(local.rsplit(":", 1)[1], 16) == port and (
                    int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    return fields[9]
    raise AssertionError(f"no broker socket for client port {client_port}")


def worker_of(proc: ProcBroker, client: RawClient) -> int:
    """The pid of the worker serving ``client`` (retried: until a worker has accepted the
    connection, its socket is in no process's file descriptors, and its inode reads 0)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        target = f"socket:[{_inode(proc.port, client.sock.getsockname()[1])}]"
        for pid in worker_pids(proc):
            fd_dir = f"/proc/{pid}/fd"
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(f"{fd_dir}/{fd}") == target:
                        return pid
                except OSError:
                    continue
        time.sleep(0.01)
    raise AssertionError("no worker holds the connection")


def open_client(
    proc: ProcBroker,
    clients: list[RawClient],
    client_id: str,
    version: int = 4,
    on: int | None = None,
    avoid: int | None = None,
    **fields: Any,
) -> tuple[RawClient, int]:
    """Connect ``client_id``; with ``on``/``avoid`` (a worker pid), retry until the kernel puts
    the connection on (or off) that worker. Returns (client, worker pid)."""
    for _ in range(200):
        client = RawClient(proc.host, proc.port, version=version)
        worker = worker_of(proc, client)
        if (on is not None and worker != on) or (avoid is not None and worker == avoid):
            client.close()
            continue
        clients.append(client)
        connack = client.connect(client_id, **fields)
        assert connack.reason_code == 0
        client.connack = connack
        return client, worker
    raise AssertionError("could not get a connection on the wanted worker")


def test_every_message_reaches_every_matching_subscriber_once(
    start: Any, clients: list[RawClient]
) -> None:
    proc = start(2)
    filters = ["t/#", "t/+/x", "t/+/+", "+/+/x"]
    subs: list[tuple[RawClient, str, int]] = []
    workers: Counter[int] = Counter()
    for i in range(20):
        flt = filters[i % len(filters)]
        qos = i % 3
        client, worker = open_client(proc, clients, f"sub{i}")
        workers[worker] += 1
        client.subscribe(flt, qos)
        subs.append((client, flt, qos))
    pub_workers: Counter[int] = Counter()
    for i in range(20):
        client, worker = open_client(proc, clients, f"pub{i}")
        pub_workers[worker] += 1
        client.publish(f"t/{i}/x" if i % 2 else f"t/{i}/y", f"m{i}".encode(), qos=i % 3)
    assert len(workers) == 2 and len(pub_workers) == 2, (workers, pub_workers)
    for client, flt, qos in subs:
        expected = {f"m{i}" for i in range(20) if flt not in ("t/+/x", "+/+/x") or i % 2}
        got = receive_publishes(client, len(expected), timeout=5)
        assert sorted(p.payload.decode() for p in got) == sorted(expected), flt
        for p in got:
            i = int(p.payload[1:])
            assert p.qos == min(qos, i % 3)
        client.expect_nothing(0.3)  # exactly once


def test_retained_set_on_one_worker_is_seen_on_another(
    start: Any, clients: list[RawClient]
) -> None:
    proc = start(2)
    pub, a = open_client(proc, clients, "pub")
    pub.publish("r/1", b"kept", qos=1, retain=True)
    pub.publish("r/2", b"gone", qos=1, retain=True)
    pub.publish("r/2", b"", qos=1, retain=True)  # a clear crosses workers too
    time.sleep(SETTLE)
    sub, b = open_client(proc, clients, "sub", avoid=a)
    assert b != a
    sub.subscribe("r/#", 1)
    got = receive_publishes(sub, 1)
    assert (got[0].topic, got[0].payload, got[0].retain) == ("r/1", b"kept", True)
    sub.expect_nothing(0.3)


def test_takeover_across_workers_moves_the_session(start: Any, clients: list[RawClient]) -> None:
    proc = start(2)
    first, a = open_client(
        proc,
        clients,
        "mover",
        version=5,
        clean_start=True,
        properties={Prop.SESSION_EXPIRY_INTERVAL: 300},
    )
    first.subscribe("q/#", 1)
    pub, _ = open_client(proc, clients, "pub")
    pub.publish("q/1", b"before", qos=1)
    assert receive_publishes(first, 1)[0].payload == b"before"
    first.disconnect()
    time.sleep(0.2)
    pub.publish("q/2", b"queued1", qos=1)
    pub.publish("q/3", b"queued2", qos=2)
    # The session lives on worker a; the client comes back on the other worker.
    # Still persistent (expiry > 0): a session with expiry 0 would end with this connection
    # when the third takes it over (MQTT 5 3.1.2.11.2, as Mosquitto).
    second, b = open_client(
        proc,
        clients,
        "mover",
        version=5,
        avoid=a,
        clean_start=False,
        properties={Prop.SESSION_EXPIRY_INTERVAL: 300},
    )
    assert b != a
    got = receive_publishes(second, 2)
    assert [p.payload for p in got] == [b"queued1", b"queued2"]
    pub.publish("q/4", b"after", qos=1)
    assert receive_publishes(second, 1)[0].payload == b"after"
    # A live connection is taken over from the other worker: DISCONNECT 0x8E (v5).
    third = RawClient(proc.host, proc.port, version=5)
    for _ in range(200):
        if worker_of(proc, third) == a:
            break
        third.close()
        third = RawClient(proc.host, proc.port, version=5)
    clients.append(third)
    connack = third.connect("mover", clean_start=False)
    assert connack.session_present, proc.describe()
    assert second.expect(Disconnect).reason_code == 0x8E
    second.wait_closed(2)
    pub.publish("q/5", b"third", qos=1)
    got = receive_publishes(third, 1)
    if got[0].payload == b"after":
        # Its PUBACK can still be on the way to the old worker when the session moves: an
        # unacknowledged QoS 1 message is then sent again, with DUP (MQTT-4.4.0-1).
        assert got[0].dup
        got = receive_publishes(third, 1)
    assert got[0].payload == b"third"


def test_publish_on_another_worker_right_after_suback_is_delivered(
    start: Any, clients: list[RawClient]
) -> None:
    """After SUBACK every matching message must be delivered, wherever it is published: the
    SUBACK waits until the other workers know the subscription. Repeated, each time with a
    filter no worker knew, so each SUBACK races a publish on the other worker."""
    proc = start(2)
    pub, a = open_client(proc, clients, "pub")
    sub, b = open_client(proc, clients, "sub", version=5, avoid=a)
    assert a != b
    for i in range(100):
        sub.subscribe(f"race/{i}", 1)
        pub.publish(f"race/{i}", f"m{i}".encode(), qos=i % 2)
        got = receive_publishes(sub, 1, timeout=5)
        assert got[0].payload == f"m{i}".encode()
    sub.expect_nothing(0.2)


def test_packets_after_a_held_subscribe_keep_their_order(
    start: Any, clients: list[RawClient]
) -> None:
    """What the client sends after a SUBSCRIBE whose SUBACK waits for the other workers is
    handled after it, in order: SUBACK, then its own publish to the new filter (delivered, then
    acknowledged), then PINGRESP, all sent in one write."""
    proc = start(2)
    sub, _ = open_client(proc, clients, "sub")
    for i in range(20):
        pid = sub.next_packet_id()
        sub.send_raw(
            encode(Subscribe(pid, [Subscription(f"order/{i}", 0)]), 4)
            + encode(Publish(f"order/{i}", b"x", 1, False, False, pid + 1), 4)
            + encode(Pingreq(), 4)
        )
        kinds = [type(sub.recv(5)).__name__ for _ in range(4)]
        assert kinds == ["Suback", "Publish", "Puback", "Pingresp"], kinds
        sub.next_packet_id()


def test_takeover_of_a_v311_client_publishes_will_on_clean_start(
    start: Any, clients: list[RawClient]
) -> None:
    proc = start(2)
    watcher, _ = open_client(proc, clients, "watcher")
    watcher.subscribe("will/#", 0)
    old, a = open_client(
        proc, clients, "dup", clean_start=True, will=Will("will/dup", b"bye", 0, False)
    )
    new, _ = open_client(proc, clients, "dup", avoid=a, clean_start=True)
    assert old.wait_closed(3)
    got = receive_publishes(watcher, 1)
    assert (got[0].topic, got[0].payload) == ("will/dup", b"bye")
    new.expect_nothing(0.2)


def test_shared_subscription_delivers_each_message_once_across_workers(
    start: Any, clients: list[RawClient]
) -> None:
    proc = start(3)
    members: list[RawClient] = []
    workers: set[int] = set()
    for i in range(9):
        client, worker = open_client(proc, clients, f"member{i}", version=5)
        client.subscribe("$share/g/s/#", 1)
        members.append(client)
        workers.add(worker)
    plain, _ = open_client(proc, clients, "plain", version=5)
    plain.subscribe("s/#", 0)
    assert len(workers) >= 2
    pubs = [open_client(proc, clients, f"p{i}", version=5)[0] for i in range(3)]
    for n in range(60):
        pubs[n % 3].publish(f"s/{n}", str(n).encode(), qos=1)
    received: Counter[str] = Counter()
    serving: set[int] = set()
    deadline = time.monotonic() + 10
    # Read until all 60 are in (bounded), then one more quiet round so a duplicate would show.
    while time.monotonic() < deadline:
        before = sum(received.values())
        for i, client in enumerate(members):
            got = [p for p in client.recv_all(0.05) if isinstance(p, Publish)]
            for p in got:
                client.ack(p)
            if got:
                serving.add(i)
            received.update(p.payload.decode() for p in got)
        if before >= 60 and sum(received.values()) == before:
            break
    assert received == Counter(str(n) for n in range(60))  # each exactly once
    assert len(serving) >= 2
    plain_got: list[Publish] = []
    while len(plain_got) < 60 and time.monotonic() < deadline + 5:
        plain_got += [p for p in plain.recv_all(0.2) if isinstance(p, Publish)]
    assert len(plain_got) == 60


def test_sigterm_publishes_wills_across_workers_and_exits_0(
    start: Any, clients: list[RawClient]
) -> None:
    proc = start(2)
    watcher, a = open_client(proc, clients, "watcher", version=5)
    watcher.subscribe("will/#", 0)
    open_client(proc, clients, "dying", avoid=a, will=Will("will/dying", b"gone", 0, False))
    time.sleep(0.1)
    assert proc.stop(signal.SIGTERM) == 0, proc.describe()
    packets = watcher.recv_all(1.0)
    publishes = [p for p in packets if isinstance(p, Publish)]
    assert [(p.topic, p.payload) for p in publishes] == [("will/dying", b"gone")]
    disconnects = [p for p in packets if isinstance(p, Disconnect)]
    assert disconnects and disconnects[0].reason_code == 0x8B
    assert proc.stdout.count("listening on") == 1


def test_workers_option_in_config_file(start: Any, tmp_path: Any, clients: list[RawClient]) -> None:
    conf = tmp_path / "midge.conf"
    conf.write_text("workers 2\nallow_anonymous true\nsys_interval 1\nlistener 0 127.0.0.1\n")
    proc = ProcBroker(("-c", str(conf)))
    try:
        proc.wait_listening()
        assert len(worker_pids(proc)) == 2
        client = RawClient(proc.host, proc.port)
        clients.append(client)
        assert isinstance(client.connect("c"), Connack)
        # $SYS: worker 0 alone publishes (docs/workers.md), so the uptime seen from either
        # worker rises by one update at a time; two publishers would send each second twice.
        client.subscribe("$SYS/broker/uptime", 0)
        uptimes = [int(p.payload.split()[0]) for p in receive_publishes(client, 4, timeout=10)]
        assert uptimes == sorted(set(uptimes)), uptimes
        assert proc.stop() == 0
    finally:
        proc.close()


def test_batch_window_with_workers_routes_every_message_once_in_order(
    tmp_path: Any, clients: list[RawClient]
) -> None:
    """``batch_window``: each worker rests between busy turns, after writing out its clients'
    output and its frames for the other workers. Messages cross workers, in order and once,
    the SUBACK still waits for every worker, and SIGTERM still stops the broker with 0."""
    conf = tmp_path / "midge.conf"
    conf.write_text("workers 2\nbatch_window 0.01\nallow_anonymous true\nlistener 0 127.0.0.1\n")
    proc = ProcBroker(("-c", str(conf)))
    try:
        proc.wait_listening()
        pub, a = open_client(proc, clients, "pub", version=5)
        sub, b = open_client(proc, clients, "sub", avoid=a)
        assert a != b
        for i in range(10):
            sub.subscribe(f"bw/{i}", 2)  # a filter no worker knew: the SUBACK waits for both
            pub.publish(f"bw/{i}", f"first{i}".encode(), qos=i % 3)
            assert receive_publishes(sub, 1, timeout=5)[0].payload == f"first{i}".encode()
        for i in range(30):
            pub.publish(f"bw/{i % 10}", f"m{i}".encode(), qos=i % 3)
        got = receive_publishes(sub, 30, timeout=10)
        assert [p.payload.decode() for p in got] == [f"m{i}" for i in range(30)]
        sub.expect_nothing(0.3)
        assert proc.stop() == 0
    finally:
        proc.close()


def test_batch_window_is_reloaded_on_every_worker(tmp_path: Any, clients: list[RawClient]) -> None:
    """SIGHUP to the parent gives every worker the window the file now says, and takes it
    away again; /metrics (served by worker 0) shows each worker's window and rests, and the
    workers rest only while they have a window."""
    from midge.cluster.totals import INTERVAL
    from tests.test_batch_window import WindowConf, by_worker, exchange, wait_metrics

    conf = WindowConf(tmp_path, "workers 2\nallow_anonymous true\npersistence false\n")
    url = conf.url
    rests, window = "midge_batch_window_rests_total", "midge_batch_window_seconds"
    proc = conf.start()
    try:
        proc.wait_listening()
        pub, a = open_client(proc, clients, "pub")
        sub, _ = open_client(proc, clients, "sub", avoid=a)
        sub.subscribe("bw", 1)
        exchange(pub, sub, "bw", 10)  # across the workers: both write
        # Worker 1's numbers reach worker 0 every second.
        found = wait_metrics(url, lambda f: set(f.get(window, {})) == {0, 1})
        assert found[window] == {0: 0.0, 1: 0.0} and found[rests] == {0: 0.0, 1: 0.0}, found

        conf.write(0.01)
        proc.send_signal(signal.SIGHUP)
        found = wait_metrics(url, lambda f: f[window] == {0: 0.01, 1: 0.01})
        assert found[window] == {0: 0.01, 1: 0.01}, found
        exchange(pub, sub, "bw", 10)
        found = wait_metrics(url, lambda f: min(f[rests].values()) >= 5)
        assert min(found[rests].values()) >= 5, found  # each worker rested

        conf.write(None)
        proc.send_signal(signal.SIGHUP)
        found = wait_metrics(url, lambda f: f[window] == {0: 0.0, 1: 0.0})
        assert found[window] == {0: 0.0, 1: 0.0}, found
        exchange(pub, sub, "bw", 10)
        time.sleep(INTERVAL * 1.5)  # worker 1's numbers, sent after the exchange
        after = by_worker(url)
        for wid in (0, 1):
            # Only a rest already due when the window went may still have been taken.
            assert after[rests][wid] <= found[rests][wid] + 1, (found, after)
        assert proc.stop() == 0, proc.describe()
    finally:
        proc.close()


def test_retained_message_is_on_every_worker_before_its_ack(
    start: Any, clients: list[RawClient]
) -> None:
    """The PUBACK (QoS 1) or PUBREC (QoS 2) of a retained publish comes only once every worker
    stores it. A worker stopped (SIGSTOP) holds the ack back until it runs again; then a
    SUBSCRIBE on it gets the message. And straight after each ack, a SUBSCRIBE on another
    worker gets the message, for 40 topics."""
    proc = start(3)
    pub, a = open_client(proc, clients, "pub")
    sub, b = open_client(proc, clients, "sub", avoid=a)
    ack: type[Puback | Pubrec]
    for qos, ack in ((1, Puback), (2, Pubrec)):
        os.kill(b, signal.SIGSTOP)
        try:
            pid = pub.next_packet_id()
            pub.send(Publish(f"held/{qos}", b"kept", qos, True, False, pid))
            pub.expect_nothing(0.5)  # worker b has not stored it yet
        finally:
            os.kill(b, signal.SIGCONT)
        assert pub.expect(ack).packet_id == pid
        if qos == 2:
            pub.send(Pubrel(pid))
            pub.expect(Pubcomp)
        sub.subscribe(f"held/{qos}", 1)
        got = receive_publishes(sub, 1, timeout=5)
        assert (got[0].topic, got[0].payload, got[0].retain) == (f"held/{qos}", b"kept", True)
    for i in range(40):
        pub.publish(f"ret/{i}", f"v{i}".encode(), qos=1 + i % 2, retain=True)
        sub.subscribe(f"ret/{i}", 1)
        got = receive_publishes(sub, 1, timeout=5)
        assert (got[0].topic, got[0].payload) == (f"ret/{i}", f"v{i}".encode())


def test_simultaneous_connects_with_one_client_id_end_with_one_owner(
    start: Any, clients: list[RawClient]
) -> None:
    """Two CONNECTs with one client id, sent at the same moment to two workers: both are
    accepted (CONNACK), and one takes the other over (DISCONNECT 0x8E), whichever worker
    claimed first; the survivor stays connected and owns the session. 20 rounds."""
    proc = start(2)
    watcher, _ = open_client(proc, clients, "watcher", version=5)
    watcher.subscribe("gone/#", 0)
    for i in range(20):
        pair: list[RawClient] = []
        while len(pair) < 2:
            client = RawClient(proc.host, proc.port, version=5)
            clients.append(client)
            if not pair or worker_of(proc, client) != worker_of(proc, pair[0]):
                pair.append(client)
        connect = encode(
            Connect(
                client_id=f"twin{i}",
                protocol_level=5,
                clean_start=False,
                properties={Prop.SESSION_EXPIRY_INTERVAL: 60},
                will=Will(f"gone/{i}", b"w", 0, False),
            ),
            5,
        )
        for client in pair:
            client.send_raw(connect)
        for client in pair:
            assert client.expect(Connack).reason_code == 0
        survivors = []
        for client in pair:
            try:
                packet = client.recv(0.3)
            except TimeoutError:
                survivors.append(client)
                continue
            assert isinstance(packet, Disconnect) and packet.reason_code == 0x8E, packet
            assert client.wait_closed(2)
        assert len(survivors) == 1, f"round {i}: {len(survivors)} owners"
        survivors[0].ping()
        # The one owner is the one a third CONNECT takes over.
        third = RawClient(proc.host, proc.port, version=5)
        clients.append(third)
        assert third.connect(f"twin{i}", clean_start=False).session_present
        assert survivors[0].expect(Disconnect).reason_code == 0x8E
    watcher.expect_nothing(0.1)  # no will: every session lived on


def _read_for(client: RawClient, seconds: float) -> list[Publish]:
    """Every PUBLISH that arrives within ``seconds`` (or until the broker closes), each QoS 1
    one acknowledged as it comes (an ack the closed socket refuses is lost, as on a network)."""
    got: list[Publish] = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return got
        try:
            packet = client.recv(left)
        except (TimeoutError, Closed):
            return got
        if isinstance(packet, Publish):
            got.append(packet)
            if packet.qos:
                with contextlib.suppress(OSError):
                    client.send(Puback(packet.packet_id or 0))


def test_messages_published_while_a_session_moves_are_not_missed(
    start: Any, clients: list[RawClient]
) -> None:
    """A publisher publishes QoS 1 messages without pause while its subscriber's session is
    taken over 12 times, each time by a connection on another worker: every message arrives,
    in order, and none twice except as a re-sent (DUP) in-flight one."""
    proc = start(3)
    expiry = {Prop.SESSION_EXPIRY_INTERVAL: 300}
    current, where = open_client(
        proc, clients, "mover", version=5, clean_start=True, properties=expiry
    )
    current.subscribe("mv/#", 1)
    pub, _ = open_client(proc, clients, "pub", version=5)
    stop = threading.Event()
    sent = [0]

    def publish() -> None:
        while not stop.is_set():
            pub.publish("mv/x", str(sent[0]).encode(), qos=1)
            sent[0] += 1

    thread = threading.Thread(target=publish)
    thread.start()
    got: list[Publish] = []
    try:
        for _ in range(12):
            got += _read_for(current, 0.1)
            new, where = open_client(
                proc,
                clients,
                "mover",
                version=5,
                avoid=where,
                clean_start=False,
                properties=expiry,
            )
            got += _read_for(current, 2.0)  # until it is taken over (0x8E) and closed
            current = new
    finally:
        stop.set()
        thread.join(10)
    total = sent[0]
    assert total > 100, total
    deadline = time.monotonic() + 10
    while {int(p.payload) for p in got} != set(range(total)) and time.monotonic() < deadline:
        got += _read_for(current, 0.3)
    numbers = {int(p.payload) for p in got}
    missed = sorted(set(range(total)) - numbers)
    assert not missed, f"{len(missed)} of {total} missed: {missed[:20]}"
    fresh = [int(p.payload) for p in got if not p.dup]
    twice = [n for n, c in Counter(fresh).items() if c > 1]
    assert not twice, twice[:20]
    # In order (one publisher, MQTT 4.6), apart from re-sent in-flight ones.
    assert fresh == sorted(fresh)


def _persistent(
    proc: ProcBroker, clients: list[RawClient], client_id: str, **kw: Any
) -> tuple[RawClient, int]:
    return open_client(
        proc,
        clients,
        client_id,
        version=5,
        clean_start=False,
        properties={Prop.SESSION_EXPIRY_INTERVAL: 3600},
        **kw,
    )


def test_persistence_with_workers_survives_a_restart(
    tmp_path: Any, clients: list[RawClient]
) -> None:
    """With persistence on (the default) and 2 workers, each worker keeps its database: a
    persistent session, its queued messages and the retained messages survive a restart of the
    whole broker, whichever worker the client comes back on; messages published on either
    worker after the restart reach the restored session."""
    proc = ProcBroker(TWO_WORKERS, cwd=tmp_path)
    try:
        proc.wait_listening()
        keeper, a = _persistent(proc, clients, "keeper")
        keeper.subscribe("p/#", 2)
        keeper.disconnect()
        pub, b = open_client(proc, clients, "pub", version=5, avoid=a)
        assert b != a
        for i in range(10):
            pub.publish(f"p/{i}", f"m{i}".encode(), qos=1 + i % 2)
        pub.publish("r/x", b"kept", qos=1, retain=True)
        assert proc.stop() == 0, proc.describe()
    finally:
        proc.close()
    assert {"midge.db", "midge-w1.db"} <= set(os.listdir(tmp_path / "data"))
    proc = ProcBroker(TWO_WORKERS, cwd=tmp_path)
    try:
        proc.wait_listening()
        # The restored session's subscriptions are known to both workers: a message published
        # on either before the client is back is queued for it.
        first, x = open_client(proc, clients, "pub-x", version=5)
        second, _ = open_client(proc, clients, "pub-y", version=5, avoid=x)
        first.publish("p/10", b"m10", qos=1)
        second.publish("p/11", b"m11", qos=1)
        keeper, w = _persistent(proc, clients, "keeper")
        assert keeper.connack is not None and keeper.connack.session_present
        got = receive_publishes(keeper, 12, timeout=5)
        assert [p.payload for p in got] == [f"m{i}".encode() for i in range(12)]
        keeper.disconnect()
        # Back on the other worker: the restored session moves there, subscriptions included.
        keeper, _ = _persistent(proc, clients, "keeper", avoid=w)
        assert keeper.connack is not None and keeper.connack.session_present
        pub, _ = open_client(proc, clients, "pub2", version=5)
        pub.publish("p/after", b"after", qos=1)
        assert receive_publishes(keeper, 1, timeout=5)[0].payload == b"after"
        sub, _ = open_client(proc, clients, "sub", version=5)
        sub.subscribe("r/#", 1)
        got = receive_publishes(sub, 1, timeout=5)
        assert (got[0].topic, got[0].payload, got[0].retain) == ("r/x", b"kept", True)
        assert proc.stop() == 0
    finally:
        proc.close()


def test_kill_9_of_a_worker_loses_no_acknowledged_message(
    tmp_path: Any, clients: list[RawClient]
) -> None:
    """With persistence, a QoS 1 message published on worker b for a persistent session held by
    worker a is acknowledged only once a has it on disk: while a is stopped (SIGSTOP) no PUBACK
    comes. Right after the last PUBACK a is killed (SIGKILL); after a restart of the broker
    the session has every acknowledged message."""
    proc = ProcBroker(TWO_WORKERS, cwd=tmp_path)
    try:
        proc.wait_listening()
        keeper, a = _persistent(proc, clients, "keeper")
        keeper.subscribe("k/#", 1)
        keeper.disconnect()
        pub, _ = open_client(proc, clients, "pub", version=5, avoid=a)
        for i in range(20):
            pub.publish(f"k/{i}", f"m{i}".encode(), qos=1)
        os.kill(a, signal.SIGSTOP)
        try:
            pid = pub.next_packet_id()
            pub.send(Publish("k/20", b"m20", 1, False, False, pid))
            pub.expect_nothing(0.5)  # worker a has not stored it
        finally:
            os.kill(a, signal.SIGCONT)
        assert pub.expect(Puback, timeout=5).packet_id == pid
        os.kill(a, signal.SIGKILL)
        assert proc.stop() == 0, proc.describe()
    finally:
        proc.close()
    proc = ProcBroker(TWO_WORKERS, cwd=tmp_path)
    try:
        proc.wait_listening()
        keeper, _ = _persistent(proc, clients, "keeper")
        assert keeper.connack is not None and keeper.connack.session_present
        got = receive_publishes(keeper, 21, timeout=5)
        assert [p.payload for p in got] == [f"m{i}".encode() for i in range(21)]
    finally:
        proc.close()


@pytest.mark.parametrize(
    ("before", "after", "limit", "tries", "reason"),
    [
        ("global_max_connections 4\n", "", 4, 8, 0x97),
        ("", "max_connections 3\n", 3, 6, 0x97),
        ("max_connection_rate 3\n", "", 3, 6, 0x9F),
    ],
    ids=["global_max_connections", "max_connections", "max_connection_rate"],
)
def test_connection_limits_hold_for_the_whole_broker(
    tmp_path: Any,
    clients: list[RawClient],
    before: str,
    after: str,
    limit: int,
    tries: int,
    reason: int,
) -> None:
    """With 2 workers a connection limit counts every worker's connections: of ``tries``
    connections spread over both workers, ``limit`` are accepted, the rest refused (v5 0x97
    Quota exceeded, 0x9F Connection rate exceeded)."""
    conf = tmp_path / "midge.conf"
    conf.write_text(
        f"workers 2\nallow_anonymous true\npersistence false\n{before}listener 0 127.0.0.1\n{after}"
    )
    # The kernel spreads connections over the workers at random (SO_REUSEPORT): a run where
    # all ``tries`` landed on one worker proves nothing, and is run again on a fresh broker.
    for _ in range(5):
        proc = ProcBroker(("-c", str(conf)))
        try:
            proc.wait_listening()
            if _limits_hold(proc, clients, limit, tries, reason):
                return
        finally:
            proc.close()
    raise AssertionError("five runs in a row put every connection on one worker")


def _limits_hold(
    proc: ProcBroker, clients: list[RawClient], limit: int, tries: int, reason: int
) -> bool:
    """One run of the limits scenario; False when every connection landed on one worker."""
    accepted: list[tuple[RawClient, int]] = []
    refused = 0
    workers: set[int] = set()
    for i in range(tries):
        client = RawClient(proc.host, proc.port, version=5)
        clients.append(client)
        worker = worker_of(proc, client)
        workers.add(worker)
        connack = client.connect(f"c{i}")
        if connack.reason_code == 0:
            accepted.append((client, worker))
        else:
            assert connack.reason_code == reason
            refused += 1
    if len(workers) < 2:
        return False  # one worker's count would be the whole broker's
    assert (len(accepted), refused) == (limit, tries - limit)
    if reason == 0x97:
        # A connection closed on one worker frees its place for a connection on another.
        gone, where = accepted[0]
        gone.disconnect()
        gone.wait_closed(2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            client = RawClient(proc.host, proc.port, version=5)
            clients.append(client)
            if worker_of(proc, client) == where:
                client.close()
                continue
            if client.connect("late").reason_code == 0:
                break
        else:
            raise AssertionError("the freed place was not given to another worker's client")
    return True


def test_the_wills_of_a_killed_workers_connections_are_published(
    tmp_path: Any, clients: list[RawClient]
) -> None:
    """SIGKILL of a worker ends its connections without a DISCONNECT: the other worker, which
    kept their wills, publishes them. At once for a session that ends with its connection (a
    v3.1.1 clean session; v5 expiry 0, its delay not waited for: the session ended); after its
    Will Delay for a persistent session (it comes back with the restarted worker); never for a
    client that disconnected normally, nor for a persistent session whose client connects
    again within its delay."""
    proc = ProcBroker(TWO_WORKERS, cwd=tmp_path)
    try:
        proc.wait_listening()
        watcher, a = open_client(proc, clients, "watcher")
        watcher.subscribe("will/#", 1)
        persistent = {Prop.SESSION_EXPIRY_INTERVAL: 300}
        doomed = 0

        def on_b(client_id: str, version: int, delay: int = 0, **fields: Any) -> RawClient:
            nonlocal doomed
            props: dict[int, Any] = {Prop.WILL_DELAY_INTERVAL: delay} if delay else {}
            will = Will(f"will/{client_id}", f"gone:{client_id}".encode(), 1, False, props)
            client, doomed = open_client(
                proc, clients, client_id, version=version, avoid=a, will=will, **fields
            )
            return client

        on_b("v3", 4)
        on_b("v5", 5, delay=3600)
        on_b("later", 5, delay=1, clean_start=False, properties=persistent)
        on_b("back", 5, delay=2, clean_start=False, properties=persistent).subscribe("b/#", 1)
        on_b("polite", 4).disconnect()
        # The PUBACK of a message for "back" comes once its worker has committed it, and all
        # before it: "back"'s session is in that worker's database.
        watcher.publish("b/1", b"for back", qos=1)
        os.kill(doomed, signal.SIGKILL)
        _wait_dead(doomed)
        # "back" connects again at once (wherever the kernel puts it): its will is not due.
        back, _ = open_client(
            proc, clients, "back", version=5, clean_start=False, properties=persistent
        )
        assert back.connack is not None and back.connack.session_present
        wills = receive_publishes(watcher, 3, timeout=10) + watcher.more_publishes(1.0, ack=True)
        got = [(p.topic, p.payload) for p in wills]
        assert sorted(got) == [
            ("will/later", b"gone:later"),
            ("will/v3", b"gone:v3"),
            ("will/v5", b"gone:v5"),
        ], got
        assert got[-1] == ("will/later", b"gone:later")  # after its delay
        assert "the wills of its 4 connections are due" in proc.stderr
        assert proc.stop() == 0, proc.describe()
    finally:
        proc.close()


def test_a_dead_worker_is_restarted_and_its_clients_resume(
    tmp_path: Any, clients: list[RawClient]
) -> None:
    """SIGKILL of a worker: the supervisor starts it again. The new worker has mesh links to
    the live one (messages cross both ways), the retained set as the live worker has it
    (changed while it was down: a new message and a clear), and its database: a client whose
    persistent session it held reconnects and resumes it, with the messages queued before; a
    client of it that comes back while it is down waits for it and gets its session too (not
    a new one)."""
    proc = ProcBroker(TWO_WORKERS, cwd=tmp_path)
    try:
        proc.wait_listening()
        keeper, a = _persistent(proc, clients, "keeper")
        keeper.subscribe("d/#", 1)
        keeper.disconnect()
        other, _ = _persistent(proc, clients, "other", on=a)
        other.subscribe("old/#", 1)
        other.disconnect()
        pub, b = open_client(proc, clients, "pub", version=5, avoid=a)
        pub.publish("d/1", b"queued", qos=1)
        pub.publish("r/old", b"old", qos=1, retain=True)
        pub.publish("r/gone", b"gone", qos=1, retain=True)
        os.kill(a, signal.SIGKILL)
        pub.publish("r/new", b"new", qos=1, retain=True)  # while a is down
        pub.publish("r/gone", b"", qos=1, retain=True)
        # A client of the dead worker comes back meanwhile: its CONNECT waits for the worker to
        # be back, and it gets its session (restored there), not a new one.
        other, _ = _persistent(proc, clients, "other")
        assert other.connack is not None and other.connack.session_present
        other.subscribe("new/#", 1)
        other.disconnect()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = worker_pids(proc)
            if len(pids) == 2 and a not in pids:
                break
            time.sleep(0.05)
        (restarted,) = set(worker_pids(proc)) - {b}
        assert proc.proc.poll() is None, proc.describe()
        # Its clients reconnect (wherever the kernel puts them) and resume.
        keeper, _ = _persistent(proc, clients, "keeper")
        assert keeper.connack is not None and keeper.connack.session_present
        got = receive_publishes(keeper, 1, timeout=5)
        assert got[0].payload == b"queued"
        # On the restarted worker: the retained set as the live worker has it, and routing both
        # ways over its new mesh links.
        there, _ = open_client(proc, clients, "there", version=5, on=restarted)
        there.subscribe("r/#", 1)
        got = receive_publishes(there, 2, timeout=5)
        assert sorted((p.topic, p.payload) for p in got) == [("r/new", b"new"), ("r/old", b"old")]
        there.expect_nothing(0.3)
        there.subscribe("x/#", 1)
        pub.publish("x/1", b"to the new one", qos=1)
        assert receive_publishes(there, 1, timeout=5)[0].payload == b"to the new one"
        pub.subscribe("y/#", 1)
        there.publish("y/1", b"from the new one", qos=1)
        assert receive_publishes(pub, 1, timeout=5)[0].payload == b"from the new one"
        # "other" is one session: its subscription from before the kill and the one made
        # while the worker was down.
        pub.publish("old/1", b"old", qos=1)
        pub.publish("new/1", b"new", qos=1)
        other, _ = _persistent(proc, clients, "other")
        assert other.connack is not None and other.connack.session_present
        assert [p.payload for p in receive_publishes(other, 2, timeout=5)] == [b"old", b"new"]
        other.expect_nothing(0.3)
        assert "worker 0 restarted" in proc.stderr or "worker 1 restarted" in proc.stderr
        assert proc.stop() == 0, proc.describe()
    finally:
        proc.close()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def test_sys_and_metrics_show_the_whole_broker(tmp_path: Any, clients: list[RawClient]) -> None:
    """$SYS (published by worker 0) and /metrics (served by worker 0) add the other workers'
    numbers to worker 0's: clients connected, subscriptions, messages received."""
    import httpx

    from tests.procbroker import free_port

    http_port = free_port()
    conf = tmp_path / "midge.conf"
    conf.write_text(
        "workers 2\nallow_anonymous true\npersistence false\nsys_interval 1\n"
        f"listener 0 127.0.0.1\nlistener {http_port} 127.0.0.1\nprotocol http\n"
    )
    proc = ProcBroker(("-c", str(conf)), listeners=2)
    try:
        proc.wait_listening()
        workers: Counter[int] = Counter()
        subscribed = []
        for i in range(6):
            # c1 goes to the worker c0 is not on: both workers hold some.
            avoid = next(iter(workers)) if i == 1 else None
            client, worker = open_client(proc, clients, f"c{i}", avoid=avoid)
            workers[worker] += 1
            client.subscribe(f"s/{i}/#", 0)
            subscribed.append(client)
        assert len(workers) == 2, workers  # both workers hold some
        for i in range(6):
            subscribed[0].publish(f"p/{i}", b"x", qos=0)
        watcher, _ = open_client(proc, clients, "watcher")
        watcher.subscribe("$SYS/broker/#", 0)  # the 7th client, the 7th subscription
        expected = {
            "$SYS/broker/clients/connected": "7",
            "$SYS/broker/subscriptions/count": "7",
        }
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(seen.get(t) != v for t, v in expected.items()):
            for p in watcher.recv_all(0.2):
                if isinstance(p, Publish):
                    seen[p.topic] = p.payload.decode()
        assert {t: seen.get(t) for t in expected} == expected
        assert int(seen["$SYS/broker/publish/messages/received"]) >= 6
        url = f"http://127.0.0.1:{http_port}/metrics"
        deadline = time.monotonic() + 5
        while True:
            text = httpx.get(url).text
            if _metric(text, "midge_clients_connected") == 7 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert _metric(text, "midge_clients_connected") == 7
        assert _metric(text, "midge_subscriptions") == 7
        assert _metric(text, "midge_connects_total") >= 7
        assert proc.stop() == 0
    finally:
        proc.close()


def test_admin_api_sees_every_worker(tmp_path: Any, clients: list[RawClient]) -> None:
    """The admin API (served by worker 0) lists, shows, disconnects and deletes the sessions of
    every worker, and clears a retained message on every worker."""
    import httpx

    from midge.auth.passwd import hash_password
    from tests.procbroker import free_port

    http_port = free_port()
    conf = tmp_path / "midge.conf"
    conf.write_text(
        "workers 2\nallow_anonymous true\npersistence false\n"
        f"listener 0 127.0.0.1\nlistener {http_port} 127.0.0.1\nprotocol http\n"
        f"admin_user admin\nadmin_password_hash {hash_password(b'pw').encode()}\n"
    )
    proc = ProcBroker(("-c", str(conf)), listeners=2)
    try:
        proc.wait_listening()
        api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", auth=("admin", "pw"))
        names: dict[int, list[str]] = {}
        for i in range(6):
            # c1 goes to the worker c0 is not on: both workers hold some.
            avoid = next(iter(names)) if i == 1 else None
            client, worker = open_client(proc, clients, f"c{i}", version=5, avoid=avoid)
            client.subscribe(f"s/{i}", 1)
            names.setdefault(worker, []).append(f"c{i}")
        assert len(names) == 2
        listed = api.get("/api/clients").json()
        assert listed["total"] == 6
        assert sorted(item["client_id"] for item in listed["items"]) == [f"c{i}" for i in range(6)]
        for ids in names.values():  # a client of each worker, shown, then disconnected
            details = api.get(f"/api/clients/{ids[0]}").json()
            assert details["subscription_list"][0]["filter"] == f"s/{ids[0][1:]}"
            assert api.post(f"/api/clients/{ids[0]}/disconnect", json={}).status_code == 204
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            listed = api.get("/api/clients", params={"state": "connected"}).json()
            if listed["total"] == 4:
                break
            time.sleep(0.05)
        assert listed["total"] == 4
        assert api.get("/api/clients/nobody").status_code == 404
        # Persistent sessions left on each worker are deleted through worker 0.
        for worker in names:
            kept, _ = _persistent(proc, clients, f"kept{worker}", on=worker)
            assert api.delete(f"/api/sessions/kept{worker}").status_code == 409  # connected
            kept.disconnect()
            kept.wait_closed(2)
            deadline = time.monotonic() + 2
            # The session is detached once the broker has seen the socket close.
            while (status := api.delete(f"/api/sessions/kept{worker}").status_code) == 409:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert status == 204
            assert api.get(f"/api/clients/kept{worker}").status_code == 404
        # A retained message is cleared on every worker.
        pub, _ = open_client(proc, clients, "pub", version=5)
        pub.publish("r/1", b"kept", qos=1, retain=True)
        assert api.delete("/api/retained/message", params={"topic": "r/1"}).status_code == 204
        for worker in names:
            sub, _ = open_client(proc, clients, f"late{worker}", version=5, on=worker)
            sub.subscribe("r/#", 1)
            sub.expect_nothing(0.3)
        assert proc.stop() == 0
    finally:
        proc.close()


def test_the_summed_counters_are_every_stats_counter() -> None:
    """midge.cluster.totals names Stats's counters itself (a compiled Stats has no __slots__):
    the list must stay Stats's."""
    from midge.broker.session import Stats
    from midge.cluster.totals import STAT_FIELDS, add_stats

    slots = getattr(Stats, "__slots__", None)
    if slots is not None:
        assert set(STAT_FIELDS) == set(slots)
    mine = Stats()
    mine.connects = 2
    mine.refused[0x87] = 1
    mine.received_by_qos[1] = 3
    other = {"stats": {"connects": 5, "refused": {0x87: 2, 0x97: 1}, "received_by_qos": [0, 1, 0]}}
    total = add_stats(mine, [other])
    assert (total.connects, total.refused, total.received_by_qos) == (
        7,
        {0x87: 3, 0x97: 1},
        [0, 4, 0],
    )


def _race_rounds(
    proc: ProcBroker, clients: list[RawClient], rounds: int, name: str, avoid_owner: int
) -> None:
    """Rounds of one race: a persistent session with queued messages on one worker, then one
    CONNECT with its client id sent at once to each of several workers while messages keep
    being published. One owner at the end, and it gets every message (queued before or
    published during the race; ones a taken-over connection did not acknowledge come again,
    with DUP). Every ``avoid_owner``-th round, the CONNECTs go to every worker but the one
    holding the session (the session moves to a worker that no CONNECT came to); the other
    rounds, to every worker."""
    pub, _ = open_client(proc, clients, f"pub-{name}", version=5)
    expiry: dict[int, Any] = {Prop.SESSION_EXPIRY_INTERVAL: 60}
    workers = len(worker_pids(proc))
    for i in range(rounds):
        client_id = f"{name}{i}"
        owner, holder = open_client(
            proc, clients, client_id, version=5, clean_start=False, properties=expiry
        )
        owner.subscribe(f"{name}/{i}/#", 1)
        owner.disconnect()
        for k in range(3):
            pub.publish(f"{name}/{i}/q{k}", f"q{k}".encode(), qos=1)
        racers: list[RawClient] = []
        seen: set[int] = set()
        if avoid_owner and i % avoid_owner == avoid_owner - 1 and workers > 2:
            seen.add(holder)
        while len(seen) < workers:
            client = RawClient(proc.host, proc.port, version=5)
            clients.append(client)
            worker = worker_of(proc, client)
            if worker not in seen:
                seen.add(worker)
                racers.append(client)
        connect = encode(
            Connect(client_id=client_id, protocol_level=5, clean_start=False, properties=expiry),
            5,
        )
        for client in racers:
            client.send_raw(connect)
        for k in range(5):
            pub.publish(f"{name}/{i}/p{k}", f"p{k}".encode(), qos=1)
        expected = {f"q{k}" for k in range(3)} | {f"p{k}" for k in range(5)}
        got: dict[int, list[Publish]] = {n: [] for n in range(len(racers))}
        survivors: list[int] = []
        for client in racers:
            assert client.expect(Connack, timeout=10).reason_code == 0
        for n, client in enumerate(racers):
            packets = client.recv_all(0.5)
            got[n] += [p for p in packets if isinstance(p, Publish)]
            if not any(isinstance(p, Disconnect) for p in packets):
                survivors.append(n)
        assert len(survivors) == 1, f"round {i}: {len(survivors)} owners"
        survivor = racers[survivors[0]]
        mine = {p.payload.decode() for p in got[survivors[0]]}
        deadline = time.monotonic() + 5
        while mine != expected and time.monotonic() < deadline:
            mine |= {p.payload.decode() for p in _read_for(survivor, 0.2)}
        assert mine == expected, (i, sorted(expected - mine))
        survivor.disconnect()
        for client in racers:
            client.close()


def test_simultaneous_connects_with_a_moving_session_lose_nothing(
    start: Any, clients: list[RawClient]
) -> None:
    """Two CONNECTs with one client id at once on two workers, the session on one of them,
    while messages are published: nothing lost (:func:`_race_rounds`). 8 rounds."""
    _race_rounds(start(2), clients, 8, "duo", 0)


def test_simultaneous_connects_on_three_workers_lose_nothing(
    start: Any, clients: list[RawClient]
) -> None:
    """Three CONNECTs with one client id at once on three workers (or two, on the two
    workers that do not hold the session: then it moves to one of them while the other
    claims it too), while messages are published: one owner, nothing lost
    (:func:`_race_rounds`). 24 rounds."""
    _race_rounds(start(3), clients, 24, "trio", 2)


def test_admin_api_reload_reloads_every_worker(tmp_path: Any, clients: list[RawClient]) -> None:
    """POST /api/reload (served by worker 0) reloads every worker, as SIGHUP to the parent
    does: after allow_anonymous true -> false, the anonymous clients of both workers are
    disconnected (v5 0x87) and a new anonymous CONNECT is refused on both."""
    import httpx

    from midge.auth.passwd import hash_password
    from tests.procbroker import free_port

    http_port = free_port()
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{hash_password(b'secret').encode()}\n")
    conf = tmp_path / "midge.conf"
    head = f"workers 2\npersistence false\npassword_file {passwd}\n"
    tail = (
        f"listener 0 127.0.0.1\nlistener {http_port} 127.0.0.1\nprotocol http\n"
        f"admin_user admin\nadmin_password_hash {hash_password(b'pw').encode()}\n"
    )
    conf.write_text(head + "allow_anonymous true\n" + tail)
    proc = ProcBroker(("-c", str(conf)), listeners=2)
    try:
        proc.wait_listening()
        anonymous: dict[int, RawClient] = {}
        for i in range(40):
            client, worker = open_client(proc, clients, f"anon{i}", version=5)
            anonymous.setdefault(worker, client)
            if len(anonymous) == 2:
                break
        assert len(anonymous) == 2
        conf.write_text(head + "allow_anonymous false\n" + tail)
        api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", auth=("admin", "pw"))
        assert api.post("/api/reload").json() == {"reloaded": True}
        for client in anonymous.values():
            assert client.expect(Disconnect, timeout=5).reason_code == 0x87
            assert client.wait_closed(2)
        refused: set[int] = set()
        for _ in range(200):
            client = RawClient(proc.host, proc.port, version=5)
            clients.append(client)
            worker = worker_of(proc, client)
            if worker in refused:
                client.close()
                continue
            assert client.connect("late").reason_code == 0x87
            refused.add(worker)
            if len(refused) == 2:
                break
        assert refused == set(anonymous)
        assert proc.stop() == 0
    finally:
        proc.close()


def _wait_dead(pid: int) -> None:
    """Until process ``pid`` has exited, every thread of it (its sockets are closed then;
    before, a new connection may reach its listener and be reset). Its main thread is a
    zombie until reaped while another (the store's writer) may still hold its files."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if tasks == [str(pid)] and state in ("Z", "X"):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not exit")


def test_messages_for_a_dead_workers_sessions_are_kept_until_it_is_back(
    tmp_path: Any, clients: list[RawClient]
) -> None:
    """SIGKILL of the worker holding a persistent QoS 1 subscriber while a publisher on the
    other worker keeps publishing QoS 1: the live worker holds the messages for the dead
    one's routes and sends them once it is restarted; the subscriber, reconnecting at once
    (while its worker is down: its CONNECT waits for it), gets its session back (not a new
    one) and every message whose PUBACK the publisher got, before, during and after the
    kill. Twice, the second time with the subscriber back on the live worker."""
    proc = ProcBroker(TWO_WORKERS, cwd=tmp_path)
    try:
        proc.wait_listening()
        sub, a = _persistent(proc, clients, "keeper")
        sub.subscribe("k/#", 1)
        pub, b = open_client(proc, clients, "pub", version=5, avoid=a)
        acked: list[int] = []
        stop = threading.Event()
        errors: list[BaseException] = []

        def publish() -> None:
            n = 0
            try:
                while not stop.is_set():
                    ack = pub.publish(f"k/{n}", str(n).encode(), qos=1)
                    assert isinstance(ack, Puback) and ack.reason_code == 0, ack
                    acked.append(n)
                    n += 1
                    time.sleep(0.002)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=publish)
        thread.start()
        got: set[int] = set()
        try:
            for round_ in range(2):
                if round_:
                    # Back to the restarted worker (a takeover), to kill it again.
                    old = sub
                    sub, _ = _persistent(proc, clients, "keeper", avoid=b)
                    assert sub.connack is not None and sub.connack.session_present
                    got |= {int(p.payload) for p in _read_for(old, 1.0)}  # until taken over
                got |= {int(p.payload) for p in _read_for(sub, 0.5)}
                holder = worker_of(proc, sub)
                assert holder != b
                before = len(acked)
                os.kill(holder, signal.SIGKILL)
                got |= {int(p.payload) for p in _read_for(sub, 0.2)}  # until it is closed
                sub.close()
                _wait_dead(holder)
                # Back at once: on the live worker, which waits for the dead one's answer.
                sub, _ = _persistent(proc, clients, "keeper")
                assert sub.connack is not None and sub.connack.session_present, round_
                got |= {int(p.payload) for p in _read_for(sub, 0.5)}
                # Published throughout.
                assert len(acked) > before + 20, (before, len(acked), errors, proc.stderr)
        finally:
            stop.set()
            thread.join(10)
        assert not errors, errors
        assert proc.proc.poll() is None, proc.describe()
        deadline = time.monotonic() + 10
        while not set(acked) <= got and time.monotonic() < deadline:
            got |= {int(p.payload) for p in _read_for(sub, 0.3)}
        missed = sorted(set(acked) - got)
        assert not missed, (
            f"{len(missed)} of {len(acked)} acknowledged messages missed: {missed[:20]}"
        )
        assert proc.stop() == 0, proc.describe()
    finally:
        proc.close()


def test_a_session_moving_to_a_worker_killed_at_once_is_not_lost(
    tmp_path: Any, clients: list[RawClient]
) -> None:
    """A persistent session with queued messages on worker a; its client connects to worker
    w, which is killed (SIGKILL) 0 to 20 ms after the CONNECT is sent: before, during or
    right after the session's move (the old worker deletes its copy only once w's database
    has it). Whenever the client comes back, it finds its session, queued messages
    included, on whichever worker has it. 11 rounds."""
    proc = ProcBroker(TWO_WORKERS, cwd=tmp_path)
    try:
        proc.wait_listening()
        expiry: dict[int, Any] = {Prop.SESSION_EXPIRY_INTERVAL: 3600}
        for i in range(11):
            client_id = f"mover{i}"
            owner, a = _persistent(proc, clients, client_id)
            owner.subscribe(f"m/{i}/#", 1)
            owner.disconnect()
            pub, _ = open_client(proc, clients, f"pub{i}", version=5)
            for k in range(2):
                pub.publish(f"m/{i}/{k}", f"q{k}".encode(), qos=1)
            pub.disconnect()
            for _ in range(200):
                mover = RawClient(proc.host, proc.port, version=5)
                clients.append(mover)
                w = worker_of(proc, mover)
                if w != a:
                    break
                mover.close()
            else:
                raise AssertionError("no connection on the other worker")
            connect = Connect(
                client_id=client_id, protocol_level=5, clean_start=False, properties=expiry
            )
            mover.send_raw(encode(connect, 5))
            time.sleep(i * 0.002)
            os.kill(w, signal.SIGKILL)
            _wait_dead(w)
            mover.close()
            back, _ = _persistent(proc, clients, client_id)
            assert back.connack is not None and back.connack.session_present, (i, proc.stderr)
            got = receive_publishes(back, 2, timeout=5)
            assert sorted(p.payload for p in got) == [b"q0", b"q1"], i
            back.disconnect()
            # The next round starts with both workers up.
            deadline = time.monotonic() + 10
            while len(worker_pids(proc)) < 2 or w in worker_pids(proc):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert proc.stop() == 0, proc.describe()
    finally:
        proc.close()
