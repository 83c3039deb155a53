"""MQTT over WebSocket: ``protocol websockets`` listeners (ws, and wss behind asyncio's TLS).

Two maintained WebSocket implementations share the work, each where it is best:

- **the HTTP request**: :class:`WebSocketProtocol` is the socket's asyncio protocol until the
  upgrade. It reads the request head (at most ``websockets_headers_size`` bytes) and lets the
  ``websockets`` package's sans-IO :class:`ServerProtocol` parse and check it: upgrades asking
  for subprotocol ``mqtt`` or ``mqttv3.1`` (or none: MQTT is all this port speaks) are
  accepted, others refused with the library's answer, and plain GETs get ``http_dir``'s files.
- **the frames**: an accepted upgrade hands the socket to picows (a WebSocket implementation
  whose frame parser and writer are compiled with Cython): its protocol reads the request again
  (with any frames sent right behind it), answers 101 with the subprotocol chosen above, and
  from then on parses frames in C and calls :class:`Frames` once per frame. The payload of
  every binary (and continuation) frame goes to the connection: MQTT packets may span frames
  and a frame may carry several (MQTT-6.0.0-2), the connection's decoder does not care. A text
  frame closes with 1003 (MQTT-6.0.0-1); picows answers pings and closes with 1002 on a
  protocol error (an unmasked frame, a reserved opcode or bit, a bad control frame) and 1009
  on a frame over the limit. Why two: the per-frame cost. Parsing a frame in pure Python cost
  more than the MQTT work the frame carried (make bench's WebSocket row, docs/websockets.md).
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
import socket as socketlib
import urllib.parse
from collections.abc import Sequence
from typing import Any, cast

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in its stub
from websockets.datastructures import Headers
from websockets.exceptions import NegotiationError
from websockets.http11 import Request, Response
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

_BINARY = WSMsgType.BINARY
_CONT = WSMsgType.CONTINUATION
_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
#: picows's own lines (a connection accepted, a frame refused): under ``midge.websockets``, so
#: they follow ``websockets_log_level`` and are of Mosquitto's log type ``websockets``.
_PICOWS_LOG = logging.getLogger("midge.websockets.frames")


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
    """One accepted socket of a WebSocket listener until its upgrade (see the module)."""

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
        self.ws = ServerProtocol(
            subprotocols=list(SUBPROTOCOLS),
            select_subprotocol=select_subprotocol,
            logger=log,
        )
        self.headers_size = broker.config.websockets_headers_size or DEFAULT_HEADERS_SIZE
        #: The request head read so far.
        self.head = bytearray()
        self.socket: asyncio.Transport | None = None
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
        self._handshake(data)

    def eof_received(self) -> bool | None:
        return False  # the client went before its request was whole: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._done_handshake()

    # -- writing the library's output -----------------------------------------------------------

    def _send_pending(self) -> None:
        """Write what the library has to send (a handshake response); its end-of-stream
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
        received = bytes(head)
        ws.receive_data(received[: end + 4])
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
        self._done_handshake()
        # picows reads the request again: only what its answer needs (the head checked above
        # may be longer than picows reads, up to websockets_headers_size), then what followed.
        key = request.headers["Sec-WebSocket-Key"]
        again = (
            f"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode("latin-1")
        subprotocol = response.headers.get("Sec-WebSocket-Protocol")
        self._upgrade(tr, subprotocol, refuse, again + received[end + 4 :])

    def _upgrade(
        self, tr: asyncio.Transport, subprotocol: str | None, refuse: int, received: bytes
    ) -> None:
        """Hand the socket to picows's WebSocket protocol: it reads ``received`` (the request
        again, and any frames sent right behind it), answers 101 with the subprotocol chosen
        here, and from then on parses the frames in C."""
        frames = Frames(self, subprotocol, refuse)
        protocol = WSProtocol(
            None,
            None,
            False,  # the server side
            frames.upgrade,
            _PICOWS_LOG,
            True,  # an exception in a callback closes the connection
            None,  # the handshake's timeout is this module's (connect_timeout)
            False,
            20,
            20,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # pings answered
            self.broker.config.effective_max_packet_size + FRAME_SLACK,
            None,
            16 * 1024,
        )
        tr.set_protocol(protocol)
        protocol.connection_made(_picows_transport(tr))
        view = memoryview(received)
        while view:
            buffer = protocol.get_buffer(-1)
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]

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


