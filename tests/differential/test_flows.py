"""QoS flows where the specification leaves the choice (issue 11): the v5 reason code of an ack
when no one subscribed, the order of packets on one connection, and the packet identifiers of
outgoing messages. Each scenario runs against the real Mosquitto 2.0.11 and midge (in memory);
the bytes each client receives are compared."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from midge.codec.packets import (
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
)
from midge.codec.properties import Prop
from midge.config import Config
from tests.differential.harness import needs_mosquitto
from tests.differential.test_wire import Pair, start_pair
from tests.memory import DurableMemoryBroker, MemoryBroker
from tests.rawclient import RawClient, tap


def until_pong(client: RawClient) -> list[Packet]:
    """PINGREQ, then every packet up to its PINGRESP (both brokers send it after whatever they
    had to send this client before)."""
    client.send(Pingreq())
    got: list[Packet] = []
    while not isinstance(packet := client.recv(), Pingresp):
        got.append(packet)
    return got


def ack_all(client: RawClient, packets: list[Packet]) -> None:
    """Acknowledge every PUBLISH (and PUBREL) in ``packets``, then sync."""
    for p in packets:
        if isinstance(p, Publish) and p.qos == 1:
            client.send(Puback(p.packet_id or 0))
        elif isinstance(p, Publish) and p.qos == 2:
            client.send(Pubrec(p.packet_id or 0))
        elif isinstance(p, Pubrel):
            client.send(Pubcomp(p.packet_id))
    more = until_pong(client)
    if more:
        ack_all(client, more)


def connect(client: RawClient, client_id: str, version: int, **fields: object) -> None:
    fields.setdefault("keep_alive", 0)
    assert client.connect(client_id, protocol_level=version, **fields).reason_code == 0


Scenario = Callable[[Pair, bool, int], list[bytes]]


def no_subscribers(pair: Pair, real: bool, version: int) -> list[bytes]:
    """QoS 1 and 2 to a topic no one subscribed to: v5 PUBACK 0x10 (No matching subscribers),
    but PUBREC Success (sent short): Mosquitto routes a QoS 2 message only at PUBREL."""
    with pair.client(real, version) as c:
        connect(c, "nosub", version)
        received = tap(c)
        c.send(Publish("nobody/home", b"1", 1, False, False, 1, {}))
        c.send(Publish("nobody/home", b"2", 2, False, False, 2, {}))
        assert isinstance(c.recv(), Puback) and isinstance(c.recv(), Pubrec)
        c.send(Pubrel(2))
        until_pong(c)
        return [bytes(received)]


def no_local_only(pair: Pair, real: bool, version: int) -> list[bytes]:
    """v5: the only matching subscription is the publisher's own, with No Local: it still
    matches, so the PUBACK is Success (Mosquitto's subs__process), and nothing is delivered."""
    with pair.client(real, version) as c:
        connect(c, "nolocal", version)
        c.send(Subscribe(1, [Subscription("mine/#", 1, no_local=True)], {}))
        until_pong(c)
        received = tap(c)
        c.send(Publish("mine/x", b"1", 1, False, False, 2, {}))
        until_pong(c)
        return [bytes(received)]


def own_messages(pair: Pair, real: bool, version: int) -> list[bytes]:
    """A client subscribed to its own topic: a retained message comes after the SUBACK; its own
    QoS 1 copy comes before the PUBACK; for QoS 2 the PUBREC comes first, then the copy (which
    Mosquitto sends once the PUBREL arrives), then the PUBCOMP."""
    with pair.client(real, version) as c:
        connect(c, "own", version)
        c.send(Publish("own/kept", b"r", 1, True, False, 1, {}))
        until_pong(c)
        received = tap(c)
        c.send(Subscribe(2, [Subscription("own/#", 2)], {}))
        ack_all(c, until_pong(c))
        c.send(Publish("own/q1", b"1", 1, False, False, 3, {}))
        ack_all(c, until_pong(c))
        c.send(Publish("own/q2", b"2", 2, False, False, 4, {}))
        assert isinstance(c.recv(), Pubrec)
        c.send(Pubrel(4))
        ack_all(c, until_pong(c))
        c.send(Publish("own/kept", b"", 0, True, False, None, {}))
        until_pong(c)
        return [bytes(received)]


def packet_ids(pair: Pair, real: bool, version: int) -> list[bytes]:
    """Outgoing packet identifiers: the first is 1, each QoS 1/2 message takes the next (QoS 0
    none), a message waiting for the window already has its turn, a resumed session goes on
    from where it was (re-sending with the same ids), a clean start begins at 1 again."""
    phases: list[bytes] = []
    expiry = {Prop.SESSION_EXPIRY_INTERVAL: 100} if version == 5 else {}
    with pair.client(real, version) as sub, pair.client(real, version) as pub:
        window = {Prop.RECEIVE_MAXIMUM: 2} if version == 5 else {}
        connect(sub, "ids", version, clean_start=False, properties={**expiry, **window})
        sub.send(Subscribe(1, [Subscription("ids", 2)], {}))
        until_pong(sub)
        connect(pub, "ids-pub", version)
        received = tap(sub)
        for pid, (payload, qos) in enumerate([(b"a", 1), (b"b", 0), (b"c", 2), (b"d", 1)], 1):
            pub.send(Publish("ids", payload, qos, False, False, pid if qos else None, {}))
            if qos == 2:
                # Mosquitto routes it now (at PUBREL), midge already did: the same order.
                pub.send(Pubrel(pid))
        until_pong(pub)
        got = until_pong(sub)
        phases.append(bytes(received))
        received.clear()
        first = got[0]
        assert isinstance(first, Publish)
        sub.send(Puback(first.packet_id or 0))  # the window opens for the next one
        until_pong(sub)
        phases.append(bytes(received))
        received.clear()
        sub.close()
        pub.send(Publish("ids", b"e", 1, False, False, 9, {}))
        until_pong(pub)
    with pair.client(real, version) as sub, pair.client(real, version) as pub:
        received = tap(sub)
        connect(sub, "ids", version, clean_start=False, properties=expiry)
        ack_all(sub, until_pong(sub))
        connect(pub, "ids-pub", version)
        pub.send(Publish("ids", b"f", 1, False, False, 1, {}))
        until_pong(pub)
        ack_all(sub, until_pong(sub))
        phases.append(bytes(received))
    with pair.client(real, version) as sub, pair.client(real, version) as pub:
        received = tap(sub)
        connect(sub, "ids", version, clean_start=True)
        sub.send(Subscribe(1, [Subscription("ids", 1)], {}))
        until_pong(sub)
        connect(pub, "ids-pub", version)
        pub.send(Publish("ids", b"g", 1, False, False, 1, {}))
        until_pong(pub)
        ack_all(sub, until_pong(sub))
        phases.append(bytes(received))
    return phases


SCENARIOS: dict[str, tuple[Scenario, list[int]]] = {
    "no-subscribers": (no_subscribers, [4, 5]),
    "no-local-only": (no_local_only, [5]),
    "own-messages": (own_messages, [3, 4, 5]),
    "packet-ids": (packet_ids, [4, 5]),
}
CASES = [(name, v) for name, (_, versions) in SCENARIOS.items() for v in versions]


@pytest.fixture(scope="module")
def plain() -> Iterator[Pair]:
    yield from start_pair([])


@needs_mosquitto
@pytest.mark.parametrize(("name", "version"), CASES)
def test_same_bytes_as_mosquitto(plain: Pair, name: str, version: int) -> None:
    scenario, _ = SCENARIOS[name]
    theirs = scenario(plain, True, version)
    mine = scenario(plain, False, version)
    assert [b.hex() for b in mine] == [b.hex() for b in theirs]


def test_qos2_publish_without_subscribers_gets_pubrec_success() -> None:
    """MQTT 5 3.5.2.1: PUBREC may say 0x10, but Mosquitto says Success (short form); PUBACK 0x10."""
    client = RawClient(MemoryBroker(Config()).link(), version=5)
    client.connect5("q2")
    received = tap(client)
    client.publish("nobody", b"x", qos=1)
    client.publish("nobody", b"x", qos=2)
    assert bytes(received) == b"\x40\x03\x00\x01\x10" + b"\x50\x02\x00\x02" + b"\x70\x02\x00\x02"


def test_own_qos2_copy_follows_the_pubrec() -> None:
    """The PUBREC goes before the client's own copy (Mosquitto's order), in memory."""
    client = RawClient(MemoryBroker(Config()).link(), version=5)
    client.connect5("self")
    client.subscribe("me", 2)
    client.send(Publish("me", b"x", 2, False, False, 7, {}))
    assert client.expect(Pubrec).packet_id == 7
    copy = client.expect(Publish)
    assert (copy.topic, copy.qos, copy.packet_id) == ("me", 2, 1)


def test_own_qos2_copy_follows_the_pubrec_with_a_durable_store(tmp_path: Path) -> None:
    """With a durable store the PUBREC waits for the commit (the message recorded for the
    persistent session first); the copy, and anything else for this client, waits with it."""
    broker = DurableMemoryBroker(tmp_path)
    client = RawClient(broker.link(), version=5)
    client.connect5("durable-self", properties={Prop.SESSION_EXPIRY_INTERVAL: 300})
    client.subscribe("me", 2)
    received = tap(client)
    client.send(Publish("me", b"x", 2, False, False, 7, {}))
    client.send(Pingreq())
    assert isinstance(client.recv(), Pubrec)
    copy = client.expect(Publish)
    assert (copy.topic, copy.packet_id) == ("me", 1)
    client.expect(Pingresp)
    assert bytes(received).startswith(b"\x50\x02\x00\x07")
    broker.kill()


def test_packet_ids_wrap_and_skip_ids_in_use() -> None:
    """After 65535 the next packet id is 1 (MQTT 2.2.1); one still in use is skipped
    (MQTT-2.2.1-3 v3.1.1: a new packet takes an unused identifier). Mosquitto 2.0.11 increments
    without that check (docs/mosquitto.md)."""
    broker = MemoryBroker(Config())
    sub = RawClient(broker.link(), version=5)
    sub.connect5("wrap")
    sub.subscribe("w", 1)
    pub = RawClient(broker.link(), version=5)
    pub.connect5("pub")
    pub.publish("w", b"first", qos=1)
    assert sub.expect(Publish).packet_id == 1  # left unacknowledged
    broker.broker.sessions["wrap"]._next_pid = 65535
    for payload in (b"last", b"wrapped"):
        pub.publish("w", payload, qos=1)
    got = sub.publishes(2)
    assert [(p.packet_id, p.payload) for p in got] == [(65535, b"last"), (2, b"wrapped")]
