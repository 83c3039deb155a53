"""The broker core driven in memory, on a manual clock: no sockets, no threads, no sleeping.

This is the one adapter between the tests and the core's API; everything the in-memory tests need
of ``midge.broker`` goes through here. It relies on exactly:

- ``Broker(config, scheduler, authenticator)``, ``Broker.shutdown()``;
- the ``Scheduler`` protocol: ``call_soon(cb, *args)``, ``call_later(delay, cb, *args)`` (both
  return a handle with ``cancel()``), ``time()``; :class:`ManualClock` also has ``wall()``;
- ``Connection(broker, transport, listener, peer)``, ``Connection.data_received(bytes)``,
  ``Connection.eof_received()``, ``Connection.connection_lost(exc)``, and the ``Transport``
  protocol (``write``, ``close``, ``pause_reading``, ``resume_reading``,
  ``get_write_buffer_size``);
- ``midge.auth.files.build_authenticator`` (and ``FileAuthenticator.load()``) and
  ``midge.config.resolve_listener``, as :class:`midge.server.Server` uses them;
- ``Broker.connections``, ``.sessions`` and ``.retained``, which tests inspect through
  ``MemoryBroker.call``.

:class:`DurableMemoryBroker` adds a real ``midge.store.sqlite.SqliteStore`` on a data directory,
opened, loaded and restored as :class:`midge.server.Server` does (``open()``, ``load()``,
``Broker(config, scheduler, authenticator, store)``, ``Broker.restore(state)``, ``start(loop)``,
``close()``), and restarts on the same clock.

Time only passes when a test calls :meth:`ManualClock.advance`. "Waiting" for the broker means
running the callbacks that are ready (:meth:`ManualClock.run`) until there are none left: anything
the broker will do without more time passing has then been done.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midge.auth.base import Authenticator
from midge.auth.files import FileAuthenticator, build_authenticator
from midge.broker.broker import Broker
from midge.broker.connection import Connection
from midge.config import Config, ListenerConfig, resolve_listener
from midge.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from tests.rawclient import RawClient

#: Where the manual wall clock starts (a fixed date: runs are reproducible).
WALL_START = 1_800_000_000.0
#: Ready callbacks run by one :meth:`ManualClock.run` at most: more is a loop that never settles.
MAX_STEPS = 1_000_000
#: How long :class:`StoreLoop` waits for the store's writer thread to commit a batch: a bound on
#: a hung writer (a failure), never a wait the tests rely on.
WRITER_TIMEOUT = 30.0


class Handle:
    """A scheduled callback (what ``call_soon``/``call_later`` return); ``cancel()`` drops it."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """The core's ``Scheduler``, deterministic: ``call_soon`` callbacks run, in order, when
    :meth:`run` is called; ``call_later`` timers fire in time order (ties in the order they were
    set) only when :meth:`advance` moves the time past them. An exception in a callback is
    raised to the test (a real loop would only log it)."""

    def __init__(self, start: float = 0.0, wall_start: float = WALL_START) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._ready: list[Handle] = []
        self._timers: list[tuple[float, int, Handle]] = []
        self._seq = itertools.count()
        #: Work outside the loop the broker waits for (a store's writer thread): each is called
        #: when nothing is ready; True if it made callbacks ready (then :meth:`run` goes on).
        self.outside: list[Callable[[], bool]] = []

    # -- the Scheduler protocol -----------------------------------------------------------------

    def time(self) -> float:
        return self._now

    def wall(self) -> float:
        """The manual wall-clock time (``time.time()``'s stand-in), advancing with :meth:`time`."""
        return self._now + self._wall_offset

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle:
        handle = Handle(self._now, callback, args)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Handle:
        handle = Handle(self._now + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (handle.when, next(self._seq), handle))
        return handle

    # -- driving it -----------------------------------------------------------------------------

    def run(self) -> int:
        """Run ready callbacks (and those they schedule) until none is left; how many ran."""
        steps = 0
        while True:
            while self._ready:
                batch, self._ready = self._ready, []
                for handle in batch:
                    if handle.cancelled:
                        continue
                    steps += 1
                    if steps > MAX_STEPS:
                        raise RuntimeError(
                            "the broker never settles: callbacks keep scheduling more"
                        )
                    handle.callback(*handle.args)
            if not any(wait() for wait in self.outside):
                return steps

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: every timer due by then fires at its own time, in order, each
        followed by what it made ready."""
        assert seconds >= 0, "time does not go back"
        target = self._now + seconds
        self.run()
        while self._timers and self._timers[0][0] <= target:
            when, _, handle = heapq.heappop(self._timers)
            if handle.cancelled:
                continue
            self._now = max(self._now, when)
            handle.callback(*handle.args)
            self.run()
        self._now = target
        self.run()

    def forget(self) -> None:
        """Drop every timer and ready callback: what a killed process had scheduled dies with
        it (the time goes on)."""
        for handle in self._ready:
            handle.cancel()
        for _, _, handle in self._timers:
            handle.cancel()
        self._ready = []
        self._timers = []
        self.outside = []

    def next_timer(self) -> float | None:
        """Seconds until the next live timer is due (None if there is none)."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] - self._now if self._timers else None


class ManualPending:
    """An asyncio-future-like Pending decision (``midge.auth.base.Pending``) that a test settles
    with :meth:`set_result` (or :meth:`set_exception`); its done-callbacks run at once, as a
    thread-safe future's would be handed to the loop."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Any], object]] = []
        self._done = False
        self._result: Any = None
        self._exception: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def result(self) -> Any:
        assert self._done, "result() of a pending decision"
        if self._exception is not None:
            raise self._exception
        return self._result

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None:
        if self._done:
            fn(self)
        else:
            self._callbacks.append(fn)

    def set_result(self, result: Any) -> None:
        self._settle(result, None)

    def set_exception(self, exc: BaseException) -> None:
        self._settle(None, exc)

    def _settle(self, result: Any, exc: BaseException | None) -> None:
        assert not self._done, "decided twice"
        self._done, self._result, self._exception = True, result, exc
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)


class MemoryLink:
    """One client connection in memory: the client end (:meth:`send`, :meth:`recv`,
    :meth:`close`) and the server end (the ``Transport`` given to the Connection).

    Bytes the client sends reach the Connection on the clock's next :meth:`ManualClock.run`
    (while reading is not paused); bytes the Connection writes are there for the client at once.
    Either side closing is seen by the other as a socket close would be: the Connection gets
    ``connection_lost`` after the bytes sent before it, the client reads EOF after what was
    written before the close.

    Flow control (:meth:`limit_output`): by default the client end takes whatever the broker
    writes, at once (a client reading as fast as the broker writes). Limited, the link is what a
    socket is under midge's transport (midge.transport.writer) and asyncio: a loop turn's writes
    are kept and handed over at the end of the turn, in one go; the kernel's buffer holds
    ``kernel`` bytes for the client to read, the rest waits in the transport's buffer
    (``get_write_buffer_size``); the Connection is told ``pause_writing()`` by the hand-over that
    takes that buffer above ``high`` and ``resume_writing()`` on the loop turn after the
    client's reading has brought it down to ``low`` or below, as asyncio's transports do. A
    client that never calls :meth:`recv` is a stalled reader."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.connection: Connection | None = None
        self._inbox = bytearray()  # client -> broker, not yet delivered
        self._outbox = bytearray()  # broker -> client, not yet read
        # Flow control (limit_output): None = the client takes everything at once.
        self._kernel: int | None = None
        self._high = 0
        self._low = 0
        self._turn: list[bytes] | None = None  # this loop turn's writes, handed over at its end
        self._buffered = bytearray()  # the transport's buffer: written, not in _outbox yet
        #: The most the transport's buffer has held (with limit_output).
        self.max_buffered = 0
        self.writing_paused = False
        self._resume_scheduled = False
        self.paused = False
        self.server_closed = False  # the broker closed its end (the client reads EOF)
        self.client_closed = False
        self.client_eof = False  # the client shut down its sending side (half-close)
        self._eof_told = False
        self._lost = False
        self._scheduled = False

    def limit_output(self, kernel: int, high: int = 65536, low: int | None = None) -> None:
        """Model a socket and asyncio's write buffer limits (see the class): ``kernel`` bytes
        (at least 1) for the client to read, the high-water mark ``high`` and the low-water mark
        ``low`` (asyncio's default: a quarter of ``high``)."""
        assert kernel >= 1, "a socket holds at least a byte"
        self._kernel = kernel
        self._high = high
        self._low = high // 4 if low is None else low

    # -- the client end -------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.client_closed or self.client_eof:
            raise BrokenPipeError("the client closed its sending side")
        if self.server_closed:
            raise BrokenPipeError("the broker closed the connection")
        self._inbox += data
        self._schedule()

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes from the broker, once it has done all it can without time
        passing; b"" at EOF. ``TimeoutError`` if there is nothing (and it is open): nothing will
        come unless the test advances the clock."""
        self.clock.run()
        self._transmit()
        if self._outbox:
            data = bytes(self._outbox[:size])
            del self._outbox[:size]
            self._transmit()  # reading made room in the kernel's buffer
            return data
        if self.server_closed or self.client_closed:
            return b""
        raise TimeoutError("no packet from the broker")

    def shutdown_write(self) -> None:
        """The client half-closes (``shutdown(SHUT_WR)``): the broker reads EOF after the bytes
        sent before it; the client can still read."""
        if not self.client_eof:
            self.client_eof = True
            self._schedule()

    def close(self) -> None:
        """The client closes its socket."""
        if not self.client_closed:
            self.client_closed = True
            self._schedule()

    # -- the server end (midge.broker.connection.Transport) -------------------------------------

    def write(self, data: bytes) -> None:
        if self.server_closed or self.client_closed:
            return
        if self._kernel is None:
            self._outbox += data
            return
        if self._turn is None:
            self._turn = []
            self.clock.call_soon(self._flush)
        self._turn.append(data)

    def _flush(self) -> None:
        """The end of the loop turn: its writes reach the transport (CoalescingTransport.flush)."""
        turn, self._turn = self._turn, None
        if not turn or self.server_closed or self.client_closed:
            return
        for data in turn:
            self._buffered += data
        self._transmit()
        self.max_buffered = max(self.max_buffered, len(self._buffered))
        if not self.writing_paused and len(self._buffered) > self._high:
            # asyncio: the protocol is paused from within the write that crossed the mark
            self.writing_paused = True
            if self.connection is not None:
                self.connection.pause_writing()

    def _transmit(self) -> None:
        """The kernel takes what its buffer has room for from the transport's buffer; once
        that is at the low-water mark the protocol is resumed on the next loop turn."""
        kernel = self._kernel
        if kernel is None:
            return
        room = kernel - len(self._outbox)
        if room > 0 and self._buffered:
            self._outbox += self._buffered[:room]
            del self._buffered[:room]
        if self.writing_paused and not self._resume_scheduled and len(self._buffered) <= self._low:
            self._resume_scheduled = True
            self.clock.call_soon(self._resume_writing)

    def _resume_writing(self) -> None:
        self._resume_scheduled = False
        if self.writing_paused and len(self._buffered) <= self._low:
            self.writing_paused = False
            if self.connection is not None and not self.server_closed:
                self.connection.resume_writing()

    def get_write_buffer_size(self) -> int:
        return len(self._buffered)

    def close_transport(self) -> None:
        if not self.server_closed:
            self._flush()  # what the turn wrote goes first, as CoalescingTransport.close does
            self.server_closed = True
            self.clock.call_soon(self._connection_lost)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            self._schedule()

    # -- delivery -------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.clock.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        conn = self.connection
        if conn is None or self.paused or self._lost or self.server_closed:
            return
        if self._inbox:
            data = bytes(self._inbox)
            self._inbox.clear()
            conn.data_received(data)
            if self.client_closed or self.client_eof:
                # As on a socket, the end of the stream is read on a later turn of the loop,
                # after what the bytes made ready (the answer's flush) has run.
                self._schedule()
            return
        if self.client_closed and not self.paused and not self._inbox:
            self._connection_lost()
        elif self.client_eof and not self._eof_told and not self.paused and not self._inbox:
            # As an asyncio transport: eof_received, and a false answer closes the transport.
            self._eof_told = True
            try:
                keep_open = conn.eof_received()
            except Exception:
                # What an asyncio transport does with a protocol that raises: log, close.
                logging.getLogger("asyncio").exception("Fatal error: eof_received() call failed")
                keep_open = False
            if not keep_open:
                self.close_transport()

    def _connection_lost(self) -> None:
        if not self._lost:
            self._lost = True
            if self.connection is not None:
                self.connection.connection_lost(None)


class _ServerEnd:
    """What the Connection holds as its transport: the server end of a :class:`MemoryLink`."""

    __slots__ = ("_link",)

    def __init__(self, link: MemoryLink) -> None:
        self._link = link

    def write(self, data: bytes) -> None:
        self._link.write(data)

    def close(self) -> None:
        self._link.close_transport()

    def pause_reading(self) -> None:
        self._link.pause_reading()

    def resume_reading(self) -> None:
        self._link.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._link.get_write_buffer_size()


class MemoryBroker:
    """The broker core on a :class:`ManualClock`, accepting connections in memory.

    ``link()`` opens a connection (a :class:`MemoryLink`); ``call(fn)`` runs ``fn`` once the
    broker has settled (as :meth:`tests.conftest.RunningBroker.call` does on the loop);
    ``advance(seconds)`` lets time pass. No listener limits (``max_connections``,
    ``max_connection_rate``: the TCP transport's) and no store: those are tested on sockets.
    """

    def __init__(
        self,
        config: Config,
        authenticator: Authenticator | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        self.config = config
        self.clock = ManualClock() if clock is None else clock
        if authenticator is None:
            # As Server.start: password_file / acl_file / allow_anonymous.
            authenticator = build_authenticator(config)
            if isinstance(authenticator, FileAuthenticator):
                authenticator.load()
        self.authenticator = authenticator
        self.broker = self._new_broker()
        listeners = config.listeners or [ListenerConfig()]
        self.listener = resolve_listener(config, listeners[0])
        self._peers = itertools.count(1)
        self.links: list[MemoryLink] = []

    def _new_broker(self) -> Broker:
        return Broker(self.config, self.clock, self.authenticator)

    def link(self, listener: int = 0) -> MemoryLink:
        """A new connection, accepted (its CONNECT timeout starts now), on the configured
        listener of that index (the first by default)."""
        link = MemoryLink(self.clock)
        on = self.listener
        if listener:
            on = resolve_listener(self.config, self.config.listeners[listener])
        link.connection = Connection(
            self.broker, _ServerEnd(link), on, f"memory:{next(self._peers)}"
        )
        self.links.append(link)
        return link

    def call(self, fn: Callable[[], Any]) -> Any:
        self.clock.run()
        return fn()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def stop(self) -> None:
        """As Server.stop: publish wills, disconnect everyone."""
        self.clock.run()
        self.broker.shutdown()
        self.clock.run()


class StoreLoop:
    """The ``loop`` a :class:`SqliteStore` is started on (``start(loop)``), on a
    :class:`ManualClock`: the commit window's timer is a ready callback (a batch goes to the
    writer thread as soon as the broker has done what it can without time passing), and the
    writer's ``call_soon_threadsafe`` report of a committed batch is waited for, deterministically,
    whenever the clock runs out of ready callbacks while a batch is being written. So "the broker
    has settled" includes "what it reported to the store is committed, and the acknowledgements
    that waited for it are sent"."""

    def __init__(self, clock: ManualClock, store: SqliteStore) -> None:
        self.clock = clock
        self.store = store
        self._written: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        clock.outside.append(self.wait_written)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Handle:
        return self.clock.call_soon(callback, *args)

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        self._written.put((callback, args))  # on the writer thread

    def wait_written(self) -> bool:
        """If a batch is with the writer: wait for its commit and make its report ready."""
        if not self.store._writing:
            return False
        try:
            callback, args = self._written.get(timeout=WRITER_TIMEOUT)
        except queue.Empty:
            raise RuntimeError("the store's writer never committed its batch") from None
        self.clock.call_soon(callback, *args)
        return True


class DurableMemoryBroker(MemoryBroker):
    """A :class:`MemoryBroker` with the real SQLite store on ``data_dir`` (as ``midge broker``
    with ``data_dir``/``durability``), that is killed and restarted in process on the same
    :class:`ManualClock`.

    :meth:`kill` is what SIGKILL leaves: whatever was reported to the store is committed (a
    settled broker has nothing uncommitted, as the process tests wait for the commit window),
    then nothing more runs: no shutdown, no will, no timer of the dead broker fires, its clients
    read EOF. :meth:`restart` kills it (if running), lets ``down`` seconds pass (wall and
    monotonic time) and opens the same directory into a new Broker, as ``Server.start``.
    """

    def __init__(
        self,
        data_dir: Path,
        config: Config | None = None,
        authenticator: Authenticator | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        if config is None:
            # As tests.durability.harness.DurableBroker: no limits that drop messages.
            config = Config(max_queued_messages=0, max_inflight_messages=0)
        self.data_dir = data_dir
        config.data_dir = str(data_dir)
        if config.durability == "none":
            config.durability = "fsync"
        self.store: SqliteStore | None = None
        self.running = False
        super().__init__(config, authenticator, clock)

    def _new_broker(self) -> Broker:
        store = SqliteStore(str(self.data_dir), self.config.durability)
        store.open()
        try:
            state = store.load(self.clock.wall())
            broker = Broker(self.config, self.clock, self.authenticator, store)
            broker.restore(state)
        except BaseException:
            store.close()
            raise
        store.start(StoreLoop(self.clock, store))  # type: ignore[arg-type]
        self.store = store
        self.running = True
        self.clock.advance(0)  # what is already due (wills, sessions that expired) happens now
        return broker

    def client(self, version: int = 4) -> RawClient:
        from tests.rawclient import RawClient  # it imports this module

        return RawClient(self.link(), version=version)

    def settle(self) -> None:
        """Let the broker do all it can without time passing, its store commits included."""
        self.clock.run()

    def kill(self) -> None:
        if not self.running:
            return
        self.clock.run()
        assert self.store is not None
        assert not self.store.pending, "a settled broker has committed everything"
        self.store.close()
        self.store = None
        for link in self.links:
            link.server_closed = True  # the process is gone: its clients read EOF
            link.connection = None
        self.links = []
        self.clock.forget()
        self.running = False

    def restart(self, down: float = 0.0) -> None:
        self.kill()
        self.clock.advance(down)
        self.broker = self._new_broker()

    def stop(self) -> None:
        """As Server.stop: publish wills, disconnect everyone, close the store."""
        if not self.running:
            return
        super().stop()
        assert self.store is not None
        self.store.close()
        self.store = None
        self.clock.forget()
        self.running = False
