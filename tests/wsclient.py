"""A WebSocket client socket for the tests: :class:`WsSocket` speaks WebSocket with the
``websockets`` package's sans-IO client protocol over a real (TLS) socket and looks like a socket
to :class:`tests.rawclient.RawClient` (``sendall`` sends one binary frame, ``recv`` returns the
payload of the binary frames received), so every RawClient helper works over a WebSocket
listener too (:func:`raw_ws`). ``frames``/``close_code`` show what happened at the WebSocket level.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from tests.rawclient import RawClient


class WsSocket:
    """A connected WebSocket (see the module)."""

    def __init__(
        self,
        host: str,
        port: int,
        subprotocols: list[str] | None = None,
        context: ssl.SSLContext | None = None,
        timeout: float = 5.0,
        path: str = "/mqtt",
        headers: dict[str, str] | None = None,
    ) -> None:
        scheme = "wss" if context is not None else "ws"
        self.protocol = ClientProtocol(
            parse_uri(f"{scheme}://{host}:{port}{path}"),
            subprotocols=[
                Subprotocol(s) for s in (["mqtt"] if subprotocols is None else subprotocols)
            ]
            or None,
            max_size=None,
        )
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = (
            context.wrap_socket(raw, server_hostname=host) if context is not None else raw
        )
        self.buffer = bytearray()
        #: Every frame received (control frames included).
        self.frames: list[Frame] = []
        self.eof = False
        request = self.protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()
        #: The server's handshake response.
        self.response: Response | None = None
        while self.response is None:
            data = self.sock.recv(65536)
            if not data:
                self.protocol.receive_eof()
                break
            self.protocol.receive_data(data)
            self._events()
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc

    @property
    def subprotocol(self) -> str | None:
        return self.protocol.subprotocol

    @property
    def close_code(self) -> int | None:
        """The code of the server's close frame (None: none received)."""
        for frame in self.frames:
            if frame.opcode is Opcode.CLOSE:
                return int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else 1005
        return None

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def _events(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self.response = event
            elif isinstance(event, Frame):
                self.frames.append(event)
                if event.opcode in (Opcode.BINARY, Opcode.CONT):
                    self.buffer += event.data
        self._flush()  # pongs, the close frame's answer

    # -- the socket interface RawClient uses ----------------------------------------------------

    def sendall(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        self._flush()

    def send_frame(self, opcode: Opcode, data: bytes, fin: bool = True) -> None:
        """Any frame (text, a fragment, a ping)."""
        if opcode is Opcode.TEXT:
            self.protocol.send_text(data, fin)
        elif opcode is Opcode.CONT:
            self.protocol.send_continuation(data, fin)
        elif opcode is Opcode.PING:
            self.protocol.send_ping(data)
        elif opcode is Opcode.CLOSE:
            self.protocol.send_close(int.from_bytes(data[:2], "big"), data[2:].decode())
        else:
            self.protocol.send_binary(data, fin)
        self._flush()

    def recv(self, size: int) -> bytes:
        while not self.buffer and not self.eof:
            data = self.sock.recv(65536)
            if not data:
                self.eof = True
                self.protocol.receive_eof()
            else:
                self.protocol.receive_data(data)
            self._events()
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def raw_ws(
    host: str,
    port: int,
    version: int = 4,
    context: ssl.SSLContext | None = None,
    subprotocols: list[str] | None = None,
) -> RawClient:
    """A :class:`RawClient` over a WebSocket (its ``sock`` is the :class:`WsSocket`)."""
    ws = WsSocket(host, port, subprotocols, context)
    client = RawClient(ws.sock, version=version)
    client.sock = ws  # type: ignore[assignment]
    return client
