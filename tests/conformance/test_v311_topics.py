"""MQTT 3.1.1 section 4.7: Topic Names, Topic Filters, wildcards and matching, server side.

One test per normative statement, named after its id. Tests that also apply to MQTT 3.1 run for
protocol levels 3 and 4. An invalid filter closes the connection, as in Mosquitto 2.0.11.
"""

from __future__ import annotations

import pytest

from midge.codec.packets import Publish
from tests.rawclient import (
    Raw,
    accepted,
    expect_closed_silently,
    raw_connect,
    raw_publish,
    raw_subscribe,
    raw_unsubscribe,
)

BOTH = pytest.mark.parametrize("version", [3, 4], ids=["mqtt31", "mqtt311"])


def matches(raw: Raw, topic_filter: str, topics: list[str], version: int = 4) -> list[str]:
    """The topics among ``topics`` that a subscription to ``topic_filter`` receives."""
    sub = accepted(raw, "v311-match-sub", version)
    assert sub.subscribe(topic_filter, 0).reason_codes == [0]
    pub = accepted(raw, "v311-match-pub", version)
    for topic in topics:
        pub.publish(topic, b"")
    received = [p.topic for p in sub.recv_all(0.5) if isinstance(p, Publish)]
    sub.disconnect()
    pub.disconnect()
    return received


# -- 4.7.1: wildcards ----------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("topic", ["v311/+", "v311/#", "v311/a+", "#"])
def test_MQTT_4_7_1_1_no_wildcards_in_will_topic(raw: Raw, version: int, topic: str) -> None:
    """MQTT-4.7.1-1: wildcard characters must not be used in a Topic Name, and a Will Topic is one:
    a CONNECT with a wildcard in its Will Topic is refused by closing the connection. (PUBLISH
    topics are checked by the MQTT-3.3.2-2 test.)"""
    client = raw(version)
    client.send_raw(raw_connect("v311-wildwill", version=version, will_topic=topic))
    expect_closed_silently(client)


@BOTH
def test_MQTT_4_7_1_2_multi_level_wildcard_matching(raw: Raw, version: int) -> None:
    """MQTT-4.7.1-2: '#' on its own or after a '/' is the last character of a filter and matches
    the parent level and any number of child levels."""
    topics = ["v311/sport", "v311/sport/", "v311/sport/tennis", "v311/sport/tennis/p1", "v311/x"]
    assert matches(raw, "v311/sport/#", topics, version) == topics[:4]
    assert matches(raw, "#", topics, version) == topics


@BOTH
@pytest.mark.parametrize("bad", ["v311/#/x", "v311/sport#", "#/x", "v311/#/", "##", "v311/a#b"])
def test_MQTT_4_7_1_2_misplaced_multi_level_wildcard_closes(
    raw: Raw, version: int, bad: str
) -> None:
    """MQTT-4.7.1-2: a '#' that is not alone in the last level makes the filter invalid; in a
    SUBSCRIBE or UNSUBSCRIBE the server closes the connection (Mosquitto's choice for MQTT 3.1.1
    over a 0x80 return code)."""
    client = accepted(raw, "v311-badhash", version)
    client.send_raw(raw_subscribe(1, (bad, 0)))
    expect_closed_silently(client)
    other = accepted(raw, "v311-badhash-unsub", version)
    other.send_raw(raw_unsubscribe(1, bad))
    expect_closed_silently(other)


@BOTH
def test_MQTT_4_7_1_3_single_level_wildcard_matching(raw: Raw, version: int) -> None:
    """MQTT-4.7.1-3: '+' occupies a whole level, at any level, and matches exactly one level
    (possibly empty)."""
    topics = ["v311/t/p1", "v311/t/p1/rank", "v311/t", "v311/t/", "v311/u/p1"]
    assert matches(raw, "v311/t/+", topics, version) == ["v311/t/p1", "v311/t/"]
    assert matches(raw, "v311/+/p1", topics, version) == ["v311/t/p1", "v311/u/p1"]
    assert matches(raw, "+/+", ["/finance", "a/b", "a", "a/b/c"], version) == ["/finance", "a/b"]
    assert matches(raw, "/+", ["/finance", "finance", "/a/b"], version) == ["/finance"]
    assert matches(raw, "+", ["/finance", "finance", "a/b"], version) == ["finance"]


