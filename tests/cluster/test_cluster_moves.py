"""Sessions moving between live nodes mid-stream (takeovers across nodes): the node a session
leaves keeps a stand-in that queues what still reaches it, and hands that over to the node
the session moved to once every node routes there (docs/cluster.md, "A session moving
between live nodes"). Real redis-server, real node processes, real clients."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections import Counter
from typing import Any

from midge.codec.packets import Publish
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import wait_until
from tests.cluster.test_cluster_recovery import PERSISTENT, Publisher, Receiver
from tests.procbroker import ProcBroker
from tests.rawclient import RawClient


def _logs(*procs: ProcBroker) -> str:
    return "\n".join(proc.describe() for proc in procs)


def _check(receiver: Receiver, publishers: list[Publisher], logs: str) -> None:
    """Every acknowledged message of ``publishers`` reached ``receiver``; QoS 2 ones once."""
    assert not receiver.errors, receiver.errors
    published: set[bytes] = set()
    for p in publishers:
        assert len(p.acked) == p.count, (p.topic, len(p.acked))
        published.update(f"{p.topic}-{n}".encode() for n in range(p.count))
    with receiver.lock:
        got = Counter(receiver.delivered)
        trace = list(receiver.trace)
    missing = [m for p in publishers for m in p.acked if m not in got]
    assert not missing, (
        f"{receiver.client_id}: {len(missing)} lost: {missing[:5]}\n{logs}\n" + "\n".join(trace)
    )
    assert set(got) <= published, set(got) - published
    if receiver.qos == 2:
        twice = [m for m, n in got.items() if n > 1]
        assert not twice, (
            f"{receiver.client_id}: delivered twice: {twice[:5]}\n{logs}\n" + "\n".join(trace)
        )


def _move(receiver: Receiver, to: ProcBroker, takeover: bool, old: list[RawClient]) -> None:
    """Reconnect ``receiver`` to node ``to``: its new connection takes the old one over (the
    old node ends it, 0x8E), or the old connection drops first (no DISCONNECT)."""
    client = receiver.client
    assert client is not None
    old.append(client)
    if not takeover:
        client.sock.shutdown(socket.SHUT_RDWR)
        assert receiver.wait_closed(5)
    assert receiver.connect(to), f"{receiver.client_id}: no session present on {to.port}"


def test_sessions_moving_between_live_nodes_mid_stream_lose_nothing_and_qos2_comes_once(
    redis: RedisServer, node: Any
) -> None:
    """Persistent subscribers (v5 QoS 1, v5 QoS 2, v3.1.1 QoS 2) on a; publishers on a and on
    b publish numbered QoS 1 and QoS 2 streams. Mid-stream the subscribers move to c, back to
    a, to b and to c again (taken over by the new connection, or dropped first), while the
    streams run. Every acknowledged message reaches them, the QoS 2 ones exactly once, and
    every move is handed over through its fence (none timed out)."""
    a, b, c = node("a"), node("b"), node("c")
    r1 = Receiver("mv-v5-q1", 5, "mv/q1/#", 1)
    r2 = Receiver("mv-v5-q2", 5, "mv/q2/#", 2)
    r3 = Receiver("mv-v4-q2", 4, "mv/q2/#", 2)
    receivers = [r1, r2, r3]
    count = 600
    q1 = [Publisher(a, "pa1", "mv/q1/a", 1, count), Publisher(b, "pb1", "mv/q1/b", 1, count)]
    q2 = [Publisher(a, "pa2", "mv/q2/a", 2, count), Publisher(b, "pb2", "mv/q2/b", 2, count)]
    old: list[RawClient] = []
    try:
        for r in receivers:
            r.connect(a, first=True)
        for p in q1 + q2:
            p.start()
        assert wait_until(lambda: all(len(r.delivered) >= 40 for r in receivers), 20)
        for k, to in enumerate((c, a, b, c)):
            # Mid-stream: every publisher still has messages to send.
            assert all(p.sent < p.count for p in q1 + q2), [p.sent for p in q1 + q2]
            for r in receivers:
                _move(r, to, takeover=(k % 2 == 0), old=old)
            # The streams run on between moves.
            before = [len(r.delivered) for r in receivers]
            assert wait_until(
                lambda before=before: all(
                    len(r.delivered) >= n + 20 for r, n in zip(receivers, before, strict=True)
                ),
                20,
            ), _logs(a, b, c)
        for p in q1 + q2:
            p.join(90)
        pairs = [(r1, q1), (r2, q2), (r3, q2)]

        def done() -> bool:
            return all({m for p in ps for m in p.acked} <= set(r.delivered) for r, ps in pairs)

        wait_until(done, 20)
        time.sleep(0.5)  # anything sent twice would come now
        logs = _logs(a, b, c)
        for r, ps in pairs:
            _check(r, ps, logs)
        for proc in (a, b, c):
            assert not proc.wait_output("without its hand-over", 0), logs
            assert not proc.wait_output("before its fence", 0), logs
    finally:
        for r in receivers:
            r.close()
        for client in old:
            client.close()
        for p in q1 + q2:
            p.client.close()


def test_what_a_stand_in_hands_over_is_in_redis_before_the_client_sees_it(
    redis: RedisServer, node: Any
) -> None:
    """A persistent subscriber (v5, QoS 2) leaves a; while a is stopped (SIGSTOP) its client
    reconnects to c (c's claim waits for a) and then publishers on b publish 5 QoS 2
    messages, which wait in a's stream. a resumes: it releases the session first (the claim
    came first), so the messages reach its stand-in, which hands them over to c. c sends them
    to its client (which does not answer) only once its snapshot in Redis has them: c is then
    SIGKILLed, and the subscriber, reconnecting to b, gets each of them, once."""
    a, b, c = node("a"), node("b"), node("c")
    r = Receiver("mv-durable", 5, "dur/#", 2)
    publishers = [Publisher(b, f"dp{n}", f"dur/{n}", 2, 1) for n in range(5)]
    payloads = {f"dur/{n}-0".encode() for n in range(5)}
    silent = RawClient(c.host, c.port, version=5, timeout=20)
    try:
        r.connect(a, first=True)
        first = r.client
        assert first is not None
        first.sock.shutdown(socket.SHUT_RDWR)
        assert r.wait_closed(5)
        first.close()
        connacks: list[Any] = []
        a.send_signal(signal.SIGSTOP)
        try:
            # The claim reaches a's channel before the messages reach its stream.
            mover = threading.Thread(
                target=lambda: connacks.append(
                    silent.connect("mv-durable", clean_start=False, properties=PERSISTENT)
                ),
                daemon=True,
            )
            mover.start()
            time.sleep(0.3)
            for p in publishers:
                p.start()
            assert wait_until(lambda: redis.command("XLEN", "{midge:a}:q") == b":5\r\n", 5)
        finally:
            a.send_signal(signal.SIGCONT)
        mover.join(20)
        assert connacks and connacks[0].session_present, (connacks, _logs(a, b, c))
        for p in publishers:
            p.join(20)
        assert c.wait_output("5 messages handed over", 5), _logs(a, b, c)
        # The client is sent them (it does not answer): they are in Redis already.
        sent = [silent.recv(5) for _ in range(5)]
        assert {p.payload for p in sent if isinstance(p, Publish)} == payloads, sent
        stored = redis.command("GET", "midge:session:{mv-durable}")
        assert all(m in stored for m in payloads), stored
        c.send_signal(signal.SIGKILL)
        c.proc.wait(5)
        silent.close()
        assert wait_until(lambda: any(n.wait_output("node c taken over", 0) for n in (a, b)), 15), (
            _logs(a, b)
        )
        assert r.connect(b), _logs(a, b)
        assert wait_until(lambda: set(r.delivered) == payloads, 10), (r.trace, _logs(a, b))
        time.sleep(0.5)
        with r.lock:
            assert sorted(r.delivered) == sorted(payloads), r.trace
    finally:
        r.close()
        silent.close()
        for p in publishers:
            p.client.close()
