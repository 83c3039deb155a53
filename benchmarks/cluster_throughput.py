"""Messages per second between two cluster nodes (issue 15), next to the same on one node.

``python benchmarks/cluster_throughput.py [N] [QOS]`` starts Debian's redis-server on a free
port and two ``midge broker --cluster`` processes (nodes a and b, persistent sessions off:
``durability = "none"``), subscribes one client on node b, publishes N messages (default 2000,
QoS 1) from one client on node a without waiting for each acknowledgement, and prints how many
messages per second reach the subscriber; then the same with publisher and subscriber on node b.
One run on a machine shared with other work: a rough figure, not a benchmark row.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node(url: str, name: str, cwd: str) -> tuple[subprocess.Popen[str], int]:
    conf = Path(cwd) / f"{name}.toml"
    conf.write_text(
        f'cluster_redis = "{url}"\ncluster_node_id = "{name}"\ndurability = "none"\n'
        "allow_anonymous = true\n"
        '[[listener]]\nport = 0\naddress = "127.0.0.1"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "midge", "broker", "-c", str(conf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.match(r"midge: listening on 127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, int(match[1])
    raise RuntimeError(f"node {name} did not start")


async def _rate(pub_port: int, sub_port: int, total: int, qos: int) -> float:
    from midge.client import Client

    async with (
        Client("127.0.0.1", sub_port, reconnect=False) as sink,
        Client("127.0.0.1", pub_port, reconnect=False) as source,
    ):
        await sink.subscribe("bench/#", qos)
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
            asyncio.ensure_future(source.publish("bench/x", b"%d" % n, qos)) for n in range(total)
        ]
        await asyncio.wait_for(receiving, 120)
        elapsed = time.perf_counter() - began
        await asyncio.gather(*sends)
    return total / elapsed


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    qos = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        sys.exit("needs redis-server (make debs)")
    with tempfile.TemporaryDirectory(prefix="midge-cluster-bench-") as cwd:
        port = _free_port()
        redis = subprocess.Popen(
            [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            cwd=cwd,
        )
        procs: list[subprocess.Popen[str]] = []
        try:
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{port}/0"
            a, a_port = _node(url, "a", cwd)
            procs.append(a)
            b, b_port = _node(url, "b", cwd)
            procs.append(b)
            cross = asyncio.run(_rate(a_port, b_port, total, qos))
            local = asyncio.run(_rate(b_port, b_port, total, qos))
            print(f"QoS {qos}, {total} messages: across nodes {cross:.0f} messages/s")
            print(f"QoS {qos}, {total} messages: on one node {local:.0f} messages/s")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            redis.kill()
            redis.wait(5)


if __name__ == "__main__":
    main()
