"""One client connection: the MQTT protocol state machine, bytes in, bytes out.

It knows no sockets and no asyncio. The transport layer hands it bytes (:meth:`data_received`) and
tells it when the peer has gone (:meth:`connection_lost`); it writes each packet through a
:class:`Transport` as it is made (the transport coalesces them: one socket write per loop turn,
:mod:`midge.transport.writer`) and keeps time through the broker's scheduler.

A PUBLISH flows one way: Connection → Broker.route → Session.deliver → the session's sink, this
connection's :class:`~midge.broker.outgoing.Outgoing`. The connection tells its session what the
client acknowledged (plain calls); the session owns the windows and the QoS state.

A packet that must wait (a pending authentication or authorization decision, or ``--workers N``
until the other workers know a subscription) stops where it is: reading pauses, the packets after
it stay queued in the decoder, and once decided the rest of its handling runs (:meth:`_resume`)
before the queued packets are handled, in order. Nothing is handled twice.

Version-specific behaviour (3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0) is decided here; the statement ids
in comments are MQTT 3.1.1's unless marked v5.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Callable
from typing import Any, Final, Protocol

from midge.auth.base import AuthExchange, ConnectRequest, Pending
from midge.broker.broker import Broker
from midge.broker.model import Message, SubOptions
from midge.broker.outgoing import Outgoing
from midge.broker.session import NEVER, Session
from midge.codec import Decoder, encode
from midge.codec.packets import (
    MQTT5,
    UNLIMITED_PACKET_SIZE,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
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
    Unsuback,
    Unsubscribe,
)
from midge.codec.properties import Prop
from midge.codec.reasons import (
    REASONS_BY_PACKET,
    V5_TO_V3_CONNACK,
    CodecError,
    ConnackV3,
    Reason,
    UnsupportedProtocolVersion,
)
from midge.codec.topics import split_shared, validate_topic_name
from midge.config import ListenerConfig

log = logging.getLogger("midge.connection")
#: Mosquitto's "subscribe"/"unsubscribe" log types (enabled by -v or log_type).
sublog = logging.getLogger("midge.subscribe")
#: Mosquitto's "notice" level (midge.logs.NOTICE): connections, disconnections, refusals.
NOTICE: Final = 25

#: How a connection ended, as Mosquitto 2.0.11 words it after "Client ID " (src/loop.c,
#: do_disconnect), by the reason code midge closes it with.
END_DISCONNECTED: Final = "disconnected."
END_LOST: Final = "closed its connection."
END_PROTOCOL: Final = "disconnected due to protocol error."
END_TIMEOUT: Final = "has exceeded timeout, disconnecting."
END_NOT_AUTHORISED: Final = "disconnected, not authorised."
_ENDS: Final[dict[int, str]] = {
    Reason.MALFORMED_PACKET: "disconnected due to malformed packet.",
    Reason.KEEP_ALIVE_TIMEOUT: END_TIMEOUT,
    Reason.NOT_AUTHORIZED: END_NOT_AUTHORISED,
    Reason.BAD_USER_NAME_OR_PASSWORD: END_NOT_AUTHORISED,
    Reason.BAD_AUTHENTICATION_METHOD: END_NOT_AUTHORISED,
    Reason.PACKET_TOO_LARGE: "disconnected due to oversize packet.",
    Reason.QOS_NOT_SUPPORTED: "disconnected due to QoS too high or retain not supported.",
    Reason.RETAIN_NOT_SUPPORTED: "disconnected due to QoS too high or retain not supported.",
    Reason.ADMINISTRATIVE_ACTION: "been disconnected by administrative action.",
}
#: Marks a ``midge.subscribe`` record as Mosquitto's "unsubscribe" type (midge.logs).
_UNSUBSCRIBE: Final = {"mtype": "unsubscribe"}
#: The protocol number in Mosquitto's "New client connected" line (p1 3.1, p2 3.1.1, p5 5.0).
_MOSQUITTO_PROTOCOL: Final = {3: 1, 4: 2, 5: 5}
_PROTOCOL_NAMES: Final = {3: "3.1", 4: "3.1.1", 5: "5.0"}

CONNECTING: Final = 0
CONNECTED: Final = 1
CLOSED: Final = 2
#: CONNECT accepted, waiting for the other workers to give up the client id (``--workers N``):
#: packets the client sent after CONNECT wait, undecoded, until then (the loop stops at >= CLOSED).
CLAIMING: Final = 3
_ALIAS: Final = int(Prop.TOPIC_ALIAS)
_EXPIRY: Final = int(Prop.MESSAGE_EXPIRY_INTERVAL)


class Transport(Protocol):
    """What a connection needs of its transport: bytes out (coalescing them per loop turn is the
    transport's business, midge.transport.writer), flow control, and close."""

    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def get_write_buffer_size(self) -> int: ...


def _result(pending: Pending) -> Any:
    """A done decision's result; None (a refusal: fail closed) if the decision failed."""
    try:
        return pending.result()
    except Exception:
        log.exception("an authorization decision failed")
        return None


def _over_topic_limits(topic: str, levels: int, length: int) -> bool:
    """True if ``topic`` (a name or a filter) has more than ``levels`` levels or more than
    ``length`` UTF-8 bytes (0: no limit)."""
    if levels and topic.count("/") >= levels:
        return True
    return bool(length) and len(topic.encode("utf-8")) > length


def _reserved_for_server(topic: str) -> bool:
    """Topics clients may not publish to (MQTT 4.7.2: $-topics are the server's), as Mosquitto:
    ``$SYS/...`` except bridge state, and ``$share/...`` which only names subscriptions."""
    if topic.startswith("$SYS"):
        return not (
            topic.startswith("$SYS/broker/connection/")
            and topic.endswith("/state")
            and topic.count("/") == 4
        )
    return topic.startswith("$share")


def _mounted(mount: str, topic_filter: str) -> str:
    """``topic_filter`` below the listener's mount point; a shared subscription's filter part."""
    share, real = split_shared(topic_filter)
    if share is None:
        return mount + topic_filter
    return f"$share/{share}/{mount}{real}"


def _random_id() -> str:
    """An assigned client id's random part, in Mosquitto 2's form: 16 random bytes as upper-case
    hex in 8-4-4-4-12 groups (``5D43402F-65F6-C268-033F-EAFD134BB6ED``), after the prefix."""
    return str(uuid.UUID(bytes=os.urandom(16))).upper()


class ProtocolViolation(Exception):
    """The client broke the protocol: close, after a v5 DISCONNECT with ``reason``."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Connection:
    __slots__ = (
        "_acks_waiting",
        "_connect",
        "_exchange",
        "_expiry",
        "_held_acks",
        "_logged",
        "_pub_stamp",
        "_pub_tokens",
        "_request",
        "_timer",
        "_waiting",
        "alias_in",
        "alias_in_max",
        "auth_method",
        "authenticating",
        "broker",
        "cert_username",
        "client_id",
        "decoder",
        "is_bridge",
        "keepalive",
        "last_seen",
        "listener",
        "max_qos",
        "mount",
        "on_lost",
        "out",
        "peer",
        "refuse_reason",
        "session",
        "state",
        "transport",
        "username",
        "version",
        "will",
    )

    def __init__(
        self, broker: Broker, transport: Transport, listener: ListenerConfig, peer: str
    ) -> None:
        self.broker = broker
        self.transport = transport
        self.listener = listener
        self.peer = peer
        config = broker.config
        self.decoder = Decoder(None, config.effective_max_packet_size)
        self.state = CONNECTING
        self.version = 4
        self.client_id = ""
        self.username: str | None = None
        #: The username from the client's TLS certificate, set by the transport on a
        #: use_identity_as_username / use_subject_as_username listener (None: no usable one).
        self.cert_username: str | None = None
        self.session: Session | None = None
        #: A Mosquitto bridge (bit 0x80 of its CONNECT's protocol level, ``try_private``): its
        #: 3.1 / 3.1.1 subscriptions are No Local and Retain As Published, as Mosquitto makes
        #: them, so a bridge never gets its own messages back (no loops in a chain of brokers).
        self.is_bridge = False
        self.will: Message | None = None
        self.auth_method: str | None = None
        self.authenticating = False
        self._exchange: AuthExchange | None = None
        #: The CONNECT being authenticated: (packet, client id, whether we assigned the id).
        self._connect: tuple[Connect, str, bool] | None = None
        self.keepalive = 0
        self.last_seen = broker.scheduler.time()
        self.max_qos = listener.max_qos if listener.max_qos is not None else config.max_qos
        #: The listener's mount_point ("" none): prefixed to every topic name and filter this
        #: client gives (wills too), removed from the topics it is sent (by ``out``).
        self.mount = listener.mount_point or ""
        alias_max = listener.max_topic_alias
        self.alias_in_max = alias_max if alias_max is not None else config.max_topic_alias
        # Made on first use (most clients use no aliases; idle connections must stay small).
        self.alias_in: dict[int, str] | None = None
        #: The outgoing side: PUBLISH encoding, outgoing topic aliases, the client's packet size
        #: limit; the session's deliveries go there (midge.broker.outgoing).
        self.out = Outgoing(transport, broker.stats, broker.scheduler)
        self.out.mount = len(self.mount)
        #: Acks held back until the store's commit (see _ack).
        self._acks_waiting = 0
        #: Acks in order behind one that waits for other cluster nodes (Broker.ack_gate), each
        #: [packet, waits left]; None when none waits (always, outside a cluster).
        self._held_acks: list[list[Any]] | None = None
        #: Called once when the transport is gone (the transport layer's bookkeeping).
        self.on_lost: Callable[[], None] | None = None
        #: Non-zero: a connection limit refused this client; its CONNECT is answered with this.
        self.refuse_reason = 0
        #: A packet is waiting (a Pending authentication or authorization decision, or the other
        #: workers): reading is paused and the packets after it stay queued in the decoder; the
        #: waiting packet resumes where it stopped (:meth:`_wait`).
        self._waiting = False
        #: The ConnectRequest decided on (its identity and expiry are applied at CONNACK), and
        #: the timer that closes the connection when the credentials expire.
        self._request: ConnectRequest | None = None
        self._expiry: Any = None
        #: max_publish_rate's token bucket (a second's worth to start with).
        self._pub_tokens = float(config.max_publish_rate)
        self._pub_stamp = self.last_seen
        self._timer: Any = broker.scheduler.call_later(config.connect_timeout, self._timeout)
        #: (client id, username) of the CONNECT being decided, for the log lines of a refusal.
        self._logged: tuple[str, str | None] | None = None
        broker.connections.add(self)
        broker.stats.sockets += 1
        if config.connection_messages and log.isEnabledFor(NOTICE):
            self._event(
                NOTICE,
                "socket",
                None,
                "New connection from %s on port %d.",
                peer,
                listener.port,
            )

    # -- the log --------------------------------------------------------------------------------

    def _event(self, level: int, event: str, reason: str | None, text: str, *args: Any) -> None:
        """Log a connection event: Mosquitto's sentence (``text % args``) with the fields the
        JSON format adds (midge.logs). Never a password or a payload."""
        client_id: str | None = self.client_id or None
        username = self.username
        if client_id is None and self._logged is not None:
            client_id, username = self._logged
        address, colon, port = self.peer.rpartition(":")
        fields = {
            "client_id": client_id,
            "address": address if colon else self.peer,
            "port": int(port) if colon and port.isdigit() else None,
            "listener": self.listener.port,
            "protocol": _PROTOCOL_NAMES.get(self.version)
            if self._logged or self.client_id
            else None,
            "username": username,
            "reason": reason,
        }
        log.log(level, text, *args, extra={"event": event, "fields": fields})

    # -- input ----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        broker = self.broker
        self.last_seen = broker.scheduler.time()
        stats = broker.stats
        stats.bytes_received += len(data)
        decoder = self.decoder
        decoder.receive(data)
        try:
            while self.state < CLOSED and not self._waiting:
                packet = decoder.next_packet()
                if packet is None:
                    break
                stats.packets_received += 1
                self._handle(packet)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """Handling a packet raised ``exc``: answer what must be answered, then close."""
        if isinstance(exc, UnsupportedProtocolVersion):
            if self.state == CONNECTING:
                if self.broker.config.connection_messages:
                    log.info(
                        "Invalid protocol version %d in CONNECT from %s.",
                        exc.level,
                        self.peer.rpartition(":")[0] or self.peer,
                    )
                # Mosquitto answers in the v3 format (it cannot know which the client reads).
                self._send(Connack(False, ConnackV3.UNACCEPTABLE_PROTOCOL_VERSION), 4)
                self._violation(exc.reason, str(exc))
            else:
                self._second_connect()
        elif isinstance(exc, CodecError):
            if (
                self.state == CONNECTING
                and self.decoder.version == MQTT5
                and exc.reason in REASONS_BY_PACKET[PacketType.CONNACK]
            ):
                # A v5 CONNECT that fails validation is answered with its reason (MQTT-3.1.4-1,
                # MQTT 5 4.13.1) so the client can tell malformed from refused.
                self.version = MQTT5
                self._send(Connack(False, exc.reason))
            self._violation(exc.reason, str(exc))
        elif isinstance(exc, ProtocolViolation):
            self._violation(exc.reason, str(exc))
        else:
            # A bug of ours must cost this one connection, never the broker.
            log.error(
                "internal error handling a packet from %s",
                self.client_id or self.peer,
                exc_info=exc,
            )
            self._violation(Reason.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")

    def _wait(self) -> None:
        """The packet being handled must wait: stop decoding (what the client sent after it
        stays queued, in order) and pause reading until :meth:`_resume`."""
        self._waiting = True
        self.transport.pause_reading()

    def _wait_for(self, pending: Pending, then: Callable[[Any], None]) -> None:
        """Wait for an authenticator's ``pending`` decision, then call ``then(result)`` (a
        failed decision fails closed: ``then(None)``) and go on with the packets after it."""
        self._wait()
        broker = self.broker
        broker.deciding += 1

        def decided(_: object) -> None:
            broker.deciding -= 1
            broker.scheduler.call_soon(self._resume, lambda: then(_result(pending)))

        pending.add_done_callback(decided)

    def _resume(self, step: Callable[[], None]) -> None:
        """The waiting packet may go on: finish it with ``step``, then handle what came after."""
        if self.state == CLOSED or not self._waiting:
            return
        self._waiting = False
        self.transport.resume_reading()
        try:
            step()
        except Exception as exc:
            self._failed(exc)
            return
        self.data_received(b"")  # what the client sent after it, in order

    def _handle(self, packet: Packet) -> None:
        if self.state == CONNECTING:
            if self._connect is not None:
                # Between CONNECT and CONNACK only the authentication exchange may continue.
                if isinstance(packet, Auth):
                    self._on_auth(packet)
                    return
                if isinstance(packet, Disconnect):
                    self._close(False, END_DISCONNECTED, "normal disconnection")
                    return
                raise ProtocolViolation(Reason.PROTOCOL_ERROR, "packet during authentication")
            if not isinstance(packet, Connect):
                # MQTT-3.1.0-1: the first packet must be CONNECT.
                raise ProtocolViolation(Reason.PROTOCOL_ERROR, "first packet is not CONNECT")
            self._on_connect(packet)
            return
        if isinstance(packet, Publish):
            self._on_publish(packet)
        elif isinstance(packet, Puback):
            self._on_puback(packet)
        elif isinstance(packet, Pubrec):
            self._on_pubrec(packet)
        elif isinstance(packet, Pubrel):
            self._on_pubrel(packet)
        elif isinstance(packet, Pubcomp):
            self._on_pubcomp(packet)
        elif isinstance(packet, Subscribe):
            self._on_subscribe(packet)
        elif isinstance(packet, Unsubscribe):
            self._on_unsubscribe(packet)
        elif isinstance(packet, Pingreq):
            self._send(Pingresp())  # MQTT-3.12.4-1
        elif isinstance(packet, Disconnect):
            self._on_disconnect(packet)
        elif isinstance(packet, Auth):
            self._on_auth(packet)
        elif isinstance(packet, Connect):
            self._second_connect()
        else:
            raise ProtocolViolation(
                Reason.PROTOCOL_ERROR, f"{type(packet).__name__} is not sent to a server"
            )

    # -- CONNECT ----------------------------------------------------------------------------------

    def _second_connect(self) -> None:
        """MQTT-3.1.0-2: a second CONNECT is a protocol violation."""
        log.log(NOTICE, "Bad client %s sending multiple CONNECT messages.", self.client_id)
        self._violation(Reason.PROTOCOL_ERROR, "second CONNECT")

    def refuse_at_connect(self, reason: int, timeout: float) -> None:
        """A connection limit refused this client (the transport counts it): answer its CONNECT
        with ``reason`` (v3: "server unavailable") and close; close after ``timeout`` seconds
        if no CONNECT comes."""
        self.refuse_reason = reason
        if self.broker.config.connection_messages and log.isEnabledFor(NOTICE):
            what = "max_connections" if reason == Reason.QUOTA_EXCEEDED else "max_connection_rate"
            self._event(
                NOTICE,
                "refuse",
                f"{what} exceeded",
                "Client connection from %s denied: %s exceeded.",
                self.peer.rpartition(":")[0] or self.peer,
                what,
            )
        self._cancel_timer()
        self._timer = self.broker.scheduler.call_later(timeout, self._timeout)

    def _on_connect(self, p: Connect) -> None:
        broker = self.broker
        broker.stats.connects += 1
        config = broker.config
        listener = self.listener
        version = self.version = p.protocol_level
        v5 = version == MQTT5
        self.is_bridge = p.bridge
        if self.refuse_reason:
            why = "connection rate" if self.refuse_reason == Reason.CONNECTION_RATE_EXCEEDED else ""
            self._refuse(self.refuse_reason, f"over the {why or 'connection'} limit")
            return
        props = p.properties
        client_id = p.client_id
        self._logged = (client_id, p.username)
        assigned = False
        if not client_id:
            allow = listener.allow_zero_length_clientid
            if allow is None:
                allow = config.allow_zero_length_clientid
            # MQTT-3.1.3-7/-8: a v3.1.1 client with no id must ask for a clean session; MQTT 3.1
            # requires an id; v5 may always be given one (MQTT-3.1.3-6 v5).
            if version == 3 or (version == 4 and not p.clean_start) or not allow:
                # v5 refused by allow_zero_length_clientid: 0x80, the code Mosquitto sends
                # (0x85 would fit too, MQTT-3.1.3-8 v5 says MAY).
                reason = Reason.UNSPECIFIED_ERROR if v5 else Reason.CLIENT_IDENTIFIER_NOT_VALID
                self._refuse(reason, "empty client id not allowed")
                return
            prefix = listener.auto_id_prefix
            if prefix is None:
                prefix = config.auto_id_prefix
            client_id = prefix + _random_id()
            assigned = True
        prefixes = config.clientid_prefixes
        if prefixes is not None and not client_id.startswith(prefixes):
            # Mosquitto's clientid_prefixes (handle_connect.c): "not authorized", generated ids
            # included.
            self._refuse(Reason.NOT_AUTHORIZED, "client id without the clientid_prefixes prefix")
            return
        if p.will is not None:
            w = p.will
            if w.retain and not config.retain_available:
                self._refuse(Reason.RETAIN_NOT_SUPPORTED, "will retain not supported")
                return
            if w.qos > self.max_qos:
                self._refuse(Reason.QOS_NOT_SUPPORTED, "will QoS above maximum QoS")
                return
            try:
                validate_topic_name(w.topic)
            except CodecError:
                self._refuse(Reason.TOPIC_NAME_INVALID, "invalid will topic")
                return
        username, password = p.username, p.password
        cert_identity = listener.use_identity_as_username or listener.use_subject_as_username
        if cert_identity:
            # Mosquitto (handle_connect.c): the client certificate names the user; CONNECT's
            # username and password are ignored and no password check is made. Without a usable
            # certificate the CONNECT is refused as a bad user name or password (v3: 4).
            if self.cert_username is None:
                self._refuse(Reason.BAD_USER_NAME_OR_PASSWORD, "no username in a certificate")
                return
            username, password = self.cert_username, None
        if listener.use_username_as_clientid:
            # Mosquitto: the username (a certificate's, on such a listener) replaces the client
            # id before authentication; a client without one is "not authorized".
            if username is None:
                self._refuse(Reason.NOT_AUTHORIZED, "no username for use_username_as_clientid")
                return
            client_id = username
        request = ConnectRequest(
            client_id,
            username,
            password,
            self.peer,
            version,
            props.get(Prop.AUTHENTICATION_METHOD) if v5 else None,
            props.get(Prop.AUTHENTICATION_DATA) if v5 else None,
            listener,
        )
        self._connect = (p, client_id, assigned)
        if request.auth_method is not None:
            # MQTT 5 enhanced authentication (4.12): the method's exchange runs before CONNACK.
            self.auth_method = request.auth_method
            self._exchange = broker.authenticator.enhanced(request)
            if self._exchange is None:
                self._refuse(Reason.BAD_AUTHENTICATION_METHOD, "unsupported auth method")
                return
            self._auth_step(self._exchange.start(request.auth_data))
            return
        self._request = request
        if not cert_identity:
            decision = broker.authenticator.authenticate(request)
            if not isinstance(decision, int):
                # Decided elsewhere: the CONNECT goes on from here once it is done.
                self._wait_for(decision, self._authenticated)
                return
            if decision:
                self._refuse(decision, "not authorised")
                return
        self._accept(None)

    def _authenticated(self, result: Any) -> None:
        """A pending authentication is decided: a reason code (a failure fails closed)."""
        code = result if isinstance(result, int) else Reason.NOT_AUTHORIZED
        if code:
            self._refuse(code, "not authorised")
        else:
            self._accept(None)

    def _auth_step(self, step: tuple[int, bytes | None]) -> None:
        """Act on the authenticator's answer: continue (AUTH 0x18), succeed, or fail."""
        code, data = step
        props: Properties = {Prop.AUTHENTICATION_METHOD: self.auth_method}
        if data is not None:
            props[Prop.AUTHENTICATION_DATA] = data
        if code == Reason.CONTINUE_AUTHENTICATION:
            self.authenticating = True
            self._send(Auth(Reason.CONTINUE_AUTHENTICATION, props))
            return
        self.authenticating = False
        if self.state == CONNECTING:
            if code:
                self._refuse(code, "enhanced authentication failed")
            else:
                self._accept(props)
        elif code:
            raise ProtocolViolation(code, "re-authentication failed")
        else:
            self._send(Auth(Reason.SUCCESS, props))  # v5 4.12.1: re-authentication succeeded

    def _accept(self, auth_props: Properties | None) -> None:
        """The CONNECT is accepted: attach the session and send CONNACK."""
        assert self._connect is not None
        p, client_id, assigned = self._connect
        broker = self.broker
        mk = broker.config.max_keepalive
        if (
            self.version != MQTT5
            and mk
            and (p.keep_alive > mk or (not p.keep_alive and mk < 65535))
        ):
            # A v3.1/3.1.1 client cannot be told a Server Keep Alive: Mosquitto (documented in
            # mosquitto.conf(5) for max_keepalive, since 2.0.12) refuses it as "identifier
            # rejected". Keep Alive 0 (none) exceeds a max_keepalive below 65535, midge's
            # default, which is Mosquitto 2.0.11's: a default configuration refuses no client.
            self._refuse(Reason.CLIENT_IDENTIFIER_NOT_VALID, "keep alive above max_keepalive")
            return
        if broker.router is not None and self.state == CONNECTING:
            # Client ids are unique across workers: the others release this one first.
            self.state = CLAIMING
            broker.router.claim(client_id, p.clean_start, lambda: self._claimed(auth_props))
            return
        self._connect = None
        config = broker.config
        version = self.version
        v5 = version == MQTT5
        props = p.properties
        self.client_id = client_id
        self.username = p.username if self.cert_username is None else self.cert_username
        request, self._request = self._request, None
        if self.cert_username is None and request is not None and request.identity is not None:
            self.username = request.identity  # e.g. an access token's claim (ConnectRequest)
        if self._exchange is not None and self.cert_username is None:
            # An enhanced-authentication method may establish who the client is (SCRAM's n=):
            # that is the user name ACLs see when the CONNECT carried none.
            identity = self._exchange.username
            if identity is not None:
                self.username = identity
        # The windows: ours (max_inflight_messages, as our Receive Maximum too) and the
        # client's Receive Maximum (v5), which the session keeps.
        receive_maximum = config.max_inflight_messages or 65535
        send_quota = receive_maximum
        if v5:
            expiry = props.get(Prop.SESSION_EXPIRY_INTERVAL, 0)
            rm = props.get(Prop.RECEIVE_MAXIMUM)
            if rm is not None and rm < send_quota:
                send_quota = rm
            self.out.start(
                version,
                props.get(Prop.MAXIMUM_PACKET_SIZE, UNLIMITED_PACKET_SIZE),
                props.get(Prop.TOPIC_ALIAS_MAXIMUM, 0),
            )
        elif p.clean_start:
            expiry = 0
        else:
            pce = config.persistent_client_expiration
            expiry = NEVER if pce is None else pce
        if not v5:
            self.out.start(version, UNLIMITED_PACKET_SIZE, 0)
        if p.will is not None:
            w = p.will
            self.will = Message(
                self.mount + w.topic, w.payload, w.qos, w.retain, w.properties, None, client_id
            )
            self.will.source = (self.username, self.listener.port)
        # The connection is decided: stop the CONNECT timer, attach the session.
        self._cancel_timer()
        session, present = broker.attach(self, client_id, p.clean_start)
        broker.session_started(session, expiry, version, self.username)
        self.session = session
        self.state = CONNECTED
        if request is not None and request.expires is not None:
            delay = max(0.0, request.expires - broker.scheduler.wall())
            self._expiry = broker.scheduler.call_later(delay, self._expired)
        ack_props: Properties = {}
        keepalive = p.keep_alive
        if v5:
            # Mosquitto 2.0.11's order: Topic Alias Maximum, Server Keep Alive, Assigned Client
            # Identifier, the authentication properties, Retain Available, Maximum Packet Size,
            # Receive Maximum, Maximum QoS (the specification leaves the order open).
            if self.alias_in_max:
                ack_props[Prop.TOPIC_ALIAS_MAXIMUM] = self.alias_in_max
            mk = config.max_keepalive
            if mk and (keepalive > mk or keepalive == 0):
                # Mosquitto's rule: a v5 client is told to use max_keepalive (MQTT-3.2.2-21 v5).
                keepalive = mk
                ack_props[Prop.SERVER_KEEP_ALIVE] = mk
            if assigned:
                ack_props[Prop.ASSIGNED_CLIENT_IDENTIFIER] = client_id
            if auth_props:
                ack_props.update(auth_props)
            if not config.retain_available:
                ack_props[Prop.RETAIN_AVAILABLE] = 0
            if config.max_packet_size:
                ack_props[Prop.MAXIMUM_PACKET_SIZE] = config.max_packet_size
            if receive_maximum != 65535:
                ack_props[Prop.RECEIVE_MAXIMUM] = receive_maximum
            if self.max_qos < 2:
                ack_props[Prop.MAXIMUM_QOS] = self.max_qos
        elif auth_props:
            ack_props.update(auth_props)
        self.keepalive = keepalive
        # MQTT-3.2.2-1/-2: session present only when resuming; MQTT 3.1 has no such flag.
        self._send(Connack(present and version >= 4, 0, ack_props))
        if keepalive:
            self._timer = broker.scheduler.call_later(keepalive * 1.5, self._timeout)
        if config.connection_messages and log.isEnabledFor(NOTICE):
            self._connected(p, keepalive)
        session.open(self.out, send_quota, config.max_inflight_bytes, receive_maximum)
        if present:
            session.resend()
        session.pump(broker.scheduler.wall())

    def _connected(self, p: Connect, keepalive: int) -> None:
        """Mosquitto's lines for an accepted CONNECT (handle_connect.c), its will's at debug
        (the size of its payload, never the payload)."""
        user = self.username
        self._event(
            NOTICE,
            "connect",
            None,
            "New client connected from %s as %s (p%d, c%d, k%d%s).",
            self.peer,
            self.client_id,
            _MOSQUITTO_PROTOCOL.get(self.version, self.version),
            p.clean_start,
            keepalive,
            "" if user is None else f", u'{user}'",
        )
        if log.isEnabledFor(logging.DEBUG):
            will = p.will
            if will is None:
                log.debug("No will message specified.")
            else:
                log.debug(
                    "Will message specified (%d bytes) (r%d, q%d).",
                    len(will.payload),
                    will.retain,
                    will.qos,
                )
                log.debug("\t%s", will.topic)

    def _claimed(self, auth_props: Properties | None) -> None:
        """The other workers released the client id: accept, then read what the client sent
        after its CONNECT."""
        if self.state != CLAIMING:
            return  # closed meanwhile
        self._accept(auth_props)
        self.data_received(b"")

    def _refuse(self, reason: int, why: str) -> None:
        """CONNACK with a failure (v3: the mapped return code), then close (MQTT-3.2.2-5)."""
        refused = self.broker.stats.refused
        refused[reason] = refused.get(reason, 0) + 1
        if self.version == MQTT5:
            # Maximum QoS even on a refusal, as Mosquitto (the one property it always sends).
            props: Properties = {Prop.MAXIMUM_QOS: self.max_qos} if self.max_qos != 2 else {}
            self._send(Connack(False, reason, props))
        elif reason in V5_TO_V3_CONNACK:
            self._send(Connack(False, V5_TO_V3_CONNACK[reason]))
        # else: v3 has no return code for it; like Mosquitto, close without CONNACK.
        self._close(False, _ENDS.get(reason, END_PROTOCOL), f"0x{reason:02x} {why}", "refuse")

    # -- PUBLISH and its acknowledgements -------------------------------------------------------

    def _on_publish(self, p: Publish) -> None:
        session = self.session
        assert session is not None
        stats = self.broker.stats
        stats.publish_received += 1
        size = len(p.payload)
        stats.publish_bytes_received += size
        stats.received_by_qos[p.qos] += 1
        stats.received_bytes_by_qos[p.qos] += size
        topic = p.topic
        props = p.properties
        v5 = self.version == MQTT5
        if v5 and props:
            alias = props.get(Prop.TOPIC_ALIAS)
            if alias is not None:
                if alias == 0 or alias > self.alias_in_max:
                    # MQTT-3.3.2-9/-10 v5
                    raise ProtocolViolation(Reason.TOPIC_ALIAS_INVALID, "topic alias out of range")
                if topic:
                    if self.alias_in is None:
                        self.alias_in = {}
                    self.alias_in[alias] = topic
                else:
                    known = self.alias_in.get(alias) if self.alias_in else None
                    if known is None:
                        raise ProtocolViolation(Reason.PROTOCOL_ERROR, "unknown topic alias")
                    topic = known
            if Prop.SUBSCRIPTION_IDENTIFIER in props:
                # MQTT-3.3.4-6 v5: a client must not send a Subscription Identifier.
                raise ProtocolViolation(Reason.PROTOCOL_ERROR, "subscription id from client")
        elif not topic:
            raise ProtocolViolation(Reason.TOPIC_NAME_INVALID, "empty topic name")
        if self.mount:
            topic = self.mount + topic  # mount_point: the client's topics live below it
        config = self.broker.config
        rate = config.max_publish_rate
        if rate:
            # A token bucket: max_publish_rate a second, bursts up to a second's worth.
            now = self.broker.scheduler.time()
            tokens = self._pub_tokens + (now - self._pub_stamp) * rate
            self._pub_stamp = now
            if tokens > rate:
                tokens = float(rate)
            if tokens < 1:
                self.broker.stats.limited_publish_rate += 1
                raise ProtocolViolation(Reason.MESSAGE_RATE_TOO_HIGH, "over max_publish_rate")
            self._pub_tokens = tokens - 1
        qos = p.qos
        if qos > self.max_qos:
            raise ProtocolViolation(
                Reason.QOS_NOT_SUPPORTED, "QoS above maximum QoS"
            )  # v5 3.2.2-11
        if p.retain and not self.broker.config.retain_available:
            raise ProtocolViolation(Reason.RETAIN_NOT_SUPPORTED, "retain not supported")
        pid = p.packet_id or 0
        if qos == 2 and session.qos2_known(pid):
            # MQTT-4.3.3-2: a re-sent PUBLISH (DUP) for a message already received is not routed
            # again; acknowledge it again.
            self._ack(Pubrec(pid))
            return
        if qos and v5 and session.inbound_full():
            raise ProtocolViolation(Reason.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded")
        reason = 0
        limit = config.message_size_limit
        memory = config.memory_limit
        if memory and self.broker.memory_used() + len(p.payload) > memory:
            # memory_limit: not routed, counted. v5 says why (0x97 Quota exceeded) and stays
            # connected; a v3 client is closed, as Mosquitto closes it (it re-sends QoS 1/2).
            self.broker.stats.messages_dropped += 1
            self.broker.stats.dropped_memory += 1
            if not v5:
                raise ProtocolViolation(Reason.QUOTA_EXCEEDED, "memory_limit reached")
            reason = Reason.QUOTA_EXCEEDED
        elif (config.max_topic_levels or config.max_topic_length) and _over_topic_limits(
            topic, config.max_topic_levels, config.max_topic_length
        ):
            # Not routed; v5 says why in PUBACK/PUBREC (0x90: "not accepted by this Server").
            self.broker.stats.limited_topics += 1
            reason = Reason.TOPIC_NAME_INVALID
        elif limit and len(p.payload) > limit:
            # Dropped. Mosquitto acknowledges with 0x95, which PUBACK/PUBREC may not carry; 0x83
            # ("valid, but not accepted by this implementation") is the spec's nearest code.
            reason = Reason.IMPLEMENTATION_SPECIFIC_ERROR
        elif topic[0] == "$" and _reserved_for_server(topic):
            reason = Reason.NOT_AUTHORIZED
        elif self.broker.checks_publish:
            allowed = self.broker.authenticator.can_publish(self.client_id, self.username, topic)
            if allowed is not True and allowed is not False:
                # Decided elsewhere: the PUBLISH goes on from here once it is done (its rate
                # token and checks are not taken again).
                self._wait_for(allowed, lambda result: self._publish_decided(p, topic, result))
                return
            if not allowed:
                reason = Reason.NOT_AUTHORIZED
        self._publish_checked(p, topic, reason)

    def _publish_decided(self, p: Publish, topic: str, allowed: Any) -> None:
        if self.state == CONNECTED:
            self._publish_checked(p, topic, 0 if allowed is True else Reason.NOT_AUTHORIZED)

    def _publish_checked(self, p: Publish, topic: str, reason: int) -> None:
        """The PUBLISH is checked (``reason`` non-zero: refused): route it, then acknowledge."""
        session = self.session
        assert session is not None
        qos = p.qos
        pid = p.packet_id or 0
        v5 = self.version == MQTT5
        if reason:
            refused = self.broker.stats.publish_refused
            refused[reason] = refused.get(reason, 0) + 1
        else:
            props = p.properties
            raw = p.raw
            now = 0.0
            if v5 and props and (_ALIAS in props or _EXPIRY in props):
                raw = None  # an alias to drop or an expiry to count down: re-encode
                if _EXPIRY in props:
                    now = self.broker.scheduler.wall()
            if self.mount:
                raw = None  # the topic received is not the message's (mount_point)
            message = Message.from_publish(
                topic, p.payload, qos, p.retain, props, self.client_id, now, raw, v5
            )
            if p.retain:
                # Remembered with the retained message (and on disk): check_retain_source.
                message.source = (self.username, self.listener.port)
            gate = self.broker.ack_gate
            if qos and gate is not None and not gate.can_guarantee(message):
                # A cluster node cut off from Redis cannot deliver to the other nodes'
                # subscribers with QoS 1/2 guarantees: refused, not routed (v5 0x83, "valid but
                # not accepted"; a v3 client, which cannot be told, is closed and re-sends it).
                refused = self.broker.stats.publish_refused
                refused[Reason.IMPLEMENTATION_SPECIFIC_ERROR] = (
                    refused.get(Reason.IMPLEMENTATION_SPECIFIC_ERROR, 0) + 1
                )
                if not v5:
                    raise ProtocolViolation(
                        Reason.IMPLEMENTATION_SPECIFIC_ERROR, "cluster unavailable (Redis)"
                    )
                reason = Reason.IMPLEMENTATION_SPECIFIC_ERROR
            elif qos == 2:
                # Mosquitto routes a QoS 2 message at PUBREL, so a client subscribed to its own
                # topic gets PUBREC before the copy: what routing writes to this client waits
                # for the PUBREC (see _ack).
                self.out.hold()
                if not self.broker.publish(message):
                    self.broker.stats.no_subscribers += 1
            elif not self.broker.publish(message):
                self.broker.stats.no_subscribers += 1
                if qos:
                    # v5 0x10 as Mosquitto: no subscription matches (a read-denied one still
                    # does). For QoS 2 Mosquitto cannot know yet at PUBREC: always Success.
                    reason = Reason.NO_MATCHING_SUBSCRIBERS
        # In a cluster the ack also waits until the nodes the message went to have accepted it.
        remote = reason < 0x80 and self.broker.ack_gate is not None
        if qos == 1:
            self._ack(Puback(pid, reason if v5 else 0), remote)
        elif qos == 2:
            if reason < 0x80:
                session.qos2_received(pid)
            self._ack(Pubrec(pid, reason if v5 else 0), remote)

    def _ack(self, packet: Packet, remote: bool = False) -> None:
        """Send a PUBACK, PUBREC or PUBCOMP once what its packet changed is durable.

        The guarantee of a durable store: a publisher is acknowledged only after its message is
        recorded for every persistent session it was routed to (and as retained), and an inbound
        QoS 2 id is recorded before PUBREC (and its removal before PUBCOMP), so nothing is lost
        or delivered twice after a crash. Acks keep their order (MQTT-4.6.0-2..-4): once one
        waits for a commit, the following ones wait too.
        """
        if remote or self._held_acks is not None:
            self._ack_held(packet, remote)
            return
        store = self.broker.durable_store
        router = self.broker.router
        if router is not None and (self._acks_waiting or router.acks_wait()):
            # --workers: a retained message is stored on every worker before its ack (and so
            # are the ones before it: later acks wait too, in order).
            self._acks_waiting += 1
            if store is not None:
                store.commit(lambda: router.after_stored(lambda: self._acked(packet)))
            else:
                router.after_stored(lambda: self._acked(packet))
        elif store is not None and (self._acks_waiting or store.pending):
            self._acks_waiting += 1
            store.commit(lambda: self._acked(packet))
        else:
            self._acked(packet, False)

    def _ack_held(self, packet: Packet, remote: bool) -> None:
        """In a cluster (:attr:`Broker.ack_gate`): the ack of a message just published waits
        until every node it was sent to has accepted it (QoS end to end), as well as for the
        store; acks behind a waiting one keep their order (MQTT-4.6.0-2..-4)."""
        entry: list[Any] = [packet, 0]
        gate = self.broker.ack_gate
        if remote and gate is not None and not gate.wait_accepted(lambda: self._ack_ready(entry)):
            entry[1] += 1
        store = self.broker.durable_store
        if store is not None and (self._acks_waiting or store.pending):
            entry[1] += 1
            self._acks_waiting += 1
            store.commit(lambda: self._ack_committed(entry))
        held = self._held_acks
        if held is None:
            if not entry[1]:
                self._acked(packet, False)
                return
            held = self._held_acks = []
        held.append(entry)
        self._ack_ready(None)

    def _ack_committed(self, entry: list[Any]) -> None:
        self._acks_waiting -= 1
        self._ack_ready(entry)

    def _ack_ready(self, entry: list[Any] | None) -> None:
        """One wait of ``entry`` is over: send the acks at the head that wait for nothing."""
        if entry is not None:
            entry[1] -= 1
        held = self._held_acks
        while held and not held[0][1]:
            packet = held.pop(0)[0]
            self._acked(packet, False)
        if not held:
            self._held_acks = None

    def _acked(self, packet: Packet, waited: bool = True) -> None:
        if waited:
            self._acks_waiting -= 1
        out = self.out
        if out.held is None:
            self._send(packet)
        elif self.state != CLOSED:
            # The PUBREC of a QoS 2 PUBLISH goes before what was written to this client since
            # it was routed (its own copy, held by _publish_checked).
            out.release(self._encoded(packet))

    def _on_puback(self, p: Puback) -> None:
        session = self.session
        assert session is not None
        if session.acked(p.packet_id, 1):
            session.pump(self.broker.scheduler.wall())

    def _on_pubrec(self, p: Pubrec) -> None:
        session = self.session
        assert session is not None
        if p.reason_code >= 0x80:
            session.rejected(p.packet_id)
            session.pump(self.broker.scheduler.wall())
        else:
            # Recorded as released before PUBREL goes: after a crash the broker must re-send
            # PUBREL, never the PUBLISH the client may already have completed (exactly once).
            # An unknown packet id is answered Success too, as Mosquitto does (0x92 would fit).
            session.received(p.packet_id)
            self._ack(Pubrel(p.packet_id))

    def _on_pubrel(self, p: Pubrel) -> None:
        session = self.session
        assert session is not None
        # Success also for an unknown packet id (a PUBREL re-sent after a reconnect), as
        # Mosquitto does, where 0x92 (Packet Identifier not found) would fit too.
        session.qos2_released(p.packet_id)
        self._ack(Pubcomp(p.packet_id))

    def _on_pubcomp(self, p: Pubcomp) -> None:
        session = self.session
        assert session is not None
        if session.acked(p.packet_id, 2):
            session.pump(self.broker.scheduler.wall())

    # -- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------------------

    def _on_subscribe(self, p: Subscribe) -> None:
        mount = self.mount
        if mount:
            # mount_point: every filter is below the mount point, shared ones too (their
            # filter part); ACLs, the subscription and its retained messages see it prefixed.
            p = Subscribe(
                p.packet_id,
                [
                    dataclasses.replace(s, topic_filter=_mounted(mount, s.topic_filter))
                    for s in p.subscriptions
                ],
                p.properties,
            )
        self._authorize_subscribe(p, [])

    def _authorize_subscribe(self, p: Subscribe, allowed: list[bool]) -> None:
        """Every filter's authorization first, before anything changes; ``allowed``: the
        decisions so far (a pending one: the SUBSCRIBE goes on from that filter once it is
        done)."""
        auth = self.broker.authenticator
        for s in p.subscriptions[len(allowed) :]:
            may = auth.can_subscribe(self.client_id, self.username, s.topic_filter)
            if may is not True and may is not False:
                self._wait_for(may, lambda result: self._subscribe_decided(p, allowed, result))
                return
            allowed.append(may)
        self._subscribe(p, allowed)

    def _subscribe_decided(self, p: Subscribe, allowed: list[bool], may: Any) -> None:
        if self.state == CONNECTED:
            allowed.append(may is True)
            self._authorize_subscribe(p, allowed)

    def _subscribe(self, p: Subscribe, allowed: list[bool]) -> None:
        session = self.session
        assert session is not None
        broker = self.broker
        v5 = self.version == MQTT5
        sid: int | None = None
        if v5:
            ids = p.properties.get(Prop.SUBSCRIPTION_IDENTIFIER)
            if ids:
                sid = ids[0]
        codes: list[int] = []
        retained: list[tuple[str, SubOptions]] = []
        for s, may in zip(p.subscriptions, allowed, strict=True):
            share, real = split_shared(s.topic_filter)
            if share is not None and s.no_local and v5:
                # MQTT-3.8.3-4 v5: No Local on a shared subscription is a protocol error.
                raise ProtocolViolation(Reason.PROTOCOL_ERROR, "no local on a shared subscription")
            if not may:
                codes.append(Reason.NOT_AUTHORIZED if v5 else 0x80)
                continue
            config = broker.config
            if (config.max_topic_levels or config.max_topic_length) and _over_topic_limits(
                s.topic_filter, config.max_topic_levels, config.max_topic_length
            ):
                broker.stats.limited_topics += 1
                codes.append(Reason.TOPIC_FILTER_INVALID if v5 else 0x80)
                continue
            most = config.max_subscriptions
            if (
                most
                and len(session.subscriptions) >= most
                and s.topic_filter not in session.subscriptions
            ):
                broker.stats.limited_subscriptions += 1
                codes.append(Reason.QUOTA_EXCEEDED if v5 else 0x80)
                continue
            granted = min(s.qos, self.max_qos)
            if self.is_bridge and not v5:
                opts = SubOptions(granted, True, True, s.retain_handling, sid)
            else:
                opts = SubOptions(
                    granted, s.no_local, s.retain_as_published, s.retain_handling, sid
                )
            new = broker.subscribe(session, s.topic_filter, opts)
            codes.append(granted)
            # Retained messages: not for shared subscriptions (MQTT 5 4.8.2); Retain Handling
            # 0 always, 1 only for a new subscription, 2 never (MQTT-3.3.1-9..-11 v5).
            rh = s.retain_handling
            if share is None and (rh == 0 or (rh == 1 and new)):
                retained.append((real, opts))
        if sublog.isEnabledFor(logging.INFO):
            for s, code in zip(p.subscriptions, codes, strict=True):
                if code < 0x80:  # Mosquitto's "ID QOS FILTER" (handle_subscribe.c)
                    sublog.info("%s %d %s", self.client_id, code, s.topic_filter)
        router = broker.router
        if router is not None:
            filters = [
                sub.topic_filter
                for sub, code in zip(p.subscriptions, codes, strict=True)
                if code < 0x80
            ]
            if filters and not router.when_known(
                filters,
                lambda: self._resume(lambda: self._subscribed(p.packet_id, codes, retained)),
            ):
                # The other workers do not route these filters here yet: a message published
                # there right after SUBACK would miss this subscription. SUBACK (then what the
                # client sent after SUBSCRIBE, kept in order) waits.
                self._wait()
                return
        self._subscribed(p.packet_id, codes, retained)

    def _subscribed(
        self, packet_id: int, codes: list[int], retained: list[tuple[str, SubOptions]]
    ) -> None:
        self._send(Suback(packet_id, codes))  # MQTT-3.8.4-1, -4, -5
        if retained:
            session = self.session
            assert session is not None
            broker = self.broker
            now = broker.scheduler.wall()
            # Read access per retained message, as for any delivery (Mosquitto's retain__send).
            can_read = broker.can_read
            # check_retain_source: may its publisher still publish there (Mosquitto's
            # retain__process, after the read check)?
            check_source = broker.config.check_retain_source and broker.checks_publish
            for real, opts in retained:
                sids = (opts.subscription_id,) if opts.subscription_id else ()
                for message in broker.retained_for(real, now):
                    if can_read is not None and not can_read(self.client_id, message.topic):
                        continue
                    if check_source and not broker.retain_source_allowed(message):
                        continue
                    qos = message.qos if message.qos < opts.qos else opts.qos
                    # MQTT-3.3.1-8: retained messages sent on subscribe carry RETAIN 1.
                    session.deliver(message, qos, True, sids)

    def _on_unsubscribe(self, p: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        mount = self.mount
        codes: list[int] = [
            Reason.SUCCESS
            if self.broker.unsubscribe(session, _mounted(mount, f) if mount else f)
            else Reason.NO_SUBSCRIPTION_EXISTED
            for f in p.topic_filters
        ]
        if sublog.isEnabledFor(logging.INFO):
            for f in p.topic_filters:
                sublog.info("%s %s", self.client_id, f, extra=_UNSUBSCRIBE)
        self._send(Unsuback(p.packet_id, codes if self.version == MQTT5 else []))

    # -- DISCONNECT / AUTH ----------------------------------------------------------------------

    def _on_disconnect(self, p: Disconnect) -> None:
        session = self.session
        assert session is not None
        disconnects = self.broker.stats.disconnects
        disconnects[p.reason_code] = disconnects.get(p.reason_code, 0) + 1
        if self.version == MQTT5:
            expiry = p.properties.get(Prop.SESSION_EXPIRY_INTERVAL)
            if expiry is not None:
                if session.expiry_interval == 0 and expiry != 0:
                    # MQTT-3.14.2-2 v5
                    raise ProtocolViolation(Reason.PROTOCOL_ERROR, "session expiry was 0")
                session.set_expiry(expiry)
            if p.reason_code != Reason.SUCCESS:
                # Only a normal disconnection (0x00) deletes the will (MQTT-3.14.4-3 v5, v5
                # 3.1.2.5); 0x04 asks for it and an error reason from the client keeps it.
                self._close(True, END_DISCONNECTED, f"DISCONNECT 0x{p.reason_code:02x}")
                return
        # MQTT-3.14.4-3 (3.1.1), MQTT-3.1.2-10: a normal DISCONNECT discards the will.
        self.will = None
        self._close(False, END_DISCONNECTED, "normal disconnection")

    def _on_auth(self, p: Auth) -> None:
        """AUTH during an exchange (0x18) or to start re-authentication (0x19), MQTT 5 4.12."""
        method = p.properties.get(Prop.AUTHENTICATION_METHOD)
        if self.auth_method is None or method != self.auth_method:
            # MQTT-4.12.0-7 v5: no method at CONNECT; MQTT-4.12.1-1: another one now.
            raise ProtocolViolation(Reason.PROTOCOL_ERROR, "AUTH with another or no method")
        data = p.properties.get(Prop.AUTHENTICATION_DATA)
        if p.reason_code == Reason.RE_AUTHENTICATE and not self.authenticating:
            if self.state != CONNECTED:
                raise ProtocolViolation(Reason.PROTOCOL_ERROR, "re-authentication before CONNACK")
            self._exchange = self.broker.authenticator.enhanced(
                ConnectRequest(
                    self.client_id,
                    self.username,
                    None,
                    self.peer,
                    self.version,
                    method,
                    data,
                    self.listener,
                )
            )
            if self._exchange is None:
                raise ProtocolViolation(Reason.BAD_AUTHENTICATION_METHOD, "method unsupported")
            self._auth_step(self._exchange.start(data))
        elif p.reason_code == Reason.CONTINUE_AUTHENTICATION and self.authenticating:
            assert self._exchange is not None
            self._auth_step(self._exchange.step(data))
        else:
            raise ProtocolViolation(Reason.PROTOCOL_ERROR, "unexpected AUTH")

    # -- output ---------------------------------------------------------------------------------

    def _send(self, packet: Packet, version: int | None = None) -> None:
        data = self._encoded(packet, version)
        if data is not None:
            self._write(data)

    def _encoded(self, packet: Packet, version: int | None = None) -> bytes | None:
        """``packet``'s bytes for this client; None if they exceed its Maximum Packet Size."""
        data = encode(packet, self.version if version is None else version)
        limit = self.out.max_packet
        if len(data) > limit and self.version == MQTT5:
            props = getattr(packet, "properties", None)
            if props:
                # Drop reason strings and user properties rather than exceed the client's limit.
                props.pop(Prop.REASON_STRING, None)
                props.pop(Prop.USER_PROPERTY, None)
                data = encode(packet, self.version)
            if len(data) > limit:
                return None
        return data

    def _write(self, data: bytes) -> None:
        if self.state != CLOSED:
            self.out.write(data)  # to the transport, which coalesces a loop turn's writes

    # -- closing ----------------------------------------------------------------------------------

    def _violation(self, reason: int, why: str) -> None:
        """Close after a protocol violation; v5 says why with DISCONNECT (MQTT-4.13.1-1 v5)."""
        if self.state == CLOSED:
            return
        refused = self.broker.stats.refused
        refused[reason] = refused.get(reason, 0) + 1
        end = _ENDS.get(reason, END_PROTOCOL)
        why = f"0x{reason:02x} {why}"
        if self.state == CONNECTED and self.version == MQTT5:
            if reason not in REASONS_BY_PACKET[PacketType.DISCONNECT]:
                reason = Reason.PROTOCOL_ERROR
            self._send(Disconnect(reason))
        self._close(True, end, why)

    def _timeout(self) -> None:
        """The CONNECT timer, or the keep-alive timer: 1.5 x Keep Alive (MQTT-3.1.2-24 in 3.1.1,
        MQTT-3.1.2-22 in v5)."""
        self._timer = None
        if self.state == CLOSED:
            return
        if self.state != CONNECTED:
            self._close(False, END_TIMEOUT, "no CONNECT in time")
            return
        limit = self.keepalive * 1.5
        now = self.broker.scheduler.time()
        idle = now - self.last_seen
        if idle >= limit:
            self._violation(Reason.KEEP_ALIVE_TIMEOUT, "keep-alive timeout")
        else:
            self._timer = self.broker.scheduler.call_later(limit - idle, self._timeout)

    def _expired(self) -> None:
        """The credentials the client connected with expired (an access token's ``exp``): close
        the connection, v5 with DISCONNECT 0x87 Not authorized as EMQX does (a DISCONNECT
        reason code, MQTT 5 3.14.2.1). The will is published: the client did not disconnect
        normally (MQTT-3.1.2-8)."""
        self._expiry = None
        if self.state == CONNECTED:
            self._violation(Reason.NOT_AUTHORIZED, "credentials expired")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def revoke(self, why: str) -> None:
        """The client's credentials are no longer valid (a reload removed or changed its user):
        close, with a v5 DISCONNECT 0x87 Not authorized; the will is published."""
        self._violation(Reason.NOT_AUTHORIZED, why)

    def kick(self, reason: int, why: str) -> None:
        """An operator disconnects the client (the admin API): a v5 client gets DISCONNECT with
        ``reason`` (0x98 Administrative action by default); the will is published."""
        self._violation(reason, why)

    def take_will(self) -> Message | None:
        will, self.will = self.will, None
        return will

    def taken_over(self) -> None:
        """Another connection took this client id (MQTT-3.1.4-2; v5: DISCONNECT 0x8E)."""
        self.session = None
        self.will = None
        if self.state == CONNECTED and self.broker.config.connection_messages:
            # Mosquitto's line (an error, as there), before the new client's "New client".
            self._event(
                logging.ERROR,
                "takeover",
                "session taken over",
                "Client %s already connected, closing old connection.",
                self.client_id,
            )
        if self.version == MQTT5 and self.state == CONNECTED:
            self._send(Disconnect(Reason.SESSION_TAKEN_OVER))
        self._close(False, "", "")  # the line above is this disconnection's

    def shutdown(self) -> None:
        """The server is stopping (v5: DISCONNECT 0x8B)."""
        if self.state == CONNECTED and self.version == MQTT5:
            self._send(Disconnect(Reason.SERVER_SHUTTING_DOWN))
        self._close(True, "", "server shutting down")

    def _close(self, send_will: bool, end: str, why: str, event: str = "disconnect") -> None:
        """Close the connection; log ``Client ID <end>`` (Mosquitto's sentence; none if empty)
        with ``why`` as the JSON reason."""
        if self.state == CLOSED:
            return
        connected = self.state == CONNECTED
        if self.broker.config.connection_messages:
            if end:
                if log.isEnabledFor(NOTICE):
                    self._event(
                        NOTICE, event, why, "Client %s %s", self.client_id or "<unknown>", end
                    )
            elif why and connected and log.isEnabledFor(logging.INFO):
                self._event(
                    logging.INFO, event, why, "Client %s disconnected: %s.", self.client_id, why
                )
        self.state = CLOSED
        self._cancel_timer()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        out = self.out
        if out.held is not None:
            out.release(None)  # e.g. a DISCONNECT written while a PUBREC waited for the store
        out.open = False
        self.transport.close()
        self.broker.connections.discard(self)
        session = self.session
        self.session = None
        if connected and session is not None:
            will = self.take_will() if send_will else None
            self.will = None
            self.broker.detach(self, session, will)

    def connection_lost(self, exc: Exception | None = None) -> None:
        """The transport closed (peer gone, or after our own close): MQTT-3.1.2-8 sends the will."""
        self._close(True, END_LOST, "connection closed by the client")
        on_lost = self.on_lost
        if on_lost is not None:
            self.on_lost = None
            on_lost()

    # The rest of the asyncio Protocol interface: the transport hands its events straight to the
    # connection (transport.set_protocol), without a forwarding layer in between.

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:
        # The client reads slower than we write: its session holds QoS 0 messages back from now
        # on, within max_queued_messages / max_queued_bytes (QoS 1/2 are bounded by the
        # in-flight window anyway).
        self.out.paused = True

    def resume_writing(self) -> None:
        self.out.paused = False
        self._drain()

    def _drain(self) -> None:
        """Write what the session held back for the socket, a loop turn's worth at a time (the
        transport coalesces a turn's writes: only then can it pause us again)."""
        session = self.session
        if session is not None and not self.out.paused and session.writable():
            self.broker.scheduler.call_soon(self._drain)
