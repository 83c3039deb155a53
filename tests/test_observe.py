"""The ``protocol http`` listener (midge.observe): /metrics after a known workload, the admin
API with real paho clients connected, its credentials, ``midge ctl``, the Grafana dashboard
against the real /metrics, and the configuration of the listener.

Each broker runs on real sockets in a thread (tests/conftest.py's ``make_broker``); HTTP goes
through httpx, MQTT through paho.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client.parser import text_string_to_metric_families

from midge.auth.passwd import hash_password
from midge.config import ConfigError, ListenerConfig, parse_mosquitto_conf, parse_toml
from tests.conftest import RunningBroker

PASSWORD = "s3cret"
AUTH = ("admin", PASSWORD)
HASH = hash_password(PASSWORD.encode()).encode()


def http_url(broker: RunningBroker) -> str:
    server = broker.server
    index = server.protocols.index("http")
    host, port = server.addresses[index][:2]
    return f"http://{host}:{port}"


def start(make_broker: Callable[..., RunningBroker], **overrides: Any) -> RunningBroker:
    overrides.setdefault(
        "listeners",
        [ListenerConfig(port=0, host="127.0.0.1"), ListenerConfig(port=0, protocol="http")],
    )
    overrides.setdefault("local_only", False)
    overrides.setdefault("allow_anonymous", True)
    overrides.setdefault("admin_user", "admin")
    overrides.setdefault("admin_password_hash", HASH)
    return make_broker(**overrides)


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


class Paho:
    """A connected paho client that records what it receives."""

    def __init__(
        self,
        broker: RunningBroker,
        client_id: str,
        version: MQTTProtocolVersion = paho.MQTTv5,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.received: list[paho.MQTTMessage] = []
        self.client.on_message = lambda _c, _u, msg: self.received.append(msg)
        self.disconnected: list[Any] = []
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnected.append(rc)
        self.connack: list[Any] = []
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.append(rc)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_for(lambda: bool(self.connack))
        if username is None or password != "wrong":
            assert not self.connack[0].is_failure, self.connack

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def pahos() -> Iterator[Callable[..., Paho]]:
    made: list[Paho] = []

    def make(*args: Any, **kwargs: Any) -> Paho:
        made.append(Paho(*args, **kwargs))
        return made[-1]

    yield make
    for p in made:
        p.client.loop_stop()
        p.client.disconnect()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    text = httpx.get(url + "/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_after_a_known_workload(
    make_broker: Callable[..., RunningBroker], pahos: Callable[..., Paho], tmp_path: Path
) -> None:
    passwords = tmp_path / "passwd"
    passwords.write_text(f"user:{hash_password(b'pw').encode()}\n")
    broker = start(
        make_broker,
        password_file=str(passwords),
        allow_anonymous=False,
        data_dir=str(tmp_path),
        durability="os",
    )
    url = http_url(broker)
    sub = pahos(broker, "sub", username="user", password="pw")
    sub.client.subscribe("w/#", qos=1)
    core = broker.server.broker
    assert core is not None
    wait_for(lambda: broker.call(lambda: core.tree.count) == 1)
    pub = pahos(broker, "pub", version=paho.MQTTv311, username="user", password="pw")
    for _ in range(3):
        pub.client.publish("w/a", b"12345", qos=0)
    for _ in range(2):
        pub.client.publish("w/b", b"0123456789", qos=1).wait_for_publish(5)
    pub.client.publish("nobody/x", b"x", qos=0)
    pub.client.publish("w/r", b"kept", qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: len(sub.received) == 6)
    refused = Paho(broker, "bad", username="user", password="wrong")
    assert refused.connack[0].is_failure
    refused.client.loop_stop()
    pub.close()
    wait_for(lambda: scrape(url)[("midge_clients_connected", ())] == 1)
    m = scrape(url)

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert value("midge_publish_received_total", qos="0") == 4
    assert value("midge_publish_received_bytes_total", qos="0") == 3 * 5 + 1
    assert value("midge_publish_received_total", qos="1") == 3
    assert value("midge_publish_received_bytes_total", qos="1") == 2 * 10 + 4
    assert value("midge_publish_received_total", qos="2") == 0
    assert value("midge_publish_sent_total", qos="0") == 3
    assert value("midge_publish_sent_bytes_total", qos="0") == 15
    assert value("midge_publish_sent_total", qos="1") == 3
    assert value("midge_publish_sent_bytes_total", qos="1") == 24
    assert value("midge_dropped_messages_total", reason="no_subscribers") == 1
    assert value("midge_dropped_messages_total", reason="queue_full") == 0
    assert value("midge_connects_total") == 3
    assert value("midge_sockets_accepted_total") == 3
    assert value("midge_refusals_total", reason="not_authorized") == 1  # as Mosquitto: 0x87
    assert value("midge_auth_failures_total", backend="password_file") == 1
    assert value("midge_client_disconnects_total", reason="normal_disconnection") == 1
    assert value("midge_clients_connected") == 1
    assert value("midge_sessions") == 1
    assert value("midge_subscriptions") == 1
    # $SYS/broker/... is retained too (as in Mosquitto): those, plus w/r.
    sys_retained = broker.call(
        lambda: [m for m in core.retained.all() if m.topic.startswith("$SYS")]
    )
    assert value("midge_retained_messages") == len(sys_retained) + 1
    assert value("midge_retained_bytes") == sum(len(m.payload) for m in sys_retained) + 4
    assert value("midge_inflight_messages") == 0
    assert value("midge_queued_messages") == 0
    mqtt_port = str(broker.port)
    assert value("midge_listener_accepted_total", listener=mqtt_port) == 3
    assert value("midge_listener_connections", listener=mqtt_port) == 1
    assert value("midge_load_per_minute", counter="connections", window="1min") >= 0
    # The SQLite store: its size, and the commit latency histogram (one commit in 8 timed).
    assert value("midge_store_size_bytes") > 0
    assert value("midge_store_commit_seconds_bucket", le="+Inf") == value(
        "midge_store_commit_seconds_count"
    )
    text = httpx.get(url + "/metrics").text
    assert "# TYPE midge_publish_received_total counter" in text


def test_the_grafana_dashboard_uses_only_metrics_that_exist(
    make_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    broker = start(make_broker, data_dir=str(tmp_path), durability="os")
    text = httpx.get(http_url(broker) + "/metrics").text
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
    # A labelled counter with no sample yet (no refusal so far) is declared by its TYPE line.
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
    dashboard = json.loads(resources.files("midge").joinpath("data/grafana.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    promql = {
        "sum", "rate", "by", "histogram_quantile", "irate", "increase", "avg", "max", "min",
        "without", "le",
    }  # fmt: skip
    used = set()
    for expr in exprs:
        without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
        for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels):
            if word not in promql:
                used.add(word)
    missing = sorted(used - names - {"qos", "reason", "backend", "limit", "listener"})
    assert not missing, f"the dashboard uses metrics /metrics does not have: {missing}"
    assert {m for m in used if m.startswith("midge_")} <= names


def test_admin_api_with_paho_clients(
    make_broker: Callable[..., RunningBroker], pahos: Callable[..., Paho]
) -> None:
    broker = start(make_broker)
    url = http_url(broker)
    api = httpx.Client(base_url=url, auth=AUTH, timeout=10)
    # Open without credentials: /metrics, health, readiness, the OpenAPI document.
    assert httpx.get(url + "/api/health").json() == {"status": "ok"}
    assert httpx.get(url + "/api/ready").json() == {"status": "ready"}
    assert httpx.get(url + "/api/openapi.json").json()["openapi"].startswith("3.")
    # Everything else needs them.
    for method, path in (("GET", "/api/clients"), ("POST", "/api/reload")):
        refused = httpx.request(method, url + path)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
        wrong = httpx.request(method, url + path, auth=("admin", "nope"))
        assert wrong.status_code == 401
        other = httpx.request(method, url + path, auth=("root", PASSWORD))
        assert other.status_code == 401

    a = pahos(broker, "alpha", version=paho.MQTTv5)
    a.client.subscribe("t/#", qos=1)
    b = pahos(broker, "beta", version=paho.MQTTv311)
    persistent = pahos(broker, "gamma", version=paho.MQTTv311)
    persistent.client.subscribe("q/#", qos=1)
    wait_for(lambda: api.get("/api/clients/gamma").json()["subscriptions"] == 1)
    wait_for(lambda: api.get("/api/clients/alpha").json()["subscriptions"] == 1)

    page = api.get("/api/clients").json()
    assert page["total"] == 3
    assert [c["client_id"] for c in page["items"]] == ["alpha", "beta", "gamma"]
    assert page["items"][0]["protocol_version"] == 5
    assert page["items"][1]["protocol_version"] == 4
    assert (
        api.get("/api/clients", params={"limit": 1, "offset": 1}).json()["items"][0]["client_id"]
        == "beta"
    )
    assert [
        c["client_id"] for c in api.get("/api/clients", params={"search": "mm"}).json()["items"]
    ] == ["gamma"]
    assert api.get("/api/clients", params={"limit": 0}).status_code == 400
    assert api.get("/api/clients", params={"state": "x"}).status_code == 400

    details = api.get("/api/clients/alpha").json()
    assert details["connected"] is True
    assert details["subscription_list"] == [
        {
            "filter": "t/#",
            "qos": 1,
            "no_local": False,
            "retain_as_published": False,
            "retain_handling": 0,
            "subscription_id": None,
        }
    ]
    assert api.get("/api/clients/nobody").status_code == 404

    # Publish through the API: alpha receives it.
    done = api.post("/api/publish", json={"topic": "t/1", "payload": "hello", "qos": 1})
    assert done.json() == {"matched": True}
    wait_for(lambda: [m.payload for m in a.received] == [b"hello"])
    assert api.post("/api/publish", json={"topic": "t/#"}).status_code == 400
    assert api.post("/api/publish", json={"topic": "$SYS/x"}).status_code == 400
    assert api.post("/api/publish", content=b"not json").status_code == 400

    # Retained: publish one, list, get, delete.
    api.post("/api/publish", json={"topic": "r/1", "payload_base64": "AAE=", "retain": True})
    listed = api.get("/api/retained").json()
    assert listed["total"] == 1
    assert listed["items"][0] == {
        "topic": "r/1",
        "qos": 0,
        "size": 2,
        "payload": "\x00\x01",
        "payload_base64": "AAE=",
    }
    assert api.get("/api/retained/message", params={"topic": "r/1"}).json()["size"] == 2
    assert api.delete("/api/retained/message", params={"topic": "r/1"}).status_code == 204
    assert api.get("/api/retained/message", params={"topic": "r/1"}).status_code == 404
    assert api.get("/api/retained").json()["total"] == 0
    assert api.get("/api/retained", params={"filter": "a/#/b"}).status_code == 400

    # Disconnect: the v5 client gets DISCONNECT 0x98 (administrative action).
    assert api.post("/api/clients/alpha/disconnect", json={"reason_code": 0x98}).status_code == 204
    wait_for(lambda: bool(a.disconnected))
    assert a.disconnected[0] == 0x98
    bad = api.post("/api/clients/beta/disconnect", json={"reason_code": 3})
    assert bad.status_code == 400
    assert api.post("/api/clients/beta/disconnect").status_code == 204
    wait_for(lambda: bool(b.disconnected))
    # A session with a client connected is not deleted; once it is gone, it is.
    assert api.delete("/api/sessions/gamma").status_code == 409
    # A persistent session (clean session false), left with a message queued:
    keep = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="delta", protocol=paho.MQTTv311,
        clean_session=False,
    )  # fmt: skip
    keep.connect(broker.host, broker.port)
    keep.loop_start()
    keep.subscribe("d/#", qos=1)
    wait_for(lambda: api.get("/api/clients/delta").json().get("subscriptions") == 1)
    keep.disconnect()
    keep.loop_stop()
    wait_for(lambda: api.get("/api/clients/delta").json()["connected"] is False)
    api.post("/api/publish", json={"topic": "d/1", "payload": "queued", "qos": 1})
    held = api.get("/api/clients/delta").json()
    assert held["queued"] == 1
    assert held["queue"] == [{"topic": "d/1", "qos": 1, "size": 6}]
    assert api.get("/api/clients", params={"state": "disconnected"}).json()["total"] >= 1
    assert api.delete("/api/sessions/delta").status_code == 204
    assert api.get("/api/clients/delta").status_code == 404
    assert api.delete("/api/sessions/delta").status_code == 404
    # Reload (as SIGHUP): nothing to reload here.
    assert api.post("/api/reload").json() == {"reloaded": False}


def test_the_api_is_closed_without_admin_credentials(
    make_broker: Callable[..., RunningBroker],
) -> None:
    broker = start(make_broker, admin_user=None, admin_password_hash=None)
    url = http_url(broker)
    assert httpx.get(url + "/api/clients", auth=AUTH).status_code == 403
    assert httpx.get(url + "/api/health").status_code == 200
    assert httpx.get(url + "/metrics").status_code == 200
    # Listening on the loopback: a protocol http listener without an address.
    assert broker.server.addresses[broker.server.protocols.index("http")][0] == "127.0.0.1"


def ctl(url: str, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "midge", "ctl", "--url", url, "--user", "admin", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"MIDGE_ADMIN_PASSWORD": password, "PATH": "/usr/bin:/bin"},
    )


def test_midge_ctl(make_broker: Callable[..., RunningBroker], pahos: Callable[..., Paho]) -> None:
    broker = start(make_broker)
    url = http_url(broker)
    client = pahos(broker, "ctl-client", version=paho.MQTTv5)
    client.client.subscribe("c/#", qos=0)
    core = broker.server.broker
    assert core is not None
    wait_for(lambda: broker.call(lambda: core.tree.count) == 1)
    done = ctl(url, "clients")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ctl-client\tconnected\tv5\t")
    assert json.loads(ctl(url, "client", "ctl-client").stdout)["subscriptions"] == 1
    assert ctl(url, "publish", "-r", "c/kept", "value").stdout.strip() == "delivered"
    wait_for(lambda: [m.payload for m in client.received] == [b"value"])
    assert ctl(url, "retained").stdout.strip() == "c/kept\tqos=0\tvalue"
    assert ctl(url, "retained", "--delete", "c/kept").returncode == 0
    assert ctl(url, "retained").stdout.strip() == ""
    assert ctl(url, "retained", "--delete", "c/kept").returncode == 1
    assert ctl(url, "kick", "ctl-client").returncode == 0
    wait_for(lambda: client.disconnected == [0x98])
    assert ctl(url, "reload").returncode == 1  # nothing to reload
    assert ctl(url, "health").stdout.strip() == "ok"
    assert "midge_publish_received_total" in ctl(url, "metrics").stdout
    refused = ctl(url, "clients", password="wrong")
    assert refused.returncode == 1
    assert "401" in refused.stderr
    unreachable = ctl("http://127.0.0.1:1", "clients")
    assert unreachable.returncode == 2


def test_the_http_listener_in_both_configuration_formats(tmp_path: Path) -> None:
    conf = tmp_path / "m.conf"
    conf.write_text(
        f"listener 1883\nlistener 9100\nprotocol http\nadmin_user admin\n"
        f"admin_password_hash {HASH}\n"
    )
    config = parse_mosquitto_conf(conf.read_text(), str(conf))
    assert [(lst.port, lst.protocol) for lst in config.listeners] == [
        (1883, "mqtt"),
        (9100, "http"),
    ]
    assert config.admin_user == "admin"
    toml = tmp_path / "m.toml"
    toml.write_text(
        f'admin_user = "admin"\nadmin_password_hash = "{HASH}"\n'
        '[[listener]]\nport = 1883\n[[listener]]\nport = 9100\nprotocol = "http"\n'
    )
    config = parse_toml(toml.read_text(), str(toml))
    assert [lst.protocol for lst in config.listeners] == ["mqtt", "http"]
    bad = tmp_path / "bad.conf"
    bad.write_text("admin_password_hash plain\n")
    with pytest.raises(ConfigError, match="invalid password hash"):
        parse_mosquitto_conf(bad.read_text(), str(bad))


def test_an_https_listener(make_broker: Callable[..., RunningBroker], tmp_path: Path) -> None:
    from tests.security.certs import Pki

    pki = Pki(tmp_path)
    https = ListenerConfig(
        port=0, protocol="http", certfile=pki.server_cert, keyfile=pki.server_key
    )
    broker = start(make_broker, listeners=[ListenerConfig(port=0, host="127.0.0.1"), https])
    url = http_url(broker).replace("http://", "https://")
    answer = httpx.get(
        url + "/api/clients", auth=AUTH, verify=ssl.create_default_context(cafile=pki.cafile)
    )
    assert answer.json()["total"] == 0
    with pytest.raises(httpx.ConnectError):  # certificate from an unknown CA
        httpx.get(url + "/api/health")


def test_midge_broker_with_workers_serves_http_from_worker_0(tmp_path: Path) -> None:
    """The command line: the listener lines name the protocol; with --workers 2 only worker 0
    binds the http listener, and serves readiness and /metrics there."""
    from tests.procbroker import ProcBroker, free_port

    conf = tmp_path / "m.conf"
    http_port = free_port()
    conf.write_text(
        f"listener 0 127.0.0.1\nallow_anonymous true\nlistener {http_port}\nprotocol http\n"
        f"admin_user admin\nadmin_password_hash {HASH}\n"
    )
    broker = ProcBroker(("-c", str(conf), "--workers", "2"), listeners=2, cwd=tmp_path)
    try:
        listeners = broker.wait_listening()
        assert [(lst.host, lst.protocol) for lst in listeners] == [
            ("127.0.0.1", "mqtt"),
            ("127.0.0.1", "http"),
        ]
        assert listeners[1].port == http_port
        url = f"http://127.0.0.1:{http_port}"
        assert httpx.get(url + "/api/ready").json() == {"status": "ready"}
        assert "midge_clients_connected" in httpx.get(url + "/metrics").text
        assert broker.stop() == 0
    finally:
        broker.close()


def test_scram_failures_are_counted_by_backend(
    make_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    """An MQTT 5 SCRAM exchange that fails (wrong password: 0x87) counts as the scram
    backend's failure, next to the password file's refusals of plain CONNECTs."""
    import asyncio

    from midge.auth.scram_cli import set_user
    from midge.client import Client, MQTTError, ScramAuth

    scram = str(tmp_path / "users.scram")
    set_user(scram, "alice", "wonderland", create=True)
    broker = start(make_broker, scram_file=scram, allow_anonymous=False)
    url = http_url(broker)

    async def connect(password: str) -> int:
        client = Client(
            broker.host, broker.port, reconnect=False, auth=ScramAuth("alice", password)
        )
        try:
            async with client:
                return 0
        except MQTTError as exc:
            return exc.reason_code

    assert asyncio.run(connect("wonderland")) == 0
    assert asyncio.run(connect("wrong")) == 0x87
    assert asyncio.run(connect("wrong again")) == 0x87
    metrics = scrape(url)
    assert metrics[("midge_auth_failures_total", (("backend", "scram"),))] == 2


def test_admin_credentials_are_hashed_once_per_header_that_passed() -> None:
    """The admin API's Basic check remembers a header that passed (a dashboard sends the same
    one every second: PBKDF2 once, not per request); a wrong one is hashed every time and
    never let in by what was remembered."""
    import base64

    from midge.auth.passwd import PasswordHash
    from midge.observe.http import AdminAuth

    hashed: list[bytes] = []

    class Counting(PasswordHash):
        def verify(self, password: bytes) -> bool:
            hashed.append(password)
            return super().verify(password)

    auth = AdminAuth("admin", hash_password(PASSWORD.encode()).encode())
    real = auth.hash
    assert real is not None
    auth.hash = Counting(real.kind, real.iterations, real.salt, real.digest)

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    good, wrong = basic("admin", PASSWORD), basic("admin", "nope")
    assert [auth.check(good) for _ in range(5)] == [True] * 5
    assert len(hashed) == 1
    assert [auth.check(wrong) for _ in range(3)] == [False] * 3
    assert len(hashed) == 4
    assert not auth.check(basic("root", PASSWORD))
    assert not auth.check(good + "x")
    assert auth.check(good)
