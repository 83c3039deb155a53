"""More of ``midge pub`` / ``midge sub`` / ``midge rr`` side by side with Debian's
mosquitto_pub / mosquitto_sub / mosquitto_rr 2.0.11: ``-d`` (the same debug lines), ``-V mqttv31``,
``--ws`` (midge's own: Mosquitto 2.0's tools have none), and what a raw server sees of
``-A``, ``--tls-alpn``, ``--ciphers`` and a several-``-t`` SUBSCRIBE.

The raw server (:class:`RawServer`) is a real socket on loopback that answers CONNECT and
SUBSCRIBE with fixed acknowledgements and records each packet's bytes and the peer's address
(and, over TLS, the ALPN protocol and cipher agreed): both tools are run against it in turn and
what they sent is compared byte for byte.
"""

from __future__ import annotations

import io
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from midge.tools.options import UsageError, parse
from tests.differential.harness import midge, mosquitto, needs_mosquitto
from tests.interop.test_cli_tools import Pair, _broker, _cmd, _pub, _responder, _wait, needs_clients
from tests.procbroker import free_port

pytestmark = [needs_mosquitto, needs_clients]

#: Generated client identifiers: a broker's assigned ones (Mosquitto's form, midge's too) and
#: the MQTT 3.1 ones libmosquitto ("mosq-") and midge.client ("midge-") make up.
GENERATED_ID = re.compile(rb"auto-[0-9A-F]{8}(?:-[0-9A-F]{4}){3}-[0-9A-F]{12}|mosq-[0-9A-Za-z]{18}"
                          rb"|midge-[0-9A-Za-z]{17}")  # fmt: skip


def _ids(data: bytes) -> bytes:
    return GENERATED_ID.sub(b"<generated id>", data)


def _debug_lines(out: bytes) -> list[bytes]:
    return [
        line
        for line in out.splitlines()
        if line.startswith((b"Client ", b"Subscribed (mid", b"Received DISCONNECT"))
    ]


def _run(
    tool: str, midge_tool: bool, args: list[str], stdin: bytes | None = None
) -> tuple[int, bytes, bytes]:
    proc = subprocess.run(
        [*_cmd(tool, midge_tool), *args], input=stdin, capture_output=True, timeout=30
    )
    return proc.returncode, proc.stdout, proc.stderr


# ---------------------------------------------------------------------------------------------
# -d


