"""Machinery shared by the fuzz tests (this module holds no tests).

A fuzz test reuses one broker across its hypothesis examples (starting one per example is slow),
wrapped in a :class:`Rig`. The broker is the core in memory (:class:`tests.memory.MemoryBroker`)
unless a test gives the rig a real one on a socket; every helper here works with either. In
memory, "within ``SOON`` seconds" means: once the broker has settled, and again after the clock
is advanced by ``SOON``.

* a *sentinel*: a v5 client connected before the first example and subscribed at QoS 1;
* an :class:`ErrorLog`: a logging handler on the ``midge`` and ``asyncio`` loggers. The Connection
  logs ``log.exception("internal error ...")`` for any exception it did not expect, and asyncio
  logs "Exception in callback ..." for one that escapes a callback (a timer, a flush, the
  transport glue) — either is a broker bug, whatever the client sent;
* :meth:`Rig.example`, a context manager around one example. Afterwards it proves the broker is
  unharmed: nothing was logged at ERROR, a fresh client's PUBLISH still reaches the sentinel, the
  sentinel's PINGREQ is still answered, and every connection the example opened is gone from the
  broker (no leak).

The :class:`Oracle` says what the broker must do with a byte stream, as far as the codec and the
stateless connection rules tell: close by itself (and at v5 say why with DISCONNECT, reason codes
from MQTT 5.0 section 4.13 / table 3-10), close quietly (the client's own DISCONNECT), or keep
the connection open. :func:`exercise` sends the stream split at random points, reads until the
broker closes (each read bounded: a broker that never closes fails, it does not hang the test)
and checks what came back against the prediction.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

from midge.broker.broker import Broker
from midge.broker.topictree import RetainedTree
from midge.codec import Decoder, encode
from midge.codec.packets import (
    MQTT5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from midge.codec.properties import Prop
from midge.codec.reasons import CodecError, UnsupportedProtocolVersion
from midge.config import Config, ListenerConfig
from tests.conftest import RunningBroker
from tests.memory import MemoryBroker
from tests.rawclient import RawClient, frame_end, varint

#: The sentinel's subscription; fuzz clients may publish to it too (the check skips strangers).
SENTINEL_TOPIC = "sentinel/health"
#: The sentinel also hears wills published under this prefix (kept in ``Rig.seen``).
WILL_PREFIX = "will/"

#: Seconds for anything the broker should do at once (answer, close).
SOON = 3.0

#: How long a "pause" between two chunks lasts, so the broker reads them separately.
PAUSE = 0.002

#: DISCONNECT reason codes a server may send (MQTT 5.0 table 3-10; 0x04 is the client's).
SERVER_DISCONNECT_REASONS = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95}
    | {0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2}
)

MALFORMED = frozenset({0x81})
PROTOCOL_ERROR = frozenset({0x82})
#: A packet that breaks the rules where the spec names no reason code: either is right.
MALFORMED_OR_PROTOCOL = frozenset({0x81, 0x82})

#: Packet types a server sends; anything else on the wire from the broker is a bug.
_SERVER_PACKETS = (Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Suback, Unsuback, Pingresp)
#: Packet types only a server sends: a client sending one commits a protocol error.
SERVER_ONLY = (Connack, Suback, Unsuback, Pingresp)

#: The broker's defaults the oracle relies on (Config: max_topic_alias, max_inflight_messages).
DEFAULT_ALIAS_MAX = 10
DEFAULT_RECEIVE_MAX = 20


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings for a fuzz test: ``max_examples`` times ``$MIDGE_FUZZ_SCALE`` (default
    1; e.g. 20 for a long campaign), no deadline (a socket round trip is not CPU time), and the
    broker fixtures reused across examples on purpose."""
    scale = float(os.environ.get("MIDGE_FUZZ_SCALE", "1"))
    return settings(
        max_examples=max(1, round(max_examples * scale)),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- the error log ------------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """Records every ERROR (or worse) record logged by the broker or by its event loop, but for
    the connection events midge.logs describes (a take-over is an error to Mosquitto)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) is not None:
            # A client's connection event: "Client X already connected, closing old connection."
            # is an error in Mosquitto's words (and log type), not a fault of the broker's.
            return
        self.records.append(record)

    def take(self) -> list[str]:
        """The records so far, formatted with their tracebacks; the log is emptied."""
        records, self.records = self.records, []
        return [self.format(r) for r in records]


#: The listener every fuzz broker uses: a free port on the loopback interface.
LOCAL = ListenerConfig(port=0, host="127.0.0.1")


@contextlib.contextmanager
def capture_errors() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    loggers = [logging.getLogger("midge"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


# -- the rig -------------------------------------------------------------------------------------


class Rig:
    """One running broker, its sentinel client and its error log, shared by many examples."""

    def __init__(self, running: RunningBroker | MemoryBroker, errors: ErrorLog) -> None:
        self.running = running
        self.errors = errors
        #: The broker core (midge.broker.broker.Broker).
        core = running.broker if isinstance(running, MemoryBroker) else running.server.broker
        assert core is not None
        self.core: Broker = core
        self.n = 0
        self._opened: list[RawClient] = []
        self.sentinel_id = "sentinel-" + uuid.uuid4().hex
        self.sentinel = RawClient.to(running, version=5, timeout=SOON)
        connack = self.sentinel.connect(self.sentinel_id, keep_alive=0)
        assert connack.reason_code == 0, connack
        self.sentinel.subscribe(SENTINEL_TOPIC, qos=1)
        self.sentinel.subscribe(WILL_PREFIX + "#", qos=0)
        #: Other PUBLISHes the sentinel received during the last example's check (wills).
        self.seen: list[Publish] = []
        self.baseline = self.connection_count()

    # -- clients ---------------------------------------------------------------------------------

    def client(self, version: int = 4) -> RawClient:
        """A new connection (closed when the example ends)."""
        client = RawClient.to(self.running, version=version, timeout=SOON)
        self._opened.append(client)
        return client

    def client_id(self) -> str:
        return f"fuzz-{self.n}-{uuid.uuid4().hex[:8]}"

    def connected(self, version: int, **fields: Any) -> tuple[RawClient, Connack]:
        """A client that has sent CONNECT (clean, no keep-alive) and read a successful CONNACK."""
        client = self.client(version)
        fields.setdefault("keep_alive", 0)
        connack = client.connect(self.client_id(), **fields)
        assert connack.reason_code == 0, connack
        return client, connack

    def prefix(self) -> str:
        """A topic prefix no other example uses (retained messages outlive an example).

        Its length never changes, so a replayed example draws the same data (hypothesis
        requires it).
        """
        return f"fz/{self.n:08d}"

    # -- broker state ----------------------------------------------------------------------------

    def connection_count(self) -> int:
        core = self.core
        return int(self.running.call(lambda: len(core.connections)))

    def forget_retained(self) -> None:
        """Drop every retained message, so that an example does not depend on the ones before
        it (a ``#`` subscription would receive them all) and a failure replays the same way."""
        core = self.core
        self.running.call(lambda: setattr(core, "retained", RetainedTree()))

    def session_ids(self) -> set[str]:
        core = self.core
        return set(self.running.call(lambda: list(core.sessions)))

    # -- one example ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def example(self, sessions_clean: bool = False) -> Iterator[None]:
        """Run one example, then check the broker is unharmed (see the module docstring).

        ``sessions_clean``: also require that no session but the sentinel's is left (for
        examples whose clients never ask for a session to outlive them).
        """
        self.n += 1
        self.errors.take()
        self.seen = []
        self.forget_retained()
        try:
            yield
        except BaseException as exc:
            self._close_clients()
            for problem in self.errors.take():
                exc.add_note("the broker logged: " + problem)
            raise
        self._close_clients()
        self.check_healthy(sessions_clean)

    def _close_clients(self) -> None:
        for client in self._opened:
            client.close()
        self._opened.clear()

    def check_healthy(self, sessions_clean: bool = False) -> None:
        self.assert_no_errors()
        payload = f"health {self.n} {uuid.uuid4().hex}".encode()
        with RawClient.to(self.running, version=4, timeout=SOON) as publisher:
            connack = publisher.connect(f"health-{self.n}-{uuid.uuid4().hex[:8]}")
            assert connack.reason_code == 0, f"a fresh client was refused: {connack!r}"
            publisher.publish(SENTINEL_TOPIC, payload, qos=1)
            publisher.disconnect()
        self._sentinel_wait(lambda p: isinstance(p, Publish) and p.payload == payload, "PUBLISH")
        self.sentinel.send(Pingreq())
        self._sentinel_wait(lambda p: isinstance(p, Pingresp), "PINGRESP")
        deadline = time.monotonic() + SOON
        while (count := self.connection_count()) != self.baseline:
            assert time.monotonic() < deadline, (
                f"{count - self.baseline} connection(s) still open in the broker after the"
                " example closed its sockets"
            )
            time.sleep(0.005)
        if sessions_clean:
            assert self.session_ids() == {self.sentinel_id}, "a session outlived its clean client"
        self.assert_no_errors()

    def assert_no_errors(self) -> None:
        problems = self.errors.take()
        assert not problems, "the broker logged an error:\n" + "\n".join(problems)

    def _sentinel_wait(self, want: Callable[[Packet], bool], what: str) -> None:
        deadline = time.monotonic() + SOON
        while True:
            try:
                packet = self.sentinel.recv(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"the sentinel got no {what} in {SOON} s") from None
            if isinstance(packet, Publish) and packet.qos:
                self.sentinel.ack(packet)
            if want(packet):
                return
            if isinstance(packet, Publish):
                self.seen.append(packet)
            assert not isinstance(packet, Disconnect), f"the sentinel was disconnected: {packet}"

    def close(self) -> None:
        self._close_clients()
        self.sentinel.close()


@contextlib.contextmanager
def rig_on(config: Config, authenticator: Any = None) -> Iterator[Rig]:
    """A rig on a broker of its own, in memory (for module-scoped fixtures; tests use
    ``make_rig``)."""
    with capture_errors() as errors:
        running = MemoryBroker(config, authenticator)
        try:
            rig = Rig(running, errors)
            yield rig
            rig.close()
        finally:
            running.stop()
        problems = errors.take()
    assert not problems, "the broker logged an error:\n" + "\n".join(problems)


# -- sending and reading -------------------------------------------------------------------------

Chunks = list[tuple[bytes, bool]]


@st.composite
def chunked(draw: st.DrawFn, data: bytes, max_cuts: int = 6) -> Chunks:
    """``data`` cut at random points; a chunk with True is followed by a short pause, so the
    broker sees the cut (otherwise TCP on loopback may well deliver the chunks together)."""
    cuts: list[int] = []
    if len(data) > 1:
        cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=max_cuts))))
    bounds = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    pauses = draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    return list(zip(pieces, pauses, strict=True))


