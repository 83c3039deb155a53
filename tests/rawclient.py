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
