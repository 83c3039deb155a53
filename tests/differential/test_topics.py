"""Topics at the limits (issue 11): the longest topic (65,535 bytes), a topic longer than
max_packet_size, and topics or filters holding U+0000, invalid UTF-8, a surrogate, an overlong
encoding, a non-character or a control character, in PUBLISH, SUBSCRIBE and UNSUBSCRIBE. The
same bytes go to the real Mosquitto 2.0.11 and to midge (in memory), and what each answers, and
whether it closes the connection, is compared (MQTT-1.5.4-1..-3, MQTT-4.7.3-2/-3: where the
specification lets the server choose, the choice is Mosquitto's)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from tests.differential.harness import needs_mosquitto
from tests.differential.test_wire import start_pair
from tests.rawclient import Closed, RawClient, frames, tap, varint

pytestmark = needs_mosquitto


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def publish(topic: bytes, version: int) -> bytes:
    """A QoS 1 PUBLISH (packet id 1) of one byte to ``topic``."""
    body = _string(topic) + b"\x00\x01" + (b"\x00" if version == 5 else b"") + b"x"
    return b"\x32" + varint(len(body)) + body


def subscribe(topic_filter: bytes, version: int) -> bytes:
    body = b"\x00\x01" + (b"\x00" if version == 5 else b"") + _string(topic_filter) + b"\x01"
    return b"\x82" + varint(len(body)) + body


def unsubscribe(topic_filter: bytes, version: int) -> bytes:
    body = b"\x00\x01" + (b"\x00" if version == 5 else b"") + _string(topic_filter)
    return b"\xa2" + varint(len(body)) + body


TOPICS = {
    "65535-bytes": b"a" * 65535,
    "3000-bytes": b"t/" + b"a" * 2998,
    "nul": b"a\x00b",
    "invalid-utf8": b"a\xffb",
    "surrogate": b"a\xed\xa0\x80b",
    "overlong-utf8": b"a\xc0\xafb",
    "non-character": "a\uffffb".encode(),
    "control": b"a\x01b",
}
PACKETS: dict[str, Callable[[bytes, int], bytes]] = {
    "publish": publish,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
}
CONFIGS = {"default": [], "max_packet_size": ["max_packet_size 2000"]}
VERSIONS = [4, 5]
Answer = tuple[list[str], bool]


def answer(client: RawClient, version: int, data: bytes) -> Answer:
    """Every packet the broker sends after ``data`` (hex), and whether it closed."""
    with client:
        assert client.connect("topics", protocol_level=version, keep_alive=0).reason_code == 0
        received = tap(client)
        client.send_raw(data)
        with contextlib.suppress(Closed, ConnectionError):
            client.recv_all(0.3)
        closed = not client.is_open(0.1)
        return [f.hex() for f in frames(received)], closed


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[tuple[str, str, str, int], tuple[Answer, Answer]]]:
    results = {}
    for config, lines in CONFIGS.items():
        for pair in start_pair(lines):
            for kind, make in PACKETS.items():
                for name, topic in TOPICS.items():
                    for version in VERSIONS:
                        data = make(topic, version)
                        results[config, kind, name, version] = (
                            answer(pair.client(True, version), version, data),
                            answer(pair.client(False, version), version, data),
                        )
    yield results


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", list(TOPICS))
@pytest.mark.parametrize("kind", list(PACKETS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_same_answer_as_mosquitto(
    answers: dict[tuple[str, str, str, int], tuple[Answer, Answer]],
    config: str,
    kind: str,
    name: str,
    version: int,
) -> None:
    theirs, mine = answers[config, kind, name, version]
    assert mine == theirs