@pytest.mark.parametrize("kind", ["midge", "mosquitto"])
def test_debug_lines_side_by_side(kind: str) -> None:
    """``-d`` prints the same lines as mosquitto's tools (generated client ids aside): pub at
    each QoS and version, sub with several -t, -U, -E, -C and messages at QoS 0/1 (QoS 2:
    the same lines, but libmosquitto prints the message after PUBREL and midge at PUBLISH),
    rr with its response, and -V mqttv31."""
    with _broker(kind) as port:
        p = ["-p", str(port)]
        for args, stdin in (
            (["-t", "d/0", "-m", "hello"], None),
            (["-t", "d/1", "-m", "hello", "-q", "1", "-r"], None),
            (["-t", "d/2", "-m", "hello", "-q", "2", "-i", "fixed-id"], None),
            (["-t", "d/3", "-n", "-q", "1", "-V", "5"], None),
            (["-t", "d/4", "-m", "v5", "-q", "2", "-V", "mqttv5", "-D", "publish",
              "user-property", "k", "v"], None),
            (["-t", "d/5", "-m", "old", "-q", "1", "-V", "mqttv31"], None),
            (["-t", "d/6", "-m", "x", "--repeat", "3", "-V", "31"], None),
            (["-t", "d/7", "-l", "-q", "1"], b"one\ntwo\n"),
            (["-t", "d/8", "-m", "q", "--quiet", "-q", "1", "-V", "5"], None),
        ):  # fmt: skip
            (mcode, mout, _), (code, out, err) = (
                _run("pub", m, [*p, "-d", *args], stdin) for m in (False, True)
            )
            if "-l" in args:  # mosquitto_pub reads the next line before or after the PUBACK
                out, mout = (b"".join(sorted(o.splitlines(True))) for o in (out, mout))
            assert (code, _ids(out)) == (mcode, _ids(mout)), (args, out, mout, err)
            assert b"sending CONNECT" in out and b"sending DISCONNECT" in out
        for args in (
            ["-t", "e/1", "-t", "e/+", "-q", "1", "-E"],
            ["-V", "5", "-t", "a", "--retain-as-published", "-E", "-i", "me"],
            ["-t", "a", "--retain-as-published", "-E", "-V", "31"],
            ["-t", "d/1", "-C", "1", "--quiet"],
            ["-t", "d/1", "-C", "1", "-V", "mqttv31", "-v"],
            # -U right behind the SUBSCRIBE; the UNSUBACKs come in the same read as the
            # retained message: the debug lines are compared, and the message lines.
            ["-V", "5", "-t", "d/1", "-t", "b", "-U", "b", "-U", "c", "-C", "1"],
        ):
            (mcode, mout, _), (code, out, err) = (
                _run("sub", m, [*p, "-d", *args, "-W", "10"]) for m in (False, True)
            )
            if "-U" in args:  # mosquitto_sub leaves at once; midge may have read the UNSUBACKs
                lines = [x for x in _debug_lines(_ids(out)) if not x.endswith(b"UNSUBACK")]
                assert lines == _debug_lines(_ids(mout)), (out, mout)
                rest = [x for x in _ids(out).splitlines() if not x.endswith(b"UNSUBACK")]
                assert rest[-2:] == _ids(mout).splitlines()[-2:] == [rest[-2], rest[-1]]
                assert rest[-2] == b"hello" and code == mcode == 0
            else:
                assert (code, _ids(out)) == (mcode, _ids(mout)), (args, out, mout, err)
        # Live messages, one at a time, to subscribers at QoS 1 and 2 (v3.1.1 and v5).
        # mosquitto_sub flushes its output after a message, not after a debug line: a retained
        # message tells that both have subscribed.
        _pub(port, "-t", "live/ready", "-m", "ready", "-r")
        live = ["-d", "-t", "live/#", "-C", "5", "-W", "20"]
        pairs = [
            Pair(port, [*live, "-t", "other", "-q", "1"], b"ready"),
            Pair(port, [*live, "-V", "5", "-q", "2", "-v"], b"ready"),
        ]
        _wait(pairs)
        for topic, qos in (("live/a", "0"), ("live/b", "1"), ("live/c", "2"), ("live/d", "1")):
            _pub(port, "-t", topic, "-m", f"at qos {qos}", "-q", qos)
            _wait(pairs, marker=f"'{topic}'".encode())
            _wait(pairs, marker=f"at qos {qos}".encode())
            if qos == "2":  # midge prints the message before PUBREL, libmosquitto after PUBCOMP
                _wait(pairs[1:], marker=b"sending PUBCOMP")
        for pair in pairs:
            codes, (mout, out), errs = pair.finish()
            assert codes == [0, 0], (codes, errs)
            assert _debug_lines(_ids(out)) == _debug_lines(_ids(mout)), (pair.args, out, mout)
            assert _ids(out).splitlines()[-1] == _ids(mout).splitlines()[-1]
            if "-V" not in pair.args:  # QoS <= 1: the whole output, in order
                assert _ids(out) == _ids(mout), (out, mout)
            assert b"received PUBLISH (d0, q1, r0, m" in out and b"at qos 2" in out
        # rr: the request and its response
        stop, ready = threading.Event(), threading.Event()
        thread = _responder(port, stop, ready)
        assert ready.wait(10)
        rr = ["-t", "rr/request", "-e", "rr/response", "-m", "ping", "-q", "1", "-W", "10"]
        (mcode, mout, _), (code, out, err) = (_run("rr", m, [*p, "-d", *rr]) for m in (False, True))
        # mosquitto_rr 2.0.11 closes the socket after the response without a DISCONNECT (its
        # will would go out); midge rr disconnects normally (docs/mosquitto.md).
        assert out.endswith(b" sending DISCONNECT\n") and b"DISCONNECT" not in mout
        out = out[: out.rindex(b"Client ")]
        assert (code, _ids(out)) == (mcode, _ids(mout)), (out, mout, err)
        assert b"answer to ping" in out
        stop.set()
        _pub(port, "-t", "rr/request", "-m", "bye")
        thread.join(10)


