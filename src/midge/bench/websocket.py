"""``midge bench --websocket``: the generator's MQTT connections over WebSocket.

:class:`WebSocketClient` is the socket's asyncio protocol in front of a generator
:class:`~midge.bench.worker.Client`: it makes the upgrade request (subprotocol ``mqtt``) with the
``websockets`` package's sans-IO ClientProtocol, then hands the client the payload of every
binary frame and gives it a :class:`FramingTransport`, whose every write (a batch of packets, as
the generator writes them) goes out as one masked binary frame. The generator's own cost per
write is one frame; the broker's is what the row measures.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

_BINARY = Opcode.BINARY
_CONT = Opcode.CONT


class FramingTransport(asyncio.Transport):
    """What the generator's client writes to: each write is one binary frame on the socket."""

    def __init__(self, socket: asyncio.Transport, protocol: ClientProtocol) -> None:
        super().__init__()
        self.socket = socket
        self.protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        protocol = self.protocol
        protocol.send_binary(data)
        socket = self.socket
        for chunk in protocol.data_to_send():
            if chunk:
                socket.write(chunk)

    def get_write_buffer_size(self) -> int:
        return self.socket.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.socket.set_write_buffer_limits(high, low)

    def is_closing(self) -> bool:
        return self.socket.is_closing()

    def close(self) -> None:
        self.socket.close()

    def abort(self) -> None:
        self.socket.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.socket.get_extra_info(name, default)


class WebSocketClient(asyncio.Protocol):
    """The socket's protocol: the upgrade, then frames to and from ``app`` (see the module)."""

    def __init__(self, app: asyncio.Protocol, host: str, port: int) -> None:
        self.app = app
        shown = f"[{host}]" if ":" in host else host
        self.protocol = ClientProtocol(
            parse_uri(f"ws://{shown}:{port}/mqtt"),
            subprotocols=[Subprotocol("mqtt")],
            max_size=None,
        )
        self.socket: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.socket = cast(asyncio.Transport, transport)
        self.protocol.send_request(self.protocol.connect())
        self._send()

    def _send(self) -> None:
        assert self.socket is not None
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.socket.write(chunk)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        app = self.app
        for event in protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode is _BINARY or event.opcode is _CONT:
                    app.data_received(event.data)  # type: ignore[arg-type]
            elif isinstance(event, Response) and not self.upgraded.done():
                if protocol.handshake_exc is not None:
                    self.upgraded.set_exception(
                        OSError(f"WebSocket upgrade refused: {protocol.handshake_exc}")
                    )
                    return
                assert self.socket is not None
                app.connection_made(FramingTransport(self.socket, protocol))
                self.upgraded.set_result(None)
        self._send()  # pongs, the answer to a close frame

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(OSError("closed during the WebSocket upgrade"))
            return
        self.app.connection_lost(exc)
