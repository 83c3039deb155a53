"""The pytest plugin (entry point ``pytest11``, loaded once midge is installed): a real MQTT 5
broker for a test, with no Docker and nothing else installed.

Fixtures:

``mqtt_broker``
    A fresh :class:`midge.embed.ThreadedBroker` for the test: a complete midge broker serving
    from a thread on 127.0.0.1 and a free port, state in memory. It has ``host``, ``port`` and
    ``url`` and works for synchronous and asynchronous tests alike (paho-mqtt, aiomqtt,
    midge.client, anything that speaks MQTT). It is stopped when the test ends.

``mqtt_broker_config``
    The :class:`midge.config.Config` ``mqtt_broker`` starts with (None: the defaults). Override
    it in a test module or conftest.py to test against password files, ACLs, limits...

``mqtt_client``
    A factory: ``mqtt_client(**kwargs)`` makes a :class:`midge.client.Client` for
    ``mqtt_broker`` (not yet connected: use ``async with mqtt_client() as client``). Keyword
    arguments are :class:`~midge.client.Client`'s.

docs/testing.md shows them in use. The imports happen when a fixture is first used, so the
plugin costs nothing to test runs that do not use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from midge.client import Client
    from midge.config import Config
    from midge.embed import ThreadedBroker


@pytest.fixture
def mqtt_broker_config() -> Config | None:
    """The configuration of ``mqtt_broker`` (None: in memory, anonymous, a free port)."""
    return None


@pytest.fixture
def mqtt_broker(mqtt_broker_config: Config | None) -> Iterator[ThreadedBroker]:
    """A midge broker for this test (``host``, ``port``, ``url``), serving from a thread."""
    from midge.embed import run_broker_in_thread

    broker = run_broker_in_thread(mqtt_broker_config)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mqtt_client(mqtt_broker: ThreadedBroker) -> Callable[..., Client]:
    """``mqtt_client(**kwargs)``: a midge.client.Client for ``mqtt_broker`` (``async with`` it)."""
    from midge.client import Client

    def make(**kwargs: Any) -> Client:
        kwargs.setdefault("reconnect", False)
        return Client(mqtt_broker.host, mqtt_broker.port, **kwargs)

    return make
