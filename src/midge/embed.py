"""A complete broker to embed in a program or a test: ``midge.Broker`` and
``midge.run_broker_in_thread``.

::

    async with midge.Broker() as broker:        # the current event loop, a free port
        async with Client(broker.host, broker.port) as client: ...

    with midge.run_broker_in_thread() as broker:  # for code that is not async
        paho_client.connect(broker.host, broker.port)

Both run :class:`midge.server.Server` (what ``midge broker`` runs), with state in memory unless
the configuration says otherwise. ``config`` is a :class:`midge.config.Config`; without one the
broker listens on ``host``:``port`` (127.0.0.1 and a port the system chooses), allows anonymous
clients, and keeps nothing on disk. With one, its listeners are used as they are.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from midge.config import Config, ListenerConfig
from midge.server import Server


def _config(config: Config | None, host: str, port: int) -> Config:
    if config is None:
        return Config(listeners=[ListenerConfig(port=port, host=host)], durability="none")
    return config


class Broker:
    """A broker in the running event loop: ``async with Broker() as broker``; ``broker.url``."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        authenticator: Any = None,
    ) -> None:
        self.config = _config(config, host, port)
        self.server = Server(self.config, authenticator)
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT`` of the first listener (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    async def start(self) -> Broker:
        await self.server.start()
        self.host, self.port = str(self.server.addresses[0][0]), int(self.server.addresses[0][1])
        return self

    async def stop(self) -> None:
        await self.server.stop()

    async def __aenter__(self) -> Broker:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ThreadedBroker:
    """A :class:`Broker` serving from a thread with its own event loop (see
    :func:`run_broker_in_thread`). ``stop()`` (or leaving the ``with`` block) stops it."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="midge-broker", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(broker.start(), self.loop).result(30)
        except BaseException:
            self._shutdown()
            raise

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def url(self) -> str:
        return self.broker.url

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.broker.stop(), self.loop).result(30)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()

    def __enter__(self) -> ThreadedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_broker_in_thread(
    config: Config | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    authenticator: Any = None,
) -> ThreadedBroker:
    """Start a broker in a background thread and return once it listens."""
    return ThreadedBroker(Broker(config, host=host, port=port, authenticator=authenticator))
