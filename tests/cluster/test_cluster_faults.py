"""Faults: the cluster's Redis stops (killed) and comes back empty. Nodes keep serving local
traffic, refuse what they cannot guarantee (QoS 1/2 to another node's subscribers: v5 0x83; a v3
publisher is closed), say so in their log, and reconcile when Redis returns."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from midge.codec.packets import Disconnect, Puback, Pubcomp, Publish, Pubrec, Pubrel, Will
from midge.codec.properties import Prop
from tests.cluster.conftest import RedisServer
from tests.cluster.tcpproxy import TcpProxy
from tests.cluster.test_cluster import wait_until
from tests.procbroker import ProcBroker, run_midge
from tests.rawclient import RawClient, receive_publishes


def test_redis_down_local_traffic_goes_on_remote_qos1_refused_then_reconciled(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    a, b = node("a"), node("b")
    local_sub = clients(a, "local-sub")
    local_sub.subscribe("local/#", 1)
    remote_sub = clients(b, "remote-sub")
    remote_sub.subscribe("remote/#", 1)
    pub = clients(a, "pub", version=5)
    pub.publish("kept/r", b"v1", qos=1, retain=True)

    redis.stop()
    assert a.wait_output("cannot be reached", 5), a.describe()
    # Local traffic: served as ever.
    ack = pub.pub("local/1", b"here", 1)
    assert isinstance(ack, Puback) and ack.reason_code == 0
    assert receive_publishes(local_sub, 1)[0].payload == b"here"
    # QoS 1 to a subscriber on another node: cannot be guaranteed, refused, not delivered.
    ack = pub.pub("remote/1", b"lost", 1)
    assert isinstance(ack, Puback) and ack.reason_code == 0x83
    remote_sub.no_publish(0.5)
    # A retained QoS 1 message cannot reach the other nodes before its PUBACK: refused too.
    ack = pub.pub("kept/r", b"v2", 1, retain=True)
    assert isinstance(ack, Puback) and ack.reason_code == 0x83
    # QoS 0 stays on the node: the local subscriber gets it, nothing piles up for later.
    pub.pub("local/2", b"q0", 0)
    assert local_sub.publishes(1)[0].payload == b"q0"
    # A v3 publisher cannot be told: closed.
    v3 = clients(a, "v3-pub")
    v3.send(Publish("remote/2", b"x", 1, False, False, 1, {}))
    v3.expect_closed()

    # Redis returns, empty: each node registers again, writes its routes and the retained
    # messages it holds back, and cross-node QoS 1 works again.
    redis.start()
    assert wait_until(
        lambda: (
            b"a" in redis.command("SMEMBERS", "{midge}:nodes")
            and b"b" in redis.command("SMEMBERS", "{midge}:nodes")
        ),
        10,
    )
    assert wait_until(lambda: b"remote/#" in redis.command("HKEYS", "{midge:b}:routes"), 10)
    assert wait_until(lambda: b"kept/r" in redis.command("HKEYS", "{midge}:retained"), 10)
    assert a.wait_output("answers again", 5)

    def delivered() -> bool:
        ack = pub.pub("remote/3", b"back", 1)
        assert isinstance(ack, Puback)
        return ack.reason_code == 0

    assert wait_until(delivered, 10)
    assert receive_publishes(remote_sub, 1)[0].payload == b"back"
    late = clients(b, "late")
    late.subscribe("kept/#", 0)
    got = late.publishes(1)
    assert (got[0].topic, got[0].payload) == ("kept/r", b"v1")


def test_metrics_show_the_cluster_and_degraded_health(redis: RedisServer, tmp_path: Any) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from midge.auth.passwd import hash_password

    conf = tmp_path / "node.conf"
    conf.write_text(
        f"cluster_redis {redis.url}\ncluster_node_id m\n"
        f"admin_user admin\nadmin_password_hash {hash_password(b'pw').encode()}\n"
        "listener 0 127.0.0.1\nlistener 0 127.0.0.1\nprotocol http\n"
    )

    with ProcBroker(("-c", str(conf)), listeners=2) as proc:
        listeners = proc.wait_listening()
        http = next(lst for lst in listeners if lst.protocol == "http")
        url = f"http://127.0.0.1:{http.port}/metrics"

        def value(name: str) -> float:
            for family in text_string_to_metric_families(httpx.get(url).text):
                for sample in family.samples:
                    if sample.name == name:
                        return float(sample.value)
            raise AssertionError(f"no {name}")

        assert value("midge_cluster_redis_up") == 1
        assert value("midge_cluster_nodes") == 1
        api = f"http://127.0.0.1:{http.port}/api/cluster"
        auth = ("admin", "pw")
        info = httpx.get(api, auth=auth).json()
        assert (info["node"], info["redis"], info["nodes"]) == ("m", "up", ["m"])
        ctl = run_midge(
            [
                "ctl",
                "--url",
                f"http://127.0.0.1:{http.port}",
                "--user",
                "admin",
                "--password",
                "pw",
                "cluster",
            ]
        )
        assert ctl.returncode == 0, ctl
        assert ctl.stdout.splitlines()[:2] == ["node m, Redis up", "  m (this node)"]
        redis.stop()
        assert wait_until(lambda: value("midge_cluster_redis_up") == 0, 5)
        assert httpx.get(api, auth=auth).json()["redis"] == "down"
        redis.start()
        assert wait_until(lambda: value("midge_cluster_redis_up") == 1, 10)


def test_sigkill_of_a_node_loses_no_acknowledged_message_of_a_persistent_session(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """Messages for a persistent session on node b are acknowledged to their publisher (on a)
    only once b has written them to Redis; b is killed; the client resumes on c and gets each,
    QoS 2 exactly once."""
    a, b, c = node("a"), node("b"), node("c")
    persistent = {Prop.SESSION_EXPIRY_INTERVAL: 300}
    keeper = clients(b, "keeper", version=5, clean_start=True, properties=persistent)
    keeper.subscribe("k1/#", 1)
    keeper.subscribe("k2/#", 2)
    keeper.disconnect()
    pub = clients(a, "pub", version=5)
    for n in range(10):
        ack = pub.pub(f"k1/{n}", f"one-{n}".encode(), 1)
        assert isinstance(ack, Puback) and ack.reason_code == 0
        pub.pub(f"k2/{n}", f"two-{n}".encode(), 2)
    assert b"midge:session:{keeper}" in redis.command("KEYS", "midge:session:*")
    b.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    assert wait_until(lambda: b"b" not in redis.command("SMEMBERS", "{midge}:nodes"), 10)
    assert c.wait_output("node b is gone", 5)
    back = RawClient(c.host, c.port, version=5)
    try:
        connack = back.connect("keeper", clean_start=False, properties=persistent)
        assert connack.reason_code == 0 and connack.session_present
        got = receive_publishes(back, 20)
        assert sorted(p.payload for p in got) == sorted(
            [f"one-{n}".encode() for n in range(10)] + [f"two-{n}".encode() for n in range(10)]
        )
        assert [p.payload for p in got if p.qos == 2] == [f"two-{n}".encode() for n in range(10)]
        back.expect_nothing(0.5)
        # Its subscriptions came with it: routed to c now.
        pub.pub("k1/after", b"after", 1)
        assert receive_publishes(back, 1)[0].payload == b"after"
    finally:
        back.close()


def test_partition_between_a_node_and_redis_heals_without_duplicate_qos2(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """Node a reaches Redis through a proxy the test cuts for 1 s (well under the 3 s after
    which the others would expire it), while node b publishes QoS 2 messages to a subscriber on
    a. After the heal each message is delivered once, and each publish completes."""
    proxy = TcpProxy(redis.port)
    try:
        a = node("a", "--cluster", f"redis://127.0.0.1:{proxy.port}/0")
        b = node("b")
        sub = clients(a, "sub", version=5)
        sub.subscribe("p/#", 2)
        pub = clients(b, "pub", version=5)
        for n in range(5):
            pub.pub(f"p/{n}", f"m{n}".encode(), 2)
        done: list[Any] = []

        def publish_during() -> None:
            for n in range(5, 10):
                done.append(pub.pub(f"p/{n}", f"m{n}".encode(), 2))

        proxy.cut()
        assert a.wait_output("cannot be reached", 5)
        thread = threading.Thread(target=publish_during)
        thread.start()
        time.sleep(1.0)
        proxy.heal()
        thread.join(20)
        assert len(done) == 5 and all(p is not None and p.reason_code == 0 for p in done), done
        got = receive_publishes(sub, 10, timeout=10)
        sub.expect_nothing(1.0)
        assert Counter(p.payload for p in got) == Counter(f"m{n}".encode() for n in range(10))
    finally:
        proxy.close()


def test_publisher_qos2_state_survives_its_node(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """A QoS 2 PUBLISH received on b (PUBREC sent, so its id is in Redis) is not routed again
    when the publisher, its node killed, resumes on c and sends it again (DUP), then PUBREL."""
    a, b, c = node("a"), node("b"), node("c")
    persistent = {Prop.SESSION_EXPIRY_INTERVAL: 300}
    sub = clients(a, "sub", version=5)
    sub.subscribe("once/#", 2)
    pub = clients(b, "pub", version=5, clean_start=True, properties=persistent)
    pub.send(Publish("once/1", b"only", 2, False, False, 9, {}))
    assert pub.expect(Pubrec).packet_id == 9
    got = receive_publishes(sub, 1)
    assert got[0].payload == b"only"
    b.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    assert c.wait_output("node b is gone", 10)
    again = RawClient(c.host, c.port, version=5)
    try:
        connack = again.connect("pub", clean_start=False, properties=persistent)
        assert connack.session_present
        again.send(Publish("once/1", b"only", 2, False, True, 9, {}))
        assert again.expect(Pubrec).packet_id == 9
        again.send(Pubrel(9))
        assert again.expect(Pubcomp).packet_id == 9
        sub.no_publish(1.0)  # not delivered a second time
    finally:
        again.close()


def _will_client(
    proc: ProcBroker,
    clients: Callable[..., RawClient],
    client_id: str,
    version: int,
    **fields: Any,
) -> RawClient:
    """A client of ``proc`` whose will publishes ``gone:{client_id}`` on ``will/{client_id}``."""
    will = Will(f"will/{client_id}", f"gone:{client_id}".encode(), 1, False, fields.pop("wp", {}))
    return clients(proc, client_id, version=version, will=will, **fields)


def _wills(watcher: RawClient, expected: int = 0, quiet: float = 1.0) -> Counter[bytes]:
    """The wills ``watcher`` (subscribed to ``will/#``) gets: ``expected`` of them at least
    (waited for up to 10 s each), then any more until ``quiet`` passes with none."""
    got = [p.payload for p in receive_publishes(watcher, expected, timeout=10)]
    got += [p.payload for p in watcher.more_publishes(quiet, ack=True)]
    return Counter(got)


def test_sigkill_of_a_node_publishes_the_wills_of_its_connections(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """The clients of node b whose session ends with their connection (v3.1.1 clean session,
    v5 session expiry 0) have no session in Redis, but their wills are kept there while they
    are connected: when b is killed, node a, taking it over, publishes each once, a v5 will's
    delay not waited for (the session ended); a will discarded by a normal DISCONNECT is not
    published; a persistent session's will comes once too (from its snapshot)."""
    a, b = node("a"), node("b")
    watcher = clients(a, "watcher")
    watcher.subscribe("will/#", 1)
    _will_client(b, clients, "v3", 4)
    _will_client(b, clients, "v5", 5, wp={Prop.WILL_DELAY_INTERVAL: 3600})
    _will_client(b, clients, "keeps", 5, properties={Prop.SESSION_EXPIRY_INTERVAL: 300})
    polite = _will_client(b, clients, "polite", 4)
    polite.disconnect()
    assert wait_until(lambda: redis.command("HLEN", "{midge:b}:wills") == b":2\r\n", 5)
    b.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    assert a.wait_output("node b is gone", 10)
    got = _wills(watcher, 3)
    assert got == Counter([b"gone:v3", b"gone:v5", b"gone:keeps"]), got
    # b's wills are gone; those published are in its wills taken (if it comes back).
    assert redis.command("EXISTS", "{midge:b}:wills") == b":0\r\n"
    assert redis.command("HLEN", "{midge:b}:wills-taken") == b":2\r\n"
    assert a.wait_output("2 wills of node b's lost connections published", 1)


@pytest.mark.parametrize("answered", [True, False], ids=["answered", "unanswered"])
def test_a_node_cut_off_and_taken_over_lets_go_the_clients_whose_wills_were_published(
    redis: RedisServer, node: Any, clients: Any, answered: bool
) -> None:
    """Node a is cut off from Redis long enough for node b to declare it dead and take it
    over: b publishes the will of a's clean client (it seems gone). When a reaches Redis
    again, it lets that client go (v5: DISCONNECT 0x8E) without publishing the will again; a
    client that connected to a while it was cut off keeps its connection, and its will is
    published when it goes. ``unanswered``: Redis wrote the first client's will, but the
    answer was lost as the connection broke, so a writes it again when Redis is back (after
    b took it): that client is let go all the same."""
    proxy = TcpProxy(redis.port)
    try:
        a = node("a", "--cluster", f"redis://127.0.0.1:{proxy.port}/0")
        b = node("b")
        watcher = clients(b, "watcher")
        watcher.subscribe("will/#", 1)
        if not answered:
            proxy.drop_answers(after=b"{midge:a}:wills")
        early = _will_client(a, clients, "early", 5)
        assert wait_until(lambda: redis.command("HEXISTS", "{midge:a}:wills", "early") == b":1\r\n")
        proxy.cut()
        assert a.wait_output("cannot be reached", 5)
        late = _will_client(a, clients, "late", 5)
        assert b.wait_output("node a is gone", 15)
        assert _wills(watcher, 1) == Counter([b"gone:early"])
        proxy.heal()
        try:
            assert early.expect(Disconnect, timeout=15).reason_code == 0x8E
        except TimeoutError:
            raise AssertionError(f"early was not let go\n{a.describe()}") from None
        assert a.wait_output("early's will was published while this node was away", 5)
        # a has acted on its wills taken: cleared (exactly what it read).
        assert wait_until(lambda: redis.command("EXISTS", "{midge:a}:wills-taken") == b":0\r\n")
        late.ping()  # still connected
        assert _wills(watcher) == Counter()  # not again
        late.close()  # gone without DISCONNECT: its will now
        assert _wills(watcher, 1) == Counter([b"gone:late"])
    finally:
        proxy.close()


def test_a_take_over_between_a_nodes_read_of_its_wills_taken_and_their_clearing_is_kept(
    redis: RedisServer,
) -> None:
    """The scripts a take-over and a node coming back run, in Redis, interleaved: node a,
    registered again, reads its wills taken (c1 and c2, serials 5 and 7), and before it clears
    them it is cut off and taken over again (c1's new connection, serial 9, and c3's wills are
    published). Clearing what a read must leave that second take-over's records, which a's
    next check needs to let c1 and c3 go; a deletion of the whole hash lost them."""
    from midge.cluster.redis_router import (
        _FORGET_TAKEN,
        _READ_WILLS,
        _TAKE_WILLS,
        WILLS_TAKEN_TTL,
    )
    from midge.store.redis import wills_key, wills_taken_key

    taken, wills, ttl = wills_taken_key("a"), wills_key("a"), str(WILLS_TAKEN_TTL)
    redis.command("HSET", wills, "c1", "5:will", "c2", "7:will")
    redis.command("EVAL", _TAKE_WILLS, "2", wills, taken, ttl)
    read = redis.command("EVAL", _READ_WILLS, "2", taken, wills)
    assert b"c1\r\n$1\r\n5" in read and b"c2\r\n$1\r\n7" in read, read
    redis.command("HSET", wills, "c1", "9:will", "c3", "3:will")
    redis.command("EVAL", _TAKE_WILLS, "2", wills, taken, ttl)
    redis.command("EVAL", _FORGET_TAKEN, "1", taken, "c1", "5", "c2", "7")
    assert redis.command("HGET", taken, "c1") == b"$1\r\n9\r\n"
    assert redis.command("HGET", taken, "c3") == b"$1\r\n3\r\n"
    assert redis.command("HEXISTS", taken, "c2") == b":0\r\n"
    # a's next check reads them, acts, and clears exactly those: nothing is left.
    redis.command("EVAL", _FORGET_TAKEN, "1", taken, "c1", "9", "c3", "3")
    assert redis.command("EXISTS", taken) == b":0\r\n"


def test_after_an_outage_of_redis_for_every_node_no_node_is_declared_dead(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """Redis is out of reach of both nodes for longer than a node's expiry (a slow failover, a
    stalled Redis, a network fault in front of it), so their keys expire there. Node a reaches
    it again first, b half a second later: a must not take b for dead (its key expired while a
    could not see it refresh it either), and so b's subscriber keeps getting a's messages.
    A node judges the others only once it has reached Redis for a whole expiry itself."""
    to_a, to_b = TcpProxy(redis.port), TcpProxy(redis.port)
    try:
        a = node("a", "--cluster", f"redis://127.0.0.1:{to_a.port}/0")
        b = node("b", "--cluster", f"redis://127.0.0.1:{to_b.port}/0")
        assert a.wait_output("node b is up", 5)
        sub = clients(b, "sub", version=5)
        sub.subscribe("s/#", 1)
        pub = clients(a, "pub", version=5)
        to_a.cut()
        to_b.cut()
        assert a.wait_output("cannot be reached", 2) and b.wait_output("cannot be reached", 2)
        time.sleep(4.0)  # both keys expire (3 s)
        to_a.heal()
        assert a.wait_output("answers again", 5)
        time.sleep(0.5)
        to_b.heal()
        assert b.wait_output("answers again", 5)
        time.sleep(4.0)  # a's expiry, and a heartbeat more: a has judged b by now
        assert not a.wait_output("node b is dead", 0.1), a.describe()
        assert not b.wait_output("registered again", 0.1), b.describe()
        ack = pub.pub("s/1", b"after", 1)
        assert isinstance(ack, Puback) and ack.reason_code == 0, ack
        assert receive_publishes(sub, 1)[0].payload == b"after"
    finally:
        to_a.close()
        to_b.close()


def test_a_retained_message_published_while_a_node_reconnects_its_channels_is_acknowledged(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """Node b's connections to Redis break for less than its expiry (it stays a member), and
    node a publishes a retained QoS 1 message meanwhile: b misses the RETAIN frame but reads the
    message from Redis when it subscribes again, and says so (SYNCED); a asks b again (RECHECK)
    and b answers, so a's PUBACK comes then, not after the 60 s limit. A client subscribing on b
    gets the message."""
    proxy = TcpProxy(redis.port)
    try:
        a = node("a")
        b = node("b", "--cluster", f"redis://127.0.0.1:{proxy.port}/0")
        assert a.wait_output("node b is up", 5)
        pub = clients(a, "pub", version=5)
        proxy.cut()
        assert b.wait_output("cannot be reached", 2)
        pub.send(Publish("kept/r", b"while away", 1, True, False, 1, {}))
        time.sleep(0.3)  # a's RETAIN frame is out, b hears nothing
        proxy.heal()
        try:
            ack = pub.expect(Puback, timeout=10)
        except TimeoutError:
            raise AssertionError(f"no PUBACK\n{a.describe()}\n{b.describe()}") from None
        assert ack.reason_code == 0x10  # accepted; no subscriber matched
        assert not a.wait_output("node b is gone", 0.1)  # b stayed a member
        sub = clients(b, "sub")
        sub.subscribe("kept/#", 1)
        got = receive_publishes(sub, 1)[0]
        assert (got.payload, got.retain) == (b"while away", True)
    finally:
        proxy.close()


def test_a_node_restarted_with_its_id_publishes_its_lost_connections_wills(
    redis: RedisServer, node: Any, clients: Any
) -> None:
    """A node alone in its cluster is killed with a client connected, and started again with
    the same id (no node took it over): as it joins, it publishes that client's will (here a
    retained one, so a subscriber that comes afterwards sees it), once."""
    b = node("b")
    will = Will("will/lost", b"gone:lost", 1, True)
    clients(b, "lost", version=4, will=will)
    assert wait_until(lambda: redis.command("HEXISTS", "{midge:b}:wills", "lost") == b":1\r\n")
    b.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    # Its node key expires (NODE_TTL) before the id can be used again.
    assert wait_until(lambda: redis.command("EXISTS", "{midge}:node:b") == b":0\r\n", 10)
    again = node("b")
    assert again.wait_output("1 will of node b's lost connections published", 5)
    watcher = clients(again, "watcher")
    watcher.subscribe("will/#", 1)
    got = watcher.more_publishes(1.0, ack=True)
    assert [(p.topic, p.payload, p.retain) for p in got] == [("will/lost", b"gone:lost", True)]
    assert redis.command("EXISTS", "{midge:b}:wills") == b":0\r\n"
