"""Malformed and forbidden SUBSCRIBE, UNSUBSCRIBE and PUBLISH packets (issue 11: "where several
codes fit, send the one Mosquitto sends"): the same bytes after a v5 CONNECT to the real
mosquitto and to midge, the answers compared byte for byte (a DISCONNECT and the close)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.differential.harness import exchange, midge, mosquitto, needs_mosquitto

pytestmark = needs_mosquitto

SCENARIOS = {
    "publish-packet-id-0": bytes([0x32, 6, 0, 1, ord("a"), 0, 0, 0]),
    "publish-qos-3": bytes([0x36, 6, 0, 1, ord("a"), 0, 1, 0]),
    "publish-wildcard-topic": bytes([0x30, 4, 0, 1, ord("+"), 0]),
    "publish-empty-topic-no-alias": bytes([0x30, 3, 0, 0, 0]),
    "subscribe-qos-3": bytes([0x82, 7, 0, 1, 0, 0, 1, ord("a"), 3]),
    "subscribe-reserved-bits": bytes([0x82, 7, 0, 1, 0, 0, 1, ord("a"), 0xC0]),
    "subscribe-retain-handling-3": bytes([0x82, 7, 0, 1, 0, 0, 1, ord("a"), 0x30]),
    "subscribe-no-filter": bytes([0x82, 3, 0, 1, 0]),
    "subscribe-packet-id-0": bytes([0x82, 7, 0, 0, 0, 0, 1, ord("a"), 0]),
    "subscribe-bad-filter": bytes([0x82, 11, 0, 1, 0, 0, 5]) + b"a/#/b" + bytes([0]),
    "unsubscribe-no-filter": bytes([0xA2, 3, 0, 1, 0]),
    "unsubscribe-bad-filter": bytes([0xA2, 10, 0, 1, 0, 0, 5]) + b"a/#/b",
}

CONF = ["allow_anonymous true"]


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[str, tuple[list[bytes], list[bytes]]]]:
    """Every scenario's answers from both brokers (one broker process each for the module)."""
    theirs: dict[str, list[bytes]] = {}
    ours: dict[str, list[bytes]] = {}
    with mosquitto(CONF) as port:
        for name, data in SCENARIOS.items():
            theirs[name] = exchange(port, 5, data, client_id=name)
    with midge(CONF) as port:
        for name, data in SCENARIOS.items():
            ours[name] = exchange(port, 5, data, client_id=name)
    yield {name: (ours[name], theirs[name]) for name in SCENARIOS}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_answer_as_mosquitto(
    answers: dict[str, tuple[list[bytes], list[bytes]]], name: str
) -> None:
    ours, theirs = answers[name]
    # Each of these is closed with a DISCONNECT by both (the reason is what is compared).
    assert theirs[-1] == b"" and theirs[0][0] == 0xE0, theirs
    assert [p.hex() for p in ours] == [p.hex() for p in theirs]
