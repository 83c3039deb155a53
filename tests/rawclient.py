"""The one raw MQTT test client: sends any packet, or any bytes at all, and sees exactly what the
broker answers and whether it closes.

It uses midge's codec to encode and decode, over either a real socket (``RawClient(host, port)``)
or an in-memory link to a :class:`tests.memory.MemoryBroker` (``RawClient(broker.link())``);
``RawClient.to(broker)`` picks whichever ``broker`` is. The methods are the same both ways. In
memory a wait does not last: once the broker has done all it can without time passing, what has
not arrived will not (``timeout`` arguments are ignored); a test lets time pass with
``broker.advance(seconds)``.

:func:`frame_end` is the one frame splitter: every helper that cuts a byte stream into packets
(:func:`frames`, :func:`read_raw_packet`, the fuzz oracle) uses it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from midge.codec import Decoder, encode
from midge.codec.packets import (
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
from tests.memory import MemoryLink

P = TypeVar("P")

DEFAULT_TIMEOUT = 5.0
#: How long to wait for something the broker should do "now" (a packet, a close).
SOON = 3.0


class Closed(Exception):
    """The broker closed the connection."""


class RawClient:
    """One connection to a broker: a TCP socket to ``host``/``port``, or ``host`` a
    :class:`~tests.memory.MemoryLink`. ``version`` is the protocol level used to encode/decode."""

    def __init__(
        self,
        host: str | MemoryLink | socket.socket,
        port: int = 0,
        version: int = 4,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.version = version
        self.timeout = timeout
        self.link: MemoryLink | None = None
        self._sock: socket.socket | None = None
        if isinstance(host, MemoryLink):
            self.link = host
        elif isinstance(host, socket.socket):  # already connected (RawClient.unix)
            self._sock = host
        else:
            self._sock = socket.create_connection((host, port), timeout=timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = Decoder(version=version)
        self.pending: list[Packet] = []
        self.closed = False
        self._next_id = 0
        #: Every byte received is also appended to each of these (see :func:`tap`).
        self.taps: list[bytearray] = []
        #: The CONNACK of :meth:`connect5`.
        self.connack: Connack | None = None

    @classmethod
    def to(cls, broker: Any, version: int = 4, timeout: float = DEFAULT_TIMEOUT) -> RawClient:
        """A client to ``broker``: in memory if it is a :class:`~tests.memory.MemoryBroker`,
        else over TCP to its ``host``/``port``."""
        link = getattr(broker, "link", None)
        if link is not None:
            return cls(link(), version=version, timeout=timeout)
        return cls(broker.host, broker.port, version=version, timeout=timeout)

    @classmethod
    def unix(cls, path: str, version: int = 4, timeout: float = DEFAULT_TIMEOUT) -> RawClient:
        """A client over the Unix socket ``path`` (a ``listener 0 PATH`` listener)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(sock, version=version, timeout=timeout)

    @property
    def sock(self) -> socket.socket:
        """The socket (a socket client only)."""
        assert self._sock is not None, "an in-memory client has no socket"
        return self._sock

    @sock.setter
    def sock(self, value: socket.socket) -> None:
        self._sock = value

    @property
    def in_memory(self) -> bool:
        return self.link is not None

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the in-memory broker's clock (its timers fire in order)."""
        assert self.link is not None, "time passes by itself on a socket"
        self.link.clock.advance(seconds)

    # -- sending -----------------------------------------------------------------------------

    def send(self, packet: Packet) -> None:
        self.send_raw(encode(packet, self.version))

    def send_raw(self, data: bytes) -> None:
        if self.link is not None:
            self.link.send(data)
        else:
            self.sock.sendall(data)

    def next_packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    # -- receiving ---------------------------------------------------------------------------

    def read_bytes(self, size: int, deadline: float) -> bytes:
        """Up to ``size`` bytes as they come (b"" at EOF: ``closed`` is then set), bypassing the
        decoder; ``TimeoutError`` if none by ``deadline`` (``time.monotonic()``)."""
        if self.closed:
            return b""
        if self.link is not None:
            data = self.link.recv(size)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet from the broker")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(size)
            except TimeoutError:
                raise TimeoutError("no packet from the broker") from None
            except (ConnectionResetError, BrokenPipeError):
                data = b""
        if not data:
            self.closed = True
        for log in self.taps:
            log += data
        return data

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def recv(self, timeout: float | None = None) -> Packet:
        """The next packet; raises ``TimeoutError`` if none arrives, ``Closed`` on EOF."""
        deadline = self._deadline(timeout)
        while not self.pending:
            if self.closed:
                raise Closed("connection closed by the broker")
            data = self.read_bytes(65536, deadline)
            if data:
                self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def expect(self, cls: type[P], timeout: float | None = None) -> P:
        """The next packet, which must be of type ``cls``."""
        packet = self.recv(timeout)
        assert isinstance(packet, cls), f"expected {cls.__name__}, got {packet!r}"
        return packet

    def expect_nothing(self, timeout: float = 0.5) -> None:
        """Assert that no packet arrives within ``timeout`` seconds (EOF is not a packet)."""
        try:
            packet = self.recv(timeout)
        except (TimeoutError, Closed):
            return
        raise AssertionError(f"expected no packet, got {packet!r}")

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Read (and drop) packets until the broker closes; False if it is still open at timeout."""
        deadline = self._deadline(timeout)
        while True:
            try:
                self.recv(max(0.0, deadline - time.monotonic()))
            except Closed:
                return True
            except TimeoutError:
                return False

    def recv_all(self, timeout: float = 0.5) -> list[Packet]:
        """Every packet that arrives until ``timeout`` seconds pass with none (or EOF)."""
        packets: list[Packet] = []
        while True:
            try:
                packets.append(self.recv(timeout))
            except (TimeoutError, Closed):
                return packets

    def wait_for(self, cls: type[Any], timeout: float | None = None) -> Any:
        """The first packet of type ``cls``; packets of other types stay queued, in order."""
        skipped: list[Packet] = []
        try:
            while True:
                packet = self.recv(timeout)
                if isinstance(packet, cls):
                    return packet
                skipped.append(packet)
        finally:
            self.pending[:0] = skipped

    def publishes(self, count: int, timeout: float = SOON) -> list[Publish]:
        """``count`` PUBLISH packets (other packets stay queued)."""
        return [self.wait_for(Publish, timeout) for _ in range(count)]

    def more_publishes(self, timeout: float = 0.5, ack: bool = False) -> list[Publish]:
        """Every PUBLISH that arrives until ``timeout`` passes with none (or EOF); other packets
        stay queued. With ``ack`` each QoS 1/2 one is acknowledged as it comes."""
        out: list[Publish] = []
        while True:
            try:
                message: Publish = self.wait_for(Publish, timeout)
            except (TimeoutError, Closed):
                return out
            out.append(message)
            if ack and message.qos:
                self.ack(message, others_stay_queued=True)

    def no_publish(self, timeout: float = 0.5) -> None:
        """Assert no PUBLISH arrives within ``timeout`` (other packets stay queued)."""
        try:
            packet = self.wait_for(Publish, timeout)
        except (TimeoutError, Closed):
            return
        raise AssertionError(f"expected no PUBLISH, got {packet!r}")

    # -- conveniences ------------------------------------------------------------------------

    def connect(self, client_id: str = "", **fields: Any) -> Connack:
        """Send CONNECT (fields as in :class:`Connect`) and return the CONNACK."""
        fields.setdefault("protocol_level", self.version)
        if self.version == 3:
            fields.setdefault("protocol_name", "MQIsdp")
        self.send(Connect(client_id=client_id, **fields))
        return self.expect(Connack)

    def connect5(self, client_id: str = "", ok: bool = True, **fields: Any) -> Connack:
        """CONNECT (keep-alive 0 unless given); with ``ok`` the CONNACK must be a success."""
        fields.setdefault("keep_alive", 0)
        connack = self.connect(client_id, **fields)
        self.connack = connack
        if ok:
            assert connack.reason_code == 0x00, f"CONNECT refused: {connack!r}"
        return connack

    def subscribe(
        self, topic_filter: str, qos: int = 0, properties: dict[int, Any] | None = None, **opts: Any
    ) -> Suback:
        pid = self.next_packet_id()
        self.send(Subscribe(pid, [Subscription(topic_filter, qos, **opts)], properties or {}))
        suback = self.expect(Suback)
        assert suback.packet_id == pid
        return suback

    def unsubscribe(self, *topic_filters: str) -> Unsuback:
        """UNSUBSCRIBE; the UNSUBACK must be the next packet (see :meth:`unsub`)."""
        return self._unsubscribe(topic_filters, strict=True)

    def _unsubscribe(self, topic_filters: tuple[str, ...], strict: bool) -> Unsuback:
        pid = self.next_packet_id()
        self.send(Unsubscribe(pid, list(topic_filters)))
        unsuback: Unsuback = self.expect(Unsuback) if strict else self.wait_for(Unsuback)
        assert unsuback.packet_id == pid, f"UNSUBACK for {unsuback.packet_id}, expected {pid}"
        return unsuback

    def publish(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        properties: dict[int, Any] | None = None,
    ) -> Puback | Pubrec | Pubcomp | None:
        """Publish and complete the QoS flow; returns the PUBACK/PUBCOMP (None for QoS 0). Each
        ack must be the next packet (see :meth:`pub`)."""
        return self._publish(topic, payload, qos, retain, properties, False, strict=True)

    def _publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: dict[int, Any] | None,
        dup: bool,
        strict: bool,
    ) -> Puback | Pubrec | Pubcomp | None:
        pid = self.next_packet_id() if qos else None
        self.send(Publish(topic, payload, qos, retain, dup, pid, properties or {}))
        if not qos:
            return None
        take = self.expect if strict else self.wait_for
        ack: Puback | Pubrec = take(Puback if qos == 1 else Pubrec)
        assert ack.packet_id == pid, f"{type(ack).__name__} for {ack.packet_id}, expected {pid}"
        if qos == 1 or ack.reason_code >= 0x80:
            return ack
        self.send(Pubrel(pid or 0))
        pubcomp: Pubcomp = take(Pubcomp)
        assert pubcomp.packet_id == pid, f"PUBCOMP for {pubcomp.packet_id}, expected {pid}"
        return pubcomp

    def ack(self, publish: Publish, others_stay_queued: bool = False) -> None:
        """Acknowledge a received PUBLISH completely (PUBACK, or PUBREC/PUBREL/PUBCOMP). The
        PUBREL must be the next packet, unless ``others_stay_queued``: packets arriving before it
        then stay queued."""
        if publish.qos == 1:
            self.send(Puback(publish.packet_id or 0))
        elif publish.qos == 2:
            self.send(Pubrec(publish.packet_id or 0))
            if others_stay_queued:
                pubrel: Pubrel = self.wait_for(Pubrel)
                assert pubrel.packet_id == publish.packet_id, pubrel
            else:
                self.expect(Pubrel)
            self.send(Pubcomp(publish.packet_id or 0))

    # -- requests that tolerate interleaved PUBLISHes -------------------------------------------

    def sub(
        self,
        *subscriptions: Subscription | str,
        qos: int = 0,
        properties: dict[int, Any] | None = None,
    ) -> Suback:
        """SUBSCRIBE; a ``str`` is a filter at ``qos``. PUBLISHes sent before the SUBACK (allowed,
        MQTT 5.0 section 3.8.4) stay queued for the test to read."""
        subs = [Subscription(s, qos) if isinstance(s, str) else s for s in subscriptions]
        pid = self.next_packet_id()
        self.send(Subscribe(pid, subs, properties or {}))
        suback: Suback = self.wait_for(Suback)
        assert suback.packet_id == pid, f"SUBACK for {suback.packet_id}, expected {pid}"
        return suback

    def unsub(self, *topic_filters: str) -> Unsuback:
        """UNSUBSCRIBE; PUBLISHes arriving before the UNSUBACK stay queued."""
        return self._unsubscribe(topic_filters, strict=False)

    def pub(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        properties: dict[int, Any] | None = None,
        dup: bool = False,
    ) -> Puback | Pubrec | Pubcomp | None:
        """PUBLISH and complete the flow; returns the PUBACK, PUBCOMP or failing PUBREC (other
        packets arriving meanwhile stay queued)."""
        return self._publish(topic, payload, qos, retain, properties, dup, strict=False)

    # -- the end of a connection ----------------------------------------------------------------

    def expect_disconnect(
        self, reasons: int | Iterable[int] | None = None, timeout: float = SOON
    ) -> Disconnect:
        """The broker sends DISCONNECT (with a reason code in ``reasons``), then closes.

        Packets that were already on their way (PUBLISHes, acks) are skipped; nothing may follow
        the DISCONNECT (MQTT-3.14.4-1) and the connection must then close (MQTT-3.14.4-2).
        """
        if isinstance(reasons, int):
            reasons = {reasons}
        wanted = None if reasons is None else frozenset(reasons)
        while True:
            try:
                packet = self.recv(timeout)
            except Closed:
                raise AssertionError("the broker closed without sending DISCONNECT") from None
            except TimeoutError:
                raise AssertionError(f"no DISCONNECT from the broker in {timeout} s") from None
            if isinstance(packet, Disconnect):
                break
            assert not isinstance(packet, Connack), f"MQTT-3.2.0-2: a second CONNACK {packet!r}"
        if wanted is not None:
            assert packet.reason_code in wanted, (
                f"DISCONNECT reason {packet.reason_code:#04x}, expected one of "
                + ", ".join(f"{r:#04x}" for r in sorted(wanted))
            )
        assert not self.pending, f"MQTT-3.14.4-1: packets after DISCONNECT: {self.pending!r}"
        self.expect_closed(timeout)
        return packet

    def expect_closed(self, timeout: float = SOON) -> None:
        """The broker closes the connection without sending any (further) packet."""
        try:
            packet = self.recv(timeout)
        except Closed:
            return
        except TimeoutError:
            raise AssertionError(f"still open after {timeout} s") from None
        raise AssertionError(f"expected the connection to close, got {packet!r}")

    def expect_refused(
        self, reasons: Iterable[int] | None = None, timeout: float = SOON
    ) -> Connack | None:
        """A CONNECT is refused: the broker closes, after at most one CONNACK whose reason code
        is 0x80 or more (and in ``reasons`` if given). Returns that CONNACK, if any."""
        wanted = None if reasons is None else frozenset(reasons)
        try:
            packet = self.recv(timeout)
        except Closed:
            return None
        except TimeoutError:
            raise AssertionError(f"still open after {timeout} s") from None
        assert isinstance(packet, Connack), f"expected CONNACK or close, got {packet!r}"
        assert packet.reason_code >= 0x80, f"CONNECT accepted: {packet!r}"
        assert not packet.session_present, "MQTT-3.2.2-6: refusing CONNACK with Session Present"
        if wanted is not None:
            assert packet.reason_code in wanted, f"CONNACK reason {packet.reason_code:#04x}"
        self.expect_closed(timeout)
        return packet

    def is_open(self, timeout: float = 0.3) -> bool:
        """True if the connection is still open after ``timeout`` (no packet may arrive)."""
        try:
            packet = self.recv(timeout)
        except Closed:
            return False
        except TimeoutError:
            return True
        raise AssertionError(f"expected nothing, got {packet!r}")

    def ping(self, timeout: float = SOON) -> None:
        """PINGREQ and wait for the PINGRESP: everything the broker sent before it has arrived."""
        self.send(Pingreq())
        self.wait_for(Pingresp, timeout)

    def shutdown_write(self) -> None:
        """Half-close: the broker reads EOF; this client can still read what it sends."""
        if self.link is not None:
            self.link.shutdown_write()
        else:
            self.sock.shutdown(socket.SHUT_WR)

    def disconnect(self, reason_code: int = 0, properties: dict[int, Any] | None = None) -> None:
        self.send(Disconnect(reason_code, properties or {}))
        self.close()

    def close(self) -> None:
        try:
            if self.link is not None:
                self.link.close()
            elif self._sock is not None:
                self._sock.close()
        finally:
            self.closed = True

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Clients:
    """Opens protocol level 5 :class:`RawClient` connections to one broker (in memory or on a
    socket); closes them all on exit."""

    def __init__(self, running: Any, version: int = 5) -> None:
        self.running = running
        self.version = version
        self.opened: list[RawClient] = []

    def open(self) -> RawClient:
        client = RawClient.to(self.running, self.version)
        self.opened.append(client)
        return client

    def connect(self, client_id: str = "", **fields: Any) -> RawClient:
        """A connected client (``fields`` as in :class:`Connect`); the CONNECT must succeed."""
        client = self.open()
        client.connect5(client_id, **fields)
        return client

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the in-memory broker's clock."""
        self.running.advance(seconds)

    def close(self) -> None:
        for client in self.opened:
            client.close()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The ``raw`` fixture: ``raw(version=4)`` opens a client to the test's broker.
