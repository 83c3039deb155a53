"""Authentication and authorization by plugins: async Python callables, cached decisions.

The contract (docs/security.md, "Plugins"). A plugin is any object with some of these
coroutine functions; what it leaves out is allowed (authorization) or left to the next check
(authentication: then any client is accepted). Which ones a plugin defines is found once, when it
is loaded (:func:`plugin_methods`), and is what its layer declares it provides:

``async def authenticate(client: Client) -> bool | int``
    At CONNECT: True (or 0) accepts; False refuses with "bad user name or password" (v5 0x86,
    v3.1.1 return code 4); an int is an MQTT 5 CONNACK reason code (0x87 not authorized, ...).
``async def authorize(client: Client, action: str, topic: str) -> bool``
    ``action`` is "publish" (a topic name) or "subscribe" (a topic filter, shared ones with their
    ``$share/GROUP/`` prefix).
``async def close() -> None``
    When the broker stops (connections, pools).

A plugin is named by ``auth_python``: ``package.module:factory`` (a callable given the
``auth_python_opt_NAME VALUE`` options as a ``dict[str, str]`` and returning the plugin), or the
name of an entry point in the group ``midge.auth`` (the same factory). midge's own HTTP backend
(:mod:`midge.auth.http`) is such a plugin.

Every call is bounded by ``timeout``: a plugin that does not answer in time, or raises, refuses
(fail closed), and the error is logged. Authorization decisions are cached per client, action
and topic for ``cache_ttl`` seconds (allow and deny alike), so a client publishing on a topic
asks once per TTL. While a decision is pending the client's packets wait, in order (see
:mod:`midge.auth.base`).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from midge.auth.base import Authenticator, Capability, ConnectRequest, Pending
from midge.codec.reasons import Reason

log = logging.getLogger("midge.auth")

#: Decisions kept at most (the oldest half is dropped beyond it).
CACHE_SIZE = 100_000
#: A decision that was just made is kept at least this long, even with ``cache_ttl`` 0: the
#: connection that waited for it asks again right away.
MIN_KEEP = 5.0
#: How long a plugin's ``close`` may take when the broker stops.
CLOSE_TIMEOUT = 2.0


class Client:
    """What a plugin is told about a client.

    ``authenticate`` may change ``username`` (the connection then takes that name: ACLs, logs
    and ``authorize`` see it) and set ``expires`` (a ``time.time()`` value: the connection is
    closed then, v5 with DISCONNECT 0x87), e.g. from an access token's claims.
    """

    __slots__ = ("client_id", "expires", "password", "peer", "username", "version")

    def __init__(
        self,
        client_id: str,
        username: str | None,
        password: bytes | None = None,
        peer: str = "",
        version: int = 4,
    ) -> None:
        self.client_id = client_id
        self.username = username
        self.password = password
        self.peer = peer
        self.version = version
        self.expires: float | None = None

    def __repr__(self) -> str:  # never the password
        return f"Client({self.client_id!r}, {self.username!r}, peer={self.peer!r})"


class PluginError(Exception):
    """A plugin that cannot be loaded: the message names it and the fix."""


def load_plugin(name: str, options: dict[str, str]) -> Any:
    """The plugin ``auth_python`` names: ``module:factory`` or an entry point of ``midge.auth``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(
                f"auth_python {name}: cannot import {module_name} ({exc}); install it or fix "
                "the module name"
            ) from None
        factory = getattr(module, attr, None)
        if factory is None:
            raise PluginError(f"auth_python {name}: {module_name} has no '{attr}'")
    else:
        found = [ep for ep in entry_points(group="midge.auth") if ep.name == name]
        if not found:
            raise PluginError(
                f"auth_python {name}: no entry point '{name}' in group midge.auth; give "
                "module:factory, or install the package that provides it"
            )
        factory = found[0].load()
    if not callable(factory):
        raise PluginError(f"auth_python {name}: not callable")
    try:
        plugin = factory(dict(options))
    except Exception as exc:
        raise PluginError(f"auth_python {name}: the factory failed: {exc}") from None
    methods = plugin_methods(plugin)
    for method, fn in (("authenticate", methods.authenticate), ("authorize", methods.authorize)):
        if fn is not None and not inspect.iscoroutinefunction(fn):
            raise PluginError(f"auth_python {name}: '{method}' must be an async function")
    return plugin


@dataclass(frozen=True, slots=True)
class PluginMethods:
    """The methods of the plugin interface that one plugin defines (None: it does not)."""

    plugin: Any
    authenticate: Callable[[Client], Awaitable[Any]] | None
    authorize: Callable[[Client, str, str], Awaitable[Any]] | None
    close: Callable[[], Awaitable[Any]] | None


def plugin_methods(plugin: Any) -> PluginMethods:
    """What ``plugin`` defines of the plugin interface: the one place a plugin (any object, so
    that existing plugins need no declaration) is looked into; done once, when it is loaded."""
    return PluginMethods(
        plugin,
        getattr(plugin, "authenticate", None) or None,
        getattr(plugin, "authorize", None) or None,
        getattr(plugin, "close", None) or None,
    )


