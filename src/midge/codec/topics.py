"""Topic names and topic filters (MQTT 3.1.1 section 4.7, 5.0 section 4.7 and 4.8.2).

Pure functions, used by the decoder (PUBLISH topics, SUBSCRIBE/UNSUBSCRIBE filters) and by the
broker (authorisation, retained-message matching).
"""

from __future__ import annotations

from midge.codec.reasons import MalformedPacket, TopicNameInvalid

SHARE_PREFIX = "$share/"


def validate_topic_name(topic: str) -> None:
    """Raise :class:`TopicNameInvalid` for an empty name or one containing ``+`` or ``#``.

    Topic names must be at least one character long (MQTT-4.7.3-1) and must not contain wildcard
    characters (MQTT-3.3.2-2, MQTT-4.7.1-1). (At v5 an empty topic with a Topic Alias is handled by
    the decoder before calling this.)
    """
    if not topic:
        raise TopicNameInvalid("topic name is empty (MQTT-4.7.3-1)")
    if "+" in topic or "#" in topic:
        raise TopicNameInvalid(f"topic name {topic!r} contains a wildcard (MQTT-3.3.2-2)")


def _check_filter_levels(flt: str) -> None:
    if not flt:
        raise MalformedPacket("topic filter is empty (MQTT-4.7.3-1)")
    if "+" not in flt and "#" not in flt:
        return
    levels = flt.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            raise MalformedPacket(
                f"topic filter {flt!r}: '#' must be alone in the last level (MQTT-4.7.1-1)"
            )
        if "+" in level and level != "+":
            raise MalformedPacket(
                f"topic filter {flt!r}: '+' must occupy a whole level (MQTT-4.7.1-2)"
            )


def validate_topic_filter(flt: str) -> None:
    """Raise :class:`MalformedPacket` unless ``flt`` is a syntactically valid topic filter.

    Empty filters are refused (MQTT-4.7.3-1); ``#`` must be the last character and alone in its
    level (MQTT-4.7.1-2 in 3.1.1 numbering); ``+`` must occupy a whole level (MQTT-4.7.1-3).
    A shared subscription ``$share/{ShareName}/{filter}`` needs a non-empty ShareName without
    ``/``, ``+`` or ``#`` followed by a non-empty filter (MQTT-4.8.2-1, MQTT-4.8.2-2).
    """
    if flt.startswith(SHARE_PREFIX):
        group, sep, rest = flt[len(SHARE_PREFIX) :].partition("/")
        if not group or "+" in group or "#" in group:
            raise MalformedPacket(
                f"shared subscription {flt!r}: ShareName must be non-empty, without + or #"
                " (MQTT-4.8.2-1, MQTT-4.8.2-2)"
            )
        if not sep or not rest:
            raise MalformedPacket(
                f"shared subscription {flt!r} has no topic filter after the ShareName"
            )
        _check_filter_levels(rest)
        return
    _check_filter_levels(flt)


def split_shared(flt: str) -> tuple[str | None, str]:
    """``"$share/g/a/#"`` -> ``("g", "a/#")``; any other filter -> ``(None, flt)``.

    The filter is assumed to have passed :func:`validate_topic_filter`.
    """
    if flt.startswith(SHARE_PREFIX):
        group, sep, rest = flt[len(SHARE_PREFIX) :].partition("/")
        if sep:
            return group, rest
    return None, flt


def topic_matches(flt: str, topic: str) -> bool:
    """True if topic name ``topic`` matches (non-shared) topic filter ``flt``.

    ``+`` matches exactly one level, ``#`` the parent level and any number of levels below
    (MQTT-4.7.1-2). A filter starting with a wildcard does not match a topic starting with ``$``
    (MQTT-4.7.2-1).
    """
    if topic.startswith("$") and flt[:1] in ("+", "#"):
        return False
    if "+" not in flt and "#" not in flt:
        return flt == topic
    f_levels = flt.split("/")
    t_levels = topic.split("/")
    n_t = len(t_levels)
    for i, f in enumerate(f_levels):
        if f == "#":
            return True  # "a/#" also matches "a" (the parent level)
        if i >= n_t:
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == n_t
