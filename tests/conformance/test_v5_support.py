"""Shared helpers for the MQTT 5.0 conformance tests (this module holds no tests).

``Client5`` is a :class:`tests.rawclient.RawClient` speaking protocol level 5 with a few extra
checks the v5 suite needs everywhere: "the broker answers DISCONNECT with this reason code, then
closes", "the broker closes without a packet", "the CONNECT is refused". ``Clients`` opens them to
a running broker and closes them all at the end. ``tap`` records the exact bytes a client receives,
so a test can check wire details the decoder normalises away.

Reason-code sets are the spec's tables (MQTT 5.0 sections 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1,
3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1, 3.15.2.1).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from typing import Any

from midge.codec.packets import (
    Connack,
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
)
from midge.codec.properties import Prop
from tests.rawclient import Closed, RawClient, raw_packet, varint

V5 = 5

#: Table 3-1, Connect Reason Codes.
CONNACK_REASONS = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95}
    | {0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)
#: Tables 3-4 and 3-5, PUBACK and PUBREC Reason Codes.
PUBACK_REASONS = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
PUBREC_REASONS = PUBACK_REASONS
#: Tables 3-6 and 3-7, PUBREL and PUBCOMP Reason Codes.
PUBREL_REASONS = frozenset({0x00, 0x92})
PUBCOMP_REASONS = PUBREL_REASONS
#: Table 3-8, Subscribe Reason Codes.
SUBACK_REASONS = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
#: Table 3-9, Unsubscribe Reason Codes.
UNSUBACK_REASONS = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
#: Table 3-10, Disconnect Reason Codes.
DISCONNECT_REASONS = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94}
    | {0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2}
)

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82

#: How long to wait for something the broker should do "now" (a packet, a close).
SOON = 3.0


class Client5(RawClient):
    """A protocol level 5 :class:`RawClient` with the v5 suite's recurring expectations."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        super().__init__(host, port, version=V5, timeout=timeout)
        self.connack: Connack | None = None

    # -- connecting -----------------------------------------------------------------------------

    def connect5(self, client_id: str = "", ok: bool = True, **fields: Any) -> Connack:
        """CONNECT (fields as in :class:`Connect`); with ``ok`` the CONNACK must be a success."""
        fields.setdefault("keep_alive", 0)
        connack = self.connect(client_id, **fields)
        self.connack = connack
        if ok:
            assert connack.reason_code == 0x00, f"CONNECT refused: {connack!r}"
        return connack

    # -- receiving out of order -----------------------------------------------------------------

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

    def no_publish(self, timeout: float = 0.5) -> None:
        """Assert no PUBLISH arrives within ``timeout`` (other packets stay queued)."""
        try:
            packet = self.wait_for(Publish, timeout)
        except (TimeoutError, Closed):
            return
        raise AssertionError(f"expected no PUBLISH, got {packet!r}")

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
        pid = self.next_packet_id()
        self.send(Unsubscribe(pid, list(topic_filters)))
        unsuback: Unsuback = self.wait_for(Unsuback)
        assert unsuback.packet_id == pid, f"UNSUBACK for {unsuback.packet_id}, expected {pid}"
        return unsuback

    def pub(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        properties: dict[int, Any] | None = None,
        dup: bool = False,
    ) -> Packet | None:
        """PUBLISH and complete the flow; returns the PUBACK, PUBCOMP or failing PUBREC."""
        pid = self.next_packet_id() if qos else None
        self.send(Publish(topic, payload, qos, retain, dup, pid, properties or {}))
        if qos == 1:
            puback: Puback = self.wait_for(Puback)
            assert puback.packet_id == pid
            return puback
        if qos == 2:
            pubrec: Pubrec = self.wait_for(Pubrec)
            assert pubrec.packet_id == pid
            if pubrec.reason_code >= 0x80:
                return pubrec
            self.send(Pubrel(pid or 0))
            pubcomp: Pubcomp = self.wait_for(Pubcomp)
            assert pubcomp.packet_id == pid
            return pubcomp
        return None

    def ack(self, publish: Publish) -> None:
        """Acknowledge a received PUBLISH completely; other packets arriving meanwhile stay
        queued (unlike :meth:`RawClient.ack`)."""
        if publish.qos == 1:
            self.send(Puback(publish.packet_id or 0))
        elif publish.qos == 2:
            self.send(Pubrec(publish.packet_id or 0))
            pubrel: Pubrel = self.wait_for(Pubrel)
            assert pubrel.packet_id == publish.packet_id, pubrel
            self.send(Pubcomp(publish.packet_id or 0))

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


