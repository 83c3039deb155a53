"""The PROXY protocol: a load balancer (HAProxy, ``send-proxy`` / ``send-proxy-v2``) tells the
broker who the client really is, in a header sent before the first byte of the client's stream.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt. On a listener with
``enable_proxy_protocol 1`` (the text header, v1) or ``2`` (the binary header, v2), as in
Mosquitto 2.1:

- the header is read before anything else, and before the TLS handshake on a TLS listener (the
  proxy passes the client's TLS through in TCP mode): midge reads exactly the header's bytes from
  the accepted socket (v1: peeking for its CRLF; v2: its length is in its first 16 bytes), then
  hands the socket to asyncio (``connect_accepted_socket``, with the listener's TLS context), so
  the first byte asyncio or TLS sees is the client's own;
- a connection without a valid header (a client speaking MQTT straight away, a malformed or
  oversized header, one that does not arrive within ``connect_timeout``) is closed and logged;
- the address it gives is the client's address everywhere: the connection limits
  (``max_connection_rate``), the log lines, the authentication plugins' ``peer``;
- v2's LOCAL command (the proxy's own connections, e.g. health checks) and v1's UNKNOWN / v2's
  UNSPEC family keep the socket's own address, as the spec asks;
- v2's TLS information (``send-proxy-v2-ssl``, ``send-proxy-v2-ssl-cn``) stands for the TLS the
  proxy terminated: ``proxy_protocol_v2_require_tls`` refuses clients that did not use TLS,
  ``require_certificate`` those without a verified certificate, and ``use_identity_as_username``
  takes the certificate's CN from it.

:func:`parse_v1` and :func:`parse_v2` are sans-IO (bytes in, :class:`Origin` or
:class:`ProxyError` out); :func:`read_header` reads one header from a socket;
:class:`ProxyServer` accepts the connections of such a listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from midge.config import ListenerConfig

log = logging.getLogger("midge.transport")

#: v2's 12-byte signature (the spec's section 2.2).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: v1: the longest header line, CRLF included (TCP6 with the longest addresses and ports).
V1_MAX = 107
#: v2: the most bytes after the 16-byte head that midge accepts (addresses and TLVs; HAProxy's
#: headers stay well under it); a longer header is refused.
V2_MAX_BODY = 2048
#: Connections of one listener that may be waiting for their header at once; more are closed.
MAX_PENDING = 1024

# v2 command, family and TLV codes (spec 2.2).
CMD_LOCAL = 0x0
CMD_PROXY = 0x1
FAMILY_UNSPEC, FAMILY_INET, FAMILY_INET6, FAMILY_UNIX = 0x0, 0x1, 0x2, 0x3
TRANSPORT_UNSPEC, TRANSPORT_STREAM, TRANSPORT_DGRAM = 0x0, 0x1, 0x2
ADDRESS_SIZES = {FAMILY_UNSPEC: 0, FAMILY_INET: 12, FAMILY_INET6: 36, FAMILY_UNIX: 216}
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04


class ProxyError(ValueError):
    """The header is missing or invalid; the message says why (for the log line)."""


class Origin:
    """What a PROXY header says about the connection.

    ``host``/``port``: the client's address; None when the header says to keep the socket's own
    (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC). ``local``: a v2 LOCAL command (the proxy's own connection).
    ``tls``: the client spoke TLS to the proxy (v2 PP2_CLIENT_SSL); ``cert_verified``: it
    presented a certificate that the proxy verified; ``common_name``: that certificate's CN
    (``send-proxy-v2-ssl-cn``); ``cipher`` as the proxy reports it."""

    __slots__ = ("cert_verified", "cipher", "common_name", "host", "local", "port", "tls")

    def __init__(self, host: str | None = None, port: int = 0, local: bool = False) -> None:
        self.host = host
        self.port = port
        self.local = local
        self.tls = False
        self.cert_verified = False
        self.common_name: str | None = None
        self.cipher: str | None = None

    @property
    def peer(self) -> str | None:
        """``host:port`` as midge's log lines name a client, or None: the socket's own."""
        if self.host is None:
            return None
        return f"{self.host}:{self.port}" if self.port else self.host

    def __repr__(self) -> str:
        return f"Origin({self.peer!r}, local={self.local}, tls={self.tls})"


# -- v1 ----------------------------------------------------------------------------------------


def _v1_port(text: bytes) -> int:
    # Decimal, no sign, no leading zero (spec 2.1); Mosquitto also refuses port 0.
    if not text.isdigit() or (len(text) > 1 and text[0:1] == b"0"):
        raise ProxyError(f"bad port {text[:8]!r}")
    port = int(text)
    if not 0 < port <= 65535:
        raise ProxyError(f"port {port} out of range")
    return port


def parse_v1(line: bytes) -> Origin:
    """A v1 header line, ``PROXY TCP4|TCP6|UNKNOWN ... CRLF`` (CRLF included)."""
    if len(line) > V1_MAX:
        raise ProxyError(f"v1 header longer than {V1_MAX} bytes")
    if not line.endswith(b"\r\n"):
        raise ProxyError("v1 header without CRLF")
    words = line[:-2].split(b" ")
    if words[0] != b"PROXY" or len(words) < 2:
        raise ProxyError("not a v1 header (no 'PROXY ')")
    proto = words[1]
    if proto == b"UNKNOWN":
        return Origin()  # the rest of the line is ignored (spec 2.1)
    if proto not in (b"TCP4", b"TCP6"):
        raise ProxyError(f"unknown v1 protocol {proto[:8]!r}")
    if len(words) != 6:
        raise ProxyError(f"v1 {proto.decode()} header needs 4 fields, got {len(words) - 2}")
    version = 4 if proto == b"TCP4" else 6
    addresses: list[str] = []
    for text in words[2:4]:
        try:
            address = ipaddress.ip_address(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise ProxyError(f"bad {proto.decode()} address {text[:40]!r}") from None
        if address.version != version:
            raise ProxyError(f"bad {proto.decode()} address {text[:40]!r}")
        addresses.append(str(address))
    _v1_port(words[5])  # the destination port: checked, not used
    return Origin(addresses[0], _v1_port(words[4]))


def v1_line_end(data: bytes) -> int:
    """The length of the v1 header at the start of ``data`` (CRLF included), 0 if incomplete;
    a ProxyError as soon as ``data`` cannot start a v1 header (so a client speaking MQTT straight
    away is refused at its first byte, not after a timeout)."""
    head = data[:6]
    if head != b"PROXY "[: len(head)]:
        raise ProxyError("no PROXY v1 header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end >= 0:
        return end + 2
    if len(data) >= V1_MAX:
        raise ProxyError(f"v1 header longer than {V1_MAX} bytes")
    return 0


# -- v2 ----------------------------------------------------------------------------------------


def v2_length(head: bytes) -> int:
    """The whole v2 header's length from its first 16 bytes, checked: signature, version 2, a
    known command, family and transport, and a length midge accepts."""
    n = min(len(head), 12)
    if head[:n] != V2_SIGNATURE[:n]:
        raise ProxyError("no PROXY v2 header (bad signature)")
    if len(head) < 16:
        return 0
    ver_cmd, fam, length = head[12], head[13], int.from_bytes(head[14:16], "big")
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"PROXY v2 header with version {ver_cmd >> 4}")
    if ver_cmd & 0xF not in (CMD_LOCAL, CMD_PROXY):
        raise ProxyError(f"PROXY v2 header with unknown command {ver_cmd & 0xF}")
    family, transport = fam >> 4, fam & 0xF
    if family not in ADDRESS_SIZES or transport > TRANSPORT_DGRAM:
        raise ProxyError(f"PROXY v2 header with unknown family/transport 0x{fam:02x}")
    if length > V2_MAX_BODY:
        raise ProxyError(f"PROXY v2 header of {length} bytes (at most {V2_MAX_BODY})")
    if ver_cmd & 0xF == CMD_PROXY and length < ADDRESS_SIZES[family]:
        raise ProxyError(f"PROXY v2 address block of {length} bytes, too short for its family")
    return 16 + length


def parse_v2(header: bytes) -> Origin:
    """A whole v2 header (16-byte head, address block, TLVs)."""
    total = v2_length(header[:16])
    if total == 0 or len(header) != total:
        raise ProxyError("truncated PROXY v2 header")
    command, fam = header[12] & 0xF, header[13]
    family, transport = fam >> 4, fam & 0xF
    body = memoryview(header)[16:]
    if command == CMD_LOCAL:
        # The proxy's own connection: keep the real endpoints, ignore the rest (spec 2.2).
        return Origin(local=True)
    if transport == TRANSPORT_DGRAM:
        raise ProxyError("PROXY v2 header for a datagram connection")
    origin = Origin()
    if family == FAMILY_INET:
        origin.host = socket.inet_ntop(socket.AF_INET, bytes(body[0:4]))
        origin.port = int.from_bytes(body[8:10], "big")
    elif family == FAMILY_INET6:
        address = ipaddress.IPv6Address(bytes(body[0:16]))
        mapped = address.ipv4_mapped
        origin.host = str(mapped if mapped is not None else address)
        origin.port = int.from_bytes(body[32:34], "big")
    elif family == FAMILY_UNIX:
        path = bytes(body[0:108]).split(b"\0", 1)[0]
        origin.host = path.decode("utf-8", "replace") or "unix-socket"
    # FAMILY_UNSPEC: unknown protocol; the socket's own address stays (spec 2.2).
    _read_tlvs(body[ADDRESS_SIZES[family] :], origin)
    return origin


def _tlvs(data: memoryview) -> list[tuple[int, memoryview]]:
    found: list[tuple[int, memoryview]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 3:
            raise ProxyError("PROXY v2 header with a truncated TLV")
        kind, length = data[pos], int.from_bytes(data[pos + 1 : pos + 3], "big")
        pos += 3
        if length > len(data) - pos:
            raise ProxyError("PROXY v2 header with a TLV longer than the header")
        found.append((kind, data[pos : pos + length]))
        pos += length
    return found


def _text(value: memoryview, what: str) -> str:
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise ProxyError(f"PROXY v2 {what} is not UTF-8") from None
    if "\0" in text:
        raise ProxyError(f"PROXY v2 {what} holds a NUL character")
    return text


def _read_tlvs(data: memoryview, origin: Origin) -> None:
    for kind, value in _tlvs(data):
        if kind != PP2_TYPE_SSL:
            continue  # ALPN, AUTHORITY, CRC32C, NOOP, UNIQUE_ID, NETNS...: not used
        if len(value) < 5:
            raise ProxyError("PROXY v2 SSL TLV shorter than 5 bytes")
        client, verify = value[0], int.from_bytes(value[1:5], "big")
        origin.tls = bool(client & PP2_CLIENT_SSL)
        # verify is 0 when the client presented a certificate and it was verified (spec 2.2.5).
        presented = client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS)
        origin.cert_verified = origin.tls and bool(presented) and verify == 0
        for sub, sub_value in _tlvs(value[5:]):
            if sub == PP2_SUBTYPE_SSL_CN:
                origin.common_name = _text(sub_value, "certificate CN")
            elif sub == PP2_SUBTYPE_SSL_CIPHER:
                origin.cipher = _text(sub_value, "cipher")


# -- reading one header from a socket ----------------------------------------------------------


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    waiter: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await waiter
    finally:
        loop.remove_reader(fd)


async def _recv(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int, flags: int) -> bytes:
    """Up to ``n`` bytes once the socket is readable; a ProxyError at end of stream."""
    while True:
        await _readable(loop, sock)
        try:
            data = sock.recv(n, flags)
        except (BlockingIOError, InterruptedError):
            continue
        if not data:
            raise ProxyError("connection closed before the end of the PROXY header")
        return data


async def read_header(sock: socket.socket, version: int) -> Origin:
    """Read exactly one PROXY header of ``version`` (1 or 2) from the non-blocking ``sock``:
    not one byte more, so what follows (MQTT, or the TLS handshake) stays in the socket."""
    loop = asyncio.get_running_loop()
    data = b""
    if version == 1:
        while True:
            # Peek, so that a header's end found in the middle of what arrived takes only the
            # header; what was peeked without an end is all header and is taken.
            peeked = await _recv(loop, sock, V1_MAX - len(data), socket.MSG_PEEK)
            end = v1_line_end(data + peeked)
            take = end - len(data) if end else len(peeked)
            data += sock.recv(take)
            if end:
                return parse_v1(data)
    while True:
        total = v2_length(data[:16])  # 0 until the first 16 bytes are in
        want = (total or 16) - len(data)
        if want == 0:
            return parse_v2(data)
        data += await _recv(loop, sock, want, 0)


# -- the accepting side ------------------------------------------------------------------------


class ProxyServer:
    """Accepts a PROXY protocol listener's connections in asyncio's place: the listening sockets
    are those the asyncio server ``inner`` bound (so addresses, interfaces, Unix sockets and
    SO_REUSEPORT are set up as for any listener), but the connections are accepted here, their
    header read, and only then given to ``handoff(sock, origin)``, which makes the transport.

    It stands in for the ``asyncio.Server`` (``sockets``, ``start_serving``, ``close``,
    ``wait_closed``). A connection whose header is refused is closed and logged here."""

    def __init__(
        self,
        inner: asyncio.Server,
        version: int,
        timeout: Callable[[], float],
        handoff: Callable[[socket.socket, Origin], Any],
    ) -> None:
        self.inner = inner
        self.version = version
        self.timeout = timeout
        self.handoff = handoff
        self._listening: list[socket.socket] = []
        self._pending: dict[asyncio.Task[None], socket.socket] = {}

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self.inner.sockets)

    async def start_serving(self) -> None:
        loop = asyncio.get_running_loop()
        for bound in self.inner.sockets:
            sock = socket.socket(fileno=os.dup(bound.fileno()))
            sock.setblocking(False)
            sock.listen(4096)
            self._listening.append(sock)
            loop.add_reader(sock.fileno(), self._accept, loop, sock)

    def _accept(self, loop: asyncio.AbstractEventLoop, listening: socket.socket) -> None:
        """The listening socket is readable: accept what is waiting (a bounded batch)."""
        for _ in range(64):
            try:
                sock, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: pause a little, as asyncio does
                log.warning("accepting on a PROXY protocol listener: %s", exc)
                fd = listening.fileno()
                loop.remove_reader(fd)
                loop.call_later(0.1, self._resume, loop, listening)
                return
            if len(self._pending) >= MAX_PENDING:
                _refuse(sock, "too many connections waiting for their PROXY header")
                continue
            sock.setblocking(False)
            task = loop.create_task(self._header(sock))
            self._pending[task] = sock
            task.add_done_callback(self._done)

    def _resume(self, loop: asyncio.AbstractEventLoop, listening: socket.socket) -> None:
        if listening in self._listening:
            loop.add_reader(listening.fileno(), self._accept, loop, listening)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.pop(task, None)

    async def _header(self, sock: socket.socket) -> None:
        try:
            async with asyncio.timeout(self.timeout()):
                origin = await read_header(sock, self.version)
        except TimeoutError:
            _refuse(sock, f"no PROXY v{self.version} header within {self.timeout():g} s")
            return
        except ProxyError as exc:
            _refuse(sock, str(exc))
            return
        except OSError as exc:
            _refuse(sock, f"reading the PROXY header: {exc}")
            return
        except asyncio.CancelledError:  # the listener closes
            sock.close()
            raise
        # From here the socket is the transport's (closed by it, also when cancelled).
        await self.handoff(sock, origin)

    def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._listening:
            loop = asyncio.get_running_loop()
            for sock in self._listening:
                loop.remove_reader(sock.fileno())
                sock.close()
            self._listening.clear()
        self.inner.close()

    async def wait_closed(self) -> None:
        tasks = list(self._pending)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.inner.wait_closed()


def refusal(listener: ListenerConfig, origin: Origin) -> str | None:
    """Why ``listener`` refuses a connection whose header said ``origin`` (None: accepted).

    The TLS the proxy terminated stands for the listener's own when the listener has none:
    ``proxy_protocol_v2_require_tls`` wants the header's TLS flag, ``require_certificate`` a
    certificate the proxy verified (Mosquitto 2.1 refuses these at the header too)."""
    if listener.proxy_protocol_v2_require_tls and not origin.tls:
        return "client did not connect using TLS"
    if listener.require_certificate and not listener.tls and not origin.cert_verified:
        return "client did not provide a verified certificate"
    return None


def peer_of(sock: socket.socket) -> str:
    """The socket's own peer, for the log line of a connection refused before its header."""
    try:
        name = sock.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return "unix-socket"


def _refuse(sock: socket.socket, why: str) -> None:
    log.info("connection from %s refused: %s", peer_of(sock), why)
    with contextlib.suppress(OSError):
        sock.close()
