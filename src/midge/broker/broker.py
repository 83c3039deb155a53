"""The broker core: sessions by client id, routing, retained messages, wills and expiry.

It knows no sockets and no asyncio: connections call it with plain method calls, and it keeps time
through a :class:`~midge.broker.clock.Scheduler` (timers, the monotonic and the wall
clock; it never reads a clock itself). Routing is one trie walk per topic
(cached for exact topics), then one ``session.deliver`` per matched client, sharing one
encoding per distinct outgoing form of the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from midge.auth.base import AuthChain, Authenticator, chain
from midge.broker.clock import Cancellable, Scheduler
from midge.broker.model import Message, SessionState, SubOptions, will_delay
from midge.broker.outgoing import FormCache
from midge.broker.session import NEVER, Session, Stats
from midge.broker.tap import Tap
from midge.broker.topictree import RetainedTree, SharedGroup, TopicTree
from midge.codec.properties import Prop
from midge.config import Config
from midge.store.base import Store, StoreState
from midge.store.memory import MemoryStore

if TYPE_CHECKING:
    from midge.broker.connection import Connection
    from midge.cluster.router import AckGate, Router

log = logging.getLogger("midge.broker")

#: Seconds between sweeps of detached sessions' queues for expired messages (durable store).
PURGE_INTERVAL = 60.0


__all__ = ["Broker", "Cancellable", "PendingWill", "Scheduler"]


class PendingWill:
    """A will waiting for its delay (MQTT-3.1.3-9 v5) or for its session to end."""

    __slots__ = ("handle", "message", "username")

    def __init__(self, message: Message, handle: Any, username: str | None = None) -> None:
        self.message = message
        self.handle = handle
        #: The will's client's username: the will is authorized as its publish (ACL).
        self.username = username


class Broker:
    def __init__(
        self,
        config: Config,
        scheduler: Scheduler,
        authenticator: Authenticator | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.scheduler = scheduler
        #: The authentication chain (midge.auth.base): every layer that provides a capability
        #: is asked; what the per-message paths need is computed once from the declarations.
        self.authenticator: AuthChain = chain(authenticator)
        #: False when every topic is open to everyone: the per-PUBLISH check is skipped.
        self.checks_publish = self.authenticator.checks_publish
        # Read access on delivery (an ACL file: midge.auth.files); None when nothing restricts
        # reads, so routing pays one check.
        self.can_read: Callable[[str, str], bool] | None = self.authenticator.read_check
        self.checks_read = self.can_read is not None
        self.store: Store = store or MemoryStore()
        #: The store when it keeps anything (SQLite): persistent sessions report to it and acks
        #: wait for its commits. None for the memory store, so the core skips all of that.
        self.durable_store: Store | None = self.store if self.store.durable else None
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()
        self.tree = TopicTree()
        self.retained = RetainedTree()
        self.wills: dict[str, PendingWill] = {}
        self.stats = Stats()
        self.shutting_down = False
        #: Cross-worker routing (``midge broker --workers N``); None for a single process, so the
        #: single-worker hot path pays one attribute check (see midge.cluster.router).
        self.router: Router | None = None
        #: The web dashboard's tap on what is published (midge.observe.live): None unless a
        #: dashboard stream is open; then each message published is added to it.
        self.tap: Tap | None = None
        #: A router whose deliveries to other nodes are acknowledged (the Redis cluster): the
        #: PUBACK/PUBREC of a QoS 1/2 message waits until they have accepted it. None otherwise.
        self.ack_gate: AckGate | None = None
        #: Authentication and authorization decisions still to come (an authenticator's
        #: Pending answers, Connection._wait_for): the batch window (midge.transport.pacer)
        #: does not rest while there are any, so that each is acted on as soon as it comes.
        self.deciding = 0

    # -- sessions -----------------------------------------------------------------------------

    def attach(self, conn: Connection, client_id: str, clean_start: bool) -> tuple[Session, bool]:
        """Give ``conn`` the session for ``client_id``; returns (session, session present).

        An existing connection with the same id is taken over (MQTT-3.1.4-2 3.1.1, MQTT-3.1.4-3 v5).
        Its will is published only if its session ends here (what Mosquitto does): a clean start, or
        an old session that was not to outlive its connection; otherwise the reconnect cancels the
        will (MQTT-3.1.3-9 v5).
        """
        session = self.sessions.get(client_id)
        if session is not None:
            # A session that was to end with its connection (clean session 3.1.1, expiry 0 v5)
            # ends with the connection taken over: MQTT-3.1.2-6 3.1.1 forbids reusing it.
            ends = clean_start or session.expiry_interval == 0
            self._displace(session, clean_start)
            if ends:
                self._end_session(session)
                session = None
        present = session is not None
        if session is None:
            session = self.new_session(None, client_id)
            self.sessions[client_id] = session
        session.connection = conn
        return session, present

    def session_started(
        self, session: Session, expiry: int, version: int, username: str | None = None
    ) -> None:
        """The CONNECT set the session's expiry: a persistent one (expiry > 0) is recorded in the
        durable store with all it holds; one that stops being persistent leaves it. The
        connection's will, if any, goes to the router (:meth:`Router.connection_will`)."""
        session.expiry_interval = expiry
        session.version = version
        cid = session.client_id
        conn = session.connection
        router = self.router
        if router is not None and conn is not None and conn.will is not None:
            # Kept by the broker's other processes while connected (Router.connection_will).
            router.connection_will(cid, conn.will, username, expiry)
        store = self.durable_store
        if store is None:
            return
        if not expiry:
            if session.store is not None:
                store.session_deleted(cid, session.stored_messages())
                session.store = None
            return
        store.session_saved(cid, version, expiry, username)
        if session.store is None:
            session.store = store
            for topic_filter, options in session.subscriptions.items():
                store.subscription_added(cid, topic_filter, options)
            for pid, out in session.inflight.items():
                store.delivery_added(cid, out.delivery, pid)
                if out.released:
                    store.delivery_released(cid, pid)
            for delivery in session.queue or ():
                store.delivery_added(cid, delivery, 0)
            for pid in session.awaiting_rel:
                store.inbound_added(cid, pid)

    def _pop_will(self, client_id: str) -> PendingWill | None:
        pending = self.wills.pop(client_id, None)
        if pending is not None and self.durable_store is not None:
            self.durable_store.will_cleared(client_id)
        return pending

    def detach(self, conn: Connection, session: Session, will: Message | None) -> None:
        """``conn`` closed: publish or schedule its will, then end or keep the session."""
        if session.connection is not conn:
            return  # taken over already
        session.detached()
        if self.router is not None:
            self.router.connection_ended(session.client_id)
        expiry = session.expiry_interval
        if will is not None:
            delay = will_delay(will, expiry)
            if delay and not self.shutting_down:
                handle = self.scheduler.call_later(delay, self._will_due, session.client_id)
                self.wills[session.client_id] = PendingWill(will, handle, conn.username)
                if session.store is not None:
                    session.store.will_saved(session.client_id, will, self.scheduler.wall() + delay)
            else:
                self.publish_will(will, conn.username)
        if expiry == 0:
            self._end_session(session)
            self._forget(session.client_id)
            return
        if session.store is not None:
            session.store.session_detached(session.client_id, expiry, self.scheduler.wall())
        if expiry != NEVER:
            session.expiry_handle = self.scheduler.call_later(expiry, self._expire, session)

    def schedule_will(
        self, client_id: str, message: Message, due_at: float, username: str | None
    ) -> None:
        """A delayed will pending until wall-clock ``due_at`` (restored, or taken over from a
        cluster node that died): published then unless its session resumes first."""
        old = self.wills.pop(client_id, None)
        if old is not None:
            old.handle.cancel()
        delay = max(0.0, due_at - self.scheduler.wall())
        handle = self.scheduler.call_later(delay, self._will_due, client_id)
        self.wills[client_id] = PendingWill(message, handle, username)
        session = self.sessions.get(client_id)
        if session is not None and session.store is not None:
            session.store.will_saved(client_id, message, due_at)

    def _will_due(self, client_id: str) -> None:
        pending = self._pop_will(client_id)
        if pending is not None:
            self.publish_will(pending.message, pending.username)

    def _forget(self, client_id: str) -> None:
        self.authenticator.session_ended(client_id)

    def _expire(self, session: Session) -> None:
        """The session's expiry interval passed with no connection (MQTT-3.1.2-23 v5)."""
        session.expiry_handle = None
        if session.connection is not None or self.sessions.get(session.client_id) is not session:
            return
        self.stats.clients_expired += 1
        pending = self._pop_will(session.client_id)
        if pending is not None:
            pending.handle.cancel()
            self.publish_will(pending.message, pending.username)
        self._end_session(session)
        self._forget(session.client_id)

    def _displace(self, session: Session, clean_start: bool) -> None:
        """A new connection claims ``session``: take the old connection over, settle the wills
        (published if the session ends here, cancelled otherwise) and stop the expiry timer."""
        ends = clean_start or session.expiry_interval == 0
        old = session.connection
        if old is not None:
            session.detached()
            if self.router is not None:
                self.router.connection_ended(session.client_id)
            will = old.take_will()
            old.taken_over()
            if will is not None and ends:
                self.publish_will(will, old.username)
        pending = self._pop_will(session.client_id)
        if pending is not None:
            pending.handle.cancel()
            if ends:
                self.publish_will(pending.message, pending.username)
        if session.expiry_handle is not None:
            session.expiry_handle.cancel()
            session.expiry_handle = None

    def _unsubscribe_all(self, session: Session) -> None:
        router = self.router
        for topic_filter in session.subscriptions:
            if self.tree.unsubscribe(session.client_id, topic_filter) and router is not None:
                router.interest_removed(topic_filter)

    def _end_session(self, session: Session) -> None:
        self._unsubscribe_all(session)
        if session.store is not None:
            session.store.session_deleted(session.client_id, session.stored_messages())
            session.store = None
        session.clear()
        if session.expiry_handle is not None:
            session.expiry_handle.cancel()
            session.expiry_handle = None
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def delete_session(self, client_id: str) -> bool:
        """Delete a detached session (the admin API): its subscriptions, queue and in-flight
        messages go, and a delayed will is dropped, not published. False if there is no such
        session or a client is connected to it (disconnect it first)."""
        session = self.sessions.get(client_id)
        if session is None or session.connection is not None:
            return False
        pending = self._pop_will(client_id)
        if pending is not None:
            pending.handle.cancel()
        self._end_session(session)
        self._forget(client_id)
        return True

    # -- subscriptions ------------------------------------------------------------------------

    def subscribe(self, session: Session, topic_filter: str, options: SubOptions) -> bool:
        """Add or replace one subscription; True if it did not exist before."""
        session.subscriptions[topic_filter] = options
        if session.store is not None:
            session.store.subscription_added(session.client_id, topic_filter, options)
        new = self.tree.subscribe(session.client_id, topic_filter, options)
        if new and self.router is not None:
            self.router.interest_added(topic_filter)
        return new

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        if session.store is not None:
            session.store.subscription_removed(session.client_id, topic_filter)
        if self.tree.unsubscribe(session.client_id, topic_filter) and self.router is not None:
            self.router.interest_removed(topic_filter)
        return True

    def retained_for(self, topic_filter: str, now: float) -> Iterator[Message]:
        """Unexpired retained messages matching a (non-shared) filter."""
        expired: list[Message] = []
        for message in self.retained.match(topic_filter):
            if message.expires_at is not None and message.expires_at <= now:
                expired.append(message)
                continue
            yield message
        for message in expired:
            if self.retained.get(message.topic) is message:
                cleared = Message(message.topic, b"")
                self.retained.set(cleared)
                self.store.retained_changed(cleared)

    # -- memory -------------------------------------------------------------------------------

    def memory_used(self) -> int:
        """What ``memory_limit`` counts: the payload bytes of the retained messages and of every
        message a session holds (queued, in flight, or QoS 0 waiting for a slow socket), once
        per session that holds it. Python's own heap is not measured per message: this is the
        part of it that grows with the traffic."""
        return self.stats.held_bytes + self.retained.payload_bytes

    # -- routing --------------------------------------------------------------------------------

    def publish(self, message: Message) -> bool:
        """A message arrived (PUBLISH or will): retain it if asked, then route it.

        Returns whether any subscription matched (v5 reason 0x10 otherwise).
        """
        self.stats.messages_received += 1
        if message.retain:
            # MQTT-3.3.1-5..-7 (3.1.1 and v5): store, replace, or clear on an empty payload.
            self.retained.set(message)
            if not message.topic.startswith("$SYS"):
                # $SYS is the running broker's own state: never kept across a restart (nor
                # written every sys_interval), as in Mosquitto.
                self.store.retained_changed(message)
        tap = self.tap
        if tap is not None:
            tap.add(message)
        if self.router is not None:
            return self.router.publish(message)
        return self.route(message)

    def delete_retained(self, topic: str) -> bool:
        """Clear the retained message of ``topic`` (the admin API) without routing anything, as
        an empty retained PUBLISH would; False if there was none. With ``--workers``, this
        worker's copy only."""
        if self.retained.get(topic) is None:
            return False
        clear = Message(topic, b"", 0, True)
        self.retained.set(clear)
        if not topic.startswith("$SYS"):
            self.store.retained_changed(clear)
        return True

    def publish_from_peer(self, message: Message, groups: set[tuple[str, str]] | None) -> None:
        """A message another worker published (``--workers N``): keep it if retained (every
        worker holds the whole retained set), then deliver it here only, never forwarding it
        again. ``groups`` are the shared groups (name, filter) this worker was picked to serve."""
        if message.retain:
            self.retained.set(message)
            if not message.topic.startswith("$SYS"):
                self.store.retained_changed(message)
        tap = self.tap
        if tap is not None:
            tap.add(message)
        self.route(message, groups if groups is not None else set())

    def publish_will(self, will: Message, username: str | None = None) -> None:
        """Publish a will as the CONNECT gave it; its Message Expiry starts now (v5 3.1.3.2.4).

        With an ACL it is authorized as a PUBLISH by its client (``username``), when it is
        published, as Mosquitto does: a will the client may not publish is dropped."""
        if (
            self.checks_publish
            and will.origin is not None
            # a decision still pending (a plugin) does not hold the will back
            and self.authenticator.can_publish(will.origin, username, will.topic) is False
        ):
            log.info("will of %s on %s dropped: not authorised", will.origin, will.topic)
            return
        props = will.properties
        if props:
            props = {k: v for k, v in props.items() if k != Prop.WILL_DELAY_INTERVAL}
        w = will
        message = Message.from_publish(
            w.topic, w.payload, w.qos, w.retain, props, w.origin, self.scheduler.wall()
        )
        message.source = w.source
        self.publish(message)

    def retain_source_allowed(self, message: Message) -> bool:
        """check_retain_source: whether the client that published the retained ``message`` may
        still publish to its topic (the ACL may have changed since), as Mosquitto checks it
        before sending a retained message: with that client's id, username and listener,
        whether or not it is connected. A message of unknown source (the broker's own) passes;
        a decision still pending (a plugin) does not hold it back."""
        origin = message.origin
        if origin is None:
            return True
        username, port = message.source if message.source is not None else (None, None)
        allowed = self.authenticator.source_can_publish(origin, username, port, message.topic)
        return allowed is not False

    def route(self, message: Message, groups: set[tuple[str, str]] | None = None) -> bool:
        """Deliver to local subscribers. ``groups`` None: every matching shared group; otherwise
        only those (name, filter) groups, which the cluster router picked this worker for.
        Returns whether any subscription matched."""
        subs, shared = self.tree.match(message.topic)
        if not subs and not shared:
            return False
        sessions = self.sessions
        origin = message.origin
        mqos = message.qos
        # Read access is checked per delivery (Mosquitto's subs__send), only with an ACL.
        can_read = self.can_read
        topic = message.topic
        upgrade = self.config.upgrade_outgoing_qos
        # Encoded bytes shared by the deliveries of this message; one delivery needs none.
        cache = FormCache() if shared or len(subs) > 1 else None
        if len(subs) == 1:
            # The common case: one plain subscription per matched client, no aggregation needed.
            cid, opts = subs[0]
            if not (opts.no_local and cid == origin) and (can_read is None or can_read(cid, topic)):
                session = sessions.get(cid)
                if session is not None:
                    qos = opts.qos if upgrade or opts.qos < mqos else mqos
                    sid = opts.subscription_id
                    session.deliver(
                        message,
                        qos,
                        message.retain and opts.retain_as_published,
                        (sid,) if sid else (),
                        cache,
                    )
        elif subs:
            # Several subscriptions (of one client or more), as Mosquitto 2.0.11 delivers them:
            # an MQTT 5 client, and any client with allow_duplicate_messages, gets one copy per
            # matching subscription, each with its own QoS and identifier (MQTT-3.3.4-5 v5),
            # in the trie's order; an MQTT 3 client otherwise one copy at the highest QoS of
            # its subscriptions (MQTT-3.3.5-1 3.1.1).
            copies = self.config.allow_duplicate_messages
            targets: dict[str, list[Any]] = {}
            for cid, opts in subs:
                if opts.no_local and cid == origin:
                    continue  # MQTT-3.8.3-3 v5
                session = sessions.get(cid)
                if session is None or (can_read is not None and not can_read(cid, topic)):
                    continue
                sid = opts.subscription_id
                if copies or session.version == 5:
                    qos = opts.qos if upgrade or opts.qos < mqos else mqos
                    session.deliver(
                        message,
                        qos,
                        message.retain and opts.retain_as_published,
                        (sid,) if sid else (),
                        cache,
                    )
                    continue
                target = targets.get(cid)
                if target is None:
                    targets[cid] = [opts.qos, opts.retain_as_published, [sid] if sid else []]
                else:
                    if opts.qos > target[0]:
                        target[0] = opts.qos
                    target[1] = target[1] or opts.retain_as_published
                    if sid:
                        target[2].append(sid)
            for cid, (gqos, rap, sids) in targets.items():
                session = sessions[cid]
                qos = gqos if upgrade or gqos < mqos else mqos
                session.deliver(message, qos, message.retain and rap, tuple(sids), cache)
        for group in shared:
            if groups is not None and (group.name, group.filter) not in groups:
                continue
            picked = self._pick(group, can_read, topic)
            if picked is None:
                continue
            session, opts = picked
            qos = opts.qos if upgrade or opts.qos < mqos else mqos
            sid = opts.subscription_id
            session.deliver(
                message,
                qos,
                message.retain and opts.retain_as_published,
                (sid,) if sid else (),
                cache,
            )
        # Some subscription matched, even if no one could read it or it was the publisher's own
        # with No Local: Mosquitto answers Success then too, not 0x10 (its subs__process).
        return True

    def _pick(
        self,
        group: SharedGroup,
        can_read: Callable[[str, str], bool] | None = None,
        topic: str = "",
    ) -> tuple[Session, SubOptions] | None:
        """Round-robin over the group's members, preferring connected ones (MQTT 5 4.8.2);
        with an ACL, only members allowed to read ``topic``."""
        members = list(group.members.items())
        n = len(members)
        if not n:
            return None
        start = group.next % n
        fallback: tuple[Session, SubOptions] | None = None
        for k in range(n):
            cid, opts = members[(start + k) % n]
            session = self.sessions.get(cid)
            if session is None or (can_read is not None and not can_read(cid, topic)):
                continue
            if session.connection is not None:
                group.next = start + k + 1
                return session, opts
            if fallback is None:
                fallback = (session, opts)
        group.next = start + 1
        return fallback

    # -- sessions moving between workers (midge.cluster.workers) -----------------------------------

    def release(
        self, client_id: str, clean_start: bool, stand_in: bool = False, *, keep: bool = False
    ) -> tuple[Session | None, Session | None]:
        """A CONNECT for ``client_id`` reached another worker: give the session up here.

        The same takeover rules as :meth:`attach` (MQTT-3.1.4-3 v5, will only if the session ends
        here), then the session leaves this broker. Returns it, still holding its subscriptions
        and messages, for the new worker to adopt, or None (no session here, or a clean start
        discards it); and its stand-in, or None.

        With ``stand_in``, a session that moves and has subscriptions leaves a stand-in in its
        place: an empty session with the same subscriptions, which queues what is published
        until the new worker routes to the session (the router hands what it queued over, then
        ends it with :meth:`end_stand_in`). Otherwise its subscriptions leave the tree.

        With ``keep``, a persistent session that moves stays in the durable store (the caller
        deletes it once the new worker has recorded it in its own), and its stand-in records
        what it queues there too, under the same client id.
        """
        session = self.sessions.get(client_id)
        if session is None:
            return None, None
        self._displace(session, clean_start)
        store = session.store
        kept = keep and not clean_start and store is not None
        if store is not None:
            if not kept:
                # It leaves this worker's database; the new worker's records it (adopt).
                store.session_deleted(client_id, session.stored_messages())
            session.store = None
        stub: Session | None = None
        if stand_in and not clean_start and session.subscriptions:
            # Same client id and options: the tree keeps its entries, no interest changes.
            stub = self.new_session(None, client_id)
            stub.version = session.version
            stub.expiry_interval = NEVER
            stub.subscriptions = dict(session.subscriptions)
            if kept:
                stub.store = store
            self.sessions[client_id] = stub
        else:
            self._unsubscribe_all(session)
            del self.sessions[client_id]
        # What it holds leaves this broker's count (memory_limit) with it.
        self.stats.held_bytes -= session.held()
        session.stats = None
        return (None if clean_start else session), stub

    def end_stand_in(self, stub: Session) -> None:
        """The stand-in of a session that moved (:meth:`release`) has handed its messages
        over: it leaves, with its subscriptions (what it recorded in the store stays there,
        as the released session does, until the caller deletes it)."""
        stub.store = None
        if self.sessions.get(stub.client_id) is stub:
            self._unsubscribe_all(stub)
            del self.sessions[stub.client_id]
        stub.clear()

    def new_session(self, state: SessionState | None = None, client_id: str = "") -> Session:
        """A session with this broker's limits and counters, holding ``state`` if given (a
        snapshot or what the store kept), not yet among :attr:`sessions`."""
        config = self.config
        session = Session(
            state.client_id if state is not None else client_id,
            config.max_queued_messages,
            config.max_queued_bytes,
            config.queue_qos0_messages,
            self.stats,
        )
        if state is not None:
            session.restore(state)
        return session

    def adopt(self, session: Session) -> None:
        """Take a session released by another worker: subscribe it here. Its client attaches
        once the claim is complete; then :meth:`adopted` is called."""
        existing = self.sessions.get(session.client_id)
        if existing is not None:
            self._end_session(existing)
        if session.stats is not self.stats:
            held = session.held()
            if session.stats is not None:
                session.stats.held_bytes -= held
            self.stats.held_bytes += held
            session.stats = self.stats
        self.sessions[session.client_id] = session
        router = self.router
        for topic_filter, options in session.subscriptions.items():
            if self.tree.subscribe(session.client_id, topic_filter, options) and router is not None:
                router.interest_added(topic_filter)
        if self.durable_store is not None and session.expiry_interval and session.store is None:
            # A persistent session is recorded in this worker's database with all it holds.
            self.session_started(session, session.expiry_interval, session.version)

    def adopted(self, session: Session) -> None:
        """The claim that moved ``session`` here is complete: if its client did not attach (it
        went away meanwhile), let the session expire as a detached one would. Not armed in
        :meth:`adopt`: a session released by a live connection has its expiry (often 0) to run
        from the end of a connection, not while the new one waits for its CONNACK."""
        if (
            self.sessions.get(session.client_id) is not session
            or session.connection is not None
            or session.expiry_handle is not None
        ):
            return
        if session.expiry_interval != NEVER:
            session.expiry_handle = self.scheduler.call_later(
                session.expiry_interval, self._expire, session
            )

    # -- start-up -------------------------------------------------------------------------------

    def restore(self, state: StoreState) -> None:
        """Take back what the durable store kept (before any client connects).

        Sessions come back detached, their expiry counting from when their connection closed
        (wall clock; from now for those connected when the broker stopped), with subscriptions,
        queue, in-flight messages (re-sent with DUP and the same packet ids when the client
        returns, MQTT-4.4.0-1) and inbound QoS 2 ids (so a re-sent PUBLISH is not delivered
        twice, MQTT-4.3.3-2). Pending delayed wills are due at their wall-clock time.
        """
        store = self.durable_store
        now = self.scheduler.wall()
        for message in state.retained:
            self.retained.set(message)
        for stored in state.sessions:
            cid = stored.client_id
            session = self.new_session(stored)
            expiry = session.expiry_interval
            session.store = store
            for topic_filter, options in stored.subscriptions.items():
                self.tree.subscribe(cid, topic_filter, options)
            self.sessions[cid] = session
            self.authenticator.session_restored(cid, stored.username)
            gone = stored.disconnected_at
            if gone is None:
                gone = now
                if store is not None:
                    store.session_detached(cid, expiry, now)
            if expiry != NEVER:
                left = max(0.0, gone + expiry - now)
                session.expiry_handle = self.scheduler.call_later(left, self._expire, session)
        for will in state.wills:
            delay = max(0.0, will.due_at - now)
            handle = self.scheduler.call_later(delay, self._will_due, will.client_id)
            source = will.message.source
            self.wills[will.client_id] = PendingWill(
                will.message, handle, source[0] if source is not None else None
            )
        if store is not None:
            self.scheduler.call_later(PURGE_INTERVAL, self._purge_tick)

    def purge_expired(self) -> int:
        """Drop expired messages from detached persistent sessions' queues (and so from disk);
        a connected session drops them as their turn comes. Returns how many went."""
        now = self.scheduler.wall()
        dropped = 0
        for session in self.sessions.values():
            if session.connection is None and session.queue:
                dropped += session.drop_expired(now)
        return dropped

    def _purge_tick(self) -> None:
        if self.shutting_down:
            return
        self.purge_expired()
        self.scheduler.call_later(PURGE_INTERVAL, self._purge_tick)

    # -- shutdown -------------------------------------------------------------------------------

    def publish_all_wills(self) -> None:
        """Publish every will now, delayed ones too (the first step of :meth:`shutdown`)."""
        self.shutting_down = True
        for conn in list(self.connections):
            will = conn.take_will()
            if will is not None:
                self.publish_will(will, conn.username)
        for client_id in list(self.wills):
            self._will_due(client_id)

    def shutdown(self) -> None:
        """Close every connection (v5: DISCONNECT 0x8B) after publishing their wills.

        Every will — delayed or not — is published now, while the other clients are still
        connected to receive them. Persistent sessions stay (in the durable store, if any).
        """
        conns = list(self.connections)
        self.publish_all_wills()
        for conn in conns:
            conn.shutdown()
