"""The whole cluster seen from any node (midge.cluster.cluster_view): real node processes with
an admin listener each, a real redis-server; traffic on node a shows in node b's
``$SYS/cluster/...``, ``/metrics`` (``midge_cluster_...``), ``GET /api/cluster``,
``GET /api/clients?scope=cluster`` and ``midge ctl``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from midge.auth.passwd import hash_password
from midge.codec.packets import Publish
from tests.cluster.conftest import RedisCluster, RedisServer
from tests.procbroker import ProcBroker, run_midge
from tests.rawclient import Closed, RawClient

AUTH = ("admin", "pw")


class Node:
    """A cluster node process with an MQTT listener and an admin (http) listener."""

    def __init__(self, proc: ProcBroker) -> None:
        self.proc = proc
        listeners = proc.wait_listening()
        self.mqtt = next(lst for lst in listeners if lst.protocol == "mqtt")
        http = next(lst for lst in listeners if lst.protocol == "http")
        self.api = f"http://127.0.0.1:{http.port}"

    def client(self, client_id: str, opened: list[RawClient]) -> RawClient:
        client = RawClient(self.mqtt.connect_host, self.mqtt.port, version=5)
        opened.append(client)
        assert client.connect(client_id).reason_code == 0
        return client

    def get(self, path: str, **params: Any) -> Any:
        answer = httpx.get(self.api + path, params=params, auth=AUTH, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(self.api + "/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def ctl(self, *args: str) -> Any:
        return run_midge(["ctl", "--url", self.api, "--user", "admin", "--password", "pw", *args])


@pytest.fixture
def nodes_at(tmp_path: Path) -> Iterator[Callable[[str, str], Node]]:
    """``start(url, name)``: a node of the cluster whose Redis is at ``url``."""
    started: list[ProcBroker] = []
    admin_hash = hash_password(b"pw").encode()

    def start(url: str, name: str) -> Node:
        conf = tmp_path / f"{name}.conf"
        conf.write_text(
            f"cluster_redis {url}\ncluster_node_id {name}\nsys_interval 1\n"
            f"admin_user admin\nadmin_password_hash {admin_hash}\n"
            "listener 0 127.0.0.1\nallow_anonymous true\n"
            "listener 0 127.0.0.1\nprotocol http\n"
        )
        proc = ProcBroker(("-c", str(conf)), listeners=2)
        started.append(proc)
        return Node(proc)

    yield start
    for proc in started:
        proc.close()


@pytest.fixture
def nodes(redis: RedisServer, nodes_at: Callable[[str, str], Node]) -> Callable[[str], Node]:
    """``start(name)``: a node of the cluster on the test's redis-server."""
    return lambda name: nodes_at(redis.url, name)


@pytest.fixture
def opened() -> Iterator[list[RawClient]]:
    clients: list[RawClient] = []
    yield clients
    for client in clients:
        client.close()


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


