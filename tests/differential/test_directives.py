"""Mosquitto's client and topic directives (issue 11) against the real Mosquitto 2.0.11: the
same mosquitto.conf for both, the same raw-client scenario on each, every byte received
compared. midge runs in memory (tests/memory.py) with the configuration Mosquitto is given;
two Mosquitto processes in all (one per configuration), several scenarios each.

Where midge differs on purpose the test says so and asserts the difference, which
docs/mosquitto.md lists: Mosquitto 2.0.11 does not remove a listener's mount point from what
its clients receive, nor add it to their UNSUBSCRIBE (a bug fixed in 2.0.12 for the first,
documented behaviour for both), and its one copy for an MQTT 3.1.1 client with overlapping
subscriptions takes the QoS of the subscription it meets first, where MQTT-3.3.5-1 asks for the
highest. ``check_retain_source`` needs an ACL changed under the running broker: Mosquitto is
sent SIGHUP (a third process).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from midge.codec.packets import Disconnect, Publish, Subscribe, Subscription, Unsubscribe
from midge.codec.properties import Prop
from midge.config import parse_mosquitto_conf
from tests.differential.harness import mosquitto, mosquitto_process, needs_mosquitto
from tests.memory import MemoryBroker
from tests.procbroker import free_port
from tests.rawclient import RawClient, tap

pytestmark = needs_mosquitto

#: How long a client waits for more packets before the scenario's bytes are compared.
QUIET = 0.3


class Side:
    """One broker of the pair: the real Mosquitto (ports of its listeners, in the order the
    configuration gives them) or midge in memory (the same configuration)."""

    def __init__(
        self,
        ports: list[int] | None = None,
        memory: MemoryBroker | None = None,
        process: subprocess.Popen[bytes] | None = None,
    ):
        self.ports = ports
        self.memory = memory
        self.process = process
        self.clients: list[RawClient] = []

    def reload(self) -> None:
        """Re-read the password and ACL files (Mosquitto: SIGHUP, then a moment for it)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)
            time.sleep(1.0)
        else:
            assert self.memory is not None
            self.memory.call(self.memory.authenticator.reload)

    @property
    def real(self) -> bool:
        return self.ports is not None

    def client(self, version: int, listener: int = 0) -> RawClient:
        if self.ports is not None:
            c = RawClient("127.0.0.1", self.ports[listener], version=version)
        else:
            assert self.memory is not None
            c = RawClient(self.memory.link(listener), version=version)
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()


class Pair:
    def __init__(
        self, lines: list[str], ports: list[int], process: subprocess.Popen[bytes] | None = None
    ) -> None:
        text = "\n".join([f"listener {ports[0]} 127.0.0.1", *lines]) + "\n"
        self.sides = (
            Side(ports=ports, process=process),
            Side(memory=MemoryBroker(parse_mosquitto_conf(text))),
        )

    def run(self, scenario: Callable[[Side], Any]) -> tuple[Any, Any]:
        """The scenario on Mosquitto, then on midge: what each returned."""
        out = []
        for side in self.sides:
            try:
                out.append(scenario(side))
            finally:
                side.close()
        return out[0], out[1]


def start(lines: Callable[[list[int]], list[str]], listeners: int) -> Iterator[Pair]:
    """Mosquitto with ``lines(ports)`` after its first listener (``listeners`` in all)."""
    extra = [free_port() for _ in range(listeners - 1)]
    with mosquitto(lines(extra)) as port:
        yield Pair(lines(extra), [port, *extra])


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """Listener 0 plain, 1 with a mount point, 2 with use_username_as_clientid; only ids
    starting with ``c-`` everywhere."""
    yield from start(
        lambda ports: [
            "allow_anonymous true",
            "clientid_prefixes c-",
            f"listener {ports[0]} 127.0.0.1",
            "mount_point m/",
            f"listener {ports[1]} 127.0.0.1",
            "use_username_as_clientid true",
        ],
        3,
    )


@pytest.fixture(scope="module")
def duplicates_pair() -> Iterator[Pair]:
    yield from start(lambda ports: ["allow_anonymous true", "allow_duplicate_messages true"], 1)


def received(client: RawClient, act: Callable[[], object]) -> bytes:
    """Every byte ``client`` receives while ``act`` runs and until it has been quiet."""
    log = tap(client)
    act()
    client.recv_all(QUIET)
    return bytes(log)


def connect(side: Side, version: int, client_id: str, listener: int = 0, **fields: Any) -> bytes:
    """The bytes a CONNECT is answered with (and whether the connection then closed)."""
    c = side.client(version, listener)
    log = tap(c)
    c.connect(client_id, keep_alive=60, **fields)
    closed = not c.is_open(QUIET)
    return bytes(log) + (b"<closed>" if closed else b"")


