"""Issue 13: the PROXY protocol (``enable_proxy_protocol 1|2``) on real sockets.

One in-process broker with a listener of each kind is given headers the test builds (v1 TCP4,
TCP6, UNKNOWN; v2 PROXY and LOCAL with TLVs; malformed ones; headers split across TCP
segments), and is then put behind a real HAProxy (Debian ``haproxy``) with ``send-proxy``,
``send-proxy-v2`` and ``send-proxy-v2-ssl-cn``, with paho-mqtt clients connecting through it.

What midge saw is read where an operator or a plugin would read it: the "New client connected ...
from ADDRESS" log line, and the ``peer`` and username an authentication layer is given.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from midge.auth.base import Authenticator, Capability, ConnectRequest
from midge.codec.packets import Connack
from midge.codec.reasons import Reason
from midge.config import ConfigError, ListenerConfig, parse_mosquitto_conf, parse_toml
from midge.transport.proxy import V2_SIGNATURE
from tests.docs_example import blocks, renumber, run_shell_block
from tests.procbroker import free_port
from tests.rawclient import RawClient
from tests.security.certs import Pki, name
from tests.unit.test_proxy_header import ssl_tlv, tlv, v2

pytestmark = pytest.mark.timeout(90)

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)


class Recorder(Authenticator):
    """Accepts everyone and remembers what each CONNECT looked like, client id -> (peer,
    username), as an authentication plugin sees them; and the username each SUBSCRIBE is
    checked for (a client whose certificate names it is not asked to authenticate)."""

    provides = frozenset({Capability.CONNECT, Capability.SUBSCRIBE})

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, str | None]] = {}
        self.users: dict[str, str | None] = {}
        self.lock = threading.Lock()

    def can_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        with self.lock:
            self.users[client_id] = username
        return True

    def authenticate(self, request: ConnectRequest) -> int:
        with self.lock:
            self.seen[request.client_id] = (request.peer, request.username)
        return Reason.SUCCESS

    def wait(self, client_id: str, timeout: float = 5.0) -> tuple[str, str | None]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if client_id in self.seen:
                    return self.seen[client_id]
            time.sleep(0.02)
        raise AssertionError(f"{client_id} never authenticated")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("proxy-pki"))


class Proxied:
    """The broker under test: its listeners' ports by name, and the Recorder."""

    def __init__(self, running: Any, recorder: Recorder) -> None:
        self.running = running
        self.recorder = recorder
        ports = [int(a[1]) for a in running.server.addresses]
        self.v1, self.v2, self.v2tls, self.v1tls = ports

    def raw(self, port: int, version: int = 5) -> RawClient:
        return RawClient("127.0.0.1", port, version=version)


@pytest.fixture
def proxied(make_broker: Callable[..., Any], pki: Pki) -> Proxied:
    recorder = Recorder()
    listeners = [
        ListenerConfig(port=0, host="127.0.0.1", enable_proxy_protocol=1),
        ListenerConfig(port=0, host="127.0.0.1", enable_proxy_protocol=2),
        # The proxy terminates TLS and says so in its v2 header.
        ListenerConfig(
            port=0,
            host="127.0.0.1",
            enable_proxy_protocol=2,
            proxy_protocol_v2_require_tls=True,
            require_certificate=True,
            use_identity_as_username=True,
        ),
        # The proxy passes TLS through: the header, then midge's own TLS handshake.
        ListenerConfig(
            port=0,
            host="127.0.0.1",
            enable_proxy_protocol=1,
            certfile=pki.server_cert,
            keyfile=pki.server_key,
        ),
    ]
    running = make_broker(recorder, listeners=listeners, max_connection_rate=2, connect_timeout=1.5)
    return Proxied(running, recorder)


