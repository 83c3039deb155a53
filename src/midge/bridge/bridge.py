"""One running bridge: two midge clients and the topic mapping between them.

The **local side** is an ordinary session of this broker: a :class:`~midge.client.Client` whose
byte stream is one end of a socket pair, the other end handed to the broker's TCP glue as an
accepted connection. So the bridge's local session goes through the broker core exactly like
any client's (authentication with ``local_username``, ACLs, retained messages, QoS, its
persistent session in the store under ``local_clientid``), with no second code path. It
subscribes to the ``out`` / ``both`` patterns (MQTT 5, No Local: what the bridge itself
published locally never goes back out) and publishes what the ``in`` patterns bring.

The **remote side** is a :class:`~midge.client.Client` to the remote broker, with Mosquitto's
bridge marker (``try_private``) on MQTT 3.1.1 and No Local subscriptions on MQTT 5.

Each message is handed over by the receiving client's ``handler`` and acknowledged to its
sender only once the other side has acknowledged it: a QoS 1/2 message bound for the remote
stays in this broker's store (the local session's in-flight or queued messages) until the remote
has it, so a kill -9 of midge or a restart of the remote loses nothing that was acknowledged.
Meanwhile the next messages are handed over (``Client.start_publish``; the handler returns the
acknowledgement to wait for and the receiving client sends its own acknowledgements in order):
a window of ``max_inflight_messages`` each way, or the remote's smaller Receive Maximum, as
Mosquitto's bridge keeps.

State: ``$SYS/broker/connection/NAME/state`` and the notification topic
(``$SYS/broker/connection/REMOTE_CLIENTID/state`` by default) are 1 while connected and 0 when
not, retained; on the remote the notification topic gets 1 at connection and 0 from the will.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

from midge.bridge.options import BOTH, IN, OUT, BridgeConfig, BridgeTopic
from midge.broker.connection import Connection
from midge.broker.model import Message as CoreMessage
from midge.client.client import Backoff, Client, Settled
from midge.client.errors import MQTTError
from midge.client.message import Message, PublishResult
from midge.client.store import MemorySessionStore, SessionStore, SqliteSessionStore
from midge.codec.packets import MQTT5, MQTT31, MQTT311, Will
from midge.codec.properties import Prop
from midge.codec.reasons import Reason
from midge.codec.topics import topic_matches
from midge.config import Config, ListenerConfig, resolve_listener
from midge.transport.accept import ListenerState
from midge.transport.tcp import MQTTProtocol

if TYPE_CHECKING:
    from midge.broker.broker import Broker
    from midge.transport.writer import TurnWrites

log = logging.getLogger("midge.bridge")

#: The properties a message keeps from one side to the other (not the hop's own: aliases,
#: subscription identifiers).
_KEPT = (
    Prop.PAYLOAD_FORMAT_INDICATOR,
    Prop.MESSAGE_EXPIRY_INTERVAL,
    Prop.CONTENT_TYPE,
    Prop.RESPONSE_TOPIC,
    Prop.CORRELATION_DATA,
    Prop.USER_PROPERTY,
)
#: A session that does not expire (the local session of a bridge with local_cleansession false).
NEVER = 0xFFFFFFFF


def remap_out(topics: list[BridgeTopic], topic: str) -> tuple[str, BridgeTopic] | None:
    """A local topic as the remote sees it: the first ``out``/``both`` pattern whose local form
    matches; its local prefix removed, its remote prefix added (Mosquitto's bridge remapping)."""
    for t in topics:
        if t.direction not in (OUT, BOTH) or not topic_matches(t.local_topic, topic):
            continue
        if t.local_prefix and topic.startswith(t.local_prefix):
            topic = topic[len(t.local_prefix) :]
        return (t.remote_prefix or "") + topic, t
    return None


def remap_in(topics: list[BridgeTopic], topic: str) -> str | None:
    """A remote topic as this broker sees it (Mosquitto's bridge__remap_topic_in)."""
    for t in topics:
        if t.direction not in (IN, BOTH) or not topic_matches(t.remote_topic, topic):
            continue
        if t.remote_prefix and topic.startswith(t.remote_prefix):
            topic = topic[len(t.remote_prefix) :]
        return (t.local_prefix or "") + topic
    return None


def tls_context(cfg: BridgeConfig) -> ssl.SSLContext | None:
    """The remote connection's TLS (bridge_cafile / capath set), as Mosquitto's bridge does."""
    if not cfg.tls:
        return None
    context = ssl.create_default_context(cafile=cfg.bridge_cafile, capath=cfg.bridge_capath)
    if cfg.bridge_certfile and cfg.bridge_keyfile:
        context.load_cert_chain(cfg.bridge_certfile, cfg.bridge_keyfile)
    if cfg.bridge_insecure:
        context.check_hostname = False
    if cfg.bridge_tls_version:
        context.minimum_version = {
            "tlsv1.3": ssl.TLSVersion.TLSv1_3,
            "tlsv1.2": ssl.TLSVersion.TLSv1_2,
            "tlsv1.1": ssl.TLSVersion.TLSv1_1,
        }[cfg.bridge_tls_version]
    if cfg.bridge_alpn:
        context.set_alpn_protocols([cfg.bridge_alpn])
    return context


#: Reasons that refuse one message for good (no use sending it again): the receiver's negative
#: PUBACK / PUBREC, or what this side knows the receiver does not take.
_REFUSED_HERE = frozenset(
    {Reason.PACKET_TOO_LARGE, Reason.QOS_NOT_SUPPORTED, Reason.RETAIN_NOT_SUPPORTED}
)


def refused(exc: MQTTError) -> bool:
    """Whether ``exc`` refuses the message itself (rather than losing the connection)."""
    return exc.packet in ("PUBACK", "PUBREC") or exc.reason_code in _REFUSED_HERE


def stale_stores(config: Config) -> list[str]:
    """The ``bridge-NAME.db`` files in the data directory of bridges no longer configured (kept:
    they may hold messages in flight; the start-up log names them)."""
    if not config.data_dir or config.durability == "none" or not os.path.isdir(config.data_dir):
        return []
    wanted = {f"bridge-{b.name}.db" for b in config.bridges}
    return sorted(
        os.path.join(config.data_dir, f)
        for f in os.listdir(config.data_dir)
        if f.startswith("bridge-") and f.endswith(".db") and f not in wanted
    )


class Bridge:
    """One ``connection`` section, running on the broker's loop (see the module docstring)."""

    def __init__(self, cfg: BridgeConfig, broker: Broker, writes: TurnWrites) -> None:
        self.cfg = cfg
        self.broker = broker
        self.writes = writes
        self.listener: ListenerConfig = resolve_listener(
            broker.config, ListenerConfig(port=0, host="bridge")
        )
        self.listening = ListenerState(self.listener)
        self.local: Client | None = None
        self.remote: Client | None = None
        self.connected = False
        self._remote_ready = asyncio.Event()
        self._store: SessionStore = self._session_store()
        self._remote_store = self._store
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._address = 0
        self._wanted = asyncio.Event()  # lazy: a message waits for the remote
        self._last_traffic = 0.0
        self._pending: set[asyncio.Task[object]] = set()

    def _window(self) -> int:
        """How many QoS 1/2 messages may be in flight each way: ``max_inflight_messages``
        (0: unlimited), as for a Mosquitto bridge."""
        return self.broker.config.max_inflight_messages or 65535

    def _session_store(self) -> SessionStore:
        """Where both clients keep their in-flight state: with a durable broker, an SQLite file
        next to its database (``bridge-NAME.db``), so that after a kill -9 the resends of both
        sessions are recognised and nothing QoS 2 is forwarded twice."""
        config = self.broker.config
        if config.data_dir and config.durability != "none":
            path = os.path.join(config.data_dir, f"bridge-{self.cfg.name}.db")
            return SqliteSessionStore(path, durable=config.durability == "fsync")
        return MemorySessionStore()

    # -- the local side: a session of this broker over a socket pair

    async def _open_local(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        broker = self.broker

        def protocol() -> MQTTProtocol:
            return MQTTProtocol(broker, self.listener, self.listening, self.writes)

        transport, _ = await loop.connect_accepted_socket(protocol, sock=theirs)
        conn = transport.get_protocol()  # the Connection the TCP glue handed the socket to
        if isinstance(conn, Connection):
            conn.peer = f"bridge {self.cfg.name}"  # its address in the logs
        return await asyncio.open_connection(sock=ours)

    def _state(self, value: bool) -> None:
        """The retained state topics on this broker (Mosquitto publishes them internally,
        bypassing ACLs; so does midge)."""
        cfg = self.cfg
        if not cfg.notifications:
            return
        payload = b"1" if value else b"0"
        topics = {f"$SYS/broker/connection/{cfg.name}/state"}
        if cfg.notification_topic:
            topics.add(cfg.notification_topic)
        for topic in sorted(topics):
            self.broker.publish(CoreMessage(topic, payload, 1, True))

    # -- life cycle

    async def start(self) -> None:
        cfg = self.cfg
        clean = cfg.clean_local
        self.local = Client(
            client_id=cfg.local_clientid or "",
            version=MQTT5,
            clean_start=clean,
            session_expiry=0 if clean else NEVER,
            keep_alive=0,
            username=cfg.local_username,
            password=cfg.local_password,
            handler=self._outgoing,
            opener=self._open_local,
            reconnect=Backoff(initial=0.1, maximum=2.0),
            # What waits for the remote waits in this broker's store (the session's queue),
            # not in the client's memory; the window of messages in flight towards the remote.
            receive_maximum=self._window(),
            queue_size=100,
            session_store=self._store,
        )
        self._state(False)
        await self.local.connect()
        await self._subscribe_local(retained=False)
        log.info("bridge %s: local session %s started", cfg.name, cfg.local_clientid)
        self._task = asyncio.create_task(self._run(), name=f"midge bridge {cfg.name}")

    async def _say_stopped(self, remote: Client) -> None:
        """Before a clean DISCONNECT (which suppresses the will), publish 0 on the remote's
        notification topic ourselves."""
        cfg = self.cfg
        if (
            remote.connected
            and cfg.notifications
            and not cfg.notifications_local_only
            and cfg.notification_topic
        ):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(remote.publish(cfg.notification_topic, b"0", 1, True), 2.0)

    async def _subscribe_local(self, retained: bool = True) -> None:
        """Subscribe the local session to the out patterns: at start, and again at each
        connection to the remote, so that this broker's retained messages on them go to the
        remote each time, as Mosquitto queues them (retain__queue) when its bridge connects."""
        local = self.local
        assert local is not None
        for t in self.cfg.topics:
            if t.direction in (OUT, BOTH):
                await local.subscribe(
                    t.local_topic,
                    t.qos,
                    no_local=True,
                    retain_as_published=True,
                    retain_handling=0 if retained else 2,
                )

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.remote is not None:
            await self._say_stopped(self.remote)
        for client in (self.remote, self.local):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), 2.0)
        if isinstance(self._store, SqliteSessionStore):
            self._store.close()
        for task in list(self._pending):
            task.cancel()

    # -- the remote side

    def _backoff(self) -> Backoff:
        base, cap = self.cfg.restart_timeout
        if base == cap:
            return Backoff(initial=base, maximum=base, factor=1.0, jitter=0.0)
        return Backoff(initial=base, maximum=cap, factor=2.0, jitter=0.5)

    def _next_address(self) -> tuple[str, int]:
        return self.cfg.addresses[self._address % len(self.cfg.addresses)]

    def _remote_client(self) -> Client:
        cfg = self.cfg
        host, port = self._next_address()
        v5 = cfg.bridge_protocol_version == "mqttv50"
        version = {"mqttv31": MQTT31, "mqttv311": MQTT311, "mqttv50": MQTT5}[
            cfg.bridge_protocol_version
        ]
        will = None
        if cfg.notifications and not cfg.notifications_local_only and cfg.notification_topic:
            will = Will(cfg.notification_topic, b"0", 1, True)
        return Client(
            host,
            port,
            client_id=cfg.remote_clientid or "",
            version=version,
            clean_start=cfg.cleansession,
            session_expiry=0 if cfg.cleansession or not v5 else NEVER,
            keep_alive=cfg.keepalive_interval,
            username=cfg.remote_username,
            password=cfg.remote_password,
            will=will,
            tls=tls_context(cfg),
            server_hostname=host if cfg.tls else None,
            maximum_packet_size=cfg.bridge_max_packet_size or None if v5 else None,
            session_store=self._remote_store,
            reconnect=False if cfg.start_type == "once" else self._backoff(),
            bridge=cfg.try_private,
            handler=self._incoming,
            on_connection=self._on_remote,
            queue_size=100,
            local_address=cfg.bridge_bind_address,
            # Mosquitto's bridge: max_inflight_messages both ways (its Receive Maximum in the
            # MQTT 5 CONNECT; an MQTT 3.1.1 remote states none, so this bounds what is in flight).
            receive_maximum=self._window(),
            send_maximum=self._window(),
            # Mosquitto 2.0 overruns it when it has queued messages for the bridge: accepted
            # (with a warning), rather than a disconnection and the same again.
            enforce_receive_maximum=False,
        )

    def _on_remote(self, up: bool) -> None:
        cfg = self.cfg
        if up == self.connected:
            if not up and len(cfg.addresses) > 1:
                self._rotate()
            return
        self.connected = up
        if up:
            assert self.remote is not None
            log.info("bridge %s: connected to %s:%s", cfg.name, self.remote.host, self.remote.port)
            self._state(True)
            self._remote_ready.set()
            if self.local is not None and self.local.connected:
                self._spawn(self._subscribe_local())
            if cfg.notifications and not cfg.notifications_local_only and cfg.notification_topic:
                self._spawn(self.remote.publish(cfg.notification_topic, b"1", 1, True))
        else:
            log.info("bridge %s: connection lost", cfg.name)
            self._state(False)
            self._remote_ready.clear()
            if len(cfg.addresses) > 1:
                if cfg.round_robin:
                    self._rotate()
                else:
                    self._address = 0
                    self._aim()

    def _rotate(self) -> None:
        """Several addresses: the next attempt goes to the next one (an attempt that failed,
        or with ``round_robin``, a connection lost). Without ``round_robin`` a lost connection
        starts again from the first address, the primary (see :meth:`_back_to_primary`)."""
        self._address += 1
        self._aim()

    def _aim(self) -> None:
        if self.remote is not None:
            self.remote.host, self.remote.port = self._next_address()

    async def _back_to_primary(self, remote: Client) -> None:
        """Connected to a secondary address without ``round_robin``: check the primary every
        restart interval and, once it accepts connections, leave the secondary for it (as
        Mosquitto does)."""
        host, port = self.cfg.addresses[0]
        interval = self.cfg.restart_timeout[0]
        while remote.connected and self._address % len(self.cfg.addresses):
            await asyncio.sleep(interval)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), interval)
            except (OSError, TimeoutError):
                continue
            writer.close()
            log.info(
                "bridge %s: the primary %s:%s is back; moving to it", self.cfg.name, host, port
            )
            self._address = 0
            await self._say_stopped(remote)  # a clean DISCONNECT: the will would not say it
            await remote.disconnect()
            return

    def _spawn(self, coro: Coroutine[object, object, object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("bridge %s: notification not sent: %s", self.cfg.name, task.exception())

    async def _run(self) -> None:
        """Connect (and for ever reconnect, unless ``start_type once``) the remote side."""
        cfg = self.cfg
        backoff = self._backoff()
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if cfg.start_type == "lazy":
                await self._threshold()
            remote = self.remote = self._remote_client()
            try:
                await remote.connect()
            except (MQTTError, OSError) as exc:
                log.info(
                    "bridge %s: cannot connect to %s:%s: %s",
                    cfg.name,
                    remote.host,
                    remote.port,
                    exc,
                )
                if cfg.start_type == "once":
                    return
                self._rotate()
                await asyncio.sleep(backoff.delay(attempt))
                attempt += 1
                continue
            attempt = 0
            self._last_traffic = loop.time()
            try:
                await self._subscribe_remote(remote)
                if cfg.start_type == "lazy":
                    await self._idle(remote)
                elif len(cfg.addresses) > 1 and not cfg.round_robin:
                    self._spawn(self._back_to_primary(remote))
                error = await remote.wait_closed()
            except MQTTError as exc:
                error = exc
            if self.connected:
                self._on_remote(False)
            if self._stopping or cfg.start_type == "once":
                return
            if error is not None:
                log.info("bridge %s: remote connection ended: %s", cfg.name, error)
                await asyncio.sleep(backoff.delay(attempt))
                attempt += 1

    async def _subscribe_remote(self, remote: Client) -> None:
        cfg = self.cfg
        v5 = cfg.bridge_protocol_version == "mqttv50"
        if cfg.bridge_attempt_unsubscribe:
            # A persistent remote session may hold a subscription an earlier configuration made
            # for a pattern that is now out only: drop it, as Mosquitto does.
            stale = [t.remote_topic for t in cfg.topics if t.direction == OUT]
            if stale:
                await remote.unsubscribe(stale)
        for t in cfg.topics:
            if t.direction in (IN, BOTH):
                await remote.subscribe(t.remote_topic, t.qos, no_local=v5, retain_as_published=v5)

    def _waiting(self) -> int:
        """Messages for the remote waiting in the local session (queued or in flight)."""
        session = self.broker.sessions.get(self.cfg.local_clientid or "")
        if session is None:
            return 0
        return len(session.inflight) + (len(session.queue) if session.queue else 0)

    async def _threshold(self) -> None:
        """lazy: wait until ``threshold`` messages wait for the remote (checked every second,
        and whenever a message arrives)."""
        while self._waiting() < self.cfg.threshold:
            self._wanted.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), 1.0)
        log.info("bridge %s: %d messages waiting, connecting", self.cfg.name, self._waiting())

    async def _idle(self, remote: Client) -> None:
        """lazy: disconnect once nothing went either way for idle_timeout seconds."""
        loop = asyncio.get_running_loop()
        while remote.connected:
            idle = loop.time() - self._last_traffic
            if idle >= self.cfg.idle_timeout:
                log.info("bridge %s: idle for %s s, disconnecting", self.cfg.name, int(idle))
                # Mosquitto closes the socket, so the remote publishes the will (0): say it.
                await self._say_stopped(remote)
                await remote.disconnect()
                return
            await asyncio.sleep(self.cfg.idle_timeout - idle)

    # -- the messages

    @staticmethod
    def _properties(message: Message) -> dict[int, object]:
        return {k: v for k, v in message.properties.items() if k in _KEPT}

    async def _outgoing(self, message: Message, accepted: Callable[[], None]) -> Settled:
        """A message of an ``out`` pattern: publish it on the remote; the local session
        acknowledges it once the remote has (the awaitable returned, see :meth:`_send`)."""
        mapped = remap_out(self.cfg.topics, message.topic)
        if mapped is None:
            return None
        topic, _ = mapped
        retain = message.retain and self.cfg.bridge_outgoing_retain
        return await self._send(True, topic, message, retain, accepted)

    async def _incoming(self, message: Message, accepted: Callable[[], None]) -> Settled:
        """A message of an ``in`` pattern: publish it here (through the broker core, as the
        local session); the remote is acknowledged once this broker has it."""
        topic = remap_in(self.cfg.topics, message.topic)
        if topic is None:
            return None
        self._last_traffic = asyncio.get_running_loop().time()
        return await self._send(False, topic, message, message.retain, accepted)

    async def _send(
        self, out: bool, topic: str, message: Message, retain: bool, accepted: Callable[[], None]
    ) -> Settled:
        """Hand ``message`` over to the other side (``out``: the remote): returns once it is
        written there and, QoS 1/2, in the bridge's store with the received id (``accepted``,
        one commit). The next message is handed over meanwhile: the window is the local
        session's (``max_inflight_messages``) one way, the remote's Receive Maximum (MQTT 5)
        or ``max_inflight_messages`` (MQTT 3.1.1, as Mosquitto's bridge) the other. Returns
        what the receiving client awaits before it acknowledges the message, in order: the
        other side's acknowledgement (None: nothing to wait for, QoS 0 or refused)."""
        props = self._properties(message)
        while True:
            if self._stopping:
                return self._not_settled()
            if out:
                self._wanted.set()
                await self._remote_ready.wait()
            client = self.remote if out else self.local
            if client is None:
                await asyncio.sleep(0.1)
                continue
            try:
                ack = await client.start_publish(
                    topic, message.payload, message.qos, retain, props, accepted
                )
            except MQTTError as exc:
                if self._gives_up(exc, out, topic, message.qos):
                    return None
                await asyncio.sleep(0.1)  # the other side is reconnecting
                continue
            if out:
                self._last_traffic = asyncio.get_running_loop().time()
            return self._settle(ack, out, topic, message, retain, accepted) if message.qos else None

    @staticmethod
    async def _not_settled() -> None:
        """The bridge stops before the other side has the message: it is not acknowledged, so
        its sender keeps it and sends it again next time."""
        raise MQTTError(Reason.UNSPECIFIED_ERROR, "the bridge is stopping")

    async def _settle(
        self,
        ack: asyncio.Future[PublishResult],
        out: bool,
        topic: str,
        message: Message,
        retain: bool,
        accepted: Callable[[], None],
    ) -> None:
        """Wait for the other side's acknowledgement of a message handed over. If the client
        that carried it ended before (a new one replaces it), send it again."""
        while True:
            try:
                await ack
                if out:
                    self._last_traffic = asyncio.get_running_loop().time()
                return
            except MQTTError as exc:
                if self._gives_up(exc, out, topic, message.qos):
                    return
            await asyncio.sleep(0.1)
            again = await self._send(out, topic, message, retain, accepted)
            if again is None:
                return
            await again
            return

    def _gives_up(self, exc: MQTTError, out: bool, topic: str, qos: int) -> bool:
        """Whether a failed hand-over is final: the message refused (a negative PUBACK or
        PUBREC, an ACL here, ...: dropped, as a client's refused message is), or QoS 0 (at most
        once). Otherwise the other side is away and the message waits for it."""
        if refused(exc):
            where = "the remote refused" if out else "not published locally:"
            log.warning("bridge %s: %s %s: %s", self.cfg.name, where, topic, exc)
            return True
        if qos == 0:
            return True
        log.debug("bridge %s: %s waits: %s", self.cfg.name, topic, exc)
        return False