# -- clientid_prefixes --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_clientid_prefixes_connack(pair: Pair, version: int) -> None:
    """A matching id is accepted; another, or a generated one, is refused with "not authorized"
    (v3 5, v5 0x87) and closed."""

    def scenario(side: Side) -> list[bytes]:
        return [connect(side, version, cid) for cid in ("c-ok", "bad", "")]

    theirs, mine = pair.run(scenario)
    assert mine == theirs
    assert mine[1] == (b"\x20\x02\x00\x05" if version == 4 else b"\x20\x03\x00\x87\x00") + (
        b"<closed>"
    )


# -- use_username_as_clientid ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_use_username_as_clientid_connack_and_takeover(pair: Pair, version: int) -> None:
    """No username: refused as not authorized. Two clients with one username: the second takes
    the first over, whatever ids they sent."""

    def scenario(side: Side) -> list[bytes]:
        out = [connect(side, version, "c-anon", 2), connect(side, version, "", 2, username="u")]
        first = side.client(version, 2)
        first_log = tap(first)
        first.connect("c-first", keep_alive=60, username="same")
        second = side.client(version, 2)
        out.append(
            received(second, lambda: second.connect("c-second", keep_alive=60, username="same"))
        )
        first.recv_all(QUIET)
        out.append(bytes(first_log))
        return out

    theirs, mine = pair.run(scenario)
    if version == 5:
        # midge tells the first client why (MQTT-3.1.4-3 v5: DISCONNECT 0x8E Session taken
        # over); Mosquitto 2.0.11 just closes (docs/mosquitto.md).
        assert mine[3].endswith(b"\xe0\x01\x8e")
        mine[3] = mine[3][:-3]
    assert mine == theirs


# -- mount_point ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_mount_point_topics_seen_inside_and_outside(pair: Pair, version: int) -> None:
    """What a client of the mount listener publishes is seen outside below the mount point
    (same bytes); what it receives is, in midge, without the mount point: Mosquitto 2.0.11
    sends the prefixed topic (its bug #2244, fixed in 2.0.12)."""

    def scenario(side: Side) -> tuple[bytes, list[tuple[str, bytes]]]:
        outside = side.client(version, 0)
        outside.connect("c-outside")
        outside.subscribe("#", 0)
        inside = side.client(version, 1)
        inside.connect("c-inside")
        inside.subscribe("#", 0)
        pub_in = side.client(version, 1)
        pub_in.connect("c-pub-in")
        pub_out = side.client(version, 0)
        pub_out.connect("c-pub-out")

        def publish() -> None:
            pub_in.send(Publish("from/in", b"1"))
            # Routed before the PINGRESP: the broker has it before pub_out's (two sockets
            # read in one loop turn could otherwise come in either order).
            pub_in.ping()
            pub_out.send(Publish("m/from/out", b"2"))
            pub_out.send(Publish("not/mounted", b"3"))

        outside_bytes = received(outside, publish)
        got = inside.recv_all(QUIET)
        return outside_bytes, [(p.topic, p.payload) for p in got if isinstance(p, Publish)]

    (their_out, their_in), (my_out, my_in) = pair.run(scenario)
    assert my_out == their_out
    assert my_in == [("from/in", b"1"), ("from/out", b"2")]
    assert their_in == [("m/" + topic, payload) for topic, payload in my_in]


def test_mount_point_unsubscribe(pair: Pair) -> None:
    """UNSUBSCRIBE on a mount listener removes the subscription in midge (UNSUBACK 0x00); in
    Mosquitto 2.0.11 its filter is not mounted, so it finds none (0x11) and the client keeps
    receiving."""

    def scenario(side: Side) -> tuple[bytes, int]:
        inside = side.client(5, 1)
        inside.connect5("c-unsub")
        inside.subscribe("a", 0)
        unsuback = received(inside, lambda: inside.send(Unsubscribe(7, ["a"])))
        pub = side.client(5, 0)
        pub.connect5("c-unsub-pub")
        pub.send(Publish("m/a", b"after"))
        return unsuback, len(inside.recv_all(QUIET))

    (theirs, their_count), (mine, my_count) = pair.run(scenario)
    assert mine == b"\xb0\x04\x00\x07\x00\x00" and my_count == 0
    assert theirs == b"\xb0\x04\x00\x07\x00\x11" and their_count == 1


# -- overlapping subscriptions --------------------------------------------------------------------