class Clients:
    """Opens :class:`Client5` connections to one running broker; closes them all on exit."""

    def __init__(self, running: Any) -> None:
        self.host: str = running.host
        self.port: int = running.port
        self.opened: list[Client5] = []

    def open(self) -> Client5:
        client = Client5(self.host, self.port)
        self.opened.append(client)
        return client

    def connect(self, client_id: str = "", **fields: Any) -> Client5:
        """A connected client (``fields`` as in :class:`Connect`); the CONNECT must succeed."""
        client = self.open()
        client.connect5(client_id, **fields)
        return client

    def close(self) -> None:
        for client in self.opened:
            client.close()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- wire-level helpers -----------------------------------------------------------------------


class _Tap:
    """A socket stand-in that records every byte received through it."""

    def __init__(self, sock: socket.socket, log: bytearray) -> None:
        self._sock = sock
        self._log = log

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self._log += data
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def tap(client: RawClient) -> bytearray:
    """From now on, every byte ``client`` receives is also appended to the returned bytearray."""
    log = bytearray()
    client.sock = _Tap(client.sock, log)  # type: ignore[assignment]
    return log


def frames(data: bytes | bytearray) -> list[bytes]:
    """Split a received byte stream into whole packets (fixed header included).

    Also checks MQTT-1.5.5-1 on every Remaining Length: the fewest bytes for the value.
    """
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        start = pos
        pos += 1
        length, shift, count = 0, 0, 0
        while True:
            byte = data[pos]
            pos += 1
            count += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        assert len(varint(length)) == count, (
            f"MQTT-1.5.5-1: Remaining Length {length} sent in {count} bytes "
            f"({bytes(data[start + 1 : start + 1 + count]).hex()})"
        )
        out.append(bytes(data[start : pos + length]))
        pos += length
    assert pos == len(data), "a partial packet at the end of the stream"
    return out


def wait_until(predicate: Any, timeout: float = SOON, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)


# -- hand-built v5 properties (for packets the codec will not encode) -------------------------


def props(*encoded: bytes) -> bytes:
    """A v5 property block: the Property Length, then the given encoded properties."""
    body = b"".join(encoded)
    return varint(len(body)) + body


def p_byte(ident: int, value: int) -> bytes:
    return bytes([ident, value])


def p_u16(ident: int, value: int) -> bytes:
    return bytes([ident]) + value.to_bytes(2, "big")


def p_u32(ident: int, value: int) -> bytes:
    return bytes([ident]) + value.to_bytes(4, "big")


def p_varint(ident: int, value: int) -> bytes:
    return bytes([ident]) + varint(value)


def p_str(ident: int, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return bytes([ident]) + len(data).to_bytes(2, "big") + data


def p_pair(name: str | bytes, value: str | bytes) -> bytes:
    n = name.encode() if isinstance(name, str) else name
    v = value.encode() if isinstance(value, str) else value
    return (
        bytes([Prop.USER_PROPERTY]) + len(n).to_bytes(2, "big") + n + len(v).to_bytes(2, "big") + v
    )


def raw_ack(first_byte: int, packet_id: int, reason: int | None = None, body: bytes = b"") -> bytes:
    """PUBACK/PUBREC/PUBREL/PUBCOMP bytes (``reason`` None: the 2-byte short form)."""
    data = packet_id.to_bytes(2, "big")
    if reason is not None:
        data += bytes([reason]) + (body or b"\x00")
    return raw_packet(first_byte, data)


def raw_until_closed(client: RawClient, timeout: float = SOON) -> bytes:
    """Every byte the broker sends until it closes, read from the socket without the decoder
    (for answers that need not be v5 packets, e.g. to an unsupported protocol version)."""
    assert not client.pending, "packets already decoded"
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"still open after {timeout} s (received {data.hex()})")
        client.sock.settimeout(remaining)
        try:
            chunk = client.sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            client.closed = True
            return data
        data += chunk