class SysReader:
    """The latest value of each ``$SYS/cluster/...`` topic a subscriber on a node has got."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.values: dict[str, str] = {}
        client.sub("$SYS/cluster/#")

    def read(self) -> dict[str, str]:
        try:
            while True:
                packet = self.client.wait_for(Publish, 0.2)
                self.values[packet.topic] = packet.payload.decode()
                if not packet.payload:
                    del self.values[packet.topic]
        except (TimeoutError, Closed):
            return self.values


def test_traffic_on_one_node_shows_in_the_others_cluster_view(
    nodes: Callable[[str], Node], opened: list[RawClient], redis: RedisServer
) -> None:
    a, b, c = nodes("a"), nodes("b"), nodes("c")
    sub_b = b.client("sub-b", opened)
    sub_b.sub("t/#", qos=1)
    sys_b = SysReader(b.client("sys-b", opened))
    c.client("idle-c", opened)
    pub_a = a.client("pub-a", opened)
    for n in range(7):
        pub_a.pub(f"t/{n}", b"x" * 10, qos=1)
    assert len(sub_b.publishes(7)) == 7  # delivered across the nodes

    # Each node's snapshot is in Redis, with a TTL.
    assert redis.command("EXISTS", "{midge:a}:stats") == b":1\r\n"
    assert int(redis.command("PTTL", "{midge:a}:stats")[1:]) > 0

    # $SYS on node b: the cluster's totals and node a's own figures.
    def sys_shows_a() -> bool:
        values = sys_b.read()
        return (
            values.get("$SYS/cluster/node/a/publish/messages/received") == "7"
            and values.get("$SYS/cluster/publish/messages/received") == "7"
            and values.get("$SYS/cluster/clients/connected") == "4"
            and values.get("$SYS/cluster/nodes") == "3"
        )

    assert wait_until(sys_shows_a), sys_b.values
    values = sys_b.values
    assert values["$SYS/cluster/node/b/clients/connected"] == "2"
    assert values["$SYS/cluster/node/c/clients/connected"] == "1"
    assert values["$SYS/cluster/node/a/publish/bytes/received"] == "70"
    assert values["$SYS/cluster/subscriptions/count"] == "2"  # t/# and $SYS/cluster/# on b
    assert int(values["$SYS/cluster/node/b/publish/messages/sent"]) >= 7
    assert values["$SYS/cluster/node/a/uptime"].endswith(" seconds")
    # $SYS/broker stays each node's own, as Mosquitto's.
    assert "$SYS/broker/clients/connected" not in values

    # /metrics on node b: the sums and a series per node.
    samples = b.samples()
    assert samples[("midge_cluster_node_publish_received_total", (("node", "a"),))] == 7
    assert samples[("midge_cluster_node_publish_received_total", (("node", "b"),))] == 0
    assert samples[("midge_cluster_publish_received_total", ())] == 7
    assert samples[("midge_cluster_clients_connected", ())] == 4
    assert samples[("midge_cluster_node_clients_connected", (("node", "c"),))] == 1
    assert samples[("midge_cluster_nodes_shown", ())] == 3
    assert samples[("midge_clients_connected", ())] == 2  # this node's own, as before

    # GET /api/cluster on node c.
    info = c.get("/api/cluster")
    assert (info["node"], info["redis"], info["nodes"]) == ("c", "up", ["a", "b", "c"])
    assert info["missing"] == []
    assert sorted(info["by_node"]) == ["a", "b", "c"]
    assert info["by_node"]["a"]["publish_received"] == 7
    assert info["by_node"]["a"]["publish_bytes_received"] == 70
    assert info["totals"]["clients_connected"] == 4
    assert info["totals"]["sessions"] == 4
    assert info["totals"]["subscriptions"] == 2
    assert info["by_node"]["b"]["memory"] > 0 and info["by_node"]["b"]["uptime"] >= 0

    # GET /api/clients: this node's by default, every node's with scope=cluster.
    assert [i["client_id"] for i in c.get("/api/clients")["items"]] == ["idle-c"]
    page = c.get("/api/clients", scope="cluster")
    assert [(i["client_id"], i["node"]) for i in page["items"]] == [
        ("idle-c", "c"),
        ("pub-a", "a"),
        ("sub-b", "b"),
        ("sys-b", "b"),
    ]
    assert (page["total"], page["nodes"], page["missing"]) == (4, ["a", "b", "c"], [])
    sub = page["items"][2]
    assert sub["connected"] and sub["subscriptions"] == 1
    paged = c.get("/api/clients", scope="cluster", search="-b", offset=1, limit=1)
    assert paged["total"] == 2 and [i["client_id"] for i in paged["items"]] == ["sys-b"]

    # midge ctl on node a.
    done = a.ctl("cluster")
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert lines[:4] == ["node a, Redis up", "  a (this node)", "  b", "  c"]
    table = {line.split()[0]: line.split()[1:] for line in lines[5:]}
    assert table["total"][:2] == ["4", "4"]  # connected, sessions
    assert table["a"][3] == "7"  # received
    assert table["c"][0] == "1"
    done = a.ctl("clients", "--cluster")
    assert done.returncode == 0, done
    assert [line.split("\t")[:2] for line in done.stdout.splitlines()] == [
        ["idle-c", "node=c"],
        ["pub-a", "node=a"],
        ["sub-b", "node=b"],
        ["sys-b", "node=b"],
    ]

    # Node c leaves: b's view and $SYS/cluster drop it (its retained topics cleared).
    assert c.proc.stop() == 0
    assert wait_until(lambda: sys_b.read().get("$SYS/cluster/nodes") == "2"), sys_b.values
    assert wait_until(lambda: sys_b.read().get("$SYS/cluster/clients/connected") == "3")
    assert not [t for t in sys_b.read() if t.startswith("$SYS/cluster/node/c/")]
    late = RawClient(b.mqtt.connect_host, b.mqtt.port, version=5)
    opened.append(late)
    late.connect("late")
    late.sub("$SYS/cluster/node/c/#")
    late.no_publish(1.0)
    assert redis.command("EXISTS", "{midge:c}:stats") == b":0\r\n"
    assert b.get("/api/cluster")["nodes"] == ["a", "b"]


def test_one_client_and_a_retained_clear_reach_every_node(
    nodes: Callable[[str], Node], opened: list[RawClient], redis: RedisServer
) -> None:
    """The admin API of node a reaches a client node b holds: its details (naming b), its
    disconnect and its session's deletion; and a retained message cleared on node a is gone
    from Redis and from node b, so neither gives it back."""
    from midge.codec.packets import Disconnect
    from midge.codec.properties import Prop

    a, b = nodes("a"), nodes("b")
    api = httpx.Client(base_url=a.api, auth=AUTH, timeout=10)
    far = RawClient(b.mqtt.connect_host, b.mqtt.port, version=5)
    opened.append(far)
    far.connect5("far", clean_start=True, properties={Prop.SESSION_EXPIRY_INTERVAL: 300})
    far.sub("far/#", qos=1)
    far.pub("keep/me", b"kept", qos=1, retain=True)
    assert wait_until(lambda: api.get("/api/clients/far").status_code == 200)
    details = api.get("/api/clients/far").json()
    assert (details["client_id"], details["connected"], details["node"]) == ("far", True, "b")
    assert [s["filter"] for s in details["subscription_list"]] == ["far/#"]
    assert api.get("/api/clients/nobody").status_code == 404

    # A session with a client connected is not deleted, wherever it is.
    assert api.delete("/api/sessions/far").status_code == 409
    answer = api.post("/api/clients/far/disconnect", json={"reason_code": 0x98})
    assert answer.status_code == 204, answer.text
    assert far.expect(Disconnect, timeout=5).reason_code == 0x98
    assert wait_until(lambda: not api.get("/api/clients/far").json()["connected"])
    assert api.post("/api/clients/far/disconnect").status_code == 404  # no longer connected
    assert api.delete("/api/sessions/far").status_code == 204
    assert api.get("/api/clients/far").status_code == 404
    assert b.get("/api/clients")["items"] == []
    assert api.delete("/api/sessions/far").status_code == 404

    # The retained message: on both nodes and in Redis, then cleared from node a.
    assert b.get("/api/retained/message", topic="keep/me")["payload"] == "kept"
    assert b"kept" in redis.command("HGET", "{midge}:retained", "keep/me")
    assert api.delete("/api/retained/message", params={"topic": "keep/me"}).status_code == 204
    on_b = f"{b.api}/api/retained/message"
    assert wait_until(
        lambda: httpx.get(on_b, params={"topic": "keep/me"}, auth=AUTH).status_code == 404
    )
    assert wait_until(lambda: redis.command("HGET", "{midge}:retained", "keep/me") == b"$-1\r\n")
    late = b.client("late", opened)
    late.sub("keep/#", qos=1)
    late.expect_nothing(0.3)
    assert api.delete("/api/retained/message", params={"topic": "keep/me"}).status_code == 404


def test_a_node_that_does_not_answer_is_listed_as_missing(
    nodes: Callable[[str], Node], opened: list[RawClient]
) -> None:
    """A node that stops answering (SIGSTOP) while still counted live: the cluster-wide client
    list comes after the 2 s wait without its clients, naming it in ``missing``; once its
    snapshot is older than 3 s the figures leave it out too."""
    import signal

    a, b = nodes("a"), nodes("b")
    a.client("on-a", opened)
    b.client("on-b", opened)
    assert wait_until(lambda: a.get("/api/cluster")["totals"]["clients_connected"] == 2)
    b.proc.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        page = a.get("/api/clients", scope="cluster")
        assert time.monotonic() - began >= 1.9
        assert [i["client_id"] for i in page["items"]] == ["on-a"]
        assert (page["nodes"], page["missing"]) == (["a"], ["b"])
        info = a.get("/api/cluster")
        if "b" in info["nodes"]:  # not yet declared dead: its late figures are left out
            assert wait_until(lambda: "b" not in a.get("/api/cluster")["by_node"], 6)
        info = a.get("/api/cluster")
        assert info["totals"]["clients_connected"] == 1
    finally:
        b.proc.send_signal(signal.SIGCONT)


def test_the_view_over_a_redis_cluster(
    redis_cluster: RedisCluster, nodes_at: Callable[[str, str], Node], opened: list[RawClient]
) -> None:
    """On a 3-master Redis Cluster the nodes' figures (a key in each node's own slot) and the
    questions over their channels work as on one Redis."""
    a, b = nodes_at(redis_cluster.url, "a"), nodes_at(redis_cluster.url, "b")
    assert a.proc.wait_output("(a Redis Cluster)", 5)
    a.client("on-a", opened).pub("x/y", b"1")
    b.client("on-b", opened)

    def both() -> bool:
        info = b.get("/api/cluster")
        return sorted(info["by_node"]) == ["a", "b"] and info["totals"]["clients_connected"] == 2

    assert wait_until(both)
    assert b.get("/api/cluster")["by_node"]["a"]["publish_received"] == 1
    page = b.get("/api/clients", scope="cluster")
    assert [(i["client_id"], i["node"]) for i in page["items"]] == [("on-a", "a"), ("on-b", "b")]
