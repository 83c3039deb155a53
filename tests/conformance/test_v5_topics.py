"""MQTT 5.0 section 4.7: Topic Names, Topic Filters, wildcards and matching."""

from __future__ import annotations

import pytest

from midge.codec.packets import Publish
from tests.conformance.test_v5_support import MALFORMED, PROTOCOL_ERROR, Clients
from tests.rawclient import raw_publish, raw_subscribe


def _delivered(clients: Clients, name: str, flt: str, topics: list[str]) -> list[str]:
    """Subscribe to ``flt``, publish once to each topic, and return the topics received, in order.

    A last message on "$marker" (which no filter starting with a wildcard matches, MQTT-4.7.2-1)
    tells when everything published before it has been delivered.
    """
    sub = clients.connect(f"{name}-sub")
    assert sub.sub(flt, qos=1).reason_codes == [1], flt
    sub.sub("$marker", qos=1)
    pub = clients.connect(f"{name}-pub")
    for topic in topics:
        pub.pub(topic, topic.encode(), qos=1)
    pub.pub("$marker", b"", qos=1)
    got: list[str] = []
    while True:
        msg = sub.wait_for(Publish)
        sub.ack(msg, others_stay_queued=True)
        if msg.topic == "$marker":
            return got
        got.append(msg.topic)


@pytest.mark.parametrize("topic", ["t/#", "#", "t/#/x", "t/a#"])
def test_MQTT_4_7_0_1_no_wildcards_in_topic_names(clients: Clients, topic: str) -> None:
    """MQTT-4.7.0-1: wildcards must not be used in a Topic Name; a PUBLISH with "#" in its Topic
    Name is refused (DISCONNECT 0x82 as Mosquitto, or 0x90/0x81) and closed."""
    c = clients.connect("wild")
    c.send_raw(raw_publish(topic, b"x", version=5))
    c.expect_disconnect({MALFORMED, PROTOCOL_ERROR, 0x90})


@pytest.mark.parametrize("topic_filter", ["a/#/b", "a#", "a/b#", "#/", "##", "a/#b"])
def test_MQTT_4_7_1_1_multi_level_wildcard_last_and_alone(
    clients: Clients, topic_filter: str
) -> None:
    """MQTT-4.7.1-1: "#" stands alone in its level and is the last character of the filter; a
    filter breaking this is malformed: DISCONNECT 0x81, close (as Mosquitto)."""
    c = clients.connect("ml")
    c.send_raw(raw_subscribe(1, (topic_filter, 0), version=5))
    c.expect_disconnect(MALFORMED)


def test_MQTT_4_7_1_1_multi_level_wildcard_matching(clients: Clients) -> None:
    """MQTT-4.7.1-1, the valid forms: "sport/tennis/player1/#" matches the parent level and every
    child level; "#" alone matches everything not starting with "$"."""
    topics = [
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
        "sport/tennis/player10",
        "sport/tennis",
    ]
    got = _delivered(clients, "mlm", "sport/tennis/player1/#", topics)
    assert got == topics[:3]


@pytest.mark.parametrize("topic_filter", ["sport+", "a/+b", "a/b+/c", "+a", "++"])
def test_MQTT_4_7_1_2_single_level_wildcard_occupies_a_level(
    clients: Clients, topic_filter: str
) -> None:
    """MQTT-4.7.1-2: "+" occupies an entire level of the filter; a filter breaking this is
    malformed: DISCONNECT 0x81, close."""
    c = clients.connect("sl")
    c.send_raw(raw_subscribe(1, (topic_filter, 0), version=5))
    c.expect_disconnect(MALFORMED)


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("sport/tennis/+", ["sport/tennis/player1", "sport/tennis/player2"]),
        ("sport/+", ["sport/"]),
        ("+/+", ["/finance", "sport/"]),
        ("/+", ["/finance"]),
        ("+", ["sport"]),
        ("+/tennis/#", ["sport/tennis/player1", "sport/tennis/player2", "sport/tennis/p/r"]),
    ],
)
def test_MQTT_4_7_1_2_single_level_wildcard_matching(
    clients: Clients, topic_filter: str, expected: list[str]
) -> None:
    """MQTT-4.7.1-2, the valid forms (the spec's examples): "+" matches exactly one level, which may
    be empty, at any position."""
    topics = [
        "sport/tennis/player1",
        "sport/tennis/player2",
        "sport/tennis/p/r",
        "sport",
        "sport/",
        "/finance",
    ]
    got = _delivered(clients, "slm", topic_filter, topics)
    assert got == [t for t in topics if t in expected]


