"""How long an embedded midge broker takes to start and serve its first client (issue 12).

``python benchmarks/embed_startup.py [N]`` starts ``midge.Broker()`` N times (default 50) in one
process and prints the median and 90th percentile of: start until listening, and start until a
client has connected, published QoS 1 and had its PUBACK (midge.client). The first start of a
process (imports) is reported apart.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time


async def once() -> tuple[float, float]:
    import midge
    from midge.client import Client

    began = time.perf_counter()
    async with midge.Broker() as broker:
        listening = time.perf_counter() - began
        async with Client(broker.host, broker.port, reconnect=False) as client:
            await client.publish("startup", b"", qos=1)
        served = time.perf_counter() - began
    return listening, served


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    first = asyncio.run(once())
    samples = [asyncio.run(once()) for _ in range(runs)]

    def ms(values: list[float]) -> str:
        cuts = statistics.quantiles(values, n=10)
        return f"median {statistics.median(values) * 1e3:.1f} ms, p90 {cuts[-1] * 1e3:.1f} ms"

    print(
        f"first start in this process (imports included): {first[0] * 1e3:.0f} ms listening, "
        f"{first[1] * 1e3:.0f} ms first PUBACK"
    )
    print(f"listening:  {ms([s[0] for s in samples])}  ({runs} starts)")
    print(f"first PUBACK: {ms([s[1] for s in samples])}")


if __name__ == "__main__":
    main()
