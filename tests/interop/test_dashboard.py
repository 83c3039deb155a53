"""The web dashboard end to end: the page served by midge's ``protocol http`` listener, in
headless Chromium (Debian ``chromium``) driven by Playwright (``playwright-core``,
tests/browser/dashboard.mjs), with real paho-mqtt clients on the broker's MQTT listener.

- the page loads with the admin credentials and logs no console error, all along;
- the overview's chart of messages in is flat, then moves when the test publishes;
- the topic tree shows the published topic and its value; the viewer shows it as JSON and hex,
  and the history holds the values published;
- the explorer's publish form reaches a paho subscriber;
- the retained page's Clear button clears a retained message;
- the clients table's Disconnect button disconnects a real paho client (v5 reason 0x98).

With ``MIDGE_SCREENSHOTS=DIR`` (``make screenshots``: docs/images) it saves the screenshots that
docs/operations.md shows; without it, it writes nothing.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from midge.auth.passwd import hash_password
from midge.config import ListenerConfig
from midge.observe.http import LIVE_KEY
from tests.conftest import RunningBroker
from tests.interop.clients import PahoClient

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

BROWSER_DIR = Path(__file__).resolve().parent.parent / "browser"
NODE_MODULES = BROWSER_DIR / "node_modules"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WAIT = 45.0
PASSWORD = "dashboard"


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (make test installs nodejs)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (make test installs Debian's chromium)"
    if not (NODE_MODULES / "playwright-core").is_dir():
        return "npm package playwright-core missing: run make browser-deps"
    return None


class Driver:
    """tests/browser/dashboard.mjs: commands on its stdin, answers on its stdout."""

    def __init__(self, screenshots: str | None) -> None:
        env = {**os.environ, "CHROMIUM": CHROMIUM, "DASH_USER": "admin", "DASH_PASSWORD": PASSWORD}
        env.pop("SCREENSHOTS", None)
        if screenshots:
            env["SCREENSHOTS"] = str(Path(screenshots).resolve())
        self.process = subprocess.Popen(
            ["node", str(BROWSER_DIR / "dashboard.mjs")],
            cwd=BROWSER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.errors: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def ask(self, command: str, answer: str) -> str:
        """Send ``command``; the rest of the first line starting with ``answer``."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.expect(answer)

    def expect(self, prefix: str) -> str:
        while True:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no '{prefix}' from the browser: {self.seen}") from None
            if line is None:
                if "Failed to launch" in "\n".join(self.seen):
                    pytest.skip(f"Chromium cannot start here: {self.seen[-5:]}")
                raise AssertionError(f"the browser driver ended before '{prefix}': {self.seen}")
            self.seen.append(line)
            if line.startswith("console-error "):
                self.errors.append(line)
            elif line.startswith("failed "):
                raise AssertionError(f"the browser driver failed: {self.seen}")
            elif line.startswith(prefix + " ") or line == prefix:
                return line[len(prefix) + 1 :]

    def close(self) -> None:
        if self.process.poll() is None and self.process.stdin is not None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(WAIT)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


class Sensors:
    """A paho client publishing plant readings every 100 ms, and one subscribed to some of them
    (traffic in and out for the charts and the screenshots), until stopped."""

    def __init__(self, host: str, port: int) -> None:
        self.client = PahoClient(host, port, "sensors", 5)
        self.client.connect()
        self.historian = PahoClient(host, port, "historian", 5)
        self.historian.connect()
        assert self.historian.subscribe("plant/+/pressure", 0) == [0]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop.wait(0.1):
            n += 1
            for line in (1, 2):
                pressure = 1.0 + ((n * line) % 7) / 100
                # a rate that rises and falls over ~6 s, so that the charts show something
                for _ in range(1 + int(2 + 2 * math.sin(n / 10))):
                    self.client.client.publish(f"plant/line{line}/pressure", f"{pressure:.2f}")
                if n % 5 == 0:
                    self.client.client.publish(f"plant/line{line}/rpm", str(1400 + (n * 13) % 90))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.close()
        self.historian.close()


def _streams_open(broker: RunningBroker) -> int:
    """The dashboard streams the broker serves now (read on its loop)."""
    http = broker.server.http
    assert http is not None and http.app is not None
    live = http.app[LIVE_KEY]
    return int(broker.call(lambda: len(live.streams)))


