"""MQTT from a real browser: MQTT.js (npm ``mqtt``, its browser bundle) in headless Chromium
(Debian ``chromium``), driven by Playwright (``playwright-core``), against midge's ws and wss
listeners. The page itself is served by the ws listener's ``http_dir``; it connects over ws and
over wss (the test CA's certificate: the browser trusts that certificate's key, and nothing
else it could not verify), with MQTT 3.1.1
and 5, subscribes, receives what paho-mqtt publishes over TCP and publishes it back.

``make test`` installs Chromium and the npm packages (tests/browser/package.json, ``npm ci``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from midge.config import ListenerConfig
from tests.conftest import RunningBroker
from tests.interop.clients import PahoClient
from tests.security.certs import Pki

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

BROWSER_DIR = Path(__file__).resolve().parent.parent / "browser"
NODE_MODULES = BROWSER_DIR / "node_modules"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WAIT = 30.0


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (make test installs nodejs)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (make test installs Debian's chromium)"
    for package in ("mqtt", "playwright-core"):
        if not (NODE_MODULES / package).is_dir():
            return f"npm package {package} missing: run make browser-deps (npm ci in tests/browser)"
    return None


def spki_hash(cert_file: str) -> str:
    """What Chromium's --ignore-certificate-errors-spki-list takes: the base64 SHA-256 of the
    certificate's SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def test_mqtt_js_in_chromium_over_ws_and_wss(
    make_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    missing = _missing()
    if missing is not None:
        pytest.skip(missing)
    pki = Pki(tmp_path)
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(BROWSER_DIR / "index.html", www / "index.html")
    shutil.copy(NODE_MODULES / "mqtt" / "dist" / "mqtt.min.js", www / "mqtt.min.js")
    broker = make_broker(
        listeners=[
            ListenerConfig(port=0, host="127.0.0.1"),
            ListenerConfig(port=0, host="127.0.0.1", protocol="websockets", http_dir=str(www)),
            ListenerConfig(
                port=0,
                host="127.0.0.1",
                protocol="websockets",
                certfile=pki.server_cert,
                keyfile=pki.server_key,
            ),
        ]
    )
    tcp_port, ws_port, wss_port = (int(a[1]) for a in broker.server.addresses)
    tcp = PahoClient("127.0.0.1", tcp_port, "paho-tcp", 5)
    tcp.connect()
    assert tcp.subscribe("browser/out", 1) == [1]
    targets = [
        (f"ws://127.0.0.1:{ws_port}/mqtt", 4),
        (f"ws://127.0.0.1:{ws_port}/mqtt", 5),
        (f"wss://localhost:{wss_port}/mqtt", 4),
        (f"wss://localhost:{wss_port}/mqtt", 5),
    ]
    driver = subprocess.Popen(
        [
            "node",
            str(BROWSER_DIR / "drive.mjs"),
            f"http://127.0.0.1:{ws_port}/",
            *(f"{url},{version}" for url, version in targets),
        ],
        cwd=BROWSER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CHROMIUM": CHROMIUM, "TRUST_SPKI": spki_hash(pki.server_cert)},
    )
    lines: queue.Queue[str | None] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert driver.stdout is not None
        for line in driver.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()

    def next_line(prefix: str) -> str:
        while True:
            try:
                line = lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no '{prefix}' from the browser: {seen}") from None
            if line is None:
                if "Failed to launch" in "\n".join(seen):
                    pytest.skip(f"Chromium cannot start here: {seen[-5:]}")
                raise AssertionError(f"the browser driver ended before '{prefix}': {seen}")
            seen.append(line)
            if line.startswith(prefix):
                return line

    try:
        assert next_line("page ") == "page 200"  # the page came from http_dir
        for n, (url, version) in enumerate(targets):
            assert next_line("ready ") == f"ready {url} {version} [1]"
            tcp.publish(f"browser/in/{n}", f"hello {n}".encode(), 1)
            assert next_line("done ") == f"done {url} {version} browser/in/{n}"
            echo = tcp.expect()
            scheme = url.split(":")[0]
            assert echo.payload.decode() == f"hello {n} echoed over {scheme} v{version}"
        assert driver.wait(WAIT) == 0, seen
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        tcp.close()
