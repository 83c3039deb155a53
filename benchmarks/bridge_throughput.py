"""Messages per second across a bridge between two midges in one process (issue 13).

``python benchmarks/bridge_throughput.py [N] [QOS] [out|in] [ROUNDS] [VERSION] [DELAY_MS]``
starts a central midge and an edge midge bridged to it (``bridge_protocol_version VERSION``,
mqttv50 by default; ``topic bench/# out QOS``, or ``in``) through a relay that delays each
direction by DELAY_MS milliseconds (default 0; a WAN between a site and its central broker),
publishes N messages (default 500, QoS 1) from one client without waiting for each
acknowledgement (at the edge for ``out``, at the central for ``in``), and prints how many
messages per second reach a subscriber on the other side: the median of ROUNDS runs (default
5), each with fresh brokers. Keep N under max_queued_messages (1000 by default): what waits
beyond it for the bridge is dropped, as for any client, and the count would never be reached
(the wait gives up after 60 s)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward bytes from ``reader`` to ``writer``, each chunk ``delay`` seconds later, in
    order (a link with that one-way latency and no bandwidth limit)."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, data = await chunks.get()
            if not data:
                writer.close()
                return
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)

    forwarding = asyncio.create_task(forward())
    while True:
        data = await reader.read(65536)
        chunks.put_nowait((loop.time() + delay, data))
        if not data:
            break
    await forwarding


async def relay(port: int, delay: float) -> asyncio.Server:
    """A TCP relay to 127.0.0.1:``port`` delaying each direction by ``delay`` seconds."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(
            _pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay), return_exceptions=True
        )

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def run(
    total: int, qos: int, direction: str = "out", version: str = "mqttv50", delay_ms: float = 0
) -> float:
    import midge
    from midge.client import Client
    from midge.config import ListenerConfig, parse_mosquitto_conf

    async with midge.Broker() as central:
        link = await relay(central.port, delay_ms / 1000)
        link_port = link.sockets[0].getsockname()[1]
        conf = parse_mosquitto_conf(
            f"connection central\naddress 127.0.0.1:{link_port}\n"
            f"bridge_protocol_version {version}\ntopic bench/# {direction} {qos}\n"
        )
        conf.listeners = [ListenerConfig(port=0, host="127.0.0.1")]
        conf.durability = "none"
        async with midge.Broker(conf) as edge:
            near, far = (edge, central) if direction == "out" else (central, edge)
            async with (
                Client(far.host, far.port, reconnect=False) as sink,
                Client(near.host, near.port, reconnect=False) as source,
            ):
                await sink.subscribe("bench/#", qos)
                await asyncio.sleep(1.0)  # the bridge connects
                got = 0

                async def receive() -> None:
                    nonlocal got
                    async for _ in sink.messages():
                        got += 1
                        if got == total:
                            return

                receiving = asyncio.create_task(receive())
                began = time.perf_counter()
                sends = [
                    asyncio.ensure_future(source.publish("bench/x", b"%d" % n, qos))
                    for n in range(total)
                ]
                await asyncio.wait_for(receiving, 60)
                elapsed = time.perf_counter() - began
                await asyncio.gather(*sends)
        link.close()
    return total / elapsed


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    qos = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    direction = sys.argv[3] if len(sys.argv) > 3 else "out"
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    version = sys.argv[5] if len(sys.argv) > 5 else "mqttv50"
    delay_ms = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    rates = [asyncio.run(run(total, qos, direction, version, delay_ms)) for _ in range(rounds)]
    print(
        f"bridge {direction} ({version}, {delay_ms:g} ms each way), QoS {qos}, {total} messages: "
        f"{statistics.median(rates):.0f} messages/s (median of {rounds}; "
        f"{min(rates):.0f}-{max(rates):.0f})"
    )


if __name__ == "__main__":
    main()
