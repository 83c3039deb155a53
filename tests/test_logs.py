"""Issue 14, "Logs": Mosquitto's lines or JSON lines, one line per connect, disconnect (with its
reason) and refusal carrying the client id, address, protocol, username and listener; never a
password or a payload; ``log_level`` per component; ``log_dest syslog`` and ``log_dest topic``.

The in-memory tests drive the core on a manual clock with midge.logs' own formatter and filter on
a list; one broker process checks the destinations (a file, a Unix datagram socket bound here as
the syslog daemon, ``$SYS/broker/log/#``) end to end. The differential comparison of the text
lines with Mosquitto's is tests/differential/test_logs.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from midge import logs
from midge.auth import passwd
from midge.codec.packets import Connect, Publish, Will
from midge.codec.properties import Prop
from midge.config import Config
from tests.memory import MemoryBroker
from tests.procbroker import ProcBroker, free_port
from tests.rawclient import RawClient

PASSWORD = "pa55-W0rd-never-logged"
PAYLOAD = b"payload-never-logged-4711"


class Lines(logging.Handler):
    """The formatted lines, as a destination would write them."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logs.formatter(config))
        self.addFilter(logs.type_filter(config))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[MemoryBroker, Lines]]:
    """An in-memory broker with a password file (alice), ``log_format json``, every log type."""
    pw = tmp_path / "passwd"
    pw.write_text(passwd.format_line("alice", passwd.hash_password(PASSWORD.encode(), 1000)))
    config = Config(
        password_file=str(pw),
        allow_anonymous=True,
        log_format="json",
        log_type=["debug", "error", "warning", "notice", "information", "subscribe"],
        log_dest=[],
    )
    logs.setup(config)
    lines = Lines(config)
    logging.getLogger("midge").addHandler(lines)
    try:
        yield MemoryBroker(config), lines
    finally:
        logs.reset()


def _events(lines: Lines) -> list[dict[str, object]]:
    parsed = [json.loads(line) for line in lines.lines]  # every line is one JSON object
    return [p for p in parsed if "event" in p]


