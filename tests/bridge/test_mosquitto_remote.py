"""Bridges against a real Mosquitto (the remote broker, started by the test): both directions,
prefix remapping, the state topics, and reconnecting after the remote restarts.

midge runs in process (:class:`tests.conftest.RunningBroker`) with a ``connection`` section read
from mosquitto.conf text; the clients are paho-mqtt on both sides. Every wait is bounded.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from midge.config import ListenerConfig, parse_mosquitto_conf
from tests.conftest import RunningBroker
from tests.differential.harness import (
    MOSQUITTO,
    _wait_listening,
    _write_conf,
    mosquitto,
    needs_mosquitto,
)
from tests.procbroker import free_port

pytestmark = needs_mosquitto


class Sub:
    """A paho client subscribed to ``filters``; ``get()`` waits (bounded) for the next message."""

    def __init__(
        self, port: int, filters: list[str], client_id: str = "", clean: bool = True
    ) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean
        )
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for f in filters:
            self.client.subscribe(f, 1)[1]
        time.sleep(0.2)

    def get(self, timeout: float = 10.0) -> paho.MQTTMessage:
        """The next message that is not a state notification."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            if not m.topic.startswith("$SYS"):
                return m

    def any(self, timeout: float) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos, retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextmanager
def bridged_midge(remote_port: int, lines: list[str]) -> Iterator[RunningBroker]:
    text = "\n".join(["connection up", f"address 127.0.0.1:{remote_port}", *lines]) + "\n"
    config = parse_mosquitto_conf(text)
    config.listeners = [ListenerConfig(port=0, host="127.0.0.1")]
    config.sys_interval = 0
    broker = RunningBroker(config)
    try:
        yield broker
    finally:
        broker.stop()


def wait_state(sub: Sub, topic: str, value: bytes, timeout: float = 15.0) -> None:
    wait_states(sub, {topic: value}, timeout)


def wait_states(sub: Sub, states: dict[str, bytes], timeout: float = 15.0) -> None:
    """Until ``sub`` has got each topic's value, in any order (TimeoutError or queue.Empty at
    ``timeout``); the other messages it gets meanwhile are dropped."""
    deadline = time.monotonic() + timeout
    left = dict(states)
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"still waiting for {left}")
        m = sub.any(remaining)
        if left.get(m.topic) == m.payload:
            del left[m.topic]


@pytest.mark.parametrize("version", ["mqttv31", "mqttv311", "mqttv50"])
def test_both_directions_prefixes_state_and_remote_restart(version: str) -> None:
    """Each bridge_protocol_version (MQTT 3.1, 3.1.1 with try_private, 5 with No Local)."""
    lines = [
        f"bridge_protocol_version {version}",
        "remote_clientid edge1",
        "restart_timeout 1",
        "topic sensors/# out 1 local/ site1/",
        "topic cmd/# in 1 ctl/ central/",
        'topic "" both 2 shared/in shared/out',
    ]
    logs = Path(tempfile.mkdtemp(prefix="midge-bridge-log-"))
    os.chmod(logs, 0o777)  # Mosquitto started as root writes as the mosquitto user
    log = logs / "mosquitto.log"
    conf = ["allow_anonymous true", f"log_dest file {log}", "connection_messages true"]
    with mosquitto(conf) as remote_port:
        remote = Sub(remote_port, ["site1/#", "$SYS/broker/connection/#", "shared/#"])
        with bridged_midge(remote_port, lines) as broker:
            local = Sub(broker.port, ["ctl/#", "$SYS/broker/connection/#", "shared/#"])
            # The state: 1 on the remote (and the will says 0 when the bridge goes).
            wait_state(remote, "$SYS/broker/connection/edge1/state", b"1")
            wait_state(local, "$SYS/broker/connection/up/state", b"1")
            # Mosquitto's log names the protocol the bridge speaks: p1 3.1, p2 3.1.1, p5 5.0.
            level = {"mqttv31": "p1", "mqttv311": "p2", "mqttv50": "p5"}[version]
            assert f"as edge1 ({level}," in log.read_text()
            # out, with remapping: local/sensors/t -> site1/sensors/t
            local.publish("local/sensors/t", b"21.5")
            m = remote.get()
            assert (m.topic, m.payload, m.qos) == ("site1/sensors/t", b"21.5", 1)
            # in, with remapping: central/cmd/reboot -> ctl/cmd/reboot
            remote.publish("central/cmd/reboot", b"now")
            m = local.get()
            assert (m.topic, m.payload) == ("ctl/cmd/reboot", b"now")
            # "" pattern: the prefixes alone name the topic, both ways, and nothing loops.
            remote.publish("shared/out", b"from-remote", qos=2)
            assert remote.get().payload == b"from-remote"  # its own copy
            m = local.get()
            assert (m.topic, m.payload, m.qos) == ("shared/in", b"from-remote", 1)
            local.publish("shared/in", b"from-local", qos=2)
            assert local.get().payload == b"from-local"  # its own copy
            m = remote.get()
            assert (m.topic, m.payload) == ("shared/out", b"from-local")
            # No loop: the remote (Mosquitto, told by try_private) does not send the bridge's
            # message back, nor does midge's local session (No Local).
            with pytest.raises(queue.Empty):
                print(local.get(1.0).topic)
            with pytest.raises(queue.Empty):
                print(remote.get(0.2).topic)
            local.close()
        # The bridge stopped: the remote's state says 0.
        wait_state(remote, "$SYS/broker/connection/edge1/state", b"0")
        remote.close()
    shutil.rmtree(logs, ignore_errors=True)


