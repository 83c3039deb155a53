"""A small blocking MQTT client for conformance tests: sends any packet, or any bytes at all.

It uses midge's codec to encode and decode, and a plain socket, so a test can send malformed or
out-of-order packets and then see exactly what the broker answers and whether it closes.
"""

from __future__ import annotations

import socket
import time
from typing import Any, TypeVar

from midge.codec import Decoder, encode
from midge.codec.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
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

P = TypeVar("P")

DEFAULT_TIMEOUT = 5.0


class Closed(Exception):
    """The broker closed the connection."""


class RawClient:
    """One TCP connection to a broker. ``version`` is the protocol level used to encode/decode."""

    def __init__(self, host: str, port: int, version: int = 4, timeout: float = DEFAULT_TIMEOUT):
        self.version = version
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = Decoder(version=version)
        self.pending: list[Packet] = []
        self.closed = False
        self._next_id = 0

    # -- sending -----------------------------------------------------------------------------

    def send(self, packet: Packet) -> None:
        self.send_raw(encode(packet, self.version))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    # -- receiving ---------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Packet:
        """The next packet; raises ``TimeoutError`` if none arrives, ``Closed`` on EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            if self.closed:
                raise Closed("connection closed by the broker")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet from the broker")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no packet from the broker") from None
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self.closed = True
                continue
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
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
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

    # -- conveniences ------------------------------------------------------------------------

    def connect(self, client_id: str = "", **fields: Any) -> Connack:
        """Send CONNECT (fields as in :class:`Connect`) and return the CONNACK."""
        fields.setdefault("protocol_level", self.version)
        if self.version == 3:
            fields.setdefault("protocol_name", "MQIsdp")
        self.send(Connect(client_id=client_id, **fields))
        return self.expect(Connack)

    def subscribe(
        self, topic_filter: str, qos: int = 0, properties: dict[int, Any] | None = None, **opts: Any
    ) -> Suback:
        pid = self.next_packet_id()
        self.send(Subscribe(pid, [Subscription(topic_filter, qos, **opts)], properties or {}))
        suback = self.expect(Suback)
        assert suback.packet_id == pid
        return suback

    def unsubscribe(self, *topic_filters: str) -> Unsuback:
        pid = self.next_packet_id()
        self.send(Unsubscribe(pid, list(topic_filters)))
        unsuback = self.expect(Unsuback)
        assert unsuback.packet_id == pid
        return unsuback

    def publish(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        properties: dict[int, Any] | None = None,
    ) -> Packet | None:
        """Publish and complete the QoS flow; returns the PUBACK/PUBCOMP (None for QoS 0)."""
        pid = self.next_packet_id() if qos else None
        self.send(Publish(topic, payload, qos, retain, False, pid, properties or {}))
        if qos == 1:
            return self.expect(Puback)
        if qos == 2:
            pubrec = self.expect(Pubrec)
            if pubrec.reason_code >= 0x80:
                return pubrec
            self.send(Pubrel(pid or 0))
            return self.expect(Pubcomp)
        return None

    def ack(self, publish: Publish) -> None:
        """Acknowledge a received PUBLISH completely (PUBACK, or PUBREC/PUBREL/PUBCOMP)."""
        if publish.qos == 1:
            self.send(Puback(publish.packet_id or 0))
        elif publish.qos == 2:
            self.send(Pubrec(publish.packet_id or 0))
            self.expect(Pubrel)
            self.send(Pubcomp(publish.packet_id or 0))

    def disconnect(self, reason_code: int = 0, properties: dict[int, Any] | None = None) -> None:
        self.send(Disconnect(reason_code, properties or {}))
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.closed = True

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    """The next packet's exact bytes (fixed header included), read from the socket directly.

    Bypasses the decoder, to check bits the decoder would normalise away (reserved flags, the
    absence of a Packet Identifier). Only valid when nothing is buffered in ``client`` yet, i.e.
    before anything else was received on it or right after a packet was fully consumed.
    """
    assert not client.pending, "packets already decoded; read_raw_packet would skip them"
    deadline = time.monotonic() + (client.timeout if timeout is None else timeout)

    def read_exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet from the broker")
            client.sock.settimeout(remaining)
            try:
                chunk = client.sock.recv(n - len(data))
            except TimeoutError:
                raise TimeoutError("no packet from the broker") from None
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                client.closed = True
                raise Closed("connection closed by the broker")
            data += chunk
        return data

    header = read_exactly(1)
    length_bytes = b""
    multiplier, length = 1, 0
    while True:
        byte = read_exactly(1)
        length_bytes += byte
        length += (byte[0] & 0x7F) * multiplier
        multiplier *= 128
        if not byte[0] & 0x80:
            break
    return header + length_bytes + read_exactly(length)


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
    try:
        packet = client.recv(timeout)
    except Closed:
        return
    except TimeoutError:
        raise AssertionError(f"the broker did not close the connection in {timeout} s") from None
    raise AssertionError(f"expected the broker to close without answering, got {packet!r}")


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
