"""Faults that take a node out of the cluster: SIGKILL (and a node stopped before it could read
its stream), a partition between a node and Redis longer than the 3 s after which the others
declare it dead, and what survives it: the acknowledged QoS 1/2 messages of its persistent
sessions (QoS 2 exactly once), their pending wills; and the owner keys of client ids that are
no longer used go. Real redis-server, real node processes, real clients (docs/cluster.md)."""

from __future__ import annotations

import marshal
import signal
import threading
import time
from collections import Counter
from typing import Any

from midge.codec.packets import Disconnect, Puback, Pubcomp, Publish, Pubrec, Pubrel, Will
from midge.codec.properties import Prop
from tests.cluster.conftest import RedisServer
from tests.cluster.tcpproxy import TcpProxy
from tests.cluster.test_cluster import wait_until
from tests.procbroker import ProcBroker
from tests.rawclient import Closed, RawClient

PERSISTENT = {Prop.SESSION_EXPIRY_INTERVAL: 300}


class Receiver:
    """A subscriber whose state outlives its connections, as a real client's does: a QoS 2
    PUBLISH whose packet id still awaits its PUBREL is acknowledged again, not delivered
    again (MQTT-4.3.3-9). ``delivered`` is what the application got, in order."""

    def __init__(self, client_id: str, version: int, topic_filter: str, qos: int) -> None:
        self.client_id = client_id
        self.version = version
        self.filter = topic_filter
        self.qos = qos
        self.delivered: list[bytes] = []
        self.awaiting: set[int] = set()
        self.client: RawClient | None = None
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        #: What each connection received (for a failure's message).
        self.trace: list[str] = []
        #: A connection taken over may still be read while the next one is (one state).
        self.lock = threading.Lock()
        #: Connections made so far (the trace names each line's connection). Once a new
        #: connection has its CONNACK, what an older one still reads is left unanswered, as a
        #: client that moved on does: the broker had it in flight when it let that connection
        #: go, and sends it again on the new one.
        self.connections = 0

    def connect(self, proc: ProcBroker, first: bool = False) -> bool:
        """Connect (a new session the first time, resuming after); the session present flag."""
        client = RawClient(proc.host, proc.port, version=self.version, timeout=20)
        # v5: a clean start the first time, with a Session Expiry; v3.1.1: clean session 0.
        fields: dict[str, Any] = {"clean_start": first and self.version == 5}
        if self.version == 5:
            fields["properties"] = PERSISTENT
        connack = client.connect(self.client_id, **fields)
        assert connack.reason_code == 0, connack
        self.client = client
        with self.lock:
            self.connections += 1
            n = self.connections
            self.trace.append(f"-- {n} connected to {proc.port}, present {connack.session_present}")
        if first:
            client.subscribe(self.filter, self.qos)
        self.thread = threading.Thread(target=self._run, args=(client, n), daemon=True)
        self.thread.start()
        return connack.session_present

    def _run(self, client: RawClient, n: int) -> None:
        while not self.stop.is_set():
            try:
                packet = client.recv(0.2)
            except TimeoutError:
                continue
            except (Closed, OSError):
                return
            try:
                if isinstance(packet, Publish):
                    pid = packet.packet_id or 0
                    with self.lock:
                        if n != self.connections:
                            return
                        self.trace.append(f"{n} P {pid} {packet.payload.decode()} dup={packet.dup}")
                        if packet.qos == 2:
                            if pid not in self.awaiting:
                                self.awaiting.add(pid)
                                self.delivered.append(packet.payload)
                        else:
                            self.delivered.append(packet.payload)
                    if packet.qos == 2:
                        client.send(Pubrec(pid))
                    elif packet.qos == 1:
                        client.send(Puback(pid))
                elif isinstance(packet, Pubrel):
                    with self.lock:
                        if n != self.connections:
                            return
                        self.trace.append(f"{n} R {packet.packet_id}")
                        self.awaiting.discard(packet.packet_id)
                    client.send(Pubcomp(packet.packet_id))
                elif isinstance(packet, Disconnect):
                    continue
                else:
                    raise AssertionError(f"unexpected {packet!r}")
            except OSError:
                return
            except BaseException as exc:
                self.errors.append(exc)
                return

    def wait_closed(self, timeout: float) -> bool:
        assert self.thread is not None
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5)
        if self.client is not None:
            self.client.close()


