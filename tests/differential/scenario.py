"""Differential scenarios as data: a list of steps run against the real Mosquitto 2.0.11 and
against midge (in memory, same mosquitto.conf), every packet each client receives compared byte
for byte (issue 11).

A :class:`Scenario` is a name, the configuration lines after ``listener``, and steps: a client
connects (:class:`C`), sends packets (:class:`Send`, :class:`Pub`, :class:`Sub`, :class:`Unsub`),
disconnects (:class:`Disc`) or drops its socket (:class:`Close`); :class:`Wait` reads what
arrives asynchronously (a Will), :class:`Quiet` lets a little time pass to catch what should not
arrive, :class:`Sleep` lets time pass (real seconds on Mosquitto, the manual clock on midge).

Determinism without sleeping: after each step every open client is *synchronised*: it sends a
PINGREQ and reads up to the PINGRESP, which the broker sends after everything it had already
queued for that client. The acting client goes first, so what its packet caused is on the other
clients' sockets before they are synchronised. Those PINGRESPs are not part of the transcript;
a PINGREQ a step sends is. Clients acknowledge QoS 1/2 flows themselves unless connected with
``auto_ack=False`` (then :class:`Ack` acknowledges what they hold).

``~`` in client identifiers, topics, filters and string properties becomes a prefix made from
the scenario's name, so that scenarios share one Mosquitto process without seeing each other.

What each client received is its *transcript*: the packets' bytes, ``closed`` where the broker
closed the connection. Assigned client identifiers are masked (random on both sides).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
import select
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from midge.codec import Decoder, encode
from midge.codec.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
)
from midge.codec.properties import Prop
from tests.memory import MemoryBroker
from tests.rawclient import Closed, RawClient, read_raw_packet

#: How long to wait for a packet the broker sends "now" (Mosquitto on a socket).
ANSWER = 3.0
CLOSED = "closed"

Entry = bytes | str


# -- the brokers ---------------------------------------------------------------------------------


class Side:
    """One broker a scenario runs against."""

    real = False

    def open(self, version: int) -> RawClient:
        raise NotImplementedError

    def sleep(self, seconds: float) -> None:
        raise NotImplementedError


class Real(Side):
    """The real mosquitto listening on ``port``."""

    real = True

    def __init__(self, port: int) -> None:
        self.port = port

    def open(self, version: int) -> RawClient:
        return RawClient("127.0.0.1", self.port, version=version, timeout=ANSWER)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Memory(Side):
    """midge in memory (its clock moves only when told)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    def open(self, version: int) -> RawClient:
        return RawClient(self.broker.link(), version=version)

    def sleep(self, seconds: float) -> None:
        self.broker.advance(seconds)


# -- one client ----------------------------------------------------------------------------------


