"""Bridges between midge processes: kill -9s of the bridging midge in the middle of QoS 2
streams both ways (durable persistence, published without waiting for each acknowledgement, so
that the bridge has a window of messages in flight each way when it is killed): every message
the edge acknowledged reaches the subscriber on the remote midge, none twice."""

from __future__ import annotations

import os
import queue
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.bridge.test_mosquitto_remote import Sub, mosquitto_on
from tests.differential.harness import MOSQUITTO
from tests.procbroker import ProcBroker, free_port


def _conf(directory: Path, name: str, lines: list[str]) -> str:
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@contextmanager
def _central(kind: str, directory: Path, port: int) -> Iterator[None]:
    """The remote broker, with persistence: midge (``midge broker``) or Debian's Mosquitto."""
    (directory / "central").mkdir()
    lines = [
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {directory}/central/",
    ]
    if kind == "midge":
        conf = _conf(directory, "central.conf", [f"listener {port} 127.0.0.1", *lines])
        with ProcBroker(["-c", conf]) as central:
            central.wait_listening()
            yield
        return
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (make debs installs it)")
    os.chmod(directory, 0o777)  # Mosquitto started as root writes as the mosquitto user
    os.chmod(directory / "central", 0o777)
    (directory / "mosquitto").mkdir(mode=0o755)
    with mosquitto_on(port, directory / "mosquitto", lines):
        yield


@pytest.mark.parametrize("central_kind", ["midge", "mosquitto"])
def test_kill_9_of_the_bridging_midge_loses_nothing_acknowledged(central_kind: str) -> None:
    """The edge midge bridges to a central midge, or to a real Mosquitto."""
    directory = Path(tempfile.mkdtemp(prefix="midge-bridge-"))
    central_port, edge_port = free_port(), free_port()
    (directory / "edge").mkdir()
    edge_conf = _conf(
        directory,
        "edge.conf",
        [
            f"listener {edge_port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {directory}/edge/",
            "connection central",
            f"address 127.0.0.1:{central_port}",
            "bridge_protocol_version mqttv50",
            "restart_timeout 1",
            "topic data/# out 2",
            "topic cmd/# in 2",
        ],
    )
    total = 300
    with _central(central_kind, directory, central_port):
        sink = Sub(central_port, ["data/#"], client_id="sink", clean=False)
        sink.client.subscribe("data/#", 2)
        edge = ProcBroker(["-c", edge_conf])
        try:
            edge.wait_listening()
            # The other direction at the same time: central publishes cmd/N (QoS 2) while the
            # edge is killed; a persistent subscriber on the edge (paho, reconnecting by itself
            # with its session state) must get each exactly once.
            esink = Sub(edge_port, [], client_id="esink", clean=False)
            esink.client.subscribe("cmd/#", 2)
            # paho annotates the delays int, but waits any float: 0.2 s is meant
            esink.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
            cpub = paho.Client(CallbackAPIVersion.VERSION2, client_id="cpub")
            cpub.max_inflight_messages_set(20)  # Mosquitto drops what exceeds its own 20
            cpub.connect("127.0.0.1", central_port)
            cpub.loop_start()

            def commands() -> None:
                # In batches without waiting for each: the bridge has several in flight.
                for first in range(0, total, 25):
                    batch = [
                        cpub.publish("cmd/n", str(n).encode(), qos=2)
                        for n in range(first, min(total, first + 25))
                    ]
                    for info in batch:
                        info.wait_for_publish(10)
                    time.sleep(0.02)

            sender = threading.Thread(target=commands)
            time.sleep(0.5)  # the bridge is up
            sender.start()
            # Killed (SIGKILL) three times mid-stream, each time started again on the same
            # database: the hand-over of each message (the remote's stored message and the local
            # QoS 2 id, one commit) must survive a kill at any point.
            acknowledged = 0
            for round_, stop in enumerate((total // 4, total // 2, 3 * total // 4, total)):
                if round_:
                    edge = ProcBroker(["-c", edge_conf])
                    edge.wait_listening()
                publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"p{round_}")
                publisher.max_inflight_messages_set(100)
                publisher.connect("127.0.0.1", edge_port)
                publisher.loop_start()
                # All at once: the kill then comes while the bridge has a window in flight.
                infos = [
                    publisher.publish("data/n", str(n).encode(), qos=2)
                    for n in range(acknowledged, stop)
                ]
                for info in infos:
                    info.wait_for_publish(10)
                    assert info.is_published()
                acknowledged = stop
                publisher.loop_stop()
                if stop < total:
                    edge.send_signal(signal.SIGKILL)
                    edge.proc.wait(10)
                    edge.close()
            got: list[int] = []
            while len(got) < total:
                try:
                    got.append(int(sink.get(15.0).payload))
                except queue.Empty:
                    missing = sorted(set(range(total)) - set(got))
                    raise AssertionError(f"{len(got)} arrived; missing {missing}") from None
            assert sorted(got) == list(range(total)), "a message was lost or came twice"
            with pytest.raises(queue.Empty):
                print(sink.get(0.5).payload)
            sink.close()
            sender.join(30)
            cpub.loop_stop()
            commands_got: list[int] = []
            while len(commands_got) < total:
                try:
                    commands_got.append(int(esink.get(15.0).payload))
                except queue.Empty:
                    missing = sorted(set(range(total)) - set(commands_got))
                    raise AssertionError(f"{len(commands_got)} came; missing {missing}") from None
            assert sorted(commands_got) == list(range(total)), "a command was lost or came twice"
            with pytest.raises(queue.Empty):
                print(esink.get(0.5).payload)
            esink.close()
        finally:
            edge.close()