@BOTH
@pytest.mark.parametrize("bad", ["v311/a+", "v311/+a/x", "+v311", "v311/++", "a+b"])
def test_MQTT_4_7_1_3_partial_level_single_wildcard_closes(
    raw: Raw, version: int, bad: str
) -> None:
    """MQTT-4.7.1-3: a '+' that does not occupy an entire level makes the filter invalid; the
    server closes the connection (SUBSCRIBE and UNSUBSCRIBE alike)."""
    client = accepted(raw, "v311-badplus", version)
    client.send_raw(raw_subscribe(1, (bad, 0)))
    expect_closed_silently(client)
    other = accepted(raw, "v311-badplus-unsub", version)
    other.send_raw(raw_unsubscribe(1, bad))
    expect_closed_silently(other)


# -- 4.7.2: topics beginning with $ -----------------------------------------------------------


@BOTH
def test_MQTT_4_7_2_1_wildcards_do_not_match_dollar_topics(raw: Raw, version: int) -> None:
    """MQTT-4.7.2-1: filters starting with a wildcard do not match Topic Names beginning with '$';
    filters starting with the '$' level itself do."""
    topics = ["$v311/x", "$v311/x/y", "v311/x"]
    assert matches(raw, "#", topics, version) == ["v311/x"]
    assert matches(raw, "+/x", topics, version) == ["v311/x"]
    assert matches(raw, "+/x/#", topics, version) == ["v311/x"]
    assert matches(raw, "$v311/#", topics, version) == ["$v311/x", "$v311/x/y"]
    assert matches(raw, "$v311/+/y", topics, version) == ["$v311/x/y"]


# -- 4.7.3: topic semantics ------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("where", ["publish", "subscribe", "unsubscribe"])
def test_MQTT_4_7_3_1_empty_topic_closes(raw: Raw, version: int, where: str) -> None:
    """MQTT-4.7.3-1: Topic Names and Topic Filters are at least one character long; an empty one
    in a PUBLISH, SUBSCRIBE or UNSUBSCRIBE closes the connection."""
    client = accepted(raw, "v311-empty", version)
    packet = {
        "publish": raw_publish("", b"x"),
        "subscribe": raw_subscribe(1, ("", 0)),
        "unsubscribe": raw_unsubscribe(1, ""),
    }[where]
    client.send_raw(packet)
    expect_closed_silently(client)


@BOTH
@pytest.mark.parametrize("where", ["publish", "subscribe", "unsubscribe"])
def test_MQTT_4_7_3_2_null_character_closes(raw: Raw, version: int, where: str) -> None:
    """MQTT-4.7.3-2: Topic Names and Topic Filters must not include U+0000; one that does closes
    the connection (MQTT-1.5.3-2)."""
    client = accepted(raw, "v311-nul", version)
    packet = {
        "publish": raw_publish(b"v311/a\x00b", b"x"),
        "subscribe": raw_subscribe(1, (b"v311/a\x00b", 0)),
        "unsubscribe": raw_unsubscribe(1, b"v311/a\x00b"),
    }[where]
    client.send_raw(packet)
    expect_closed_silently(client)


def test_MQTT_4_7_3_3_longest_topic_accepted(raw: Raw) -> None:
    """MQTT-4.7.3-3: Topic Names and Filters encode to at most 65,535 bytes (the length field's
    limit); the server accepts and matches one of exactly that length, multi-byte UTF-8 included.
    """
    topic = "v311/long/" + "é" * 3000 + "x" * (65535 - 10 - 6000)
    assert len(topic.encode()) == 65535
    sub = accepted(raw, "v311-long")
    assert sub.subscribe(topic, 1).reason_codes == [1]
    pub = accepted(raw, "v311-long-pub")
    pub.publish(topic, b"long", qos=1)
    message = sub.expect(Publish, timeout=3)
    assert (message.topic, message.payload) == (topic, b"long")


@BOTH
def test_MQTT_4_7_3_4_no_normalisation_when_matching(raw: Raw, version: int) -> None:
    """MQTT-4.7.3-4: the server matches Topic Names and Filters without any normalisation: case,
    Unicode normal forms (precomposed 'é' against 'e' + combining acute), trailing '/' and spaces
    all make different topics, and the name is delivered byte for byte."""
    nfc, nfd = "v311/caf\u00e9", "v311/cafe\u0301"
    topics = [nfc, nfd, "V311/CAF\u00c9", nfc + "/", nfc + " ", "v311/cafe"]
    assert matches(raw, nfc, topics, version) == [nfc]
    assert matches(raw, nfd, topics, version) == [nfd]
    assert matches(raw, "v311/+", topics, version) == [nfc, nfd, nfc + " ", "v311/cafe"]
