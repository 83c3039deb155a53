"""The bridge's in-flight window: QoS 1/2 messages cross a bridge several at a time, in order,
up to the remote's Receive Maximum (MQTT 5) or ``max_inflight_messages`` (MQTT 3.1.1, as a
Mosquitto bridge), each acknowledged to its sender only once the other side has acknowledged it.

The remote is a server written here on a real socket (through midge's codec) that holds the
acknowledgements back until the test releases them, which no real broker does on demand.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

import midge
from midge.client import Client
from midge.codec import Decoder, encode
from midge.codec.packets import (
    MQTT5,
    Connack,
    Connect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from midge.codec.properties import Prop
from midge.config import ListenerConfig, parse_mosquitto_conf

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) for ``condition``, polling the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Remote:
    """A remote broker that answers CONNECT (with ``receive_maximum`` in an MQTT 5 CONNACK),
    SUBSCRIBE and PINGREQ, records every PUBLISH, and acknowledges one only when told to."""

    def __init__(self, receive_maximum: int | None) -> None:
        self.receive_maximum = receive_maximum
        self.connect: Connect | None = None
        self.published: list[Publish] = []
        self.acks: list[Puback | Pubrec] = []  # the bridge's PUBACK / PUBREC of what we sent
        self.writer: asyncio.StreamWriter | None = None
        self.pings = 0
        #: The ALPN protocol agreed on a TLS connection.
        self.alpn: str | None = None
        self.version = 4
        self.port = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def send(self, packet: Packet) -> None:
        assert self.writer is not None
        self.writer.write(encode(packet, self.version))

    def release(self, publish: Publish) -> None:
        """Acknowledge ``publish`` (PUBACK, or PUBREC then PUBCOMP at the PUBREL)."""
        assert publish.packet_id is not None
        self.send(Puback(publish.packet_id) if publish.qos == 1 else Pubrec(publish.packet_id))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = Decoder()
        self.writer = writer
        tls = writer.get_extra_info("ssl_object")
        if tls is not None:
            self.alpn = tls.selected_alpn_protocol()
        try:
            while data := await reader.read(65536):
                for packet in decoder.feed(data):
                    if isinstance(packet, Connect):
                        decoder.version = self.version = packet.protocol_level
                        self.connect = packet
                        props: dict[int, Any] = {}
                        if self.version == MQTT5 and self.receive_maximum is not None:
                            props[Prop.RECEIVE_MAXIMUM] = self.receive_maximum
                        self.send(Connack(False, 0, props))
                    elif isinstance(packet, Subscribe):
                        granted = [s.qos for s in packet.subscriptions]
                        self.send(Suback(packet.packet_id, granted))
                    elif isinstance(packet, Unsubscribe):
                        self.send(Unsuback(packet.packet_id, [0] * len(packet.topic_filters)))
                    elif isinstance(packet, Publish):
                        self.published.append(packet)
                    elif isinstance(packet, Pubrel):
                        self.send(Pubcomp(packet.packet_id))
                    elif isinstance(packet, Pingreq):
                        self.pings += 1
                        self.send(Pingresp())
                    elif isinstance(packet, Puback | Pubrec):
                        self.acks.append(packet)
                        if isinstance(packet, Pubrec):
                            self.send(Pubrel(packet.packet_id))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def _edge_conf(port: int, version: str, inflight: int, pattern: str) -> midge.Config:
    conf = parse_mosquitto_conf(
        f"max_inflight_messages {inflight}\n"
        "connection remote\n"
        f"address 127.0.0.1:{port}\n"
        f"bridge_protocol_version {version}\n"
        "notifications false\n"
        f"{pattern}\n"
    )
    conf.listeners = [ListenerConfig(port=0, host="127.0.0.1")]
    conf.durability = "none"
    conf.sys_interval = 0
    return conf


@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize(
    ("version", "receive_maximum", "window"),
    [("mqttv50", 5, 5), ("mqttv50", None, 8), ("mqttv311", None, 8)],
    ids=["v5-receive-maximum-5", "v5-no-receive-maximum", "v311"],
)
def test_out_several_in_flight_in_order_acknowledged_after_the_remote(
    version: str, receive_maximum: int | None, window: int, qos: int
) -> None:
    """30 messages published at the edge: the remote gets exactly ``window`` of them before it
    acknowledges any (its Receive Maximum, else the edge's max_inflight_messages 8), in order;
    each acknowledgement lets one more through; the publisher's acknowledgements come only
    for what the remote acknowledged; all 30 arrive once, in order."""
    total = 30

    async def main() -> None:
        remote = Remote(receive_maximum)
        server = await remote.start()
        conf = _edge_conf(remote.port, version, 8, f"topic w/# out {qos}")
        async with midge.Broker(conf) as edge, Client(edge.host, edge.port) as source:
            await until(lambda: remote.connect is not None)
            assert remote.connect is not None
            if version == "mqttv50":  # the bridge's own window the other way, as Mosquitto's
                assert remote.connect.properties.get(Prop.RECEIVE_MAXIMUM) == 8
            sent = [
                asyncio.ensure_future(source.publish("w/t", b"%d" % n, qos)) for n in range(total)
            ]
            await until(lambda: len(remote.published) >= window)
            await asyncio.sleep(0.3)  # and no more than the window comes meanwhile
            assert len(remote.published) == window
            await asyncio.gather(*sent)  # the edge has them all (stored)
            assert edge.server.bridges
            bridge = edge.server.bridges[0]
            released = 0
            # Every message the remote has not acknowledged is still held by the edge (its
            # bridge session's in-flight and queued messages): the bridge acknowledged none.
            assert bridge._waiting() == total
            while released < total:
                # Acknowledge the oldest two: two more come, in order.
                for publish in remote.published[released : released + 2]:
                    remote.release(publish)
                released = min(total, released + 2)
                await until(lambda: bridge._waiting() == total - released)  # noqa: B023
                await until(lambda: len(remote.published) >= min(total, released + window))  # noqa: B023
                assert len(remote.published) <= released + window
            payloads = [int(p.payload) for p in remote.published]
            assert payloads == list(range(total))
            assert all(p.qos == qos and not p.dup for p in remote.published)
            assert len({p.packet_id for p in remote.published[:window]}) == window
        server.close()

    run(main())


@pytest.mark.parametrize(
    ("version", "overrun"),
    [("mqttv50", False), ("mqttv311", False), ("mqttv50", True)],
    ids=["v5", "v311", "v5-remote-overruns-receive-maximum"],
)
def test_in_acknowledgements_in_order_once_published_here(
    version: str, overrun: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The remote sends 40 QoS 1 and QoS 2 messages at once: they reach a subscriber on the edge
    in order, and the bridge acknowledges each (PUBACK / PUBREC) in the order received. A remote
    that sends more than the bridge's Receive Maximum (as Mosquitto 2.0 does when it has queued
    messages for the bridge) is accepted with a warning, not disconnected."""
    total = 40

    async def main() -> None:
        remote = Remote(None)
        server = await remote.start()
        conf = _edge_conf(remote.port, version, 8, "topic r/# in 2")
        async with midge.Broker(conf) as edge, Client(edge.host, edge.port) as sink:
            await sink.subscribe("r/#", 2)
            await until(lambda: remote.connect is not None and remote.writer is not None)
            await asyncio.sleep(0.2)  # the bridge has subscribed
            for n in range(total):
                # Within the bridge's Receive Maximum (8, max_inflight_messages), all at once.
                if not overrun:
                    await until(lambda: n - len(remote.acks) < 8)  # noqa: B023
                qos = 1 + n % 2
                remote.send(Publish("r/t", b"%d" % n, qos, False, False, n + 1))
            got: list[int] = []
            async for message in sink.messages():
                got.append(int(message.payload))
                if len(got) == total:
                    break
            assert got == list(range(total))
            await until(lambda: len(remote.acks) == total)
            assert [a.packet_id for a in remote.acks] == [n + 1 for n in range(total)]
            assert [type(a) for a in remote.acks] == [Puback, Pubrec] * (total // 2)
            warned = [r for r in caplog.records if "more than this client's Receive" in r.message]
            assert len(warned) == (1 if overrun else 0)
        server.close()

    run(main())
