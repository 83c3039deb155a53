"""``batch_window``: a busy broker process handles its sockets once per window and rests in
between (midge.transport.pacer). On a real socket, with real processes for ``--workers``: every
message arrives, in order and once, and the broker did rest. SIGHUP sets a new window, as
``/metrics`` shows (``midge_batch_window_*{worker}``)."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from midge.auth.base import Authenticator, Capability, ConnectRequest, Pending
from midge.codec.packets import Connack, Connect, Publish
from tests.conftest import RunningBroker
from tests.procbroker import ProcBroker, free_port
from tests.rawclient import RawClient, receive_publishes

WINDOW = 0.02

#: A labelled sample of /metrics: ``name{worker="1"} 2.0``.
_SAMPLE = re.compile(r'^(?P<name>\w+)\{worker="(?P<worker>\d+)"\} (?P<value>\S+)$')


def by_worker(url: str) -> dict[str, dict[int, float]]:
    """The ``midge_batch_window_*`` samples of the /metrics at ``url``: name -> worker -> value."""
    found: dict[str, dict[int, float]] = {}
    for line in httpx.get(url, timeout=5).text.splitlines():
        m = _SAMPLE.match(line)
        if m and m["name"].startswith("midge_batch_window_"):
            found.setdefault(m["name"], {})[int(m["worker"])] = float(m["value"])
    return found


class WindowConf:
    """A broker's configuration file: ``head`` (options), then ``batch_window`` as
    :meth:`write` is told, then an MQTT listener on any port and an http one (``/metrics`` at
    :attr:`url`)."""

    def __init__(self, tmp_path: Path, head: str) -> None:
        self.path = tmp_path / "midge.conf"
        self.head = head
        http_port = free_port()
        self.tail = f"listener 0 127.0.0.1\nlistener {http_port} 127.0.0.1\nprotocol http\n"
        self.url = f"http://127.0.0.1:{http_port}/metrics"
        self.write(None)

    def write(self, window: float | None) -> None:
        line = f"batch_window {window}\n" if window is not None else ""
        self.path.write_text(self.head + line + self.tail)

    def start(self) -> ProcBroker:
        return ProcBroker(("-c", str(self.path)), listeners=2)


def wait_metrics(
    url: str, done: Callable[[dict[str, dict[int, float]]], bool], timeout: float = 10
) -> dict[str, dict[int, float]]:
    """/metrics' batch-window samples once ``done`` holds of them (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        found = by_worker(url)
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def exchange(pub: RawClient, sub: RawClient, topic: str, n: int) -> None:
    """``n`` QoS 1 messages from ``pub`` to ``sub`` (subscribed to ``topic``), each awaited:
    ``n`` busy turns at least in each process they pass through."""
    for i in range(n):
        pub.publish(topic, f"m{i}".encode(), qos=1)
        got = receive_publishes(sub, 1, timeout=5)
        assert [(p.topic, p.payload) for p in got] == [(topic, f"m{i}".encode())]


def test_a_busy_broker_rests_and_delivers_every_message_in_order(
    make_broker: Callable[..., RunningBroker], clients: Callable[..., RawClient]
) -> None:
    broker = make_broker(batch_window=WINDOW)
    sub = clients(broker, 4)
    sub.connect("sub")
    sub.subscribe("w/#", 2)
    pub = clients(broker, 5)
    pub.connect5("pub")
    # Each QoS 1/2 publish waits for its ack, so the broker turns once per window at most:
    # after the first turn of a quiet spell, each turn that answers rests.
    for i in range(12):
        pub.publish(f"w/{i}", f"m{i}".encode(), qos=1 + i % 2)
    got = receive_publishes(sub, 12, timeout=10)
    assert [(p.topic, p.payload, p.qos) for p in got] == [
        (f"w/{i}", f"m{i}".encode(), 1 + i % 2) for i in range(12)
    ]
    sub.expect_nothing(0.2)
    pacer = broker.server.pacer
    assert pacer is not None  # made by start
    rests, slept = broker.call(lambda: (pacer.rests, pacer.slept))
    assert rests >= 6 and 0 < slept <= rests * WINDOW, (rests, slept)