def test_json_lines_carry_the_connection_fields_and_never_a_password_or_payload(
    logged: tuple[MemoryBroker, Lines],
) -> None:
    broker, lines = logged
    alice = RawClient.to(broker)
    will = Will("wills/alice", PAYLOAD, 1, True)
    alice.connect("c-alice", username="alice", password=PASSWORD.encode(), will=will)
    alice.subscribe("x/#", 1)
    alice.publish("a/b", PAYLOAD, 1)
    alice.disconnect()
    broker.call(lambda: None)
    v5 = RawClient.to(broker, version=5)
    v5.connect5("c-five", keep_alive=10)
    broker.advance(16)  # 1.5 x keep alive: the broker closes it
    bad = RawClient.to(broker)
    assert bad.connect("c-bad", username="alice", password=b"wrong" + PASSWORD.encode())
    broker.call(lambda: None)

    events = _events(lines)
    by_event = [(e["event"], e["client_id"]) for e in events]
    assert by_event == [
        ("socket", None),
        ("connect", "c-alice"),
        ("disconnect", "c-alice"),
        ("socket", None),
        ("connect", "c-five"),
        ("disconnect", "c-five"),
        ("socket", None),
        ("refuse", "c-bad"),
    ], by_event
    connect = events[1]
    assert connect["address"] == "memory" and connect["port"] == 1
    assert connect["listener"] == broker.listener.port
    assert connect["protocol"] == "3.1.1" and connect["username"] == "alice"
    assert connect["level"] == "notice" and connect["component"] == "connection"
    assert (
        connect["message"]
        == "New client connected from memory:1 as c-alice (p2, c1, k60, u'alice')."
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", str(connect["ts"]))
    assert events[2]["reason"] == "normal disconnection"
    assert events[2]["message"] == "Client c-alice disconnected."
    assert events[4]["protocol"] == "5.0" and events[4]["username"] is None
    assert events[5]["message"] == "Client c-five has exceeded timeout, disconnecting."
    assert events[5]["reason"] == "0x8d keep-alive timeout"
    refused = events[7]
    assert refused["username"] == "alice" and refused["protocol"] == "3.1.1"
    assert refused["message"] == "Client <unknown> disconnected, not authorised."
    assert refused["reason"] == "0x87 not authorised"  # the v5 reason code (v3: return code 5)
    text = "\n".join(lines.lines)
    assert "Will message specified (25 bytes) (r1, q1)." in text and "wills/alice" in text
    assert "c-alice 1 x/#" in text  # Mosquitto's subscribe line
    assert PASSWORD not in text and PAYLOAD.decode() not in text


def test_takeover_and_protocol_errors_are_one_line_each(logged: tuple[MemoryBroker, Lines]) -> None:
    broker, lines = logged
    first = RawClient.to(broker)
    first.connect("twin")
    second = RawClient.to(broker)
    second.connect("twin")
    second.send(Connect("twin"))  # MQTT-3.1.0-2: a second CONNECT
    broker.call(lambda: None)
    messages = [str(e["message"]) for e in _events(lines) if e["event"] != "socket"]
    assert messages == [
        "New client connected from memory:1 as twin (p2, c1, k60).",
        "Client twin already connected, closing old connection.",
        "New client connected from memory:2 as twin (p2, c1, k60).",
        "Client twin disconnected due to protocol error.",
    ], messages
    assert any("Bad client twin sending multiple CONNECT messages." in line for line in lines.lines)


def _record(name: str, level: int, msg: str = "m") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_log_type_is_a_set_and_log_level_a_threshold_per_component() -> None:
    """``log_type error`` + ``debug`` shows those two only (as Mosquitto); ``log_level
    auth=debug`` shows the auth component's every line whatever ``log_type`` says, and
    ``subscribe=none`` none of the subscribe lines."""
    f = logs.type_filter(
        Config(log_type=["error", "debug"], log_level={"auth": "debug", "subscribe": "none"})
    )
    assert f.filter(_record("midge.connection", logging.ERROR))
    assert f.filter(_record("midge.connection", logging.DEBUG))
    assert not f.filter(_record("midge.connection", logs.NOTICE))
    assert not f.filter(_record("midge.broker", logging.INFO))
    assert f.filter(_record("midge.auth.ldap", logging.INFO))
    assert f.filter(_record("midge.auth", logging.DEBUG))
    assert not f.filter(_record("midge.subscribe", logging.INFO))
    assert logs.log_type(_record("midge.connection", logs.NOTICE)) == "notice"
    assert logs.component(_record("midge.auth.scram", logging.INFO)) == "auth"
    text = logs.formatter(Config(log_timestamp_format="iso8601")).format(_record("midge", 20))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d: m", text), text
    plain = logs.formatter(Config()).format(_record("midge", 20))
    assert re.fullmatch(r"\d{10}: m", plain), plain


def test_log_dest_topic_publishes_through_the_broker_without_recursing() -> None:
    """``log_dest topic``: Mosquitto's ``$SYS/broker/log/N`` etc., QoS 2, not retained, with a
    Message Expiry Interval of 20 s; debug lines never go there. Publishing a line delivers to
    a subscriber and logs nothing that is published again."""
    config = Config(log_dest=["topic"], log_type=["debug", "notice", "subscribe"])
    logs.setup(config)
    try:
        broker = MemoryBroker(config)
        handler = logs.topic_handler
        assert handler is not None
        handler.attach(broker.broker)
        watcher = RawClient.to(broker, version=5)
        watcher.connect5("watcher")
        watcher.subscribe("$SYS/broker/log/#", 2)
        other = RawClient.to(broker)
        other.connect("other")
        got = watcher.publishes(3)
        assert [p.topic for p in got] == [
            "$SYS/broker/log/M/subscribe",
            "$SYS/broker/log/N",
            "$SYS/broker/log/N",
        ], got
        assert got[0].payload.endswith(b": watcher 2 $SYS/broker/log/#")
        assert got[2].payload.endswith(
            b": New client connected from memory:2 as other (p2, c1, k60)."
        )
        assert all(p.qos == 2 and not p.retain for p in got)
        assert got[1].properties[Prop.MESSAGE_EXPIRY_INTERVAL] == logs.TOPIC_EXPIRY
        # No debug line ("No will message specified.") and nothing more.
        watcher.expect_nothing()
    finally:
        logs.reset()


def _syslog_socket(directory: str) -> tuple[socket.socket, str]:
    path = os.path.join(directory, "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o666)
    sock.settimeout(5)
    return sock, path


def test_a_broker_logs_to_a_file_syslog_and_topics_and_never_a_password_or_payload() -> None:
    """One ``midge broker`` with ``log_type all``: the file, the syslog socket (facility local3,
    notice priority for connections: <157>, 19 * 8 + 5) and a ``$SYS/broker/log/N`` subscriber
    all get the connection's line; the known password and payload are nowhere."""
    directory = tempfile.mkdtemp(prefix="midge-logs-")
    sock, sock_path = _syslog_socket(directory)
    port = free_port()
    pw = Path(directory, "passwd")
    pw.write_text(passwd.format_line("alice", passwd.hash_password(PASSWORD.encode(), 1000)))
    log_file = Path(directory, "midge.log")
    conf = Path(directory, "midge.conf")
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npassword_file {pw}\n"
        f"log_type all\nlog_dest file {log_file}\nlog_dest syslog\nlog_dest topic\n"
        f"log_facility 3\nlog_syslog_socket {sock_path}\n"
    )
    try:
        with ProcBroker(["-c", str(conf)]) as broker:
            broker.wait_listening()
            watcher = RawClient("127.0.0.1", port)
            watcher.connect("watcher")
            watcher.subscribe("$SYS/broker/log/N", 2)
            alice = RawClient("127.0.0.1", port)
            will = Will("w/alice", PAYLOAD, 0, False)
            alice.connect("alice-1", username="alice", password=PASSWORD.encode(), will=will)
            alice.publish("a/b", PAYLOAD, 1)
            alice.send(Publish("a/c", PAYLOAD, 0))
            alice.disconnect()
            wanted = "New client connected from 127.0.0.1:"
            topics = b""
            deadline = time.monotonic() + 5
            while b"Client alice-1 disconnected." not in topics and time.monotonic() < deadline:
                topics += b"\n" + watcher.expect(Publish).payload
            assert b"as alice-1 (p2, c1, k60, u'alice')." in topics, topics
            datagrams: list[bytes] = []
            while not any(b"Client alice-1 disconnected." in d for d in datagrams):
                datagrams.append(sock.recv(65536))  # times out (fails) if it never comes
            watcher.close()
            assert broker.stop() == 0
        text = log_file.read_text()
        assert wanted in text and "Client alice-1 disconnected." in text, text
        connected = [d for d in datagrams if wanted.encode() in d]
        assert connected and connected[0].startswith(b"<157>midge["), connected  # local3.notice
        everything = text.encode() + b"".join(datagrams) + topics
        assert PASSWORD.encode() not in everything and PAYLOAD not in everything
    finally:
        sock.close()
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def test_syslog_that_is_not_listening_yet_loses_lines_quietly_until_it_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As syslog(3): the broker starts when the syslog socket is not there, the lines logged
    meanwhile are lost without a traceback, and the socket is tried again for each line."""
    directory = tempfile.mkdtemp(prefix="midge-syslog-")
    path = os.path.join(directory, "log.sock")
    sock: socket.socket | None = None
    logs.setup(Config(log_dest=["syslog"], log_syslog_socket=path, log_timestamp=False))
    try:
        log = logging.getLogger("midge.server")
        log.warning("lost")
        sock, bound = _syslog_socket(directory)
        assert bound == path
        log.warning("found")
        assert sock.recv(65536) == b"<28>midge[%d]: found\x00" % os.getpid()  # daemon.warning
    finally:
        logs.reset()
        if sock is not None:
            sock.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert capsys.readouterr().err == ""
