"""Issue 14: midge's text log has Mosquitto's lines for the same events, which users' log tooling
parses. The same client scenario runs against the real mosquitto 2.0.11 and midge, both with
``log_type all`` to a file; the connection, disconnection, refusal, will and subscribe lines
must be the same, timestamps and client ports aside.

Mosquitto's per-packet debug lines ("Sending CONNACK to ...", "Received PUBLISH from ...") are
not compared: midge does not log per packet (docs/mosquitto.md, "Logs").
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from midge.auth import passwd
from midge.codec.packets import Connect, Will
from tests.differential.harness import midge, mosquitto, needs_mosquitto
from tests.rawclient import Closed, RawClient

#: The lines compared: Mosquitto's words for the events of issue 14.
EVENT = re.compile(
    r"(New connection from |New client connected from |Client |Bad client |Invalid protocol "
    r"|Will message specified|No will message specified|\tw/|\S+ \d \S+$)"
)
#: Mosquitto's lines this scenario does not compare (per-packet debug lines, start and stop).
OTHER = re.compile(
    r"(Sending |Received |\t.* \(QoS \d\)$|mosquitto version|Config loaded|Opening )"
)


def _normalized(text: str, start: int) -> list[str]:
    lines = []
    for line in text.splitlines()[start:]:
        line = re.sub(r"^\d+: ", "", line)
        if OTHER.match(line) or not EVENT.match(line):
            continue
        line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
        line = re.sub(r"on port \d+\.", "on port LISTENER.", line)
        lines.append(line)
    return sorted(lines)


def _wait_for(path: Path, text: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{path.read_text()}"
        time.sleep(0.05)


def _until_closed(client: RawClient) -> None:
    """Read (a CONNACK, ...) until the broker closes."""
    try:
        while True:
            client.recv(3.0)
    except (Closed, ConnectionError):
        client.close()


def _scenario(port: int, log: Path) -> None:
    """The same clients, one after the other; each step waits for its last line."""

    def client(version: int = 4) -> RawClient:
        return RawClient("127.0.0.1", port, version=version)

    # A client that stops talking: its keep-alive (1 s) runs out while the others go on.
    idle = client()
    idle.connect("k-idle", keep_alive=1)
    # A user with a password and a will; subscribes, publishes, disconnects normally.
    alice = client()
    will = Will("w/alice", b"gone", 1, True)
    alice.connect("c-alice", username="alice", password=b"s3cret", keep_alive=60, will=will)
    alice.subscribe("a/#", 1)
    alice.publish("b/c", b"hello", 1)
    alice.disconnect()
    _wait_for(log, "Client c-alice disconnected.")
    # MQTT 5, gone without DISCONNECT.
    five = client(5)
    five.connect("c-five", keep_alive=30)
    five.close()
    _wait_for(log, "Client c-five closed its connection.")
    # Refused: a wrong password (v3.1.1) and an unknown protocol level.
    bad = client()
    bad.connect("c-bad", username="alice", password=b"wrong")
    bad.close()
    odd = client()
    odd.send(Connect("c-odd", protocol_level=6))
    _until_closed(odd)
    # A second CONNECT, then a client id taken over.
    twice = client()
    twice.connect("c-twice")
    twice.send(Connect("c-twice"))
    _until_closed(twice)
    first = client()
    first.connect("c-twin")
    second = client()
    second.connect("c-twin")
    _wait_for(log, "already connected")
    second.close()
    first.close()
    _wait_for(log, "Client c-twin closed its connection.")
    _wait_for(log, "Client k-idle has exceeded timeout, disconnecting.")
    idle.close()
    time.sleep(0.3)


def _run(broker: Callable[[list[str]], AbstractContextManager[int]], directory: Path) -> list[str]:
    log = directory / "broker.log"
    log.write_text("")
    os.chmod(log, 0o666)
    lines = [
        "log_type all",
        f"log_dest file {log}",
        "allow_anonymous true",
        f"password_file {directory / 'passwd'}",
    ]
    with broker(lines) as port:
        time.sleep(0.3)  # the harness's "is it listening" probe is logged before this
        start = len(log.read_text().splitlines())
        _scenario(port, log)
        text = log.read_text()
    return _normalized(text, start)


@needs_mosquitto
def test_connection_lines_are_mosquittos() -> None:
    directory = Path(tempfile.mkdtemp(prefix="midge-difflog-"))
    os.chmod(directory, 0o777)
    try:
        pw = directory / "passwd"
        pw.write_text(passwd.format_line("alice", passwd.hash_password(b"s3cret", 1000)))
        os.chmod(pw, 0o644)
        theirs = _run(mosquitto, directory)
        ours = _run(midge, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert "New client connected from 127.0.0.1:PORT as c-alice (p2, c1, k60, u'alice')." in theirs
    assert ours == theirs, "\n".join(
        [*(f"- {line}" for line in theirs if line not in ours)]
        + [f"+ {line}" for line in ours if line not in theirs]
    )
