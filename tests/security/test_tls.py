"""TLS listeners and certificate identities (issue 6), with real handshakes.

Certificates are made here (:mod:`tests.security.certs`); brokers run in-process (``make_broker``)
or as ``midge broker`` processes, and the clients are Python's ssl module, mosquitto_pub/sub and
paho-mqtt. Where the spec leaves a choice, the same configuration is given to the real
``mosquitto`` to check that midge behaves the same.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from midge.auth.base import Authenticator, Capability
from midge.codec.packets import Connack
from midge.config import ConfigError, ListenerConfig, parse_mosquitto_conf, parse_toml
from midge.transport.tls import make_context, rfc2253
from tests.interop.clients import MOSQUITTO_VERSION, MosquittoSub, PahoClient, mosquitto_pub
from tests.procbroker import ProcBroker, free_port, run_midge
from tests.rawclient import Closed, RawClient
from tests.security.certs import Pki, name, new_key, write_key

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


class Certs:
    """The test PKI plus the client certificates every test uses."""

    def __init__(self, directory: Path) -> None:
        self.pki = Pki(directory)
        self.dir = directory
        self.alice = self.pki.client("alice", name(("O", "midge"), ("CN", "alice")))
        self.bob = self.pki.client("bob", name(("CN", "bob")))
        self.mallory = self.pki.client("mallory", name(("CN", "mallory")), untrusted=True)
        self.expired = self.pki.client("expired", name(("CN", "old")), days=(-30, -1))
        self.no_cn = self.pki.client("nocn", name(("O", "no common name")))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("pki"))


class Recorder(Authenticator):
    """An authenticator that allows everything and records what the core asked it."""

    provides = frozenset(
        {Capability.CONNECT, Capability.ENHANCED, Capability.PUBLISH, Capability.SUBSCRIBE}
    )

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, Any]] = []

    def authenticate(self, request: Any) -> int:
        self.calls.append(("authenticate", request.username, request.password))
        return 0

    def enhanced(self, request: Any) -> None:
        return None

    def can_publish(self, client_id: str, username: str | None, topic: str) -> bool:
        self.calls.append(("publish", username, topic))
        return True

    def can_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        self.calls.append(("subscribe", username, topic_filter))
        return True

    def wait(self, kind: str, timeout: float = WAIT) -> tuple[str, str | None, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for call in self.calls:
                if call[0] == kind:
                    return call
            time.sleep(0.01)
        raise AssertionError(f"no {kind} call; calls: {self.calls}")


def tls_listener(certs: Certs, **options: Any) -> ListenerConfig:
    return ListenerConfig(
        port=0,
        host="127.0.0.1",
        certfile=certs.pki.server_cert,
        keyfile=certs.pki.server_key,
        **options,
    )


def mutual(certs: Certs, **options: Any) -> ListenerConfig:
    """A listener that requires client certificates signed by the test CA."""
    return tls_listener(certs, cafile=certs.pki.cafile, require_certificate=True, **options)


def client_context(
    certs: Certs,
    cert: tuple[str, str] | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=certs.pki.cafile)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


class TlsClient(RawClient):
    """The raw MQTT client over TLS (the handshake happens in the constructor)."""

    def __init__(self, port: int, context: ssl.SSLContext, version: int = 4) -> None:
        super().__init__("127.0.0.1", port, version)
        #: ``sock``, typed as the TLS socket it is.
        self.tls = context.wrap_socket(self.sock, server_hostname="localhost")
        self.sock = self.tls

    def peer_subject(self) -> dict[str, str]:
        """The subject of the broker's certificate: its first (name, value) of each RDN."""
        cert = self.tls.getpeercert()
        assert cert is not None  # verified, so ssl gives it
        rdns = cast("tuple[tuple[tuple[str, str], ...], ...]", cert["subject"])
        return dict(x[0] for x in rdns)


@pytest.fixture
def tls_clients() -> Iterator[Callable[..., TlsClient]]:
    opened: list[TlsClient] = []

    def open_client(port: int, context: ssl.SSLContext, version: int = 4) -> TlsClient:
        client = TlsClient(port, context, version)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def refused_by_tls(port: int, context: ssl.SSLContext) -> str:
    """Connect, handshake and send CONNECT; the broker must end the connection without a
    CONNACK. Returns what the client saw (the TLS alert, or EOF). With TLS 1.3 the client's
    handshake can finish before the server has checked the client's certificate, so the refusal
    may arrive on the first read."""
    try:
        client = TlsClient(port, context)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        return f"handshake: {exc}"
    try:
        try:
            client.send(_connect_packet())
            client.recv(WAIT)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
            return f"after handshake: {exc}"
        except Closed:
            return "closed"
        raise AssertionError("the broker answered a client it should have refused")
    finally:
        client.close()


