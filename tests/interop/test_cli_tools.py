"""``midge sub`` / ``midge pub`` / ``midge rr`` side by side with mosquitto_sub / mosquitto_pub /
mosquitto_rr (Debian's mosquitto-clients 2.0.11): the same flags, against the same broker (midge
on a socket, and the real mosquitto), give byte-identical output and the same exit codes.

Process starts are grouped: every subscriber pair of one broker runs at once and receives one set
of messages; every process has a timeout (``-W`` and ``communicate(timeout=)``).
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from midge.client import Client
from tests.differential.harness import midge, mosquitto, needs_mosquitto
from tests.procbroker import free_port

MIDGE = [sys.executable, "-m", "midge"]
needs_clients = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None, reason="mosquitto-clients is not installed (make debs)"
)
pytestmark = [needs_mosquitto, needs_clients]

#: Every -F specifier with widths, precision, padding and escapes in one template.
TEMPLATE = (
    "%t|%p|%x|%X|%5p|%-5p|%-p|%08p|%4x|%05l|%-3l|%3l|%m|%q|%r|%C|%10C|%-10C|%.2C|%D|%E|%5E|%-5E"
    "|%05E|%P|%R|%.3R|%S|%4S|%A|%F|%3F|%.3t|%10.3t|%-10t|%%|@@|\\t\\\\\\e\\0\\a\\r\\v|%l"
)
JSON_TEMPLATE = "%j|%J"
#: Time conversions: compared after every digit is replaced by 0 (the format, not the time).
TIME_TEMPLATE = "%I|%U|%20I|%-30I|@Y-@m-@d @H:@M:@S @N @s @z @a @b @j @p|%j"
JSON_PAYLOAD = (
    '{"x": [1, 2.5, "é\\n\\u0001", 1e300, -0.0, 12345678901234567890, true, null], '
    '"y": {}, "z": {"a": []}, "x": 2}'
)
TST = re.compile(rb'"tst":\s*"[^"]*"')


def _cmd(tool: str, midge_tool: bool) -> list[str]:
    return [*MIDGE, tool] if midge_tool else [f"mosquitto_{tool}"]


def _pub(port: int, *args: str, stdin: bytes | None = None, midge_tool: bool = False) -> None:
    proc = subprocess.run(
        [*_cmd("pub", midge_tool), "-p", str(port), *args],
        input=stdin,
        capture_output=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr


STDBUF = ["stdbuf", "-o0"] if shutil.which("stdbuf") else []


class Pair:
    """mosquitto_sub and midge sub started with the same flags."""

    def __init__(
        self, port: int, args: list[str], marker: bytes | None, where: list[str] | None = None
    ) -> None:
        self.args = args
        self.marker = marker
        self.procs = [
            subprocess.Popen(
                # stdbuf: mosquitto_sub's stdio output to a pipe is block-buffered; unbuffered,
                # the test sees each message as it is printed (midge sub flushes each one).
                [*([] if m else STDBUF), *_cmd("sub", m), *(where or ["-p", str(port)]), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for m in (False, True)
        ]
        self.out = [bytearray(), bytearray()]
        self.threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in (0, 1)]
        for t in self.threads:
            t.start()

    def _read(self, i: int) -> None:
        stream = self.procs[i].stdout
        assert isinstance(stream, io.BufferedReader)  # a pipe, buffered (Popen's bufsize -1)
        while chunk := stream.read1(65536):
            self.out[i] += chunk

    def ready(self, marker: bytes | None = None) -> bool:
        marker = marker or self.marker
        return marker is None or all(marker in out for out in self.out)

    def finish(self) -> tuple[list[int], list[bytes], list[bytes]]:
        codes, errs = [], []
        for proc, t in zip(self.procs, self.threads, strict=True):
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            t.join(timeout=5)
            assert proc.stderr is not None
            errs.append(proc.stderr.read())
            codes.append(proc.returncode)
        return codes, [bytes(o) for o in self.out], errs


def _digits(data: bytes) -> bytes:
    return re.sub(rb"[0-9]", b"0", data)


def _no_tst(data: bytes) -> bytes:
    return TST.sub(b'"tst":"T"', data)


@contextmanager
def _broker(kind: str) -> Iterator[int]:
    with (mosquitto if kind == "mosquitto" else midge)(["allow_anonymous true"]) as port:
        yield port


def _wait(pairs: list[Pair], timeout: float = 15.0, marker: bytes | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.ready(marker) for p in pairs):
        assert time.monotonic() < deadline, [(p.args, p.out) for p in pairs if not p.ready(marker)]
        time.sleep(0.05)


PROPS = [
    "-D", "publish", "content-type", "text/plain; charset=utf-8",
    "-D", "publish", "correlation-data", "corr-1",
    "-D", "publish", "response-topic", "reply/here",
    "-D", "publish", "user-property", "colour", "blue",
    "-D", "publish", "user-property", "size", "large",
    "-D", "publish", "message-expiry-interval", "3600",
    "-D", "publish", "payload-format-indicator", "1",
]  # fmt: skip


@pytest.mark.parametrize("kind", ["midge", "mosquitto"])
def test_sub_output_side_by_side(kind: str, tmp_path: Path) -> None:
    """For each broker: one set of messages, several subscriber pairs with different flags."""
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(256)) + b'"quoted" \\ back\0after NUL')
    with _broker(kind) as port:
        _pub(port, "-t", "test/0", "-m", '"ready"', "-r")  # a JSON string, for %J too
        v5 = ["-V", "mqttv5", "-q", "2", "-t", "test/#"]
        n = 7  # ready (retained) + 6 live messages below, one of them filtered out with -T
        specs: list[tuple[list[str], bytes | None]] = [
            ([*v5, "-F", TEMPLATE, "-C", str(n), "-W", "20"], b"ready"),
            ([*v5, "-F", JSON_TEMPLATE, "-C", str(n), "-W", "20"], b"ready"),
            ([*v5, "-F", "%j", "-C", str(n), "-W", "20"], b"ready"),  # what --json prints
            (
                [
                    *v5,
                    "-D",
                    "subscribe",
                    "subscription-identifier",
                    "42",
                    "-C",
                    str(n),
                    "-F",
                    "%S|%4S|%-4S|%04S|%j",
                    "-W",
                    "20",
                ],
                b"ready",
            ),
            ([*v5, "-F", "%J", "--pretty", "-C", str(n), "-W", "20"], b"ready"),
            ([*v5, "-F", "%j@@%j", "--pretty", "-N", "-C", str(n), "-W", "20"], b"ready"),
            ([*v5, "-F", TIME_TEMPLATE, "-C", "2", "-W", "20"], b"ready"),
            (["-t", "test/#", "-v", "-T", "test/skip", "-C", str(n - 1), "-W", "20"], b"ready"),
            (["-t", "test/#", "-N", "-C", str(n), "-W", "20"], b"ready"),
            (["-t", "test/#", "-v", "-N", "-C", str(n), "-W", "20"], b"ready"),
            ([*v5, "--retained-only", "-v", "-W", "20"], b"ready"),
            ([*v5, "-t", "unsub/#", "-U", "unsub/#", "-v", "-C", str(n), "-W", "20"], b"ready"),
            ([*v5, "-t", "rsync/#", "-R", "-v", "-T", "test/skip", "-W", "20"], b"rsync/go"),
            (["-t", "nothing/here", "-E", "-W", "20"], None),
            (["-t", "nothing/here", "-W", "1"], None),
        ]
        pairs = [Pair(port, args, marker) for args, marker in specs]
        # -R prints no retained marker: it also takes rsync/#, published until it shows
        deadline = time.monotonic() + 20
        while not all(p.ready() for p in pairs):
            assert time.monotonic() < deadline, [(p.args, p.out) for p in pairs if not p.ready()]
            _pub(port, "-t", "rsync/go", "-m", "x")
            time.sleep(0.2)
        # One message at a time: libmosquitto hands a QoS 2 message over at PUBREL, midge.client
        # at PUBLISH, so a QoS 1 message right behind one of QoS 2 may overtake it in
        # mosquitto_sub's output only (see docs/mosquitto.md).
        # Every QoS 2 subscriber whose output names the topic (%t, or %j's "topic"; %J prints
        # nothing for a payload that is not JSON) is waited for, so that each has handed each
        # message over before the next is published; one that stops after -C messages (the
        # marker's included) only for the messages it prints.
        watched = [
            (p, int(p.args[p.args.index("-C") + 1]))
            for p in pairs
            if "-F" in p.args
            and any(s in p.args[p.args.index("-F") + 1] for s in ("%t", "%j"))
            and "-T" not in p.args
            and "-C" in p.args
        ]
        messages = [
            ("test/a", ["-V", "5", "-q", "2", "-m", "hello world", *PROPS]),
            ("test/b", ["-V", "5", "-q", "1", "-n"]),
            ("test/c", ["-m", JSON_PAYLOAD]),
            ("test/d", ["-V", "5", "-q", "1", "-f", str(binary)]),
            ("test/skip", ["-m", "filtered out with -T"]),
            ("test/e", ["-q", "1", "-m", "retained, live", "-r"]),
        ]
        for i, (topic, args) in enumerate(messages):
            _pub(port, "-t", topic, *args)
            # The marker was message 1: this one is message i + 2.
            _wait([p for p, count in watched if count >= i + 2], marker=topic.encode())
        _pub(port, "-t", "unsub/a", "-m", "not for the -U subscriber")
        _pub(port, "-t", "test/end", "-m", "the -R pair stops at this one")
        for pair in pairs:
            if "-R" in pair.args:
                _wait([pair], marker=b"test/end")
                for proc in pair.procs:
                    proc.send_signal(signal.SIGINT)
            (mcode, code), (mout, out), (merr, err) = pair.finish()
            if "-R" in pair.args:
                mout, out = (
                    b"".join(x for x in o.splitlines(True) if not x.startswith(b"rsync/"))
                    for o in (mout, out)
                )
                assert b"test/a hello world\n" in out and b"test/0" not in out, out
            label = f"{kind}: {pair.args}"
            if "-F" in pair.args and pair.args[pair.args.index("-F") + 1] == TIME_TEMPLATE:
                assert _digits(out) == _digits(mout), label
                assert re.match(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}\|\d+\.\d{9}\|", out)
            else:
                assert _no_tst(out) == _no_tst(mout), label
            assert TST.findall(out) == [] or _digits(b"".join(TST.findall(out))) == _digits(
                b"".join(TST.findall(mout))
            ), label
            assert code == mcode, (label, code, mcode, err, merr)
            if "-C" in pair.args and pair.marker:
                assert b"ready" in mout and code == 0, label
            if "-W" in pair.args and pair.args[pair.args.index("-W") + 1] == "1":
                assert code == 27 and err.strip() == b"Timed out", label
            if pair.args[-6:] == ["-F", "%j", "-C", str(n), "-W", "20"] and shutil.which("jq"):
                jq = subprocess.run(["jq", "-c", "[.topic, .qos]"], input=out, capture_output=True,
                                    timeout=20)  # fmt: skip
                assert jq.returncode == 0 and jq.stdout.splitlines() == [
                    b'["test/0",0]', b'["test/a",2]', b'["test/b",1]', b'["test/c",0]',
                    b'["test/d",1]', b'["test/skip",0]', b'["test/e",1]',
                ], jq  # fmt: skip
            if "subscription-identifier" in pair.args:
                assert out.startswith(b'42|  42|42  |0042|{"tst"'), out
            if "-E" in pair.args:
                assert (code, out) == (0, b""), label
            assert err.strip().splitlines()[-1:] == merr.strip().splitlines()[-1:] or (
                b"JSON" in merr
            ), (label, err, merr)


def test_sub_exit_codes_side_by_side() -> None:
    """Nothing listening: 1; a bad option: 1; MQTT 5 refusal: its reason code; 3.1.1: 1-5."""
    closed = free_port()
    directory = Path(tempfile.mkdtemp(prefix="midge-cli-"))  # readable by mosquitto's user
    directory.chmod(0o755)
    passwords = directory / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "u", "secret"], timeout=20,
                   check=True, capture_output=True)  # fmt: skip
    passwords.chmod(0o644)
    with mosquitto(["allow_anonymous false", f"password_file {passwords}"]) as port:
        for expected, args in (
            (1, ["-p", str(closed), "-t", "x"]),
            (1, ["-p", str(port), "-t", "x", "-q", "3"]),
            (5, ["-p", str(port), "-t", "x"]),
            (135, ["-p", str(port), "-t", "x", "-V", "5"]),
            (1, ["-p", str(port), "-t", "x", "-c"]),
            (0, ["-p", str(port), "-t", "x", "-u", "u", "-P", "secret", "-E"]),
            (0, ["-L", f"mqtt://u:secret@127.0.0.1:{port}/x", "-E", "-I", "cli-", "-k", "30"]),
            (5, ["-p", str(port), "-t", "x", "-u", "u", "-P", "wrong"]),
            (135, ["-p", str(port), "-t", "x", "-u", "u", "-P", "wrong", "-V", "mqttv5"]),
            (1, ["-p", str(port), "-t", "x", "-F", "%Z"]),
            (1, ["-p", str(port), "-t", "x", "-F", "ab\\q"]),
            (1, ["-p", str(port), "-t", "x", "-F", "%-5"]),
            (1, ["-p", str(port), "-t", "x", "-F", "@"]),
        ):
            codes = [
                subprocess.run(
                    [*_cmd("sub", m), *args, "-W", "5"], capture_output=True, timeout=20
                ).returncode
                for m in (False, True)
            ]
            assert codes == [expected, expected], (args, codes)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("kind", ["midge", "mosquitto"])
def test_pub_side_by_side(kind: str, tmp_path: Path) -> None:
    """What a subscriber receives from midge pub equals what it receives from mosquitto_pub."""
    payload = tmp_path / "payload"
    payload.write_bytes(b"from a file\n\0\xff")
    fmt = "%t|%x|%q|%r|%C|%D|%P|%R|%F|%E"
    cases: list[tuple[list[str], bytes | None]] = [
        (["-m", "hello", "-q", "1"], None),
        (["-f", str(payload), "-q", "2", "-r"], None),
        (["-l", "-q", "1"], b"line one\nline two\n\nlast line"),
        (["-s"], b"all of\nstdin\n"),
        (["-n", "-V", "5", *PROPS], None),
        (["-m", "twice", "--repeat", "2", "--repeat-delay", "0.1"], None),
        (["-m", "props", "-V", "mqttv5", "-q", "2", *PROPS], None),
    ]
    with _broker(kind) as port:
        _pub(port, "-t", "p/ready", "-r", "-m", "ready")
        sub = Pair(port, ["-V", "5", "-q", "2", "-t", "p/#", "-F", fmt, "-W", "30"], b"p/ready")
        _wait([sub])
        for i, (args, stdin) in enumerate(cases):
            for m in (False, True):
                _pub(port, "-t", f"p/{i}", *args, stdin=stdin, midge_tool=m)
        _pub(port, "-t", "p/end", "-r", "-n")  # clears nothing; marks the end
        deadline = time.monotonic() + 15
        while b"p/end" not in sub.out[0] or b"p/end" not in sub.out[1]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for proc in sub.procs:
            proc.terminate()
        _, outs, _ = sub.finish()
        # --remove-retained: midge sub clears the retained messages it receives (p/1, p/ready)
        cleared = subprocess.run(
            [*MIDGE, "sub", "-p", str(port), "-t", "p/#", "--remove-retained",
             "--retained-only", "-F", "%t", "-W", "3"],
            capture_output=True, timeout=20,
        )  # fmt: skip
        assert sorted(cleared.stdout.splitlines()) == [b"p/1", b"p/ready"], cleared
        left = subprocess.run(
            ["mosquitto_sub", "-p", str(port), "-t", "p/#", "--retained-only", "-v", "-W", "1"],
            capture_output=True,
            timeout=20,
        )
        assert left.stdout == b"", left.stdout
    lines = outs[0].splitlines()
    assert outs[0] == outs[1]  # the two subscribers agree
    body = [line for line in lines if not line.startswith((b"p/end", b"p/ready"))]
    by_topic: dict[bytes, list[bytes]] = {}
    for line in body:
        by_topic.setdefault(line.split(b"|", 1)[0], []).append(line)
    assert len(by_topic) == len(cases)
    assert len(by_topic[b"p/2"]) == 8  # -l: four lines (one empty), from each publisher
    for topic, got in by_topic.items():
        half = len(got) // 2
        assert len(got) % 2 == 0 and got[:half] == got[half:], (topic, got)


def _responder(port: int, stop: threading.Event, ready: threading.Event) -> threading.Thread:
    async def serve() -> None:
        async with (
            Client("127.0.0.1", port) as client,
            client.subscription("rr/request", qos=1) as requests,
        ):
            ready.set()
            async for request in requests:
                if request.response_topic is None:
                    break
                await client.respond(
                    request,
                    b"answer to " + request.payload,
                    qos=1,
                    user_properties=[("served", "yes")],
                    content_type="text/answer",
                )
                if stop.is_set():
                    break

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["midge", "mosquitto"])
def test_rr_side_by_side(kind: str) -> None:
    stop, ready = threading.Event(), threading.Event()
    with _broker(kind) as port:
        thread = _responder(port, stop, ready)
        assert ready.wait(10)
        runs: list[Callable[[bool], subprocess.CompletedProcess[bytes]]] = [
            lambda m: subprocess.run(
                [*_cmd("rr", m), "-p", str(port), "-t", "rr/request", "-e", "rr/response",
                 "-m", "ping", "-q", "1", "-W", "10", "-F", "%t|%p|%D|%C|%P|%q|%R",
                 "-D", "publish", "correlation-data", "c-42"],
                capture_output=True, timeout=20,
            ),
            lambda m: subprocess.run(
                [*_cmd("rr", m), "-p", str(port), "-t", "rr/request", "-e", "rr/response2",
                 "-n", "-v", "-W", "10"],
                capture_output=True, timeout=20,
            ),
            lambda m: subprocess.run(
                [*_cmd("rr", m), "-p", str(port), "-t", "rr/nobody", "-e", "rr/none",
                 "-m", "x", "-W", "1"],
                capture_output=True, timeout=20,
            ),
        ]  # fmt: skip
        for run in runs:
            expected, got = run(False), run(True)
            assert got.stdout == expected.stdout, (got.stdout, expected.stdout, got.stderr)
            assert got.returncode == expected.returncode, (got, expected)
            assert expected.returncode == 27 or b"answer to" in expected.stdout
        stop.set()
        _pub(port, "-t", "rr/request", "-m", "bye")
        thread.join(10)


def test_tls_side_by_side(tmp_path: Path) -> None:
    """--cafile/--cert/--key/--tls-version against a TLS listener (midge's: mosquitto, started
    as root, drops to its own user, which cannot read the test's private directory) that
    requires a client certificate: the same output; without the certificate, both fail."""
    from tests.security.certs import Pki, name

    pki = Pki(tmp_path)
    cert, key = pki.client("alice", name(("CN", "alice")))
    tls = ["--cafile", pki.cafile, "--cert", cert, "--key", key, "-h", "localhost"]
    with midge(
        [
            f"cafile {pki.cafile}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            "require_certificate true",
            "allow_anonymous true",
        ]
    ) as port:
        _pub(port, *tls, "-t", "s/0", "-m", "ready", "-r")
        args = [*tls, "--tls-version", "tlsv1.2", "-t", "s/#", "-C", "2", "-v", "-W", "20"]
        sub = Pair(port, args, b"ready")
        _wait([sub])
        _pub(port, *tls, "-t", "s/1", "-m", "over TLS")
        codes, outs, errs = sub.finish()
        assert outs == [b"s/0 ready\ns/1 over TLS\n"] * 2 and codes == [0, 0], (outs, errs)
        no_cert = [
            subprocess.run(
                [*_cmd("pub", m), "-p", str(port), "--cafile", pki.cafile, "-h", "localhost",
                 "-t", "s/2", "-m", "x"],
                capture_output=True, timeout=20,
            ).returncode
            for m in (False, True)
        ]  # fmt: skip
        assert no_cert[0] != 0 and no_cert[1] != 0


def test_unix_socket_and_will(tmp_path: Path) -> None:
    """--unix to midge's Unix socket listener; --will-* published when sub is interrupted (MQTT
    5 DISCONNECT 0x04, as mosquitto_sub does on SIGINT)."""
    sock = tmp_path / "mqtt.sock"
    with midge(["allow_anonymous true", f"listener 0 {sock}", "allow_anonymous true"]) as port:
        unix = ["--unix", str(sock)]
        _pub(port, "-t", "u/0", "-m", "ready", "-r")
        _pub(port, "-t", "will/0", "-m", "ready", "-r")
        watcher = Pair(port, ["-t", "will/#", "-v", "-W", "20"], b"ready")
        will = ["--will-topic", "will/x", "--will-payload", "gone", "--will-qos", "1"]
        sub = Pair(port, ["-V", "5", "-t", "u/#", "-C", "2", "-W", "20", *will], b"ready", unix)
        _wait([sub, watcher])
        _pub(port, "-t", "u/1", "-m", "via tcp")
        codes, outs, _ = sub.finish()
        assert outs == [b"ready\nvia tcp\n"] * 2 and codes == [0, 0]  # normal DISCONNECT
        sub = Pair(port, ["-V", "5", "-t", "u/#", "-W", "20", *will], b"ready", unix)
        _wait([sub])
        for proc in sub.procs:
            proc.send_signal(signal.SIGINT)
        assert sub.finish()[0] == [0, 0]
        _wait([watcher], marker=b"gone\nwill/x gone\n")
        for proc in watcher.procs:
            proc.send_signal(signal.SIGINT)
        _, (mout, out), _ = watcher.finish()
        assert mout == b"will/0 ready\nwill/x gone\nwill/x gone\n"
        assert sorted(out.splitlines()) == sorted(mout.splitlines())
