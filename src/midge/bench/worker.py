"""One load-generator process: its share of the clients on raw asyncio sockets (uvloop if present).

The coordinator (:mod:`midge.bench.runner`) starts one of these per ``--procs`` with a
:class:`~midge.bench.scenario.WorkerPlan` and drives it through a pipe::

    worker -> ("ready", {})            the process is up
    coord  -> ("connect",)             so every worker starts connecting at the same moment
    worker -> ("connected", info)      every client has its CONNACK
    coord  -> ("subscribe",)
    worker -> ("subscribed", info)     every subscriber has its SUBACK
    coord  -> ("go", t0, t1, t2)       publish from t0; measure over [t1, t2); stop at t2
                                       (--offline: the subscribers disconnect before t0 and
                                       reconnect to drain their queues after t2)
    worker -> ("result", info)         after the drain
    coord  -> ("close",)               DISCONNECT everyone and exit
    worker -> ("error", text)          at any point, instead of the expected answer

Times are ns relative to the plan's ``epoch_ns`` on the machine-wide monotonic clock. Each worker
also keeps three live counters in shared memory (sent, delivered, connected) that the coordinator
reads for its progress bar and that max-mode publishers read to hold the end-to-end window.

Pacing: every ``tick`` a publisher sends what its rate says is due since t0, as one write, all
stamped with the same send time; a QoS 1/2 publisher sends no more than its in-flight window
allows. In max mode the publishers share ``window`` undelivered deliveries between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import socket
import time
import traceback
from array import array
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar, cast

from midge.bench.scenario import ClientSpec, WorkerPlan
from midge.bench.wire import ProtocolFailure, PublishTemplate, Reader
from midge.codec import encode
from midge.codec.packets import Connect, Subscribe, Subscription
from midge.codec.properties import Prop

T = TypeVar("T")

HANDSHAKE_TIMEOUT = 30.0
#: Max mode: the most messages one publisher writes in one tick.
MAX_BATCH = 2048
#: Max mode: no delivery for this long while some are outstanding means they were dropped.
STALL_NS = 500_000_000
#: Pause a publisher while this much is waiting in its socket's user-space buffer.
WRITE_HIGH_WATER = 1 << 20
#: Paced publishers in one process above which each tick deals what the process's total rate
#: says is due round-robin over them (one message each), rather than asking every publisher
#: what its own rate says: 100,000 clients at 0.26 messages/s each would otherwise cost a walk
#: over tens of thousands of clients every millisecond.
ROUND_ROBIN_ABOVE = 1000

#: Linux's IP_BIND_ADDRESS_NO_PORT (not in the socket module before Python 3.12).
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

_SENT, _DELIVERED, _CONNECTED = 0, 1, 2
_SLOTS = 3

#: The Session Expiry Interval of a persistent MQTT 5 subscriber (seconds; long enough for a run).
SESSION_EXPIRY = 3600


def loopback_sources(host: str, count: int) -> list[str]:
    """``count`` source addresses 127.B.0.2, 127.B.0.3, ... when ``host`` is IPv4 loopback.

    One client address has one ephemeral port range (28,000 ports here), and the kernel's search
    for a free port slows down badly as it fills: 19,000 connections from 127.0.0.1 open at a
    third of the rate they do when spread over a few addresses. That would measure the
    generator's kernel, not the broker, so connections to a loopback broker are spread. ``B`` is
    random, so a run does not share addresses with the TIME_WAIT sockets of the run before it.
    """
    if count <= 0:
        return []
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []
    if address.version != 4 or not address.is_loopback:
        return []
    block = random.randrange(1, 255)
    return [f"127.{block}.{i // 250}.{2 + i % 250}" for i in range(count)]


class Failure(Exception):
    """The run cannot go on (the broker refused or closed a client)."""


class Client(asyncio.Protocol):
    """One MQTT connection of the generator; the broker's bytes go straight to its Reader."""

    __slots__ = (
        "closed",
        "leaving",
        "pid",
        "reader",
        "sent",
        "spec",
        "template",
        "transport",
        "waiter",
        "worker",
    )

    def __init__(self, worker: Worker, spec: ClientSpec) -> None:
        self.worker = worker
        self.spec = spec
        plan = worker.plan
        self.reader = Reader(plan.version)
        self.template = (
            PublishTemplate(spec.publish, plan.payload, plan.qos, plan.version)
            if spec.publish
            else None
        )
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.sent = 0
        self.pid = 1
        self.closed = False
        self.leaving = False  # --offline: this subscriber is disconnecting on purpose
        if self.template is not None and plan.qos:
            # Send times by packet identifier, modulo a power of two above the in-flight window
            # (identifiers in flight at once are fewer apart than that, wrap included).
            size = 1 << max(4, plan.inflight.bit_length())
            self.reader.sent_ts = array("q", bytes(8 * size))
            self.reader.ts_mask = size - 1

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        w = self.worker
        now = time.monotonic_ns() - w.epoch
        reader = self.reader
        in_window = w.t1 <= now < w.t2
        reader.lat = w.lat if in_window else None
        reader.ack_lat = w.ack_lat if in_window else None
        before = reader.delivered
        try:
            out = reader.feed(data, now)
        except ProtocolFailure as exc:
            w.fail(f"{self.spec.client_id}: {exc}")
            return
        if out and self.transport is not None:
            self.transport.write(out)
        got = reader.delivered - before
        if got:
            w.delivered_total += got
            if w.t1 <= now < w.t2:
                w.delivered_window += got
            w.counters[w.slot + _DELIVERED] = w.delivered_total
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        if reader.disconnect is not None and not w.closing:
            w.fail(f"{self.spec.client_id}: the broker sent DISCONNECT 0x{reader.disconnect:02X}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.worker
        w.open_count -= 1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(Failure(f"{self.spec.client_id}: connection closed"))
        if not w.closing and not self.leaving:
            why = f" ({exc})" if exc else ""
            w.fail(f"{self.spec.client_id}: the broker closed the connection{why}")
        if self.leaving and w.left is not None and not w.left.done():
            w.left.set_result(None)
        if w.open_count == 0 and w.all_closed is not None and not w.all_closed.done():
            w.all_closed.set_result(None)

    # -- publishing --------------------------------------------------------------------------

    def room(self) -> int:
        """Messages this publisher may send now: its QoS 1/2 window, and the socket's buffer."""
        tr = self.transport
        if tr is None or self.closed or tr.get_write_buffer_size() >= WRITE_HIGH_WATER:
            return 0
        room = MAX_BATCH * 64
        if self.worker.plan.qos:
            room = self.worker.plan.inflight - (self.sent - self.reader.completed)
        quota = self.spec.quota
        if quota:
            room = min(room, max(0, quota) - self.sent)
        return room

    def send(self, count: int, now: int) -> None:
        template = self.template
        assert template is not None and self.transport is not None
        sent_ts = self.reader.sent_ts
        if sent_ts is not None:
            pid = self.pid
            mask = self.reader.ts_mask
            for _ in range(count):
                sent_ts[pid & mask] = now
                pid = pid + 1 if pid < 65535 else 1
        data, self.pid = template.batch(count, now, self.pid)
        self.transport.write(data)
        self.sent += count

    # -- handshakes ----------------------------------------------------------------------------

    async def request(self, packet: bytes, done: Callable[[Reader], bool]) -> None:
        """Write ``packet`` and wait until ``done(reader)`` (the CONNACK or SUBACK arrived)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANDSHAKE_TIMEOUT
        self.transport.write(packet)
        while not done(self.reader):
            self.waiter = loop.create_future()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Failure(f"{self.spec.client_id}: no answer from the broker")
            try:
                await asyncio.wait_for(self.waiter, remaining)
            except TimeoutError:
                raise Failure(f"{self.spec.client_id}: no answer from the broker") from None
            finally:
                self.waiter = None


class Worker:
    """The clients of one :class:`WorkerPlan`, their pacing and their counts."""

    def __init__(self, plan: WorkerPlan, conn: Connection, counters: Any) -> None:
        self.plan = plan
        self.conn = conn
        self.counters = counters
        self.slot = plan.index * _SLOTS
        self.nworkers = len(counters) // _SLOTS
        self.epoch = plan.epoch_ns
        never = 1 << 62
        self.t0 = self.t1 = self.t2 = never
        self.lat: array[int] = array("q")
        self.ack_lat: array[int] = array("q")
        self.left: asyncio.Future[None] | None = None
        self.reconnect_start = 0
        self.reconnect_end = 0
        self.drained_at = 0
        self.delivered_before_reconnect = 0
        self.clients: list[Client] = []
        self.publishers: list[Client] = []
        self.connect_lat: array[int] = array("q")  # each handshake: TCP connect to CONNACK
        self.rr_rate = 0.0  # round-robin pacing: this process's messages/s (0: per publisher)
        self.rr_sent = 0
        self.rr_next = 0
        self.sent_total = 0
        self.sent_window = 0
        self.delivered_total = 0
        self.delivered_window = 0
        self.presumed_lost = 0
        self.open_count = 0
        self.closing = False
        self.failure: asyncio.Future[None] | None = None
        self.all_closed: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.publishing_done: asyncio.Event | None = None
        self._last_delivered = 0
        self._last_progress = 0

    # -- failure -----------------------------------------------------------------------------

    def fail(self, message: str) -> None:
        if self.failure is not None and not self.failure.done():
            self.failure.set_exception(Failure(message))

    async def guarded(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless a client fails first (then raise that failure)."""
        assert self.failure is not None
        task = asyncio.ensure_future(awaitable)
        either: list[asyncio.Future[Any]] = [task, self.failure]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if self.failure.done() and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self.failure.done():
            self.failure.result()  # raises the Failure
        return task.result()

    # -- the coordinator's pipe -------------------------------------------------------------------

    async def command(self) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, ...]] = loop.create_future()
        fd = self.conn.fileno()

        def readable() -> None:
            loop.remove_reader(fd)
            if fut.done():
                return
            try:
                fut.set_result(self.conn.recv())
            except (EOFError, OSError) as exc:
                fut.set_exception(Failure(f"the coordinator went away: {exc!r}"))

        loop.add_reader(fd, readable)
        try:
            return await self.guarded(fut)
        finally:
            loop.remove_reader(fd)
            # The loop made the pipe non-blocking; Connection.send needs it blocking again.
            os.set_blocking(fd, True)

    # -- phases ------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.failure = loop.create_future()
        self.failure.add_done_callback(lambda f: f.exception())  # never "never retrieved"
        plan = self.plan
        try:
            self.conn.send(("ready", {}))
            await self.expect("connect")
            started = time.monotonic_ns() - self.epoch
            await self.guarded(self.connect_all())
            info = {"start": started, "end": time.monotonic_ns() - self.epoch}
            self.conn.send(("connected", {**info, "latency_ns": self.connect_lat.tobytes()}))
            await self.expect("subscribe")
            started = time.monotonic_ns() - self.epoch
            await self.guarded(self.subscribe_all())
            self.conn.send(
                ("subscribed", {"start": started, "end": time.monotonic_ns() - self.epoch})
            )
            if plan.offline:
                await self.guarded(self.leave_all())
            go = await self.expect("go")
            self.t0, self.t1, self.t2 = go[1], go[2], go[3]
            self.publishers = [c for c in self.clients if c.template is not None]
            if (plan.stagger or len(self.publishers) > ROUND_ROBIN_ABOVE) and not plan.max_mode:
                self.rr_rate = sum(c.spec.rate for c in self.publishers)
            self.publishing_done = asyncio.Event()
            delay = max(0.0, (self.t0 - (time.monotonic_ns() - self.epoch)) / 1e9)
            if self.publishers:
                loop.call_later(delay, self.tick)
            else:
                loop.call_later(
                    max(0.0, (self.t2 - (time.monotonic_ns() - self.epoch)) / 1e9),
                    self.publishing_done.set,
                )
            pinger = loop.create_task(self.keepalive()) if plan.keepalive > 0 else None
            await self.guarded(self.publishing_done.wait())
            if plan.offline and plan.reconnect:
                await self.guarded(self.rejoin_all())
            await self.guarded(self.drain())
            self.conn.send(("result", self.result()))
            await self.expect("close")
            if pinger is not None:
                pinger.cancel()
        except Failure as exc:
            self.conn.send(("error", str(exc)))
        except Exception:
            self.conn.send(("error", traceback.format_exc()))
        finally:
            await self.close_all()

    async def expect(self, name: str) -> tuple[Any, ...]:
        msg = await self.command()
        if msg[0] != name:
            raise Failure(f"expected {name!r} from the coordinator, got {msg[0]!r}")
        return msg

    async def connect_all(self) -> None:
        plan = self.plan
        gate = asyncio.Semaphore(plan.connect_concurrency)

        sources = loopback_sources(plan.host, plan.source_addresses)
        counter = iter(range(len(plan.clients)))
        began = time.monotonic()

        async def connect(k: int, spec: ClientSpec) -> None:
            if plan.connect_rate > 0:  # --connect-rate: client k starts k / rate s in
                await asyncio.sleep(max(0.0, began + k / plan.connect_rate - time.monotonic()))
            async with gate:
                source = sources[next(counter) % len(sources)] if sources else ""
                await self.connect_one(spec, source)
                self.counters[self.slot + _CONNECTED] += 1

        await asyncio.gather(*(connect(k, spec) for k, spec in enumerate(plan.clients)))

    async def connect_one(self, spec: ClientSpec, source: str) -> Client:
        """Open one client's connection (from ``source`` if not "") and wait for its CONNACK.

        A subscriber of a ``persistent`` run keeps its session: MQTT 3.1.1 Clean Session 0
        (MQTT-3.1.2-4), MQTT 5 Clean Start 0 with a Session Expiry Interval (MQTT 5.0 3.1.2.11).
        """
        plan = self.plan
        loop = asyncio.get_running_loop()
        client = Client(self, spec)
        began = time.monotonic_ns()
        port = spec.port or plan.port  # --ports: this client's node

        def protocol() -> asyncio.Protocol:
            if plan.websocket:
                from midge.bench.websocket import WebSocketClient

                return WebSocketClient(client, plan.host, port)
            return client

        try:
            if source:
                sock = await self.open_from(source, port)
                _, proto = await loop.create_connection(protocol, sock=sock)
            else:
                _, proto = await loop.create_connection(protocol, plan.host, port)
            if proto is not client:  # --websocket: the upgrade first
                await asyncio.wait_for(proto.upgraded, HANDSHAKE_TIMEOUT)  # type: ignore[attr-defined]
        except (OSError, TimeoutError) as exc:
            raise Failure(f"cannot connect to {plan.host}:{port}: {exc.strerror or exc}") from None
        self.clients.append(client)
        self.open_count += 1
        persistent = plan.persistent and spec.subscribe is not None
        packet = encode(
            Connect(
                spec.client_id,
                protocol_level=plan.version,
                protocol_name="MQIsdp" if plan.version == 3 else "MQTT",
                clean_start=not persistent,
                keep_alive=plan.keepalive,
                username=plan.username,
                password=plan.password.encode() if plan.password is not None else None,
                properties={Prop.SESSION_EXPIRY_INTERVAL: SESSION_EXPIRY}
                if persistent and plan.version == 5
                else {},
            ),
            plan.version,
        )
        await client.request(packet, lambda r: r.connack is not None)
        self.connect_lat.append(time.monotonic_ns() - began)
        if client.reader.connack != 0:
            raise Failure(
                f"{spec.client_id}: CONNACK refused the connection "
                f"(0x{client.reader.connack or 0:02X})"
            )
        return client

    async def leave_all(self) -> None:
        """--offline: every subscriber sends DISCONNECT and closes; wait until they are closed.

        Their sessions stay in the broker (persistent), so what is published next is queued.
        """
        loop = asyncio.get_running_loop()
        subs = [c for c in self.clients if c.spec.subscribe and not c.closed]
        for client in subs:
            client.leaving = True
            assert client.transport is not None
            client.transport.write(b"\xe0\x00")
            client.transport.close()
        deadline = loop.time() + HANDSHAKE_TIMEOUT
        while any(not c.closed for c in subs):
            if loop.time() > deadline:
                raise Failure("the subscribers' connections did not close")
            self.left = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.left, 0.1)
        self.left = None
        self.clients = [c for c in self.clients if c not in subs]

    async def rejoin_all(self) -> None:
        """--offline: once every message is acknowledged, the subscribers reconnect and drain.

        The acks are awaited first (up to ``drain``), so what the broker queued is all there.
        """
        deadline = time.monotonic() + self.plan.drain
        while time.monotonic() < deadline:
            if all(c.reader.completed >= c.sent for c in self.publishers):
                break
            await asyncio.sleep(0.01)
        self.delivered_before_reconnect = self.delivered_total
        self.reconnect_start = time.monotonic_ns() - self.epoch
        specs = [s for s in self.plan.clients if s.subscribe]
        await asyncio.gather(*(self.connect_one(spec, "") for spec in specs))
        self.reconnect_end = time.monotonic_ns() - self.epoch

    async def open_from(self, source: str, port: int) -> socket.socket:
        """A TCP socket connected to the broker from the loopback address ``source``.

        ``IP_BIND_ADDRESS_NO_PORT`` leaves the port choice to connect(), which only needs the
        four-tuple to be unique, so each source address has a whole ephemeral port range.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            await asyncio.get_running_loop().sock_connect(sock, (self.plan.host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def subscribe_all(self) -> None:
        plan = self.plan
        gate = asyncio.Semaphore(plan.connect_concurrency)

        async def subscribe(client: Client) -> None:
            topic = client.spec.subscribe
            assert topic is not None
            async with gate:
                packet = encode(Subscribe(1, [Subscription(topic, plan.qos)]), plan.version)
                await client.request(packet, lambda r: r.suback is not None)
                code = (client.reader.suback or b"\x80")[0]
                if code >= 0x80:
                    raise Failure(
                        f"{client.spec.client_id}: SUBACK refused {topic!r} (0x{code:02X})"
                    )

        await asyncio.gather(*(subscribe(c) for c in self.clients if c.spec.subscribe))

    def tick(self) -> None:
        """One pacing round: send what is due (paced) or what the window allows (max mode)."""
        now = time.monotonic_ns() - self.epoch
        assert self.loop is not None and self.publishing_done is not None
        if now >= self.t2 or self.closing:
            self.publishing_done.set()
            return
        if all(c.spec.quota and c.sent >= max(0, c.spec.quota) for c in self.publishers):
            self.publishing_done.set()  # --messages: every publisher sent its share
            return
        if self.plan.max_mode and self.plan.offline:
            # Nothing is delivered while the subscribers are away: only the acks pace this.
            for client in self.publishers:
                count = min(MAX_BATCH, client.room())
                if count > 0:
                    self.count_sent(client, count, now)
        elif self.plan.max_mode:
            self.tick_max(now)
        elif self.rr_rate:
            self.tick_round_robin(now)
        else:
            elapsed = now - self.t0
            for client in self.publishers:
                due = int(elapsed * client.spec.rate / 1e9) - client.sent
                if due > 0:
                    count = min(due, client.room())
                    if count > 0:
                        self.count_sent(client, count, now)
        self.loop.call_later(self.plan.tick, self.tick)

    def tick_round_robin(self, now: int) -> None:
        """Many slow publishers (or --stagger): what the process's total rate says is due since
        t0, one message each to the next publishers in turn (a publisher without room is passed
        over), so each publisher sends at the average rate, the messages are spread evenly in
        time, and the tick costs what it sends. The first message is due half an interval in,
        so a window of whole seconds holds whole seconds' messages even at 1 message/s."""
        due = int((now - self.t0) * self.rr_rate / 1e9 + 0.5) - self.rr_sent
        pubs = self.publishers
        n = len(pubs)
        i = self.rr_next
        tries = n
        while due > 0 and tries > 0:
            client = pubs[i]
            i = i + 1 if i + 1 < n else 0
            if client.room() > 0:
                self.count_sent(client, 1, now)
                self.rr_sent += 1
                due -= 1
                tries = n
            else:
                tries -= 1
        self.rr_next = i

    def tick_max(self, now: int) -> None:
        plan = self.plan
        counters = self.counters
        sent = delivered = 0
        pub_workers = 0
        for w in range(self.nworkers):
            s = counters[w * _SLOTS + _SENT]
            sent += s
            delivered += counters[w * _SLOTS + _DELIVERED]
        # Workers holding publishers share the window; a worker without any sends nothing.
        pub_workers = sum(
            1 for w in range(self.nworkers) if w == self.plan.index or counters[w * _SLOTS + _SENT]
        )
        outstanding = sent * plan.fanout - delivered - self.presumed_lost
        if delivered != self._last_delivered:
            self._last_delivered = delivered
            self._last_progress = now
        elif outstanding > 0 and now - self._last_progress > STALL_NS:
            # Nothing arrived for a while: what is outstanding was dropped (QoS 0 may be).
            self.presumed_lost += outstanding
            outstanding = 0
            self._last_progress = now
        room = (plan.window - outstanding) // (plan.fanout * max(1, pub_workers))
        if room <= 0:
            return
        share = max(1, room // len(self.publishers))
        for client in self.publishers:
            count = min(share, MAX_BATCH, client.room(), room)
            if count > 0:
                self.count_sent(client, count, now)
                room -= count
                if room <= 0:
                    break

    def count_sent(self, client: Client, count: int, now: int) -> None:
        client.send(count, now)
        self.sent_total += count
        if self.t1 <= now < self.t2:
            self.sent_window += count
        self.counters[self.slot + _SENT] = self.sent_total

    async def keepalive(self) -> None:
        """PINGREQ on every connection at half the keep-alive, so the broker keeps them."""
        interval = self.plan.keepalive / 2
        while True:
            await asyncio.sleep(interval)
            for client in self.clients:
                if client.transport is not None and not client.closed:
                    client.transport.write(b"\xc0\x00")

    async def drain(self) -> None:
        """Wait for deliveries still on their way (all workers' counts), up to ``drain`` s."""
        deadline = time.monotonic() + self.plan.drain
        fanout = self.plan.fanout
        while time.monotonic() < deadline:
            sent = delivered = 0
            for w in range(self.nworkers):
                sent += self.counters[w * _SLOTS + _SENT]
                delivered += self.counters[w * _SLOTS + _DELIVERED]
            acked = all(c.reader.completed >= c.sent for c in self.publishers)
            if self.plan.offline and not self.plan.reconnect:
                delivered = sent * fanout  # the backlog stays queued: only the acks matter
            if delivered >= sent * fanout and (acked or not self.plan.qos):
                self.drained_at = time.monotonic_ns() - self.epoch
                return
            await asyncio.sleep(0.01)

    def result(self) -> dict[str, Any]:
        return {
            "index": self.plan.index,
            "sent_total": self.sent_total,
            "sent_window": self.sent_window,
            "delivered_total": self.delivered_total,
            "delivered_window": self.delivered_window,
            "presumed_lost": self.presumed_lost,
            "refused": sum(c.reader.refused for c in self.clients),
            "unacked": sum(max(0, c.sent - c.reader.completed) for c in self.publishers)
            if self.plan.qos
            else 0,
            "latency_ns": self.lat.tobytes(),
            "ack_latency_ns": self.ack_lat.tobytes(),
            "delivered_before_reconnect": self.delivered_before_reconnect,
            "reconnect": (self.reconnect_start, self.reconnect_end),
            "drained_at": self.drained_at,
        }

    async def close_all(self) -> None:
        """DISCONNECT and close every connection, and wait (boundedly) until they are closed."""
        self.closing = True
        loop = asyncio.get_running_loop()
        self.all_closed = loop.create_future()
        for client in self.clients:
            tr = client.transport
            if tr is not None and not client.closed:
                tr.write(b"\xe0\x00")
                tr.close()
        if self.open_count > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_closed, 5.0)


def worker_main(plan: WorkerPlan, conn: Connection, counters: Any) -> None:
    """The worker process's entry point (a module-level function, so ``spawn`` can import it)."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(Worker(plan, conn, counters).run())
    conn.close()