def overlapping(side: Side, version: int, subs: list[tuple[str, int]], sids: bool) -> bytes:
    """A client with ``subs`` (in that order; v5 ``sids``: identifiers 1, 2, ...) receives one
    QoS 2 message on ``o/a/b``: the bytes it gets."""
    sub = side.client(version, 0)
    sub.connect(f"c-ovl{version}", keep_alive=60)
    for n, (flt, qos) in enumerate(subs, start=1):
        props: dict[int, Any] = {Prop.SUBSCRIPTION_IDENTIFIER: n} if sids else {}
        sub.send(Subscribe(n, [Subscription(flt, qos)], props))
        sub.recv()
    pub = side.client(version, 0)
    pub.connect("c-ovl-pub", keep_alive=60)
    return received(sub, lambda: pub.pub("o/a/b", b"x", qos=2))


SUBS = [("o/#", 0), ("o/+/b", 2), ("o/a/b", 1)]


@pytest.mark.parametrize("sids", [False, True])
def test_overlapping_subscriptions_v5_one_copy_each(pair: Pair, sids: bool) -> None:
    """MQTT 5: one copy per subscription, in Mosquitto's order, each with its QoS and
    identifier."""
    theirs, mine = pair.run(lambda side: overlapping(side, 5, SUBS, sids))
    assert mine == theirs
    assert mine.count(b"o/a/b") == 3


def test_overlapping_subscriptions_v311_one_copy(pair: Pair) -> None:
    """allow_duplicate_messages false (the default): one copy for an MQTT 3.1.1 client. Its QoS
    is the highest in midge (MQTT-3.3.5-1); Mosquitto 2.0.11 takes the subscription it meets
    first (the exact one here): the same bytes when that is the highest, QoS 1 not 2 here."""
    best_first = [("o/#", 0), ("o/+/b", 1), ("o/a/b", 2)]
    theirs, mine = pair.run(lambda side: overlapping(side, 4, best_first, False))
    assert mine == theirs and mine.count(b"o/a/b") == 1
    theirs, mine = pair.run(lambda side: overlapping(side, 4, SUBS, False))
    assert mine[0] == 0x34 and theirs[0] == 0x32  # PUBLISH QoS 2 / QoS 1


@pytest.mark.parametrize("version", [4, 5])
def test_allow_duplicate_messages_true_one_copy_per_subscription(
    duplicates_pair: Pair, version: int
) -> None:
    """allow_duplicate_messages true: an MQTT 3.1.1 client gets one copy per subscription too
    (and an MQTT 5 client as always), in Mosquitto's order and QoS."""

    def scenario(side: Side) -> bytes:
        sub = side.client(version, 0)
        sub.connect("dup-sub", keep_alive=60)
        for n, (flt, qos) in enumerate(SUBS, start=1):
            sub.send(Subscribe(n, [Subscription(flt, qos)]))
            sub.recv()
        pub = side.client(version, 0)
        pub.connect("dup-pub", keep_alive=60)
        return received(sub, lambda: pub.pub("o/a/b", b"x", qos=2))

    theirs, mine = duplicates_pair.run(scenario)
    assert mine == theirs
    assert mine.count(b"o/a/b") == 3


# -- check_retain_source -------------------------------------------------------------------------

ACL_OPEN = (
    "user alice\ntopic readwrite r/#\nuser carol\ntopic readwrite r/#\nuser bob\ntopic read r/#\n"
)
ACL_REVOKED = ACL_OPEN.replace("user alice\ntopic readwrite", "user alice\ntopic read")


@pytest.fixture(scope="module")
def acl() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="midge-diff-acl-"))
    os.chmod(directory, 0o755)  # Mosquitto reads it after dropping to its own user
    path = directory / "acl"
    path.write_text(ACL_OPEN)
    os.chmod(path, 0o644)
    yield path
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def retain_pair(acl: Path) -> Iterator[Pair]:
    lines = ["allow_anonymous true", f"acl_file {acl}", "check_retain_source true"]
    with mosquitto_process(lines) as (port, process):
        yield Pair(lines, [port], process)


def test_check_retain_source_after_the_acl_changed(retain_pair: Pair, acl: Path) -> None:
    """Two users publish a retained message each; one then loses write access (ACL reloaded):
    a new subscriber gets only the other's message."""

    def scenario(side: Side) -> bytes:
        acl.write_text(ACL_OPEN)
        side.reload()
        for user in ("alice", "carol"):
            c = side.client(4)
            c.connect(f"{user}-id", keep_alive=60, username=user)
            c.pub(f"r/{user}", user.encode(), qos=1, retain=True)
            c.send(Disconnect())
        acl.write_text(ACL_REVOKED)
        side.reload()
        bob = side.client(4)
        bob.connect("bob-id", keep_alive=60, username="bob")
        return received(bob, lambda: bob.send(Subscribe(1, [Subscription("r/#", 1)])))

    theirs, mine = retain_pair.run(scenario)
    assert mine == theirs
    assert b"carol" in mine and b"alice" not in mine
