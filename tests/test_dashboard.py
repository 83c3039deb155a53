"""The web dashboard's server side (midge.observe.live, midge.observe.http): the static files
behind the admin credentials, the server-sent events of ``/api/stream`` with real paho clients
publishing, the broker's tap that exists only while a stream is open, the topic history, the
read-only listeners and configuration (no secret in them), the refusal of cross-site requests
that change something, and the vendored front-end files with their licences.

The page itself, in headless Chromium, is tests/interop/test_dashboard.py.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from midge.broker.model import Message
from midge.broker.tap import Tap
from midge.observe import live
from midge.observe.http import _plain
from midge.observe.live import HISTORY, Live
from tests.conftest import RunningBroker
from tests.test_observe import AUTH, HASH, Paho, http_url, start, wait_for

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = resources.files("midge.observe") / "dashboard"


def events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """The (event, data) pairs of a server-sent event stream."""
    name = "message"
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            yield name, json.loads("\n".join(data))
            name, data = "message", []


def until(stream: Iterator[tuple[str, Any]], check: Callable[[str, Any], bool]) -> Any:
    """Read events until ``check`` holds for one (bounded: the stream ticks every second)."""
    deadline = time.monotonic() + 15
    for name, data in stream:
        if check(name, data):
            return data
        if time.monotonic() > deadline:
            break
    raise AssertionError("the expected event did not come")


def test_static_files_need_the_admin_credentials(
    make_broker: Callable[..., RunningBroker],
) -> None:
    broker = start(make_broker)
    url = http_url(broker)
    with httpx.Client(base_url=url, timeout=10) as http:
        refused = http.get("/dashboard/")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
        assert http.get("/dashboard/app.js").status_code == 401
        page = http.get("/dashboard/", auth=AUTH)
        assert page.status_code == 200
        assert "text/html" in page.headers["Content-Type"]
        assert '<script src="app.js"></script>' in page.text
        for path in ("app.js", "style.css", "vendor/uplot/uPlot.iife.min.js"):
            answer = http.get(f"/dashboard/{path}", auth=AUTH)
            assert answer.status_code == 200, path
            assert answer.content == (DASHBOARD / path).read_bytes()
        assert http.get("/dashboard/../http.py", auth=AUTH).status_code in (403, 404)
        moved = http.get("/")
        assert moved.status_code == 302
        assert moved.headers["Location"] == "/dashboard/"


def test_no_admin_user_no_dashboard(make_broker: Callable[..., RunningBroker]) -> None:
    broker = start(make_broker, admin_user=None, admin_password_hash=None)
    with httpx.Client(base_url=http_url(broker), timeout=10) as http:
        assert http.get("/dashboard/").status_code == 403
        assert http.get("/api/stream", params={"seconds": 1}).status_code == 403


def test_the_stream_taps_the_broker_only_while_open(
    make_broker: Callable[..., RunningBroker],
) -> None:
    broker = start(make_broker)
    core = broker.server.broker
    assert core is not None
    assert broker.call(lambda: core.tap) is None
    publisher = Paho(broker, "publisher")
    publisher.client.publish("plant/kept", b"retained value", qos=1, retain=True).wait_for_publish(
        5
    )
    with (
        httpx.Client(base_url=http_url(broker), auth=AUTH, timeout=10) as http,
        http.stream("GET", "/api/stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        stream = events(response)
        # The first chunk: the counters, and every topic known (the retained ones).
        first = until(stream, lambda name, _: name == "stats")
        hello = until(stream, lambda name, _: name == "topics")
        assert hello["full"] is True
        kept = {t["topic"]: t for t in hello["topics"]}["plant/kept"]
        assert base64.b64decode(kept["last"]["payload_base64"]) == b"retained value"
        assert broker.call(lambda: core.tap) is not None

        for n in range(5):
            publisher.client.publish(
                "plant/line1/temp", json.dumps({"c": 20 + n}), qos=1
            ).wait_for_publish(5)
        update = until(
            stream,
            lambda name, data: (
                name == "topics" and any(t["topic"] == "plant/line1/temp" for t in data["topics"])
            ),
        )
        temp = {t["topic"]: t for t in update["topics"]}["plant/line1/temp"]
        assert update["full"] is False
        assert temp["count"] == 5
        assert temp["rate"] == 5
        assert json.loads(base64.b64decode(temp["last"]["payload_base64"])) == {"c": 24}
        stats = until(stream, lambda name, _: name == "stats")
        assert stats["received"] - first["received"] >= 5
        # No one subscribes to them: not dropped, counted apart.
        assert stats["no_subscribers"] - first["no_subscribers"] == 5
        assert stats["dropped"] == first["dropped"] == 0
        assert stats["connections"] == 1

        history = http.get("/api/topics/history", params={"topic": "plant/line1/temp"}).json()
        assert history["tracking"] is True
        assert history["count"] == 5
        values = [json.loads(base64.b64decode(i["payload_base64"]))["c"] for i in history["items"]]
        assert values == [24, 23, 22, 21, 20]  # newest first
    # The stream is closed: the broker is back to no tap, and the table is gone.
    wait_for(lambda: broker.call(lambda: core.tap) is None)
    with httpx.Client(base_url=http_url(broker), auth=AUTH, timeout=10) as http:
        history = http.get("/api/topics/history", params={"topic": "plant/line1/temp"}).json()
        assert history == {"topic": "plant/line1/temp", "tracking": False, "count": 0, "items": []}
    publisher.close()


def test_two_streams_share_one_tap_and_a_stream_can_end_itself(
    make_broker: Callable[..., RunningBroker],
) -> None:
    broker = start(make_broker)
    core = broker.server.broker
    assert core is not None
    with httpx.Client(base_url=http_url(broker), auth=AUTH, timeout=10) as http:
        with http.stream("GET", "/api/stream") as first:
            stream = events(first)  # (held: a closed iterator closes the response)
            until(stream, lambda name, _: name == "topics")
            assert broker.call(lambda: core.tap) is not None
            began = time.monotonic()
            with http.stream("GET", "/api/stream", params={"seconds": 1}) as second:
                names = [name for name, _ in events(second)]  # ends after a second
            assert 0.9 < time.monotonic() - began < 5
            assert names[:2] == ["stats", "topics"]
            until(stream, lambda name, _: name == "stats")
            assert broker.call(lambda: core.tap) is not None  # the first one is still open
        wait_for(lambda: broker.call(lambda: core.tap) is None)
        assert http.get("/api/stream", params={"seconds": 0}).status_code == 400


def test_a_stream_that_explores_a_topic_brings_its_history(
    make_broker: Callable[..., RunningBroker],
) -> None:
    """/api/stream?explore=T: the first chunk carries T's history, and each update in which T
    changed carries it again (the page's topic explorer makes no request of its own); the page
    switches topics by opening a new stream before closing the old one, and the table stays."""
    broker = start(make_broker)
    core = broker.server.broker
    assert core is not None
    publisher = Paho(broker, "publisher")
    topic = "plant/line2/pressure"
    with httpx.Client(base_url=http_url(broker), auth=AUTH, timeout=10) as http:
        assert http.get("/api/stream", params={"explore": "plant/+"}).status_code == 400
        assert http.get("/api/stream", params={"explore": ""}).status_code == 400
        with http.stream("GET", "/api/stream") as plain:
            plain_events = events(plain)
            until(plain_events, lambda name, _: name == "topics")
            with http.stream("GET", "/api/stream", params={"explore": topic}) as explorer:
                stream = events(explorer)
                first = until(stream, lambda name, _: name == "history")
                assert first == {"topic": topic, "tracking": True, "count": 0, "items": []}
                for n in range(3):
                    publisher.client.publish(topic, f"{n} bar", qos=1).wait_for_publish(5)
                history = until(stream, lambda name, data: name == "history" and data["count"] == 3)
                assert [base64.b64decode(i["payload_base64"]) for i in history["items"]] == [
                    b"2 bar",
                    b"1 bar",
                    b"0 bar",
                ]
                # A burst: the explored topic keeps its last HISTORY values, however many
                # came in one second (one nobody explores keeps only its latest then).
                burst = [f"{n} burst".encode() for n in range(HISTORY * 3)]
                for payload in burst:
                    publisher.client.publish(topic, payload, qos=0)
                publisher.client.publish(topic, b"end", qos=1).wait_for_publish(5)
                total = 3 + len(burst) + 1
                history = until(
                    stream, lambda name, data: name == "history" and data["count"] == total
                )
                assert [base64.b64decode(i["payload_base64"]) for i in history["items"]] == [
                    b"end",
                    *reversed(burst[-(HISTORY - 1) :]),
                ]
                # Another topic changes, not the explored one: no history in that update.
                publisher.client.publish("plant/other", b"x", qos=1).wait_for_publish(5)
                names: list[str] = []
                for name, data in stream:
                    listed = [t["topic"] for t in data["topics"]] if name == "topics" else []
                    if "plant/other" in listed:
                        names.append(name)
                        name, _ = next(stream)
                        names.append(name)
                        break
                assert names == ["topics", "stats"]  # the next update's first event
            # The stream without explore never got a history event.
            publisher.client.publish(topic, b"3 bar", qos=1).wait_for_publish(5)
            seen = [name for name, _ in _take_until_count(plain_events, topic, total + 1)]
            assert "history" not in seen
            # The explorer closed, one stream is still open: the table is kept.
            assert broker.call(lambda: core.tap) is not None
            assert http.get("/api/topics/history", params={"topic": topic}).json()["count"] == (
                total + 1
            )
    publisher.close()


def _take_until_count(
    stream: Iterator[tuple[str, Any]], topic: str, count: int
) -> Iterator[tuple[str, Any]]:
    """The events up to the update that counts ``count`` messages of ``topic``."""
    deadline = time.monotonic() + 15
    for name, data in stream:
        yield name, data
        if name == "topics" and any(
            t["topic"] == topic and t["count"] == count for t in data["topics"]
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no update listed {topic}")


def test_the_broker_stops_with_a_dashboard_open(make_broker: Callable[..., RunningBroker]) -> None:
    """An open stream ends when the listener stops (aiohttp would wait a minute for it)."""
    broker = start(make_broker)
    with (
        httpx.Client(base_url=http_url(broker), auth=AUTH, timeout=10) as http,
        http.stream("GET", "/api/stream") as response,
    ):
        stream = events(response)
        until(stream, lambda name, _: name == "topics")
        began = time.monotonic()
        broker.stop()
        assert time.monotonic() - began < 5
        assert [name for name, _ in stream] in ([], ["stats", "topics"])  # then it ends


def test_listeners_and_configuration_show_no_secret(
    make_broker: Callable[..., RunningBroker],
) -> None:
    broker = start(make_broker, auth_python_options={"token": "hunter2"})
    with httpx.Client(base_url=http_url(broker), auth=AUTH, timeout=10) as http:
        listeners = http.get("/api/listeners").json()["items"]
        assert [(item["protocol"], item["port"]) for item in listeners] == [
            ("mqtt", broker.port),
            ("http", int(http_url(broker).rsplit(":", 1)[1])),
        ]
        answer = http.get("/api/config")
        assert answer.status_code == 200
        options = answer.json()["options"]
        assert options["admin_user"] == "admin"
        assert options["admin_password_hash"] == "(set)"
        assert options["auth_python_options"] == "(set)"
        assert options["max_queued_messages"] == broker.config.max_queued_messages
        assert HASH not in answer.text
        assert "hunter2" not in answer.text


def test_configuration_values_hide_the_credentials_of_urls() -> None:
    assert _plain("http://user:pw@auth.example:8080/check") == "http://***@auth.example:8080/check"
    assert _plain(["ldap://cn=admin:secret@ldap.example/", 3]) == ["ldap://***@ldap.example/", 3]
    assert _plain("https://auth.example/check?a=b@c") == "https://auth.example/check?a=b@c"
    assert _plain({"k": ("a", None)}) == {"k": ["a", None]}


def test_a_cross_site_request_changes_nothing(make_broker: Callable[..., RunningBroker]) -> None:
    broker = start(make_broker)
    url = http_url(broker)
    body = {"topic": "t", "payload": "x"}
    with httpx.Client(base_url=url, auth=AUTH, timeout=10) as http:
        evil = http.post("/api/publish", json=body, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403
        own = http.post("/api/publish", json=body, headers={"Origin": url})
        assert own.status_code == 200
        assert http.post("/api/publish", json=body).status_code == 200  # no Origin: not a page


def _message(topic: str, n: int) -> Message:
    return Message(topic, str(n).encode())


def _tap(
    messages: list[Message], limit: int = live.MAX_TOPICS, explored: set[str] | None = None
) -> Tap:
    tap = Tap(limit, explored)
    for message in messages:
        tap.add(message)
    return tap


def test_the_table_keeps_the_last_values_and_bounds_its_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tap counts every message; a topic keeps each value of a second with at most
    HISTORY, its last HISTORY when explored (in place: a busy topic holds no more), else the
    latest; the fold gives exact counts and rates, busiest first."""
    table = Live(server=None)  # type: ignore[arg-type]
    busy_messages = [_message("busy", n) for n in range(HISTORY * 3)]
    tap = _tap([*busy_messages, _message("calm", 1)], explored={"busy"})
    assert len(tap.topics["busy"].payloads) == HISTORY  # replaced in place
    changed = table.absorb(tap, 1000)
    assert changed == ["busy", "calm"]  # the busiest first
    busy = table.topics["busy"]
    assert busy.count == busy.rate == HISTORY * 3
    assert [h[4] for h in busy.history] == [
        str(n).encode() for n in range(HISTORY * 2, HISTORY * 3)
    ]
    table.absorb(_tap([_message("calm", 2)]), 2000)
    assert busy.rate == 0 and busy.count == HISTORY * 3
    assert [h[4] for h in table.topics["calm"].history] == [b"1", b"2"]
    # A partly filled ring, then a wrapped one not at its start: oldest first either way.
    table.absorb(_tap([_message("ring", n) for n in range(HISTORY + 5)], explored={"ring"}), 2500)
    assert [h[4] for h in table.topics["ring"].history] == [
        str(n).encode() for n in range(5, HISTORY + 5)
    ]
    # Not explored: every value of a second with HISTORY at most, else the last one only.
    table.absorb(_tap([_message("plain", n) for n in range(HISTORY)]), 2600)
    plain = table.topics["plain"]
    assert [h[4] for h in plain.history] == [str(n).encode() for n in range(HISTORY)]
    tap = _tap([_message("plain", n) for n in range(100, 100 + HISTORY * 3)])
    assert len(tap.topics["plain"].payloads) == HISTORY  # the first ones, not replaced
    table.absorb(tap, 2700)
    assert plain.rate == HISTORY * 3
    assert [h[4] for h in plain.history][-2:] == [str(HISTORY - 1).encode(), b"159"]
    # Explored in the middle of a busy second: its latest value, then every one after it.
    tap = _tap([_message("late", n) for n in range(HISTORY * 2)])
    tap.explore("late")
    tap.explore("late")  # a second stream exploring it changes nothing
    for n in range(HISTORY * 2, HISTORY * 2 + 3):
        tap.add(_message("late", n))
    table.absorb(tap, 2800)
    assert [h[4] for h in table.topics["late"].history] == [b"39", b"40", b"41", b"42"]
    # A topic explored before its first message of the second keeps its last HISTORY.
    tap = Tap(live.MAX_TOPICS)
    tap.explore("early")
    for n in range(HISTORY * 2):
        tap.add(_message("early", n))
    table.absorb(tap, 2900)
    assert [h[4] for h in table.topics["early"].history] == [
        str(n).encode() for n in range(HISTORY, HISTORY * 2)
    ]

    big = Message("big", bytes(range(256)) * 20)
    table.absorb(_tap([big]), 3500)
    when, qos, retain, size, preview = table.topics["big"].history[-1]
    assert (when, qos, retain) == (3500, 0, False)
    assert (size, len(preview)) == (5120, live.PREVIEW)
    # Each value keeps its QoS and retain flag; the tap holds the payload, not the message.
    flagged = [Message("flags", b"a", 1, True), Message("flags", b"b", 2), Message("flags", b"c")]
    tap = _tap(flagged)
    assert tap.topics["flags"].payloads == [b"a", b"b", b"c"]
    table.absorb(tap, 3600)
    assert [h[1:3] for h in table.topics["flags"].history] == [(1, True), (2, False), (0, False)]

    # Past the tap's limit of topics, and past the table's, messages are only counted.
    limited = _tap([_message("a", 1), _message("b", 1), _message("b", 2)], limit=1)
    assert list(limited.topics) == ["a"] and limited.untracked == 2
    monkeypatch.setattr(live, "MAX_TOPICS", len(table.topics))
    table.absorb(_tap([_message("one/more", 1), _message("one/more", 2)]), 4000)
    assert "one/more" not in table.topics
    assert table.untracked == 2


def test_the_vendored_files_and_their_licences() -> None:
    """uPlot is in the package with its licence; when `make dashboard-vendor` has npm-installed
    web/node_modules, the copies are the pinned version's files."""
    vendor = DASHBOARD / "vendor" / "uplot"
    licence = (vendor / "LICENSE").read_text()
    assert "MIT License" in licence
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/uplot"]["version"]
    assert (
        pinned == json.loads((ROOT / "web" / "package.json").read_text())["dependencies"]["uplot"]
    )
    modules = ROOT / "web" / "node_modules" / "uplot"
    if not modules.is_dir():
        pytest.skip("web/node_modules is not installed (make dashboard-vendor)")
    assert json.loads((modules / "package.json").read_text())["version"] == pinned
    for name, source in (
        ("uPlot.iife.min.js", modules / "dist" / "uPlot.iife.min.js"),
        ("uPlot.min.css", modules / "dist" / "uPlot.min.css"),
        ("LICENSE", modules / "LICENSE"),
    ):
        assert (vendor / name).read_bytes() == source.read_bytes(), name
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"observe/dashboard/*.*", "observe/dashboard/vendor/*/*"' in pyproject


def test_a_busy_second_is_counted_exactly_and_holds_few_messages() -> None:
    """100,000 messages in one second over two topics nobody explores: the counts are exact and
    the tap holds no more than HISTORY payloads per topic (the first ones) and the latest,
    which is the topic's value."""
    table = Live(server=None)  # type: ignore[arg-type]
    tap = Tap(live.MAX_TOPICS)
    for n in range(100_000):  # a, b, b, a, b, b, ...
        tap.add(_message("a" if n % 3 == 0 else "b", n))
    assert sum(len(t.payloads) for t in tap.topics.values()) == 2 * HISTORY
    table.absorb(tap, 1000)
    a, b = table.topics["a"], table.topics["b"]
    assert (a.rate, b.rate) == (33_334, 66_666)
    assert b.history[-1][4] == b"99998" and a.history[-1][4] == b"99999"
