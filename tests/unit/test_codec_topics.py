"""Topic name / filter validation and matching (MQTT 3.1.1 and 5.0 section 4.7, 4.8.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midge.codec.reasons import MalformedPacket, TopicNameInvalid
from midge.codec.topics import (
    split_shared,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)


@pytest.mark.parametrize("topic", ["a", "a/b", "/", "a//b", "$SYS/x", " ", "é", "a/b/"])
def test_valid_topic_names(topic: str) -> None:
    validate_topic_name(topic)


@pytest.mark.parametrize("topic", ["", "+", "#", "a/+", "a/#", "a+", "#a"])
def test_invalid_topic_names(topic: str) -> None:
    with pytest.raises(TopicNameInvalid) as info:
        validate_topic_name(topic)
    assert info.value.reason == 0x90


@pytest.mark.parametrize(
    "flt",
    [
        "a", "#", "+", "a/#", "a/+/b", "+/+", "/#", "/+", "a//b", "$SYS/#", "+/#",
        "$share/g/a", "$share/g/#", "$share/g/+/x", "$share/g//", "$share/group/a/b/c",
        "$sharex/a", "$SHARE/g/a", "share/g/a",
    ],
)  # fmt: skip
def test_valid_topic_filters(flt: str) -> None:
    validate_topic_filter(flt)


@pytest.mark.parametrize(
    "flt",
    [
        "", "a#", "#/a", "a/#/b", "a/b#", "a+", "+a", "a/+b", "##", "++",
        "$share/", "$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/g#/a",
        "$share/+/a", "$share/g/a#", "$share/g/#/a",
    ],
)  # fmt: skip
def test_invalid_topic_filters(flt: str) -> None:
    with pytest.raises(MalformedPacket) as info:
        validate_topic_filter(flt)
    assert info.value.reason == 0x81


def test_split_shared() -> None:
    assert split_shared("$share/g/a/#") == ("g", "a/#")
    assert split_shared("$share/g//") == ("g", "/")
    assert split_shared("a/#") == (None, "a/#")
    assert split_shared("$sharex/a") == (None, "$sharex/a")


@pytest.mark.parametrize(
    ("flt", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+", "a", False),
        ("a/+", "a/", True),
        ("a/#", "a", True),  # the parent level (MQTT-4.7.1-2)
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("#", "/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("+/#", "a", True),
        ("#", "$SYS/x", False),  # MQTT-4.7.2-1
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("$SYS/+", "$SYS/x", True),
        ("a/b", "A/b", False),
        ("a/+/c", "a//c", True),
    ],
)
def test_topic_matches(flt: str, topic: str, expected: bool) -> None:
    assert topic_matches(flt, topic) is expected


_level = st.text(st.sampled_from("ab$/"), max_size=3).filter(lambda x: "/" not in x)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "", "$x"]), min_size=1, max_size=4))
def test_a_topic_matches_itself_and_its_wildcard_forms(levels: list[str]) -> None:
    topic = "/".join(levels)
    assert topic_matches(topic, topic)
    dollar = topic.startswith("$")
    assert topic_matches("#", topic) is not dollar
    assert topic_matches("/".join("+" for _ in levels), topic) is not dollar
    if len(levels) > 1:
        assert topic_matches(levels[0] + "/#", topic)
