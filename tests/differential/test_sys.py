"""$SYS against the real Mosquitto 2.0.11: the same configuration (``sys_interval 1``), a v5
``$SYS/#`` subscriber on each, and the SET of topic names and each payload's format compared (the
values differ between any two runs). tests/test_systree.py checks the values exactly."""

from __future__ import annotations

import re
import time

from midge.codec.packets import Publish
from midge.codec.properties import Prop
from tests.differential.harness import midge, mosquitto, needs_mosquitto
from tests.rawclient import Closed, RawClient

LINES = ["allow_anonymous true", "sys_interval 1"]

#: Topics Mosquitto publishes and midge does not (docs/mosquitto.md, "$SYS"): none.
NOT_IN_MIDGE: set[str] = set()

NUMBER = re.compile(r"[0-9]+")
FORMATS = {
    "$SYS/broker/version": re.compile(r"\S+ version \S+"),
    "$SYS/broker/uptime": re.compile(r"[0-9]+ seconds"),
}
LOAD = re.compile(r"[0-9]+\.[0-9]{2}")


def _format(topic: str) -> re.Pattern[str]:
    if topic.startswith("$SYS/broker/load/"):
        return LOAD
    return FORMATS.get(topic, NUMBER)


def _collect(port: int, seconds: float) -> list[Publish]:
    """Every $SYS PUBLISH a v5 subscriber at QoS 2 gets in ``seconds`` (acknowledged)."""
    client = RawClient("127.0.0.1", port, version=5)
    try:
        client.connect5("sys-watcher")
        client.sub("$SYS/#", qos=2)
        got: list[Publish] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message: Publish = client.wait_for(Publish, left)
            except (TimeoutError, Closed):
                break
            got.append(message)
            client.ack(message, others_stay_queued=True)
        return got
    finally:
        client.close()


@needs_mosquitto
def test_sys_topics_and_payload_formats_match_mosquitto() -> None:
    # Mosquitto updates every sys_interval + 1 seconds (see docs/mosquitto.md): 3 s holds at
    # least one update after the retained values.
    with mosquitto(LINES) as port:
        theirs = _collect(port, 3.0)
    with midge(LINES) as port:
        ours = _collect(port, 3.0)
    their_topics = {p.topic for p in theirs}
    our_topics = {p.topic for p in ours}
    assert len(their_topics) > 50  # the whole tree, heap/... included (Debian's build)
    assert our_topics == their_topics - NOT_IN_MIDGE
    for broker, received in (("mosquitto", theirs), ("midge", ours)):
        for p in received:
            text = p.payload.decode()
            assert _format(p.topic).fullmatch(text), f"{broker}: {p.topic} = {text!r}"
            assert p.qos == 2, f"{broker}: {p.topic} at QoS {p.qos}"
    # What was published before the subscriber came is retained (clients/maximum is first sent
    # once the subscriber is counted), on both.
    retained = their_topics - {"$SYS/broker/clients/maximum"}
    assert {p.topic for p in theirs if p.retain} == retained
    assert {p.topic for p in ours if p.retain} == retained
    # Deliberate difference (docs/mosquitto.md): Mosquitto gives every value but the version a
    # 60 s Message Expiry Interval, so that a value that stops changing leaves the retained set
    # a minute later; midge's stay retained until they change.
    expiring = {p.topic for p in theirs if Prop.MESSAGE_EXPIRY_INTERVAL in p.properties}
    assert expiring == their_topics - {"$SYS/broker/version"}
    assert not any(p.properties for p in ours)
