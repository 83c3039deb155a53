"""The kill -9 harness: ``midge broker`` on a data directory, killed and restarted, and MQTT
clients that keep their own session state across the broker's death.

:class:`DurableBroker` runs the real command line (a subprocess via :class:`tests.procbroker.
ProcBroker`) with a TOML file naming the data directory; :meth:`DurableBroker.kill` is SIGKILL
(no shutdown code runs), :meth:`DurableBroker.restart` starts it again on the same directory and a
new port. :class:`Publisher` pipelines PUBLISHes and records which ones the broker acknowledged
(PUBACK for QoS 1, PUBREC for QoS 2: the moment midge promises the message is kept).
:class:`Subscriber` acknowledges what it receives and keeps the QoS 2 receiver state (packet ids
PUBREC'd and not yet released), so it can tell a re-sent QoS 2 message from a second delivery.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from midge.codec.packets import (
    Connack,
    Connect,
    Packet,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Will,
)
from midge.codec.properties import Prop
from tests.procbroker import ProcBroker
from tests.rawclient import Closed, RawClient

NEVER = 0xFFFFFFFF


class DurableBroker:
    """``midge broker -c midge.toml`` whose state lives in ``data_dir``."""

    def __init__(self, tmp: Path, durability: str = "fsync", **options: Any) -> None:
        self.data_dir = tmp / "data"
        self.conf = tmp / "midge.toml"
        lines = [f'data_dir = "{self.data_dir}"', f'durability = "{durability}"']
        # No limits that would drop messages in a 4,000-message run.
        options.setdefault("max_queued_messages", 0)
        options.setdefault("max_inflight_messages", 0)
        for key, value in options.items():
            lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value!r}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.procs: list[ProcBroker] = []
        self.proc = self._start()

    def _start(self) -> ProcBroker:
        proc = ProcBroker(("-c", str(self.conf), "--host", "127.0.0.1", "--port", "0"))
        self.procs.append(proc)
        proc.wait_listening()
        return proc

    @property
    def host(self) -> str:
        return self.proc.host

    @property
    def port(self) -> int:
        return self.proc.port

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no lock release but the kernel's."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.proc.close()
        self.proc = self._start()

    def client(self, version: int = 4) -> RawClient:
        return RawClient(self.host, self.port, version=version, timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            proc.close()


def connect(
    client: RawClient,
    client_id: str,
    clean: bool = False,
    expiry: int = NEVER,
    will: Will | None = None,
) -> Connack:
    """CONNECT with a persistent session (v5: Session Expiry ``expiry``)."""
    props: dict[int, Any] = {}
    if client.version == 5 and not clean:
        props[Prop.SESSION_EXPIRY_INTERVAL] = expiry
    client.send(
        Connect(
            client_id=client_id,
            protocol_level=client.version,
            clean_start=clean,
            will=will,
            properties=props,
        )
    )
    packet = client.recv()
    assert isinstance(packet, Connack), packet
    assert packet.reason_code == 0, packet
    return packet


class Publisher:
    """Pipelines QoS 1/2 PUBLISHes; ``acked`` holds the payloads the broker acknowledged.

    Its QoS 2 sender state (``unreleased``: PUBREC not yet received; ``released``: PUBREL sent,
    PUBCOMP not yet received) survives a reconnect, so :meth:`resume` re-sends exactly what a
    client must (MQTT-4.4.0-1): PUBLISH with DUP, or PUBREL.
    """

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.acked: set[bytes] = set()
        self.outstanding: dict[int, Publish] = {}  # pid -> PUBLISH not yet PUBACK'd / PUBREC'd
        self.released: set[int] = set()  # QoS 2 pids PUBREL'd, PUBCOMP not yet received
        self._next = 0

    def _pid(self) -> int:
        while True:
            self._next = self._next % 65535 + 1
            if self._next not in self.outstanding and self._next not in self.released:
                return self._next

    def send(
        self,
        topic: str,
        payloads: list[bytes],
        qos: int,
        window: int = 200,
        kill_after: int | None = None,
        broker: DurableBroker | None = None,
    ) -> None:
        """Publish every payload, ``window`` unacknowledged at most; with ``kill_after``, SIGKILL
        ``broker`` as soon as that many have been acknowledged (then return)."""
        pending = list(payloads)
        start = len(self.acked)
        while pending or self._waiting():
            while pending and len(self.outstanding) < window:
                payload = pending.pop(0)
                pid = self._pid()
                packet = Publish(topic, payload, qos, False, False, pid)
                self.outstanding[pid] = packet
                self.client.send(packet)
            self._handle(self.client.recv())
            if kill_after is not None and len(self.acked) - start >= kill_after:
                assert broker is not None
                broker.kill()
                return

    def _waiting(self) -> bool:
        return bool(self.outstanding or self.released)

    def _handle(self, packet: Packet) -> None:
        if isinstance(packet, Puback):
            sent = self.outstanding.pop(packet.packet_id)
            assert packet.reason_code < 0x80, packet
            self.acked.add(sent.payload)
        elif isinstance(packet, Pubrec):
            sent = self.outstanding.pop(packet.packet_id)
            assert packet.reason_code < 0x80, packet
            self.acked.add(sent.payload)
            self.released.add(packet.packet_id)
            self.client.send(Pubrel(packet.packet_id))
        elif isinstance(packet, Pubcomp):
            self.released.discard(packet.packet_id)
        else:
            raise AssertionError(f"unexpected {packet!r}")

    def resume(self, client: RawClient) -> None:
        """After reconnecting (session present): re-send what is unfinished, wait for it all."""
        self.client = client
        for packet in self.outstanding.values():
            packet.dup = True
            client.send(packet)
        for pid in self.released:
            client.send(Pubrel(pid))
        while self._waiting():
            self._handle(client.recv())


class Subscriber:
    """Receives and acknowledges; ``counts`` is how often each payload was delivered as new.

    A QoS 2 PUBLISH whose packet id this client has PUBREC'd and not seen released is the same
    message re-sent (MQTT-4.3.3-2's receiver side), not counted again; that state survives a
    reconnect, as a client's session state must.
    """

    def __init__(self) -> None:
        self.counts: Counter[bytes] = Counter()
        self.qos: dict[bytes, int] = {}
        self.unreleased: set[int] = set()
        self.dups_seen = 0

    @staticmethod
    def _send(client: RawClient, packet: Packet) -> None:
        """An ack to a broker that was just killed is lost, as it would be on a real network."""
        with contextlib.suppress(OSError):
            client.send(packet)

    def handle(self, client: RawClient, packet: Packet) -> None:
        if isinstance(packet, Publish):
            pid = packet.packet_id or 0
            if packet.dup:
                self.dups_seen += 1
            if packet.qos == 2:
                if pid not in self.unreleased:
                    self.counts[packet.payload] += 1
                self.unreleased.add(pid)
                self._send(client, Pubrec(pid))
            else:
                self.counts[packet.payload] += 1
                if packet.qos == 1:
                    self._send(client, Puback(pid))
            self.qos[packet.payload] = packet.qos
        elif isinstance(packet, Pubrel):
            self.unreleased.discard(packet.packet_id)
            self._send(client, Pubcomp(packet.packet_id))
        else:
            raise AssertionError(f"unexpected {packet!r}")

    def receive(
        self, client: RawClient, until: set[bytes], timeout: float = 30.0, limit: int | None = None
    ) -> None:
        """Receive until every payload in ``until`` came (and 0.3 s of quiet), or ``limit``
        packets were handled (then return at once, unacknowledged packets left as they are)."""
        deadline = time.monotonic() + timeout
        handled = 0
        while time.monotonic() < deadline:
            missing = not until <= set(self.counts)
            try:
                packet = client.recv(2.0 if missing else 0.3)
            except TimeoutError:
                if missing:
                    continue
                return
            except Closed:
                return
            self.handle(client, packet)
            handled += 1
            if limit is not None and handled >= limit:
                return
        raise AssertionError(
            f"timed out: {len(until - set(self.counts))} of {len(until)} messages missing"
        )


def payloads(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}-{i:05d}".encode() for i in range(n)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


__all__ = ["DurableBroker", "Publisher", "Subscriber", "connect", "payloads", "subprocess"]
