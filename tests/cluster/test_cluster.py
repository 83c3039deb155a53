"""A cluster of real ``midge broker --cluster`` processes meeting in a real redis-server.

Each SUBACK comes only once every other node routes the filter to the subscriber's node, so
tests publish on another node straight after it. A PUBACK/PUBREC comes only once every node the
message went to has accepted it (docs/cluster.md)."""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

from midge.codec.packets import Puback, Publish, Pubrec, Subscription, Will
from tests.cluster.conftest import RedisServer
from tests.procbroker import ProcBroker, run_midge


def wait_until(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def test_nodes_register_in_redis_and_leave_on_sigterm(redis: RedisServer, node: Any) -> None:
    a = node("a")
    b = node("b")
    members = redis.command("SMEMBERS", "{midge}:nodes")
    assert b"a" in members and b"b" in members
    assert redis.command("EXISTS", "{midge}:node:a") == b":1\r\n"
    assert a.stop() == 0
    assert redis.command("EXISTS", "{midge}:node:a") == b":0\r\n"
    assert b"a" not in redis.command("SMEMBERS", "{midge}:nodes")
    assert b.stop() == 0


def test_a_live_node_id_cannot_be_taken(redis: RedisServer, node: Any) -> None:
    node("a")
    result = run_midge(["broker", "-p", "0", "--cluster", redis.url, "--node-id", "a"])
    assert result.returncode == 1, result
    assert "node id 'a' is taken by a live node" in result.stderr


def test_unreachable_redis_stops_the_start() -> None:
    from tests.procbroker import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_midge(["broker", "-p", "0", "--cluster", url, "--node-id", "x"])
    assert result.returncode == 1, result
    assert f"cannot join the cluster at {url}" in result.stderr


def test_cluster_options_in_a_config_file(redis: RedisServer, tmp_path: Any) -> None:
    conf = tmp_path / "node.conf"
    conf.write_text(f"listener 0 127.0.0.1\ncluster_redis {redis.url}\ncluster_node_id conf-node\n")
    toml = tmp_path / "node.toml"
    toml.write_text(
        f'cluster_redis = "{redis.url}"\ncluster_node_id = "toml-node"\n'
        '[[listener]]\nport = 0\naddress = "127.0.0.1"\n'
    )
    with ProcBroker(("-c", str(conf))) as a, ProcBroker(("-c", str(toml))) as b:
        a.wait_listening()
        b.wait_listening()
        members = redis.command("SMEMBERS", "{midge}:nodes")
        assert b"conf-node" in members and b"toml-node" in members


def test_dead_node_expires(redis: RedisServer, node: Any) -> None:
    node("a")
    b = node("b")
    b.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    # Its heartbeat key expires (3 s) and node a removes it, its routes and its stream.
    assert wait_until(lambda: b"b" not in redis.command("SMEMBERS", "{midge}:nodes"), 10)


def test_qos0_1_2_cross_nodes_exactly_once(node: Any, clients: Any) -> None:
    a, b, c = node("a"), node("b"), node("c")
    subs = []
    for k, proc in enumerate((a, b, c)):
        sub = clients(proc, f"sub-{k}", version=5)
        sub.sub(Subscription("t/#", 2))
        subs.append(sub)
    pub = clients(a, "pub", version=5)
    pub_c = clients(c, "pub-c")
    for qos in (0, 1, 2):
        for n in range(5):
            pub.pub(f"t/{qos}", f"a{qos}-{n}".encode(), qos)
            pub_c.pub(f"t/{qos}", f"c{qos}-{n}".encode(), qos)
    for sub in subs:
        got = sub.more_publishes(timeout=2.0, ack=True)
        while len(got) < 30:
            more = sub.more_publishes(timeout=2.0, ack=True)
            if not more:
                break
            got += more
        counts = Counter((p.topic, p.payload, p.qos) for p in got)
        expected = Counter(
            (f"t/{qos}", f"{who}{qos}-{n}".encode(), qos)
            for qos in (0, 1, 2)
            for n in range(5)
            for who in ("a", "c")
        )
        assert counts == expected
        # Order per publisher and QoS is kept.
        for qos in (0, 1, 2):
            for who in ("a", "c"):
                seq = [p.payload for p in got if p.qos == qos and p.payload[:1] == who.encode()]
                assert seq == [f"{who}{qos}-{n}".encode() for n in range(5)]


def test_message_goes_only_to_nodes_with_a_matching_subscription(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    a, b, c = node("a"), node("b"), node("c")
    sub = clients(b, "sub")
    sub.sub("only/b", qos=1)
    assert redis.command("HKEYS", "{midge:b}:routes").count(b"only/b") == 1
    assert b"only/b" not in redis.command("HKEYS", "{midge:c}:routes")
    pub = clients(a, "pub", version=5)
    for n in range(10):
        ack = pub.pub("only/b", str(n).encode(), 1)
        assert isinstance(ack, Puback) and ack.reason_code == 0
    assert [p.payload for p in sub.publishes(10)] == [str(n).encode() for n in range(10)]
    # Nothing was queued for c: its stream holds no entry.
    assert redis.command("XLEN", "{midge:c}:q") == b":0\r\n"
    # A topic nobody subscribes to anywhere: v5 0x10 on the publisher's node.
    ack = pub.pub("nobody/here", b"x", 1)
    assert isinstance(ack, Puback) and ack.reason_code == 0x10
    # Unsubscribed: the route leaves Redis.
    sub.unsub("only/b")
    assert wait_until(lambda: b"only/b" not in redis.command("HKEYS", "{midge:b}:routes"))
    del c


def test_puback_waits_until_the_remote_node_accepted(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """The remote node is stopped (SIGSTOP): the publisher's PUBACK does not come; once it runs
    again and accepts the message, it comes."""
    a, b = node("a"), node("b")
    sub = clients(b, "sub")
    sub.sub("held", qos=1)
    pub = clients(a, "pub", version=5)
    b.send_signal(signal.SIGSTOP)
    try:
        pub.send(Publish("held", b"x", 1, False, False, 7, {}))
        pub.expect_nothing(1.0)
        # Still in b's stream, unacknowledged.
        assert redis.command("XLEN", "{midge:b}:q") == b":1\r\n"
    finally:
        b.send_signal(signal.SIGCONT)
    ack = pub.expect(Puback, timeout=5)
    assert ack.packet_id == 7 and ack.reason_code == 0
    assert [p.payload for p in sub.publishes(1)] == [b"x"]
    # Accepted entries are acknowledged and deleted.
    assert wait_until(lambda: redis.command("XLEN", "{midge:b}:q") == b":0\r\n")


def test_pubrec_waits_too(node: Any, clients: Any) -> None:
    a, b = node("a"), node("b")
    sub = clients(b, "sub")
    sub.sub("q2", qos=2)
    pub = clients(a, "pub")
    b.send_signal(signal.SIGSTOP)
    try:
        pub.send(Publish("q2", b"y", 2, False, False, 3, {}))
        pub.expect_nothing(1.0)
    finally:
        b.send_signal(signal.SIGCONT)
    assert pub.expect(Pubrec, timeout=5).packet_id == 3
    got = sub.publishes(1)
    assert got[0].payload == b"y" and got[0].qos == 2


def test_wills_reach_other_nodes_when_a_node_stops(node: Any, clients: Any) -> None:
    a, b = node("a"), node("b")
    watcher = clients(b, "watcher")
    watcher.subscribe("will/#", 1)
    clients(a, "leaver", will=Will("will/leaver", b"gone", 1, False))
    assert a.stop() == 0
    got = watcher.publishes(1)
    assert (got[0].topic, got[0].payload) == ("will/leaver", b"gone")


def test_bad_cluster_command_lines_are_refused(redis: RedisServer, tmp_path: Any) -> None:
    cases = [
        (["--cluster", "http://127.0.0.1:1/0"], "invalid cluster_redis 'http://127.0.0.1:1/0'"),
        (["--cluster", redis.url, "--node-id", "no spaces"], "invalid cluster_node_id"),
        (["--cluster", "redis+sentinel://127.0.0.1:1/"], "invalid cluster_redis"),
        (["--cluster", redis.url, "--workers", "2"], "a cluster node runs one worker for now"),
    ]
    for args, error in cases:
        result = run_midge(["broker", "-p", "0", *args])
        assert result.returncode == 1, (args, result)
        assert error in result.stderr, (args, result.stderr)
    conf = tmp_path / "node.toml"
    conf.write_text(f'cluster_redis = "{redis.url}"\ndata_dir = "{tmp_path}"\n')
    result = run_midge(["broker", "-c", str(conf)])
    assert result.returncode == 1
    assert "a cluster node keeps its persistent sessions in Redis" in result.stderr


def test_the_node_id_defaults_to_hostname_pid(redis: RedisServer) -> None:
    import socket

    with ProcBroker(("--host", "127.0.0.1", "--port", "0", "--cluster", redis.url)) as proc:
        proc.wait_listening()
        expected = f"{socket.gethostname()}-{proc.proc.pid}".encode()
        assert expected in redis.command("SMEMBERS", "{midge}:nodes")
