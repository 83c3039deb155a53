"""The conformance suites run the broker core in memory, on a manual clock (tests/memory.py).

``make_broker(**overrides)`` and ``broker`` here give a :class:`tests.memory.MemoryBroker`; a
test about the socket itself (marked ``@pytest.mark.socket``) gets the real broker on TCP of
tests/conftest.py instead. Either way ``raw(version)``, ``clients`` (a
:class:`tests.rawclient.Clients` of protocol level 5 clients) and ``RawClient.to(broker)`` open
clients to it, and ``broker.call(fn)`` inspects its state. Only a MemoryBroker has
``advance(seconds)``: time passes in it only when a test says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from midge.config import Config
from tests.conftest import each_stopped
from tests.memory import MemoryBroker
from tests.rawclient import Clients


@pytest.fixture
def make_broker(
    request: pytest.FixtureRequest, make_broker: Callable[..., Any]
) -> Iterator[Callable[..., Any]]:
    """``make_broker(authenticator=None, **config_overrides)``: in memory, or on a socket for a
    test marked ``socket``. Every broker is stopped when the test ends."""
    if request.node.get_closest_marker("socket") is not None:
        yield make_broker
        return

    def start(authenticator: Any = None, **overrides: Any) -> MemoryBroker:
        return MemoryBroker(Config(**overrides), authenticator)

    yield from each_stopped(start, MemoryBroker.stop)


@pytest.fixture
def clients(broker: Any) -> Iterator[Clients]:
    """Protocol level 5 clients to ``broker``: ``clients.open()``, ``clients.connect(id, ...)``."""
    with Clients(broker) as opened:
        yield opened
