"""Bridges between midge processes: kill -9s of the bridging midge in the middle of QoS 2
streams both ways (durable persistence, published without waiting for each acknowledgement, so
that the bridge has a window of messages in flight each way when it is killed): every message
the edge acknowledged reaches the subscriber on the remote midge, none twice."""

from __future__ import annotations

import queue
import signal
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tests.bridge.test_mosquitto_remote import Sub
from tests.procbroker import ProcBroker, free_port


def _conf(directory: Path, name: str, lines: list[str]) -> str:
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_kill_9_of_the_bridging_midge_loses_nothing_acknowledged() -> None:
    directory = Path(tempfile.mkdtemp(prefix="midge-bridge-"))
    central_port, edge_port = free_port(), free_port()
    central_conf = _conf(
        directory,
        "central.conf",
        [
            f"listener {central_port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {directory}/central/",
        ],
    )
    (directory / "central").mkdir()
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
    with ProcBroker(["-c", central_conf]) as central:
        central.wait_listening()
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
            esink.client.reconnect_delay_set(0.2, 1)
            cpub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cpub")
            cpub.max_inflight_messages_set(50)
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
                publisher = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"p{round_}")
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
                got.append(int(sink.get(15.0).payload))
            assert sorted(got) == list(range(total)), "a message was lost or came twice"
            with pytest.raises(queue.Empty):
                print(sink.get(0.5).payload)
            sink.close()
            sender.join(30)
            cpub.loop_stop()
            commands_got: list[int] = []
            while len(commands_got) < total:
                commands_got.append(int(esink.get(15.0).payload))
            assert sorted(commands_got) == list(range(total)), "a command was lost or came twice"
            with pytest.raises(queue.Empty):
                print(esink.get(0.5).payload)
            esink.close()
        finally:
            edge.close()
