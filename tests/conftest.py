"""Shared fixtures: a real broker on a real socket, started fresh for each test.

``broker`` runs a :class:`midge.server.Server` with the default configuration in a background
thread with its own event loop, listening on 127.0.0.1 on a free port. ``make_broker(**overrides)``
starts one with :class:`midge.config.Config` fields overridden (and ``authenticator=`` an
:class:`midge.auth.base.Authenticator`). Both are stopped when the test ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from midge.config import Config, ListenerConfig
from midge.server import Server

T = TypeVar("T")


class RunningBroker:
    """A broker serving in a thread of its own; ``host``/``port`` is where it listens."""

    def __init__(self, config: Config, authenticator: Any = None) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.server = Server(config, authenticator)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.host, self.port = self.server.addresses[0][:2]

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the broker's loop and return its result (for inspecting state)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def each_stopped(make: Callable[..., T], stop: Callable[[T], object]) -> Iterator[Callable[..., T]]:
    """For a fixture: yields ``make``, and once the test is over calls ``stop`` on everything it
    made (brokers, client processes), in order."""
    made: list[T] = []

    def start(*args: Any, **kwargs: Any) -> T:
        thing = make(*args, **kwargs)
        made.append(thing)
        return thing

    yield start
    for thing in made:
        stop(thing)


@pytest.fixture
def make_broker() -> Iterator[Callable[..., RunningBroker]]:
    def start(authenticator: Any = None, **overrides: Any) -> RunningBroker:
        overrides.setdefault("listeners", [ListenerConfig(port=0, host="127.0.0.1")])
        return RunningBroker(Config(**overrides), authenticator)

    yield from each_stopped(start, RunningBroker.stop)


@pytest.fixture
def broker(make_broker: Callable[..., RunningBroker]) -> RunningBroker:
    return make_broker()


@pytest.fixture
def raw(broker: Any) -> Iterator[Callable[..., Any]]:
    """``raw(version=4)`` opens a :class:`tests.rawclient.RawClient` to ``broker`` (a socket
    one, or in memory where ``broker`` is a :class:`tests.memory.MemoryBroker`).

    Every client opened is closed when the test ends."""
    from tests.rawclient import RawClient

    def open_client(version: int = 4, **kwargs: Any) -> RawClient:
        return RawClient.to(broker, version=version, **kwargs)

    yield from each_stopped(open_client, RawClient.close)


@pytest.fixture
def clients() -> Iterator[Callable[..., Any]]:
    """``clients(broker, version=5)`` opens a :class:`tests.rawclient.RawClient` to any running
    broker (``make_broker(...)``'s); every client opened is closed when the test ends."""
    from tests.rawclient import RawClient

    def open_client(broker: Any, version: int = 5) -> RawClient:
        return RawClient.to(broker, version)

    yield from each_stopped(open_client, RawClient.close)
