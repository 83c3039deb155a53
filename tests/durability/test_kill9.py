"""Kill -9 (issue 5): every message midge acknowledged survives SIGKILL; QoS 2 exactly once.

The broker is the real ``midge broker`` process with ``durability = "fsync"``; a PUBACK (QoS 1) or
PUBREC (QoS 2) received by the publisher is midge's promise that the message is recorded for
every persistent session it was routed to. After SIGKILL and a restart on the same data directory,
the persistent subscriber must receive every acknowledged message: QoS 1 at least once, QoS 2
exactly once (MQTT-4.3.3: the receiver's state tells a re-sent PUBLISH from a new one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.durability.harness import DurableBroker, Publisher, Subscriber, connect, payloads

N = 2000
VERSIONS = pytest.mark.parametrize("version", [4, 5], ids=["v3.1.1", "v5"])


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[DurableBroker]:
    broker = DurableBroker(tmp_path)
    yield broker
    broker.close()


def subscribe_then_leave(broker: DurableBroker, version: int) -> None:
    sub = broker.client(version)
    connect(sub, "sub")
    sub.subscribe("k/#", 2)
    sub.disconnect()


def check_delivered(sub: Subscriber, qos1: set[bytes], qos2: set[bytes]) -> None:
    got = set(sub.counts)
    assert qos1 <= got, f"{len(qos1 - got)} acknowledged QoS 1 messages lost"
    assert qos2 <= got, f"{len(qos2 - got)} acknowledged QoS 2 messages lost"
    twice = [p for p in qos2 if sub.counts[p] != 1]
    assert not twice, f"{len(twice)} QoS 2 messages delivered more than once, e.g. {twice[:3]}"


@VERSIONS
def test_kill_right_after_last_ack_offline_subscriber(durable: DurableBroker, version: int) -> None:
    """N QoS 1 then N QoS 2 to an offline persistent session; SIGKILL right after the last ack."""
    subscribe_then_leave(durable, version)
    pub = Publisher(durable.client(version))
    connect(pub.client, "pub", clean=True)
    one, two = payloads("q1", N), payloads("q2", N)
    pub.send("k/1", one, 1)
    pub.send("k/2", two, 2, kill_after=N, broker=durable)
    assert pub.acked == set(one) | set(two)
    durable.restart()
    client = durable.client(version)
    assert connect(client, "sub").session_present
    sub = Subscriber()
    sub.receive(client, pub.acked)
    check_delivered(sub, set(one), set(two))
    assert all(sub.qos[p] == 1 for p in one) and all(sub.qos[p] == 2 for p in two)


@VERSIONS
def test_kill_mid_stream_persistent_publisher_resumes(durable: DurableBroker, version: int) -> None:
    """SIGKILL with 200 QoS 2 PUBLISHes in flight; the publisher resumes its session (re-sending
    PUBLISH with DUP, or PUBREL) and each message still arrives exactly once: the inbound QoS 2
    ids the broker recorded make a re-sent PUBLISH an acknowledgement only (MQTT-4.3.3-2)."""
    subscribe_then_leave(durable, version)
    pub = Publisher(durable.client(version))
    connect(pub.client, "pub")
    one, two = payloads("q1", N), payloads("q2", N)
    pub.send("k/1", one, 1)
    pub.send("k/2", two, 2, kill_after=N // 2, broker=durable)
    acked_before_kill = set(pub.acked)
    assert len(acked_before_kill) >= N + N // 2
    durable.restart()
    client = durable.client(version)
    assert connect(client, "pub").session_present
    pub.resume(client)
    # Whatever was not sent before the kill is sent now.
    pub.send("k/2", [p for p in two if p not in pub.acked], 2)
    assert pub.acked == set(one) | set(two)
    sub_client = durable.client(version)
    assert connect(sub_client, "sub").session_present
    sub = Subscriber()
    sub.receive(sub_client, pub.acked)
    check_delivered(sub, set(one), set(two))


@VERSIONS
def test_kill_with_subscriber_online_mid_delivery(durable: DurableBroker, version: int) -> None:
    """The subscriber is connected and has handled only part of the stream when the broker is
    killed: after the restart, unacknowledged deliveries are re-sent with DUP and the same packet
    ids (MQTT-4.4.0-1), released QoS 2 ones as PUBREL, and nothing is lost or doubled."""
    subscribe_then_leave(durable, version)
    online = durable.client(version)
    assert connect(online, "sub").session_present
    sub = Subscriber()
    pub = Publisher(durable.client(version))
    connect(pub.client, "pub", clean=True)
    one, two = payloads("q1", N), payloads("q2", N)
    pub.send("k/1", one, 1)
    sub.receive(online, set(), limit=N // 2)
    pub.send("k/2", two, 2, kill_after=N, broker=durable)
    sub.receive(online, set(), timeout=5, limit=N // 2)  # what was in the socket before the kill
    online.close()
    durable.restart()
    client = durable.client(version)
    assert connect(client, "sub").session_present
    sub.receive(client, pub.acked)
    check_delivered(sub, set(one), set(two))
    assert sub.dups_seen > 0  # the re-sends did happen
