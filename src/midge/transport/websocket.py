"""MQTT over WebSocket: ``protocol websockets`` listeners (ws, and wss behind asyncio's TLS).

The WebSocket protocol itself is the ``websockets`` package's sans-IO :class:`ServerProtocol`
(handshake, framing, masking, ping/pong, the closing handshake, close codes); this module is the
asyncio glue between it and the same :class:`~midge.broker.connection.Connection` a TCP socket
feeds, in the transport seam's shape (DESIGN.md: transports differ only in how bytes come in and
go out):

- **in**: :class:`WebSocketProtocol` is the socket's asyncio protocol. It reads the HTTP request
  head (at most ``websockets_headers_size`` bytes), upgrades requests that ask for a WebSocket
  with subprotocol ``mqtt`` or ``mqttv3.1`` (or none: MQTT is all this port speaks), serves
  ``http_dir``'s files to plain GETs, and after the upgrade hands the payload of every binary
  frame to the connection: MQTT packets may span frames and a frame may carry several
  (MQTT-6.0.0-2), the connection's decoder does not care. A text frame closes with 1003
  (MQTT-6.0.0-1); the library answers pings and closes with 1002/1007/1009 on a protocol error.
- **out**: the connection writes to a :class:`~midge.transport.writer.CoalescingTransport` as on
  TCP, whose "socket" is a :class:`WebSocketStream`: the loop turn's packets go out as ONE binary
  frame (the coalescing carries over: one frame and one socket write per turn).
- **close**: the connection's close is graceful as on TCP (midge.transport.writer): the stream
  sends a close frame (1000), keeps reading (and discarding) until the client answers with its
  own close frame, then the server closes the TCP connection first (RFC 6455 7.1.1); a client
  that never answers is aborted after the linger. A client's close frame is answered and the
  socket closed: the connection sees the socket go, as on TCP (its will is published unless it
  sent DISCONNECT).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import mimetypes
import os
import urllib.parse
from collections.abc import Sequence
from typing import Any, cast

from websockets.datastructures import Headers
from websockets.exceptions import NegotiationError
from websockets.frames import CloseCode, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from midge.broker.broker import Broker
from midge.config import ListenerConfig
from midge.transport.accept import ListenerState, admit, attach, set_nodelay
from midge.transport.proxy import Origin
from midge.transport.writer import CoalescingTransport, TurnWrites

log = logging.getLogger("midge.websockets")

#: The subprotocols MQTT over WebSocket uses: "mqtt" (MQTT 3.1.1 and 5, MQTT-6.0.0-3/4) and
#: "mqttv3.1" (MQTT 3.1), in the order the server prefers them.
SUBPROTOCOLS = (Subprotocol("mqtt"), Subprotocol("mqttv3.1"))
#: ``websockets_headers_size`` 0: the largest request head read, in bytes.
DEFAULT_HEADERS_SIZE = 4096
#: Frames (and fragmented messages) larger than the largest packet plus this are refused (1009):
#: the library holds a frame whole before handing it over.
FRAME_SLACK = 64 * 1024

_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_TEXT = Opcode.TEXT
_OPEN = State.OPEN


def select_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """``mqtt`` if the client offers it, else ``mqttv3.1``; a client that offers none gets no
    Sec-WebSocket-Protocol (MQTT is all the port speaks); one that offers only others is
    refused (400)."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    if not offered:
        return None
    raise NegotiationError(
        f"unsupported subprotocol {', '.join(offered)}; expected mqtt or mqttv3.1"
    )


