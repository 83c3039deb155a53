"""MQTT over WebSocket (``protocol websockets``, docs/websockets.md): paho-mqtt's websockets
transport over ws and wss, MQTT's WebSocket rules (MQTT-6.0.0-1..4) with a WebSocket client built
on the ``websockets`` package (tests/wsclient.py), the closing handshake both ways, ``http_dir``
and ``websockets_headers_size``, and the listener settings a TCP listener has (limits,
mount_point, TLS). One in-process broker per test, on real sockets: TCP, ws and wss listeners.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.frames import Opcode

from midge.codec.packets import (
    Connack,
    Connect,
    Disconnect,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Will,
)
from midge.codec.reasons import Reason
from midge.config import ListenerConfig
from tests.conftest import RunningBroker
from tests.interop.clients import VERSION_ID, PahoClient
from tests.rawclient import RawClient
from tests.security.certs import Pki
from tests.wsclient import WsSocket, raw_ws

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

#: The listeners of every broker here, in this order.
TCP, WS, WSS = 0, 1, 2


class Site:
    """A broker with a TCP, a ws and a wss listener (``http_dir`` on ws), and the test CA."""

    def __init__(self, broker: RunningBroker, pki: Pki, www: Path) -> None:
        self.broker = broker
        self.pki = pki
        self.www = www
        self.ports = [int(a[1]) for a in broker.server.addresses]

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.pki.cafile)

    def raw(self, kind: int, version: int = 4, **options: Any) -> RawClient:
        if kind == TCP:
            return RawClient("127.0.0.1", self.ports[TCP], version=version)
        context = self.context() if kind == WSS else None
        return raw_ws("localhost", self.ports[kind], version, context, **options)

    def ws(self, kind: int = WS, **options: Any) -> WsSocket:
        context = self.context() if kind == WSS else None
        return WsSocket("localhost", self.ports[kind], context=context, **options)

    def http(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request on the ws listener: (status, headers, body)."""
        with socket.create_connection(("127.0.0.1", self.ports[WS]), timeout=5) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture
def site(make_broker: Callable[..., RunningBroker], tmp_path: Path) -> Callable[..., Site]:
    pki = Pki(tmp_path)
    www = tmp_path / "www"
    (www / "js").mkdir(parents=True)
    (www / "index.html").write_text("<h1>midge</h1>\n")
    (www / "js" / "app.js").write_text("console.log('hi')\n")
    (tmp_path / "secret.txt").write_text("not for the web\n")
    (www / "out").symlink_to(tmp_path / "secret.txt")

    def start(ws: dict[str, Any] | None = None, **overrides: Any) -> Site:
        ws = ws or {}
        listeners = [
            ListenerConfig(port=0, host="127.0.0.1"),
            ListenerConfig(
                port=0, host="127.0.0.1", protocol="websockets", http_dir=str(www), **ws
            ),
            ListenerConfig(
                port=0,
                host="127.0.0.1",
                protocol="websockets",
                certfile=pki.server_cert,
                keyfile=pki.server_key,
                **ws,
            ),
        ]
        return Site(make_broker(listeners=listeners, **overrides), pki, www)

    return start


# -- real clients: paho-mqtt's websockets transport ---------------------------------------------


@pytest.mark.parametrize("kind", [WS, WSS], ids=["ws", "wss"])
@pytest.mark.parametrize("version", [3, 4, 5], ids=VERSION_ID.get)
def test_paho_over_websocket_talks_to_tcp_clients(
    site: Callable[..., Site], kind: int, version: int
) -> None:
    """paho over ws/wss (subprotocol mqttv3.1 for MQTT 3.1, mqtt otherwise) subscribes, gets
    what a TCP client publishes (QoS 0..2, a payload spanning many frames' worth), and
    publishes back."""
    s = site()
    cafile = s.pki.cafile if kind == WSS else None
    web = PahoClient(
        "localhost", s.ports[kind], "web", version, transport="websockets", cafile=cafile
    )
    tcp = PahoClient("127.0.0.1", s.ports[TCP], "tcp", version)
    try:
        web.connect()
        tcp.connect()
        assert web.subscribe("down/#", 2) == [2]
        assert tcp.subscribe("up/#", 2) == [2]
        big = bytes(range(256)) * 1000
        for qos in (0, 1, 2):
            tcp.publish(f"down/{qos}", b"%d" % qos, qos)
        tcp.publish("down/big", big, 1)
        got = {m.topic: m for m in web.collect(4)}
        assert [(t, m.payload, m.qos) for t, m in sorted(got.items())][:3] == [
            ("down/0", b"0", 0),
            ("down/1", b"1", 1),
            ("down/2", b"2", 2),
        ]
        assert got["down/big"].payload == big
        web.publish("up/reply", b"from the web", 2)
        reply = tcp.expect()
        assert (reply.topic, reply.payload, reply.qos) == ("up/reply", b"from the web", 2)
    finally:
        web.close()
        tcp.close()