class Publisher:
    """Publishes ``count`` numbered messages at ``qos`` in a thread, one after the other, and
    keeps the payloads whose publish was acknowledged (PUBACK / PUBCOMP without error)."""

    def __init__(self, proc: ProcBroker, client_id: str, topic: str, qos: int, count: int) -> None:
        self.client = RawClient(proc.host, proc.port, version=5, timeout=30)
        assert self.client.connect(client_id).reason_code == 0
        self.topic = topic
        self.qos = qos
        self.count = count
        self.acked: list[bytes] = []
        self.sent = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            for n in range(self.count):
                payload = f"{self.topic}-{n}".encode()
                self.sent = n + 1
                ack = self.client.pub(f"{self.topic}/{n}", payload, self.qos)
                assert ack is not None
                if ack.reason_code < 0x80:
                    self.acked.append(payload)
                time.sleep(0.005)
        except BaseException as exc:
            self.errors.append(exc)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.topic}: {self.sent} sent, still publishing"
        assert not self.errors, self.errors


def _logs(*procs: ProcBroker) -> str:
    return "\n".join(proc.describe() for proc in procs)


def _check(receiver: Receiver, publisher: Publisher, logs: str = "") -> None:
    assert not receiver.errors, receiver.errors
    assert len(publisher.acked) == publisher.count, (publisher.topic, len(publisher.acked))
    published = {f"{publisher.topic}-{n}".encode() for n in range(publisher.count)}
    got = Counter(receiver.delivered)
    missing = [p for p in publisher.acked if p not in got]
    assert not missing, (
        f"{receiver.client_id}: {len(missing)} lost: {missing[:5]}\n{logs}\n"
        + "\n".join(receiver.trace)
    )
    assert set(got) <= published, set(got) - published
    if receiver.qos == 2:
        twice = [p for p, n in got.items() if n > 1]
        assert not twice, f"{receiver.client_id}: delivered twice: {twice[:5]}\n{logs}"


def _all_delivered(receivers: list[tuple[Receiver, Publisher]]) -> bool:
    return all(set(p.acked) <= set(r.delivered) for r, p in receivers)


def test_sigkill_mid_stream_loses_no_acknowledged_message_and_qos2_comes_once(
    redis: RedisServer, node: Any
) -> None:
    """Persistent subscribers (v5 and v3.1.1, QoS 1 and 2) connected to a; publishers on b
    publish numbered QoS 1 and QoS 2 streams; a is SIGKILLed mid-stream and the subscribers
    reconnect to c at once. Each message whose publish was acknowledged reaches them, the
    QoS 2 ones exactly once (in-flight ones are re-sent with their packet ids).

    Whichever of b and c takes a over, the sessions come to c: taken over by b, they then
    move again between live nodes (b to c) while b publishes (its stand-in hands over what
    it queued meanwhile: docs/cluster.md)."""
    # a's link to Redis is slow (15 ms): a delivery it makes is known durable that much
    # later, which widens the window a node's death could otherwise duplicate in.
    slow = TcpProxy(redis.port, delay=0.015)
    a = node("a", "--cluster", f"redis://127.0.0.1:{slow.port}/0")
    b, c = node("b"), node("c")
    r1 = Receiver("r1-v5-q1", 5, "s/q1/#", 1)
    r2 = Receiver("r2-v5-q2", 5, "s/q2/#", 2)
    r3 = Receiver("r3-v4-q2", 4, "s/q2/#", 2)
    receivers = [r1, r2, r3]
    p1 = Publisher(b, "p1", "s/q1", 1, 150)
    p2 = Publisher(b, "p2", "s/q2", 2, 150)
    try:
        for r in receivers:
            r.connect(a, first=True)
        p1.start()
        p2.start()
        assert wait_until(lambda: all(len(r.delivered) >= 30 for r in receivers), 20)
        a.send_signal(signal.SIGKILL)
        a.proc.wait(5)
        for r in receivers:
            assert r.wait_closed(5)
        # Reconnect at once: c asks a, then (a declared dead) the node that took its
        # sessions over.
        for r in receivers:
            assert r.connect(c), f"{r.client_id}: no session present\n{_logs(b, c)}"
        p1.join(60)
        p2.join(60)
        pairs = [(r1, p1), (r2, p2), (r3, p2)]
        wait_until(lambda: _all_delivered(pairs), 20)
        time.sleep(0.5)  # anything sent twice would come now
        for r, p in pairs:
            _check(r, p, _logs(b, c))
        assert b.wait_output("taken over", 1) or c.wait_output("taken over", 1)
    finally:
        for r in receivers:
            r.close()
        p1.client.close()
        p2.client.close()
        slow.close()