def _connect_packet() -> Any:
    from midge.codec.packets import Connect

    return Connect(client_id="refused", protocol_level=4)


def run(command: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pub_command(port: int, version: int, *args: str) -> list[str]:
    return [
        "mosquitto_pub",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-V",
        MOSQUITTO_VERSION[version],
        "-t",
        "t/x",
        "-m",
        "hello",
        *args,
    ]


# --------------------------------------------------------------------------------------------
# Configuration: options, scope, errors


def test_mosquitto_conf_tls_options_are_per_listener() -> None:
    conf = (
        "per_listener_settings false\n"
        "listener 1883 127.0.0.1\n"
        "listener 8883\n"
        "certfile /etc/midge/server crt.pem\n"  # a path with a space: the rest of the line
        "keyfile /etc/midge/server.key\n"
        "cafile /etc/midge/ca.pem\n"
        "capath /etc/midge/ca.d\n"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        "use_subject_as_username false\n"
        "tls_version tlsv1.3\n"
        "ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256\n"
    )
    plain, secure = parse_mosquitto_conf(conf, "m.conf").listeners
    assert not plain.tls and plain.certfile is None and not plain.require_certificate
    assert secure.tls
    assert secure.certfile == "/etc/midge/server crt.pem"
    assert secure.keyfile == "/etc/midge/server.key"
    assert (secure.cafile, secure.capath) == ("/etc/midge/ca.pem", "/etc/midge/ca.d")
    assert secure.require_certificate and secure.use_identity_as_username
    assert not secure.use_subject_as_username
    assert secure.tls_version == "tlsv1.3"
    assert secure.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
    assert secure.where["certfile"] == ("m.conf", 4)
    # per_listener_settings true changes nothing: TLS options always belong to their listener.
    again = parse_mosquitto_conf(conf.replace("false", "true", 1), "m.conf").listeners
    assert again == [plain, secure]


def test_tls_options_before_any_listener_make_the_default_listener() -> None:
    """Mosquitto: listener options before the first ``listener`` line configure its default
    listener (port 1883, every address), which then exists."""
    c = parse_mosquitto_conf("certfile /c.pem\nkeyfile /k.pem\nlistener 8883\n", "m.conf")
    ports = {(lst.port, lst.host, lst.tls) for lst in c.listeners}
    assert ports == {(8883, None, False), (1883, None, True)}


def test_toml_tls_keys_in_listener_tables() -> None:
    c = parse_toml(
        "[[listener]]\nport = 1883\n\n[[listener]]\nport = 8883\n"
        'certfile = "/c.pem"\nkeyfile = "/k.pem"\ncafile = "/ca.pem"\n'
        "require_certificate = true\nuse_subject_as_username = true\n"
        'tls_version = "tlsv1.2"\nciphers = "HIGH:!aNULL"\n',
        "m.toml",
    )
    plain, secure = c.listeners
    assert not plain.tls and secure.tls
    assert secure.use_subject_as_username and secure.tls_version == "tlsv1.2"
    assert secure.where["cafile"] == ("m.toml", 8)


@pytest.mark.parametrize(
    ("conf", "line", "text"),
    [
        ("listener 8883\ncertfile /c.pem\n", 2, "'certfile' without 'keyfile'"),
        ("listener 8883\n\nkeyfile /k.pem\n", 3, "'keyfile' without 'certfile'"),
        ("listener 1883\nrequire_certificate true\n", 2, "no effect on a listener without TLS"),
        ("listener 1883\ncafile /ca.pem\n", 2, "'cafile' has no effect"),
        (
            "listener 8883\ncertfile /c\nkeyfile /k\nrequire_certificate true\n",
            4,
            "needs 'cafile' or 'capath'",
        ),
        ("listener 8883\ncrlfile /crl.pem\n", 2, "'crlfile' has no effect on a listener without"),
        ("listener 8883\ndhparamfile /dh.pem\n", 2, "'dhparamfile' has no effect"),
        ("listener 8883\ncertfile /c\nkeyfile /k\ncrlfile /a\ncrlfile /b\n", 5, "given twice"),
        ("listener 8883\ncertfile /c\ncertfile /d\n", 3, "given twice"),
        ("listener 8883\ntls_version tlsv1.1\n", 2, "requires TLS 1.2 or later"),
        ("listener 8883\ntls_version tls1.2\n", 2, "expected tlsv1.2 or tlsv1.3"),
        ("listener 8883\nrequire_certificate yes\n", 2, "expected true or false"),
        ("listener 8883\nciphers_tls1.3 TLS_AES_128_GCM_SHA256\n", 2, "cannot restrict TLS 1.3"),
        ("listener 8883\ntls_engine pkcs11\n", 2, "not supported yet"),
    ],
)
def test_mosquitto_conf_tls_errors(conf: str, line: int, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mosquitto_conf(conf, "m.conf")
    assert str(info.value).startswith(f"m.conf:{line}: ")
    assert text in str(info.value)


def test_identity_without_require_certificate_starts_with_a_notice() -> None:
    """Mosquitto starts with use_identity_as_username / use_subject_as_username (or crlfile)
    without require_certificate, and then refuses every CONNECT on that listener (no certificate
    is asked for); midge starts too and says so at startup, naming the line."""
    base = "listener 8883\ncertfile /c\nkeyfile /k\ncafile /ca\n"
    for option in ("use_identity_as_username true", "use_subject_as_username 1"):
        config = parse_mosquitto_conf(base + option + "\n", "m.conf")
        (notice,) = config.notices
        assert notice.startswith("m.conf:5: ")
        assert "every CONNECT on this listener is refused" in notice
    config = parse_mosquitto_conf(base + "crlfile /crl.pem\n", "m.conf")
    assert config.listeners[0].crlfile == "/crl.pem"
    assert config.notices == [
        "m.conf:5: 'crlfile' without 'require_certificate true' has no effect: client "
        "certificates are not asked for, so none is checked against the list"
    ]
    toml = parse_toml(
        '[[listener]]\nport = 8883\ncertfile = "/c"\nkeyfile = "/k"\n'
        "use_identity_as_username = true\n",
        "m.toml",
    )
    assert toml.notices[0].startswith("m.toml:5: 'use_identity_as_username true' without")


@pytest.mark.parametrize(
    ("toml", "line", "text"),
    [
        ('certfile = "/c"\n', 1, "is a listener option; put it in a [[listener]] table"),
        ('[[listener]]\nport = 1\ncertfile = "/c"\n', 3, "'certfile' without 'keyfile'"),
        (
            '[[listener]]\nport = 1\ncertfile = "/c"\nkeyfile = "/k"\nrequire_certificate = true\n',
            5,
            "needs 'cafile' or 'capath'",
        ),
        ('[[listener]]\nport = 1\ntls_version = "tlsv1"\n', 3, "requires TLS 1.2 or later"),
        ("[[listener]]\nport = 1\nrequire_certificate = 1\n", 3, "must be true or false"),
    ],
)
def test_toml_tls_errors(toml: str, line: int, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_toml(toml, "m.toml")
    assert str(info.value).startswith(f"m.toml:{line}: ")
    assert text in str(info.value)


def _listener_from(conf_path: Path) -> ListenerConfig:
    from midge.config import load_config

    return next(lst for lst in load_config(str(conf_path)).listeners if lst.tls)


def test_certificate_file_errors_name_the_line_and_the_fix(certs: Certs, tmp_path: Path) -> None:
    pki = certs.pki
    other_key = write_key(tmp_path / "other.key", new_key())
    encrypted = write_key(tmp_path / "enc.key", new_key(), passphrase=b"secret")
    not_pem = tmp_path / "garbage.pem"
    not_pem.write_text("hello\n")
    missing = str(tmp_path / "missing.pem")
    cases = [
        (f"certfile {missing}\nkeyfile {pki.server_key}\n", 2, "cannot read certfile"),
        (f"certfile {pki.server_cert}\nkeyfile {missing}\n", 3, "cannot read keyfile"),
        (f"certfile {tmp_path}\nkeyfile {pki.server_key}\n", 2, "is a directory"),
        (f"certfile {not_pem}\nkeyfile {pki.server_key}\n", 2, "holds no PEM certificate"),
        (f"certfile {pki.server_cert}\nkeyfile {not_pem}\n", 3, "holds no PEM private key"),
        (f"certfile {pki.server_cert}\nkeyfile {other_key}\n", 3, "is not the private key of"),
        (f"certfile {pki.server_cert}\nkeyfile {encrypted}\n", 3, "is encrypted"),
        (
            f"certfile {pki.server_cert}\nkeyfile {pki.server_key}\ncafile {missing}\n",
            4,
            "cannot read cafile",
        ),
        (
            f"certfile {pki.server_cert}\nkeyfile {pki.server_key}\ncafile {not_pem}\n",
            4,
            "holds no PEM certificate",
        ),
        (
            f"certfile {pki.server_cert}\nkeyfile {pki.server_key}\ncapath {missing}\n",
            4,
            "is not a directory",
        ),
        (
            f"certfile {pki.server_cert}\nkeyfile {pki.server_key}\nciphers NO-SUCH-CIPHER\n",
            4,
            "no usable cipher",
        ),
    ]
    for body, line, text in cases:
        conf = tmp_path / "m.conf"
        conf.write_text("listener 8883\n" + body)
        with pytest.raises(ConfigError) as info:
            make_context(_listener_from(conf))
        assert str(info.value).startswith(f"{conf}:{line}: "), (body, str(info.value))
        assert text in str(info.value), (body, str(info.value))


def test_bad_certificate_stops_midge_broker_with_the_line(certs: Certs, tmp_path: Path) -> None:
    """``midge broker`` with a key that does not match its certificate: one line on stderr
    naming file, line and fix, exit status 1, no traceback (mosquitto.conf and TOML)."""
    other_key = write_key(tmp_path / "other.key", new_key())
    conf = tmp_path / "midge.conf"
    conf.write_text(
        f"listener 0 127.0.0.1\ncertfile {certs.pki.server_cert}\nkeyfile {other_key}\n"
    )
    result = run_midge(["-c", str(conf)])
    assert result.returncode == 1
    assert result.stderr.startswith(f"midge: error: {conf}:3: keyfile '{other_key}' is not the")
    assert "Traceback" not in result.stderr
    toml = tmp_path / "midge.toml"
    toml.write_text(
        f'[[listener]]\nport = 0\naddress = "127.0.0.1"\ncertfile = "{tmp_path}/nope.crt"\n'
        f'keyfile = "{other_key}"\n'
    )
    result = run_midge(["-c", str(toml)])
    assert result.returncode == 1
    assert result.stderr.startswith(f"midge: error: {toml}:4: cannot read certfile")
    assert "Traceback" not in result.stderr


def test_context_settings_follow_mosquitto(certs: Certs) -> None:
    ctx = make_context(tls_listener(certs))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2  # never less than TLS 1.2
    assert ctx.verify_mode == ssl.CERT_NONE  # no client certificate asked for
    assert ctx.options & ssl.OP_NO_COMPRESSION
    ctx = make_context(mutual(certs, tls_version="tlsv1.3"))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_REQUIRED


# --------------------------------------------------------------------------------------------
# Handshakes


def test_tls_and_plain_listeners_side_by_side(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient]
) -> None:
    broker = make_broker(listeners=[ListenerConfig(port=0, host="127.0.0.1"), tls_listener(certs)])
    plain_port = broker.server.addresses[0][1]
    tls_port = broker.server.addresses[1][1]
    secure = tls_clients(tls_port, client_context(certs), 5)
    assert secure.tls.version() in ("TLSv1.2", "TLSv1.3")
    assert secure.connect("secure").reason_code == 0
    plain = RawClient("127.0.0.1", plain_port)
    try:
        assert plain.connect("plain").reason_code == 0
        secure.subscribe("t/#")
        plain.publish("t/1", b"over tcp")
        from midge.codec.packets import Publish

        got = secure.expect(Publish)
        assert (got.topic, got.payload) == ("t/1", b"over tcp")
    finally:
        plain.close()
    # Plain MQTT to the TLS port: the bytes are not a ClientHello; no CONNACK ever comes.
    wrong = RawClient("127.0.0.1", tls_port)
    try:
        wrong.send(_connect_packet())
        with pytest.raises((Closed, TimeoutError)):
            wrong.recv(2.0)
    finally:
        wrong.close()


def test_require_certificate(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient]
) -> None:
    broker = make_broker(listeners=[mutual(certs)])
    ok = tls_clients(broker.port, client_context(certs, certs.alice))
    assert ok.connect("alice").reason_code == 0
    # No certificate, a certificate from a CA the broker does not trust, an expired certificate.
    refused_by_tls(broker.port, client_context(certs))
    refused_by_tls(broker.port, client_context(certs, certs.mallory))
    refused_by_tls(broker.port, client_context(certs, certs.expired))
    for maximum in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        refused_by_tls(broker.port, client_context(certs, maximum=maximum))
        client = tls_clients(broker.port, client_context(certs, certs.bob, maximum=maximum))
        assert client.connect(f"bob-{maximum.name}").reason_code == 0


def test_tls_version_tlsv13_refuses_a_tls12_client(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient]
) -> None:
    broker = make_broker(listeners=[tls_listener(certs, tls_version="tlsv1.3")])
    with pytest.raises(ssl.SSLError):
        TlsClient(broker.port, client_context(certs, maximum=ssl.TLSVersion.TLSv1_2)).close()
    client = tls_clients(broker.port, client_context(certs))
    assert client.tls.version() == "TLSv1.3"
    assert client.connect("modern").reason_code == 0
    # The default allows TLS 1.2.
    broker12 = make_broker(listeners=[tls_listener(certs)])
    old = tls_clients(broker12.port, client_context(certs, maximum=ssl.TLSVersion.TLSv1_2))
    assert old.tls.version() == "TLSv1.2"
    assert old.connect("tls12").reason_code == 0


