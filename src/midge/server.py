"""The running broker: the core plus its listeners, on one asyncio loop.

``Server(config)`` is what ``midge broker`` runs and what the tests start on a free port:
``await start()`` opens every listener (``addresses`` then holds where each listens) and
``await stop()`` publishes wills, closes every client connection and the listeners.

With ``config.data_dir`` set and ``durability`` other than "none", state is kept in SQLite there
(:mod:`midge.store.sqlite`): ``start`` opens it (a :class:`~midge.store.base.StoreError` if it
cannot: locked, corrupt, unreadable) and restores it before the first listener accepts. The
listeners are bound before, and ``user`` (:mod:`midge.privileges`) takes effect between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from midge import logs
from midge.auth.base import AuthChain, Authenticator, Capability
from midge.auth.files import FileAuthenticator, anonymous_notices, build_authenticator
from midge.broker.broker import Broker
from midge.broker.systree import SysTree
from midge.cluster.router import Router
from midge.config import (
    DEFAULT_DB_NAME,
    Config,
    ConfigError,
    ListenerConfig,
    load_config,
    resolve_listener,
)
from midge.privileges import drop_privileges
from midge.store.base import Store
from midge.transport.accept import ConnectionLimits, ListenerState
from midge.transport.clock import LoopClock
from midge.transport.pacer import Pacer
from midge.transport.tcp import listen
from midge.transport.tls import ServerTls
from midge.transport.writer import TurnWrites

if TYPE_CHECKING:
    from midge.cluster.cluster_view import ClusterView
    from midge.cluster.redis_router import RedisRouter
    from midge.observe.http import HttpListeners

log = logging.getLogger("midge.server")

#: How long ``stop`` waits for client sockets to finish closing.
CLOSE_TIMEOUT = 2.0


def process_memory() -> tuple[int, int]:
    """The process's resident memory now and at its peak, in bytes: ``$SYS/broker/heap/current``
    and ``heap/maximum`` (docs/mosquitto.md, "$SYS"). One small read of /proc/self/statm (where
    there is none, the peak stands for both)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform != "darwin":
        peak *= 1024  # kilobytes on Linux, bytes on macOS
    try:
        with open("/proc/self/statm", "rb") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        current = peak
    return current, max(current, peak)


def _hold(broker: Broker, other: Callable[[], bool] | None) -> Callable[[], bool]:
    """The batch window's ``hold`` (midge.transport.pacer): no rest while an authentication or
    authorization decision is still to come (an auth plugin's, LDAP's, HTTP's), nor while
    ``other`` says so (with ``--workers``: an answer from the other workers)."""
    if other is None:
        return lambda: broker.deciding > 0
    return lambda: broker.deciding > 0 or other()


def _admin_answer(broker: Broker, op: str, arg: Any) -> Any:
    """Another cluster node's admin question, answered as the admin API answers (imported when
    first asked: a node without an http listener need not load aiohttp)."""
    from midge.observe.http import answer

    return answer(broker, op, arg)


