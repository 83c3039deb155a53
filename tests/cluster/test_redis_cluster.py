"""The same cluster of midge nodes on a 3-master Redis Cluster started by the test: the nodes
find that the URL names a Redis Cluster and use cluster clients; the keys spread over the
masters by their hash tags."""

from __future__ import annotations

import signal
from typing import Any

from midge.codec.packets import Puback, Subscription
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
    procs: list[ProcBroker] = []
    opened: list[RawClient] = []
    try:
        for name in ("a", "b"):
            proc = ProcBroker(
                ("--host", "127.0.0.1", "--port", "0", "--cluster", sentinel.url, "--node-id", name)
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
        ack = pub.pub("s/1", b"via sentinel", 1, retain=True)
        assert isinstance(ack, Puback) and ack.reason_code == 0
        assert receive_publishes(sub, 1)[0].payload == b"via sentinel"
        # The state is in the master the Sentinel names.
        assert b"s/1" in redis.command("HKEYS", "{midge}:retained")
        assert b"a" in redis.command("SMEMBERS", "{midge}:nodes")
    finally:
        for client in opened:
            client.close()
        for proc in procs:
            proc.close()
