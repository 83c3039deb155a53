"""A scripted MQTT server on a real socket, for the client's reactions to what no broker sends on
demand: every CONNACK refusal code, a DISCONNECT with each reason code, a Server Reference, a
server that never acknowledges. It speaks through midge's codec, in the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from midge.codec import Decoder, encode
from midge.codec.packets import Connect, Packet

#: Given the CONNECT (and each later packet), the packets to answer with; None closes.
Script = Callable[[Packet], list[Packet] | None]


class ScriptedServer:
    def __init__(self, script: Script, version: int = 5) -> None:
        self.script = script
        self.version = version
        self.received: list[Packet] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        decoder = Decoder()
        try:
            while data := await reader.read(65536):
                for packet in decoder.feed(data):
                    if isinstance(packet, Connect):
                        decoder.version = packet.protocol_level
                    self.received.append(packet)
                    answer = self.script(packet)
                    if answer is None:
                        writer.close()
                        return
                    for out in answer:
                        writer.write(encode(out, decoder.version or self.version))
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