class _Later(Authenticator):
    """Decides each CONNECT later, when the test says (as an auth plugin, LDAP or HTTP does)."""

    provides = frozenset({Capability.CONNECT})

    def __init__(self) -> None:
        self.decisions: list[asyncio.Future[int]] = []

    def authenticate(self, request: ConnectRequest) -> int | Pending:
        decision: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.decisions.append(decision)
        return decision


def test_no_rest_while_an_authentication_decision_is_to_come(
    make_broker: Callable[..., RunningBroker], clients: Callable[..., RawClient]
) -> None:
    """One broker process, with a window: while an authenticator's decision is to come, the
    pacer does not rest (the answer is acted on as soon as it comes, not up to a window
    later); once it has come, it rests again."""
    later = _Later()
    broker = make_broker(authenticator=later, batch_window=WINDOW)
    pacer = broker.server.pacer
    assert pacer is not None
    client = clients(broker)
    client.send(Connect(client_id="c", protocol_level=5))
    deadline = time.monotonic() + 5
    while not broker.call(lambda: bool(later.decisions)) and time.monotonic() < deadline:
        time.sleep(0.01)

    def rest_now() -> int:
        """A rest right after the last one (a whole window to sleep): how many were taken."""
        before = pacer.rests
        pacer.last = pacer.clock()
        pacer.rest()
        return pacer.rests - before

    assert broker.call(lambda: (len(later.decisions), rest_now())) == (1, 0)
    broker.call(lambda: later.decisions[0].set_result(0))
    assert client.expect(Connack).reason_code == 0
    assert broker.call(rest_now) == 1


def test_no_window_by_default(broker: RunningBroker, raw: Any) -> None:
    client = raw()
    client.connect("c")
    client.subscribe("t", 0)
    client.publish("t", b"x", qos=0)
    assert isinstance(client.expect(Publish), Publish)
    pacer = broker.server.pacer
    assert pacer is not None and (pacer.window, pacer.rests) == (0, 0)


def test_sighup_sets_a_window_and_takes_it_away(tmp_path: Path) -> None:
    """A broker process started without a window never rests; SIGHUP with ``batch_window``
    in the file gives it one (it rests, and /metrics says so), and SIGHUP without takes it
    away again, without a restart and without losing the connection."""
    conf = WindowConf(tmp_path, "allow_anonymous true\npersistence false\n")
    url = conf.url
    rests, slept, window = (
        "midge_batch_window_rests_total",
        "midge_batch_window_slept_seconds_total",
        "midge_batch_window_seconds",
    )
    with conf.start() as proc:
        proc.wait_listening()
        pub, sub = RawClient(proc.host, proc.port), RawClient(proc.host, proc.port)
        try:
            pub.connect("pub")
            sub.connect("sub")
            sub.subscribe("bw", 1)
            exchange(pub, sub, "bw", 10)
            before = by_worker(url)
            assert before[window] == {0: 0.0} and before[rests] == {0: 0.0}, before

            conf.write(WINDOW)
            proc.send_signal(signal.SIGHUP)
            assert proc.wait_output(f"reload: batch_window {WINDOW} (was 0", timeout=10)
            assert by_worker(url)[window] == {0: WINDOW}
            exchange(pub, sub, "bw", 10)
            during = by_worker(url)
            assert during[rests][0] >= 5, during
            assert 0 < during[slept][0] <= during[rests][0] * WINDOW, during

            conf.write(None)
            proc.send_signal(signal.SIGHUP)
            assert proc.wait_output(f"reload: batch_window 0.0 (was {WINDOW})", timeout=10)
            exchange(pub, sub, "bw", 10)
            after = by_worker(url)
            assert after[window] == {0: 0.0}
            # Only a rest already due when the window went may still have been taken.
            assert after[rests][0] <= during[rests][0] + 1, (during, after)
        finally:
            pub.close()
            sub.close()
        assert proc.stop() == 0, proc.describe()
