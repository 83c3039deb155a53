"""``websockets_log_level`` with ``log_type websockets`` (Mosquitto's pair; ``all`` includes
``websockets``): a ``midge broker`` process logs the WebSocket layer's debug lines (here: why an
upgrade was refused) only when both ask for it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.procbroker import ProcBroker


def _refused_upgrade(port: int) -> bytes:
    """An upgrade offering only a subprotocol other than MQTT's: answered 400."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        )
        return sock.recv(65536)


@pytest.mark.parametrize(
    ("lines", "logged"),
    [
        (["log_type websockets", "websockets_log_level 255"], True),
        (["log_type websockets", "websockets_log_level 0"], False),
        (["log_type all"], False),
        (["log_type all", "websockets_log_level 1"], True),
        (["log_type debug", "websockets_log_level 255"], False),
    ],
    ids=["type-and-level", "level-0", "all-without-level", "all-and-level", "debug-not-websockets"],
)
def test_websockets_log_level(tmp_path: Path, lines: list[str], logged: bool) -> None:
    conf = tmp_path / "midge.conf"
    conf.write_text(
        "\n".join(
            [
                "listener 0 127.0.0.1",
                "protocol websockets",
                *lines,
                "log_type notice",
            ]
        )
        + "\n"
    )
    with ProcBroker(["-c", str(conf)], cwd=tmp_path) as broker:
        (listener,) = broker.wait_listening()
        assert _refused_upgrade(listener.port).startswith(b"HTTP/1.1 400")
        seen = broker.wait_output("WebSocket upgrade refused", timeout=2.0 if logged else 0.5)
    assert seen is logged, broker.describe()