@contextmanager
def mosquitto_on(port: int, directory: Path, lines: list[str]) -> Iterator[None]:
    """The real mosquitto on a given port (so it can be restarted where the bridge expects it),
    its configuration and persistence in ``directory``."""
    conf = _write_conf(directory, port, lines)
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_listening(port, proc)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def test_reconnects_after_the_remote_restarts_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the remote is down, QoS 1 messages midge acknowledged wait in the bridge's local
    session; once the remote is back they reach a persistent subscriber there, in order. The
    log says each change of the bridge's state."""
    port = free_port()
    tmp_path = Path(tempfile.mkdtemp(prefix="midge-bridge-"))
    os.chmod(tmp_path, 0o777)  # mosquitto writes its database there as its own user
    remote_lines = [
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {tmp_path}/",
    ]
    lines = ["restart_timeout 1", "topic t/# out 1"]
    with caplog.at_level("INFO", logger="midge.bridge"), bridged_midge(port, lines) as broker:
        local = Sub(broker.port, ["$SYS/broker/connection/up/state"])
        with mosquitto_on(port, tmp_path, remote_lines):
            wait_state(local, "$SYS/broker/connection/up/state", b"1")
            remote = Sub(port, ["t/#"], client_id="keeper", clean=False)
            local.publish("t/a", b"0")
            assert remote.get().payload == b"0"
            remote.close()
        wait_state(local, "$SYS/broker/connection/up/state", b"0")
        for n in range(1, 6):
            local.publish("t/a", str(n).encode())  # acknowledged by midge, remote down
        local.publish("t/r", b"kept", retain=True)
        with mosquitto_on(port, tmp_path, remote_lines):
            wait_state(local, "$SYS/broker/connection/up/state", b"1")
            remote = Sub(port, ["t/#"], client_id="keeper", clean=False)
            got: list[bytes | bytearray] = []  # paho's payload type
            while len(got) < 5:
                m = remote.get()
                if m.topic == "t/a":
                    got.append(m.payload)
            assert got == [b"1", b"2", b"3", b"4", b"5"]
            remote.close()
            # The retained message crossed as retained: a new subscriber there gets it.
            fresh = Sub(port, ["t/r"])
            m = fresh.get()
            assert (m.payload, m.retain) == (b"kept", True)
            fresh.close()
        local.close()
    shutil.rmtree(tmp_path, ignore_errors=True)
    logged = [r.getMessage() for r in caplog.records if r.name == "midge.bridge"]
    assert any(t.startswith("bridge up: local session local.") for t in logged), logged
    assert sum(t == f"bridge up: connected to 127.0.0.1:{port}" for t in logged) >= 2, logged
    assert "bridge up: connection lost" in logged, logged
    assert any(t.startswith(f"bridge up: cannot connect to 127.0.0.1:{port}: ") for t in logged)