def send_chunks(client: RawClient, chunks: Chunks) -> bool:
    """Send every chunk; False if the broker closed before all of them were sent."""
    for data, pause in chunks:
        try:
            client.send_raw(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        if pause:
            if client.link is not None:
                client.link.clock.run()  # the broker reads this chunk alone
            else:
                time.sleep(PAUSE)
    return True


def read_to_eof(client: RawClient, timeout: float = SOON) -> tuple[bytes, bool]:
    """Every byte the broker sends until it closes; the bool is False if it had not closed
    within ``timeout``. Nothing may be buffered in ``client`` yet."""
    assert not client.pending, "packets already decoded on this client"
    deadline = time.monotonic() + timeout
    received: list[bytes] = []
    waited = False
    while True:
        try:
            data = client.read_bytes(65536, deadline)
        except TimeoutError:
            if client.link is None or waited:
                return b"".join(received), False
            client.advance(timeout)  # in memory: let the time pass, once
            waited = True
            continue
        if not data:
            return b"".join(received), True
        received.append(data)


def decode_all(data: bytes, version: int) -> list[Packet]:
    """The packets in ``data`` as a client of ``version`` reads them. Every byte must belong to a
    whole, valid packet (the broker must never send a malformed one, MQTT 5.0 section 4.13), and
    every Remaining Length must be minimally encoded (MQTT-1.5.5-1)."""
    pos = 0
    while pos < len(data):
        end = frame_end(data, pos)
        assert end is not None, f"the broker sent a partial packet: {data[pos:]!r}"
        length = data[pos + 1 : end]
        header = length[: next(i for i, b in enumerate(length) if not b & 0x80) + 1]
        body = end - pos - 1 - len(header)
        assert header == varint(body), (
            f"the broker sent Remaining Length {header.hex(' ')} for {body} bytes, not the"
            f" minimal {varint(body).hex(' ')} (MQTT-1.5.5-1): {data[pos:end]!r}"
        )
        pos = end
    decoder = Decoder(version)
    try:
        return decoder.feed(data)
    except CodecError as exc:
        raise AssertionError(
            f"the broker sent bytes a v{version} client cannot decode ({exc}): {data!r}"
        ) from None


# -- what the broker must do ----------------------------------------------------------------------


@dataclass
class Expect:
    """What the broker must do with a stream (see :class:`Oracle`)."""

    #: The version to read the broker's packets with.
    version: int = 4
    #: The broker must close the connection by itself, without waiting for our EOF.
    closes: bool = False
    #: v5, connected: the broker says why it closes with a DISCONNECT, its reason one of these.
    #: None: the broker sends no DISCONNECT at all.
    reasons: frozenset[int] | None = None
    #: The stream starts with a CONNECT the broker must accept (CONNACK 0) / refuse (CONNACK with
    #: a failure, then close); None: no CONNACK may come, or (``connack_optional``) at most a
    #: failure one.
    connack: bool | None = None
    connack_optional: bool = False
    #: The CONNECT set something that may stop the broker from sending (Maximum Packet Size):
    #: only the generic checks apply.
    relaxed: bool = False
    #: After CONNECT: the connection's will must be published, since it did not end with a
    #: normal DISCONNECT (MQTT-3.1.2-8 3.1.1; MQTT 5.0 3.1.2.5: any reason but 0x00 keeps it).
    will: bool = True
    why: str = ""


def decode_one(data: bytes, version: int | None) -> Packet | CodecError | None:
    """Decode one complete packet (or a packet's beginning) as the broker's decoder would."""
    decoder = Decoder(version)
    try:
        packets = decoder.feed(data)
    except CodecError as exc:
        # A CONNECT that fails past a protocol name and level we speak is answered in that
        # version's format: remember which.
        exc.add_note(f"level {decoder.version}")
        return exc
    return packets[0] if packets else None


def _failed_level(error: CodecError) -> int | None:
    for note in getattr(error, "__notes__", ()):
        if note.startswith("level "):
            level = note.removeprefix("level ")
            return None if level == "None" else int(level)
    return None


class Oracle:
    """Predicts the broker's reaction to a stream of client bytes.

    The reference for single packets is midge's own decoder (the codec has its own tests); this
    class adds the connection-level rules that need little state: the first packet must be
    CONNECT (MQTT-3.1.0-1), a second CONNECT is a protocol error (MQTT-3.1.0-2), packets only a
    server sends are protocol errors, AUTH needs an Authentication Method at CONNECT (MQTT 5.0
    4.12), Topic Alias rules (MQTT 5.0 3.3.2.3.4), no Subscription Identifier from a client
    (MQTT-3.3.4-6 v5), Receive Maximum (MQTT-3.3.4-9 v5), Session Expiry on DISCONNECT
    (MQTT-3.14.2-2 v5), and that the client's DISCONNECT ends the connection quietly.
    """

    def __init__(
        self,
        version: int | None = None,
        alias_max: int = DEFAULT_ALIAS_MAX,
        receive_max: int = DEFAULT_RECEIVE_MAX,
        session_expiry: int = 0,
    ) -> None:
        #: None before CONNECT; the connection's protocol level after.
        self.version = version
        self.alias_max = alias_max
        self.receive_max = receive_max
        self.session_expiry = session_expiry
        self.aliases: set[int] = set()
        self.awaiting_rel: set[int] = set()

    def predict(self, data: bytes) -> Expect:
        expect = Expect(version=self.version or 4)
        pos = 0
        if self.version is None:
            end = frame_end(data, 0)
            if end is None:
                result = decode_one(data, None)
                if not isinstance(result, CodecError):
                    return expect  # an incomplete first packet: the broker waits for the rest
                if data[0] >> 4 != 1:
                    return Expect(closes=True, why=f"bad first packet: {result}")
                return self._refused_connect(expect, result)
            result = decode_one(data[:end], None)
            if data[0] >> 4 != 1:
                # MQTT-3.1.0-1: the first packet must be CONNECT; the broker closes silently.
                return Expect(closes=True, why="first packet is not CONNECT")
            if isinstance(result, CodecError):
                return self._refused_connect(expect, result)
            assert isinstance(result, Connect)
            if not self._accepts(result, expect):
                return expect
            pos = end
        version = self.version
        assert version is not None
        v5 = version == MQTT5
        while pos < len(data):
            end = frame_end(data, pos)
            if end is None:
                result = decode_one(data[pos:], version)
                if isinstance(result, CodecError):
                    return self._violation(expect, frozenset({result.reason}), str(result))
                return expect  # incomplete: the broker waits
            first = data[pos]
            result = decode_one(data[pos:end], version)
            pos = end
            if first >> 4 == 1:
                # MQTT-3.1.0-2: a second CONNECT is a protocol error, whatever it holds.
                return self._violation(expect, MALFORMED_OR_PROTOCOL, "second CONNECT")
            if isinstance(result, CodecError):
                return self._violation(expect, frozenset({result.reason}), str(result))
            assert result is not None
            if isinstance(result, (*SERVER_ONLY, Auth)):
                return self._violation(expect, PROTOCOL_ERROR, f"{type(result).__name__} sent")
            if isinstance(result, Disconnect):
                expiry = result.properties.get(Prop.SESSION_EXPIRY_INTERVAL)
                if v5 and expiry and not self.session_expiry:
                    return self._violation(expect, PROTOCOL_ERROR, "DISCONNECT session expiry")
                expect.closes = True
                expect.will = v5 and result.reason_code != 0
                expect.why = "the client's DISCONNECT"
                return expect
            if isinstance(result, Pubrel):
                self.awaiting_rel.discard(result.packet_id)
            if isinstance(result, Publish):
                why = self._publish(result, v5)
                if why is not None:
                    return self._violation(expect, *why)
        return expect

    def _publish(self, p: Publish, v5: bool) -> tuple[frozenset[int], str] | None:
        if v5:
            alias = p.properties.get(Prop.TOPIC_ALIAS)
            if alias is not None:
                if alias > self.alias_max:
                    return frozenset({0x94}), "topic alias above the maximum"
                if p.topic:
                    self.aliases.add(alias)
                elif alias not in self.aliases:
                    return PROTOCOL_ERROR, "unknown topic alias"
            if Prop.SUBSCRIPTION_IDENTIFIER in p.properties:
                return MALFORMED_OR_PROTOCOL, "subscription identifier from a client"
        if p.qos == 2 and p.packet_id in self.awaiting_rel:
            return None
        if p.qos and v5 and len(self.awaiting_rel) >= self.receive_max:
            return frozenset({0x93}), "receive maximum exceeded"
        if p.qos == 2:
            assert p.packet_id is not None
            self.awaiting_rel.add(p.packet_id)
        return None

    def _violation(self, expect: Expect, reasons: frozenset[int], why: str) -> Expect:
        expect.closes = True
        expect.why = why
        if expect.version == MQTT5:
            expect.reasons = reasons
        return expect

    def _refused_connect(self, expect: Expect, error: CodecError) -> Expect:
        """A bad first CONNECT: close, maybe after a CONNACK refusing it (v3: return code 1 for
        an unknown protocol level, MQTT-3.1.2-2; v5: 0x81/0x82/0x84, section 4.13)."""
        expect.closes = True
        expect.connack = False
        expect.connack_optional = not isinstance(error, UnsupportedProtocolVersion)
        expect.why = f"bad CONNECT: {error}"
        level = _failed_level(error)
        if level == MQTT5 and not isinstance(error, UnsupportedProtocolVersion):
            expect.version = MQTT5  # a v5 CONNACK with the reason code (MQTT 5.0 4.13.1)
        else:
            expect.version = 4  # the level is unknown or below 5: the 3.1.1 format
        return expect

    def _accepts(self, p: Connect, expect: Expect) -> bool:
        """Whether the default broker accepts this CONNECT; fills in ``expect``."""
        level = p.protocol_level
        expect.version = level
        props = p.properties
        refused = (
            (not p.client_id and (level == 3 or (level == 4 and not p.clean_start)))
            or (level == MQTT5 and Prop.AUTHENTICATION_METHOD in props)  # no method is known
        )
        if refused:
            expect.closes = True
            expect.connack = False
            expect.why = "CONNECT refused"
            return False
        expect.connack = True
        self.version = level
        if level == MQTT5:
            self.session_expiry = props.get(Prop.SESSION_EXPIRY_INTERVAL, 0)
            expect.relaxed = Prop.MAXIMUM_PACKET_SIZE in props
        return True


def check_output(data: bytes, expect: Expect, connected: bool) -> list[Packet]:
    """Check the bytes the broker sent against ``expect``; returns the packets.

    ``connected``: a successful CONNACK was read before ``data``.
    """
    packets = decode_all(data, expect.version)
    v5 = expect.version == MQTT5
    rest = packets
    if not connected:
        if expect.connack is True:
            assert packets, f"no CONNACK for an acceptable CONNECT ({expect.why})"
            first = packets[0]
            assert isinstance(first, Connack), f"expected CONNACK first, got {first!r}"
            assert first.reason_code == 0 or expect.relaxed, f"CONNECT refused: {first!r}"
            rest = packets[1:]
        elif expect.connack is False:
            if not packets and expect.connack_optional:
                return packets
            assert len(packets) == 1, f"expected one CONNACK refusing, got {packets!r}"
            assert isinstance(packets[0], Connack), packets
            assert packets[0].reason_code != 0, f"a bad CONNECT was accepted: {packets!r}"
            return packets
        else:
            assert not packets, f"the broker answered before any CONNECT: {packets!r}"
            return packets
    for i, packet in enumerate(rest):
        assert isinstance(packet, _SERVER_PACKETS) or (v5 and isinstance(packet, Disconnect)), (
            f"the broker sent {packet!r}, which a server never sends"
        )
        assert not isinstance(packet, Connack), f"a second CONNACK: {packet!r}"
        if isinstance(packet, Disconnect):
            assert i == len(rest) - 1, f"packets after the broker's DISCONNECT: {rest[i:]!r}"
            assert packet.reason_code >= 0x80, f"DISCONNECT without an error: {packet!r}"
            assert packet.reason_code in SERVER_DISCONNECT_REASONS, packet
    if expect.relaxed:
        return packets
    last = rest[-1] if rest else None
    if v5 and expect.reasons is not None:
        assert isinstance(last, Disconnect), (
            f"v5: no DISCONNECT before closing for {expect.why}; the broker sent {rest!r}"
        )
        assert last.reason_code in expect.reasons, (
            f"v5: DISCONNECT {last.reason_code:#04x} for {expect.why}; the spec wants one of"
            f" {sorted(hex(r) for r in expect.reasons)}"
        )
    else:
        assert not isinstance(last, Disconnect), (
            f"unexpected DISCONNECT {last!r} ({expect.why or 'no violation predicted'})"
        )
    return packets


def exercise(
    client: RawClient, chunks: Chunks, expect: Expect, connected: bool = True
) -> list[Packet]:
    """Send ``chunks`` and read until the broker closes; check everything it sent.

    If the broker need not close by itself we half-close our side: it must then close too
    (no hang). Returns the packets the broker sent.
    """
    if expect.closes:
        event(
            "closes" + (f" with {sorted(hex(r) for r in expect.reasons)}" if expect.reasons else "")
        )
    else:
        event("stays open")
    complete = send_chunks(client, chunks)
    if not expect.closes and complete:
        with contextlib.suppress(OSError):
            client.shutdown_write()
    data, eof = read_to_eof(client)
    if expect.closes:
        assert eof, f"the broker did not close the connection within {SOON} s ({expect.why})"
    else:
        assert eof, f"the broker did not close within {SOON} s of the client's EOF"
    return check_output(data, expect, connected)


# -- strategies ---------------------------------------------------------------------------------

#: Text that is valid in MQTT strings (no controls, no non-characters), a few scripts.
TEXT = st.text(alphabet="ab/ é€😀", max_size=6)
TOPICS = st.sampled_from(["a", "a/b", "b/c/d", "é/€", SENTINEL_TOPIC])
FILTERS = st.sampled_from(["a", "a/#", "+/b", "#", "b/+/d", "$share/g/a", "$share/g/#"])
SMALL_IDS = st.one_of(st.integers(1, 4), st.integers(1, 65535))
PAYLOADS = st.binary(max_size=24)

ACK_REASONS = {
    Puback: [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
    Pubrec: [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
    Pubrel: [0x00, 0x92],
    Pubcomp: [0x00, 0x92],
}


def publish_properties(alias_max: int = DEFAULT_ALIAS_MAX) -> st.SearchStrategy[dict[int, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            Prop.PAYLOAD_FORMAT_INDICATOR: st.just(0),
            Prop.MESSAGE_EXPIRY_INTERVAL: st.integers(1, 2**32 - 1),
            Prop.CONTENT_TYPE: TEXT,
            Prop.RESPONSE_TOPIC: st.sampled_from(["r", "r/s"]),
            Prop.CORRELATION_DATA: st.binary(max_size=8),
            Prop.USER_PROPERTY: st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=2),
            Prop.TOPIC_ALIAS: st.integers(1, alias_max + 2),
        },
    )


@st.composite
def publishes(draw: st.DrawFn, version: int) -> Publish:
    qos = draw(st.integers(0, 2))
    props = draw(publish_properties()) if version == MQTT5 else {}
    topic = draw(TOPICS)
    if Prop.TOPIC_ALIAS in props and draw(st.booleans()):
        topic = ""
    return Publish(
        topic,
        draw(PAYLOADS),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(SMALL_IDS) if qos else None,
        props,
    )


@st.composite
def acks(draw: st.DrawFn, version: int) -> Packet:
    cls: Any = draw(st.sampled_from([Puback, Pubrec, Pubrel, Pubcomp]))
    packet: Packet
    if version != MQTT5:
        packet = cls(draw(SMALL_IDS))
        return packet
    props: dict[int, Any] = {}
    if draw(st.booleans()):
        props[Prop.REASON_STRING] = draw(TEXT)
    packet = cls(draw(SMALL_IDS), draw(st.sampled_from(ACK_REASONS[cls])), props)
    return packet


@st.composite
def subscriptions(draw: st.DrawFn, version: int) -> Subscription:
    flt = draw(FILTERS)
    if version != MQTT5:
        return Subscription(flt, draw(st.integers(0, 2)))
    return Subscription(
        flt,
        draw(st.integers(0, 2)),
        draw(st.booleans()) and not flt.startswith("$share/"),
        draw(st.booleans()),
        draw(st.integers(0, 2)),
    )


@st.composite
def subscribes(draw: st.DrawFn, version: int) -> Subscribe:
    props: dict[int, Any] = {}
    if version == MQTT5 and draw(st.booleans()):
        props[Prop.SUBSCRIPTION_IDENTIFIER] = [draw(st.integers(1, 268_435_455))]
    subs = draw(st.lists(subscriptions(version), min_size=1, max_size=3))
    return Subscribe(draw(SMALL_IDS), subs, props)


@st.composite
def unsubscribes(draw: st.DrawFn, version: int) -> Unsubscribe:
    return Unsubscribe(draw(SMALL_IDS), draw(st.lists(FILTERS, min_size=1, max_size=3)))


@st.composite
def disconnects(draw: st.DrawFn, version: int) -> Disconnect:
    if version != MQTT5:
        return Disconnect()
    props: dict[int, Any] = {}
    if draw(st.booleans()):
        props[Prop.SESSION_EXPIRY_INTERVAL] = draw(st.sampled_from([0, 5]))
    return Disconnect(draw(st.sampled_from([0x00, 0x04, 0x80, 0x81, 0x82])), props)


@st.composite
def connects(draw: st.DrawFn, version: int | None = None) -> Connect:
    """A CONNECT the codec can encode; some fields are ones the broker refuses."""
    if version is None:
        version = draw(st.sampled_from([3, 4, 5]))
    will = None
    if draw(st.booleans()):
        will = Will(draw(TOPICS), draw(PAYLOADS), draw(st.integers(0, 2)), draw(st.booleans()))
        if version == MQTT5 and draw(st.booleans()):
            will.properties[Prop.WILL_DELAY_INTERVAL] = draw(st.integers(0, 2))
    props: dict[int, Any] = {}
    if version == MQTT5:
        props = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    Prop.RECEIVE_MAXIMUM: st.integers(1, 65535),
                    Prop.TOPIC_ALIAS_MAXIMUM: st.integers(0, 5),
                    Prop.REQUEST_PROBLEM_INFORMATION: st.integers(0, 1),
                    Prop.USER_PROPERTY: st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=2),
                },
            )
        )
    username = draw(st.none() | TEXT)
    password = draw(st.none() | st.binary(max_size=8))
    if password is not None and username is None and version != MQTT5:
        username = "u"  # MQTT-3.1.2-22
    client_id = f"c{draw(st.integers(0, 2**24)):x}" if draw(st.booleans()) else ""
    return Connect(
        client_id,
        version,
        "MQIsdp" if version == 3 else "MQTT",
        draw(st.booleans()),
        draw(st.sampled_from([0, 60, 65535])),
        will,
        username,
        password,
        props,
    )