# -- MQTT's WebSocket rules ---------------------------------------------------------------------


def test_MQTT_6_0_0_2_packets_span_frames_and_frames_carry_several(
    site: Callable[..., Site],
) -> None:
    """A CONNECT cut across three binary frames (one of them a fragmented message's
    continuation), then SUBSCRIBE and PUBLISH in one frame: all handled as on TCP. The broker's
    answers come back as binary frames whose payloads are MQTT packets."""
    from midge.codec import encode

    s = site()
    client = s.raw(WS, 5)
    ws: WsSocket = client.sock  # type: ignore[assignment]
    connect = encode(Connect(client_id="frames", protocol_level=5), 5)
    ws.send_frame(Opcode.BINARY, connect[:3])
    ws.send_frame(Opcode.BINARY, connect[3:7], fin=False)
    ws.send_frame(Opcode.CONT, connect[7:], fin=True)
    connack = client.recv()
    assert isinstance(connack, Connack) and connack.reason_code == 0
    both = encode(Subscribe(1, [Subscription("t", 1)]), 5) + encode(
        Publish("t", b"one frame", 0), 5
    )
    ws.sendall(both)
    assert client.expect(Suback).reason_codes == [1]
    assert client.expect(Publish).payload == b"one frame"
    assert all(f.opcode in (Opcode.BINARY, Opcode.CONT) for f in ws.frames)
    client.close()


def test_MQTT_6_0_0_1_a_text_frame_closes_with_1003(site: Callable[..., Site]) -> None:
    """Anything but binary data frames closes the connection (close code 1003, unsupported
    data); the client's will is published, as when a TCP client is lost."""
    s = site()
    watcher = s.raw(TCP)
    watcher.connect("watcher")
    watcher.subscribe("will/#")
    client = s.raw(WS)
    client.connect("texter", will=Will("will/texter", b"gone", 0, False))
    ws: WsSocket = client.sock  # type: ignore[assignment]
    ws.send_frame(Opcode.TEXT, b"\x10\x00")
    client.expect_closed()
    assert ws.close_code == 1003
    assert watcher.publishes(1)[0].topic == "will/texter"


def test_MQTT_6_0_0_3_and_4_subprotocols(site: Callable[..., Site]) -> None:
    """The server selects "mqtt" (MQTT-6.0.0-4) or, for MQTT 3.1 clients, "mqttv3.1"; a client
    that offers no subprotocol is served too (MQTT is all the port speaks); one that offers
    only others is refused with 400."""
    s = site()
    assert s.ws(subprotocols=["mqtt"]).subprotocol == "mqtt"
    assert s.ws(subprotocols=["chat", "mqttv3.1", "mqtt"]).subprotocol == "mqtt"
    assert s.ws(subprotocols=["mqttv3.1"]).subprotocol == "mqttv3.1"
    v31 = s.raw(WS, 3, subprotocols=["mqttv3.1"])
    assert v31.connect("old").reason_code == 0
    none = s.raw(WS, 4, subprotocols=[])
    assert none.connect("plain").reason_code == 0
    with pytest.raises(InvalidStatus) as info:
        s.ws(subprotocols=["chat"])
    assert info.value.response.status_code == 400


def test_ping_is_answered_and_mqtt_goes_on(site: Callable[..., Site]) -> None:
    s = site()
    client = s.raw(WSS, 5)
    client.connect5("pinger")
    ws: WsSocket = client.sock  # type: ignore[assignment]
    ws.send_frame(Opcode.PING, b"are you there")
    client.ping()  # MQTT PINGREQ/PINGRESP after it: the pong came first
    pongs = [f.data for f in ws.frames if f.opcode is Opcode.PONG]
    assert pongs == [b"are you there"]