def test_messages_left_in_a_dead_nodes_stream_reach_its_sessions(
    redis: RedisServer, node: Any
) -> None:
    """a is stopped (SIGSTOP) so that it reads nothing more from its stream: QoS 1 and 2
    messages for its persistent sessions pile up there, their publishers waiting. a is then
    killed: the node that takes it over delivers them to its sessions and only then are the
    publishers acknowledged; the subscribers get each on c, QoS 2 once."""
    a, b, c = node("a"), node("b"), node("c")
    r1 = Receiver("left-q1", 5, "l/q1/#", 1)
    r2 = Receiver("left-q2", 4, "l/q2/#", 2)
    p1 = Publisher(b, "lp1", "l/q1", 1, 5)
    p2 = Publisher(b, "lp2", "l/q2", 2, 5)
    try:
        r1.connect(a, first=True)
        r2.connect(a, first=True)
        a.send_signal(signal.SIGSTOP)
        p1.start()
        p2.start()
        assert wait_until(lambda: redis.command("XLEN", "{midge:a}:q") == b":2\r\n", 5)
        time.sleep(0.5)
        assert not p1.acked and not p2.acked  # nobody accepted them yet
        a.send_signal(signal.SIGKILL)
        a.proc.wait(5)
        p1.join(30)
        p2.join(30)
        assert r1.connect(c) and r2.connect(c)
        pairs = [(r1, p1), (r2, p2)]
        wait_until(lambda: _all_delivered(pairs), 15)
        time.sleep(0.5)
        for r, p in pairs:
            _check(r, p)
        assert wait_until(
            lambda: (
                redis.command("EXISTS", "{midge:a}:q") == b":0\r\n"
                and redis.command("HLEN", "{midge}:dead") == b":0\r\n"
            ),
            5,
        )
    finally:
        for r in (r1, r2):
            r.close()
        p1.client.close()
        p2.client.close()


def test_partition_longer_than_node_ttl_heals_without_loss_or_duplicate(
    redis: RedisServer, node: Any
) -> None:
    """a reaches Redis through a proxy that the test cuts for 5.5 s: the others declare it
    dead and take its sessions over, with what its stream held. Its persistent subscribers
    stay connected to a meanwhile (a shows them nothing Redis lacks); when a reaches Redis
    again it finds their sessions taken, lets them go (0x8E), and they resume where the
    sessions are. Every acknowledged message comes, QoS 2 once; a registers again."""
    proxy = TcpProxy(redis.port)
    r1 = Receiver("part-q1", 5, "t/q1/#", 1)
    r2 = Receiver("part-q2", 5, "t/q2/#", 2)
    publishers: list[Publisher] = []
    try:
        a = node("a", "--cluster", f"redis://127.0.0.1:{proxy.port}/0")
        b, c = node("b"), node("c")
        r1.connect(a, first=True)
        r2.connect(a, first=True)
        p1 = Publisher(b, "tp1", "t/q1", 1, 200)
        p2 = Publisher(b, "tp2", "t/q2", 2, 200)
        publishers = [p1, p2]
        p1.start()
        p2.start()
        assert wait_until(lambda: len(r1.delivered) >= 20 and len(r2.delivered) >= 20, 20)
        proxy.cut()
        cut_at = time.monotonic()
        assert a.wait_output("cannot be reached", 5)
        assert b.wait_output("node a is dead", 8) or c.wait_output("node a is dead", 8)
        time.sleep(max(0.0, cut_at + 5.5 - time.monotonic()))
        proxy.heal()
        assert a.wait_output("held by another node now", 10), a.describe()
        for r in (r1, r2):
            assert r.wait_closed(10)
        assert a.wait_output("registered again", 10)
        assert a.wait_output("answers again", 10)
        # One resumes on a, back in the cluster, one on c.
        for r, proc in ((r1, a), (r2, c)):
            assert r.connect(proc), f"{r.client_id}: no session present\n" + "\n".join(
                p.describe() for p in (a, b, c)
            )
        p1.join(60)
        p2.join(60)
        pairs = [(r1, p1), (r2, p2)]
        wait_until(lambda: _all_delivered(pairs), 20)
        time.sleep(0.5)
        for r, p in pairs:
            _check(r, p)
    finally:
        for r in (r1, r2):
            r.close()
        for p in publishers:
            p.client.close()
        proxy.close()


def _will_client(proc: ProcBroker, client_id: str, delay: int, version: int = 5) -> RawClient:
    client = RawClient(proc.host, proc.port, version=version, timeout=20)
    props: dict[int, Any] = {Prop.WILL_DELAY_INTERVAL: delay} if version == 5 else {}
    fields: dict[str, Any] = {"clean_start": True}
    if version == 5:
        fields["properties"] = PERSISTENT
    else:
        fields["clean_start"] = False
    will = Will(f"will/{client_id}", f"gone:{client_id}".encode(), 1, False, props)
    assert client.connect(client_id, will=will, **fields).reason_code == 0
    return client


