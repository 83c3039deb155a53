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


class RedisCluster:
    """Three redis-server masters (cluster mode), each with ``replicas`` replicas, joined by
    ``redis-cli --cluster create``, on loopback ports whose cluster bus ports (+10000) are free
    too. A master that does not answer for ``node_timeout`` ms is failed over to a replica."""

    def __init__(self, replicas: int = 0, node_timeout: int = 15000) -> None:
        assert REDIS is not None and CLI is not None
        self.dir = tempfile.mkdtemp(prefix="midge-rcluster-")
        self.ports = _bus_free_ports(3 * (1 + replicas))
        self.procs: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            self.procs.append(
                subprocess.Popen(
                    [
                        REDIS,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--cluster-node-timeout",
                        str(node_timeout),
                        # A replica takes over however long ago it last heard its master
                        # (replication pings come every 10 s, longer than a short timeout).
                        "--cluster-replica-validity-factor",
                        "0",
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
            )
        for port in self.ports:
            _wait_ping(port)
        subprocess.run(
            [
                CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.state_ok() and all(self._synced(p) for p in self.ports):
                return
            time.sleep(0.1)
        raise AssertionError("the Redis Cluster did not reach cluster_state:ok, replicas synced")

    @staticmethod
    def _synced(port: int) -> bool:
        """A master, or a replica whose first sync with its master is done."""
        info = _command(port, "INFO", "replication")
        return b"role:master" in info or b"master_link_status:up" in info

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def kill_owner(self, key: str) -> int:
        """Kill the master that holds ``key`` (the others answer MOVED), once a replica has
        what it was written so far (WAIT); its port."""
        for port, proc in zip(self.ports, self.procs, strict=True):
            if proc.poll() is None and _command(port, "EXISTS", key) == b":1\r\n":
                assert _command(port, "WAIT", "1", "1500") == b":1\r\n"
                proc.kill()
                proc.wait(5)
                return port
        raise AssertionError(f"no master holds {key}")

    def state_ok(self) -> bool:
        """Whether every live node says the cluster is ok (every slot served)."""
        live = [p for p, proc in zip(self.ports, self.procs, strict=True) if proc.poll() is None]
        return all(b"cluster_state:ok" in _command(p, "CLUSTER", "INFO") for p in live)

    def masters_with_keys(self) -> int:
        """How many of the masters hold some key."""
        return sum(1 for p in self.ports if _command(p, "DBSIZE") != b":0\r\n")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


CLI = shutil.which("redis-cli")


def _command(port: int, *args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"".join(parts))
        return sock.recv(65536)


def _wait_ping(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if _command(port, "PING").startswith(b"+PONG"):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"redis-server on {port} did not answer")


def _bus_free_ports(n: int) -> list[int]:
    """``n`` ports below 55535 free on loopback, each with its +10000 bus port free too."""
    found: list[int] = []
    while len(found) < n:
        port = free_port()
        if port >= 55535 or port in found:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        found.append(port)
    return found


@pytest.fixture
def redis_cluster() -> Iterator[RedisCluster]:
    if CLI is None:
        pytest.skip("needs redis-cli (make debs: redis-server brings it)")
    cluster = RedisCluster()
    yield cluster
    cluster.close()


class RedisSentinel:
    """One Sentinel (``redis-server --sentinel``) watching ``master`` as service ``midge``;
    ``down_after``: how long (ms) the master may not answer before the Sentinel fails over to a
    replica."""

    def __init__(self, master: RedisServer, down_after: int = 30000) -> None:
        assert REDIS is not None
        self.dir = tempfile.mkdtemp(prefix="midge-sentinel-")
        self.port = free_port()
        conf = f"{self.dir}/sentinel.conf"
        with open(conf, "w") as f:
            f.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor midge 127.0.0.1 {master.port} 1\n"
                f"sentinel down-after-milliseconds midge {down_after}\n"
                "sentinel failover-timeout midge 10000\n"
            )
        self.proc = subprocess.Popen(
            [REDIS, conf, "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                answer = _command(self.port, "SENTINEL", "get-master-addr-by-name", "midge")
                if str(master.port).encode() in answer:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("the Sentinel did not name the master")

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/midge/0"

    def master_port(self) -> int:
        """The port of the master the Sentinel names now."""
        answer = _command(self.port, "SENTINEL", "get-master-addr-by-name", "midge")
        return int(answer.split(b"\r\n")[-2])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sentinel(redis: RedisServer) -> Iterator[RedisSentinel]:
    watcher = RedisSentinel(redis)
    yield watcher
    watcher.close()