class PluginAuthenticator(Authenticator):
    """The layer of the chain that asks ``plugins`` in turn.

    Authentication: each plugin that has ``authenticate`` must accept. Authorization: each plugin
    that has ``authorize`` must allow. The layers before it in the chain (the password and ACL
    files) are asked first, synchronously; a refusal there is final. What it provides follows
    from what the plugins define: ``authenticate`` (CONNECT), ``authorize`` (PUBLISH and
    SUBSCRIBE), ``close`` (CLOSE).
    """

    #: Its name in /metrics (midge_auth_failures_total{backend}).
    backend = "plugin"

    #: At most; per instance, what its plugins define.
    provides = frozenset(
        {Capability.CONNECT, Capability.PUBLISH, Capability.SUBSCRIBE, Capability.CLOSE}
    )
    name = "auth plugins"

    def __init__(
        self,
        plugins: list[Any],
        *,
        cache_ttl: float = 60.0,
        timeout: float = 5.0,
    ) -> None:
        self.plugins = plugins
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        methods = [plugin_methods(p) for p in plugins]
        self._authn = [m.authenticate for m in methods if m.authenticate is not None]
        self._authz = [m.authorize for m in methods if m.authorize is not None]
        self._closers = [(m.plugin, m.close) for m in methods if m.close is not None]
        provides: set[Capability] = set()
        if self._authn:
            provides.add(Capability.CONNECT)
        if self._authz:
            provides.update((Capability.PUBLISH, Capability.SUBSCRIBE))
        if self._closers:
            provides.add(Capability.CLOSE)
        self.provides = frozenset(provides)
        #: (client id, username, action, topic) -> (allowed, until)
        self._cache: dict[tuple[str, str | None, str, str], tuple[bool, float]] = {}
        self._pending: dict[tuple[str, str | None, str, str], asyncio.Future[bool]] = {}
        self._clock = time.monotonic

    # -- authentication ---------------------------------------------------------------------

    def authenticate(self, request: ConnectRequest) -> int | Pending:
        if not self._authn:
            return Reason.SUCCESS
        client = Client(
            request.client_id, request.username, request.password, request.peer, request.version
        )
        return asyncio.ensure_future(self._authenticate(client, request))

    async def _authenticate(self, client: Client, request: ConnectRequest) -> int:
        code = await self._authenticate_plugins(client)
        if code == Reason.SUCCESS:
            # What the plugins concluded about the client (midge.auth.base.ConnectRequest).
            if client.username != request.username and client.username is not None:
                request.identity = client.username
            request.expires = client.expires
        return code

    async def _authenticate_plugins(self, client: Client) -> int:
        for fn in self._authn:
            answer = await self._call(fn(client), f"authenticate {client!r}")
            if answer is None:
                return Reason.NOT_AUTHORIZED  # failed or timed out: closed
            if answer is False:  # (before the int test: False == 0)
                return Reason.BAD_USER_NAME_OR_PASSWORD
            if answer is True or answer == 0:
                continue
            if isinstance(answer, int):
                return answer
            log.error("auth plugin: authenticate returned %r, not a bool or int", answer)
            return Reason.NOT_AUTHORIZED
        return Reason.SUCCESS

    # -- authorization -----------------------------------------------------------------------

    def can_publish(self, client_id: str, username: str | None, topic: str) -> bool | Pending:
        return self._decide(client_id, username, "publish", topic)

    def can_subscribe(
        self, client_id: str, username: str | None, topic_filter: str
    ) -> bool | Pending:
        return self._decide(client_id, username, "subscribe", topic_filter)

    def _decide(
        self, client_id: str, username: str | None, action: str, topic: str
    ) -> bool | Pending:
        if not self._authz:
            return True
        key = (client_id, username, action, topic)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._authorize(key))
            self._pending[key] = pending
        return pending

    async def _authorize(self, key: tuple[str, str | None, str, str]) -> bool:
        client_id, username, action, topic = key
        client = Client(client_id, username)
        allowed = True
        try:
            for fn in self._authz:
                answer = await self._call(fn(client, action, topic), f"authorize {key!r}")
                if answer is not True:
                    if answer is not False and answer is not None:
                        log.error("auth plugin: authorize returned %r, not a bool", answer)
                    allowed = False
                    break
        finally:
            self._pending.pop(key, None)
        cache = self._cache
        if len(cache) >= CACHE_SIZE:
            for old in list(cache)[: CACHE_SIZE // 2]:
                del cache[old]
        cache[key] = (allowed, self._clock() + max(self.cache_ttl, MIN_KEEP))
        return allowed

    async def _call(self, call: Awaitable[Any], what: str) -> Any:
        """The plugin's answer, or None if it raised or did not answer within the timeout."""
        try:
            return await asyncio.wait_for(call, self.timeout)
        except TimeoutError:
            log.warning("auth plugin: %s did not answer in %.1f s: refused", what, self.timeout)
        except Exception:
            log.exception("auth plugin: %s failed: refused", what)
        return None

    def forget(self, predicate: Callable[[tuple[str, str | None, str, str]], bool]) -> None:
        """Drop cached decisions (e.g. on reload)."""
        for key in [k for k in self._cache if predicate(k)]:
            del self._cache[key]

    async def close(self) -> None:
        for plugin, close in self._closers:
            try:
                await asyncio.wait_for(close(), CLOSE_TIMEOUT)
            except Exception:  # pragma: no cover - a plugin's own trouble at exit
                log.exception("closing auth plugin %r", plugin)