def _connected_from(caplog: pytest.LogCaptureFixture, client_id: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for record in caplog.records:
            # Mosquitto's line: "New client connected from ADDRESS as ID (p2, c1, k60)."
            message = record.getMessage()
            if message.startswith("New client connected from ") and f" as {client_id} (" in message:
                return message.removeprefix("New client connected from ").split(" ", 1)[0]
        time.sleep(0.02)
    raise AssertionError(f"no 'New client connected' line for {client_id}")


def test_headers_built_by_the_test(proxied: Proxied, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    seen = proxied.recorder.wait
    # v1 TCP4: the address is the header's, in the log line and for the plugins.
    # Split across segments, the CR and the LF in different ones.
    c = proxied.raw(proxied.v1)
    for part in (b"PROXY TCP4 192.0", b".2.5 127.0.0.1 6275 1883\r", b"\n"):
        c.send_raw(part)
        time.sleep(0.02)
    c.connect5("v1-tcp4")
    assert seen("v1-tcp4")[0] == "192.0.2.5:6275"
    assert _connected_from(caplog, "v1-tcp4") == "192.0.2.5:6275"
    c.close()
    # v1 TCP6, the header and the CONNECT in one segment
    c = proxied.raw(proxied.v1, 4)
    c.send_raw(b"PROXY TCP6 2001:db8::7 ::1 40000 1883\r\n" + _connect_bytes("v1-tcp6", 4))
    assert c.expect(Connack).reason_code == 0
    assert seen("v1-tcp6")[0] == "2001:db8::7:40000"
    c.close()
    # v1 UNKNOWN: the socket's own address
    c = proxied.raw(proxied.v1)
    c.send_raw(b"PROXY UNKNOWN\r\n")
    c.connect5("v1-unknown")
    assert seen("v1-unknown")[0] == f"127.0.0.1:{c.sock.getsockname()[1]}"
    c.close()
    # v2 PROXY with TLVs, split across TCP segments (a byte at a time through the signature)
    c = proxied.raw(proxied.v2)
    header = v2(tlvs=tlv(0x05, b"id-1") + tlv(0x04, b""))
    for i in range(14):
        c.send_raw(header[i : i + 1])
        time.sleep(0.005)
    c.send_raw(header[14:20])
    time.sleep(0.02)
    c.send_raw(header[20:])
    c.connect5("v2-split")
    assert seen("v2-split")[0] == "192.0.2.5:6275"
    c.close()
    # v2 LOCAL (a health check): accepted, with the socket's own address (spec 2.2)
    c = proxied.raw(proxied.v2)
    c.send_raw(V2_SIGNATURE + b"\x20\x00\x00\x00")
    c.connect5("v2-local")
    assert seen("v2-local")[0] == f"127.0.0.1:{c.sock.getsockname()[1]}"
    c.close()
    # v2 IPv6
    c = proxied.raw(proxied.v2)
    six = socket.inet_pton(socket.AF_INET6, "2001:db8::9") + bytes(16) + struct.pack("!HH", 7, 1)
    c.send_raw(v2(fam=0x21, addresses=six))
    c.connect5("v2-tcp6")
    assert seen("v2-tcp6")[0] == "2001:db8::9:7"
    c.close()
    # Left waiting for the rest of its header: the broker stops (fixture) with it pending.
    pending = proxied.raw(proxied.v1)
    pending.send_raw(b"PROXY TCP4 192.0.2.")


def _connect_bytes(client_id: str, version: int) -> bytes:
    from midge.codec import encode
    from midge.codec.packets import Connect

    return encode(Connect(client_id=client_id, protocol_level=version), version)


def test_connections_without_a_valid_header_are_refused(
    proxied: Proxied, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    refused = [
        (proxied.v1, _connect_bytes("straight", 5)),  # MQTT without a header
        (proxied.v2, _connect_bytes("straight", 5)),
        (proxied.v1, b"PROXY TCP4 192.0.2.256 127.0.0.1 6275 1883\r\n"),
        (proxied.v1, b"PROXY TCP4 192.0.2.5 127.0.0.1 6275" + b" " * 80),  # no CRLF in 107
        (proxied.v2, b"PROXY TCP4 192.0.2.5 127.0.0.1 6275 1883\r\n"),  # v1 on a v2 listener
        (proxied.v1, v2()),  # v2 on a v1 listener
        (proxied.v2, v2(version=1)),
        (proxied.v2, v2(tlvs=b"\x20\x00")),  # truncated TLV
        (proxied.v2, V2_SIGNATURE + b"\x21\x11\xff\xff"),  # oversized
        # the proxy-terminated-TLS listener: no TLS, then TLS without a verified certificate
        (proxied.v2tls, v2()),
        (proxied.v2tls, v2(tlvs=ssl_tlv(0x01, 0))),
        (proxied.v2tls, v2(tlvs=ssl_tlv(0x05, 1, tlv(0x22, b"bad")))),
        (proxied.v2tls, V2_SIGNATURE + b"\x20\x00\x00\x00"),  # LOCAL: no client TLS either
    ]
    clients = []
    for port, data in refused:
        c = proxied.raw(port)
        c.send_raw(data)
        clients.append(c)
    for c in clients:
        c.expect_closed()  # closed without a byte
        c.close()
    # A header that never comes: closed after connect_timeout (1.5 s here).
    c = proxied.raw(proxied.v2)
    c.send_raw(V2_SIGNATURE[:6])
    start = time.monotonic()
    c.expect_closed(5)
    assert 1.0 < time.monotonic() - start < 4.5
    c.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("no PROXY v1 header" in m for m in messages)
    assert any("no PROXY v2 header (bad signature)" in m for m in messages)
    assert any("192.0.2.5:6275 refused: client did not connect using TLS" in m for m in messages)
    assert any("refused: client did not provide a verified certificate" in m for m in messages)
    assert any("no PROXY v2 header within 1.5 s" in m for m in messages)
    assert not proxied.recorder.seen  # nobody got as far as authentication


def test_tls_terminated_by_the_proxy_names_the_user(
    proxied: Proxied, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    c = proxied.raw(proxied.v2tls)
    cn = tlv(0x22, b"device-7")
    c.send_raw(v2(tlvs=ssl_tlv(0x07, 0, tlv(0x21, b"TLSv1.3"), cn)))
    c.connect5("tls-cn", username="ignored", password=b"ignored")
    c.subscribe("t")
    assert proxied.recorder.users["tls-cn"] == "device-7"
    assert _connected_from(caplog, "tls-cn") == "192.0.2.5:6275"
    c.close()
    # A verified certificate without a CN: refused as a bad user name or password.
    c = proxied.raw(proxied.v2tls)
    c.send_raw(v2(tlvs=ssl_tlv(0x07, 0)))
    c.send(_connect("tls-no-cn"))
    c.expect_refused([Reason.BAD_USER_NAME_OR_PASSWORD])
    c.close()


def _connect(client_id: str) -> Any:
    from midge.codec.packets import Connect

    return Connect(client_id=client_id, protocol_level=5)


def test_tls_after_the_header(proxied: Proxied, pki: Pki) -> None:
    sock = socket.create_connection(("127.0.0.1", proxied.v1tls), timeout=5)
    sock.sendall(b"PROXY TCP4 203.0.113.4 127.0.0.1 5555 8883\r\n")
    ctx = ssl.create_default_context(cafile=pki.cafile)
    tls = ctx.wrap_socket(sock, server_hostname="localhost")
    c = RawClient(tls, version=5)
    c.connect5("tls-after")
    assert proxied.recorder.wait("tls-after")[0] == "203.0.113.4:5555"
    c.close()


def test_connection_rate_counts_the_real_address(proxied: Proxied) -> None:
    # max_connection_rate 2: the third connection within a second from one address is refused,
    # while another address behind the same proxy still gets in.
    answers = []
    for client_id, address in [
        ("r1", "198.51.100.1"),
        ("r2", "198.51.100.1"),
        ("r3", "198.51.100.1"),
        ("r4", "198.51.100.2"),
    ]:
        c = proxied.raw(proxied.v1)
        c.send_raw(f"PROXY TCP4 {address} 127.0.0.1 1000 1883\r\n".encode())
        c.send(_connect(client_id))
        answers.append(c.expect(Connack).reason_code)
        c.close()
    assert answers == [0, 0, Reason.CONNECTION_RATE_EXCEEDED, 0]


def test_options_in_both_formats() -> None:
    conf = parse_mosquitto_conf(
        "listener 1883\nenable_proxy_protocol 2\nproxy_protocol_v2_require_tls true\n"
        "require_certificate true\nuse_identity_as_username true\n"
        "listener 1884\nenable_proxy_protocol 1\n",
        "m.conf",
    )
    two, one = conf.listeners
    assert (two.enable_proxy_protocol, two.proxy_protocol_v2_require_tls) == (2, True)
    assert two.require_certificate and two.use_identity_as_username
    assert one.enable_proxy_protocol == 1 and not one.proxy_protocol_v2_require_tls
    toml = parse_toml(
        "[[listener]]\nport = 1883\nenable_proxy_protocol = 2\n"
        "proxy_protocol_v2_require_tls = true\n",
        "m.toml",
    )
    assert toml.listeners[0].enable_proxy_protocol == 2
    bad = {
        "enable_proxy_protocol 0\n": "out of range",
        "enable_proxy_protocol 3\n": "out of range",
        "enable_proxy_protocol 1\nproxy_protocol_v2_require_tls true\n": "needs "
        "'enable_proxy_protocol 2'",
        "enable_proxy_protocol 1\nrequire_certificate true\n": "no effect on a listener without",
        "enable_proxy_protocol 2\nuse_subject_as_username true\n": "carries the certificate's",
        "enable_proxy_protocol 2\ncafile /ca\n": "no effect on a listener without TLS",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            parse_mosquitto_conf("listener 1883\n" + text, "m.conf")


# --------------------------------------------------------------------------------------------
# HAProxy in front of midge


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"haproxy exited: {proc.stderr.read() if proc.stderr else ''!r}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"haproxy not listening on {port}")


@pytest.fixture
def haproxy(proxied: Proxied, pki: Pki, tmp_path: Path) -> Iterator[dict[str, int]]:
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (make debs installs it)")
    ports = {k: free_port() for k in ("v1", "v2", "tls", "pass")}
    pem = tmp_path / "server.pem"
    pem.write_text(Path(pki.server_cert).read_text() + Path(pki.server_key).read_text())
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        f"""global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:{ports["v1"]}
    default_backend v1
backend v1
    server midge 127.0.0.1:{proxied.v1} send-proxy
frontend v2
    bind 127.0.0.1:{ports["v2"]}
    default_backend v2
backend v2
    server midge 127.0.0.1:{proxied.v2} send-proxy-v2 check inter 300ms
frontend tls
    bind 127.0.0.1:{ports["tls"]} ssl crt {pem} verify required ca-file {pki.cafile}
    default_backend tls
backend tls
    server midge 127.0.0.1:{proxied.v2tls} send-proxy-v2-ssl-cn
frontend pass
    bind 127.0.0.1:{ports["pass"]}
    default_backend pass
backend pass
    server midge 127.0.0.1:{proxied.v1tls} send-proxy
"""
    )
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for port in ports.values():
            _wait_port(port, proc)
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _paho(client_id: str, port: int, **tls: Any) -> tuple[paho.Client, int]:
    """A paho client connected through haproxy from 127.0.0.2 (haproxy itself reaches midge
    from 127.0.0.1, so the address midge sees tells which one it took); returns it and the
    client's own port."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if tls:
        client.tls_set(**tls)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if rc == 0 else None
    client.connect("127.0.0.1", port, bind_address="127.0.0.2")
    client.loop_start()
    assert connected.wait(10), f"{client_id} did not connect through haproxy"
    sock = client.socket()
    assert isinstance(sock, socket.socket)  # an ssl.SSLSocket with TLS
    return client, sock.getsockname()[1]


def test_through_haproxy(
    proxied: Proxied, haproxy: dict[str, int], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    seen = proxied.recorder.wait
    clients = []
    for client_id, port in (("hap-v1", haproxy["v1"]), ("hap-v2", haproxy["v2"])):
        client, local_port = _paho(client_id, port)
        clients.append(client)
        assert seen(client_id)[0] == f"127.0.0.2:{local_port}"
        assert _connected_from(caplog, client_id) == f"127.0.0.2:{local_port}"
    # TLS terminated by haproxy with a client certificate: its CN is the username.
    certfile, keyfile = pki.client("device", name(("O", "midge"), ("CN", "device-42")))
    client, local_port = _paho(
        "hap-tls", haproxy["tls"], ca_certs=pki.cafile, certfile=certfile, keyfile=keyfile
    )
    clients.append(client)
    assert _connected_from(caplog, "hap-tls") == f"127.0.0.2:{local_port}"
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.subscribe("proxy/tls", 1)
    assert subscribed.wait(5)
    assert proxied.recorder.users["hap-tls"] == "device-42"
    # TLS passed through haproxy: the v1 header, then midge's own handshake.
    client, local_port = _paho("hap-pass", haproxy["pass"], ca_certs=pki.cafile)
    clients.append(client)
    assert seen("hap-pass")[0] == f"127.0.0.2:{local_port}"
    # Messages flow through the proxy both ways.
    got = threading.Event()
    receiver = clients[0]
    receiver.on_message = lambda c, u, m: got.set() if m.payload == b"via haproxy" else None
    subscribed = threading.Event()
    receiver.on_subscribe = lambda *a: subscribed.set()
    receiver.subscribe("proxy/t", 1)
    assert subscribed.wait(5)
    clients[2].publish("proxy/t", b"via haproxy", qos=1).wait_for_publish(5)
    assert got.wait(5)
    for client in clients:
        client.disconnect()
        client.loop_stop()


def test_the_docs_example(tmp_path: Path) -> None:
    """docs/proxy.md's runnable example: its midge.conf parses as meant, HAProxy accepts its
    haproxy.cfg (``haproxy -c``)."""
    text = (Path(__file__).parent.parent / "docs" / "proxy.md").read_text()
    example = text.split("## A runnable example", 1)[1]
    blocks = example.split("```")[1::2]
    conf = parse_mosquitto_conf(blocks[0], "midge.conf")
    (lst,) = conf.listeners
    assert (lst.port, lst.host, lst.enable_proxy_protocol) == (1884, "127.0.0.1", 2)
    assert "send-proxy-v2" in blocks[1] and "127.0.0.1:1884" in blocks[1]
    toml = next(b for b in blocks if b.startswith("toml"))
    assert parse_toml(toml[4:], "m.toml").listeners[0].enable_proxy_protocol == 2
    for block in blocks[2:]:
        if block.startswith("\nlistener"):
            parse_mosquitto_conf(block, "midge.conf")  # the TLS variants parse too
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (make debs installs it)")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(blocks[1])
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr + check.stdout


def test_acl_pattern_and_unix_socket(
    make_broker: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The ACL file's ``%u`` is the CN the proxy's header names; a Unix socket listener takes
    the header too (v2 AF_UNIX gives the client's socket path as its address)."""
    caplog.set_level(logging.INFO)
    acl = tmp_path / "acl"
    acl.write_text("pattern readwrite devices/%u/#\n")
    path = str(tmp_path / "proxied.sock")
    running = make_broker(
        acl_file=str(acl),
        allow_anonymous=True,
        listeners=[
            ListenerConfig(
                port=0,
                host="127.0.0.1",
                enable_proxy_protocol=2,
                require_certificate=True,
                use_identity_as_username=True,
            ),
            ListenerConfig(port=0, host=None, unix_socket_path=path, enable_proxy_protocol=2),
        ],
    )
    c = RawClient("127.0.0.1", int(running.server.addresses[0][1]), version=5)
    c.send_raw(v2(tlvs=ssl_tlv(0x07, 0, tlv(0x22, b"device-7"))))
    c.connect5("acl-cn")
    c.subscribe("devices/#", 0)
    # Writing to another device's topics is denied (dropped); to its own, allowed and read back.
    c.pub("devices/device-8/temp", b"no")
    c.pub("devices/device-7/temp", b"yes")
    (got,) = c.publishes(1)
    assert (got.topic, got.payload) == ("devices/device-7/temp", b"yes")
    c.no_publish()
    c.close()
    u = RawClient.unix(path, version=5)
    client_path = b"/run/app/client.sock".ljust(108, b"\0") + bytes(108)
    u.send_raw(v2(fam=0x31, addresses=client_path))
    u.connect5("unix-proxied")
    assert _connected_from(caplog, "unix-proxied") == "/run/app/client.sock"
    u.close()


def test_the_docs_example_runs(tmp_path: Path) -> None:
    """docs/proxy.md's runnable example, run as written: midge with its midge.conf, HAProxy
    with its haproxy.cfg (free ports instead of 1883 and 1884), then its shell block: the
    message published through HAProxy reaches the subscriber connected through HAProxy, and
    midge's log has a connection line for each client (the addresses the headers gave)."""
    if HAPROXY is None or shutil.which("mosquitto_sub") is None:
        pytest.skip("haproxy or mosquitto-clients is not installed (make debs installs them)")
    midge_conf, haproxy_cfg, shell, *_ = blocks("proxy.md", "A runnable example")
    ports = {1883: free_port(), 1884: free_port()}
    (tmp_path / "midge.conf").write_text(renumber(midge_conf, ports))
    (tmp_path / "haproxy.cfg").write_text(renumber(haproxy_cfg, ports))
    shell = renumber(shell, ports).replace("haproxy -db", f"{HAPROXY} -db")
    ready = {"mosquitto_sub": "received SUBACK"}
    with run_shell_block(shell, tmp_path, ready, ports={HAPROXY: ports[1883]}) as ran:
        (broker,) = ran.brokers
    assert "demo/x hello" in ran.seen
    log = broker.stdout + broker.stderr
    connected = re.findall(r"New client connected from 127\.0\.0\.1:(\d+)", log)
    assert len(connected) >= 2, log


def test_the_admin_api_and_sys_count_the_clients_behind_the_proxy(
    make_broker: Callable[..., Any],
) -> None:
    """What an operator reads besides the log: the admin API's client address is the one the
    header gives, and ``$SYS/broker/clients/connected`` counts the proxied clients (as
    clients, not the proxy's single address)."""
    import httpx

    from tests.test_observe import AUTH, HASH, http_url

    running = make_broker(
        listeners=[
            ListenerConfig(port=0, host="127.0.0.1", enable_proxy_protocol=1),
            ListenerConfig(port=0, host="127.0.0.1", protocol="http"),
        ],
        allow_anonymous=True,
        admin_user="admin",
        admin_password_hash=HASH,
        sys_interval=1,
    )
    port = int(running.server.addresses[0][1])
    clients = []
    for n in range(2):
        c = RawClient("127.0.0.1", port, version=5)
        c.send_raw(f"PROXY TCP4 198.51.100.{n + 1} 127.0.0.1 {40000 + n} 1883\r\n".encode())
        c.connect5(f"behind-{n}")
        clients.append(c)
    api = httpx.Client(base_url=http_url(running), auth=AUTH, timeout=10)
    for n in range(2):
        answer = api.get(f"/api/clients/behind-{n}").json()
        assert answer["address"] == f"198.51.100.{n + 1}:{40000 + n}"
    watcher = clients[0]
    watcher.subscribe("$SYS/broker/clients/connected", 0)
    counts = [p.payload for p in watcher.publishes(1, timeout=5)]  # retained: maybe stale
    deadline = time.monotonic() + 5  # the next $SYS interval (1 s) says 2
    while counts[-1] != b"2" and time.monotonic() < deadline:
        counts += [p.payload for p in watcher.publishes(1, timeout=3)]
    assert counts[-1] == b"2", counts
    for c in clients:
        c.disconnect()
