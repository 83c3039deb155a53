"""ACL files and SUBSCRIBE (issue 11): Mosquitto 2.0.11 grants every filter in SUBACK whatever
its acl_file says (security_default.c: "FIXME - implement ACL subscription strings") and checks
read access on each delivery, routed or retained. midge does the same: for each protocol version
and ACL shape (an empty file; read-only, write-only, readwrite and deny topic rules; a pattern;
user rules), the subscriber's and the publisher's bytes are compared with the real broker's."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from midge.codec.packets import Packet, Pingreq, Pingresp, Puback, Publish, Subscribe, Subscription
from tests.differential.harness import needs_mosquitto
from tests.differential.test_wire import Pair, start_pair
from tests.rawclient import RawClient, tap

pytestmark = needs_mosquitto

SHAPED = """\
topic read r/#
topic write w/#
topic readwrite rw/#
topic deny rw/no
pattern read p/%c/#
user alice
topic readwrite a/#
user writer
topic write #
"""
ACLS = {"empty": "", "shaped": SHAPED}
#: Filters that do not overlap (Mosquitto sends one copy per matching subscription, midge one
#: per client: a separate difference).
FILTERS = ["r/#", "w/#", "rw/#", "p/sub/#", "a/#", "x/#", "$SYS/#", "$share/g/s/#"]
TOPICS = ["r/1", "w/1", "rw/1", "rw/no", "p/sub/1", "a/1", "x/1", "s/1"]
VERSIONS = [3, 4, 5]
USERS = [None, "alice"]

Answers = tuple[bytes, bytes, bytes]


def until_pong(client: RawClient) -> list[Packet]:
    """PINGREQ, then every packet up to its PINGRESP (which both brokers send after whatever
    they had to send this client before)."""
    client.send(Pingreq())
    got: list[Packet] = []
    while not isinstance(packet := client.recv(), Pingresp):
        got.append(packet)
    return got


def scenario(pair: Pair, real: bool, version: int, user: str | None) -> Answers:
    """``writer`` (may write everything) retains two messages, ``sub`` (anonymous or alice)
    subscribes to every filter in one SUBSCRIBE, ``writer`` publishes to every topic at QoS 1,
    and ``sub`` publishes once itself: (what ``sub`` got for its SUBSCRIBE: SUBACK and retained
    messages, what it got after, the writer's acks)."""
    with pair.client(real, version) as writer, pair.client(real, version) as sub:
        writer.connect("writer", username="writer", keep_alive=0)
        for topic in ("r/ret", "x/ret"):
            writer.send(Publish(topic, b"kept", 0, True, False, None, {}))
        writer.ping()
        sub.connect("sub", username=user, keep_alive=0)
        to_sub = tap(sub)
        sub.send(Subscribe(1, [Subscription(f, 1) for f in FILTERS], {}))
        got = until_pong(sub)
        subscribed = bytes(to_sub)
        to_sub.clear()
        to_writer = tap(writer)
        for topic in TOPICS:
            writer.send(Publish(topic, b"m", 1, False, False, writer.next_packet_id(), {}))
        until_pong(writer)
        sub.send(Publish("w/1", b"own", 1, False, False, 77, {}))
        got += until_pong(sub)
        for p in got:
            if isinstance(p, Publish) and p.qos:
                sub.send(Puback(p.packet_id or 0))
        for topic in ("r/ret", "x/ret"):
            writer.send(Publish(topic, b"", 0, True, False, None, {}))
        writer.ping()
        return subscribed, bytes(to_sub), bytes(to_writer)


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[tuple[str, int, str | None], tuple[Answers, Answers]]]:
    """Every case against both brokers (one mosquitto per ACL file): (Mosquitto's, midge's)."""
    directory = Path(tempfile.mkdtemp(prefix="midge-acl-"))
    os.chmod(directory, 0o755)
    results = {}
    for name, text in ACLS.items():
        acl = directory / f"{name}.acl"
        acl.write_text(text)
        os.chmod(acl, 0o644)
        for pair in start_pair([f"acl_file {acl}"]):
            for version in VERSIONS:
                for user in USERS:
                    results[name, version, user] = (
                        scenario(pair, True, version, user),
                        scenario(pair, False, version, user),
                    )
    yield results


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("acl", list(ACLS))
def test_subscribe_granted_and_deliveries_read_checked_as_by_mosquitto(
    answers: dict[tuple[str, int, str | None], tuple[Answers, Answers]],
    acl: str,
    version: int,
    user: str | None,
) -> None:
    theirs, mine = answers[acl, version, user]
    assert [b.hex() for b in mine] == [b.hex() for b in theirs]
    subscribed = mine[0]
    granted = bytes([1] * len(FILTERS))
    assert granted in subscribed  # every filter granted QoS 1