@pytest.mark.parametrize("kind", [WS, WSS], ids=["ws", "wss"])
def test_closing_handshake_both_ways(site: Callable[..., Site], kind: int) -> None:
    """The client's close frame is echoed and the server closes the TCP connection (its will is
    published: it sent no DISCONNECT). When the broker closes (a v5 session taken over), the
    DISCONNECT comes first, then a close frame 1000, then the end of the stream."""
    s = site()
    watcher = s.raw(TCP)
    watcher.connect("watcher")
    watcher.subscribe("will/#")
    leaving = s.raw(kind)
    leaving.connect("leaving", will=Will("will/leaving", b"bye", 0, False))
    ws: WsSocket = leaving.sock  # type: ignore[assignment]
    ws.send_frame(Opcode.CLOSE, (1001).to_bytes(2, "big") + b"going away")
    leaving.expect_closed()
    assert ws.close_code == 1001  # echoed
    assert watcher.publishes(1)[0].payload == b"bye"

    first = s.raw(kind, 5)
    first.connect5("same")
    second = s.raw(kind, 5)
    second.connect5("same")
    first.expect_disconnect(Reason.SESSION_TAKEN_OVER)
    assert first.sock.close_code == 1000  # type: ignore[attr-defined]
    # A client that never answers the close frame is closed anyway (after the linger).
    second.send(Disconnect(0))
    second.expect_closed(timeout=5)


def test_server_shutdown_tells_websocket_clients(site: Callable[..., Site]) -> None:
    s = site()
    client = s.raw(WS, 5)
    client.connect5("staying")
    s.broker.stop()
    client.expect_disconnect(Reason.SERVER_SHUTTING_DOWN)


# -- http_dir and the request head ---------------------------------------------------------------