def test_MQTT_4_7_2_1_wildcards_do_not_match_dollar_topics(clients: Clients) -> None:
    """MQTT-4.7.2-1: filters starting with "#" or "+" do not match Topic Names starting with "$";
    a filter starting with "$" does."""
    hash_sub = clients.connect("dollar-hash")
    hash_sub.sub("#", qos=1)
    plus_sub = clients.connect("dollar-plus")
    plus_sub.sub("+/monitor/Clients", qos=1)
    plus_sub.sub("+/x", qos=1)
    dollar_sub = clients.connect("dollar-ok")
    dollar_sub.sub("$test/#", qos=1)
    pub = clients.connect("dollar-pub")
    pub.pub("$test/monitor/Clients", b"1", qos=1)
    pub.pub("$test/x", b"2", qos=1)
    assert sorted(p.payload for p in dollar_sub.publishes(2)) == [b"1", b"2"]
    hash_sub.no_publish(0.3)
    plus_sub.no_publish(0.1)


def test_MQTT_4_7_3_1_empty_topic_name_is_refused(clients: Clients) -> None:
    """MQTT-4.7.3-1: Topic Names are at least one character long; a PUBLISH with a zero-length
    Topic Name and no Topic Alias is a Protocol Error (section 3.3.2.1): DISCONNECT 0x82."""
    c = clients.connect("empty-name")
    c.send_raw(raw_publish("", b"x", version=5))
    c.expect_disconnect(PROTOCOL_ERROR)


def test_MQTT_4_7_3_1_empty_topic_filter_is_refused(clients: Clients) -> None:
    """MQTT-4.7.3-1: Topic Filters are at least one character long; a SUBSCRIBE with an empty one
    is malformed (DISCONNECT 0x81 as Mosquitto; 0x82 tolerated) and closed."""
    c = clients.connect("empty-filter")
    c.send_raw(raw_subscribe(1, ("", 0), version=5))
    c.expect_disconnect({MALFORMED, PROTOCOL_ERROR})


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(raw_publish(b"a\x00", b"x", version=5), id="topic-name"),
        pytest.param(raw_subscribe(1, (b"a/\x00/#", 0), version=5), id="topic-filter"),
    ],
)
def test_MQTT_4_7_3_2_null_character_in_topics_is_refused(clients: Clients, packet: bytes) -> None:
    """MQTT-4.7.3-2: Topic Names and Filters must not include U+0000: DISCONNECT 0x81, close."""
    c = clients.connect("nul-topic")
    c.send_raw(packet)
    c.expect_disconnect(MALFORMED)


def test_MQTT_4_7_3_4_no_normalisation_in_matching(clients: Clients) -> None:
    """MQTT-4.7.3-4: matching does no normalisation or substitution: case differs ("ACCOUNTS" vs
    "Accounts"), Unicode composed and decomposed forms differ ("caf\\u00e9" vs "cafe\\u0301"),
    spaces and a trailing "/" are significant."""
    topics = [
        "Accounts payable",
        "ACCOUNTS payable",
        "accounts payable",
        "Accounts payable/",
        "Accounts  payable",
        "caf\u00e9",
        "cafe\u0301",
        "\uff21",  # FULLWIDTH LATIN CAPITAL LETTER A
    ]
    assert _delivered(clients, "nn1", "Accounts payable", topics) == ["Accounts payable"]
    assert _delivered(clients, "nn2", "caf\u00e9", topics) == ["caf\u00e9"]
    assert _delivered(clients, "nn3", "cafe\u0301", topics) == ["cafe\u0301"]
    assert _delivered(clients, "nn4", "\uff21", topics) == ["\uff21"]