def test_wills_of_a_killed_node_are_published_by_another_unless_the_client_came_back(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """On a: w-conn (connected, will delay 1 s), w-v3 (v3.1.1 persistent, connected, a will),
    w-delayed (closed without DISCONNECT, its 4 s delayed will pending) and w-back
    (connected, will delay 6 s, reconnects to c at once). a is SIGKILLed: another node
    publishes the first three wills (the delayed one when due), never w-back's."""
    a, b, c = node("a"), node("b"), node("c")
    watcher = clients(b, "watcher", version=5)
    watcher.subscribe("will/#", 1)
    conn = _will_client(a, "w-conn", 1)
    v3 = _will_client(a, "w-v3", 0, version=4)
    delayed = _will_client(a, "w-delayed", 4)
    back = _will_client(a, "w-back", 6)
    delayed.close()  # no DISCONNECT: the will waits for its delay
    closed_at = time.monotonic()
    assert wait_until(lambda: _stored_will_due(redis, "w-delayed") is not None, 5)
    time.sleep(0.3)
    a.send_signal(signal.SIGKILL)
    a.proc.wait(5)
    killed_at = time.monotonic()
    for client in (conn, v3, back):
        client.close()
    again = RawClient(c.host, c.port, version=5, timeout=20)
    try:
        connack = again.connect("w-back", clean_start=False, properties=PERSISTENT)
        assert connack.reason_code == 0 and connack.session_present
        got: dict[str, float] = {}
        deadline = killed_at + 12
        while time.monotonic() < deadline:
            try:
                packet = watcher.recv(0.3)
            except TimeoutError:
                continue
            assert isinstance(packet, Publish), packet
            watcher.send(Puback(packet.packet_id or 0))
            got[packet.payload.decode()] = time.monotonic()
        assert set(got) == {"gone:w-conn", "gone:w-v3", "gone:w-delayed"}, got
        # Not before it was due (4 s after its client went), nor w-conn's before a died.
        assert got["gone:w-delayed"] >= closed_at + 4
        assert got["gone:w-conn"] >= killed_at + 1
    finally:
        again.close()


def _stored_will_due(redis: RedisServer, client_id: str) -> float | None:
    """The due time of the pending will kept with ``client_id``'s session in Redis."""
    reply = redis.command("GET", f"midge:session:{{{client_id}}}")
    if not reply.startswith(b"$") or reply.startswith(b"$-1"):
        return None
    header, _, rest = reply.partition(b"\r\n")
    _, _, will = marshal.loads(rest[: int(header[1:])])
    return None if will is None else will[1]


def _owner_keys(redis: RedisServer) -> bytes:
    return redis.command("KEYS", "midge:owner:*")


def _token(redis: RedisServer, client_id: str) -> int:
    reply = redis.command("HGET", f"midge:owner:{{{client_id}}}", "token")
    assert reply.startswith(b"$"), reply
    return int(reply.split(b"\r\n")[1])


def test_owner_keys_go_with_their_sessions_and_tokens_are_never_reused(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """A clean session's owner key goes when it ends; a persistent session's when it
    expires; the node forgets them too ({midge:NODE}:clients, the client ids it holds). A
    client id that comes back gets a newer token than any it had (one counter for all)."""
    a, b = node("a"), node("b")
    for n in range(20):
        client = clients(a, f"clean-{n}")
        client.disconnect()
    short = clients(a, "short", version=5, properties={Prop.SESSION_EXPIRY_INTERVAL: 4})
    first = _token(redis, "short")
    short.close()
    kept = clients(b, "kept", version=5, properties=PERSISTENT)
    kept.disconnect()
    assert wait_until(lambda: b"clean-" not in _owner_keys(redis), 5), _owner_keys(redis)
    # The expiring session is still there: so is its owner key.
    assert b"{short}" in _owner_keys(redis)
    assert wait_until(lambda: b"{short}" not in _owner_keys(redis), 8)
    assert b"{kept}" in _owner_keys(redis)
    assert redis.command("SMEMBERS", "{midge:a}:clients") == b"*0\r\n"
    assert redis.command("SMEMBERS", "{midge:b}:clients") == b"*1\r\n$4\r\nkept\r\n"
    # Back, on the other node: a newer token than the one before its key went.
    clients(b, "short", version=5)
    assert _token(redis, "short") > first
    # Fencing still holds: a takeover across nodes (the older connection is closed, 0x8E).
    old = clients(a, "twice", version=5)
    clients(b, "twice", version=5)
    disconnect = old.expect_disconnect(0x8E)
    assert disconnect.reason_code == 0x8E
