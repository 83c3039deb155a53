"""Issue 11: Debian's own mosquitto.conf, and the example mosquitto.conf the Debian package ships
with every directive uncommented, start midge and mean what they mean to Mosquitto.

- Debian's ``/etc/mosquitto/mosquitto.conf`` is read as it is (its paths are checked), then run
  from a copy whose paths point into a temporary directory. It is not run as it is: it would
  write /run/mosquitto, /var/lib/mosquitto and /var/log/mosquitto of the machine running the
  tests and listen on port 1883, which other tests (and a system mosquitto) may use. The copy
  rewrites exactly those four paths (pid_file, persistence_location, log_dest file, include_dir)
  and nothing else; the port is given with ``-p`` (the file defines no listener, so ``-p``
  applies, as in Mosquitto).
- The example (``/usr/share/doc/mosquitto/examples/mosquitto.conf``) is turned into a
  configuration by :func:`uncomment_example`: each ``#directive value`` line is uncommented, a
  directive without a value gets a sample value (:data:`SAMPLES`, files made here), and the
  directives that belong to later issues or that midge refuses for good are left commented,
  each with its reason (:data:`LEFT_OUT`).
"""

from __future__ import annotations

import gzip
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from midge.auth.passwd import hash_password
from midge.codec.packets import Connack, Publish
from midge.config import parse_mosquitto_conf
from tests.procbroker import ProcBroker, free_port
from tests.rawclient import RawClient
from tests.security.certs import Pki, name

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0
DEBIAN_CONF = Path("/etc/mosquitto/mosquitto.conf")
MOSQUITTO = shutil.which("mosquitto")
EXAMPLES = Path("/usr/share/doc/mosquitto/examples")

#: Directives of the example left commented, with the reason. Sections of the example whose
#: every directive is left out are in :data:`LEFT_OUT_SECTIONS`.
LEFT_OUT = {
    "psk_file": "refused: Python's ssl module (3.11) has no TLS-PSK support",
    "auth_plugin": "refused: Mosquitto's C plugins cannot load in midge (auth_python instead)",
    "ciphers_tls1.3": "refused: Python's ssl module cannot restrict TLS 1.3 cipher suites",
}
#: Sections of the example (their title line) left out whole, with the reason.
LEFT_OUT_SECTIONS = {
    "Pre-shared-key based SSL/TLS support": "refused: Python's ssl module (3.11) has no TLS-PSK "
    "support (psk_hint, and the section's own ciphers and use_identity_as_username lines)",
    "Bridges": "issue 13 (bridges)",
}

#: Sample values for the example's directives that have none ({dir}: the test's directory,
#: {port}: a free port).
SAMPLES = {
    "persistent_client_expiration": "14d",
    "pid_file": "{dir}/run/mosquitto.pid",
    "listener": "{port} 127.0.0.1",
    "socket_domain": "ipv4",
    "bind_interface": "lo",
    "certfile": "{dir}/server.crt",
    "keyfile": "{dir}/server.key",
    "ciphers": "HIGH:!aNULL",
    "crlfile": "{dir}/ca.crl",
    "dhparamfile": "{dir}/dh.pem",
    "cafile": "{dir}/ca.crt",
    "capath": "{dir}/capath",
    "persistence_location": "{dir}/data/",
    "log_facility": "5",
    "log_timestamp_format": "%Y-%m-%dT%H:%M:%S",
    "password_file": "{dir}/passwd",
    "acl_file": "{dir}/acl",
    "include_dir": "{dir}/conf.d",
    # Chosen to leave _check_clients' answers alone: both client ids start with "a"; the ACL
    # allows ex/# with or without the mount point.
    "mount_point": "m/",
    "use_username_as_clientid": "false",
    "clientid_prefixes": "a",
    # The example's listener speaks mqtt: http_dir is accepted there and serves nothing.
    "http_dir": "{dir}",
    "websockets_headers_size": "4096",
}