Raw = Callable[..., RawClient]


def accepted(raw: Raw, client_id: str, version: int = 4, **fields: Any) -> RawClient:
    """A connected client; asserts the CONNACK accepted it."""
    client = raw(version)
    connack = client.connect(client_id, **fields)
    assert connack.reason_code == 0, connack
    return client


def subscriber(
    raw: Raw, topic_filter: str, qos: int = 2, version: int = 4, client_id: str | None = None
) -> RawClient:
    """A connected client subscribed to ``topic_filter``; asserts it was granted ``qos``."""
    client = accepted(raw, client_id or f"v311-sub-{topic_filter}"[:60], version)
    suback = client.subscribe(topic_filter, qos)
    assert suback.reason_codes == [qos]
    return client


def publishes(packets: list[Any]) -> list[Publish]:
    """The PUBLISHes among ``packets``."""
    return [p for p in packets if isinstance(p, Publish)]


def tap(client: RawClient) -> bytearray:
    """From now on, every byte ``client`` receives is also appended to the returned bytearray."""
    log = bytearray()
    client.taps.append(log)
    return log


def fixed_header(data: bytes | bytearray, pos: int = 0) -> tuple[int, int] | None:
    """``(remaining_length, body_start)`` of the packet starting at ``pos``, or None if ``data``
    does not hold its whole fixed header yet (or its Remaining Length has more than four bytes:
    invalid, the decoder reports that)."""
    i = pos + 1
    length = 0
    shift = 0
    while True:
        if i >= len(data) or i - pos > 4:
            return None
        byte = data[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return length, i
        shift += 7


def frame_end(data: bytes | bytearray, pos: int = 0) -> int | None:
    """The end offset of the complete packet starting at ``pos``, or None if ``data`` does not
    hold all of it yet. The one frame splitter of the tests."""
    header = fixed_header(data, pos)
    if header is None:
        return None
    end = header[1] + header[0]
    return end if end <= len(data) else None


def frames(data: bytes | bytearray) -> list[bytes]:
    """Split a received byte stream into whole packets (fixed header included).

    Also checks MQTT-1.5.5-1 on every Remaining Length: the fewest bytes for the value.
    """
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        header = fixed_header(data, pos)
        end = frame_end(data, pos)
        assert header is not None and end is not None, "a partial packet at the end of the stream"
        length, start = header
        count = start - pos - 1
        assert len(varint(length)) == count, (
            f"MQTT-1.5.5-1: Remaining Length {length} sent in {count} bytes "
            f"({bytes(data[pos + 1 : start]).hex()})"
        )
        out.append(bytes(data[pos:end]))
        pos = end
    return out


def raw_until_closed(client: RawClient, timeout: float = SOON) -> bytes:
    """Every byte the broker sends until it closes, read without the decoder (for answers that
    need not be packets of the client's version, e.g. to an unsupported protocol version)."""
    assert not client.pending, "packets already decoded"
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        try:
            chunk = client.read_bytes(65536, deadline)
        except TimeoutError:
            raise AssertionError(f"still open after {timeout} s (received {data.hex()})") from None
        if not chunk:
            return data
        data += chunk


__all__ = ["Closed", "RawClient", "Will"]


# -- hand-built bytes and small helpers (appended for the conformance suites) -----------------
#
# The codec refuses to encode most invalid packets, so tests that must send one build its bytes
# here. Strings may be given as ``bytes`` to send exactly those bytes (invalid UTF-8, U+0000, ...).


def varint(value: int) -> bytes:
    """``value`` as an MQTT Variable Byte Integer (Remaining Length), in the fewest bytes."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def mqtt_string(value: str | bytes) -> bytes:
    """A two-byte length then the bytes (``str`` is UTF-8 encoded, ``bytes`` sent as is)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def raw_packet(first_byte: int, body: bytes = b"") -> bytes:
    """A whole packet: ``first_byte`` (type << 4 | flags), the Remaining Length, then ``body``."""
    return bytes([first_byte]) + varint(len(body)) + body


def raw_connect(
    client_id: str | bytes = "",
    *,
    version: int = 4,
    protocol_name: str | bytes | None = None,
    clean: bool = True,
    keep_alive: int = 60,
    will_topic: str | bytes | None = None,
    will_payload: bytes = b"",
    will_qos: int = 0,
    will_retain: bool = False,
    username: str | bytes | None = None,
    password: bytes | None = None,
    flags: int | None = None,
    properties: bytes = b"\x00",
    will_properties: bytes = b"\x00",
    tail: bytes = b"",
    first_byte: int = 0x10,
) -> bytes:
    """A CONNECT built by hand, for CONNECTs the codec would refuse to encode.

    The Connect Flags are computed from the fields (a Will is present iff ``will_topic`` is not
    None) unless ``flags`` forces them; the payload always holds exactly the fields given, so a
    flag can disagree with the payload. ``properties``/``will_properties`` (already encoded, with
    their length) are only written for ``version`` 5. ``tail`` is appended to the payload.
    """
    if protocol_name is None:
        protocol_name = "MQIsdp" if version == 3 else "MQTT"
    if flags is None:
        flags = (
            (0x02 if clean else 0)
            | (0x04 if will_topic is not None else 0)
            | ((will_qos & 3) << 3)
            | (0x20 if will_retain else 0)
            | (0x40 if password is not None else 0)
            | (0x80 if username is not None else 0)
        )
    body = mqtt_string(protocol_name) + bytes([version, flags]) + keep_alive.to_bytes(2, "big")
    if version == 5:
        body += properties
    body += mqtt_string(client_id)
    if will_topic is not None:
        if version == 5:
            body += will_properties
        body += mqtt_string(will_topic) + mqtt_string(will_payload)
    if username is not None:
        body += mqtt_string(username)
    if password is not None:
        body += mqtt_string(password)
    return raw_packet(first_byte, body + tail)


def raw_publish(
    topic: str | bytes,
    payload: bytes = b"",
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
    *,
    version: int = 4,
    properties: bytes = b"\x00",
) -> bytes:
    """A PUBLISH built by hand. ``qos`` may be 3; ``packet_id`` is written iff it is not None."""
    first = 0x30 | (0x08 if dup else 0) | ((qos & 3) << 1) | (0x01 if retain else 0)
    body = mqtt_string(topic)
    if packet_id is not None:
        body += packet_id.to_bytes(2, "big")
    if version == 5:
        body += properties
    return raw_packet(first, body + payload)


def raw_subscribe(
    packet_id: int,
    *filters: tuple[str | bytes, int],
    first_byte: int = 0x82,
    version: int = 4,
    properties: bytes = b"\x00",
) -> bytes:
    """A SUBSCRIBE built by hand; each filter is ``(topic_filter, options_byte)``."""
    body = packet_id.to_bytes(2, "big") + (properties if version == 5 else b"")
    for topic_filter, options in filters:
        body += mqtt_string(topic_filter) + bytes([options])
    return raw_packet(first_byte, body)


def raw_unsubscribe(
    packet_id: int,
    *filters: str | bytes,
    first_byte: int = 0xA2,
    version: int = 4,
    properties: bytes = b"\x00",
) -> bytes:
    """An UNSUBSCRIBE built by hand."""
    body = packet_id.to_bytes(2, "big") + (properties if version == 5 else b"")
    for topic_filter in filters:
        body += mqtt_string(topic_filter)
    return raw_packet(first_byte, body)


def read_raw_packet(client: RawClient, timeout: float | None = None) -> bytes:
    """The next packet's exact bytes (fixed header included), read without the decoder.

    Bypasses the decoder, to check bits the decoder would normalise away (reserved flags, the
    absence of a Packet Identifier). Only valid when nothing is buffered in ``client`` yet, i.e.
    before anything else was received on it or right after a packet was fully consumed.
    """
    assert not client.pending, "packets already decoded; read_raw_packet would skip them"
    deadline = client._deadline(timeout)
    data = b""
    while True:
        header = fixed_header(data)
        # One byte at a time until the fixed header is whole, then exactly the rest: nothing
        # past this packet is consumed.
        want = 1 if header is None else header[1] + header[0] - len(data)
        if want <= 0:
            return data
        chunk = client.read_bytes(want, deadline)
        if not chunk:
            raise Closed("connection closed by the broker")
        data += chunk


def subscribe_collecting(
    client: RawClient, *subscriptions: tuple[str, int], timeout: float | None = None
) -> tuple[Suback, list[Packet]]:
    """SUBSCRIBE and return ``(suback, packets_before_it)``.

    A server may start sending retained PUBLISHes before its SUBACK (MQTT 3.1.1 section 3.8.4,
    MQTT 5 section 3.8.4), so tests that expect retained messages must not assume the SUBACK
    comes first. Packets that arrive after the SUBACK stay queued on ``client``.
    """
    pid = client.next_packet_id()
    client.send(Subscribe(pid, [Subscription(f, q) for f, q in subscriptions]))
    before: list[Packet] = []
    while True:
        packet = client.recv(timeout)
        if isinstance(packet, Suback):
            assert packet.packet_id == pid, f"SUBACK for {packet.packet_id}, expected {pid}"
            return packet, before
        before.append(packet)


def expect_closed_silently(client: RawClient, timeout: float = 2.0) -> None:
    """Assert the broker closes the connection within ``timeout`` without sending any packet.

    This is what MQTT 3.1/3.1.1 servers do on a protocol violation (no DISCONNECT below v5).
    """
    client.expect_closed(timeout)


def receive_publishes(
    client: RawClient, count: int, *, ack_every: int = 1, timeout: float | None = None
) -> list[Publish]:
    """Receive ``count`` PUBLISHes and complete their QoS flows; return them in arrival order.

    Acknowledgements (PUBACK, or PUBREC then PUBCOMP for each PUBREL) are sent in bursts of
    ``ack_every`` messages, so a test can keep several messages in flight. Any other packet
    fails the test.
    """
    got: list[Publish] = []
    held: list[Publish] = []
    awaiting_pubrel: set[int] = set()
    while len(got) < count or held or awaiting_pubrel:
        packet = client.recv(timeout)
        if isinstance(packet, Pubrel):
            assert packet.packet_id in awaiting_pubrel, f"unexpected {packet!r}"
            awaiting_pubrel.discard(packet.packet_id)
            client.send(Pubcomp(packet.packet_id))
            continue
        assert isinstance(packet, Publish), f"expected PUBLISH, got {packet!r}"
        assert len(got) < count, f"more PUBLISHes than the {count} expected: {packet!r}"
        got.append(packet)
        if packet.qos:
            held.append(packet)
        if len(held) >= ack_every or len(got) == count:
            for message in held:
                pid = message.packet_id or 0
                if message.qos == 1:
                    client.send(Puback(pid))
                else:
                    client.send(Pubrec(pid))
                    awaiting_pubrel.add(pid)
            held.clear()
    return got


def complete_sent_publishes(
    client: RawClient, count: int, timeout: float | None = None
) -> list[int]:
    """Finish the flows of ``count`` QoS 1/2 PUBLISHes sent by hand (e.g. with ``raw_publish``).

    Reads their acknowledgements, answering each PUBREC with a PUBREL, until ``count`` flows have
    ended with a PUBACK or PUBCOMP; returns those Packet Identifiers in the order they ended. (A
    broker may hold a QoS 2 message back until the PUBREL, as Mosquitto does.)
    """
    done: list[int] = []
    while len(done) < count:
        packet = client.recv(timeout)
        if isinstance(packet, Pubrec):
            client.send(Pubrel(packet.packet_id))
        elif isinstance(packet, Puback | Pubcomp):
            done.append(packet.packet_id)
        else:
            raise AssertionError(f"expected PUBACK, PUBREC or PUBCOMP, got {packet!r}")
    return done