def test_the_dashboard_in_chromium(make_broker: Callable[..., RunningBroker]) -> None:
    missing = _missing()
    if missing is not None:
        pytest.skip(missing)
    broker = make_broker(
        listeners=[
            ListenerConfig(port=0, host="127.0.0.1"),
            ListenerConfig(port=0, host="127.0.0.1", protocol="http"),
        ],
        local_only=False,
        allow_anonymous=True,
        admin_user="admin",
        admin_password_hash=hash_password(PASSWORD.encode()).encode(),
    )
    http_port = broker.server.addresses[broker.server.protocols.index("http")][1]
    core = broker.server.broker
    assert core is not None
    victim = PahoClient(broker.host, broker.port, "victim", 5)
    victim.connect()
    assert victim.subscribe("plant/commands/#", 1) == [1]
    publisher = PahoClient(broker.host, broker.port, "line1-controller", 4)
    publisher.connect()
    screenshots = os.environ.get("MIDGE_SCREENSHOTS")
    driver = Driver(screenshots)
    sensors: Sensors | None = None
    try:
        assert driver.ask(f"open http://127.0.0.1:{http_port}/dashboard/", "open") == "200"
        # Nothing published yet: the chart of messages in is flat at 0.
        assert float(driver.ask("chart", "chart")) == 0
        for n in range(20):
            reading = {"celsius": 20 + n / 2, "sensor": "t-101"}
            publisher.client.publish(
                "plant/line1/temp", json.dumps(reading), qos=1
            ).wait_for_publish(10)
        for topic, value in (
            ("plant/line1/status", b"running"),
            ("plant/line2/status", b"maintenance"),
            ("plant/line2/serial", bytes.fromhex("00a3ff1c")),
        ):
            publisher.client.publish(topic, value, qos=1, retain=True).wait_for_publish(10)
        assert float(driver.ask("chart-wait", "chart")) > 0  # the chart moved

        # The topic tree: the published topic, its last value, as JSON and hex, and its history.
        assert (
            driver.ask("topic plant/line1/temp", "tree") == '{"celsius": 29.5, "sensor": "t-101"}'
        )
        viewer = json.loads(driver.expect("json"))
        assert json.loads(viewer) == {"celsius": 29.5, "sensor": "t-101"}
        assert viewer.startswith('{\n  "celsius": 29.5')  # pretty-printed
        assert driver.expect("hex").startswith("00000000  7b 22 63 65 6c 73 69 75")
        assert driver.expect("history") == "20"
        # Each topic explored opens a stream that explores it and closes the one before (the
        # broker sees a closed stream at its next update): after two more, it serves this page
        # one stream.
        for other in ("plant/line1/status", "plant/line2/status"):
            driver.ask(f"topic {other}", "tree")
        deadline = time.monotonic() + 10
        while _streams_open(broker) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _streams_open(broker) == 1

        # The publish form reaches a real subscriber.
        assert driver.ask("publish plant/commands/line1 stop", "published") == "published"
        message = victim.messages.get(timeout=WAIT)
        assert (message.topic, message.payload) == ("plant/commands/line1", b"stop")

        sensors = Sensors(broker.host, broker.port)
        time.sleep(20 if screenshots else 0)  # some traffic on the charts
        driver.ask("page overview", "page")
        driver.ask("shot overview", "shot")
        driver.ask("topic plant/line2/pressure", "tree")
        driver.ask("topic plant/line1/temp", "tree")
        driver.ask("shot topics", "shot")
        driver.ask("page retained", "page")
        driver.ask("shot retained", "shot")
        driver.ask("page listeners", "page")
        driver.ask("shot listeners", "shot")
        driver.ask("page clients", "page")
        driver.ask("shot clients", "shot")

        # The retained page's Clear button clears one (the broker no longer holds it).
        cleared = driver.ask("clear plant/line2/serial", "cleared")
        assert cleared == "plant/line2/serial 2 retained messages"
        assert broker.call(lambda: core.retained.get("plant/line2/serial")) is None
        assert broker.call(lambda: core.retained.get("plant/line2/status")) is not None

        # The Disconnect button disconnects the real client.
        assert not victim.disconnected.is_set()
        assert driver.ask("kick victim", "kicked") == "victim"
        assert victim.disconnected.wait(WAIT)
        assert victim.disconnect_reason is not None
        assert victim.disconnect_reason.value == 0x98  # Administrative action
        assert publisher.connected.is_set() and not publisher.disconnected.is_set()
        assert driver.errors == [], driver.errors
    finally:
        driver.close()
        if sensors is not None:
            sensors.close()
        publisher.close()
        victim.close()
    assert driver.errors == [], driver.errors
