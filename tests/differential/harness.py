"""Differential tests: the same raw-client scenario against the real ``mosquitto`` (Debian's
2.0.11, which ``make debs`` installs) and against midge, every packet received compared byte for
byte. Where midge differs on purpose the test says why, and docs/mosquitto.md lists it.

:func:`mosquitto` starts the reference broker on a free port with the configuration lines given
(in a directory it can read once it drops to its own user); :func:`midge` starts midge on a real
socket with the same lines. :func:`exchange` connects a raw client, sends the given bytes, and
returns the exact bytes of every packet received until the broker closes the connection or
nothing more comes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from midge.codec.packets import Connect
from tests.procbroker import ProcBroker, free_port
from tests.rawclient import Closed, RawClient, read_raw_packet

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

needs_mosquitto = pytest.mark.skipif(
    not Path(MOSQUITTO).exists(), reason="mosquitto is not installed (make debs)"
)


def _write_conf(
    directory: Path, port: int, lines: list[str], before: list[str] | None = None
) -> Path:
    conf = directory / "broker.conf"
    conf.write_text("\n".join([*(before or []), f"listener {port} 127.0.0.1", *lines]) + "\n")
    os.chmod(conf, 0o644)
    return conf


def _wait_listening(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            RawClient("127.0.0.1", port).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the broker exited with {proc.returncode}") from None
            assert time.monotonic() < deadline, "the broker did not start listening"
            time.sleep(0.05)


@contextmanager
def mosquitto(lines: list[str], before: list[str] | None = None) -> Iterator[int]:
    """The real mosquitto with ``lines`` after its ``listener`` (``before``: the global lines
    before it); yields the port."""
    with mosquitto_process(lines, before) as (port, _):
        yield port


@contextmanager
def mosquitto_process(
    lines: list[str], before: list[str] | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """As :func:`mosquitto`, yielding the port and the process (to send it SIGHUP)."""
    directory = Path(tempfile.mkdtemp(prefix="midge-diff-"))
    os.chmod(directory, 0o755)
    port = free_port()
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(_write_conf(directory, port, lines, before))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def midge(lines: list[str]) -> Iterator[int]:
    """``midge broker -c`` with the same configuration; yields the port."""
    directory = Path(tempfile.mkdtemp(prefix="midge-diff-"))
    port = free_port()
    try:
        with ProcBroker(["-c", str(_write_conf(directory, port, lines))]) as broker:
            broker.wait_listening()
            yield port
            assert broker.stop() == 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def exchange(
    port: int, version: int, data: bytes, client_id: str = "diff", quiet: float = 0.5
) -> list[bytes]:
    """Connect (clean start, keep-alive 60), send ``data``, and return every packet received
    after the CONNACK, byte for byte, until the broker closes (``b""`` marks the close) or
    nothing comes for ``quiet`` seconds."""
    client = RawClient("127.0.0.1", port, version=version)
    try:
        client.send(Connect(client_id, protocol_level=version, clean_start=True, keep_alive=60))
        read_raw_packet(client)  # the CONNACK
        client.send_raw(data)
        received: list[bytes] = []
        while True:
            try:
                received.append(read_raw_packet(client, quiet))
            except (Closed, ConnectionError):
                received.append(b"")
                return received
            except TimeoutError:
                return received
    finally:
        client.close()