#: Example values Mosquitto itself refuses, replaced (with why): the example would not start
#: Mosquitto 2.0.11 either.
OVERRIDES = {
    "max_packet_size": (
        "1048576",
        "Mosquitto 2.0.11 refuses the example's value 0: 'Invalid max_packet_size value (0)'",
    ),
}

_DIRECTIVE = re.compile(r"#([a-z][a-z0-9_.]*)(?:[ \t]+(.*))?$")
_RULE = re.compile(r"# ?[=-]{20,}$")


def example_text() -> str:
    for file in ("mosquitto.conf", "mosquitto.conf.gz", "mosquitto.conf.example"):
        path = EXAMPLES / file
        if path.exists():
            data = path.read_bytes()
            return (gzip.decompress(data) if file.endswith(".gz") else data).decode()
    pytest.skip("the Debian mosquitto package's example mosquitto.conf is not installed")


def uncomment_example(text: str, directory: Path, port: int) -> tuple[str, dict[str, str]]:
    """The example with its directives uncommented (sample values where it gives none), and
    the directives left commented, each with its reason."""
    skipped = LEFT_OUT
    out: list[str] = []
    left: dict[str, str] = {}
    chapter = section = ""  # the titles between "# ====" rules, and between "# ----" rules
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if 0 < i < len(lines) - 1 and _RULE.match(lines[i - 1]) and _RULE.match(lines[i + 1]):
            title = line.lstrip("# ").strip()
            if "=" in lines[i - 1]:
                chapter, section = title, ""
            else:
                section = title
        match = _DIRECTIVE.match(line)
        if match is None:
            out.append(line)
            continue
        name, value = match.group(1), (match.group(2) or "").strip()
        reason = (
            LEFT_OUT_SECTIONS.get(chapter) or LEFT_OUT_SECTIONS.get(section) or skipped.get(name)
        )
        if reason is not None:
            left[name] = reason
            out.append(line)
            continue
        if name in OVERRIDES:
            value = OVERRIDES[name][0]
        if not value:
            assert name in SAMPLES, f"no sample value for '{name}' (add it to SAMPLES)"
            value = SAMPLES[name].format(dir=directory, port=port)
        out.append(f"{name} {value}")
    return "\n".join(out) + "\n", left