def test_debug_line_of_a_long_topic_is_cut_as_libmosquitto_cuts_it() -> None:
    """libmosquitto formats a log line into strlen(format) + 500 bytes: a long topic cuts it."""
    topic = "long/" + "x" * 700
    with mosquitto(["allow_anonymous true"]) as port:
        (mcode, mout, _), (code, out, _) = (
            _run("pub", m, ["-p", str(port), "-d", "-t", topic, "-m", "x"]) for m in (False, True)
        )
    assert code == mcode == 0 and out == mout
    assert b"sending PUBLISH (d0, q0, r0, m1, 'long/xxx" in out and b"bytes))" not in out


# ---------------------------------------------------------------------------------------------
# MQTT 3.1


@pytest.mark.parametrize("kind", ["midge", "mosquitto"])
def test_mqtt31_side_by_side(kind: str) -> None:
    """-V mqttv31 / -V 31 works against both brokers, and the same messages come out."""
    with _broker(kind) as port:
        _pub(port, "-t", "v31/ready", "-m", "ready", "-r", "-V", "mqttv31")
        pair = Pair(port, ["-V", "31", "-t", "v31/#", "-q", "2", "-v", "-C", "3", "-W", "20"],
                    b"ready")  # fmt: skip
        _wait([pair])
        for m in (False, True):
            _pub(port, "-t", "v31/x", "-m", f"from {m}", "-q", "2", "-V", "31", midge_tool=m)
        codes, outs, errs = pair.finish()
    assert codes == [0, 0], errs
    assert outs[0] == outs[1] == b"v31/ready ready\nv31/x from False\nv31/x from True\n"


# ---------------------------------------------------------------------------------------------
# What a raw server sees


class RawServer:
    """One connection at a time on loopback: records each packet's bytes until DISCONNECT or
    the end; CONNECT gets CONNACK 0 (in the CONNECT's version), SUBSCRIBE a SUBACK granting
    QoS 0 to each filter, UNSUBSCRIBE an UNSUBACK, PUBLISH QoS 1 a PUBACK."""

    def __init__(self, tls: ssl.SSLContext | None = None, connack_v5: bytes = b"\x00") -> None:
        self.connack_v5 = connack_v5  # CONNACK's properties (v5), with their length
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(20)
        self.port = self.sock.getsockname()[1]
        self.tls = tls

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def serve_one(self, command: list[str]) -> tuple[list[bytes], dict[str, object]]:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen: dict[str, object] = {}
        packets: list[bytes] = []
        try:
            conn, addr = self.sock.accept()
            seen["peer"] = addr[0]
            conn.settimeout(10)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                seen["alpn"] = conn.selected_alpn_protocol()
                seen["cipher"] = conn.cipher()
            with conn:
                v5 = False
                while True:
                    packet = _read_packet(conn)
                    if packet is None:
                        break
                    packets.append(packet)
                    kind = packet[0] >> 4
                    if kind == 1:
                        body = packet[_header_len(packet) :]
                        v5 = body[6] == 5 if body[2:6] == b"MQTT" else False
                        rest = b"\x00\x00" + (self.connack_v5 if v5 else b"")
                        conn.sendall(bytes((0x20, len(rest))) + rest)
                    elif kind == 8:
                        body = packet[_header_len(packet) :]
                        count = _count_filters(body, v5)
                        rest = body[:2] + (b"\x00" if v5 else b"") + b"\x00" * count
                        conn.sendall(bytes((0x90, len(rest))) + rest)
                    elif kind == 10:
                        body = packet[_header_len(packet) :]
                        count = _count_filters(body, v5, options=False)
                        rest = body[:2] + (b"\x00" + b"\x00" * count if v5 else b"")
                        conn.sendall(bytes((0xB0, len(rest))) + rest)
                    elif kind == 3 and packet[0] & 0x06 == 0x02:
                        body = packet[_header_len(packet) :]
                        topic_len = int.from_bytes(body[:2], "big")
                        pid = body[2 + topic_len : 4 + topic_len]
                        conn.sendall(b"\x40\x02" + pid)
                    elif kind == 14:
                        break
        finally:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        seen["returncode"] = proc.returncode
        seen["stderr"] = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        return packets, seen