def test_http_dir_serves_files_and_refuses_paths_out_of_it(site: Callable[..., Site]) -> None:
    s = site(websockets_headers_size=600)
    status, headers, body = s.http(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"<h1>midge</h1>\n")
    assert headers["content-type"] == "text/html"
    status, headers, body = s.http(b"GET /js/app.js?v=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"console.log('hi')\n")
    assert "javascript" in headers["content-type"]
    status, headers, body = s.http(b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, headers["content-length"], body) == (200, "15", b"")
    for path in (
        b"/../secret.txt",
        b"/js/../../secret.txt",
        b"/%2e%2e/secret.txt",
        b"/..%2fsecret.txt",
        b"/out",  # a symbolic link leading outside
        b"/index.html%00.js",
    ):
        status, _, body = s.http(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 403, path
        assert b"not for the web" not in body
    assert s.http(b"GET /nothing.html HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    assert s.http(b"POST /index.html HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 405
    # websockets_headers_size: a request head larger than 600 bytes gets 431.
    cookie = b"Cookie: " + b"c" * 600 + b"\r\n"
    assert s.http(b"GET / HTTP/1.1\r\nHost: x\r\n" + cookie + b"\r\n")[0] == 431
    with pytest.raises(InvalidStatus) as info:
        s.ws(headers={"Cookie": "c" * 600})
    assert info.value.response.status_code == 431
    # The wss listener has no http_dir: nothing is served there.
    context = s.context()
    with (
        socket.create_connection(("127.0.0.1", s.ports[WSS]), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 404 ")


def test_a_large_request_head_up_to_websockets_headers_size_upgrades(
    site: Callable[..., Site],
) -> None:
    """websockets_headers_size goes up to 65535: a 35 KB head (five 7 KB headers) upgrades,
    and MQTT works over the connection; past the size it is 431."""
    s = site(websockets_headers_size=60000)
    ws = s.ws(headers={f"X-Big-{i}": "c" * 7000 for i in range(5)})
    client = RawClient(ws.sock, version=4)
    client.sock = ws  # type: ignore[assignment]
    client.connect("cookies")
    client.subscribe("t")
    client.publish("t", b"through")
    assert client.publishes(1)[0].payload == b"through"
    client.close()
    with pytest.raises(InvalidStatus) as info:
        s.ws(headers={f"X-Big-{i}": "c" * 7000 for i in range(9)})
    assert info.value.response.status_code == 431


def test_a_silent_http_client_is_closed_at_connect_timeout(site: Callable[..., Site]) -> None:
    s = site(connect_timeout=0.5)
    with socket.create_connection(("127.0.0.1", s.ports[WS]), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        start = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - start < 3


# -- what a TCP listener has ---------------------------------------------------------------------


def test_listener_settings_apply_to_websocket_listeners(site: Callable[..., Site]) -> None:
    """max_connections refuses at CONNECT (v5 0x97) and mount_point prefixes topics, on ws and
    wss listeners alike."""
    s = site(ws={"max_connections": 1, "mount_point": "web/"})
    watcher = s.raw(TCP)
    watcher.connect("watcher")
    watcher.subscribe("#")
    for kind in (WS, WSS):
        first = s.raw(kind, 5)
        first.connect5(f"first{kind}")
        first.publish("hello", b"mounted")
        assert watcher.publishes(1)[0].topic == "web/hello"
        second = s.raw(kind, 5)
        second.send(Connect(client_id=f"second{kind}", protocol_level=5))
        second.expect_refused([Reason.QUOTA_EXCEEDED])
        first.disconnect()


def test_authentication_and_acls_apply(site: Callable[..., Site], tmp_path: Path) -> None:
    from midge.auth.passwd import hash_password

    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{hash_password(b'secret').encode()}\n")
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite alice/#\n")
    s = site(allow_anonymous=False, local_only=False, password_file=str(passwd), acl_file=str(acl))
    anonymous = s.raw(WS, 5)
    anonymous.send(Connect(client_id="anon", protocol_level=5))
    anonymous.expect_refused([Reason.NOT_AUTHORIZED])
    alice = s.raw(WSS, 5)
    alice.connect5("alice", username="alice", password=b"secret")
    assert alice.subscribe("#", 1).reason_codes == [1]
    alice.pub("bob/x", b"denied", 1)  # the ACL refuses it: nobody gets it
    alice.pub("alice/x", b"allowed", 1)
    assert [p.payload for p in alice.publishes(1)] == [b"allowed"]


def test_the_docs_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/websockets.md's ```python block is a complete program."""
    import re

    doc = Path(__file__).resolve().parents[2] / "docs" / "websockets.md"
    (block,) = re.findall(r"^```python\n(.*?)^```$", doc.read_text(), re.MULTILINE | re.DOTALL)
    exec(compile(block, "docs/websockets.md", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out == "greetings/web hello over WebSocket\n"


def test_per_listener_settings_on_a_websocket_listener(
    site: Callable[..., Site], tmp_path: Path
) -> None:
    """per_listener_settings: the ws and wss listeners ask for a password, the TCP one (same
    broker) lets anonymous clients in."""
    from midge.auth.passwd import hash_password

    passwd = tmp_path / "ws-passwd"
    passwd.write_text(f"web:{hash_password(b'pw').encode()}\n")
    s = site(
        ws={"allow_anonymous": False, "password_file": str(passwd)},
        per_listener_settings=True,
        local_only=False,
        allow_anonymous=True,
    )
    s.raw(TCP, 5).connect5("anonymous-tcp")
    for kind in (WS, WSS):
        anonymous = s.raw(kind, 5)
        anonymous.send(Connect(client_id=f"anon{kind}", protocol_level=5))
        anonymous.expect_refused([Reason.NOT_AUTHORIZED])
        s.raw(kind, 5).connect5(f"web{kind}", username="web", password=b"pw")


def test_a_frame_over_the_packet_limit_closes_with_1009(site: Callable[..., Site]) -> None:
    s = site(max_packet_size=1000)
    client = s.raw(WS, 5)
    client.connect5("big")
    ws: WsSocket = client.sock  # type: ignore[assignment]
    ws.send_frame(Opcode.BINARY, bytes(1000 + 64 * 1024 + 1))
    client.expect_closed()
    assert ws.close_code == 1009


@pytest.mark.parametrize(
    "frame",
    [
        bytes([0x82, 0x02]) + b"\xc0\x00",  # unmasked (RFC 6455 5.1: the server must close)
        bytes([0xC2, 0x82]) + bytes(4) + b"\xc0\x00",  # RSV1 set, no extension negotiated
        bytes([0x8B, 0x80]) + bytes(4),  # opcode 0xB: reserved
        bytes([0x09, 0x80]) + bytes(4),  # a ping that is not final (control frames cannot be)
        bytes([0x89, 0xFE, 0x00, 0x7E]) + bytes(4) + bytes(126),  # a ping over 125 bytes
    ],
    ids=["unmasked", "rsv1", "reserved-opcode", "fragmented-ping", "long-ping"],
)
def test_a_websocket_protocol_error_closes_with_1002(
    site: Callable[..., Site], frame: bytes
) -> None:
    """Frames RFC 6455 forbids close the connection with 1002 (protocol error), and the
    client's will is published as when a TCP client is lost."""
    s = site()
    watcher = s.raw(TCP)
    watcher.connect("watcher")
    watcher.subscribe("will/#")
    client = s.raw(WS)
    client.connect("breaker", will=Will("will/breaker", b"gone", 0, False))
    ws: WsSocket = client.sock  # type: ignore[assignment]
    ws.sock.sendall(frame)
    client.expect_closed()
    assert ws.close_code == 1002
    assert watcher.publishes(1)[0].topic == "will/breaker"


def test_a_websocket_listener_on_a_unix_socket(
    make_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    """``listener 0 PATH`` + ``protocol websockets``: MQTT over WebSocket over a Unix socket."""
    from websockets.client import ClientProtocol
    from websockets.frames import Frame
    from websockets.protocol import State
    from websockets.typing import Subprotocol
    from websockets.uri import parse_uri

    from midge.codec import encode

    path = str(tmp_path / "ws.sock")
    make_broker(
        listeners=[
            ListenerConfig(port=0, host="127.0.0.1", allow_anonymous=True),
            ListenerConfig(
                port=0, unix_socket_path=path, protocol="websockets", allow_anonymous=True
            ),
        ]
    )
    protocol = ClientProtocol(parse_uri("ws://localhost/mqtt"), subprotocols=[Subprotocol("mqtt")])
    protocol.send_request(protocol.connect())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"".join(protocol.data_to_send()))
        while protocol.state is State.CONNECTING:
            protocol.receive_data(sock.recv(65536))
        protocol.send_binary(encode(Connect(client_id="unix", protocol_level=4), 4))
        sock.sendall(b"".join(protocol.data_to_send()))
        frames: list[Frame] = [e for e in protocol.events_received() if isinstance(e, Frame)]
        while not frames:
            data = sock.recv(65536)
            assert data, "closed"
            protocol.receive_data(data)
            frames += [e for e in protocol.events_received() if isinstance(e, Frame)]
    assert protocol.subprotocol == "mqtt"
    assert frames[0].data == b"\x20\x02\x00\x00"  # CONNACK, accepted


def test_a_connect_sent_along_with_the_upgrade_request(site: Callable[..., Site]) -> None:
    """Frames that arrive in the same read as the HTTP request are not lost."""
    from websockets.client import ClientProtocol
    from websockets.frames import Frame
    from websockets.protocol import State
    from websockets.typing import Subprotocol
    from websockets.uri import parse_uri

    from midge.codec import encode

    s = site()
    handshake = ClientProtocol(
        parse_uri(f"ws://127.0.0.1:{s.ports[WS]}/mqtt"), subprotocols=[Subprotocol("mqtt")]
    )
    handshake.send_request(handshake.connect())
    request = b"".join(handshake.data_to_send())
    framer = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
    framer.send_binary(encode(Connect(client_id="eager", protocol_level=4), 4))
    with socket.create_connection(("127.0.0.1", s.ports[WS]), timeout=5) as sock:
        sock.sendall(request + b"".join(framer.data_to_send()))
        frames: list[Frame] = []
        while not frames:
            data = sock.recv(65536)
            assert data, "closed"
            handshake.receive_data(data)
            frames += [e for e in handshake.events_received() if isinstance(e, Frame)]
    assert handshake.handshake_exc is None
    assert frames[0].data == b"\x20\x02\x00\x00"  # CONNACK, accepted


def test_wss_with_client_certificates_and_identity_as_username(
    make_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    """The TLS options of a TCP listener on a wss listener: ``cafile`` + ``require_certificate``
    (no certificate, or one from another CA: the TLS handshake fails, or with TLS 1.3 the
    connection closes before the HTTP upgrade's answer: no WebSocket at all) and
    ``use_identity_as_username`` (the certificate's CN is the username the ACL file sees)."""
    from tests.security.certs import name

    pki = Pki(tmp_path)
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite alice/#\n")
    broker = make_broker(
        listeners=[
            ListenerConfig(
                port=0,
                host="127.0.0.1",
                protocol="websockets",
                certfile=pki.server_cert,
                keyfile=pki.server_key,
                cafile=pki.cafile,
                require_certificate=True,
                use_identity_as_username=True,
            )
        ],
        acl_file=str(acl),
    )
    port = int(broker.server.addresses[0][1])

    def context(certfile: str | None = None, keyfile: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=pki.cafile)
        if certfile and keyfile:
            ctx.load_cert_chain(certfile, keyfile)
        return ctx

    alice_cert, alice_key = pki.client("alice", name(("CN", "alice")))
    alice = raw_ws("localhost", port, 5, context(alice_cert, alice_key))
    alice.connect5("c-alice")  # no username in CONNECT: the CN is the username
    assert alice.subscribe("#", 1).reason_codes == [1]
    alice.pub("bob/x", b"denied by the ACL", 1)
    alice.pub("alice/x", b"allowed", 1)
    assert [p.payload for p in alice.publishes(1)] == [b"allowed"]
    alice.disconnect()
    for ctx in (context(), context(*pki.client("mallory", name(("CN", "alice")), untrusted=True))):
        with pytest.raises((ssl.SSLError, OSError, InvalidMessage)):
            c = raw_ws("localhost", port, 5, ctx)
            c.connect5("c-none")