def test_ciphers_restrict_tls12(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient]
) -> None:
    broker = make_broker(listeners=[tls_listener(certs, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")])
    tls12 = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        TlsClient(
            broker.port,
            client_context(certs, maximum=tls12, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"),
        ).close()
    client = tls_clients(broker.port, client_context(certs, maximum=tls12))
    cipher = client.tls.cipher()
    assert cipher is not None and cipher[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert client.connect("cipher").reason_code == 0


def test_handshake_timeout(make_broker: Any, certs: Certs) -> None:
    """A client that opens a TCP connection to a TLS listener and says nothing is dropped after
    connect_timeout, like one that never sends CONNECT."""
    broker = make_broker(listeners=[tls_listener(certs)], connect_timeout=0.5)
    with socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT) as sock:
        start = time.monotonic()
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        assert data == b""
        assert time.monotonic() - start < 4.0


# --------------------------------------------------------------------------------------------
# Certificate identities


@pytest.mark.parametrize("version", [4, 5])
def test_use_identity_as_username(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient], version: int
) -> None:
    """The CN is the username; CONNECT's username and password are ignored and not checked."""
    recorder = Recorder()
    broker = make_broker(recorder, listeners=[mutual(certs, use_identity_as_username=True)])
    client = tls_clients(broker.port, client_context(certs, certs.alice), version)
    ack = client.connect("c1", username="mallory", password=b"anything")
    assert ack.reason_code == 0
    client.publish("t/1", b"x")
    assert recorder.wait("publish") == ("publish", "alice", "t/1")
    assert not [c for c in recorder.calls if c[0] == "authenticate"]
    client.subscribe("t/#")
    assert recorder.wait("subscribe") == ("subscribe", "alice", "t/#")


@pytest.mark.parametrize("version", [4, 5])
def test_certificate_without_cn_is_refused(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient], version: int
) -> None:
    broker = make_broker(Recorder(), listeners=[mutual(certs, use_identity_as_username=True)])
    client = tls_clients(broker.port, client_context(certs, certs.no_cn), version)
    ack = client.connect("nocn", username="u", password=b"p")
    assert ack.reason_code == (0x86 if version == 5 else 4)  # bad user name or password
    assert client.wait_closed(WAIT)


@pytest.mark.parametrize("version", [4, 5])
def test_identity_listener_refuses_a_client_without_certificate(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient], version: int
) -> None:
    """Mosquitto semantics (handle_connect.c): on a use_identity_as_username listener without
    require_certificate, no certificate is asked for, so every client is refused at CONNECT
    with "bad username or password" (v5 0x86, v3 4): one that has no certificate, and one that
    has one, which the handshake never asks it to send. With require_certificate, the same
    certificate is accepted (test_use_identity_as_username)."""
    recorder = Recorder()
    listener = tls_listener(certs, cafile=certs.pki.cafile, use_identity_as_username=True)
    broker = make_broker(recorder, listeners=[listener])
    for context in (client_context(certs), client_context(certs, certs.alice)):
        client = tls_clients(broker.port, context, version)
        ack = client.connect("anon", username="alice", password=b"pw")
        assert isinstance(ack, Connack)
        assert ack.reason_code == (0x86 if version == 5 else 4)
        assert client.wait_closed(WAIT)
    assert recorder.calls == []


def test_crlfile_refuses_revoked_certificates(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient]
) -> None:
    """crlfile: a client whose certificate the CA's list revokes fails the handshake; the
    others connect. A list from another CA does not cover this CA's clients, and then none of
    them is accepted (OpenSSL: "unable to get certificate CRL"), as in Mosquitto."""
    crl = certs.pki.crl("revoked-bob", certs.bob[0])
    broker = make_broker(listeners=[mutual(certs, crlfile=crl)])
    ok = tls_clients(broker.port, client_context(certs, certs.alice))
    assert ok.connect("alice").reason_code == 0
    for maximum in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        refused_by_tls(broker.port, client_context(certs, certs.bob, maximum=maximum))
    # The same broker without the list accepts bob.
    plain = make_broker(listeners=[mutual(certs)])
    bob = tls_clients(plain.port, client_context(certs, certs.bob))
    assert bob.connect("bob").reason_code == 0