class Peer:
    """A client of the scenario on one side and what it received."""

    def __init__(self, name: str, version: int, raw: RawClient, auto_ack: bool) -> None:
        self.name = name
        self.version = version
        self.raw = raw
        self.auto_ack = auto_ack
        self.transcript: list[Entry] = []
        self.closed = False
        self.sync_pings = 0  # our PINGREQs not yet answered
        self.step_pings = 0  # the scenario's PINGREQs not yet answered (recorded)
        self.unacked: list[Publish] = []
        self.acked_something = False
        self.next_id = 0

    def packet_id(self) -> int:
        self.next_id = self.next_id % 65535 + 1
        return self.next_id

    def send(self, *packets: Packet | bytes) -> None:
        data = b"".join(p if isinstance(p, bytes) else encode(p, self.version) for p in packets)
        if self.closed:
            return
        try:
            self.raw.send_raw(data)
        except OSError:
            self.read_until_closed()

    def readable(self) -> bool:
        if self.raw.in_memory:
            return True
        return bool(select.select([self.raw.sock], [], [], 0)[0])

    def read_one(self, timeout: float) -> bool:
        """Read one packet (or the close) and record it; False if none came in ``timeout``."""
        if self.closed:
            return False
        try:
            data = read_raw_packet(self.raw, timeout)
        except TimeoutError:
            return False
        except (Closed, OSError):
            self.transcript.append(CLOSED)
            self.closed = True
            self.raw.close()
            return True
        self.record(data)
        return True

    def record(self, data: bytes) -> None:
        kind = data[0] >> 4
        if kind == 13:  # PINGRESP
            if self.step_pings:
                self.step_pings -= 1
            elif self.sync_pings:
                self.sync_pings -= 1
                return
        self.transcript.append(data)
        try:
            (packet,) = Decoder(version=self.version).feed(data)
        except Exception:
            return
        if kind in (2, 14):  # CONNACK (refusing?) or DISCONNECT: the broker closes next
            if isinstance(packet, Disconnect) or (
                isinstance(packet, Connack) and packet.reason_code
            ):
                self.read_until_closed()
            return
        if kind in (3, 5, 6):
            if isinstance(packet, Publish) and packet.qos:
                if self.auto_ack:
                    self.ack(packet)
                else:
                    self.unacked.append(packet)
            elif isinstance(packet, Pubrec) and packet.reason_code < 0x80 and self.auto_ack:
                self.reply(Pubrel(packet.packet_id))
            elif isinstance(packet, Pubrel) and self.auto_ack:
                self.reply(Pubcomp(packet.packet_id))

    def ack(self, publish: Publish) -> None:
        pid = publish.packet_id or 0
        self.reply(Puback(pid) if publish.qos == 1 else Pubrec(pid))

    def reply(self, packet: Packet) -> None:
        self.acked_something = True
        self.send(packet)

    def read_until_closed(self) -> None:
        deadline = time.monotonic() + ANSWER
        while not self.closed and time.monotonic() < deadline:
            if not self.read_one(max(0.0, deadline - time.monotonic())):
                self.transcript.append("still open")
                return

    def drain(self) -> None:
        """Record what has already arrived."""
        while not self.closed and self.readable():
            if not self.read_one(0.05):
                return

    def sync(self) -> None:
        """PINGREQ, and read up to its PINGRESP (again while that made us acknowledge)."""
        for _ in range(10):
            self.drain()
            if self.closed:
                return
            self.acked_something = False
            self.sync_pings += 1
            self.send(Pingreq())
            deadline = time.monotonic() + ANSWER
            while not self.closed and (self.sync_pings or self.step_pings):
                if not self.read_one(max(0.0, deadline - time.monotonic())):
                    self.transcript.append("no PINGRESP")
                    self.sync_pings = self.step_pings = 0
                    return
            if not self.acked_something:
                return