def _picows_transport(tr: asyncio.Transport) -> asyncio.Transport:
    """The transport picows gets: the socket's own, except on a Unix socket, where picows's
    TCP options (TCP_NODELAY, TCP_QUICKACK) do not apply: a view whose socket ignores them."""
    sock = tr.get_extra_info("socket")
    if sock is None or sock.family != socketlib.AF_UNIX:
        return tr
    return cast(asyncio.Transport, _UnixTransport(tr, _UnixSocket(sock)))


class _UnixSocket:
    """A Unix socket as picows sees it: TCP-level options are ignored (reads give 0)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def setsockopt(self, level: int, option: int, value: int) -> None:
        if level != socketlib.IPPROTO_TCP:
            self.sock.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int) -> int:
        return 0 if level == socketlib.IPPROTO_TCP else int(self.sock.getsockopt(level, option))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _UnixTransport:
    """A Unix socket's transport for picows: the same transport, with :class:`_UnixSocket`."""

    def __init__(self, tr: asyncio.Transport, sock: _UnixSocket) -> None:
        self.tr = tr
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else self.tr.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tr, name)


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


class Frames(WSListener):
    """The upgraded connection's picows listener: the payload of every binary (and
    continuation) frame goes to ``app``, a text frame closes with 1003 (MQTT-6.0.0-1), a close
    frame is answered and the socket closed."""

    def __init__(self, owner: WebSocketProtocol, subprotocol: str | None, refuse: int) -> None:
        super().__init__()
        self.owner = owner
        self.subprotocol = subprotocol
        self.refuse = refuse
        #: Who gets the MQTT bytes: the Connection, then the Lingering protocol of a closed
        #: connection (midge.transport.writer); None until the 101 response went out.
        self.app: asyncio.Protocol | None = None

    def upgrade(self, request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        headers = {"Sec-WebSocket-Protocol": self.subprotocol} if self.subprotocol else None
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(headers), self)

    def on_ws_connected(self, transport: WSTransport) -> None:
        owner = self.owner
        tr = owner.socket
        assert tr is not None
        stream = WebSocketStream(self, transport, tr)
        self.app = attach(  # type: ignore[assignment]
            owner.broker,
            owner.listener,
            owner.listening,
            CoalescingTransport(stream, owner.writes),
            tr,
            self.refuse,
            owner.origin,
        )

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            # No extension is negotiated: a reserved bit set is a protocol error (RFC 6455 5.2).
            self.fail(transport, WSCloseCode.PROTOCOL_ERROR, b"reserved bits set")
        elif kind is _BINARY or kind is _CONT:
            app = self.app
            if app is not None:
                app.data_received(frame.get_payload_as_bytes())
        elif kind is _CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()  # the server closes the TCP connection first
        elif kind is _TEXT:
            # MQTT-6.0.0-1: anything but binary data frames closes the connection.
            self.fail(transport, WSCloseCode.UNSUPPORTED_DATA, b"MQTT needs binary frames")

    def fail(self, transport: WSTransport, code: WSCloseCode, why: bytes) -> None:
        """Close with ``code``: the close frame, then the socket (the server closes first);
        what the client still sends is not read."""
        if not transport.is_close_frame_sent:
            transport.send_close(code, why)
        transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        app = self.app
        if app is not None:
            app.connection_lost(None)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()


class WebSocketStream(asyncio.Transport):
    """What a connection's CoalescingTransport writes to on a WebSocket listener: the socket as
    the asyncio Transport interface, with the loop turn's writes framed as one binary frame, and
    a close that is the WebSocket closing handshake (see the module)."""

    def __init__(self, frames: Frames, ws: WSTransport, socket: asyncio.Transport) -> None:
        super().__init__()
        self.frames = frames
        self.ws = ws
        self.socket = socket

    def write(self, data: bytes | bytearray | memoryview) -> None:
        ws = self.ws
        if ws.is_close_frame_sent:
            return  # closing: nothing more goes out
        ws.send(_BINARY, data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        """The closing handshake: a close frame (1000) now; the socket closes when the client
        answers (Frames.on_ws_frame), or is aborted after the linger."""
        ws = self.ws
        socket = self.socket
        if not ws.is_close_frame_sent and not socket.is_closing():
            ws.send_close(WSCloseCode.OK)
            if not socket.is_closing() and not socket.is_reading():
                socket.resume_reading()  # the connection may have paused it: read the answer
        elif not socket.is_closing():
            socket.close()

    def abort(self) -> None:
        self.socket.abort()

    def is_closing(self) -> bool:
        return self.socket.is_closing()

    def can_write_eof(self) -> bool:
        return False  # the close frame is the end of the stream

    def get_protocol(self) -> asyncio.BaseProtocol:
        app = self.frames.app
        assert app is not None
        return app

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.frames.app = protocol  # type: ignore[assignment]

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