def _header_len(packet: bytes) -> int:
    i = 1
    while packet[i] & 0x80:
        i += 1
    return i + 1


def _read_packet(conn: socket.socket) -> bytes | None:
    data = b""
    try:
        while len(data) < 2 or (data[-1] & 0x80 and len(data) < 5):
            chunk = conn.recv(1)
            if not chunk:
                return None
            data += chunk
        length, mult = 0, 1
        for byte in data[1:]:
            length += (byte & 0x7F) * mult
            mult *= 128
        while length:
            chunk = conn.recv(length)
            if not chunk:
                return None
            data += chunk
            length -= len(chunk)
    except (OSError, ssl.SSLError):
        return None
    return data


def _count_filters(body: bytes, v5: bool, options: bool = True) -> int:
    pos = 2
    if v5:
        length, mult = 0, 1
        while True:
            byte = body[pos]
            pos += 1
            length += (byte & 0x7F) * mult
            mult *= 128
            if not byte & 0x80:
                break
        pos += length
    count = 0
    while pos < len(body):
        pos += 2 + int.from_bytes(body[pos : pos + 2], "big") + (1 if options else 0)
        count += 1
    return count


def _side_by_side(
    server: RawServer, tool: str, args: list[str]
) -> list[tuple[list[bytes], dict[str, object]]]:
    return [
        server.serve_one([*_cmd(tool, m), "-p", str(server.port), *args]) for m in (False, True)
    ]


def test_several_topics_make_one_subscribe_and_bind_address() -> None:
    """Several -t: one SUBSCRIBE carrying every filter, as mosquitto_sub sends (the same bytes,
    MQTT 3.1.1 and 5); -A binds the local end (the server sees 127.0.0.2); -V 31's CONNECT is
    MQIsdp level 3, byte for byte mosquitto_pub's (client identifiers aside)."""
    with RawServer() as server:
        for version in ("311", "5"):
            args = ["-V", version, "-t", "a/b", "-t", "c/#", "-t", "+/d", "-q", "1", "-E",
                    "-i", "sub-id", "-A", "127.0.0.2", "-k", "30"]  # fmt: skip
            (expected, mseen), (got, seen) = _side_by_side(server, "sub", args)
            assert got == expected, (got, expected, seen)
            subscribes = [p for p in got if p[0] >> 4 == 8]
            assert len(subscribes) == 1 and all(
                t in subscribes[0] for t in (b"a/b", b"c/#", b"+/d")
            )
            assert seen["peer"] == mseen["peer"] == "127.0.0.2"
            assert seen["returncode"] == mseen["returncode"] == 0
        args = ["-V", "mqttv31", "-t", "t", "-m", "x", "-q", "1", "-i", "v31-client"]
        (expected, _), (got, seen) = _side_by_side(server, "pub", args)
        assert got == expected, (got, expected, seen)
        assert got[0][2:10] == b"\x00\x06MQIsdp" and got[0][10] == 3
        (expected, _), (got, _) = _side_by_side(server, "pub", ["-V", "31", "-t", "t", "-m", "x"])
        assert _ids(got[0]) == _ids(expected[0])  # a generated 23-character identifier


