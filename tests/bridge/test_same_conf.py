"""The same mosquitto.conf with a ``connection`` section, given to Mosquitto and to midge (each
as the edge broker, bridged to one central Mosquitto): what clients on both sides observe
(topics after remapping, payloads, QoS, retain flags, the state notifications) is the same."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import paho.mqtt.client as paho

from tests.bridge.test_mosquitto_remote import Sub
from tests.differential.harness import midge, mosquitto, needs_mosquitto

pytestmark = needs_mosquitto

Seen = list[tuple[str, bytes | bytearray, int, bool]]  # paho's payload type


def _seen(m: paho.MQTTMessage) -> tuple[str, bytes | bytearray, int, bool]:
    return (m.topic, m.payload, m.qos, bool(m.retain))


def _drain(sub: Sub, quiet: float = 0.7, until: tuple[str, bytes] | None = None) -> Seen:
    """What ``sub`` received until nothing came for ``quiet`` s, or (bounded) until ``until``."""
    seen: Seen = []
    while True:
        try:
            m = sub.any(10.0 if until else quiet)
        except Exception:
            return seen
        seen.append((m.topic, m.payload, m.qos, bool(m.retain)))
        if until == (m.topic, m.payload):
            return seen


def _scenario(
    edge: Callable[[list[str]], AbstractContextManager[int]], central_port: int
) -> tuple[Seen, Seen]:
    lines = [
        "allow_anonymous true",
        "connection c",
        f"address 127.0.0.1:{central_port}",
        "remote_clientid edge",
        "cleansession true",
        "restart_timeout 1",
        "topic a/# out 1 e/ c/",
        "topic b/# in 2 e/ c/",
        'topic "" both 1 e/shared c/shared',
    ]
    central = Sub(central_port, ["$SYS/broker/connection/edge/state", "c/#"])
    assert edge in (mosquitto, midge)
    with edge(lines) as edge_port:
        deadline = time.monotonic() + 10
        while True:  # the bridge is up when its state says 1
            m = central.any(max(0.1, deadline - time.monotonic()))
            if m.payload == b"1":
                break
        local = Sub(edge_port, ["e/#"])
        central.publish("c/b/1", b"in", qos=2)
        central.publish("c/a/ignored", b"not bridged in")
        local.publish("e/a/1", b"out", qos=1, retain=True)
        local.publish("e/b/ignored", b"not bridged out")
        central.publish("c/shared", b"both-in")
        local.publish("e/shared", b"both-out")
        # Five messages are expected at the edge (see the test); then anything more that comes.
        at_edge = [_seen(local.any(10.0)) for _ in range(5)] + _drain(local, quiet=0.5)
        local.client.publish("e/a/1", b"", 1, True).wait_for_publish(5)  # clear the retained
    # ... and the state once the edge stopped
    at_central = _drain(central, until=("$SYS/broker/connection/edge/state", b"0"))
    central.client.publish("$SYS/broker/connection/edge/state", b"", 1, True)
    central.publish("c/a/1", b"", retain=True)
    central.close()
    local.close()
    return at_edge, at_central


def test_the_same_connection_section_behaves_the_same() -> None:
    with mosquitto(["allow_anonymous true"]) as central_port:
        theirs = _scenario(mosquitto, central_port)
        mine = _scenario(midge, central_port)
    print("mosquitto:", theirs)
    print("midge:    ", mine)
    # Each side in its own order (the two directions race); the same set, each once.
    assert [sorted(side) for side in mine] == [sorted(side) for side in theirs]
