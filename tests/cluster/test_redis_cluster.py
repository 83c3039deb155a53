"""The same cluster of midge nodes on a 3-master Redis Cluster started by the test: the nodes
find that the URL names a Redis Cluster and use cluster clients; the keys spread over the
masters by their hash tags."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from midge.codec.packets import Puback, Publish, Subscription
from midge.codec.properties import Prop
from tests.cluster.conftest import RedisCluster, RedisSentinel, RedisServer
from tests.cluster.test_cluster import wait_until
from tests.procbroker import ProcBroker
from tests.rawclient import RawClient, receive_publishes


def test_nodes_on_a_three_master_redis_cluster(redis_cluster: RedisCluster) -> None:
    procs: list[ProcBroker] = []
    opened: list[RawClient] = []

    def node(name: str) -> ProcBroker:
        proc = ProcBroker(
            (
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--cluster",
                redis_cluster.url,
                "--node-id",
                name,
            )
        )
        procs.append(proc)
        proc.wait_listening()
        assert proc.wait_output("(a Redis Cluster)", 5), proc.describe()
        return proc

    def connect(proc: ProcBroker, cid: str, version: int = 5, **fields: Any) -> RawClient:
        client = RawClient(proc.host, proc.port, version=version)
        opened.append(client)
        assert client.connect(cid, **fields).reason_code == 0
        return client

    try:
        a, b, c = node("a"), node("b"), node("c")
        persistent = {Prop.SESSION_EXPIRY_INTERVAL: 300}
        # Cross-node QoS 0, 1, 2.
        sub = connect(b, "sub")
        sub.sub(Subscription("x/#", 2))
        pub = connect(a, "pub")
        for qos in (0, 1, 2):
            ack = pub.pub(f"x/{qos}", f"q{qos}".encode(), qos)
            assert qos == 0 or (ack is not None and ack.reason_code == 0)
        got = receive_publishes(sub, 3)
        assert sorted((p.payload, p.qos) for p in got) == [(b"q0", 0), (b"q1", 1), (b"q2", 2)]
        # Retained, on every node before the PUBACK.
        pub.pub("r/1", b"kept", 1, retain=True)
        late = connect(c, "late")
        late.sub("r/#", qos=0)
        assert late.publishes(1)[0].payload == b"kept"
        # A persistent session on b, its node killed, resumed on c from Redis.
        keeper = connect(b, "keeper", clean_start=True, properties=persistent)
        keeper.sub("k/#", qos=1)
        keeper.disconnect()
        for n in range(5):
            ack = pub.pub(f"k/{n}", str(n).encode(), 1)
            assert isinstance(ack, Puback) and ack.reason_code == 0
        b.send_signal(signal.SIGKILL)
        b.proc.wait(5)
        assert wait_until(lambda: a.wait_output("node b is gone", 0.1), 10), a.describe()
        back = connect(c, "keeper", clean_start=False, properties=persistent)
        got = receive_publishes(back, 5)
        assert [p.payload for p in got] == [str(n).encode() for n in range(5)]
        # The keys are spread: more than one master holds some.
        assert redis_cluster.masters_with_keys() >= 2
        # A node leaves cleanly (SIGTERM): the others see it go.
        assert a.stop() == 0
        assert c.wait_output("node a is gone", 5), c.describe()
    finally:
        for client in opened:
            client.close()
        for proc in procs:
            proc.close()


def test_nodes_through_a_redis_sentinel(redis: RedisServer, sentinel: RedisSentinel) -> None:
    """``redis+sentinel://HOST:PORT/SERVICE/DB``: the nodes reach the master the Sentinel
    names for the service."""
    with _two_nodes(sentinel.url):
        # The state is in the master the Sentinel names.
        assert b"s/0" in redis.command("HKEYS", "{midge}:retained")
        assert b"a" in redis.command("SMEMBERS", "{midge}:nodes")


@contextmanager
def _two_nodes(url: str) -> Iterator[tuple[ProcBroker, ProcBroker, RawClient, RawClient]]:
    """Nodes a and b of the cluster whose Redis is at ``url``, a subscriber on b to ``s/#``
    (QoS 1) and a publisher on a, which has published the retained ``s/0`` "kept" (QoS 1:
    acknowledged, and delivered across). Everything is closed after."""
    procs: list[ProcBroker] = []
    opened: list[RawClient] = []
    try:
        for name in ("a", "b"):
            proc = ProcBroker(
                ("--host", "127.0.0.1", "--port", "0", "--cluster", url, "--node-id", name)
            )
            procs.append(proc)
            proc.wait_listening()
        a, b = procs
        sub = RawClient(b.host, b.port, version=5)
        opened.append(sub)
        sub.connect("sub")
        sub.sub("s/#", qos=1)
        pub = RawClient(a.host, a.port, version=5)
        opened.append(pub)
        pub.connect("pub")
        ack = pub.pub("s/0", b"kept", 1, retain=True)
        assert isinstance(ack, Puback) and ack.reason_code == 0
        assert receive_publishes(sub, 1)[0].payload == b"kept"
        yield a, b, pub, sub
        late = RawClient(b.host, b.port, version=5)
        opened.append(late)
        late.connect("late")
        late.sub("s/0", qos=1)
        got = receive_publishes(late, 1)[0]
        assert (got.payload, got.retain) == (b"kept", True)  # the retained message is there
    finally:
        for client in opened:
            client.close()
        for proc in procs:
            proc.close()


def _crosses_again(pub: RawClient, sub: RawClient, a: ProcBroker, b: ProcBroker) -> None:
    """After a failover: ``pub`` (on ``a``) publishes QoS 1 messages until one is acknowledged
    and reaches ``sub`` (on ``b``). While the nodes cannot reach Redis, QoS 1 to another node
    is refused (0x83), or its PUBACK waits until they can (up to 20 s here)."""
    deadline = time.monotonic() + 30
    n = 0
    while time.monotonic() < deadline:
        n += 1
        pid = pub.next_packet_id()
        pub.send(Publish(f"s/{n}", f"after {n}".encode(), 1, False, False, pid))
        try:
            ack = pub.wait_for(Puback, 20)
        except TimeoutError:
            raise AssertionError(f"no PUBACK for s/{n}\n{a.describe()}\n{b.describe()}") from None
        assert ack.packet_id == pid
        if ack.reason_code == 0:
            try:
                got = receive_publishes(sub, 1, timeout=10)[0]
            except TimeoutError:
                raise AssertionError(
                    f"s/{n} was acknowledged, not delivered\n{a.describe()}\n{b.describe()}"
                ) from None
            assert got.payload == f"after {n}".encode()
            return
        time.sleep(0.2)
    raise AssertionError(f"no message crossed the nodes again\n{a.describe()}\n{b.describe()}")


def test_a_sentinel_failover_promotes_the_replica_and_the_nodes_go_on(redis: RedisServer) -> None:
    """The master the Sentinel names is killed; the Sentinel promotes its replica. The nodes,
    which reach Redis through the Sentinel, find the new master and go on: a QoS 1 message
    crosses nodes again, the retained message written before the failover is there (it was
    replicated), and both nodes are members of the cluster in the new master."""
    replica = RedisServer()
    replica.command("REPLICAOF", "127.0.0.1", str(redis.port))
    assert wait_until(lambda: b"master_link_status:up" in replica.command("INFO", "replication"))
    watcher = RedisSentinel(redis, down_after=500)
    try:
        with _two_nodes(watcher.url) as (a, b, pub, sub):
            assert wait_until(lambda: b"s/0" in replica.command("HKEYS", "{midge}:retained"))
            redis.stop()  # the master dies
            assert wait_until(lambda: watcher.master_port() == replica.port, 20)
            _crosses_again(pub, sub, a, b)

            def members() -> set[bytes]:
                return set(replica.command("SMEMBERS", "{midge}:nodes").split())

            assert wait_until(lambda: {b"a", b"b"} <= members(), 10)
            assert "cannot be reached" in a.stderr
    finally:
        watcher.close()
        replica.close()


def test_a_redis_cluster_failover_promotes_a_replica_and_the_nodes_go_on() -> None:
    """A Redis Cluster of 3 masters with a replica each; the master holding the node registry
    and the retained set (the ``{midge}`` slot) is killed and its replica promoted. The nodes
    follow the new slot map and go on: a QoS 1 message crosses nodes again, and the retained
    message written before is there."""
    from tests.cluster.conftest import CLI

    if CLI is None:
        pytest.skip("needs redis-cli (make debs: redis-server brings it)")
    redis_cluster = RedisCluster(replicas=1, node_timeout=1000)
    try:
        with _two_nodes(redis_cluster.url) as (a, b, pub, sub):
            redis_cluster.kill_owner("{midge}:nodes")
            assert wait_until(redis_cluster.state_ok, 30)
            _crosses_again(pub, sub, a, b)
    finally:
        redis_cluster.close()
