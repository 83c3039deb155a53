"""midge.client over WebSocket (``transport="websockets"``, ``ws://`` / ``wss://`` URLs) against
midge's ws and wss listeners, with a TCP client on the other side; a reconnect after the broker
closes the WebSocket; a refused upgrade."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from midge.client import Backoff, Client, MQTTError, Reason
from midge.config import ListenerConfig
from tests.conftest import RunningBroker
from tests.security.certs import Pki

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def take(iterator: Any, n: int, timeout: float = 5.0) -> list[Any]:
    async def collect() -> list[Any]:
        out = []
        async for message in iterator:
            out.append(message)
            if len(out) == n:
                break
        return out

    return await asyncio.wait_for(collect(), timeout)


@pytest.fixture
def site(make_broker: Callable[..., RunningBroker], tmp_path: Path) -> tuple[list[int], Pki]:
    pki = Pki(tmp_path)
    broker = make_broker(
        listeners=[
            ListenerConfig(port=0, host="127.0.0.1"),
            ListenerConfig(port=0, host="127.0.0.1", protocol="websockets"),
            ListenerConfig(
                port=0,
                host="127.0.0.1",
                protocol="websockets",
                certfile=pki.server_cert,
                keyfile=pki.server_key,
            ),
        ]
    )
    return [int(a[1]) for a in broker.server.addresses], pki


@pytest.mark.parametrize("version", [4, 5])
def test_client_over_ws_and_wss(site: tuple[list[int], Pki], version: int) -> None:
    (tcp_port, ws_port, wss_port), pki = site
    context = ssl.create_default_context(cafile=pki.cafile)
    big = bytes(range(256)) * 400

    async def main() -> None:
        async with (
            Client("127.0.0.1", tcp_port, version=version) as tcp,
            Client("127.0.0.1", ws_port, version=version, transport="websockets") as ws,
            Client.from_url(
                f"wss://localhost:{wss_port}/mqtt", version=version, tls=context
            ) as wss,
        ):
            assert wss.transport == "websockets" and wss.websocket_path == "/mqtt"
            for client in (ws, wss):
                assert (await client.subscribe("down/#", qos=2)).reason_codes == [2]
            await tcp.subscribe("up/#", qos=2)
            for qos in (0, 1, 2):
                await tcp.publish(f"down/{qos}", big, qos=qos)
            for client in (ws, wss):
                got = await take(client.messages(), 3)
                assert sorted((m.topic, m.qos) for m in got) == [
                    ("down/0", 0),
                    ("down/1", 1),
                    ("down/2", 2),
                ]
                assert all(m.payload == big for m in got)
            await ws.publish("up/ws", b"from ws", qos=1)
            await wss.publish("up/wss", b"from wss", qos=2)
            got = await take(tcp.messages(), 2)
            assert sorted((m.topic, m.payload) for m in got) == [
                ("up/ws", b"from ws"),
                ("up/wss", b"from wss"),
            ]

    run(main())


def test_client_reconnects_over_websocket(site: tuple[list[int], Pki]) -> None:
    """The broker closes the WebSocket (another client takes the session over with reconnect
    off on its side): with a persistent session the client comes back and gets what was sent
    while it was away."""
    (tcp_port, ws_port, _), _ = site

    async def main() -> None:
        web = Client.from_url(
            f"ws://127.0.0.1:{ws_port}/",
            client_id="web",
            clean_start=False,
            session_expiry=60,
            reconnect=Backoff(initial=0.05, maximum=0.1),
        )
        async with web, Client("127.0.0.1", tcp_port) as tcp:
            await web.subscribe("t", qos=1)
            link = web._link
            assert link is not None
            link.abort()  # the network drops
            await tcp.publish("t", b"while away", qos=1)
            got = await take(web.messages(), 1)
            assert got[0].payload == b"while away"
            assert web._link is not link

    run(main())


def test_refused_upgrade_is_an_error(make_broker: Callable[..., RunningBroker]) -> None:
    """A TCP (not WebSocket) listener does not answer the upgrade with 101."""
    broker = make_broker(connect_timeout=0.5)

    async def main() -> None:
        client = Client(broker.host, broker.port, transport="websockets", reconnect=False)
        with pytest.raises(MQTTError) as info:
            await client.connect()
        assert info.value.reason_code == Reason.UNSPECIFIED_ERROR

    run(main())
