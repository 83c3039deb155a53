"""Fixtures of the cluster tests: a real redis-server (Debian's) on a free loopback port in a
temporary directory, and real ``midge broker --cluster`` node processes on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.procbroker import ProcBroker, free_port
from tests.rawclient import RawClient

REDIS = shutil.which("redis-server")

pytestmark = pytest.mark.skipif(REDIS is None, reason="needs redis-server (make debs)")


class RedisServer:
    """redis-server on 127.0.0.1:``port``, nothing saved to disk; stoppable and restartable."""

    def __init__(self) -> None:
        assert REDIS is not None, "redis-server is not installed (make debs)"
        self.dir = tempfile.mkdtemp(prefix="midge-redis-")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS is not None
        self.proc = subprocess.Popen(
            [
                REDIS,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return
            assert self.proc.poll() is None, "redis-server exited"
            time.sleep(0.05)
        raise AssertionError("redis-server did not answer PING within 10 s")

    def command(self, *args: str) -> bytes:
        """One command over a raw RESP connection (the tests' own look into Redis)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)

    def ping(self) -> bool:
        try:
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def node(redis: RedisServer) -> Iterator[Callable[..., ProcBroker]]:
    """``node(NAME, *extra)``: a ``midge broker --cluster`` process named NAME, listening."""
    started: list[ProcBroker] = []

    def run(name: str, *extra: str) -> ProcBroker:
        proc = ProcBroker(
            (
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--cluster",
                redis.url,
                "--node-id",
                name,
                *extra,
            )
        )
        started.append(proc)
        proc.wait_listening()
        return proc

    yield run
    for proc in started:
        proc.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., RawClient]]:
    """``connect(node, client_id, version=4, **connect_fields)``: a connected RawClient."""
    opened: list[RawClient] = []

    def connect(proc: ProcBroker, client_id: str, version: int = 4, **fields: Any) -> RawClient:
        client = RawClient(proc.host, proc.port, version=version)
        opened.append(client)
        connack = client.connect(client_id, **fields)
        assert connack.reason_code == 0, connack
        return client

    yield connect
    for client in opened:
        client.close()
