"""Mosquitto's own command-line clients (mosquitto_pub, mosquitto_sub 2.0) against midge, and mixes
of them with paho: a message published by one client library over one protocol version must reach
a subscriber of another library and version intact.

mosquitto_sub prints each message as one tab-separated line (see ``MosquittoSub.FORMAT``), with the
payload in hex; its debug lines tell the test when its subscription is in place.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes

from tests.interop.clients import (
    VERSION_ID,
    MosquittoSub,
    PahoClient,
    properties,
    props_of,
    user_properties,
)

pytestmark = pytest.mark.interop

Paho = Callable[..., PahoClient]
Sub = Callable[..., MosquittoSub]
Pub = Callable[..., object]

ALL_VERSIONS = pytest.mark.parametrize("version", [3, 4, 5], ids=VERSION_ID.get)
V311_V5 = pytest.mark.parametrize("version", [4, 5], ids=VERSION_ID.get)

BINARY = bytes(range(256))


@ALL_VERSIONS
def test_publish_each_qos_to_subscriptions_at_qos1_and_qos2(
    mosquitto_sub: Sub, pub: Pub, tmp_path: Path, version: int
) -> None:
    """Delivered QoS = min(published, granted); a binary payload (``-f``) arrives unchanged."""
    at1 = mosquitto_sub(["m/#"], version, qos=1, count=3)
    at2 = mosquitto_sub(["m/#"], version, qos=2, count=3)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(BINARY)
    for qos in (0, 1, 2):
        pub(f"m/{qos}", "-f", str(payload), version=version, qos=qos)
    for sub, granted in ((at1, 1), (at2, 2)):
        assert sub.wait() == 0, sub.output()
        got = sorted((m.topic, m.qos, m.retain, m.payload) for m in sub.messages())
        assert got == [(f"m/{q}", min(q, granted), False, BINARY) for q in (0, 1, 2)]


@ALL_VERSIONS
def test_retained_set_and_cleared(mosquitto_sub: Sub, pub: Pub, version: int) -> None:
    """``-r`` retains (a new subscriber sees the retain flag); ``-r -n`` clears it."""
    pub("keep/a", "-r", version=version, message="kept", qos=1)
    sub = mosquitto_sub(["keep/#"], version, qos=1, count=1)
    assert sub.wait() == 0, sub.output()
    [message] = sub.messages()
    assert (message.topic, message.payload, message.qos, message.retain) == (
        "keep/a",
        b"kept",
        1,
        True,
    )

    pub("keep/a", "-r", "-n", version=version, qos=1)
    empty = mosquitto_sub(["keep/#"], version, qos=1, lifetime=1)
    empty.wait(timeout=10)
    assert empty.messages() == []


@ALL_VERSIONS
def test_wildcards(mosquitto_sub: Sub, pub: Pub, version: int) -> None:
    filters = {
        "sport/+/player1": ["sport/tennis/player1"],
        "sport/#": ["sport/tennis/player1", "sport/tennis/player2", "sport"],
        "+/tennis/#": ["sport/tennis/player1", "sport/tennis/player2"],
    }
    subs = {f: mosquitto_sub([f], version, qos=1, count=len(t)) for f, t in filters.items()}
    for topic in ("sport/tennis/player1", "sport/tennis/player2", "sport", "other/tennis"):
        pub(topic, version=version, message=topic, qos=1)
    for topic_filter, sub in subs.items():
        assert sub.wait() == 0, sub.output()
        assert sorted(m.topic for m in sub.messages()) == sorted(filters[topic_filter])


# -- wills -----------------------------------------------------------------------------------


@ALL_VERSIONS
def test_will_when_client_process_is_killed(paho: Paho, mosquitto_sub: Sub, version: int) -> None:
    """SIGKILL: no DISCONNECT; the kernel closes the socket, so the will is published
    (MQTT-3.1.2-8)."""
    watcher = paho("watcher", 5)
    watcher.subscribe("will/#", 2)
    doomed = mosquitto_sub(
        ["unrelated"],
        version,
        args=["--will-topic", "will/killed", "--will-payload", "killed", "--will-qos", "2"],
    )
    doomed.kill()
    message = watcher.expect()
    assert (message.topic, message.payload, message.qos) == ("will/killed", b"killed", 2)


@ALL_VERSIONS
def test_no_will_when_client_exits_normally(
    paho: Paho, mosquitto_sub: Sub, pub: Pub, version: int
) -> None:
    """mosquitto_sub ``-C 1`` sends DISCONNECT when it is done: the will is discarded."""
    watcher = paho("watcher", 5)
    watcher.subscribe("will/#", 2)
    polite = mosquitto_sub(
        ["go"],
        version,
        count=1,
        args=["--will-topic", "will/polite", "--will-payload", "never"],
    )
    pub("go", version=version, message="now")
    assert polite.wait() == 0, polite.output()
    time.sleep(0.3)
    pub("will/fence", version=version, message="fence", qos=1)
    message = watcher.expect()
    assert (message.topic, message.payload) == ("will/fence", b"fence")
    watcher.expect_nothing(0.3)


# -- persistent sessions ---------------------------------------------------------------------


@ALL_VERSIONS
def test_persistent_session(paho: Paho, mosquitto_sub: Sub, version: int) -> None:
    """``-c -i ID -E`` leaves a session (v5: never expiring) with a QoS 1 subscription; messages
    published meanwhile are delivered on the next ``-c`` connection."""
    client_id = f"durable-v{version}"
    setup = mosquitto_sub(
        ["d/t"], version, qos=1, args=["-c", "-i", client_id, "-E"], wait_subscribed=False
    )
    assert setup.wait() == 0, setup.output()
    publisher = paho("pub", version)
    publisher.publish("d/t", b"one", 1)
    publisher.publish("d/t", b"two" + BINARY, 2)
    publisher.publish("d/t", b"three", 1)
    back = mosquitto_sub(
        ["d/t"], version, qos=1, count=3, args=["-c", "-i", client_id], wait_subscribed=False
    )
    assert back.wait() == 0, back.output()
    got = [(m.payload, m.qos) for m in back.messages()]
    assert sorted(got) == sorted([(b"one", 1), (b"two" + BINARY, 1), (b"three", 1)])
    assert [p for p, _ in got].index(b"one") < [p for p, _ in got].index(b"three")


# -- mixes of clients and versions -----------------------------------------------------------


@pytest.mark.parametrize("pub_version", [3, 4], ids=VERSION_ID.get)
def test_mosquitto_pub_v3_to_paho_v5(paho: Paho, pub: Pub, pub_version: int) -> None:
    sub = paho("sub", 5)
    sub.subscribe("mix/#", 2)
    pub("mix/a", version=pub_version, message="from mosquitto_pub", qos=2)
    message = sub.expect()
    assert (message.topic, message.payload, message.qos) == ("mix/a", b"from mosquitto_pub", 2)
    assert user_properties(message) == []


@pytest.mark.parametrize("sub_version", [3, 4], ids=VERSION_ID.get)
def test_paho_v5_to_mosquitto_sub_v3(paho: Paho, mosquitto_sub: Sub, sub_version: int) -> None:
    """A v5 message with properties reaches a v3 subscriber as its payload alone."""
    sub = mosquitto_sub(["mix/#"], sub_version, qos=2, count=1)
    props = properties(UserProperty=[("k", "v")], ContentType="text/plain")
    paho("pub", 5).publish("mix/b", b"from paho v5" + BINARY, 2, properties=props)
    assert sub.wait() == 0, sub.output()
    [message] = sub.messages()
    assert (message.topic, message.payload, message.qos) == ("mix/b", b"from paho v5" + BINARY, 2)
    assert message.extra == ["", "", "", ""]  # no properties printed for a v3 connection


def test_mosquitto_pub_v5_properties_to_paho(paho: Paho, pub: Pub) -> None:
    sub5 = paho("sub5", 5)
    sub5.subscribe("props/#", 1)
    sub4 = paho("sub4", 4)
    sub4.subscribe("props/#", 1)
    pub(
        "props/x",
        *["-D", "publish", "user-property", "k", "v1"],
        *["-D", "publish", "user-property", "k", "v2"],
        *["-D", "publish", "content-type", "text/plain"],
        *["-D", "publish", "response-topic", "props/reply"],
        *["-D", "publish", "correlation-data", "corr-42"],
        *["-D", "publish", "payload-format-indicator", "1"],
        *["-D", "publish", "message-expiry-interval", "600"],
        version=5,
        message="with properties",
        qos=1,
    )
    message = sub5.expect()
    assert message.payload == b"with properties"
    assert user_properties(message) == [("k", "v1"), ("k", "v2")]
    assert props_of(message).ContentType == "text/plain"
    assert props_of(message).ResponseTopic == "props/reply"
    assert props_of(message).CorrelationData == b"corr-42"
    assert props_of(message).PayloadFormatIndicator == 1
    assert 590 <= props_of(message).MessageExpiryInterval <= 600
    plain = sub4.expect()
    assert (plain.topic, plain.payload) == ("props/x", b"with properties")


def test_paho_v5_properties_to_mosquitto_sub_v5(paho: Paho, mosquitto_sub: Sub) -> None:
    sub = mosquitto_sub(["props/#"], 5, qos=1, count=1)
    props = properties(
        UserProperty=[("k", "v1"), ("a", "b"), ("k", "v2")],
        ContentType="application/json",
        ResponseTopic="props/reply",
        CorrelationData=b"corr-7",
    )
    paho("pub", 5).publish("props/y", b"{}", 1, properties=props)
    assert sub.wait() == 0, sub.output()
    [message] = sub.messages()
    assert message.payload == b"{}"
    assert message.extra == ["k:v1 a:b k:v2", "application/json", "props/reply", "corr-7"]


def test_v5_shared_subscription_mosquitto_sub_and_paho(
    paho: Paho, mosquitto_sub: Sub, pub: Pub
) -> None:
    """One share group with a mosquitto_sub and a paho member: each message goes to one of them."""
    tool = mosquitto_sub(["$share/g/work"], 5, qos=1)
    worker = paho("worker", 5)
    worker.subscribe("$share/g/work", 1)
    count = 30
    lines = "\n".join(f"job {i}" for i in range(count)) + "\n"
    pub("work", "-l", version=5, qos=1, stdin=lines.encode())
    deadline = time.monotonic() + 5
    from_paho: list[bytes] = []
    while time.monotonic() < deadline:
        from_paho.extend(bytes(m.payload) for m in worker.drain(0.1))
        if len(from_paho) + len(tool.messages()) >= count:
            break
    from_paho.extend(bytes(m.payload) for m in worker.drain(0.3))
    from_tool = [bytes(m.payload) for m in tool.messages()]
    everything = {b"job %d" % i for i in range(count)}
    assert len(from_paho) + len(from_tool) == count, (from_paho, from_tool)
    assert set(from_paho) | set(from_tool) == everything
    assert from_paho and from_tool


# -- size and volume -------------------------------------------------------------------------


@V311_V5
def test_large_message(mosquitto_sub: Sub, pub: Pub, tmp_path: Path, version: int) -> None:
    payload = random.Random(7).randbytes(300_000)
    path = tmp_path / "big.bin"
    path.write_bytes(payload)
    sub = mosquitto_sub(["big"], version, qos=1, count=1)
    pub("big", "-f", str(path), version=version, qos=1)
    assert sub.wait(timeout=15) == 0, sub.output()
    [message] = sub.messages()
    assert message.payload == payload


@V311_V5
def test_thousand_lines_in_order_at_qos1(mosquitto_sub: Sub, pub: Pub, version: int) -> None:
    """``mosquitto_pub -l`` sends each stdin line as a message; all 1000 arrive in order."""
    count = 1000
    sub = mosquitto_sub(["lines"], version, qos=1, count=count)
    lines = "".join(f"line {i}\n" for i in range(count)).encode()
    pub("lines", "-l", version=version, qos=1, stdin=lines, timeout=60)
    assert sub.wait(timeout=30) == 0, sub.output()
    got = sub.messages()
    assert [bytes(m.payload) for m in got] == [b"line %d" % i for i in range(count)]
    assert all(m.qos == 1 for m in got)


def test_will_properties_reach_mosquitto_sub(paho: Paho, mosquitto_sub: Sub) -> None:
    sub = mosquitto_sub(["will/#"], 5, qos=1, count=1)
    will_props = properties(PacketTypes.WILLMESSAGE, UserProperty=[("who", "w")])
    client = paho("willer", 5, will=("will/p", b"bye", 1, False), will_properties=will_props)
    client.drop()
    assert sub.wait() == 0, sub.output()
    [message] = sub.messages()
    assert (message.topic, message.payload, message.extra[0]) == ("will/p", b"bye", "who:w")