def test_tls_alpn_and_ciphers_side_by_side(tmp_path: Path) -> None:
    """--tls-alpn offers the protocol (the server selects it), --ciphers limits the suites (the
    server agrees on the one allowed): what the server sees is the same for both tools."""
    from tests.security.certs import Pki

    pki = Pki(tmp_path)
    outcomes = (
        (8, b"Error: A TLS error occurred.\n"),
        (1, b"Unable to connect (A TLS error occurred.).\n"),
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.set_alpn_protocols(["mqtt", "x-other"])
    tls = ["--cafile", pki.cafile, "-h", "localhost", "-t", "t", "-m", "x"]
    with RawServer(context) as server:
        (expected, mseen), (got, seen) = _side_by_side(server, "pub", [*tls, "--tls-alpn", "mqtt"])
        assert got == expected and seen["returncode"] == mseen["returncode"] == 0, seen
        assert seen["alpn"] == mseen["alpn"] == "mqtt"
        # --tls-version is the lowest version accepted (libmosquitto's meaning): TLS 1.3 here.
        (expected, mseen), (got, seen) = _side_by_side(
            server, "pub", [*tls, "--tls-version", "tlsv1.2"]
        )
        assert got == expected and seen["alpn"] == mseen["alpn"] is None
        assert isinstance(seen["cipher"], tuple) and isinstance(mseen["cipher"], tuple)
        assert seen["cipher"][1] == mseen["cipher"][1] == "TLSv1.3"
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # where --ciphers applies
    with RawServer(context) as server:
        for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
            (expected, mseen), (got, seen) = _side_by_side(
                server, "pub", [*tls, "--ciphers", cipher]
            )
            assert got == expected and seen["returncode"] == mseen["returncode"] == 0, seen
            assert seen["cipher"] == mseen["cipher"]
            assert isinstance(seen["cipher"], tuple) and seen["cipher"][0] == cipher
    # --tls-use-os-certs alone turns TLS on, trusting the system's CAs: this test CA is not one.
    with midge(["allow_anonymous true", f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}"]) as port:  # fmt: skip
        os_certs = ["-p", str(port), "-h", "localhost", "--tls-use-os-certs", "-t", "t", "-m", "x"]
        codes = [_run("pub", m, os_certs)[0] for m in (False, True)]
        assert codes[0] != 0 and codes[1] != 0
        code, _, _ = _run("pub", True, [*os_certs, "--cafile", pki.cafile])
        assert code == 0
        # A certificate no CA given vouches for: 1 and mosquitto's words (mosquitto_pub finds it
        # at connect, or after it: 8, as the timing of its non-blocking handshake falls).
        for args in (
            os_certs,
            [*os_certs[:-5], "--cafile", pki.other_cafile, "-t", "t", "-m", "x"],
        ):
            (mcode, _, merr), (code, _, err) = (_run("pub", m, args) for m in (False, True))
            assert (code, err) == outcomes[1] and (mcode, merr) in outcomes, (mcode, merr)
    # TLS to a plain MQTT port: the server cuts the handshake off. Both tools say so at connect
    # (1) or after it (8, MOSQ_ERR_TLS), as the timing falls (an EOF or a reset).
    with midge(["allow_anonymous true"]) as port:
        args = ["-p", str(port), "--cafile", pki.cafile, "-t", "t", "-m", "x"]
        (mcode, _, merr), (code, _, err) = (_run("pub", m, args) for m in (False, True))
        assert (code, err) in outcomes and (mcode, merr) in outcomes, (code, err, mcode, merr)


def test_refused_flags_say_why() -> None:
    """What Python's ssl module cannot do is refused with exit code 1 and the reason; a bad -M
    as mosquitto_pub words it."""
    for args, words in (
        (["--psk", "deadbeef", "--psk-identity", "me"], b"TLS-PSK"),
        (["--tls-engine", "pkcs11"], b"OpenSSL engines"),
        (["--keyform", "engine"], b"OpenSSL engines"),
    ):
        code, _, err = _run("pub", True, ["-t", "t", "-m", "x", *args])
        assert code == 1 and words in err, (args, err)
    (mcode, _, merr), (code, _, err) = (
        _run("pub", m, ["-t", "t", "-m", "x", "-M", "0"]) for m in (False, True)
    )
    assert code == mcode == 1
    assert err.splitlines()[0] == merr.splitlines()[0]


# ---------------------------------------------------------------------------------------------
# --ws


def test_ws_side_by_side_with_tcp(tmp_path: Path) -> None:
    """midge sub --ws and midge pub --ws on a midge ``protocol websockets`` listener, with
    mosquitto_pub / mosquitto_sub on its TCP listener on the other side (-A on the WebSocket);
    and midge pub --ws --cafile to a TLS one (wss)."""
    from tests.security.certs import Pki

    pki = Pki(tmp_path)
    ws_port, wss_port = free_port(), free_port()
    with midge(
        [
            "allow_anonymous true",
            f"listener {ws_port} 127.0.0.1",
            "protocol websockets",
            f"listener {wss_port} 127.0.0.1",
            "protocol websockets",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
        ]
    ) as port:
        ws = ["-p", str(ws_port), "--ws", "-A", "127.0.0.1"]
        _pub(port, "-t", "ws/0", "-m", "ready", "-r")
        watcher = subprocess.Popen(
            ["mosquitto_sub", "-p", str(port), "-t", "ws/#", "-v", "-C", "4", "-W", "20"],
            stdout=subprocess.PIPE,
        )
        sub = subprocess.Popen(
            [*_cmd("sub", True), *ws, "-t", "ws/#", "-v", "-C", "4", "-W", "20", "-d", "-q", "1"],
            stdout=subprocess.PIPE,
        )
        for proc in (watcher, sub):  # -W 20 bounds these reads
            assert proc.stdout is not None
            while proc.stdout.readline() != b"ws/0 ready\n":
                assert proc.poll() is None
        _pub(ws_port, "--ws", "-t", "ws/1", "-m", "over a WebSocket", "-q", "1", midge_tool=True)
        _pub(wss_port, "--ws", "--cafile", pki.cafile, "-h", "localhost", "-t", "ws/2", "-m",
             "over TLS", "-q", "1", midge_tool=True)  # fmt: skip
        _pub(port, "-t", "ws/3", "-m", "over TCP", "-q", "1")
        out, _ = sub.communicate(timeout=25)
        wout, _ = watcher.communicate(timeout=25)
    assert sub.returncode == 0 and watcher.returncode == 0
    messages = [b"ws/1 over a WebSocket", b"ws/2 over TLS", b"ws/3 over TCP"]
    assert [x for x in wout.splitlines() if not x.startswith(b"Client ")] == messages
    assert [x for x in out.splitlines() if not x.startswith(b"Client ")] == messages, out


# ---------------------------------------------------------------------------------------------
# --proxy


@contextmanager
def _microsocks(*auth: str) -> Iterator[int]:
    """Debian's microsocks, a SOCKS5 proxy, on loopback (``auth``: ``-u USER -P PASSWORD``)."""
    port = free_port()
    proc = subprocess.Popen(
        ["microsocks", "-i", "127.0.0.1", "-p", str(port), *auth],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.skipif(shutil.which("microsocks") is None, reason="microsocks is not installed")
def test_proxy_side_by_side() -> None:
    """--proxy socks5h://[user:password@]host:port through Debian's microsocks, with and without
    authentication: the same -d lines, the messages arrive; a refused password exits 11 and a
    target the proxy cannot reach 4, as mosquitto's tools."""
    with (
        midge(["allow_anonymous true"]) as port,
        _microsocks() as open_proxy,
        _microsocks("-u", "user", "-P", "secret") as closed_proxy,
    ):
        _pub(port, "-t", "px/ready", "-m", "ready", "-r")
        watcher = Pair(port, ["-t", "px/#", "-v", "-C", "5", "-W", "20"], b"ready")
        _wait([watcher])
        via = ["-h", "localhost", "-p", str(port), "-q", "1", "-d"]
        for n, proxy in enumerate(
            (f"socks5h://127.0.0.1:{open_proxy}", f"socks5h://user:secret@127.0.0.1:{closed_proxy}")
        ):
            args = [*via, "--proxy", proxy, "-t", f"px/{n}", "-m", "through the proxy"]
            (mcode, mout, _), (code, out, err) = (_run("pub", m, args) for m in (False, True))
            assert (code, out) == (mcode, mout) == (0, mout), (out, mout, err)
        codes, outs, _ = watcher.finish()
        assert codes == [0, 0]
        assert (
            outs[0]
            == outs[1]
            == (
                b"px/ready ready\npx/0 through the proxy\npx/0 through the proxy\n"
                b"px/1 through the proxy\npx/1 through the proxy\n"
            )
        )
        # midge sub through the proxy too
        sub = ["-p", str(port), "--proxy", f"socks5h://127.0.0.1:{open_proxy}", "-t", "px/ready"]
        assert _run("sub", True, [*sub, "-C", "1", "-W", "10"])[1] == b"ready\n"
        for args, expected in (
            ([*via, "--proxy", f"socks5h://user:wrong@127.0.0.1:{closed_proxy}"], 11),
            ([*via, "--proxy", f"socks5h://127.0.0.1:{closed_proxy}"], 11),  # no credentials
            (["-p", str(free_port()), "--proxy", f"socks5h://127.0.0.1:{open_proxy}"], 4),
            (["--proxy", "http://127.0.0.1:3128"], 1),
        ):
            codes = [_run("pub", m, [*args, "-t", "t", "-m", "x"])[0] for m in (False, True)]
            assert codes == [expected, expected], (args, codes)


def test_the_users_defaults_file_side_by_side(tmp_path: Path) -> None:
    """$XDG_CONFIG_HOME/mosquitto_sub (else ~/.config/mosquitto_sub) holds default options, one
    a line: both tools read it before the command line."""
    import os

    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    with midge(["allow_anonymous true"]) as port:
        _pub(port, "-t", "cfg/a", "-m", "from the file", "-r")
        (home / ".config" / "mosquitto_sub").write_text(f"# defaults\n-p {port}\n-v\n-C 1\n")
        (xdg / "mosquitto_sub").write_text(f"-p {port}\n-F %t|%p|%r\n-C 1\n")
        env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
        for extra, expected in (
            ({"HOME": str(home)}, b"cfg/a from the file\n"),
            ({"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}, b"cfg/a|from the file|1\n"),
        ):
            outs = [
                subprocess.run(
                    [*_cmd("sub", m), "-t", "cfg/#", "-W", "10"],
                    env={**env, **extra},
                    capture_output=True,
                    timeout=30,
                )
                for m in (False, True)
            ]
            assert [(o.returncode, o.stdout) for o in outs] == [(0, expected)] * 2, outs


@pytest.mark.parametrize("kind", ["midge", "mosquitto"])
def test_refused_publish_warning_side_by_side(kind: str) -> None:
    """A QoS 1 / 2 PUBLISH refused by the ACL (MQTT 5 PUBACK / PUBREC 0x87): the same warning,
    with the message id, and exit code 0."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="midge-acl-"))  # readable by mosquitto's user
    directory.chmod(0o755)
    acl = directory / "acl"
    acl.write_text("topic readwrite allowed/#\n")
    acl.chmod(0o644)
    try:
        with (mosquitto if kind == "mosquitto" else midge)(
            ["allow_anonymous true", f"acl_file {acl}"]
        ) as port:
            for qos in ("1", "2"):
                args = ["-p", str(port), "-V", "5", "-q", qos, "-t", "denied", "-m", "x"]
                (mcode, _, merr), (code, _, err) = (_run("pub", m, args) for m in (False, True))
                assert (
                    (code, err)
                    == (mcode, merr)
                    == (0, b"Warning: Publish 1 failed: Not authorized.\n")
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_pub_names_its_topic_in_every_publish_as_mosquitto_pub() -> None:
    """A server allowing Topic Aliases (CONNACK Topic Alias Maximum 10): mosquitto_pub --repeat
    still names the topic in every PUBLISH, and so does midge pub (the same bytes)."""
    with RawServer(connack_v5=b"\x03\x22\x00\x0a") as server:
        args = ["-V", "5", "-t", "alias/me", "-m", "x", "--repeat", "3", "-q", "1", "-i", "p"]
        (expected, _), (got, seen) = _side_by_side(server, "pub", args)
    assert got == expected and seen["returncode"] == 0, (got, expected, seen)
    assert sum(1 for p in got if p[0] >> 4 == 3 and b"alias/me" in p) == 3


@pytest.mark.parametrize("tool", ["pub", "sub", "rr"])
def test_every_flag_of_mosquittos_help_is_taken_where_mosquitto_takes_it(
    tool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each flag that mosquitto_pub, mosquitto_sub and mosquitto_rr --help list (and a few they
    take without listing): midge's tool calls it unknown exactly where Mosquitto's does."""
    flags = set()
    for other in ("pub", "sub", "rr"):
        help_text = subprocess.run([f"mosquitto_{other}", "--help"], capture_output=True,
                                   timeout=20).stdout  # fmt: skip
        flags |= set(re.findall(rb"^ (-[-a-zA-Z0-9]+) :", help_text, re.MULTILINE))
    assert len(flags) > 50
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))  # -s reads it
    flags |= {b"--retain-as-published", b"--id", b"--host", b"--topic", b"--stdin-line"}
    differ = []
    for flag in sorted(f.decode() for f in flags):
        if flag in ("--help", "--version"):
            continue
        words = f"Unknown option '{flag}'"
        theirs = words.encode() in _run(tool, False, [flag])[2]
        try:  # midge's parser, in this process (a process per flag would take minutes)
            parse(tool, [flag], defaults=False)
            ours = False
        except UsageError as exc:
            ours = str(exc) == words + "."
        if theirs != ours:
            differ.append((flag, theirs, ours))
    assert differ == []


def test_a_server_disconnect_ends_sub_as_it_ends_mosquitto_sub() -> None:
    """MQTT 5: the server takes the session over (DISCONNECT 0x8E): mosquitto_sub prints the
    debug line and exits 0 without reconnecting; so does midge sub."""
    with midge(["allow_anonymous true"]) as port:
        _pub(port, "-t", "take/x", "-m", "ready", "-r")
        for m in (False, True):
            args = ["-d", "-V", "5", "-t", "take/x", "-i", f"taken-{m}", "-W", "15"]
            pair = subprocess.Popen([*_cmd("sub", m), "-p", str(port), *args],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
            assert pair.stdout is not None
            while b"ready" not in pair.stdout.readline():
                assert pair.poll() is None
            _run(
                "sub", False, ["-p", str(port), "-V", "5", "-t", "other", "-i", f"taken-{m}", "-E"]
            )
            rest, err = pair.communicate(timeout=20)
            if not m:
                expected = (pair.returncode, rest, err)
            else:
                assert (pair.returncode, rest, err) == expected
                assert expected == (0, b"Received DISCONNECT (142)\n", b"")