def test_crlfile_and_dhparamfile_errors_name_the_line(certs: Certs, tmp_path: Path) -> None:
    base = (
        f"listener 8883\ncertfile {certs.pki.server_cert}\nkeyfile {certs.pki.server_key}\n"
        f"cafile {certs.pki.cafile}\nrequire_certificate true\n"
    )
    cases = [
        ("crlfile", str(tmp_path / "missing.crl"), "cannot read crlfile"),
        ("crlfile", certs.pki.cafile, "holds no PEM certificate revocation list"),
        ("dhparamfile", str(tmp_path / "missing.pem"), "cannot read dhparamfile"),
        ("dhparamfile", certs.pki.cafile, "holds no PEM Diffie-Hellman parameters"),
    ]
    for option, value, text in cases:
        conf = tmp_path / "m.conf"
        conf.write_text(base + f"{option} {value}\n")
        with pytest.raises(ConfigError) as info:
            make_context(_listener_from(conf))
        assert str(info.value).startswith(f"{conf}:6: "), info.value
        assert text in str(info.value)


def test_dhparamfile_enables_dhe_ciphers(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient], tmp_path: Path
) -> None:
    """dhparamfile: with the parameters loaded, a TLS 1.2 client offering only a DHE cipher
    connects; without them the same client cannot (no DH parameters, no DHE)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.security.certs import issue

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_cert = issue(
        name(("CN", "localhost")),
        rsa_key,  # type: ignore[arg-type]
        certs.pki.ca,
        certs.pki.ca_key,
        server=True,
    )
    certfile = tmp_path / "rsa.crt"
    certfile.write_bytes(rsa_cert.public_bytes(serialization.Encoding.PEM))
    keyfile = tmp_path / "rsa.key"
    keyfile.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    dh = run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
              "dh_param:ffdhe2048"])  # fmt: skip
    assert dh.returncode == 0, dh.stderr
    dhfile = tmp_path / "dh.pem"
    dhfile.write_text(dh.stdout)
    dhe = "DHE-RSA-AES128-GCM-SHA256"

    def listener(**options: Any) -> ListenerConfig:
        return ListenerConfig(
            port=0, host="127.0.0.1", certfile=str(certfile), keyfile=str(keyfile), **options
        )

    with_dh = make_broker(listeners=[listener(dhparamfile=str(dhfile))])
    context = client_context(certs, maximum=ssl.TLSVersion.TLSv1_2, ciphers=dhe)
    client = tls_clients(with_dh.port, context)
    cipher = client.tls.cipher()
    assert cipher is not None and cipher[0] == dhe
    assert client.connect("dhe").reason_code == 0
    without = make_broker(listeners=[listener()])
    with pytest.raises(ssl.SSLError):
        TlsClient(without.port, context).close()


def test_use_subject_as_username_matches_openssl(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient]
) -> None:
    """The subject as Mosquitto prints it (X509_NAME_print_ex, XN_FLAG_RFC2253), checked against
    ``openssl x509 -nameopt RFC2253`` (the same OpenSSL function) for a subject with RFC 2253
    specials, a multi-valued RDN and non-ASCII text."""
    subject = name(
        ("C", "GB"),
        ("ST", "Nottinghamshire"),
        ("L", "Nottingham"),
        ("O", 'Server, "Inc" <a+b>;\\x'),
        [("OU", "Production"), ("DC", "example")],
        ("CN", "#test client é "),
    )
    cert = certs.pki.client("subject", subject)
    openssl = run(["openssl", "x509", "-in", cert[0], "-noout", "-subject", "-nameopt", "RFC2253"])
    expected = openssl.stdout.strip().removeprefix("subject=")
    assert expected.startswith("CN=\\#test client \\C3\\A9\\ ,")
    recorder = Recorder()
    broker = make_broker(recorder, listeners=[mutual(certs, use_subject_as_username=True)])
    client = tls_clients(broker.port, client_context(certs, cert))
    assert client.connect("subject").reason_code == 0
    client.publish("t", b"x")
    assert recorder.wait("publish")[1] == expected
    # The man page's example form.
    assert rfc2253(
        ((("countryName", "GB"),), (("organizationName", "Server"),), (("commonName", "a b"),))
    ) == ("CN=a b,O=Server,C=GB")


def test_identity_takes_priority_over_subject(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient]
) -> None:
    recorder = Recorder()
    listener = mutual(certs, use_identity_as_username=True, use_subject_as_username=True)
    broker = make_broker(recorder, listeners=[listener])
    client = tls_clients(broker.port, client_context(certs, certs.alice))
    assert client.connect("both").reason_code == 0
    client.publish("t", b"x")
    assert recorder.wait("publish")[1] == "alice"


def test_require_certificate_alone_keeps_username_and_password(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient]
) -> None:
    recorder = Recorder()
    broker = make_broker(recorder, listeners=[mutual(certs)])
    client = tls_clients(broker.port, client_context(certs, certs.alice))
    assert client.connect("c", username="carol", password=b"pw").reason_code == 0
    assert recorder.wait("authenticate") == ("authenticate", "carol", b"pw")


# --------------------------------------------------------------------------------------------
# Reload


def test_reload_certificates_for_new_connections(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient], tmp_path: Path
) -> None:
    cert = tmp_path / "live.crt"
    key = tmp_path / "live.key"
    shutil.copy(certs.pki.server_cert, cert)
    shutil.copy(certs.pki.server_key, key)
    listener = ListenerConfig(port=0, host="127.0.0.1", certfile=str(cert), keyfile=str(key))
    broker = make_broker(listeners=[listener])
    before = tls_clients(broker.port, client_context(certs))
    assert before.connect("before").reason_code == 0
    assert before.peer_subject()["commonName"] == "localhost"

    new_cert, new_key_path = certs.pki.server("renewed", cn="renewed.localhost")
    shutil.copy(new_cert, cert)
    shutil.copy(new_key_path, key)
    assert broker.call(broker.server.reload_certificates) == []
    after = tls_clients(broker.port, client_context(certs))
    subject = after.peer_subject()
    assert subject["commonName"] == "renewed.localhost"
    assert after.connect("after").reason_code == 0
    tls12 = tls_clients(broker.port, client_context(certs, maximum=ssl.TLSVersion.TLSv1_2))
    subject = tls12.peer_subject()
    assert subject["commonName"] == "renewed.localhost"
    # The established connection is untouched.
    before.subscribe("a/b")

    # A broken file: the error is reported and the current certificates stay.
    key.write_text("not a key\n")
    errors = broker.call(broker.server.reload_certificates)
    assert len(errors) == 1 and "holds no PEM private key" in str(errors[0])
    still = tls_clients(broker.port, client_context(certs))
    subject = still.peer_subject()
    assert subject["commonName"] == "renewed.localhost"


# --------------------------------------------------------------------------------------------
# Third-party clients


@pytest.mark.interop
@pytest.mark.parametrize("version", [4, 5])
def test_mosquitto_clients_over_tls(make_broker: Any, certs: Certs, version: int) -> None:
    """mosquitto_sub/pub with --cafile and -u/-P on a TLS listener, and with --cert/--key on a
    require_certificate + use_identity_as_username listener."""
    recorder = Recorder()
    broker = make_broker(
        recorder,
        listeners=[tls_listener(certs), mutual(certs, use_identity_as_username=True)],
    )
    server_tls, mutual_port = broker.server.addresses[0][1], broker.server.addresses[1][1]
    ca = ["--cafile", certs.pki.cafile]
    sub = MosquittoSub(server_tls, ["t/#"], version, args=[*ca, "-u", "sub", "-P", "pw"])
    try:
        mosquitto_pub(
            server_tls, "t/1", *ca, "-u", "writer", "-P", "secret", version=version, message="one"
        )
        alice = ["--cert", certs.alice[0], "--key", certs.alice[1]]
        mosquitto_pub(mutual_port, "t/2", *ca, *alice, version=version, message="two")
        got = sub.wait_messages(2)
        assert [(m.topic, m.payload) for m in got] == [("t/1", b"one"), ("t/2", b"two")]
    finally:
        sub.close()
    assert ("authenticate", "writer", b"secret") in recorder.calls
    assert ("publish", "alice", "t/2") in recorder.calls
    # No certificate, or one from an untrusted CA: mosquitto_pub fails.
    for extra in ([], ["--cert", certs.mallory[0], "--key", certs.mallory[1]]):
        result = run(pub_command(mutual_port, version, *ca, *extra))
        assert result.returncode != 0, result
    # A client that does not trust the server's CA refuses the broker.
    result = run(pub_command(server_tls, version, "--cafile", certs.pki.other_cafile))
    assert result.returncode != 0 and "TLS error" in result.stderr


@pytest.mark.interop
@pytest.mark.parametrize("version", [4, 5])
def test_paho_over_tls(make_broker: Any, certs: Certs, version: int) -> None:
    recorder = Recorder()
    broker = make_broker(recorder, listeners=[mutual(certs, use_identity_as_username=True)])
    client = PahoClient("localhost", broker.port, "paho-tls", version)
    try:
        client.client.tls_set(
            ca_certs=certs.pki.cafile, certfile=certs.bob[0], keyfile=certs.bob[1]
        )
        client.connect()
        assert client.subscribe("p/#", 1) == [1]
        client.wait_published(client.publish("p/1", b"via paho", 1))
        message = client.expect()
        assert (message.topic, message.payload) == ("p/1", b"via paho")
        assert recorder.wait("publish")[1] == "bob"
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# The same mosquitto.conf and certificates in midge and in the real mosquitto


def _start_mosquitto(conf: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc


def _wait_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("mosquitto did not listen")


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")
@pytest.mark.parametrize("broker_kind", ["midge", "mosquitto"])
def test_same_conf_in_midge_and_mosquitto(certs: Certs, tmp_path: Path, broker_kind: str) -> None:
    """One mosquitto.conf with a plain and a mutual-TLS listener (require_certificate,
    use_identity_as_username, tls_version, crlfile) and a TLS listener with
    use_identity_as_username but no require_certificate, and the same certificates: the same
    clients get the same answers from both brokers (``allow_anonymous true`` for the plain
    listener)."""
    plain, secure, ident = free_port(), free_port(), free_port()
    # mosquitto, started as root, reads its files as the mosquitto user: give it a readable copy.
    shared = Path(tempfile.mkdtemp(prefix="midge-tls-"))
    shared.chmod(0o755)
    certs.pki.crl("revoked", certs.bob[0])
    for name_ in ("server.crt", "server.key", "ca.crt", "revoked.crl"):
        shutil.copy(certs.dir / name_, shared / name_)
        (shared / name_).chmod(0o644)
    conf = shared / "mosquitto.conf"
    tls_files = (
        f"certfile {shared}/server.crt\nkeyfile {shared}/server.key\ncafile {shared}/ca.crt\n"
    )
    conf.write_text(
        "per_listener_settings false\nallow_anonymous true\n"
        f"listener {plain} 127.0.0.1\n"
        f"listener {secure} 127.0.0.1\n"
        f"{tls_files}"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        "tls_version tlsv1.2\n"
        f"crlfile {shared}/revoked.crl\n"
        # use_identity_as_username without require_certificate: every client refused
        f"listener {ident} 127.0.0.1\n"
        f"{tls_files}"
        "use_identity_as_username true\n"
    )
    proc: Any
    try:
        if broker_kind == "mosquitto":
            proc = _start_mosquitto(conf)
            _wait_port(secure, proc)
        else:
            proc = ProcBroker(["-c", str(conf)], listeners=3, cwd=tmp_path)
            proc.wait_listening()
    except BaseException:
        shutil.rmtree(shared, ignore_errors=True)
        raise
    try:
        ca = ["--cafile", certs.pki.cafile]
        alice = ["--cert", certs.alice[0], "--key", certs.alice[1]]
        for version in (4, 5):
            sub = MosquittoSub(plain, ["s/#"], version)
            try:
                result = run(pub_command(secure, version, *ca, *alice, "-t", "s/1"))
                assert result.returncode == 0, result.stderr
                assert sub.wait_messages(1)[0].payload == b"hello"
            finally:
                sub.close()
            for extra in (
                [],
                ["--cert", certs.mallory[0], "--key", certs.mallory[1]],
                ["--cert", certs.expired[0], "--key", certs.expired[1]],
                ["--cert", certs.bob[0], "--key", certs.bob[1]],  # revoked by crlfile
            ):
                result = run(pub_command(secure, version, *ca, *extra))
                assert result.returncode != 0, (extra, result)
            # Refused at CONNECT, with or without a certificate: "bad username or password".
            for extra in ([], alice):
                result = run(pub_command(ident, version, *ca, *extra))
                assert result.returncode != 0, (extra, result)
                assert "not authorised" in result.stderr.lower() or "bad user" in (
                    result.stderr.lower()
                ), result.stderr
            # TLS 1.2 is allowed by tls_version tlsv1.2 (the minimum).
            result = run(pub_command(secure, version, *ca, *alice, "--tls-version", "tlsv1.2"))
            assert result.returncode == 0, result.stderr
    finally:
        if broker_kind == "mosquitto":
            proc.terminate()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        else:
            proc.close()
        shutil.rmtree(shared, ignore_errors=True)


def test_reload_takes_new_ca_certificates(
    make_broker: Any, certs: Certs, tls_clients: Callable[..., TlsClient], tmp_path: Path
) -> None:
    """The CA file is read again too: a client refused before is accepted after the reload
    (the verification of new handshakes uses the new context's CA store)."""
    cafile = tmp_path / "live-ca.crt"
    shutil.copy(certs.pki.other_cafile, cafile)
    listener = tls_listener(certs, cafile=str(cafile), require_certificate=True)
    broker = make_broker(listeners=[listener])
    refused_by_tls(broker.port, client_context(certs, certs.alice))
    shutil.copy(certs.pki.cafile, cafile)
    assert broker.call(broker.server.reload_certificates) == []
    client = tls_clients(broker.port, client_context(certs, certs.alice))
    assert client.connect("alice").reason_code == 0
