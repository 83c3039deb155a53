"""MQTT over WebSocket for :class:`midge.client.Client` (``transport="websockets"``, or a
``ws://`` / ``wss://`` URL): the ``websockets`` package's sans-IO :class:`ClientProtocol` over
an asyncio stream, behind the stream interface the client already uses.

:func:`open_websocket` connects (TLS for wss), sends the upgrade request asking for the ``mqtt``
subprotocol (MQTT-6.0.0-3) and checks the answer. :class:`WebSocketReader` then hands out the
payload of the binary frames received (MQTT packets may span frames, the client's decoder does
not care), answering pings on the way; :class:`WebSocketWriter` sends each write as one binary
frame (masked, as a client must) and closes with the closing handshake's close frame.
"""

from __future__ import annotations

import asyncio
import ssl

from websockets.client import ClientProtocol
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from midge.client.errors import ConnectionLost

#: The path of the upgrade request when none is given (Mosquitto serves any path).
DEFAULT_PATH = "/mqtt"


class WebSocketWriter:
    """The writing side of a WebSocket connection, shaped like :class:`asyncio.StreamWriter`."""

    def __init__(self, writer: asyncio.StreamWriter, protocol: ClientProtocol) -> None:
        self.writer = writer
        self.protocol = protocol

    @property
    def transport(self) -> asyncio.WriteTransport:
        return self.writer.transport

    def flush(self) -> None:
        """Write what the protocol has to send; its end-of-stream marker half-closes."""
        writer = self.writer
        for chunk in self.protocol.data_to_send():
            if chunk:
                writer.write(chunk)
            elif writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()

    def write(self, data: bytes) -> None:
        if self.protocol.state is not State.OPEN:
            raise ConnectionResetError("the WebSocket is closing")
        self.protocol.send_binary(data)
        self.flush()

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        """A close frame (1000), then the socket closes once it is written."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(CloseCode.NORMAL_CLOSURE)
            self.flush()
        self.writer.close()

    async def wait_closed(self) -> None:
        await self.writer.wait_closed()


class WebSocketReader:
    """The reading side, shaped like :class:`asyncio.StreamReader`'s ``read``: the payload of
    binary frames, b"" once the server has closed."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: WebSocketWriter, pending: bytes = b""
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray(pending)
        self.eof = False

    async def read(self, n: int = -1) -> bytes:
        protocol = self.writer.protocol
        while not self.buffer and not self.eof:
            data = await self.reader.read(65536)
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
                self.eof = True
            for event in protocol.events_received():
                if isinstance(event, Frame):
                    if event.opcode is Opcode.BINARY or event.opcode is Opcode.CONT:
                        self.buffer += event.data
                    elif event.opcode is Opcode.TEXT:
                        protocol.fail(CloseCode.UNSUPPORTED_DATA, "MQTT needs binary frames")
                        self.eof = True
                    elif event.opcode is Opcode.CLOSE:
                        self.eof = True
            self.writer.flush()  # pongs, the answer to a close frame
        size = len(self.buffer) if n < 0 else n
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out


async def open_websocket(
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    server_hostname: str | None,
    path: str = DEFAULT_PATH,
    local_address: str | None = None,
) -> tuple[WebSocketReader, WebSocketWriter]:
    """Connect to ``host``:``port`` and upgrade to a WebSocket speaking ``mqtt``; a refused
    upgrade is a :class:`ConnectionLost` saying why."""
    reader, writer = await asyncio.open_connection(
        host,
        port,
        ssl=tls,
        server_hostname=server_hostname if tls is not None else None,
        local_addr=(local_address, 0) if local_address else None,
    )
    shown = f"[{host}]" if ":" in host else host
    scheme = "wss" if tls is not None else "ws"
    protocol = ClientProtocol(
        parse_uri(f"{scheme}://{shown}:{port}{path or DEFAULT_PATH}"),
        subprotocols=[Subprotocol("mqtt")],
        max_size=None,
    )
    ws_writer = WebSocketWriter(writer, protocol)
    protocol.send_request(protocol.connect())
    ws_writer.flush()
    pending = bytearray()
    response: Response | None = None
    try:
        while response is None:
            data = await reader.read(65536)
            if not data:
                protocol.receive_eof()
            else:
                protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, Response):
                    response = event
                elif isinstance(event, Frame) and event.opcode in (Opcode.BINARY, Opcode.CONT):
                    pending += event.data
            if protocol.handshake_exc is not None:
                raise ConnectionLost(
                    f"WebSocket upgrade refused by {host}:{port}: {protocol.handshake_exc}"
                )
            if not data and response is None:
                raise ConnectionLost(f"{host}:{port} closed during the WebSocket upgrade")
    except BaseException:
        writer.transport.abort()
        raise
    return WebSocketReader(reader, ws_writer, bytes(pending)), ws_writer