class Server:
    def __init__(
        self,
        config: Config,
        authenticator: Authenticator | None = None,
        router: Router | None = None,
        publish_sys: bool = True,
        limits: ConnectionLimits | None = None,
        before_serving: Callable[[], Awaitable[None]] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.config = config
        #: The process's batch window (``batch_window``, 0: none, until a reload sets one): with
        #: ``--workers``, the worker's, which its mesh links share; else made by ``start``.
        self.pacer = pacer
        #: The connection limits; with ``--workers``, the whole broker's (midge.cluster.limits).
        self.limits = limits
        #: Awaited once the broker exists, before the listeners accept (a restarted worker
        #: waits for the other workers' state).
        self.before_serving = before_serving
        #: With ``--workers``, on worker 0: the other workers' latest numbers
        #: (midge.cluster.totals), added by $SYS and /metrics to this worker's.
        self.peer_snapshots: Callable[[], list[dict[str, Any]]] | None = getattr(
            router, "peer_snapshots", None
        )
        #: Whether this process publishes $SYS (with ``--workers``, worker 0 only).
        self.publish_sys = publish_sys
        self.sys_tree: SysTree | None = None
        #: In place of the password/ACL files' layer (tests; SCRAM and plugins still compose).
        self.authenticator = authenticator
        #: The layers the broker asks (midge.auth.base.AuthChain), set by ``start``.
        self.auth: AuthChain = AuthChain()
        #: Cross-worker routing for ``--workers N`` (its listeners then share ports: SO_REUSEPORT).
        self.router = router
        #: This node's link to the cluster (``cluster_redis``), made by ``start``; it is then
        #: also :attr:`router`.
        self.cluster: RedisRouter | None = None
        #: The cluster's figures on this node (midge.cluster.cluster_view), with :attr:`cluster`.
        self.cluster_view: ClusterView | None = None
        self.broker: Broker | None = None
        self.listeners: list[ListenerState] = []
        #: The loop turn's output and the lingering (closed, draining) sockets of every listener.
        self.writes: TurnWrites | None = None
        #: (host, port, ...) of each listening socket, in listener order.
        self.addresses: list[tuple[Any, ...]] = []
        #: Each listener's TLS (None for a plain listener), in listener order.
        self.tls: list[ServerTls | None] = []
        #: The protocol of each address of :attr:`addresses` ("mqtt", "websockets" or "http").
        self.protocols: list[str] = []
        #: The ``protocol http`` listeners (midge.observe.http), None when there are none.
        self.http: HttpListeners | None = None
        #: The running bridges (``connection`` sections), started once the listeners serve.
        self.bridges: list[Any] = []
        #: The configuration file as last read (at start, then by each SIGHUP), for telling
        #: which options changed in it (midge.reload); None without a file.
        self.file_config: Config | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        if config.source is not None and os.path.isfile(config.source):
            with contextlib.suppress(ConfigError):  # changed since: the next SIGHUP says so
                self.file_config = load_config(config.source)
        # Certificates first: a bad certfile is a ConfigError before anything is opened.
        self.tls = [ServerTls(lst) if lst.tls else None for lst in config.listeners]
        authenticator = self.authenticator
        if authenticator is None:
            # password_file / acl_file / allow_anonymous (docs/security.md); a bad file raises
            # ConfigError before anything is opened.
            files = build_authenticator(config)
            if isinstance(files, FileAuthenticator):
                for notice in files.load():
                    log.warning("%s", notice)
                authenticator = files
            for notice in anonymous_notices(config):
                log.warning("%s", notice)
        # The chain, in the order its layers are asked (midge.auth.base.AuthChain): SCRAM first
        # (its methods before any other layer's), the files (or the given authenticator), then
        # the plugins, asked only when the built-in checks allow.
        layers: list[Authenticator] = []
        if config.scram_file:
            # SCRAM (MQTT 5 enhanced authentication); a bad scram_file is a ConfigError naming
            # its line, before any listener opens.
            from midge.auth.scram import ScramAuthenticator

            layers.append(ScramAuthenticator.from_file(config.scram_file))
        if authenticator is not None:
            layers.append(authenticator)
        if config.auth_python or config.auth_http_url or config.auth_ldap or config.auth_oauth.mode:
            # Python plugins and the HTTP, LDAP and OAuth backends (midge.auth.plugin); a
            # PluginError names the plugin and the fix.
            from midge.auth.plugin import PluginAuthenticator, load_plugin

            plugins: list[Any] = []
            if config.auth_python:
                plugins.append(load_plugin(config.auth_python, config.auth_python_options))
            if config.auth_http_url:
                from midge.auth.http import HttpAuth

                plugins.append(HttpAuth(config.auth_http_url, config.auth_http_timeout))
            if config.auth_ldap:
                from midge.auth.ldap import create as create_ldap

                plugins.append(create_ldap(config.auth_ldap, config.auth_cache_ttl))
            if config.auth_oauth.mode:
                from midge.auth import oauth

                plugins.append(
                    oauth.create(config.auth_oauth, config.auth_http_timeout, config.auth_cache_ttl)
                )
            plugin_layer = PluginAuthenticator(
                plugins, cache_ttl=config.auth_cache_ttl, timeout=config.auth_http_timeout
            )
            if isinstance(authenticator, FileAuthenticator):
                # A username no password file knows is left to a plugin that checks passwords.
                authenticator.usernames_elsewhere = Capability.CONNECT in plugin_layer.provides
            layers.append(plugin_layer)
        self.auth = AuthChain(layers)
        if self.router is not None and any(lst.unix_socket_path for lst in config.listeners):
            raise ConfigError(
                "Unix socket listeners do not work with several workers yet: use one worker",
                config.source,
            )
        # Bind every listener before anything else (still root, for ports below 1024), change
        # user (``user``), and only then open the database as that user; nothing is accepted
        # until the broker exists (start_serving below).
        durable = bool(config.data_dir and config.durability != "none")
        if durable:
            # Imported while still root: after ``user`` takes effect the interpreter's own files
            # may be out of reach.
            from midge.store.sqlite import SqliteStore
        limits = self.limits
        if limits is None:
            limits = ConnectionLimits(config.global_max_connections, config.max_connection_rate)
        if self.pacer is None:
            self.pacer = Pacer(loop, config.batch_window)
        writes = self.writes = TurnWrites(loop, pacer=self.pacer)
        serves_http = self.router is None or self.publish_sys  # with workers: worker 0 only
        try:
            for index, (listener, tls) in enumerate(
                zip(self.config.listeners, self.tls, strict=True)
            ):
                if listener.protocol == "http":
                    if serves_http:
                        self._bind_http(listener, tls)
                    continue
                state = await listen(
                    None,
                    resolve_listener(self.config, listener),
                    reuse_port=self.router is not None,
                    limits=limits,
                    tls=tls,
                    writes=writes,
                    connect_timeout=config.connect_timeout,
                )
                state.index = index
                self.listeners.append(state)
                assert state.server is not None
                for sock in state.server.sockets:
                    name = sock.getsockname()
                    self.addresses.append((name,) if isinstance(name, str) else tuple(name))
                    self.protocols.append(listener.protocol)
            drop_privileges(config)
        except BaseException:
            await self._close_listeners()
            raise
        store: Store | None = None
        if durable:
            assert config.data_dir is not None
            sqlite_store = SqliteStore(
                config.data_dir, config.durability, config.persistence_file or DEFAULT_DB_NAME
            )
            try:
                sqlite_store.open()
            except BaseException:
                await self._close_listeners()
                raise
            try:
                clock = LoopClock(loop)
                restored = sqlite_store.load(clock.wall())
                self.broker = Broker(config, clock, self.auth, sqlite_store)
                self.broker.restore(restored)
            except BaseException:
                sqlite_store.close()
                await self._close_listeners()
                raise
            sqlite_store.start(loop)
            store = sqlite_store
            log.info("durable store %s (durability %s)", sqlite_store.path, config.durability)
        elif config.cluster_redis is not None and self.router is None:
            # A cluster node (docs/cluster.md): routes, retained messages and client ids are
            # shared through Redis, and persistent sessions live there (unless durability is
            # "none"); joining it comes before the first client is accepted.
            from midge.cluster.redis_router import RedisRouter
            from midge.store.redis import RedisStore

            self.cluster = RedisRouter(config.cluster_redis, config.cluster_node_id)
            self.router = self.cluster
            redis_store: RedisStore | None = None
            if config.durability != "none":
                redis_store = self.cluster.store = RedisStore(self.cluster)
            self.broker = Broker(config, LoopClock(loop), self.auth, redis_store)
            if redis_store is not None:
                redis_store.bind(self.broker)
                # Durable before visible: a persistent session's client is shown nothing
                # that Redis does not have yet (exactly once across a node's death).
                writes.gate = redis_store.commit
        else:
            self.broker = Broker(config, LoopClock(loop), self.auth)
        if self.router is not None:
            self.router.bind(self.broker)
            self.broker.router = self.router
        self.pacer.hold = _hold(self.broker, self.pacer.hold)
        if self.cluster is not None:
            try:
                await self.cluster.start()
            except BaseException:
                await self.cluster.stop()
                await self._close_listeners()
                raise
            from midge.cluster.cluster_view import ClusterView

            self.cluster_view = ClusterView(
                self.cluster, process_memory, lambda: self.config.sys_interval, _admin_answer
            )
            self.cluster_view.start()
        if logs.topic_handler is not None:  # log_dest topic: $SYS/broker/log/...
            logs.topic_handler.attach(self.broker, loop)
        if config.sys_interval and self.publish_sys:
            self.sys_tree = SysTree(
                self.broker, config.sys_interval, process_memory, others=self.peer_snapshots
            )
            self.sys_tree.start()
        try:
            if self.before_serving is not None:
                await self.before_serving()
            for state in self.listeners:
                state.broker = self.broker
                assert state.server is not None
                await state.server.start_serving()
            if self.http is not None:
                await self.http.start(self, process_memory)
        except BaseException:
            await self._close_listeners()
            if store is not None:
                store.close()
            raise
        if self.router is None or self.publish_sys:
            from midge.bridge.bridge import stale_stores

            for path in stale_stores(config):
                log.log(
                    logs.NOTICE,
                    "%s belongs to no configured bridge (kept; delete it if that bridge is gone)",
                    path,
                )
        if config.bridges and (self.router is None or self.publish_sys):
            # With --workers N, worker 0 alone runs the bridges (one session per local_clientid),
            # as it alone publishes $SYS; the other workers' messages reach it by the router.
            from midge.bridge.bridge import Bridge

            for cfg in config.bridges:
                bridge = Bridge(cfg, self.broker, writes)
                await bridge.start()
                self.bridges.append(bridge)

    def _bind_http(self, listener: ListenerConfig, tls: ServerTls | None) -> None:
        """Bind a ``protocol http`` listener's socket (served from :meth:`start` on)."""
        from midge.observe.http import HttpListeners, bind

        if self.config.admin_user is None and self.config.admin_password_hash is not None:
            raise ConfigError("admin_password_hash is set without admin_user", self.config.source)
        if self.config.admin_user is not None and self.config.admin_password_hash is None:
            raise ConfigError(
                "admin_user is set without admin_password_hash (make one with `midge passwd`)",
                self.config.source,
            )
        if self.config.admin_password_hash is not None:
            from midge.auth.passwd import parse_hash

            try:
                parse_hash(self.config.admin_password_hash)
            except ValueError as exc:
                raise ConfigError(f"admin_password_hash: {exc}", self.config.source) from None
        if self.http is None:
            self.http = HttpListeners()
        sock = bind(listener)
        self.http.add(sock, tls.context if tls is not None else None)
        self.addresses.append(tuple(sock.getsockname()))
        self.protocols.append("http")

    def reload(self) -> bool:
        """SIGHUP: re-read the configuration file's reloadable options (midge.reload), the TLS
        certificates and every layer of the authentication chain that reloads (the password
        and ACL files, the SCRAM file), without dropping connections; clients whose user was
        removed or whose password changed, or anonymous ones no longer allowed, are
        disconnected (v5: DISCONNECT 0x87). A file that does not parse keeps the old settings
        (logged with file:line). True if everything reloaded."""
        from midge.reload import reload_file

        broker = self.broker
        options_ok = reload_file(self)  # mosquitto.conf's reloadable options
        self.reload_certificates()  # TLS listeners: new handshakes get the new files
        if broker is None or Capability.RELOAD not in self.auth.provides:
            log.info("SIGHUP: no password, ACL or SCRAM file to reload")
            return options_ok and self.file_config is not None
        done = self.auth.reload()  # logs each layer's outcome
        for notice in done.notices:
            log.warning("%s", notice)
        for client_id in done.revoked:
            session = broker.sessions.get(client_id)
            conn = session.connection if session is not None else None
            if conn is not None:
                conn.revoke("credentials no longer valid after reload")
        return options_ok and not done.errors

    def set_sys_interval(self, interval: float) -> None:
        """A new ``sys_interval`` (SIGHUP): the $SYS updates follow it, 0 stops them."""
        tree = self.sys_tree
        if not self.publish_sys or self.broker is None:
            return
        if interval <= 0:
            if tree is not None:
                tree.stop()
                self.sys_tree = None
        elif tree is None:
            self.sys_tree = SysTree(self.broker, interval, process_memory)
            self.sys_tree.start()
        else:
            tree.set_interval(interval)

    def reload_certificates(self) -> list[ConfigError]:
        """Read every TLS listener's certificate, key and CA files again (SIGHUP): new
        connections get the new ones, established connections keep theirs. A listener whose
        files fail keeps its current certificates; its error is logged and returned."""
        errors: list[ConfigError] = []
        for tls in self.tls:
            if tls is None:
                continue
            try:
                tls.reload()
            except ConfigError as exc:
                log.error(
                    "certificates of the listener on port %s not reloaded: %s",
                    tls.listener.port,
                    exc,
                )
                errors.append(exc)
        return errors

    async def _close_listeners(self) -> None:
        if self.http is not None:
            await self.http.stop()
        for state in self.listeners:
            if state.server is not None:
                state.server.close()
            state.remove_socket_file()
        for state in self.listeners:
            if state.server is not None:
                await state.server.wait_closed()

    async def stop(self) -> None:
        """Stop accepting, publish wills, disconnect everyone (v5: 0x8B), close the store, and
        remove the Unix sockets' files."""
        for bridge in self.bridges:
            await bridge.stop()
        self.bridges.clear()
        for state in self.listeners:
            if state.server is not None:
                state.server.close()
            state.remove_socket_file()
        broker = self.broker
        if self.http is not None:
            await self.http.stop()
        if logs.topic_handler is not None and logs.topic_handler.broker is broker:
            logs.topic_handler.detach()
        if self.sys_tree is not None:
            self.sys_tree.stop()
        if broker is not None:
            broker.shutdown()
            deadline = asyncio.get_running_loop().time() + CLOSE_TIMEOUT
            # Let the closing transports flush (DISCONNECT, wills routed to other clients).
            # Closed sockets linger (midge.transport.writer): once their output is written they
            # are aborted, so that stopping stays prompt.
            writes = self.writes
            while any(s.active for s in self.listeners) or (
                writes is not None and writes.pending_output()
            ):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.01)
            if writes is not None:
                writes.abort_lingering()
            broker.store.close()
        if self.cluster_view is not None:
            self.cluster_view.stop()
        if self.cluster is not None:
            await self.cluster.stop()  # after the wills went (to the other nodes too)
        await self.auth.close()
        for state in self.listeners:
            if state.server is not None:
                try:
                    await asyncio.wait_for(state.server.wait_closed(), CLOSE_TIMEOUT)
                except TimeoutError:  # pragma: no cover - a client that never lets go
                    log.warning("listener on port %s did not close in time", state.config.port)
