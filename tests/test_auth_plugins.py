"""Pluggable authentication and authorization (issue 6): the HTTP backend against a local HTTP
server the test starts, and a Python plugin loaded by dotted path; decisions that take time
(the client's packets wait, in order), cached decisions, timeouts and failures that refuse.

Real sockets throughout: our raw client for exact reason codes, ``mosquitto_pub``/``mosquitto_sub``
against a ``midge broker`` process for the end-to-end runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from midge.codec.packets import Puback, Publish
from midge.codec.reasons import ConnackV3, Reason
from tests.conftest import RunningBroker
from tests.interop.clients import mosquitto_pub
from tests.procbroker import ProcBroker, free_port
from tests.rawclient import RawClient

ROOT = Path(__file__).resolve().parent.parent
V5, V311 = 5, 4


class AuthService:
    """A tiny web service in a thread: ``/auth`` knows ``users``; ``/acl`` allows topics under
    ``<username>/``; ``delay`` seconds before each answer; every request body is recorded."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.delay = 0.0
        self.requests: list[tuple[str, dict[str, Any]]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.requests.append((self.path, body))
                time.sleep(service.delay)
                if self.path == "/auth":
                    ok = service.users.get(body.get("username") or "") == body.get("password")
                elif self.path == "/acl":
                    ok = str(body["topic"]).startswith(f"{body.get('username')}/")
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps({"result": "allow" if ok else "deny"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[AuthService]:
    s = AuthService({"alice": "wonder", "bob": "builder"})
    yield s
    s.close()


def login(client: RawClient, user: str, password: str, cid: str = "") -> int:
    return client.connect(cid or f"c-{user}", username=user, password=password.encode()).reason_code


@pytest.mark.parametrize("version", [V311, V5])
def test_http_authentication(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    service: AuthService,
    version: int,
) -> None:
    broker = make_broker(auth_http_url=service.url)
    assert login(clients(broker, version), "alice", "wonder") == 0
    bad = Reason.BAD_USER_NAME_OR_PASSWORD if version == V5 else ConnackV3.BAD_USERNAME_OR_PASSWORD
    wrong = clients(broker, version)
    assert login(wrong, "alice", "nope") == bad
    assert wrong.wait_closed(2)
    assert login(clients(broker, version), "mallory", "x") == bad
    body = service.requests[0][1]
    assert body["username"] == "alice" and body["password"] == "wonder"
    assert body["clientid"] == "c-alice" and body["protocol"] == version


@pytest.mark.parametrize("version", [V311, V5])
def test_http_failures_refuse(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    service: AuthService,
    version: int,
) -> None:
    """Fail closed: a service that is down, or slower than auth_http_timeout, refuses."""
    refused = Reason.NOT_AUTHORIZED if version == V5 else ConnackV3.NOT_AUTHORIZED
    down = make_broker(auth_http_url=f"http://127.0.0.1:{free_port()}")
    assert login(clients(down, version), "alice", "wonder") == refused
    slow = make_broker(auth_http_url=service.url, auth_http_timeout=0.3)
    service.delay = 1.0
    started = time.monotonic()
    assert login(clients(slow, version), "alice", "wonder") == refused
    assert time.monotonic() - started < 0.9  # the timeout, not the service, decided


@pytest.mark.parametrize("version", [V311, V5])
def test_http_authorization_and_its_cache(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    service: AuthService,
    version: int,
) -> None:
    broker = make_broker(auth_http_url=service.url, auth_cache_ttl=60)
    sub = clients(broker, version)
    login(sub, "alice", "wonder", "sub")
    assert sub.subscribe("alice/#", 1).reason_codes == [1]
    denied_sub = Reason.NOT_AUTHORIZED if version == V5 else 0x80
    assert sub.subscribe("bob/#", 1).reason_codes == [denied_sub]
    pub = clients(broker, version)
    login(pub, "alice", "wonder", "pub")
    for i in range(5):
        ack = pub.publish("alice/t", b"%d" % i, qos=1)
        assert isinstance(ack, Puback) and ack.reason_code == 0
    denied = pub.publish("bob/t", b"no", qos=1)
    assert isinstance(denied, Puback)
    assert denied.reason_code == (Reason.NOT_AUTHORIZED if version == V5 else 0)
    got = []
    for _ in range(5):
        p = sub.expect(Publish)
        sub.ack(p)
        got.append(p.payload)
    assert got == [b"0", b"1", b"2", b"3", b"4"]
    sub.expect_nothing(0.3)  # bob/t was not routed
    acl = [b for p, b in service.requests if p == "/acl"]
    assert sum(1 for b in acl if b["action"] == "publish" and b["topic"] == "alice/t") == 1
    assert {(b["action"], b["topic"]) for b in acl} == {
        ("subscribe", "alice/#"),
        ("subscribe", "bob/#"),
        ("publish", "alice/t"),
        ("publish", "bob/t"),
    }


def test_packets_wait_in_order_while_a_decision_is_pending(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    service: AuthService,
) -> None:
    """Each new topic costs a slow round trip; the packets sent meanwhile wait behind it and
    come out in the order they were sent (MQTT-4.6.0-6: ordered topic)."""
    broker = make_broker(auth_http_url=service.url)
    sub = clients(broker)
    login(sub, "alice", "wonder", "sub")
    sub.subscribe("alice/#", 0)
    pub = clients(broker)
    login(pub, "alice", "wonder", "pub")
    service.delay = 0.2
    topics = ["alice/a", "alice/b", "alice/a", "alice/c", "alice/b"]
    for i, topic in enumerate(topics):
        pub.send(Publish(topic, b"%d" % i))
    got = [sub.expect(Publish, timeout=5) for _ in topics]
    assert [(p.topic, p.payload) for p in got] == [(t, b"%d" % i) for i, t in enumerate(topics)]


@pytest.mark.parametrize("version", [V311, V5])
def test_a_publish_waiting_for_a_decision_takes_one_rate_token(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    service: AuthService,
    version: int,
) -> None:
    """A PUBLISH that waits for a pending authorization resumes where it stopped: it is counted
    once against max_publish_rate (a second's worth is one token here), not again when
    decided."""
    broker = make_broker(auth_http_url=service.url, auth_cache_ttl=60, max_publish_rate=1)
    pub = clients(broker, version)
    login(pub, "alice", "wonder", "pub")
    service.delay = 0.05
    ack = pub.publish("alice/t", b"once", qos=1)
    assert isinstance(ack, Puback)
    assert ack.reason_code == (Reason.NO_MATCHING_SUBSCRIBERS if version == V5 else 0)
    core = broker.server.broker
    assert core is not None
    assert broker.call(lambda: core.stats.limited_publish_rate) == 0
    assert service.count("/acl") == 1


def test_python_plugin_in_process(
    make_broker: Callable[..., RunningBroker], clients: Callable[..., RawClient]
) -> None:
    broker = make_broker(
        auth_python="tests.authplugin:create",
        auth_python_options={"users": "alice:wonder", "prefix": "rooms/", "delay": "0.05"},
    )
    c = clients(broker)
    assert login(c, "alice", "wonder") == 0
    assert c.subscribe("rooms/alice/#").reason_codes == [0]
    assert c.subscribe("rooms/bob/#").reason_codes == [Reason.NOT_AUTHORIZED]
    assert login(clients(broker), "alice", "bad") == Reason.BAD_USER_NAME_OR_PASSWORD


def test_python_plugin_with_mosquitto_clients(tmp_path: Path) -> None:
    """A real ``midge broker`` loading the plugin named in mosquitto.conf, driven by
    ``mosquitto_pub``/``mosquitto_sub`` with ``-u``/``-P``."""
    if not shutil.which("mosquitto_pub"):
        pytest.skip("mosquitto-clients not installed (make test installs them)")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "auth_python tests.authplugin:create\n"
        "auth_python_opt_users alice:wonder,bob:builder\n"
        "auth_python_opt_prefix rooms/\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with ProcBroker(("-c", str(conf)), env=env) as proc:
        proc.wait_listening()
        common = ["-h", "127.0.0.1", "-p", str(port), "-V", "5"]
        sub = subprocess.Popen(
            [
                "mosquitto_sub",
                *common,
                "-u",
                "alice",
                "-P",
                "wonder",
                "-t",
                "rooms/alice/#",
                "-C",
                "1",
                "-W",
                "10",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(0.5)
            mosquitto_pub(
                port,
                "rooms/alice/x",
                "-u",
                "alice",
                "-P",
                "wonder",
                version=5,
                message="hello",
                qos=1,
            )
            out, _ = sub.communicate(timeout=10)
            assert out.strip() == "hello"
        finally:
            sub.kill()
            sub.wait()
        bad = mosquitto_pub(
            port,
            "rooms/alice/x",
            "-u",
            "alice",
            "-P",
            "wrong",
            version=5,
            message="no",
            must_succeed=False,
        )
        assert bad.returncode != 0
        assert "bad user name or password" in bad.stderr.decode().lower()


def test_a_plugin_that_cannot_load_stops_the_broker(tmp_path: Path) -> None:
    conf = tmp_path / "midge.toml"
    conf.write_text('auth_python = "no_such_module_here:create"\n')
    from tests.procbroker import run_midge

    done = run_midge(["broker", "-c", str(conf), "--port", "0"])
    assert done.returncode == 1
    assert "no_such_module_here" in done.stderr and "Traceback" not in done.stderr
