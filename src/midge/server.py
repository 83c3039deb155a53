"""The running broker: the core plus its listeners, on one asyncio loop.

``Server(config)`` is what ``midge broker`` runs and what the tests start on a free port:
``await start()`` opens every listener (``addresses`` then holds where each listens) and
``await stop()`` publishes wills, closes every client connection and the listeners.

With ``config.data_dir`` set and ``durability`` other than "none", state is kept in SQLite there
(:mod:`midge.store.sqlite`): ``start`` opens it (a :class:`~midge.store.base.StoreError` if it
cannot: locked, corrupt, unreadable) and restores it before the first listener opens.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from midge.auth.base import Authenticator, find_layer, layers
from midge.auth.files import FileAuthenticator, anonymous_notices, build_authenticator
from midge.broker.broker import Broker
from midge.cluster.router import Router
from midge.config import Config, ConfigError, resolve_listener
from midge.store.base import Store
from midge.transport.clock import LoopClock
from midge.transport.tcp import ConnectionLimits, ListenerState, listen
from midge.transport.tls import ServerTls
from midge.transport.writer import TurnWrites

log = logging.getLogger("midge.server")

#: How long ``stop`` waits for client sockets to finish closing.
CLOSE_TIMEOUT = 2.0


class Server:
    def __init__(
        self,
        config: Config,
        authenticator: Authenticator | None = None,
        router: Router | None = None,
    ) -> None:
        self.config = config
        self.authenticator = authenticator
        #: Cross-worker routing for ``--workers N`` (its listeners then share ports: SO_REUSEPORT).
        self.router = router
        self.broker: Broker | None = None
        self.listeners: list[ListenerState] = []
        #: (host, port, ...) of each listening socket, in listener order.
        self.addresses: list[tuple[Any, ...]] = []
        #: Each listener's TLS (None for a plain listener), in listener order.
        self.tls: list[ServerTls | None] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
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
        if config.scram_file:
            # SCRAM (MQTT 5 enhanced authentication) in front of the configured authenticator;
            # a bad scram_file is a ConfigError naming its line, before any listener opens.
            from midge.auth.scram import ScramAuthenticator

            authenticator = ScramAuthenticator.from_file(config.scram_file, authenticator)
        self._plugins: list[Any] = []
        if config.auth_python or config.auth_http_url or config.auth_ldap or config.auth_oauth.mode:
            # Python plugins and the HTTP, LDAP and OAuth backends (midge.auth.plugin), asked
            # after the built-in checks; a PluginError names the plugin and the fix.
            from midge.auth.plugin import PluginAuthenticator, load_plugin

            if config.auth_python:
                self._plugins.append(load_plugin(config.auth_python, config.auth_python_options))
            if config.auth_http_url:
                from midge.auth.http import HttpAuth

                self._plugins.append(HttpAuth(config.auth_http_url, config.auth_http_timeout))
            if config.auth_ldap:
                from midge.auth.ldap import create as create_ldap

                self._plugins.append(create_ldap(config.auth_ldap, config.auth_cache_ttl))
            if config.auth_oauth.mode:
                from midge.auth import oauth

                self._plugins.append(
                    oauth.create(config.auth_oauth, config.auth_http_timeout, config.auth_cache_ttl)
                )
            authenticator = PluginAuthenticator(
                self._plugins,
                cache_ttl=config.auth_cache_ttl,
                timeout=config.auth_http_timeout,
                inner=authenticator,
            )
            file_layer = find_layer(authenticator, FileAuthenticator)
            if file_layer is not None:
                file_layer.usernames_elsewhere = any(
                    getattr(p, "authenticate", None) for p in self._plugins
                )
        store: Store | None = None
        if config.data_dir and config.durability != "none":
            from midge.store.sqlite import SqliteStore

            sqlite_store = SqliteStore(config.data_dir, config.durability)
            sqlite_store.open()
            try:
                restored = sqlite_store.load()
                self.broker = Broker(config, LoopClock(loop), authenticator, sqlite_store)
                self.broker.restore(restored)
            except BaseException:
                sqlite_store.close()
                raise
            sqlite_store.start(loop)
            store = sqlite_store
            log.info("durable store %s (durability %s)", sqlite_store.path, config.durability)
        else:
            self.broker = Broker(config, LoopClock(loop), authenticator)
        if self.router is not None:
            self.router.bind(self.broker)
            self.broker.router = self.router
        limits = ConnectionLimits(config.global_max_connections, config.max_connection_rate)
        writes = TurnWrites(loop)
        try:
            for listener, tls in zip(self.config.listeners, self.tls, strict=True):
                state = await listen(
                    self.broker,
                    resolve_listener(self.config, listener),
                    reuse_port=self.router is not None,
                    limits=limits,
                    tls=tls,
                    writes=writes,
                )
                self.listeners.append(state)
                assert state.server is not None
                for sock in state.server.sockets:
                    self.addresses.append(tuple(sock.getsockname()))
        except BaseException:
            await self._close_listeners()
            if store is not None:
                store.close()
            raise

    def reload(self) -> bool:
        """SIGHUP: re-read the TLS certificates, the SCRAM file, and the password and ACL files,
        without dropping connections; clients
        whose user was removed or whose password changed are disconnected (v5: DISCONNECT 0x87).
        A file that does not parse keeps the old ones (logged with file:line). True if
        reloaded."""
        broker = self.broker
        self.reload_certificates()  # TLS listeners: new handshakes get the new files
        auth = None if broker is None else find_layer(broker.authenticator, FileAuthenticator)
        if broker is not None:
            # SCRAM's credentials file is re-read too (midge.auth.scram).
            for layer in layers(broker.authenticator):
                reload = getattr(layer, "reload", None)
                if reload is not None and not isinstance(layer, FileAuthenticator):
                    try:
                        reload()
                    except ConfigError as exc:
                        log.error("reload failed, keeping the previous file: %s", exc)
        if auth is None or broker is None:
            log.info("SIGHUP: no password or ACL file to reload")
            return False
        try:
            notices, revoked = auth.reload()
        except ConfigError as exc:
            log.error("reload failed, keeping the previous password and ACL files: %s", exc)
            return False
        for notice in notices:
            log.warning("%s", notice)
        for client_id in revoked:
            session = broker.sessions.get(client_id)
            conn = session.connection if session is not None else None
            if conn is not None:
                conn.revoke("credentials no longer valid after reload")
        log.info(
            "reloaded password and ACL files (%d client(s) disconnected)",
            sum(1 for _ in revoked),
        )
        return True

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
        for state in self.listeners:
            if state.server is not None:
                state.server.close()
        for state in self.listeners:
            if state.server is not None:
                await state.server.wait_closed()

    async def stop(self) -> None:
        """Stop accepting, publish wills, disconnect everyone (v5: 0x8B), close the store."""
        for state in self.listeners:
            if state.server is not None:
                state.server.close()
        broker = self.broker
        if broker is not None:
            broker.shutdown()
            deadline = asyncio.get_running_loop().time() + CLOSE_TIMEOUT
            # Let the closing transports flush (DISCONNECT, wills routed to other clients).
            while any(s.active for s in self.listeners):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.01)
            broker.store.close()
        for plugin in getattr(self, "_plugins", []):
            close = getattr(plugin, "close", None)
            if close is not None:
                try:
                    await asyncio.wait_for(close(), CLOSE_TIMEOUT)
                except Exception:  # pragma: no cover - a plugin's own trouble at exit
                    log.exception("closing auth plugin %r", plugin)
        for state in self.listeners:
            if state.server is not None:
                try:
                    await asyncio.wait_for(state.server.wait_closed(), CLOSE_TIMEOUT)
                except TimeoutError:  # pragma: no cover - a client that never lets go
                    log.warning("listener on port %s did not close in time", state.config.port)