def client_packets(version: int) -> st.SearchStrategy[Packet]:
    """Packets a client sends, valid on their own, in any order (some break the protocol)."""
    return st.one_of(
        publishes(version),
        acks(version),
        subscribes(version),
        unsubscribes(version),
        st.just(Pingreq()),
        disconnects(version),
        st.sampled_from([Connack(), Suback(1, [0]), Unsuback(1, [0]), Pingresp()]),
        connects(version),
        st.builds(Auth, st.sampled_from([0x00, 0x18, 0x19])),
    )


def encode_any(packet: Packet, version: int) -> bytes:
    """``encode`` for any version: AUTH below v5 is its reserved-type bytes (malformed there)."""
    if isinstance(packet, Auth) and version != MQTT5:
        return b"\xf0\x00"
    return encode(packet, version)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one to three byte-level mutations: flip a bit, overwrite, insert, delete,
    duplicate a slice, or truncate."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "repeat", "truncate"]))
        if not buf:
            kind = "insert"
        i = draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            buf[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            buf.insert(i, draw(st.integers(0, 255)))
        elif kind == "delete":
            del buf[i]
        elif kind == "repeat":
            j = draw(st.integers(i, len(buf)))
            buf[i:i] = buf[i:j]
        else:
            del buf[i:]
    return bytes(buf)


@st.composite
def relengthed(draw: st.DrawFn, data: bytes) -> bytes:
    """A whole packet with a wrong Remaining Length (too short, too long, non-minimal or over
    four bytes); the body is kept as it was."""
    end = 1
    while end < len(data) and data[end] & 0x80:
        end += 1
    body = data[end + 1 :]
    kind = draw(st.sampled_from(["short", "long", "padded", "five"]))
    if kind == "short":
        length = varint(max(0, len(body) - draw(st.integers(1, 4))))
    elif kind == "long":
        length = varint(len(body) + draw(st.integers(1, 300)))
    elif kind == "padded":
        length = bytes([(len(body) & 0x7F) | 0x80, len(body) >> 7 | 0x80, 0x00])
    else:
        length = b"\x80\x80\x80\x80\x01"
    return data[:1] + length + body


@st.composite
def random_packets(draw: st.DrawFn) -> bytes:
    """A fixed header (any type and flags, or a proper type/flags pair) over a random body."""
    if draw(st.booleans()):
        first = draw(st.integers(0, 255))
    else:
        first = draw(st.sampled_from([0x30, 0x32, 0x34, 0x40, 0x50, 0x62, 0x70, 0x82, 0xA2, 0xE0]))
    body = draw(st.binary(max_size=40))
    return bytes([first]) + varint(len(body)) + body


def stream_items(version: int) -> st.SearchStrategy[bytes]:
    """Pieces of a client's byte stream after CONNECT: valid packets first (so examples shrink
    towards them), then mutated ones, wrong lengths, random packets and random bytes."""
    valid = client_packets(version).map(lambda p: encode_any(p, version))
    return st.one_of(
        valid,
        valid.flatmap(mutated),
        valid.flatmap(relengthed),
        random_packets(),
        st.binary(min_size=1, max_size=24),
    )


def streams(version: int, max_items: int = 6) -> st.SearchStrategy[bytes]:
    return st.lists(stream_items(version), min_size=1, max_size=max_items).map(b"".join)