def _files(directory: Path) -> None:
    """The files the sample values name: certificates, a CRL, DH parameters, a password file
    (alice / secret), an ACL, an include directory with one file."""
    pki = Pki(directory)
    revoked = pki.client("revoked", name(("CN", "revoked")))
    pki.crl("ca", revoked[0])  # ca.crl
    dh = subprocess.run(
        ["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "dh_param:ffdhe2048"],
        capture_output=True,
        text=True,
        check=True,
    )
    (directory / "dh.pem").write_text(dh.stdout)
    (directory / "capath").mkdir()
    (directory / "passwd").write_text(f"alice:{hash_password(b'secret').encode()}\n")
    (directory / "acl").write_text("user alice\ntopic readwrite ex/#\ntopic readwrite m/ex/#\n")
    (directory / "conf.d").mkdir()
    (directory / "conf.d" / "local.conf").write_text("# an operator's file, read by include_dir\n")
    for sub in ("run", "data"):
        (directory / sub).mkdir()
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _tls_client(port: int, cafile: str, version: int) -> RawClient:
    client = RawClient("127.0.0.1", port, version=version)
    context = ssl.create_default_context(cafile=cafile)
    client.sock = context.wrap_socket(client.sock, server_hostname="localhost")
    return client


def test_the_example_with_every_directive_uncommented_starts_midge() -> None:
    """Every directive of the example that midge implements (all but :data:`LEFT_OUT`, the
    sections of :data:`LEFT_OUT_SECTIONS`), uncommented:
    the file is read with each directive's meaning, and ``midge broker`` starts with it (as
    root, it then runs as the example's ``user mosquitto``), serves a TLS client that logs in
    with the password file and is held to the ACL, and refuses an anonymous one. The real
    mosquitto, given the same file, answers the same clients the same way."""
    directory = Path(tempfile.mkdtemp(prefix="midge-example-"))
    try:
        directory.chmod(0o755)
        _files(directory)
        port = free_port()
        text, left = uncomment_example(example_text(), directory, port)
        assert set(left) >= set(LEFT_OUT), left
        conf = directory / "mosquitto.conf"
        conf.write_text(text)
        conf.chmod(0o644)

        config = parse_mosquitto_conf(text, str(conf))
        (listener,) = config.listeners
        assert (listener.port, listener.host) == (port, "127.0.0.1")
        assert listener.socket_domain == "ipv4" and listener.bind_interface == "lo"
        assert listener.tls and listener.crlfile == f"{directory}/ca.crl"
        assert listener.dhparamfile == f"{directory}/dh.pem"
        assert listener.capath == f"{directory}/capath" and listener.ciphers == "HIGH:!aNULL"
        assert not listener.require_certificate and listener.protocol == "mqtt"
        assert config.user == "mosquitto"
        assert config.persistent_client_expiration == 14 * 86400
        assert config.durability == "none"  # persistence false, as the example says
        assert config.allow_anonymous is False and config.password_file and config.acl_file
        assert config.max_inflight_messages == 20 and config.max_queued_messages == 1000
        assert config.max_keepalive == 65535 and config.auto_id_prefix == "auto-"
        assert config.max_packet_size == 1048576
        assert config.log_dest == ["stderr"] and config.log_timestamp_format
        assert config.log_type == ["error", "warning", "notice", "information"]
        notices = "\n".join(config.notices)
        assert config.log_facility == 5  # log_dest syslog's local5 (issue 14)
        for said in ("autosave_interval", "'crlfile' without"):
            assert said in notices, notices

        target = None
        if os.geteuid() == 0:
            try:
                target = pwd.getpwnam("mosquitto")
            except KeyError:
                target = pwd.getpwnam("nobody")  # Mosquitto's fallback, and midge's
            os.chown(directory / "run", target.pw_uid, target.pw_gid)
        with ProcBroker(["-c", str(conf)], cwd=directory) as broker:
            broker.wait_listening()
            if target is not None:
                uid = Path(f"/proc/{broker.proc.pid}/status").read_text()
                assert f"\nUid:\t{target.pw_uid}\t" in uid
            assert (directory / "run" / "mosquitto.pid").read_text().strip() == str(broker.proc.pid)
            _check_clients(port, str(directory / "ca.crt"))
            assert broker.stop() == 0
        if MOSQUITTO is not None:
            # The same file starts the real Mosquitto, and its clients get the same answers.
            other = free_port()
            conf.write_text(text.replace(f"listener {port} ", f"listener {other} "))
            proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                _wait_port(other, proc)
                _check_clients(other, str(directory / "ca.crt"))
            finally:
                proc.terminate()
                proc.communicate(timeout=10)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _wait_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {proc.communicate()[1]}") from None
            assert time.monotonic() < deadline, "mosquitto did not listen"
            time.sleep(0.05)


def _check_clients(port: int, cafile: str) -> None:
    """alice (password file) publishes and receives on the topics the ACL gives her, not on
    others; an anonymous client is refused (allow_anonymous false): v5 0x87, v3 5."""
    for version in (4, 5):
        alice = _tls_client(port, cafile, version)
        ack = alice.connect(f"alice{version}", username="alice", password=b"secret")
        assert isinstance(ack, Connack) and ack.reason_code == 0
        alice.subscribe("ex/#", qos=1)
        alice.publish("ex/1", b"allowed", qos=0)
        alice.publish("elsewhere", b"denied by the ACL", qos=0)
        packet = alice.recv(WAIT)
        assert isinstance(packet, Publish) and packet.payload == b"allowed"
        alice.close()
        anonymous = _tls_client(port, cafile, version)
        ack = anonymous.connect(f"anon{version}")
        assert isinstance(ack, Connack)
        assert ack.reason_code == (0x87 if version == 5 else 5)
        anonymous.close()


def test_every_example_directive_is_uncommented_or_left_out_with_a_reason(
    tmp_path: Path,
) -> None:
    """The generator misses nothing: each ``#directive`` line of the example is either
    uncommented or named in the left-out list with its reason."""
    text = example_text()
    generated, left = uncomment_example(text, tmp_path, 1883)
    names = {m.group(1) for m in map(_DIRECTIVE.match, text.splitlines()) if m}
    active = {m.group(1) for m in map(re.compile(r"([a-z][a-z0-9_.]*) ").match,
                                         generated.splitlines()) if m}  # fmt: skip
    assert names <= active | set(left), names - active - set(left)
    for reason in left.values():
        assert reason.startswith(("issue 13", "refused: ", "pending i11-"))


@pytest.mark.skipif(not DEBIAN_CONF.exists(), reason="Debian's mosquitto.conf is not installed")
def test_debian_conf_as_shipped() -> None:
    """/etc/mosquitto/mosquitto.conf as Debian ships it means what it means to Mosquitto."""
    config = parse_mosquitto_conf(DEBIAN_CONF.read_text(), str(DEBIAN_CONF))
    assert config.pid_file == "/run/mosquitto/mosquitto.pid"
    assert config.durability == "fsync"  # persistence true
    assert config.data_dir == "/var/lib/mosquitto/"
    assert config.persistence_file is None  # mosquitto.db, Mosquitto's default name
    assert config.log_dest == ["file"] and config.log_file == "/var/log/mosquitto/mosquitto.log"
    assert config.local_only  # no listener: 127.0.0.1:1883 only, as Mosquitto 2
    assert [(lst.host, lst.port) for lst in config.listeners] == [("127.0.0.1", 1883)]


@pytest.mark.skipif(not DEBIAN_CONF.exists(), reason="Debian's mosquitto.conf is not installed")
def test_debian_conf_runs_from_a_copy() -> None:
    """A copy of Debian's file with its four paths moved into a temporary directory: midge
    writes the pid file, logs to the file, reads the include directory, keeps its database
    (``mosquitto.db`` in persistence_location), and a retained message survives a restart."""
    directory = Path(tempfile.mkdtemp(prefix="midge-debian-"))
    try:
        moved = {
            "/run/mosquitto/": f"{directory}/run/",
            "/var/lib/mosquitto/": f"{directory}/lib/",
            "/var/log/mosquitto/": f"{directory}/log/",
            "/etc/mosquitto/conf.d": f"{directory}/conf.d",
        }
        text = DEBIAN_CONF.read_text()
        for old, new in moved.items():
            assert old in text, old
            text = text.replace(old, new)
        for sub in ("run", "lib", "log"):
            (directory / sub).mkdir()
        shutil.copytree("/etc/mosquitto/conf.d", directory / "conf.d")
        conf = directory / "mosquitto.conf"
        conf.write_text(text)
        port = free_port()
        for round_ in range(2):
            with ProcBroker(["-c", str(conf), "-p", str(port)], cwd=directory) as broker:
                broker.wait_listening()
                pid = (directory / "run" / "mosquitto.pid").read_text().strip()
                assert pid == str(broker.proc.pid)
                client = RawClient("127.0.0.1", port)
                client.connect(f"debian{round_}")  # local only mode: anonymous allowed
                if round_ == 0:
                    client.publish("debian/kept", b"retained", qos=1, retain=True)
                else:
                    client.subscribe("debian/kept", qos=1)
                    packet = client.recv(WAIT)
                    assert isinstance(packet, Publish) and packet.payload == b"retained"
                client.close()
                assert broker.stop() == 0
            assert not (directory / "run" / "mosquitto.pid").exists()
            assert (directory / "lib" / "mosquitto.db").exists()
            assert "running" in (directory / "log" / "mosquitto.log").read_text()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
