"""Third-party MQTT clients driven from tests: paho-mqtt and Mosquitto's command-line tools.

Interop tests prove midge against code nobody here wrote, so these wrappers add nothing to the
protocol: they only make every wait bounded and every client stoppable.

- :class:`PahoClient`: a paho-mqtt 2.x client with its network loop in its own thread. Everything
  it receives goes to a queue; ``connect``/``subscribe``/``publish`` block (boundedly) until the
  broker has answered, so a test reads as a sequence.
- :class:`MosquittoSub`: ``mosquitto_sub`` as a subprocess. It runs with ``-d`` so the test can
  wait for its SUBACK before publishing, and with ``-F`` so each message is one parseable line
  (payload in hex, so binary and multi-line payloads survive). ``stdbuf -oL`` makes its stdout
  line-buffered: without it, a pipe gets nothing until the process exits.
- :func:`mosquitto_pub`: ``mosquitto_pub`` run to completion with a timeout.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

#: Upper bound for any single wait on the broker (connect, suback, a message, an exit).
WAIT = 5.0

#: MQTT protocol level (CONNECT's byte) -> paho's protocol constant.
PAHO_PROTOCOL = {3: mqtt.MQTTv31, 4: mqtt.MQTTv311, 5: mqtt.MQTTv5}
#: MQTT protocol level -> ``-V`` argument of mosquitto_pub/mosquitto_sub.
MOSQUITTO_VERSION = {3: "31", 4: "311", 5: "5"}
#: Readable pytest ids for protocol levels.
VERSION_ID = {3: "v3.1", 4: "v3.1.1", 5: "v5"}


# --------------------------------------------------------------------------------------------
# paho-mqtt


class PahoClient:
    """One paho-mqtt client; ``version`` is the protocol level (3, 4 or 5).

    ``clean`` is Clean Session (3.1/3.1.1) or Clean Start (5); ``session_expiry`` is the v5 Session
    Expiry Interval sent in CONNECT (None: not sent, which means 0). Received messages are kept in
    ``messages``; ``connack_flags``/``connack_reason``/``connack_properties`` hold the CONNACK and
    ``disconnect_reason`` the reason paho reports when the connection ends (a v5 server DISCONNECT's
    reason code, or its own "Unspecified error" when the socket just closed). ``transport``
    "websockets" speaks MQTT over WebSocket; ``cafile`` turns TLS on (wss, or MQTT over TLS).
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        version: int = 4,
        *,
        clean: bool = True,
        session_expiry: int | None = None,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
        will_properties: Properties | None = None,
        transport: str = "tcp",
        cafile: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.version = version
        self.clean = clean
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if version == 5 else clean,
            protocol=PAHO_PROTOCOL[version],
            reconnect_on_failure=False,
            transport=transport,  # type: ignore[arg-type]
        )
        if cafile is not None:  # TLS (wss, or mqtts) verified against the test CA
            self.client.tls_set(ca_certs=cafile)
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain, properties=will_properties)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack_flags: Any = None
        self.connack_reason: ReasonCode | None = None
        self.connack_properties: Properties | None = None
        self.disconnect_reason: ReasonCode | None = None
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._suback_cond = threading.Condition()
        self._started = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    # -- callbacks (paho's network thread) ---------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack_flags = flags
        self.connack_reason = reason
        self.connack_properties = props
        self.connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()
        self.connected.set()  # wake a connect() waiting on a refused/closed connection

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        with self._suback_cond:
            self._subacks[mid] = list(reasons)
            self._suback_cond.notify_all()

    # -- operations (test thread) ------------------------------------------------------------

    def connect(self) -> bool:
        """Connect and wait for a successful CONNACK; returns its Session Present flag."""
        properties = None
        if self.version == 5 and self.session_expiry is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.session_expiry
        if self.version == 5:
            self.client.connect(
                self.host, self.port, self.keepalive, clean_start=self.clean, properties=properties
            )
        else:
            self.client.connect(self.host, self.port, self.keepalive)
        self.client.loop_start()
        self._started = True
        assert self.connected.wait(WAIT), f"{self.client_id}: no CONNACK within {WAIT}s"
        assert not self.disconnected.is_set(), (
            f"{self.client_id}: connection closed before CONNACK ({self.disconnect_reason})"
        )
        assert self.connack_reason is not None and not self.connack_reason.is_failure, (
            f"{self.client_id}: CONNACK refused: {self.connack_reason}"
        )
        return bool(self.connack_flags.session_present)

    def subscribe(
        self, topic: str, qos: int = 0, properties: Properties | None = None
    ) -> list[int]:
        """Subscribe and wait for the SUBACK; returns its reason codes (granted QoS or errors)."""
        result, mid = self.client.subscribe(topic, qos, properties=properties)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {result}"
        deadline = time.monotonic() + WAIT
        with self._suback_cond:
            while mid not in self._subacks:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{self.client_id}: no SUBACK within {WAIT}s"
                self._suback_cond.wait(remaining)
            return [reason.value for reason in self._subacks.pop(mid)]

    def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        wait: bool = True,
    ) -> mqtt.MQTTMessageInfo:
        """Publish; with ``wait``, block until the QoS flow completed (QoS 0: until sent)."""
        info = self.client.publish(topic, payload, qos, retain, properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish not queued: {info.rc}"
        if wait:
            self.wait_published(info)
        return info

    @staticmethod
    def wait_published(info: mqtt.MQTTMessageInfo, timeout: float = WAIT) -> None:
        info.wait_for_publish(timeout)
        assert info.is_published(), f"message {info.mid} not acknowledged within {timeout}s"

    def expect(self, timeout: float = WAIT) -> mqtt.MQTTMessage:
        """The next message received; fails the test if none arrives in time."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout}s") from None

    def collect(self, count: int, timeout: float = WAIT) -> list[mqtt.MQTTMessage]:
        """``count`` messages; ``timeout`` is for the whole batch."""
        deadline = time.monotonic() + timeout
        got: list[mqtt.MQTTMessage] = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            try:
                got.append(self.messages.get(timeout=max(remaining, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: {len(got)} of {count} messages within {timeout}s: "
                    f"{[(m.topic, m.payload[:40]) for m in got]}"
                ) from None
        return got

    def drain(self, quiet: float = 0.3) -> list[mqtt.MQTTMessage]:
        """Every message that arrives until ``quiet`` seconds pass with none."""
        got: list[mqtt.MQTTMessage] = []
        while True:
            try:
                got.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return got

    def expect_nothing(self, timeout: float = 0.5) -> None:
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(
            f"{self.client_id}: expected no message, got {message.topic!r} {message.payload!r}"
        )

    def disconnect(self, reason: ReasonCode | None = None) -> None:
        """A normal DISCONNECT (v5: with ``reason``), then wait until paho's thread is done."""
        self.client.disconnect(reasoncode=reason)
        assert self.disconnected.wait(WAIT), f"{self.client_id}: DISCONNECT not completed"
        self.client.loop_stop()

    def drop(self) -> None:
        """Close the TCP connection (FIN) without sending DISCONNECT, as a crashed client would."""
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        assert self.disconnected.wait(WAIT), f"{self.client_id}: paho did not notice the close"
        self.client.loop_stop()

    def reset(self) -> None:
        """Abort the TCP connection (RST, SO_LINGER 0) without sending DISCONNECT."""
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        # Stop paho's thread first so that it does not use the socket while it is closed.
        self._stop_thread()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()

    def _stop_thread(self) -> None:
        thread = self.client._thread  # paho keeps no public handle on it
        self.client._thread_terminate = True
        if thread is not None:
            thread.join(WAIT)
        self.client._thread = None

    def close(self) -> None:
        """Teardown: leave politely if still connected, and never wait unboundedly."""
        if not self._started:
            return
        if not self.disconnected.is_set() and self.client.is_connected():
            self.client.disconnect()
            self.disconnected.wait(WAIT)
        self._stop_thread()
        with contextlib.suppress(Exception):
            sock = self.client.socket()
            if sock is not None:
                sock.close()


def properties(packet_type: int = PacketTypes.PUBLISH, **values: Any) -> Properties:
    """``properties(UserProperty=[("k", "v")], ContentType="text/plain")``: a paho Properties."""
    props = Properties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


def props_of(message: mqtt.MQTTMessage) -> Any:
    """A received v5 message's properties (paho sets them as dynamic attributes)."""
    assert message.properties is not None, "no properties on this message"
    return message.properties


def user_properties(message: mqtt.MQTTMessage) -> list[tuple[str, str]]:
    props = message.properties
    if props is None or not hasattr(props, "UserProperty"):
        return []
    return [(str(key), str(value)) for key, value in props.UserProperty]


# --------------------------------------------------------------------------------------------
# Mosquitto's command-line clients


@dataclass
class SubMessage:
    """One message as mosquitto_sub printed it with :data:`MosquittoSub.FORMAT`."""

    topic: str
    qos: int
    retain: bool
    payload: bytes
    extra: list[str] = field(default_factory=list)  # the fields after the payload, if any


class MosquittoSub:
    """``mosquitto_sub`` subscribed to ``topics`` on 127.0.0.1:``port``; see the module docstring.

    ``count`` is ``-C`` (exit after that many messages); ``-W`` bounds its life in any case.
    The constructor returns once the SUBACK arrived (unless ``wait_subscribed`` is False, e.g. with
    ``-E``).
    """

    #: Topic, QoS, retain, payload in hex, then v5 user properties, content type, response topic
    #: and correlation data (empty when absent). mosquitto_sub expands the ``\t`` itself.
    FORMAT = r"MSG\t%t\t%q\t%r\t%x\t%P\t%C\t%R\t%D"

    def __init__(
        self,
        port: int,
        topics: Sequence[str],
        version: int = 4,
        qos: int = 0,
        count: int | None = None,
        args: Iterable[str] = (),
        lifetime: int = 30,
        wait_subscribed: bool = True,
    ) -> None:
        command = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(port)]
        command += ["-V", MOSQUITTO_VERSION[version], "-q", str(qos), "-d", "-F", self.FORMAT]
        command += ["-W", str(lifetime)]
        for topic in topics:
            command += ["-t", topic]
        if count is not None:
            command += ["-C", str(count)]
        command += list(args)
        self.command = command
        self.lines: list[bytes] = []
        self.stderr = b""
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()
        if wait_subscribed:
            try:
                self.wait_for(b"received SUBACK")
            except BaseException:
                self.close()
                raise

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip(b"\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait_for(self, marker: bytes, timeout: float = WAIT) -> None:
        """Wait until a stdout line contains ``marker`` (e.g. its debug line for SUBACK)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(marker in line for line in self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._out.is_alive()):
                    raise AssertionError(
                        f"mosquitto_sub: no {marker!r} within {timeout}s; output: {self.output()}"
                    )
                self._cond.wait(min(remaining, 0.1))

    def messages(self) -> list[SubMessage]:
        with self._cond:
            lines = list(self.lines)
        parsed = []
        for line in lines:
            if not line.startswith(b"MSG\t"):
                continue
            fields = line.decode("utf-8", "replace").split("\t")
            topic, qos, retain, payload = fields[1:5]
            parsed.append(
                SubMessage(topic, int(qos), retain == "1", bytes.fromhex(payload), fields[5:])
            )
        return parsed

    def wait_messages(self, count: int, timeout: float = WAIT) -> list[SubMessage]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages()
            if len(got) >= count:
                return got
            if time.monotonic() > deadline or (
                self.proc.poll() is not None and not self._out.is_alive()
            ):
                raise AssertionError(
                    f"mosquitto_sub: {len(got)} of {count} messages; output: {self.output()}"
                )
            time.sleep(0.02)

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for it to exit by itself (``-C``, ``-E``); returns the exit status."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"mosquitto_sub still running after {timeout}s; output: {self.output()}"
            ) from None
        self._out.join(WAIT)
        self._err.join(WAIT)
        return code

    def kill(self) -> None:
        """SIGKILL: the process dies without DISCONNECT; the kernel closes its socket."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(WAIT)

    def output(self) -> str:
        with self._cond:
            out = b"\n".join(self.lines[-40:])
        return f"{out.decode('utf-8', 'replace')}\nstderr: {self.stderr.decode('utf-8', 'replace')}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(WAIT)
        self._out.join(WAIT)
        self._err.join(WAIT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def mosquitto_pub(
    port: int,
    topic: str,
    *args: str,
    version: int = 4,
    message: str | None = None,
    qos: int = 0,
    stdin: bytes | None = None,
    timeout: float = 20.0,
    must_succeed: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``mosquitto_pub`` to completion (killed after ``timeout``); it must exit 0 unless
    ``must_succeed`` is False (a refusal the caller checks)."""
    command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port)]
    command += ["-V", MOSQUITTO_VERSION[version], "-t", topic, "-q", str(qos)]
    if message is not None:
        command += ["-m", message]
    command += list(args)
    result = subprocess.run(
        command,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0 or not must_succeed, (
        f"{command} exited {result.returncode}: {result.stderr.decode('utf-8', 'replace')}"
    )
    return result
