"""Fixtures for interop tests: third-party clients pointed at the ``broker`` fixture.

``paho(client_id, version, **options)`` returns a connected :class:`PahoClient` (``connect=False``
to connect yourself); ``mosquitto_sub(topics, version, ...)`` a running :class:`MosquittoSub`;
``pub(topic, ..., version=...)`` runs mosquitto_pub against the broker. Everything a test opens is
closed or killed when it ends, whatever happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import each_stopped
from tests.interop.clients import MosquittoSub, PahoClient, mosquitto_pub


@pytest.fixture
def paho(broker: Any) -> Iterator[Callable[..., PahoClient]]:
    opened: list[PahoClient] = []

    def open_client(
        client_id: str, version: int = 4, connect: bool = True, **options: Any
    ) -> PahoClient:
        client = PahoClient(broker.host, broker.port, client_id, version, **options)
        opened.append(client)
        if connect:
            client.connect()
        return client

    yield open_client
    for client in opened:
        client.close()


@pytest.fixture
def mosquitto_sub(broker: Any) -> Iterator[Callable[..., MosquittoSub]]:
    def start(topics: list[str], version: int = 4, **options: Any) -> MosquittoSub:
        return MosquittoSub(broker.port, topics, version, **options)

    yield from each_stopped(start, MosquittoSub.close)


@pytest.fixture
def pub(broker: Any) -> Callable[..., Any]:
    def run(topic: str, *args: str, **options: Any) -> Any:
        return mosquitto_pub(broker.port, topic, *args, **options)

    return run