class WebSocketProtocol(asyncio.Protocol):
    """One accepted socket of a WebSocket listener (see the module)."""

    def __init__(
        self,
        broker: Broker,
        listener: ListenerConfig,
        listening: ListenerState,
        writes: TurnWrites,
        origin: Origin | None = None,
    ) -> None:
        self.broker = broker
        self.listener = listener
        self.listening = listening
        self.writes = writes
        #: What the PROXY header said (midge.transport.proxy), on such a listener.
        self.origin = origin
        config = broker.config
        self.ws = ServerProtocol(
            subprotocols=list(SUBPROTOCOLS),
            select_subprotocol=select_subprotocol,
            max_size=config.effective_max_packet_size + FRAME_SLACK,
            logger=log,
        )
        self.headers_size = config.websockets_headers_size or DEFAULT_HEADERS_SIZE
        #: The request head read so far (until the upgrade).
        self.head = bytearray()
        self.socket: asyncio.Transport | None = None
        #: Who gets the MQTT bytes: the Connection once upgraded, then the Lingering protocol
        #: of a closed connection (midge.transport.writer); None during the HTTP handshake.
        self.app: asyncio.Protocol | None = None
        self.stream: WebSocketStream | None = None
        self.timer: asyncio.TimerHandle | None = None

    # -- the socket's events --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance here.
        self.socket = tr = cast(asyncio.Transport, transport)
        if self.broker.shutting_down:
            tr.abort()
            return
        set_nodelay(self.broker, tr)
        # The request must come within the time a client has to send CONNECT.
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.broker.config.connect_timeout, tr.abort)

    def data_received(self, data: bytes) -> None:
        app = self.app
        if app is None:
            self._handshake(data)
            return
        ws = self.ws
        ws.receive_data(data)
        self._frames(app, ws.events_received())

    def _frames(self, app: asyncio.Protocol, events: Sequence[object]) -> None:
        """Hand the binary frames' payloads to ``app``; then write what the library answers."""
        ws = self.ws
        for event in events:
            opcode = event.opcode  # type: ignore[attr-defined]
            if opcode is _BINARY or opcode is _CONT:
                app.data_received(event.data)  # type: ignore[attr-defined]
            elif opcode is _TEXT:
                # MQTT-6.0.0-1: anything but binary data frames closes the connection.
                ws.fail(CloseCode.UNSUPPORTED_DATA, "MQTT needs binary frames")
                break
        self._send_pending()

    def eof_received(self) -> bool | None:
        return False  # the client went without a close frame: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        app = self.app
        if app is not None:
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    # -- writing the library's output -----------------------------------------------------------

    def _send_pending(self) -> None:
        """Write what the library has to send (frames, a handshake response); its end-of-stream
        marker (b"") closes the socket: a server closes the TCP connection first."""
        tr = self.socket
        assert tr is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                tr.write(chunk)
            else:
                tr.close()

    # -- the HTTP request -----------------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        head = self.head
        head += data
        end = head.find(b"\r\n\r\n")
        if (end < 0 and len(head) > self.headers_size) or end + 4 > self.headers_size:
            self._respond(
                self.ws.reject(431, "Request header fields too large (websockets_headers_size)\n")
            )
            return
        if end < 0:
            return
        ws = self.ws
        ws.receive_data(bytes(head))
        self.head = bytearray()
        events = ws.events_received()
        if not events or not isinstance(events[0], Request):
            self._send_pending()  # not HTTP: the library closes
            self._done_handshake()
            return
        request = events[0]
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            self._respond(self._http(request))
            return
        response = ws.accept(request)
        if response.status_code != 101:
            log.debug("WebSocket upgrade refused: %s", ws.handshake_exc)
            self._respond(response)
            return
        tr = self.socket
        assert tr is not None
        refuse = admit(self.broker, self.listener, self.listening, tr, self.origin)
        if refuse < 0:
            tr.abort()
            return
        ws.send_response(response)
        self._send_pending()
        self._done_handshake()
        stream = self.stream = WebSocketStream(self)
        conn = attach(
            self.broker,
            self.listener,
            self.listening,
            CoalescingTransport(stream, self.writes),
            tr,
            refuse,
            self.origin,
        )
        self.app = conn  # type: ignore[assignment]
        if len(events) > 1:  # frames sent right behind the request
            self._frames(conn, events[1:])  # type: ignore[arg-type]

    def _done_handshake(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _respond(self, response: Response) -> None:
        """Answer the request with ``response`` and close (one request per connection)."""
        self.ws.send_response(response)
        self._send_pending()
        self._done_handshake()

    def _http(self, request: Request) -> Response:
        """A plain HTTP request: ``http_dir``'s file, or why not."""
        root = self.listener.http_dir
        method = request.method
        if root is None:
            return self.ws.reject(404, "Not found (no http_dir on this listener)\n")
        if method not in ("GET", "HEAD"):
            response = self.ws.reject(405, "Method not allowed\n")
            response.headers["Allow"] = "GET, HEAD"
            return response
        found = static_file(root, request.path)
        if isinstance(found, int):
            return self.ws.reject(found, {403: "Forbidden\n", 404: "Not found\n"}[found])
        path, body = found
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
                ("Content-Type", kind),
            ]
        )
        return Response(200, "OK", headers, b"" if method == "HEAD" else body)


def static_file(root: str, target: str) -> tuple[str, bytes] | int:
    """The file ``target`` (a request path, with its query) names under ``root``, and its bytes;
    or 403 for a path that leads outside ``root`` (``..``, a symbolic link out, a NUL byte), or
    404. A directory is its ``index.html``."""
    path = urllib.parse.unquote(target.split("?", 1)[0].split("#", 1)[0])
    if "\x00" in path or not path.startswith("/"):
        return 403
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, path.lstrip("/")))
    if full != base and not full.startswith(base + os.sep):
        return 403
    if os.path.isdir(full):
        full = os.path.join(full, "index.html")
    try:
        with open(full, "rb") as f:
            return full, f.read()
    except (IsADirectoryError, PermissionError):
        return 403
    except OSError:
        return 404


class WebSocketStream(asyncio.Transport):
    """What a connection's CoalescingTransport writes to on a WebSocket listener: the socket as
    the asyncio Transport interface, with the loop turn's writes framed as one binary frame, and
    a close that is the WebSocket closing handshake (see the module)."""

    def __init__(self, owner: WebSocketProtocol) -> None:
        super().__init__()
        self.owner = owner
        tr = owner.socket
        assert tr is not None
        self.socket: asyncio.Transport = tr

    def write(self, data: bytes | bytearray | memoryview) -> None:
        owner = self.owner
        ws = owner.ws
        if ws.state is not _OPEN:
            return  # closing: nothing more goes out
        ws.send_binary(data)
        owner._send_pending()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        """The closing handshake: a close frame (1000) now; the socket closes when the client
        answers (WebSocketProtocol.data_received), or is aborted after the linger."""
        owner = self.owner
        ws = owner.ws
        if ws.state is _OPEN:
            ws.send_close(CloseCode.NORMAL_CLOSURE)
            owner._send_pending()
            socket = self.socket
            if not socket.is_closing() and not socket.is_reading():
                socket.resume_reading()  # the connection may have paused it: read the answer
        elif not self.socket.is_closing():
            self.socket.close()

    def abort(self) -> None:
        self.socket.abort()

    def is_closing(self) -> bool:
        return self.socket.is_closing()

    def can_write_eof(self) -> bool:
        return False  # the close frame is the end of the stream

    def get_protocol(self) -> asyncio.BaseProtocol:
        app = self.owner.app
        assert app is not None
        return app

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.owner.app = protocol  # type: ignore[assignment]

    def pause_reading(self) -> None:
        self.socket.pause_reading()

    def resume_reading(self) -> None:
        self.socket.resume_reading()

    def is_reading(self) -> bool:
        return self.socket.is_reading()

    def get_write_buffer_size(self) -> int:
        return self.socket.get_write_buffer_size()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.socket.get_extra_info(name, default)
