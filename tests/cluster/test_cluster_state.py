"""Cluster-wide state across real node processes: retained messages kept in Redis, client ids
owned through Redis with a fencing token (takeover across nodes), shared subscriptions."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from midge.codec.packets import Connack, Connect, Disconnect, Publish, Will
from midge.codec.properties import Prop
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import wait_until
from tests.rawclient import Closed, RawClient, receive_publishes


def test_retained_message_is_on_every_node_before_its_puback(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    a, b, c = node("a"), node("b"), node("c")
    pub = clients(a, "pub")
    pub.publish("r/1", b"kept", qos=1, retain=True)
    pub.publish("r/2", b"gone", qos=1, retain=True)
    pub.publish("r/2", b"", qos=1, retain=True)  # a clear crosses nodes too
    # In Redis, and on each node as soon as the PUBACK came: no waiting here.
    assert b"r/1" in redis.command("HKEYS", "{midge}:retained")
    assert b"r/2" not in redis.command("HKEYS", "{midge}:retained")
    for proc in (b, c):
        sub = clients(proc, f"sub-{proc.port}")
        sub.subscribe("r/#", 1)
        got = receive_publishes(sub, 1)
        assert (got[0].topic, got[0].payload, got[0].retain) == ("r/1", b"kept", True)
        sub.expect_nothing(0.3)


def test_a_node_that_joins_later_gets_the_retained_messages(node: Any, clients: Any) -> None:
    a = node("a")
    clients(a, "pub").publish("late/x", b"there", qos=1, retain=True)
    a.stop()
    b = node("b")
    sub = clients(b, "sub")
    sub.subscribe("late/#", 0)
    got = sub.publishes(1)
    assert (got[0].topic, got[0].payload, got[0].retain) == ("late/x", b"there", True)


def test_takeover_across_nodes_moves_the_session(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    a, b, c = node("a"), node("b"), node("c")
    persistent = {Prop.SESSION_EXPIRY_INTERVAL: 300}
    first = clients(a, "mover", version=5, clean_start=True, properties=persistent)
    first.subscribe("q/#", 1)
    owner = redis.command("HGET", "midge:owner:{mover}", "node")
    assert owner.endswith(b"a\r\n")
    token1 = int(redis.command("HGET", "midge:owner:{mover}", "token").split(b"\r\n")[1])
    pub = clients(c, "pub")
    pub.publish("q/1", b"before", qos=1)
    assert receive_publishes(first, 1)[0].payload == b"before"
    first.disconnect()
    time.sleep(0.2)
    pub.publish("q/2", b"queued1", qos=1)
    pub.publish("q/3", b"queued2", qos=2)
    # The session lives on node a; the client comes back on node b.
    second = RawClient(b.host, b.port, version=5)
    connack = second.connect("mover", clean_start=False, properties=persistent)
    assert connack.reason_code == 0 and connack.session_present
    got = receive_publishes(second, 2)
    assert [p.payload for p in got] == [b"queued1", b"queued2"]
    assert redis.command("HGET", "midge:owner:{mover}", "node").endswith(b"b\r\n")
    token2 = int(redis.command("HGET", "midge:owner:{mover}", "token").split(b"\r\n")[1])
    assert token2 > token1
    # The moved subscription is routed to b now, not to a.
    pub.publish("q/4", b"after", qos=1)
    assert receive_publishes(second, 1)[0].payload == b"after"
    assert b"q/#" not in redis.command("HKEYS", "{midge:a}:routes")
    # A live connection is taken over from another node: DISCONNECT 0x8E (v5).
    third = RawClient(a.host, a.port, version=5)
    try:
        connack = third.connect("mover", clean_start=False, properties=persistent)
        assert connack.session_present
        assert second.expect(Disconnect).reason_code == 0x8E
        assert second.wait_closed(2)
        pub.publish("q/5", b"third", qos=1)
        got = receive_publishes(third, 1)
        if got[0].payload == b"after":
            # Its PUBACK may have been on the way when the session moved: sent again, DUP.
            assert got[0].dup
            got = receive_publishes(third, 1)
        assert got[0].payload == b"third"
    finally:
        second.close()
        third.close()


def test_takeover_with_clean_start_publishes_the_will_across_nodes(node: Any, clients: Any) -> None:
    a, b = node("a"), node("b")
    watcher = clients(b, "watcher")
    watcher.subscribe("will/#", 0)
    old = clients(a, "dup", clean_start=True, will=Will("will/dup", b"bye", 0, False))
    new = clients(b, "dup", clean_start=True)
    assert old.wait_closed(3)
    got = watcher.publishes(1)
    assert (got[0].topic, got[0].payload) == ("will/dup", b"bye")
    new.expect_nothing(0.2)


def test_takeover_resuming_a_session_keeps_the_will_unpublished(node: Any, clients: Any) -> None:
    """MQTT-3.1.3-9 v5: a will with a delay is not published when the session is resumed."""
    a, b = node("a"), node("b")
    watcher = clients(b, "watcher")
    watcher.subscribe("will/#", 0)
    will = Will("will/kept", b"bye", 0, False, {Prop.WILL_DELAY_INTERVAL: 30})
    persistent = {Prop.SESSION_EXPIRY_INTERVAL: 300}
    old = clients(a, "keeper", version=5, clean_start=True, will=will, properties=persistent)
    new = clients(b, "keeper", version=5, clean_start=False, properties=persistent)
    assert old.expect(Disconnect).reason_code == 0x8E
    watcher.no_publish(1.0)
    new.expect_nothing(0.2)


def stays_open(conn: RawClient) -> bool:
    """Still connected after a second: it got a CONNACK and was not taken over (DISCONNECT
    0x8E then a close) since."""
    try:
        packet = conn.recv(1.0)
    except Closed:
        return False
    except TimeoutError:
        return True
    assert isinstance(packet, Disconnect) and packet.reason_code == 0x8E, packet
    return False


def test_simultaneous_connects_on_two_nodes_end_with_one_owner(
    redis: RedisServer, node: Any
) -> None:
    """The same client id connects to a and b at the same moment, 10 times over: each time
    exactly one connection stays, and it is on the node Redis names as the owner."""
    a, b = node("a"), node("b")
    for round_ in range(10):
        cid = f"race-{round_}"
        conns = [RawClient(a.host, a.port, version=5), RawClient(b.host, b.port, version=5)]
        acks: list[Any] = [None, None]
        go = threading.Barrier(2)

        def connect(
            k: int,
            conns: list[RawClient] = conns,
            acks: list[Any] = acks,
            go: threading.Barrier = go,
            cid: str = cid,
        ) -> None:
            go.wait()
            conns[k].send(Connect(cid, protocol_level=5, keep_alive=0))
            try:
                acks[k] = conns[k].expect(Connack, timeout=8)
            except (Closed, AssertionError, TimeoutError) as exc:
                acks[k] = exc

        threads = [threading.Thread(target=connect, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        try:
            open_ = [stays_open(conn) for conn in conns]
            assert open_.count(True) == 1, (round_, acks, open_)
            owner = redis.command("HGET", f"midge:owner:{{{cid}}}", "node")
            winner = "a" if open_[0] else "b"
            assert owner.endswith(f"{winner}\r\n".encode()), (owner, open_)
        finally:
            for conn in conns:
                conn.close()


def test_shared_subscription_delivers_each_message_once_across_nodes(
    node: Any, clients: Any
) -> None:
    procs = [node("a"), node("b"), node("c")]
    members: list[RawClient] = []
    for i in range(6):
        member = clients(procs[i % 3], f"member{i}", version=5)
        member.subscribe("$share/g/s/#", 1)
        members.append(member)
    plain = clients(procs[1], "plain", version=5)
    plain.subscribe("s/#", 0)
    pubs = [clients(procs[i], f"p{i}", version=5) for i in range(3)]
    for n in range(60):
        pubs[n % 3].publish(f"s/{n}", str(n).encode(), qos=1)
    received: Counter[str] = Counter()
    serving: set[int] = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = sum(received.values())
        for i, member in enumerate(members):
            got = [p for p in member.recv_all(0.05) if isinstance(p, Publish)]
            for p in got:
                member.ack(p)
            if got:
                serving.add(i % 3)
            received.update(p.payload.decode() for p in got)
        if before >= 60 and sum(received.values()) == before:
            break
    assert received == Counter(str(n) for n in range(60))  # each exactly once
    assert serving == {0, 1, 2}  # every node's members served
    plain_got: list[Publish] = []
    while len(plain_got) < 60 and time.monotonic() < deadline + 5:
        plain_got += [p for p in plain.recv_all(0.2) if isinstance(p, Publish)]
    assert len(plain_got) == 60


def test_subscription_routes_follow_nodes_that_die(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """A SIGKILLed node's routes leave the replicas: a QoS 1 publish no longer waits for it."""
    import signal

    a, b = node("a"), node("b")
    sub = clients(b, "sub")
    sub.subscribe("d/#", 1)
    pub = clients(a, "pub", version=5)
    b.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    assert wait_until(lambda: b"b" not in redis.command("SMEMBERS", "{midge}:nodes"), 10)
    assert a.wait_output("node b is gone", 5)
    start = time.monotonic()
    ack = pub.pub("d/1", b"x", 1)
    assert ack is not None and ack.reason_code == 0x10  # nobody subscribes any more
    assert time.monotonic() - start < 2
