"""Closing so that the client hears why (issue 11): after its last packet (DISCONNECT, a refusing
CONNACK) midge half-closes and reads what the client still sends until it closes too, or for
:data:`~midge.transport.writer.LINGER` seconds. Closing at once, while the client is still
sending, makes the kernel answer with RST, and the client loses the packet that said why.

Real sockets: the RST is the kernel's. The client here keeps sending, without reading, until it
sees the broker's EOF.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from midge.codec import Decoder, encode
from midge.codec.packets import Connack, Connect, Disconnect, Packet, Publish
from midge.codec.reasons import ConnackV3, Reason
from midge.transport.writer import LINGER, CoalescingTransport, TurnWrites
from tests.conftest import RunningBroker

V5 = 5
#: PUBLISHes the client sends in one burst: well beyond any Receive Maximum, and enough that
#: closing without draining them resets the connection.
BURST = 2000


@pytest.fixture
def sockets() -> Iterator[Callable[[RunningBroker], socket.socket]]:
    opened: list[socket.socket] = []

    def open_socket(broker: RunningBroker) -> socket.socket:
        sock = socket.create_connection((broker.host, broker.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        opened.append(sock)
        return sock

    yield open_socket
    for sock in opened:
        sock.close()


def flood(sock: socket.socket, data: bytes, timeout: float = 5.0) -> tuple[bytes, OSError | None]:
    """Send ``data`` over and over (a stream of whole packets), reading only what has arrived,
    until the broker's EOF (or an error, or ``timeout``). Returns what was received and the
    error, if any."""
    sock.setblocking(False)
    received = bytearray()
    deadline = time.monotonic() + timeout
    out = memoryview(data)
    try:
        while time.monotonic() < deadline:
            try:
                out = out[sock.send(out) :] or memoryview(data)
            except BlockingIOError:
                time.sleep(0.001)
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                return bytes(received), None
            received += chunk
        raise AssertionError(f"still open after {timeout} s")
    except (ConnectionResetError, BrokenPipeError) as exc:
        return bytes(received), exc
    finally:
        sock.setblocking(True)


def packets(data: bytes, version: int) -> list[Packet]:
    return Decoder(version=version).feed(data)


def publishes(count: int) -> bytes:
    """QoS 2 PUBLISHes: each holds a slot of the Receive Maximum until its PUBREL."""
    return b"".join(
        encode(Publish("t/close", b"x" * 64, qos=2, packet_id=i % 65535 + 1), V5)
        for i in range(count)
    )


def connect_v5(sock: socket.socket, client_id: str) -> None:
    sock.sendall(encode(Connect(client_id, protocol_level=V5), V5))


def test_receive_maximum_exceeded_is_told_before_eof(
    make_broker: Callable[..., RunningBroker],
    sockets: Callable[[RunningBroker], socket.socket],
) -> None:
    broker = make_broker(max_inflight_messages=2)
    sock = sockets(broker)
    connect_v5(sock, "flooder")
    burst = publishes(BURST)
    received, error = flood(sock, burst)
    assert error is None, f"reset instead of closed: {error!r}"
    got = packets(received, V5)
    assert isinstance(got[0], Connack) and got[0].reason_code == 0
    assert isinstance(got[-1], Disconnect), got[-3:]
    assert got[-1].reason_code == Reason.RECEIVE_MAXIMUM_EXCEEDED


@pytest.mark.parametrize("version", [4, V5])
def test_refusing_connack_is_read_though_the_client_sends_on(
    make_broker: Callable[..., RunningBroker],
    sockets: Callable[[RunningBroker], socket.socket],
    version: int,
) -> None:
    """Not authorized (no anonymous clients): the CONNACK says so, however much follows."""
    broker = make_broker(allow_anonymous=False, local_only=False)
    sock = sockets(broker)
    sock.sendall(encode(Connect("refused", protocol_level=version), version))
    received, error = flood(sock, publishes(BURST) if version == V5 else b"\xc0\x00" * 5000)
    assert error is None, f"reset instead of closed: {error!r}"
    got = packets(received, version)
    assert len(got) == 1 and isinstance(got[0], Connack), got
    wanted = Reason.NOT_AUTHORIZED if version == V5 else ConnackV3.NOT_AUTHORIZED
    assert got[0].reason_code == wanted


def test_unsupported_protocol_version_is_answered_before_eof(
    make_broker: Callable[..., RunningBroker],
    sockets: Callable[[RunningBroker], socket.socket],
) -> None:
    broker = make_broker()
    sock = sockets(broker)
    sock.sendall(encode(Connect("old", protocol_level=4), 4)[:8] + b"\x09" + b"\x02\x00\x3c")
    received, error = flood(sock, b"\xc0\x00" * 5000)
    assert error is None, f"reset instead of closed: {error!r}"
    got = packets(received, 4)
    assert len(got) == 1 and isinstance(got[0], Connack), got
    assert got[0].reason_code == ConnackV3.UNACCEPTABLE_PROTOCOL_VERSION


def lingering(broker: RunningBroker) -> int:
    writes = broker.server.writes
    assert writes is not None
    return int(broker.call(lambda: len(writes.lingering)))


def active(broker: RunningBroker) -> int:
    return int(broker.call(lambda: broker.server.listeners[0].active))


def test_a_client_that_never_closes_is_closed_after_the_linger(
    make_broker: Callable[..., RunningBroker],
    sockets: Callable[[RunningBroker], socket.socket],
) -> None:
    broker = make_broker(max_inflight_messages=1)
    sock = sockets(broker)
    connect_v5(sock, "holder")
    sock.sendall(publishes(3))
    sock.settimeout(5)
    received = b""
    while True:  # read up to the broker's EOF (its half-close); this side stays open
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    closed = time.monotonic()
    got = packets(received, V5)
    assert isinstance(got[-1], Disconnect)
    assert got[-1].reason_code == Reason.RECEIVE_MAXIMUM_EXCEEDED
    # The connection is gone for the counts at once; the socket lingers, reading what comes.
    assert active(broker) == 0
    assert lingering(broker) == 1
    sock.sendall(publishes(10))  # discarded: no RST, the socket still reads
    while lingering(broker) and time.monotonic() < closed + LINGER + 2:
        time.sleep(0.05)
    assert lingering(broker) == 0
    assert time.monotonic() - closed >= LINGER - 0.5, "closed before the linger was over"
    # Now the socket is gone: the kernel resets what the client sends.
    with pytest.raises(OSError) as caught:
        for _ in range(50):
            sock.sendall(publishes(10))
            time.sleep(0.02)
    assert caught.value.errno in (errno.ECONNRESET, errno.EPIPE)


def test_stop_aborts_lingering_sockets_promptly(
    make_broker: Callable[..., RunningBroker],
    sockets: Callable[[RunningBroker], socket.socket],
) -> None:
    broker = make_broker()
    sock = sockets(broker)
    connect_v5(sock, "stays")
    sock.settimeout(5)
    assert isinstance(packets(sock.recv(65536), V5)[0], Connack)
    started = time.monotonic()
    broker.stop()  # DISCONNECT 0x8B, then the socket lingers: the client does not close
    assert time.monotonic() - started < LINGER / 2
    got = packets(sock.recv(65536), V5)
    assert isinstance(got[0], Disconnect) and got[0].reason_code == Reason.SERVER_SHUTTING_DOWN


def test_closing_after_the_peer_reset_does_not_raise() -> None:
    """The peer reset the connection (RST) before the loop read it: ``write_eof`` fails with
    ENOTCONN. Closing then aborts the socket at once, and the connection is told it is lost.
    (Seen in CI: a broker stopping while an OAuth test client had just reset.)"""

    async def scenario() -> tuple[list[Exception | None], int]:
        loop = asyncio.get_running_loop()
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname(), timeout=5)
        accepted, _ = server.accept()
        server.close()
        lost: list[Exception | None] = []

        class Recorder(asyncio.Protocol):
            def connection_lost(self, exc: Exception | None) -> None:
                lost.append(exc)

        transport, _ = await loop.connect_accepted_socket(Recorder, accepted)
        turn = TurnWrites(loop)
        writer = CoalescingTransport(transport, turn)
        # RST from the client; no await until close(), so the loop has not read it.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        writer.close()
        for _ in range(5):
            await asyncio.sleep(0)
        return lost, len(turn.lingering)

    lost, lingering = asyncio.run(scenario())
    assert lost == [None]
    assert lingering == 0
