"""The asyncio MQTT client: :class:`Client`, on midge's sans-IO codec.

One :class:`Client` owns one network connection at a time and one task reading it. Everything the
user awaits (a PUBLISH's acknowledgement, a SUBACK, a message) is a future or a bounded inbox that
the reading task fills; writes go straight to the transport.

Reconnecting (:class:`Backoff`): when the connection is lost, or the server disconnects with a
reason that is worth retrying (0x80, 0x88, 0x89, 0x8B, 0x8D, 0x9F, 0xA0), the client connects again
after an exponentially growing, jittered delay. Waiting publishes stay waiting; with the session
resumed (CONNACK Session Present 1) the in-flight ones are resent as the spec asks (PUBLISH with
DUP, PUBREL; MQTT-4.4.0-1); when the server has lost the session (Session Present 0) they are sent
again as new messages (a QoS 2 message whose PUBREC had arrived is complete: the server has it)
and every subscription is made again. Any other reason (a refusal, 0x8E Session taken over, a
protocol error) ends the client with an :class:`MQTTError`, raised by whatever the user awaits.

Back-pressure: received messages go to bounded inboxes (``queue_size`` messages each, the one
behind :meth:`Client.messages` and one per :meth:`Client.subscription`), moved there in order by
one task; a QoS 1/2 message is acknowledged (PUBACK, PUBREC) once it is in its inbox, so while the
consumer is behind, the server's window (this client's Receive Maximum) holds the rest of the QoS
1/2 messages at the server. Reading the socket goes on meanwhile, so the acknowledgements the
consumer itself may be waiting for (it publishes inside its loop) are never stuck behind
messages it has not taken: that would be a deadlock. Reading stops (TCP flow control then slows
the server) when ``queue_size`` QoS 0 messages wait and nothing is awaited, or when
``queue_size + receive_maximum`` messages wait (an MQTT 3.1.1 server, which has no Receive
Maximum to obey). While something is awaited, a QoS 0 message beyond ``queue_size`` waiting is
dropped (at most once) and counted in :attr:`Client.dropped`. QoS 1/2 messages are never
dropped. A response to :meth:`Client.request` is handed over at once, ahead of waiting messages.
While reading is stopped, the keep-alive check is suspended too (a PINGRESP cannot be read).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import secrets
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol

from midge.auth.scram import ScramClient
from midge.client.errors import V3_TO_V5_CONNACK, ConnectionLost, MQTTError
from midge.client.message import ConnectResult, Message, PublishResult, SubscribeResult
from midge.client.socks import Socks5Proxy, open_socks5
from midge.client.store import MemorySessionStore, Outgoing, SessionState, SessionStore
from midge.codec import Decoder, encode
from midge.codec.packets import (
    MQTT5,
    MQTT31,
    MQTT311,
    UNLIMITED_PACKET_SIZE,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
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
from midge.codec.properties import Prop
from midge.codec.reasons import CodecError, Reason
from midge.codec.topics import split_shared, topic_matches

log = logging.getLogger("midge.client")

#: What a ``handler`` returns: None once it is done with the message, or an awaitable that
#: completes once the message may be acknowledged (the handler has handed it over and the next
#: message may come meanwhile: a bridge's in-flight window).
Settled = Awaitable[object] | None
Handler = Callable[["Message", Callable[[], None]], Awaitable[Settled]]

#: Reasons after which reconnecting makes sense (the server went away or asked to come back later).
RETRYABLE: Final = frozenset(
    {
        Reason.UNSPECIFIED_ERROR,
        Reason.SERVER_UNAVAILABLE,
        Reason.SERVER_BUSY,
        Reason.SERVER_SHUTTING_DOWN,
        Reason.KEEP_ALIVE_TIMEOUT,
        Reason.CONNECTION_RATE_EXCEEDED,
        Reason.MAXIMUM_CONNECT_TIME,
    }
)
REDIRECTS: Final = frozenset({Reason.USE_ANOTHER_SERVER, Reason.SERVER_MOVED})
#: How many Server References in a row are followed before giving up (a loop of redirections).
MAX_REDIRECTS = 5


@dataclass(slots=True)
class Backoff:
    """The reconnect policy: the n-th attempt (from 0) waits
    ``min(maximum, initial * factor**n)``, minus a random part of up to ``jitter`` of it (so that
    many clients cut off together do not come back together). ``attempts`` bounds the attempts
    in a row (None: forever)."""

    initial: float = 0.1
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    attempts: int | None = None

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return base * (1.0 - self.jitter * random.random())


@dataclass(slots=True)
class ScramAuth:
    """MQTT 5 enhanced authentication with SCRAM-SHA-256 or SCRAM-SHA-512 (midge's
    :mod:`midge.auth.scram`, EMQX's message flow). The server's final message is verified: a
    server that does not know the credential fails the connection with 0x87."""

    username: str
    password: str
    mechanism: str = "SCRAM-SHA-256"

    def exchange(self) -> ScramClient:
        return ScramClient(self.mechanism, self.username, self.password)


class _End:
    pass


_END: Final = _End()


class _Inbox:
    """A bounded FIFO of messages: ``put`` waits while it is full; ``end`` wakes everyone."""

    def __init__(self, limit: int) -> None:
        self._items: deque[Message] = deque()
        self._limit = max(1, limit)
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._ended = False
        self._error: MQTTError | None = None

    @property
    def full(self) -> bool:
        return len(self._items) >= self._limit

    async def put(self, message: Message) -> None:
        while len(self._items) >= self._limit and not self._ended:
            self._writable.clear()
            await self._writable.wait()
        if not self._ended:
            self._items.append(message)
            self._readable.set()

    def end(self, error: MQTTError | None) -> None:
        if not self._ended:
            self._ended = True
            self._error = error
        self._readable.set()
        self._writable.set()

    async def get(self) -> Message:
        while not self._items:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        message = self._items.popleft()
        self._writable.set()
        return message

    def __aiter__(self) -> _Inbox:
        return self

    async def __anext__(self) -> Message:
        return await self.get()


@dataclass(slots=True)
class _Route:
    """Where the messages of one :meth:`Client.subscription` go."""

    inbox: _Inbox
    filters: list[str]
    subscription_identifier: int | None


@dataclass(slots=True)
class _Sub:
    """A subscription made, kept to make it again when the server lost the session."""

    subscription: Subscription
    subscription_identifier: int | None
    properties: Properties = field(default_factory=dict)


class _Reader(Protocol):
    """What the client reads from: an asyncio StreamReader, or a WebSocket's
    (:mod:`midge.client.websocket`)."""

    async def read(self, n: int = -1) -> bytes: ...


class _Writer(Protocol):
    """What the client writes to: an asyncio StreamWriter, or a WebSocket's."""

    @property
    def transport(self) -> asyncio.WriteTransport: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class _Link:
    """One network connection and what the server said about it in CONNACK."""

    def __init__(
        self,
        reader: _Reader,
        writer: _Writer,
        decoder: Decoder,
        version: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = decoder
        self.version = version
        self.leftover: list[Packet] = []
        self.receive_maximum = 65535
        self.maximum_packet_size = UNLIMITED_PACKET_SIZE
        self.topic_alias_maximum = 0
        self.maximum_qos = 2
        self.retain_available = True
        self.subscription_identifiers = version == MQTT5
        self.keep_alive = 0
        self.aliases_out: dict[str, int] = {}
        self.aliases_in: dict[int, str] = {}
        self.last_write = 0.0
        #: The server has sent more than this client's Receive Maximum (warned once).
        self.overrun = False
        self.ping_sent: float | None = None
        self.error: MQTTError | None = None

    def apply_connack(self, connack: Connack, keep_alive: int) -> None:
        props = connack.properties
        self.receive_maximum = props.get(Prop.RECEIVE_MAXIMUM, 65535)
        self.maximum_packet_size = props.get(Prop.MAXIMUM_PACKET_SIZE, UNLIMITED_PACKET_SIZE)
        self.topic_alias_maximum = props.get(Prop.TOPIC_ALIAS_MAXIMUM, 0)
        self.maximum_qos = props.get(Prop.MAXIMUM_QOS, 2)
        self.retain_available = bool(props.get(Prop.RETAIN_AVAILABLE, 1))
        self.subscription_identifiers = self.version == MQTT5 and bool(
            props.get(Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE, 1)
        )
        self.keep_alive = props.get(Prop.SERVER_KEEP_ALIVE, keep_alive)

    def abort(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()


def parse_server_reference(reference: str, default_port: int) -> tuple[str, int]:
    """The first server of a Server Reference (MQTT 5.0 4.11: a space-separated list of
    ``host[:port]``, IPv6 in brackets) as (host, port)."""
    first = reference.split()[0] if reference.split() else reference
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif first.count(":") == 1:
        host, _, port = first.partition(":")
    else:
        host, port = first, ""
    return host, int(port) if port.isdigit() else default_port


class Client:
    """An MQTT 3.1 / 3.1.1 / 5.0 client. Use it as ``async with Client(host, port) as client:``.

    ``version`` is 5 (MQTT 5.0), 4 (MQTT 3.1.1) or 3 (MQTT 3.1, protocol name "MQIsdp"; its
    client identifier must be 1-23 characters, so an empty one is replaced by a random
    ``midge-...`` one). A persistent session is ``clean_start=False``
    (and in MQTT 5 a ``session_expiry`` above 0, in seconds); its in-flight state lives in
    ``session_store`` (in memory unless given, e.g. :class:`~midge.client.SqliteSessionStore`).
    ``tls`` is an :class:`ssl.SSLContext` (load a client certificate into it for mutual TLS).
    ``reconnect`` is a :class:`Backoff`, ``True`` for the default one, or ``False``: then a lost
    connection ends the client with an error. ``queue_size`` bounds each inbox (see the module's
    docstring for the back-pressure policy). ``receive_maximum``, ``topic_alias_maximum`` and
    ``maximum_packet_size`` are what this client accepts (MQTT 5 CONNECT properties); what the
    server accepts is obeyed from its CONNACK. ``auth`` is MQTT 5 enhanced authentication
    (:class:`ScramAuth`). ``follow_redirects`` follows a 0x9C/0x9D Server Reference instead of
    raising the :class:`MQTTError` that carries it. ``unix_path`` connects to a Unix domain
    socket instead of ``host``:``port``. ``local_address`` binds the local end of a TCP or
    WebSocket connection to that address. ``proxy`` (``socks5h://[USER[:PASSWORD]@]HOST[:PORT]``)
    connects through a SOCKS5 proxy, which resolves ``host`` (a refusal is a
    :class:`~midge.client.socks.ProxyError`). ``packet_hook`` is called with ``(True, packet)``
    for each packet written and ``(False, packet)`` for each packet read, as it happens (the
    tools' ``-d`` lines); it costs nothing when None.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 1883,
        *,
        client_id: str = "",
        version: int = MQTT5,
        clean_start: bool = True,
        session_expiry: int = 0,
        keep_alive: int = 60,
        username: str | None = None,
        password: str | bytes | None = None,
        will: Will | None = None,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_properties: Properties | None = None,
        receive_maximum: int = 65535,
        topic_alias_maximum: int = 16,
        maximum_packet_size: int | None = None,
        session_store: SessionStore | None = None,
        reconnect: Backoff | bool = True,
        queue_size: int = 1000,
        auth: ScramAuth | None = None,
        follow_redirects: bool = False,
        connect_timeout: float = 10.0,
        request_response_information: bool = False,
        unix_path: str | None = None,
        transport: str = "tcp",
        websocket_path: str = "/mqtt",
        bridge: bool = False,
        handler: Handler | None = None,
        opener: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
        | None = None,
        on_connection: Callable[[bool], None] | None = None,
        local_address: str | None = None,
        packet_hook: Callable[[bool, Packet], None] | None = None,
        proxy: str | None = None,
        outgoing_topic_aliases: bool = True,
        reconnect_after_disconnect: bool = True,
        send_maximum: int = 65535,
        enforce_receive_maximum: bool = True,
    ) -> None:
        if transport not in ("tcp", "websockets"):
            raise ValueError("transport must be 'tcp' or 'websockets'")
        if transport == "websockets" and unix_path is not None:
            raise ValueError("MQTT over WebSocket goes to host:port, not to a Unix socket")
        if proxy is not None and (transport != "tcp" or unix_path is not None):
            raise ValueError("a SOCKS5 proxy carries MQTT over TCP (not WebSocket, not Unix)")
        if version not in (MQTT31, MQTT311, MQTT5):
            raise ValueError("version must be 3 (MQTT 3.1), 4 (MQTT 3.1.1) or 5 (MQTT 5.0)")
        if version == MQTT31 and not client_id:
            if not clean_start:
                raise ValueError("an MQTT 3.1 persistent session needs a client identifier")
            # MQTT 3.1 3.1: 1 to 23 characters (libmosquitto makes "mosq-" and 18 more).
            alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
            client_id = "midge-" + "".join(secrets.choice(alphabet) for _ in range(17))
        if auth is not None and version != MQTT5:
            raise ValueError("enhanced authentication needs MQTT 5")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.version = version
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.keep_alive = keep_alive
        self.username = username
        self.password = password.encode() if isinstance(password, str) else password
        self.will = will
        self.tls = tls
        self.server_hostname = server_hostname
        self.connect_properties = dict(connect_properties or {})
        self.receive_maximum = receive_maximum
        self.topic_alias_maximum = topic_alias_maximum if version == MQTT5 else 0
        self.maximum_packet_size = maximum_packet_size
        self.store: SessionStore = (
            session_store if session_store is not None else MemorySessionStore()
        )
        self.backoff: Backoff | None = (
            Backoff()
            if reconnect is True
            else (reconnect if isinstance(reconnect, Backoff) else None)
        )
        self.queue_size = queue_size
        self.auth = auth
        self.follow_redirects = follow_redirects
        self.connect_timeout = connect_timeout
        self.request_response_information = request_response_information
        #: Connect to this Unix domain socket instead of host:port (mosquitto's ``--unix``).
        self.unix_path = unix_path
        #: "tcp", or "websockets": MQTT over WebSocket, upgraded at ``websocket_path``.
        self.transport = transport
        self.websocket_path = websocket_path
        #: Mark the CONNECT as Mosquitto's bridges do (bit 0x80 of the protocol level,
        #: ``try_private``; MQTT 3.1.1 only): a Mosquitto or midge server then sends this
        #: client none of its own messages back.
        self.bridge = bridge
        #: Each received message is awaited through ``handler(message, accepted)`` instead of
        #: going to an inbox, and acknowledged (PUBACK / PUBREC) only once it returns: a bridge
        #: forwards the message and acknowledges it once the other side has. For a QoS 2
        #: message of a persistent session, the store learns that its id was delivered (so a
        #: resend is not delivered again) only when the handler calls ``accepted()``: a bridge
        #: calls it once the message is in the other side's store.
        self.handler = handler
        #: Opens the byte stream instead of a TCP / Unix connection (a bridge's local side).
        self.opener = opener
        #: Told True once a connection is up (CONNACK), False when one is lost or an attempt
        #: to reconnect fails; it may change ``host`` / ``port`` for the next attempt.
        self.on_connection = on_connection
        #: Connect from this local address (a bridge's ``bridge_bind_address``).
        self.local_address = local_address
        #: Told of each packet written (True) and read (False); see the class docstring.
        self.packet_hook = packet_hook
        #: Whether a DISCONNECT from the server with a reason worth retrying (0x8B ...) is
        #: followed by a reconnect; False: it ends the client, as libmosquitto's loop does.
        self.reconnect_after_disconnect = reconnect_after_disconnect
        #: Use Topic Aliases for what this client publishes, where the server allows them
        #: (MQTT 5); False: every PUBLISH names its topic, as libmosquitto's do.
        self.outgoing_topic_aliases = outgoing_topic_aliases
        #: Connect through this SOCKS5 proxy (``socks5h://[USER[:PASSWORD]@]HOST[:PORT]``).
        self.proxy = Socks5Proxy.from_url(proxy) if proxy is not None else None
        #: At most this many QoS 1/2 messages of this client in flight, even when the server
        #: allows more (its Receive Maximum; an MQTT 3.1.1 server states none): Mosquitto's
        #: MOSQ_OPT_SEND_MAXIMUM, a bridge's ``max_inflight_messages``.
        self.send_maximum = send_maximum
        #: An MQTT 5 server that sends more unacknowledged QoS 1/2 messages than this client's
        #: Receive Maximum is disconnected with 0x93 (MQTT 5 3.3.4); False accepts them, with a
        #: warning (a bridge: Mosquitto 2.0 overruns the Receive Maximum of a client it has
        #: queued messages for).
        self.enforce_receive_maximum = enforce_receive_maximum
        #: The CONNACK of the current (or last) connection.
        self.connack: ConnectResult | None = None
        self._link: _Link | None = None
        self._session = SessionState()
        self._waiters: dict[int, asyncio.Future[PublishResult]] = {}
        self._pubrec: dict[int, PublishResult] = {}
        self._acks: dict[int, asyncio.Future[Packet]] = {}
        self._subs: dict[str, _Sub] = {}
        self._routes: list[_Route] = []
        self._main: _Inbox | None = None
        self._requests: dict[bytes, asyncio.Future[Message]] = {}
        self._response_topic: str | None = None
        self._response_lock: asyncio.Lock | None = None
        self._next_id = 0
        self._next_sub_id = 0
        self._inflight = 0
        self._incoming_unacked = 0
        self._quota_free: asyncio.Event | None = None
        self._connected: asyncio.Event | None = None
        self._error: MQTTError | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._reading_blocked = False
        self._session_persists = False
        self._connected_at = 0.0
        self._attempt = 0
        self._reauth: tuple[ScramClient, asyncio.Future[None]] | None = None
        #: Received messages on their way to the inboxes (see _pump), with their connection.
        self._arrivals: deque[tuple[_Link, Message, int | None, bool]] = deque()
        self._arriving_qos0 = 0
        #: QoS 0 messages dropped because the inboxes were full while the application waited
        #: for an acknowledgement (see the module's docstring).
        self.dropped = 0
        #: pid -> the connection of each PUBLISH (the original and resends) awaiting its
        #: PUBACK / PUBREC
        self._arriving_ids: dict[int, list[_Link]] = {}
        #: Handed-over messages whose handler's settlement is awaited, in the order received
        #: (their acknowledgements go out in that order, MQTT-4.6.0-2), and the task sending them.
        self._settling: deque[tuple[Message, int, Awaitable[object] | None]] = deque()
        self._settled: asyncio.Event | None = None
        self._ack_task: asyncio.Task[None] | None = None
        self._arrived: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._pump_task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Client:
        """A client for ``mqtt://[USER[:PASSWORD]@]HOST[:PORT]`` (port 1883) or ``mqtts://``
        (TLS with the system's CA certificates unless ``tls=`` is given; port 8883), as
        ``mosquitto_pub -L`` takes them; a path (the topic, for the tools) is ignored. ``ws://``
        (port 80) and ``wss://`` (TLS, port 443) are MQTT over WebSocket, the path being the
        upgrade request's (default ``/mqtt``). Keyword arguments are the constructor's."""
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "ws", "wss"):
            raise ValueError(f"{url!r}: the scheme must be mqtt://, mqtts://, ws:// or wss://")
        secure = parts.scheme in ("mqtts", "wss")
        default_port = 8883 if secure else 1883
        if parts.scheme in ("ws", "wss"):
            kwargs.setdefault("transport", "websockets")
            kwargs.setdefault("websocket_path", parts.path or "/mqtt")
            default_port = 443 if secure else 80
        if secure:
            kwargs.setdefault("tls", ssl.create_default_context())
        if parts.username is not None:
            kwargs.setdefault("username", unquote(parts.username))
        if parts.password is not None:
            kwargs.setdefault("password", unquote(parts.password))
        return cls(parts.hostname or "localhost", parts.port or default_port, **kwargs)

    # ---------------------------------------------------------------------------------------
    # Life cycle

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    @property
    def connected(self) -> bool:
        return (
            self._connected is not None
            and self._connected.is_set()
            and self._link is not None
            and not self._closing
        )

    async def connect(self) -> ConnectResult:
        """Connect (following redirections if asked); raises :class:`MQTTError` on a refusal."""
        self._connected = asyncio.Event()
        self._quota_free = asyncio.Event()
        self._quota_free.set()
        self._main = _Inbox(self.queue_size)
        self._response_lock = asyncio.Lock()
        self._closing = False
        self._error = None
        self._arrivals.clear()
        self._arriving_ids.clear()
        self._drop_settling()
        self._arriving_qos0 = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._settled = asyncio.Event()
        if self.clean_start and self.client_id:
            self.store.clear(self.client_id)  # a clean start discards the session both sides
        self._session = self.store.load(self.client_id) if self.client_id else SessionState()
        try:
            await self._establish(self.clean_start)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._task = asyncio.create_task(self._run(), name=f"midge.client {self.client_id}")
        self._pump_task = asyncio.create_task(self._pump(), name="midge.client inboxes")
        if self.handler is not None:
            self._ack_task = asyncio.create_task(self._acknowledger(), name="midge.client acks")
        assert self.connack is not None
        return self.connack

    async def disconnect(
        self, reason_code: int = Reason.SUCCESS, properties: Properties | None = None
    ) -> None:
        """Send DISCONNECT and close. In-flight messages of a persistent session stay in the
        store; every awaiting call fails with an :class:`MQTTError`."""
        if self._closing:
            return
        self._closing = True
        link = self._link
        if link is not None and not link.writer.transport.is_closing():
            with contextlib.suppress(Exception):
                self._write(link, Disconnect(reason_code, dict(properties or {})))
                link.writer.close()
                await asyncio.wait_for(link.writer.wait_closed(), 1.0)
        if link is not None:
            link.abort()
        for task in (self._task, self._ping_task, self._pump_task, self._ack_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._finish(None)

    async def wait_closed(self) -> MQTTError | None:
        """Wait until the client has ended (after :meth:`disconnect`, or an error it does not
        retry); returns that error (None after a disconnect)."""
        task = self._task
        if task is not None:
            await asyncio.wait({task})
        return self._error

    def _finish(self, error: MQTTError | None) -> None:
        """End everything: inboxes end (with ``error``), waiters fail."""
        self._closing = True
        self._error = error
        failure = error or MQTTError(Reason.UNSPECIFIED_ERROR, "the client is closed")
        for task in (self._pump_task, self._ack_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._arrivals.clear()
        self._arriving_ids.clear()
        self._drop_settling()
        self._arriving_qos0 = 0
        if self._room is not None:
            self._room.set()
        for inbox in [self._main, *(r.inbox for r in self._routes)]:
            if inbox is not None:
                inbox.end(error)
        futures: list[asyncio.Future[Any]] = [
            *self._waiters.values(),
            *self._acks.values(),
            *self._requests.values(),
        ]
        if self._reauth is not None:
            futures.append(self._reauth[1])
            self._reauth = None
        for fut in futures:
            if not fut.done():
                fut.set_exception(failure)
                fut.exception()  # nobody may be awaiting it: no "never retrieved" warning
        self._waiters.clear()
        self._acks.clear()
        self._requests.clear()
        if self._connected is not None:
            self._connected.set()  # wakes whoever waits for a connection; they see _error
        if self._quota_free is not None:
            self._quota_free.set()

    # ---------------------------------------------------------------------------------------
    # Connecting

    async def _establish(self, clean_start: bool) -> None:
        redirects = 0
        while True:
            try:
                link, connack = await asyncio.wait_for(
                    self._open(clean_start), self.connect_timeout
                )
                break
            except TimeoutError:
                raise ConnectionLost(
                    f"no CONNACK from {self.host}:{self.port} in {self.connect_timeout} s"
                ) from None
            except MQTTError as exc:
                reference = exc.server_reference
                if (
                    exc.reason_code in REDIRECTS
                    and reference
                    and self.follow_redirects
                    and redirects < MAX_REDIRECTS
                ):
                    redirects += 1
                    self.host, self.port = parse_server_reference(reference, self.port)
                    log.info("redirected to %s:%s", self.host, self.port)
                    continue
                raise
        self._link = link
        self._connected_at = asyncio.get_running_loop().time()
        self._inflight = 0
        self._incoming_unacked = 0
        props = connack.properties
        assigned = props.get(Prop.ASSIGNED_CLIENT_IDENTIFIER)
        if assigned and not self.client_id:
            self.client_id = assigned
        # MQTT 3.1's CONNACK has no Session Present flag: a server keeps a session asked for
        # with Clean Session 0, so it is taken as there.
        present = connack.session_present or (self.version == MQTT31 and not clean_start)
        self.connack = ConnectResult(present, connack.reason_code, props)
        if self.version == MQTT5:
            expiry = props.get(Prop.SESSION_EXPIRY_INTERVAL, self.session_expiry)
            self._session_persists = expiry > 0
        else:
            self._session_persists = not self.clean_start
        if self._response_topic is None and props.get(Prop.RESPONSE_INFORMATION):
            info = props[Prop.RESPONSE_INFORMATION]
            self._response_topic = f"{info.rstrip('/')}/{secrets.token_hex(6)}"
        self._resume(link, present)
        if self._quota_free is not None:
            self._quota_free.set()
        if self._connected is not None:
            self._connected.set()
        self._ping_task = asyncio.create_task(self._keep_alive(link))
        if self.on_connection is not None:
            self.on_connection(True)

    async def _open(self, clean_start: bool) -> tuple[_Link, Connack]:
        reader: _Reader
        writer: _Writer
        if self.opener is not None:
            reader, writer = await self.opener()
        elif self.transport == "websockets":
            from midge.client.websocket import open_websocket

            reader, writer = await open_websocket(
                self.host,
                self.port,
                self.tls,
                self.server_hostname,
                self.websocket_path,
                self.local_address,
            )
        elif self.proxy is not None:
            reader, writer = await open_socks5(
                self.proxy,
                self.host,
                self.port,
                self.tls,
                self.server_hostname,
                self.local_address,
            )
        elif self.unix_path is not None:
            reader, writer = await asyncio.open_unix_connection(
                self.unix_path,
                ssl=self.tls,
                server_hostname=(self.server_hostname or self.host) if self.tls else None,
            )
        else:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                local_addr=(self.local_address, 0) if self.local_address else None,
                ssl=self.tls,
                server_hostname=self.server_hostname if self.tls is not None else None,
            )
        decoder = Decoder(
            version=self.version, max_packet_size=self.maximum_packet_size or UNLIMITED_PACKET_SIZE
        )
        link = _Link(reader, writer, decoder, self.version)
        try:
            connack = await self._handshake(link, clean_start)
        except CodecError as exc:
            link.abort()
            raise MQTTError(exc.reason, f"before CONNACK: {exc}") from None
        except BaseException:
            link.abort()
            raise
        link.apply_connack(connack, self.keep_alive)
        if not self.outgoing_topic_aliases:
            link.topic_alias_maximum = 0
        return link, connack

    def _connect_packet(self, clean_start: bool, scram: ScramClient | None) -> Connect:
        props: Properties = {}
        if self.version == MQTT5:
            if self.session_expiry:
                props[Prop.SESSION_EXPIRY_INTERVAL] = self.session_expiry
            if self.receive_maximum != 65535:
                props[Prop.RECEIVE_MAXIMUM] = self.receive_maximum
            if self.maximum_packet_size:
                props[Prop.MAXIMUM_PACKET_SIZE] = self.maximum_packet_size
            if self.topic_alias_maximum:
                props[Prop.TOPIC_ALIAS_MAXIMUM] = self.topic_alias_maximum
            if self.request_response_information:
                props[Prop.REQUEST_RESPONSE_INFORMATION] = 1
            if scram is not None:
                props[Prop.AUTHENTICATION_METHOD] = scram.mechanism
                props[Prop.AUTHENTICATION_DATA] = scram.first()
            props.update(self.connect_properties)
        return Connect(
            client_id=self.client_id,
            protocol_level=self.version,
            protocol_name="MQIsdp" if self.version == MQTT31 else "MQTT",
            clean_start=clean_start,
            keep_alive=self.keep_alive,
            will=self.will,
            username=self.username,
            password=self.password,
            properties=props,
            bridge=self.bridge and self.version != MQTT5,
        )

    async def _handshake(self, link: _Link, clean_start: bool) -> Connack:
        scram = self.auth.exchange() if self.auth is not None else None
        self._write(link, self._connect_packet(clean_start, scram))
        while True:
            packet = await self._next_packet(link)
            if packet is None:
                raise ConnectionLost("the server closed the connection before CONNACK")
            if isinstance(packet, Auth) and scram is not None:
                if packet.reason_code != Reason.CONTINUE_AUTHENTICATION:
                    raise MQTTError(packet.reason_code, packet="AUTH", properties=packet.properties)
                try:
                    final = scram.final(packet.properties.get(Prop.AUTHENTICATION_DATA))
                except ValueError as exc:
                    raise MQTTError(Reason.NOT_AUTHORIZED, str(exc), packet="AUTH") from None
                self._write(
                    link,
                    Auth(
                        Reason.CONTINUE_AUTHENTICATION,
                        {
                            Prop.AUTHENTICATION_METHOD: scram.mechanism,
                            Prop.AUTHENTICATION_DATA: final,
                        },
                    ),
                )
                continue
            if isinstance(packet, Disconnect):
                raise MQTTError(
                    packet.reason_code, packet="DISCONNECT", properties=packet.properties
                )
            if not isinstance(packet, Connack):
                raise MQTTError(
                    Reason.PROTOCOL_ERROR, f"{type(packet).__name__.upper()} before CONNACK"
                )
            if packet.reason_code:
                if self.version == MQTT5:
                    raise MQTTError(
                        packet.reason_code, packet="CONNACK", properties=packet.properties
                    )
                raise MQTTError(
                    V3_TO_V5_CONNACK.get(packet.reason_code, Reason.UNSPECIFIED_ERROR),
                    packet="CONNACK",
                    return_code=packet.reason_code,
                )
            if scram is not None and not scram.verify(
                packet.properties.get(Prop.AUTHENTICATION_DATA)
            ):
                with contextlib.suppress(Exception):
                    self._write(link, Disconnect(Reason.NOT_AUTHORIZED))
                raise MQTTError(
                    Reason.NOT_AUTHORIZED, "the server's SCRAM signature is wrong", packet="CONNACK"
                )
            return packet

    async def _next_packet(self, link: _Link) -> Packet | None:
        """The next packet from the server, or None at end of stream."""
        while not link.leftover:
            data = await link.reader.read(65536)
            if not data:
                return None
            link.leftover.extend(link.decoder.feed(data))
        packet = link.leftover.pop(0)
        if self.packet_hook is not None:
            self.packet_hook(False, packet)
        return packet

    def _resume(self, link: _Link, session_present: bool) -> None:
        """After CONNACK: resend what is in flight; without a session, subscribe again."""
        session = self._session
        if not session_present:
            session.incoming.clear()
            if self.client_id:
                for pid in list(self.store.load(self.client_id).incoming):
                    self.store.remove_incoming(self.client_id, pid)
            for sub in self._subs.values():
                self._send_subscribe(
                    link, [sub.subscription], sub.subscription_identifier, sub.properties
                )
        for pid, entry in list(session.outgoing.items()):
            if entry.phase == "pubrel":
                if session_present:
                    self._write(link, Pubrel(pid))
                    self._inflight += 1
                else:
                    # The server had the message (PUBREC); without its session it forgot the id.
                    self._complete(pid, self._pubrec.pop(pid, PublishResult(0, {}, pid)))
                continue
            publish = entry.publish
            publish.dup = session_present
            self._inflight += 1
            self._write_publish(link, publish)

    # ---------------------------------------------------------------------------------------
    # The reading task

    async def _run(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave every waiter hanging
            log.exception("midge.client reading task failed")
            self._finish(MQTTError(Reason.IMPLEMENTATION_SPECIFIC_ERROR, repr(exc)))

    async def _serve(self) -> None:
        while True:
            link = self._link
            assert link is not None
            error = await self._read(link)
            link.abort()
            if self._ping_task is not None:
                self._ping_task.cancel()
            if self._closing:
                return
            assert self._connected is not None
            self._connected.clear()
            self._link = None
            if self._reauth is not None:
                self._reauth[1].set_exception(error)
                self._reauth = None
            if self.on_connection is not None:
                self.on_connection(False)
            if not self._should_retry(error):
                log.info("connection ended: %s", error)
                self._finish(error)
                return
            log.info("connection lost (%s); reconnecting", error)
            final = await self._reconnect(error)
            if final is not None:
                self._finish(final)
                return

    def _should_retry(self, error: MQTTError) -> bool:
        if self.backoff is None:
            return False
        if error.packet == "DISCONNECT" and not self.reconnect_after_disconnect:
            return False
        if error.reason_code in REDIRECTS and self.follow_redirects and error.server_reference:
            self.host, self.port = parse_server_reference(error.server_reference, self.port)
            return True
        return error.reason_code in RETRYABLE

    async def _reconnect(self, error: MQTTError) -> MQTTError | None:
        backoff = self.backoff
        assert backoff is not None
        # A connection that did not last (a server that accepts and then closes at once, two
        # clients taking the same client identifier from each other) keeps the delay growing.
        lived = asyncio.get_running_loop().time() - self._connected_at
        attempt = self._attempt if lived < max(backoff.maximum, 1.0) else 0
        while not self._closing:
            if backoff.attempts is not None and attempt >= backoff.attempts:
                return error
            await asyncio.sleep(backoff.delay(attempt))
            attempt += 1
            self._attempt = attempt
            try:
                await self._establish(not self._session_persists)
                return None
            except MQTTError as exc:
                if exc.reason_code not in RETRYABLE:
                    return exc
                error = exc
            except OSError as exc:
                error = ConnectionLost(f"cannot connect to {self.host}:{self.port}: {exc}")
            if self.on_connection is not None:
                self.on_connection(False)
        return None

    async def _read(self, link: _Link) -> MQTTError:
        """Handle packets until the connection ends; returns why it ended."""
        try:
            while True:
                packet = await self._next_packet(link)
                if packet is None:
                    return link.error or ConnectionLost("the server closed the connection")
                await self._handle(link, packet)
                if link.error is not None:
                    return link.error
        except CodecError as exc:
            with contextlib.suppress(Exception):
                self._write(link, Disconnect(exc.reason))
            return MQTTError(exc.reason, str(exc))
        except MQTTError as exc:
            return exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            return link.error or ConnectionLost(str(exc))

    def _protocol_error(self, link: _Link, reason: int, why: str) -> None:
        with contextlib.suppress(Exception):
            self._write(
                link, Disconnect(reason, {Prop.REASON_STRING: why} if link.version == 5 else {})
            )
        link.error = MQTTError(reason, why)

    async def _handle(self, link: _Link, packet: Packet) -> None:
        if isinstance(packet, Publish):
            await self._on_publish(link, packet)
        elif isinstance(packet, Puback):
            self._on_puback(packet)
        elif isinstance(packet, Pubrec):
            self._on_pubrec(link, packet)
        elif isinstance(packet, Pubcomp):
            self._on_pubcomp(packet)
        elif isinstance(packet, Pubrel):
            known = packet.packet_id in self._session.incoming
            if known:
                self._session.incoming.discard(packet.packet_id)
                if self.client_id:
                    self.store.remove_incoming(self.client_id, packet.packet_id)
                self._incoming_unacked = max(0, self._incoming_unacked - 1)
            code = Reason.SUCCESS if known else Reason.PACKET_IDENTIFIER_NOT_FOUND
            self._write(link, Pubcomp(packet.packet_id, code))
        elif isinstance(packet, Suback | Unsuback):
            fut = self._acks.pop(packet.packet_id, None)
            if fut is not None and not fut.done():
                fut.set_result(packet)
        elif isinstance(packet, Pingresp):
            link.ping_sent = None
        elif isinstance(packet, Disconnect):
            link.error = MQTTError(
                packet.reason_code, packet="DISCONNECT", properties=packet.properties
            )
        elif isinstance(packet, Auth):
            self._on_auth(link, packet)
        else:
            self._protocol_error(
                link, Reason.PROTOCOL_ERROR, f"unexpected {type(packet).__name__.upper()}"
            )

    def _on_auth(self, link: _Link, packet: Auth) -> None:
        """The server's side of a re-authentication this client started (MQTT 5 4.12.1)."""
        pending = self._reauth
        if pending is None:
            self._protocol_error(link, Reason.PROTOCOL_ERROR, "AUTH without a re-authentication")
            return
        scram, fut = pending
        data = packet.properties.get(Prop.AUTHENTICATION_DATA)
        if packet.reason_code == Reason.CONTINUE_AUTHENTICATION:
            try:
                final = scram.final(data)
            except ValueError as exc:
                self._reauth = None
                self._protocol_error(link, Reason.NOT_AUTHORIZED, str(exc))
                fut.set_exception(MQTTError(Reason.NOT_AUTHORIZED, str(exc), packet="AUTH"))
                return
            props: Properties = {
                Prop.AUTHENTICATION_METHOD: scram.mechanism,
                Prop.AUTHENTICATION_DATA: final,
            }
            self._write(link, Auth(Reason.CONTINUE_AUTHENTICATION, props))
            return
        self._reauth = None
        if packet.reason_code == Reason.SUCCESS and scram.verify(data):
            fut.set_result(None)
            return
        why = "the server's SCRAM signature is wrong"
        self._protocol_error(link, Reason.NOT_AUTHORIZED, why)
        fut.set_exception(MQTTError(Reason.NOT_AUTHORIZED, why, packet="AUTH"))

    async def reauthenticate(self) -> None:
        """Run the enhanced authentication again on the open connection (AUTH 0x19, MQTT 5
        4.12.1), with ``self.auth`` (which may have been replaced, e.g. by a new password).
        Returns once the server has accepted it; a refusal (the server disconnects, 0x87) raises
        :class:`MQTTError` and ends the client."""
        if self.auth is None:
            raise ValueError("reauthenticate needs auth= (enhanced authentication)")
        if self._reauth is not None:
            raise MQTTError(Reason.PROTOCOL_ERROR, "a re-authentication is already running")
        link = await self._ready()
        scram = self.auth.exchange()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reauth = (scram, fut)
        self._wake_reader()
        props: Properties = {
            Prop.AUTHENTICATION_METHOD: scram.mechanism,
            Prop.AUTHENTICATION_DATA: scram.first(),
        }
        self._write(link, Auth(Reason.RE_AUTHENTICATE, props))
        await fut

    async def _on_publish(self, link: _Link, packet: Publish) -> None:
        props = packet.properties
        topic = packet.topic
        alias = props.get(Prop.TOPIC_ALIAS)
        if alias is not None:
            if not 0 < alias <= self.topic_alias_maximum:
                self._protocol_error(link, Reason.TOPIC_ALIAS_INVALID, f"topic alias {alias}")
                return
            if topic:
                link.aliases_in[alias] = topic
            else:
                known = link.aliases_in.get(alias)
                if known is None:
                    self._protocol_error(
                        link, Reason.PROTOCOL_ERROR, f"unknown topic alias {alias}"
                    )
                    return
                topic = known
            props = {k: v for k, v in props.items() if k != Prop.TOPIC_ALIAS}
        message = Message(topic, packet.payload, packet.qos, packet.retain, props, packet.packet_id)
        qos, pid = packet.qos, packet.packet_id
        if qos == 0 and self._arriving_qos0 >= self.queue_size and self._awaiting():
            # The application waits for an answer that may be behind this message on the
            # socket, and queue_size QoS 0 messages already wait for it: drop (at most once),
            # rather than stop reading and never see the answer.
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%d QoS 0 message(s) dropped: the inboxes are full", self.dropped)
            return
        if qos and pid is not None:
            self._incoming_unacked += 1
            if self._incoming_unacked > self.receive_maximum and link.version == MQTT5:
                if self.enforce_receive_maximum:
                    why = "receive maximum exceeded"
                    self._protocol_error(link, Reason.RECEIVE_MAXIMUM_EXCEEDED, why)
                    return
                if not link.overrun:
                    link.overrun = True
                    log.warning(
                        "%s:%s sends more than this client's Receive Maximum (%d) of "
                        "unacknowledged messages; accepted",
                        self.host,
                        self.port,
                        self.receive_maximum,
                    )
            if qos == 2:
                # A QoS 2 message is delivered once: a PUBLISH the server resends (DUP 1) with
                # an id not yet released is only acknowledged again (MQTT-4.3.3-9). A DUP 0
                # PUBLISH is a first attempt (MQTT-3.3.1-1 makes every resend DUP 1), so its id
                # held here can only mean a server that lost its state (a crash before its store
                # caught up) and reuses the id for a new message: it is delivered, not lost.
                if packet.dup and pid in self._session.incoming:
                    self._incoming_unacked -= 1  # counted when first received
                    if pid in self._arriving_ids:  # PUBREC each, in order, once delivered
                        self._arriving_ids[pid].append(link)
                    else:
                        self._write(link, Pubrec(pid))
                    return
                self._session.incoming.add(pid)
                if self.client_id and self._session_persists and self.handler is None:
                    self.store.add_incoming(self.client_id, pid)
            self._arriving_ids[pid] = [link]
        else:
            self._arriving_qos0 += 1
        # A response to a request() is handed over now, not behind messages the application
        # has not taken yet (it may be waiting for this response before it takes them).
        deliver = not self._take_response(message)
        self._arrivals.append((link, message, pid, deliver))
        arrived, room = self._arrived, self._room
        assert arrived is not None and room is not None
        arrived.set()
        # Back-pressure: stop reading while queue_size QoS 0 messages wait and the application
        # waits for no acknowledgement, or once queue_size + receive_maximum messages wait (QoS
        # 1/2 ones are bounded by receive_maximum anyway in MQTT 5: the server may not send
        # more unacknowledged; this bounds an MQTT 3.1.1 server too).
        while not self._closing and (
            (self._arriving_qos0 >= self.queue_size and not self._awaiting())
            or len(self._arrivals) >= self.queue_size + self.receive_maximum
        ):
            self._reading_blocked = True
            room.clear()
            try:
                await room.wait()
            finally:
                self._reading_blocked = False

    def _awaiting(self) -> bool:
        """Whether the application waits for something only the socket can bring."""
        return bool(self._waiters or self._acks or self._requests or self._reauth)

    def _wake_reader(self) -> None:
        """Something is awaited now: a reader stopped by back-pressure reconsiders."""
        if self._room is not None:
            self._room.set()

    def _take_response(self, message: Message) -> bool:
        correlation = message.correlation_data
        if correlation is None:
            return False
        fut = self._requests.pop(correlation, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(message)
            return True
        # A late response to a request given up is dropped too.
        return self._response_topic is not None and message.topic == self._response_topic

    async def _pump(self) -> None:
        """Moves arrived messages into their inboxes, in order, and acknowledges each QoS 1/2
        one once it is in (PUBACK / PUBREC, in the order received: MQTT-4.6.0-2). Acks whose
        connection has gone are not sent: the server resends those messages."""
        arrivals = self._arrivals
        arrived, room = self._arrived, self._room
        assert arrived is not None and room is not None
        while True:
            while not arrivals:
                arrived.clear()
                await arrived.wait()
            _, message, pid, deliver = arrivals[0]
            settled: Settled = None
            if deliver:
                settled = await self._deliver(message, pid)
            arrivals.popleft()
            room.set()
            if pid is None:
                self._arriving_qos0 -= 1
                continue
            if settled is None and not self._settling:
                self._acknowledge(message, pid)
            else:  # acknowledged once settled, after those before it
                assert self._settled is not None
                self._settling.append((message, pid, settled))
                self._settled.set()

    async def _acknowledger(self) -> None:
        """Acknowledges, in the order received, the messages a ``handler`` handed over, each
        once its settlement (the other side's acknowledgement, for a bridge) has come."""
        settling, wake = self._settling, self._settled
        assert wake is not None
        while True:
            while not settling:
                wake.clear()
                await wake.wait()
            message, pid, settled = settling[0]
            if settled is not None:
                try:
                    await settled
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Not acknowledged: the server sends it again on the next connection.
                    if isinstance(exc, MQTTError):
                        log.debug("message %s not acknowledged: %s", pid, exc)
                    else:
                        log.exception("the handler failed to settle message %s", pid)
                    settling.popleft()
                    self._arriving_ids.pop(pid, None)
                    continue
            settling.popleft()
            self._acknowledge(message, pid)

    def _drop_settling(self) -> None:
        """Forget the settlements awaited (the client ended): none is acknowledged."""
        for _, _, settled in self._settling:
            # Never started: closed (no "never awaited" warning). The one the acknowledger
            # awaits ends with the acknowledger's cancellation.
            if (
                inspect.iscoroutine(settled)
                and inspect.getcoroutinestate(settled) == "CORO_CREATED"
            ):
                settled.close()
        self._settling.clear()

    def _acknowledge(self, message: Message, pid: int) -> None:
        """PUBACK / PUBREC ``pid`` on the connection(s) its PUBLISH came by that are still up:
        the original, and for QoS 2 each resend received meanwhile. Acks whose connection has
        gone are not sent: the server resends those messages."""
        links = self._arriving_ids.pop(pid, [])
        for link in links:
            if link is not self._link or link.writer.transport.is_closing():
                continue
            if message.qos == 1:
                self._incoming_unacked -= 1
                self._write(link, Puback(pid))
            else:
                self._write(link, Pubrec(pid))

    async def _deliver(self, message: Message, pid: int | None = None) -> Settled:
        if self.handler is not None:
            client_id = self.client_id

            def accepted() -> None:
                if pid is not None and message.qos == 2 and client_id and self._session_persists:
                    self.store.add_incoming(client_id, pid)

            return await self.handler(message, accepted)
        targets: list[_Inbox] = []
        ids = message.subscription_identifiers
        for route in self._routes:
            if route.subscription_identifier is not None and ids:
                if route.subscription_identifier in ids:
                    targets.append(route.inbox)
            elif any(topic_matches(split_shared(f)[1], message.topic) for f in route.filters):
                targets.append(route.inbox)
        if not targets:
            assert self._main is not None
            targets.append(self._main)
        for inbox in targets:
            await inbox.put(message)
        return None

    def _on_puback(self, packet: Puback) -> None:
        pid = packet.packet_id
        if pid not in self._session.outgoing:
            return
        result = PublishResult(packet.reason_code, packet.properties, pid)
        if packet.reason_code >= 0x80:
            error = MQTTError(
                packet.reason_code, packet="PUBACK", properties=packet.properties, packet_id=pid
            )
            self._fail(pid, error)
        else:
            self._complete(pid, result)

    def _on_pubrec(self, link: _Link, packet: Pubrec) -> None:
        pid = packet.packet_id
        entry = self._session.outgoing.get(pid)
        if entry is None:
            self._write(link, Pubrel(pid, Reason.PACKET_IDENTIFIER_NOT_FOUND))
            return
        if packet.reason_code >= 0x80:
            error = MQTTError(
                packet.reason_code, packet="PUBREC", properties=packet.properties, packet_id=pid
            )
            self._fail(pid, error)
            return
        self._pubrec[pid] = PublishResult(packet.reason_code, packet.properties, pid)
        if entry.phase != "pubrel":
            entry.phase = "pubrel"
            if self.client_id:
                self.store.put_outgoing(self.client_id, pid, entry)
        self._write(link, Pubrel(pid))

    def _on_pubcomp(self, packet: Pubcomp) -> None:
        pid = packet.packet_id
        if pid in self._session.outgoing:
            self._complete(pid, self._pubrec.pop(pid, PublishResult(0, packet.properties, pid)))

    def _release(self, pid: int) -> None:
        self._session.outgoing.pop(pid, None)
        self._pubrec.pop(pid, None)
        if self.client_id:
            self.store.remove_outgoing(self.client_id, pid)
        self._inflight = max(0, self._inflight - 1)
        if self._quota_free is not None:
            self._quota_free.set()

    def _complete(self, pid: int, result: PublishResult) -> None:
        self._release(pid)
        fut = self._waiters.pop(pid, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def _fail(self, pid: int, error: MQTTError) -> None:
        self._release(pid)
        fut = self._waiters.pop(pid, None)
        if fut is not None and not fut.done():
            fut.set_exception(error)

    async def _keep_alive(self, link: _Link) -> None:
        interval = link.keep_alive
        if not interval:
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(interval / 4, 5.0))
            now = loop.time()
            if link.ping_sent is not None:
                if self._reading_blocked:
                    link.ping_sent = now  # its PINGRESP cannot be read now: not held against it
                elif now - link.ping_sent > interval:
                    link.error = MQTTError(Reason.KEEP_ALIVE_TIMEOUT, "no PINGRESP")
                    link.abort()
                    return
            elif now - link.last_write >= interval / 2:
                link.ping_sent = now
                self._write(link, Pingreq())

    # ---------------------------------------------------------------------------------------
    # Writing

    def _write(self, link: _Link, packet: Packet) -> None:
        data = encode(packet, link.version)
        if len(data) > link.maximum_packet_size:
            raise MQTTError(
                Reason.PACKET_TOO_LARGE,
                f"{len(data)} bytes, the server accepts {link.maximum_packet_size}",
            )
        if self.packet_hook is not None:
            self.packet_hook(True, packet)
        link.writer.write(data)
        link.last_write = asyncio.get_running_loop().time()

    def _write_publish(self, link: _Link, publish: Publish) -> None:
        """PUBLISH with an outgoing topic alias where the server allows one (MQTT 5 3.3.2.3.4)."""
        if link.topic_alias_maximum and publish.topic:
            alias = link.aliases_out.get(publish.topic)
            props = dict(publish.properties)
            wire_topic = publish.topic
            if alias is None and len(link.aliases_out) < link.topic_alias_maximum:
                alias = link.aliases_out[publish.topic] = len(link.aliases_out) + 1
            elif alias is not None:
                wire_topic = ""
            if alias is not None:
                props[Prop.TOPIC_ALIAS] = alias
                wire = Publish(
                    wire_topic,
                    publish.payload,
                    publish.qos,
                    publish.retain,
                    publish.dup,
                    publish.packet_id,
                    props,
                )
                try:
                    self._write(link, wire)
                except MQTTError:
                    if wire_topic:  # the alias was never established
                        link.aliases_out.pop(publish.topic, None)
                    raise
                return
        self._write(link, publish)

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            pid = self._next_id
            if pid not in self._session.outgoing and pid not in self._acks:
                return pid
        raise MQTTError(Reason.QUOTA_EXCEEDED, "all 65,535 packet identifiers are in use")

    async def _ready(self) -> _Link:
        """The current connection, waiting for a reconnect; raises once the client has ended."""
        while True:
            if self._error is not None:
                raise self._error
            if self._closing or self._connected is None:
                raise MQTTError(Reason.UNSPECIFIED_ERROR, "the client is not connected")
            link = self._link
            if link is not None and self._connected.is_set():
                return link
            await self._connected.wait()

    # ---------------------------------------------------------------------------------------
    # Publishing

    async def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        properties: Properties | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        content_type: str | None = None,
        message_expiry: int | None = None,
        payload_format_indicator: int | None = None,
        on_stored: Callable[[], None] | None = None,
    ) -> PublishResult:
        """Publish and wait for the acknowledgement: QoS 0 returns once written, QoS 1 at
        PUBACK, QoS 2 at PUBCOMP (with PUBREC's reason code and properties). A failure reason
        code (>= 0x80) raises :class:`MQTTError`. Waits while disconnected (reconnecting) and
        while the server's Receive Maximum of in-flight messages is reached. ``on_stored`` is
        called once the message is in this client's session store (QoS 0: once written), before
        its acknowledgement is awaited (a bridge's exactly-once hand-over)."""
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS {qos}")
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        props: Properties = dict(properties or {})
        if user_properties:
            props.setdefault(Prop.USER_PROPERTY, []).extend(user_properties)
        if response_topic is not None:
            props[Prop.RESPONSE_TOPIC] = response_topic
        if correlation_data is not None:
            props[Prop.CORRELATION_DATA] = correlation_data
        if content_type is not None:
            props[Prop.CONTENT_TYPE] = content_type
        if message_expiry is not None:
            props[Prop.MESSAGE_EXPIRY_INTERVAL] = message_expiry
        if payload_format_indicator is not None:
            props[Prop.PAYLOAD_FORMAT_INDICATOR] = payload_format_indicator
        return await (await self.start_publish(topic, data, qos, retain, props, on_stored))

    async def start_publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        on_stored: Callable[[], None] | None = None,
    ) -> asyncio.Future[PublishResult]:
        """Send a message and return its acknowledgement, a future, without awaiting it (as
        :meth:`publish` does), so that several may be in flight: returns once the message is
        written (and with ``on_stored``, in the session store), having waited while disconnected
        and while the in-flight window (the server's Receive Maximum, ``send_maximum``) is
        full. QoS 0: a future already done."""
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS {qos}")
        props: Properties = dict(properties or {}) if self.version == MQTT5 else {}
        data = payload
        link = await self._ready()
        if qos > link.maximum_qos:
            raise MQTTError(
                Reason.QOS_NOT_SUPPORTED, f"the server's maximum QoS is {link.maximum_qos}"
            )
        if retain and not link.retain_available:
            raise MQTTError(
                Reason.RETAIN_NOT_SUPPORTED, "the server does not keep retained messages"
            )
        if qos == 0:
            self._write_publish(link, Publish(topic, data, 0, retain, False, None, props))
            if on_stored is not None:
                on_stored()
            try:
                await link.writer.drain()
            except OSError as exc:  # the connection went while the message was leaving
                raise ConnectionLost(f"QoS 0 message may be lost: {exc}") from exc
            done: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
            done.set_result(PublishResult())
            return done
        # Receive Maximum: the server takes at most this many unacknowledged QoS 1/2 PUBLISH.
        while True:
            link = await self._ready()
            if self._inflight < min(link.receive_maximum, self.send_maximum):
                break
            assert self._quota_free is not None
            self._quota_free.clear()
            await self._quota_free.wait()
        pid = self._packet_id()
        publish = Publish(topic, data, qos, retain, False, pid, props)
        fut: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        entry = Outgoing(publish)
        if on_stored is not None:
            # Stored before it can reach the wire: a crash between the two must not leave the
            # server with a message this client's store does not know it sent.
            # One commit for both: this message and what on_stored records (a bridge: the id
            # it received, so that a crash between the two cannot forward a resend again).
            persists = bool(self.client_id) and self._session_persists
            with self.store.atomic():
                if persists:
                    self.store.put_outgoing(self.client_id, pid, entry)
                on_stored()
            try:
                self._write_publish(link, publish)
            except MQTTError:  # too large for the server (0x95): never sent
                if persists:
                    self.store.remove_outgoing(self.client_id, pid)
                raise
        else:
            self._write_publish(link, publish)  # raises (0x95) before anything is recorded
            if self.client_id and self._session_persists:
                self.store.put_outgoing(self.client_id, pid, entry)
        self._session.outgoing[pid] = entry
        self._waiters[pid] = fut
        self._wake_reader()
        self._inflight += 1
        with contextlib.suppress(OSError):  # lost connection: resent after reconnecting
            await link.writer.drain()
        return fut

    # ---------------------------------------------------------------------------------------
    # Subscribing

    def _send_subscribe(
        self,
        link: _Link,
        subscriptions: list[Subscription],
        subscription_identifier: int | None,
        properties: Properties,
    ) -> asyncio.Future[Packet]:
        pid = self._packet_id()
        props = dict(properties) if link.version == MQTT5 else {}
        if subscription_identifier is not None and link.subscription_identifiers:
            props[Prop.SUBSCRIPTION_IDENTIFIER] = [subscription_identifier]
        fut: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._acks[pid] = fut
        self._wake_reader()
        self._write(link, Subscribe(pid, subscriptions, props))
        return fut

    async def subscribe(
        self,
        topic_filter: str | Sequence[str],
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        subscription_identifier: int | None = None,
        properties: Properties | None = None,
    ) -> SubscribeResult:
        """Subscribe to one filter or several (the same options for each); shared subscriptions
        are ``$share/GROUP/FILTER``. Returns the granted QoS of each; a refused filter raises
        :class:`MQTTError` with its reason code. Kept to be made again after a lost session."""
        filters = [topic_filter] if isinstance(topic_filter, str) else list(topic_filter)
        subs = [
            Subscription(f, qos, no_local, retain_as_published, retain_handling) for f in filters
        ]
        props = dict(properties or {})
        link = await self._ready()
        packet = await self._send_subscribe(link, subs, subscription_identifier, props)
        assert isinstance(packet, Suback)
        for sub, code in zip(subs, packet.reason_codes, strict=False):
            if code < 0x80:
                self._subs[sub.topic_filter] = _Sub(sub, subscription_identifier, props)
        failed = [c for c in packet.reason_codes if c >= 0x80]
        if failed:
            raise MQTTError(
                failed[0],
                f"SUBACK reason codes {[hex(c) for c in packet.reason_codes]}",
                packet="SUBACK",
                properties=packet.properties,
                reason_codes=packet.reason_codes,
            )
        return SubscribeResult(
            list(packet.reason_codes), packet.properties, subscription_identifier
        )

    async def unsubscribe(
        self, topic_filter: str | Sequence[str], *, properties: Properties | None = None
    ) -> list[int]:
        """Unsubscribe; returns UNSUBACK's reason codes (MQTT 5; [] for 3.1.1)."""
        filters = [topic_filter] if isinstance(topic_filter, str) else list(topic_filter)
        for f in filters:
            self._subs.pop(f, None)
        link = await self._ready()
        pid = self._packet_id()
        fut: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._acks[pid] = fut
        self._wake_reader()
        props = dict(properties or {}) if link.version == MQTT5 else {}
        self._write(link, Unsubscribe(pid, filters, props))
        packet = await fut
        assert isinstance(packet, Unsuback)
        return list(packet.reason_codes)

    def messages(self) -> AsyncIterator[Message]:
        """Every received message that no :meth:`subscription` iterator takes, in order. The
        inbox behind it holds ``queue_size`` messages; when it is full the client stops reading
        the socket until the consumer catches up (TCP back-pressure; nothing is dropped). Ends
        when the client is closed; raises the :class:`MQTTError` that ended it."""
        assert self._main is not None, "connect first"
        return self._main

    @contextlib.asynccontextmanager
    async def subscription(
        self,
        topic_filter: str | Sequence[str],
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        properties: Properties | None = None,
    ) -> AsyncIterator[AsyncIterator[Message]]:
        """Subscribe for the duration of an ``async with`` block, whose target iterates the
        messages of this subscription only (MQTT 5: routed by a Subscription Identifier the
        client allocates, so overlapping filters are told apart; 3.1.1: by topic matching).
        Unsubscribes on exit."""
        filters = [topic_filter] if isinstance(topic_filter, str) else list(topic_filter)
        link = await self._ready()
        sub_id: int | None = None
        if link.subscription_identifiers:
            self._next_sub_id += 1
            sub_id = self._next_sub_id
        route = _Route(_Inbox(self.queue_size), filters, sub_id)
        self._routes.append(route)
        try:
            await self.subscribe(
                filters,
                qos,
                no_local=no_local,
                retain_as_published=retain_as_published,
                retain_handling=retain_handling,
                subscription_identifier=sub_id,
                properties=properties,
            )
            yield route.inbox
        finally:
            self._routes.remove(route)
            route.inbox.end(None)
            if not self._closing:
                with contextlib.suppress(MQTTError):
                    await self.unsubscribe(filters)

    # ---------------------------------------------------------------------------------------
    # Request / response (MQTT 5 4.10)

    async def request(
        self,
        topic: str,
        payload: bytes | str = b"",
        *,
        qos: int = 1,
        timeout: float | None = 10.0,
        properties: Properties | None = None,
    ) -> Message:
        """Publish a request with a Response Topic and fresh Correlation Data, and return the
        response (the first message carrying that Correlation Data). The response topic is
        subscribed once per client: under the server's Response Information when
        ``request_response_information`` got one, else ``midge/responses/<client id>/<random>``.
        ``TimeoutError`` after ``timeout`` seconds."""
        if self.version != MQTT5:
            raise MQTTError(Reason.PROTOCOL_ERROR, "request/response needs MQTT 5")
        assert self._response_lock is not None
        async with self._response_lock:
            if self._response_topic is None:
                self._response_topic = (
                    f"midge/responses/{self.client_id or 'anonymous'}/{secrets.token_hex(6)}"
                )
            if self._response_topic not in self._subs:
                await self.subscribe(self._response_topic, qos)
        correlation = secrets.token_bytes(16)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._requests[correlation] = fut
        self._wake_reader()
        try:
            await self.publish(
                topic,
                payload,
                qos,
                properties=properties,
                response_topic=self._response_topic,
                correlation_data=correlation,
            )
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._requests.pop(correlation, None)

    async def respond(
        self, request: Message, payload: bytes | str = b"", *, qos: int = 1, **kwargs: Any
    ) -> PublishResult:
        """Answer ``request``: publish to its Response Topic with its Correlation Data."""
        if request.response_topic is None:
            raise ValueError("the request has no Response Topic")
        return await self.publish(
            request.response_topic,
            payload,
            qos,
            correlation_data=request.correlation_data,
            **kwargs,
        )