class Run:
    """One scenario on one side."""

    def __init__(self, side: Side, prefix: str) -> None:
        self.side = side
        self.prefix = prefix
        self.peers: dict[str, Peer] = {}

    def peer(self, name: str) -> Peer:
        return self.peers[name]

    def sub(self, value: Any) -> Any:
        """``value`` with ``~`` replaced by the prefix in its strings (packets: a copy)."""
        if isinstance(value, str):
            return value.replace("~", self.prefix)
        if isinstance(value, list):
            return [self.sub(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.sub(v) for v in value)
        if isinstance(value, dict):
            return {k: self.sub(v) for k, v in value.items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {f.name: self.sub(getattr(value, f.name)) for f in dataclasses.fields(value)}
            changes.pop("raw", None)
            return dataclasses.replace(value, **changes)
        return value

    def sync(self, first: str | None = None) -> None:
        names = list(self.peers)
        if first in self.peers:
            names.remove(first)
            names.insert(0, first)
        for name in names:
            self.peers[name].sync()

    def transcripts(self) -> dict[str, list[Entry]]:
        return {name: peer.transcript for name, peer in self.peers.items()}

    def close(self) -> None:
        for peer in self.peers.values():
            peer.raw.close()


# -- steps ---------------------------------------------------------------------------------------


class Step:
    """One step. A step's ``client`` (if it has one) acts and is synchronised first; every
    client is synchronised after it unless its ``sync`` is false."""

    def run(self, run: Run) -> None:
        raise NotImplementedError


@dataclass
class C(Step):
    """Client ``client`` connects (a new connection; the previous one must be closed): CONNECT
    with ``client_id`` (default ``~`` + its name) and the other :class:`Connect` fields."""

    client: str
    version: int = 5
    client_id: str | None = None
    auto_ack: bool = True
    clean: bool = True
    keep_alive: int = 60
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: dict[int, Any] = field(default_factory=dict)
    raw: bytes | None = None  # a hand-built CONNECT instead

    def run(self, run: Run) -> None:
        old = run.peers.get(self.client)
        if old is not None:
            assert old.closed, f"{self.client} connects again while connected"
        peer = Peer(self.client, self.version, run.side.open(self.version), self.auto_ack)
        if old is not None:
            peer.transcript = old.transcript
            peer.transcript.append("(reconnects)")
        run.peers[self.client] = peer
        if self.raw is not None:
            peer.send(self.raw)
        else:
            connect = Connect(
                f"~{self.client}" if self.client_id is None else self.client_id,
                protocol_level=self.version,
                protocol_name="MQIsdp" if self.version == 3 else "MQTT",
                clean_start=self.clean,
                keep_alive=self.keep_alive,
                will=self.will,
                username=self.username,
                password=self.password,
                properties=self.properties,
            )
            peer.send(run.sub(connect))
        if not peer.read_one(ANSWER):
            peer.transcript.append("no CONNACK")


class Send(Step):
    """``client`` sends these packets (or bytes) in one write."""

    def __init__(self, client: str, *packets: Packet | bytes, sync: bool = True) -> None:
        self.client = client
        self.packets: Sequence[Packet | bytes] = packets
        self.sync = sync

    def run(self, run: Run) -> None:
        peer = run.peer(self.client)
        peer.step_pings += sum(isinstance(p, Pingreq) for p in self.packets)
        peer.send(*(run.sub(p) for p in self.packets))


@dataclass
class Pub(Step):
    """``client`` publishes (packet identifier from its own counter unless given)."""

    client: str
    topic: str
    payload: bytes = b"m"
    qos: int = 0
    retain: bool = False
    properties: dict[int, Any] = field(default_factory=dict)
    dup: bool = False
    packet_id: int | None = None

    def run(self, run: Run) -> None:
        peer = run.peer(self.client)
        pid = self.packet_id
        if self.qos and pid is None:
            pid = peer.packet_id()
        publish = Publish(
            self.topic, self.payload, self.qos, self.retain, self.dup, pid, self.properties
        )
        peer.send(run.sub(publish))


class Sub(Step):
    """``client`` subscribes: each filter a string (at ``qos``) or a :class:`Subscription`."""

    def __init__(
        self,
        client: str,
        *filters: str | Subscription,
        qos: int = 0,
        properties: dict[int, Any] | None = None,
    ) -> None:
        self.client = client
        self.filters: Sequence[str | Subscription] = filters
        self.qos = qos
        self.properties = properties or {}

    def run(self, run: Run) -> None:
        peer = run.peer(self.client)
        subs = [
            f if isinstance(f, Subscription) else Subscription(f, self.qos) for f in self.filters
        ]
        peer.send(run.sub(Subscribe(peer.packet_id(), subs, self.properties)))


class Unsub(Step):
    """``client`` unsubscribes from these filters."""

    def __init__(self, client: str, *filters: str) -> None:
        self.client = client
        self.filters = filters

    def run(self, run: Run) -> None:
        peer = run.peer(self.client)
        peer.send(run.sub(Unsubscribe(peer.packet_id(), list(self.filters))))


@dataclass
class Ack(Step):
    """``client`` acknowledges the QoS 1/2 PUBLISHes it holds (``count``: the first ones)."""

    client: str
    count: int | None = None

    def run(self, run: Run) -> None:
        peer = run.peer(self.client)
        count = len(peer.unacked) if self.count is None else self.count
        # Marked in the transcript: what came before the acks differs from what came after.
        peer.transcript.append(f"(acknowledges {count})")
        for publish in peer.unacked[:count]:
            peer.ack(publish)
        del peer.unacked[:count]


@dataclass
class Disc(Step):
    """``client`` sends DISCONNECT and reads until the broker closes."""

    client: str
    reason_code: int = 0
    properties: dict[int, Any] = field(default_factory=dict)

    def run(self, run: Run) -> None:
        peer = run.peer(self.client)
        peer.send(Disconnect(self.reason_code, self.properties))
        peer.read_until_closed()


@dataclass
class Close(Step):
    """``client`` closes its socket without DISCONNECT."""

    client: str
    sync: bool = False

    def run(self, run: Run) -> None:
        peer = run.peer(self.client)
        peer.drain()
        peer.raw.close()
        if not peer.closed:
            peer.closed = True
            peer.transcript.append("(closes)")


@dataclass
class Wait(Step):
    """Read until ``client`` received ``count`` more packets (or the close), for what a broker
    does on its own time (a Will after a close, a take-over)."""

    client: str
    count: int = 1
    timeout: float = 1.5

    def run(self, run: Run) -> None:
        peer = run.peer(self.client)
        deadline = time.monotonic() + self.timeout
        target = len(peer.transcript) + self.count
        while len(peer.transcript) < target and not peer.closed:
            if not peer.read_one(max(0.0, deadline - time.monotonic())):
                return


@dataclass
class Quiet(Step):
    """Let ``seconds`` of real time pass on Mosquitto (for what it does late, if anything)."""

    seconds: float = 0.1

    def run(self, run: Run) -> None:
        if run.side.real:
            time.sleep(self.seconds)


@dataclass
class Sleep(Step):
    """Let ``seconds`` pass: real time on Mosquitto, the manual clock on midge."""

    seconds: float

    def run(self, run: Run) -> None:
        run.side.sleep(self.seconds)


# -- scenarios -----------------------------------------------------------------------------------


@dataclass
class Scenario:
    """Steps under ``conf`` (the mosquitto.conf lines after ``listener``; ``{files}`` is the
    directory of the test password and ACL files). ``deliberate`` names an entry of
    :data:`tests.differential.differences.DELIBERATE`: the transcripts of ``differ`` (all
    clients if empty) are expected to differ, the others must still be equal. ``xfail`` names
    the branch that owns a difference not fixed here."""

    name: str
    steps: list[Step]
    conf: tuple[str, ...] = ()
    deliberate: str | None = None
    differ: tuple[str, ...] = ()
    xfail: str | None = None

    @property
    def prefix(self) -> str:
        return hashlib.sha1(self.name.encode()).hexdigest()[:6]

    def run(self, side: Side) -> dict[str, list[Entry]]:
        run = Run(side, self.prefix)
        try:
            for step in self.steps:
                step.run(run)
                if getattr(step, "sync", True):
                    run.sync(getattr(step, "client", None))
            run.sync()
            return run.transcripts()
        finally:
            run.close()


def masked(entry: Entry, version: int) -> Entry:
    """``entry`` with the hex digits of an Assigned Client Identifier (random on both sides)
    replaced by ``*``: its form (prefix, length, dashes) is still compared."""
    if isinstance(entry, bytes) and entry[:1] == b"\x20" and version == 5:
        try:
            (connack,) = Decoder(version=5).feed(entry)
        except Exception:
            return entry
        assert isinstance(connack, Connack)  # its first byte says so
        assigned = connack.properties.get(Prop.ASSIGNED_CLIENT_IDENTIFIER)
        if assigned:
            data = assigned.encode()
            return entry.replace(data, re.sub(rb"[0-9a-fA-F]", b"*", data))
    return entry


def describe(entry: Entry, version: int) -> str:
    """One line: the packet decoded by midge's codec, then its bytes."""
    if isinstance(entry, str):
        return entry
    try:
        packets = Decoder(version=version).feed(entry)
        text = repr(packets[0]) if len(packets) == 1 else f"{len(packets)} packets?"
    except Exception as exc:  # Mosquitto's bytes that midge's codec refuses
        text = f"undecodable: {exc}"
    return f"{text}  [{entry.hex(' ')}]"


def versions(scenario: Scenario) -> dict[str, int]:
    """Each client's protocol version (from its last :class:`C`)."""
    out: dict[str, int] = {}
    for step in scenario.steps:
        if isinstance(step, C):
            out[step.client] = step.version
    return out


def compare(
    scenario: Scenario, theirs: dict[str, list[Entry]], ours: dict[str, list[Entry]]
) -> list[str]:
    """The clients whose transcripts differ, each with a readable diff (empty: the same)."""
    report: list[str] = []
    for name, version in versions(scenario).items():
        a = [describe(masked(e, version), version) for e in theirs.get(name, [])]
        b = [describe(masked(e, version), version) for e in ours.get(name, [])]
        if a != b:
            diff = difflib.unified_diff(a, b, "mosquitto", "midge", lineterm="", n=20)
            report.append(f"client {name} (v{version}):\n" + "\n".join(diff))
    return report
