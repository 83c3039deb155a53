"""The subscription trie and the retained trie against a brute-force reference matcher."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from midge.broker.model import Message, SubOptions
from midge.broker.topictree import (
    CACHE_SIZE,
    CACHE_SKIP,
    RetainedTree,
    SharedGroup,
    TopicTree,
    _search,
)
from midge.codec.topics import topic_matches

LEVELS = st.sampled_from(["a", "b", "c", "", "$SYS", "x"])
TOPICS = st.lists(LEVELS, min_size=1, max_size=4).map("/".join)
FILTER_LEVELS = st.sampled_from(["a", "b", "c", "", "+", "$SYS"])


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVELS, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


def matched_clients(tree: TopicTree, topic: str) -> set[str]:
    subs, shared = tree.match(topic)
    return {cid for cid, _ in subs} | {f"share:{g.name}" for g in shared}


@settings(max_examples=300, deadline=None)
@given(st.lists(filters(), min_size=1, max_size=12), st.lists(TOPICS, min_size=1, max_size=8))
def test_match_agrees_with_reference(flts: list[str], topics: list[str]) -> None:
    tree = TopicTree()
    for i, flt in enumerate(flts):
        tree.subscribe(f"c{i}", flt, SubOptions())
    for topic in topics:
        expected = {f"c{i}" for i, flt in enumerate(flts) if topic_matches(flt, topic)}
        assert matched_clients(tree, topic) == expected, topic
        # A second lookup comes from the cache and must agree.
        assert matched_clients(tree, topic) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(filters(), min_size=1, max_size=10), TOPICS)
def test_unsubscribe_removes_and_prunes(flts: list[str], topic: str) -> None:
    tree = TopicTree()
    for i, flt in enumerate(flts):
        tree.subscribe(f"c{i}", flt, SubOptions())
    tree.match(topic)  # warm the cache: unsubscribe must invalidate it
    for i, flt in enumerate(flts):
        assert tree.unsubscribe(f"c{i}", flt)
        assert not tree.unsubscribe(f"c{i}", flt)
    assert matched_clients(tree, topic) == set()
    assert tree.count == 0
    assert tree._root.children == {}


def test_resubscribe_replaces() -> None:
    tree = TopicTree()
    assert tree.subscribe("c", "a/+", SubOptions(qos=0))
    assert not tree.subscribe("c", "a/+", SubOptions(qos=2))
    subs, _ = tree.match("a/b")
    assert [(cid, o.qos) for cid, o in subs] == [("c", 2)]
    assert tree.count == 1


def test_shared_groups_are_separate_from_plain() -> None:
    tree = TopicTree()
    tree.subscribe("c1", "$share/g/a/#", SubOptions())
    tree.subscribe("c2", "$share/g/a/#", SubOptions())
    tree.subscribe("c3", "$share/h/a/b", SubOptions())
    tree.subscribe("c4", "a/b", SubOptions())
    subs, shared = tree.match("a/b")
    assert [cid for cid, _ in subs] == ["c4"]
    assert sorted((g.name, sorted(g.members)) for g in shared) == [
        ("g", ["c1", "c2"]),
        ("h", ["c3"]),
    ]
    assert tree.unsubscribe("c1", "$share/g/a/#")
    _, shared = tree.match("a/b")
    assert sorted(m for g in shared for m in g.members) == ["c2", "c3"]


def test_dollar_topics_not_matched_by_leading_wildcards() -> None:
    """MQTT-4.7.2-1."""
    tree = TopicTree()
    tree.subscribe("hash", "#", SubOptions())
    tree.subscribe("plus", "+/x", SubOptions())
    tree.subscribe("sys", "$SYS/#", SubOptions())
    assert matched_clients(tree, "$SYS/x") == {"sys"}
    assert matched_clients(tree, "a/x") == {"hash", "plus"}


@settings(max_examples=300, deadline=None)
@given(st.lists(TOPICS, min_size=1, max_size=10), st.lists(filters(), min_size=1, max_size=6))
def test_retained_match_agrees_with_reference(topics: list[str], flts: list[str]) -> None:
    tree = RetainedTree()
    for t in topics:
        tree.set(Message(t, b"x"))
    for flt in flts:
        got = sorted(m.topic for m in tree.match(flt))
        assert got == sorted({t for t in topics if topic_matches(flt, t)}), flt


def test_retained_replace_and_clear() -> None:
    tree = RetainedTree()
    tree.set(Message("a/b", b"1"))
    tree.set(Message("a/b", b"2"))
    tree.set(Message("a", b"3"))
    assert tree.count == 2
    assert [m.payload for m in tree.match("a/b")] == [b"2"]
    tree.set(Message("a/b", b""))  # MQTT-3.3.1-10: an empty payload clears it
    assert tree.get("a/b") is None
    assert tree.count == 1
    assert sorted(m.topic for m in tree.match("#")) == ["a"]
    tree.set(Message("a", b""))
    assert tree._root.children == {}


def test_match_order_is_mosquittos() -> None:
    """Matches come in Mosquitto's order (sub__search): at each level the exact child (its
    deeper matches first, then its own), then "+" likewise, then "#". An MQTT 5 client with
    overlapping subscriptions gets its copies in this order."""
    order = ["a/b/#", "a/b", "a/+/#", "a/+", "a/#", "+/b/#", "+/b", "+/+/#", "+/+", "+/#", "#"]
    tree = TopicTree()
    for flt in reversed(order):
        tree.subscribe(flt, flt, SubOptions())
    subs, _ = tree.match("a/b")
    assert [cid for cid, _ in subs] == order


def test_match_of_a_very_deep_topic() -> None:
    """Thousands of levels (a topic may be 65535 bytes): no recursion limit."""
    tree = TopicTree()
    tree.subscribe("deep", "+/" * 5000 + "#", SubOptions())
    subs, _ = tree.match("x/" * 6000 + "x")
    assert [cid for cid, _ in subs] == ["deep"]


def cached(tree: TopicTree, topic: str) -> object:
    """What tells a cached match from a new one: its list of subscriptions (the same object
    when cached). Not the (subs, shared) tuple: compiled with mypyc, a tuple is unboxed, and
    returned to Python it is a new tuple object each time."""
    return tree.match(topic)[0]


def test_match_cache_keeps_more_topics_than_a_generation_taken_in_turn() -> None:
    """Topics published in turn, more of them than one cache generation holds (the seed's
    pairs: one topic per publisher): most lookups of the second round are cache hits (the
    same result object), where a FIFO of one generation's size would hit none."""
    tree = TopicTree()
    tree.subscribe("c", "t/#", SubOptions())
    topics = [f"t/{i}" for i in range(CACHE_SIZE * 3 // 2)]
    first = {t: cached(tree, t) for t in topics}
    hits = sum(cached(tree, t) is first[t] for t in topics)
    assert hits >= CACHE_SIZE // 2, hits
    assert all(matched_clients(tree, t) == {"c"} for t in topics)


def test_a_subscription_change_forgets_both_cache_generations() -> None:
    tree = TopicTree()
    tree.subscribe("c", "t/+", SubOptions())
    older = "t/0"
    tree.match(older)
    for i in range(1, CACHE_SIZE + 1):  # fills the current generation: "t/0" is in the older
        tree.match(f"t/{i}")
    tree.subscribe("d", "t/0", SubOptions())
    assert matched_clients(tree, older) == {"c", "d"}
    tree.match("t/1")
    tree.unsubscribe("c", "t/+")
    assert matched_clients(tree, older) == {"d"}
    assert matched_clients(tree, "t/1") == set()


def test_match_cache_stops_caching_when_the_topics_in_use_do_not_fit() -> None:
    """With far more topics in turn than the cache holds, caching stops after two generations
    fill without hits (their results only cost the cache's work and garbage collections),
    then starts again CACHE_SKIP lookups later; the results stay right throughout."""
    tree = TopicTree()
    tree.subscribe("c", "t/#", SubOptions())
    for i in range(2 * CACHE_SIZE + 1):  # two generations fill (and a third starts): no hit
        assert matched_clients(tree, f"t/{i}") == {"c"}
    # Caching stopped: the same topic twice gives two results.
    assert cached(tree, "u") is not cached(tree, "u")
    for i in range(CACHE_SKIP):  # topics not cached: each lookup counts down
        assert matched_clients(tree, f"t/x/{i}") == {"c"}
    tree.match("v")
    assert cached(tree, "v") is cached(tree, "v")  # caching again


def test_match_cache_keeps_caching_a_working_set_that_fits() -> None:
    tree = TopicTree()
    tree.subscribe("c", "t/#", SubOptions())
    topics = [f"t/{i}" for i in range(CACHE_SIZE + CACHE_SIZE // 2)]
    for _ in range(6):
        for t in topics:
            tree.match(t)
    assert cached(tree, "u") is cached(tree, "u")


def test_a_change_to_a_filter_without_wildcards_forgets_only_its_topic() -> None:
    tree = TopicTree()
    tree.subscribe("c", "a/+", SubOptions())
    kept = cached(tree, "a/x")
    tree.match("a/b")
    tree.subscribe("d", "a/b", SubOptions())
    assert cached(tree, "a/x") is kept  # still cached: "a/b" matches only "a/b"
    assert matched_clients(tree, "a/b") == {"c", "d"}
    tree.subscribe("e", "$share/g/a/b", SubOptions())
    assert matched_clients(tree, "a/b") == {"c", "d", "share:g"}
    assert tree.unsubscribe("d", "a/b")
    assert matched_clients(tree, "a/b") == {"c", "share:g"}
    assert cached(tree, "a/x") is kept
    tree.subscribe("f", "a/#", SubOptions())  # a wildcard: every cached match may change
    assert cached(tree, "a/x") is not kept
    assert matched_clients(tree, "a/x") == {"c", "f"}


def walked(tree: TopicTree, topic: str) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """``topic``'s matches found by the trie walk itself (no cache, no filter index), in order,
    with each subscription's QoS: what every faster way of matching must give."""
    subs: list[tuple[str, SubOptions]] = []
    shared: list[SharedGroup] = []
    levels = topic.split("/")
    _search(tree._root, levels, len(levels), topic.startswith("$"), subs, shared)
    return [(c, o.qos) for c, o in subs], [(g.name, g.filter) for g in shared]


def found(tree: TopicTree, topic: str) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    subs, shared = tree.match(topic)
    return [(c, o.qos) for c, o in subs], [(g.name, g.filter) for g in shared]


SMALL_TOPICS = st.lists(st.sampled_from(["a", "b", "$SYS"]), min_size=1, max_size=3).map("/".join)
SMALL_FILTERS = st.one_of(
    SMALL_TOPICS,
    st.lists(st.sampled_from(["a", "b", "+"]), min_size=1, max_size=3).map("/".join),
    st.lists(st.sampled_from(["a", "+"]), max_size=2).map(lambda ls: "/".join([*ls, "#"])),
)
OPS = st.lists(
    st.tuples(
        st.integers(0, 2),  # 0: unsubscribe one held (the index's), else subscribe
        st.integers(0, 1000),
        st.sampled_from(["c0", "c1", "c2"]),
        st.sampled_from([None, None, "g", "h"]),  # share name
        SMALL_FILTERS,
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(OPS, st.lists(SMALL_TOPICS, min_size=1, max_size=6))
def test_match_after_any_changes_is_the_walks(
    ops: list[tuple[int, int, str, str | None, str, int]], topics: list[str]
) -> None:
    """Subscriptions come and go, with and without wildcards, plain and shared: after each
    change every topic matches what the trie walk finds, in its order, with the options of
    the moment, whichever way match took (the filter index while no filter has wildcards,
    the cache otherwise), and each plain subscription's client matches as the reference says."""
    tree = TopicTree()
    held: dict[tuple[str, str], str] = {}  # (client id, full filter) -> filter
    for what, index, cid, share, flt, qos in ops:
        if what == 0 and held:
            cid, full = list(held)[index % len(held)]
            del held[(cid, full)]
            assert tree.unsubscribe(cid, full)
            assert not tree.unsubscribe(cid, full)
        else:
            full = flt if share is None else f"$share/{share}/{flt}"
            tree.subscribe(cid, full, SubOptions(qos=qos))
            held[(cid, full)] = flt
        for topic in topics:
            assert found(tree, topic) == walked(tree, topic), topic
            assert found(tree, topic) == walked(tree, topic), topic  # again: cached or not
            plain = {c for (c, full), f in held.items() if full == f and topic_matches(f, topic)}
            assert {c for c, _ in found(tree, topic)[0]} == plain
    for cid, full in list(held):
        assert tree.unsubscribe(cid, full)
    assert tree.count == 0 and tree._exact == {} and tree._wildcards == 0


def test_exact_filters_only_match_by_one_lookup() -> None:
    """No filter with wildcards: a topic's match is its filter's node's subscriptions, the
    same result each time until they change; the cache is not filled. A wildcard filter
    turns the cache on, and its removal off again."""
    tree = TopicTree()
    tree.subscribe("c", "a/b", SubOptions(qos=1))
    tree.subscribe("s", "$share/g/a/b", SubOptions())
    first = cached(tree, "a/b")
    assert cached(tree, "a/b") is first
    assert found(tree, "a/b") == ([("c", 1)], [("g", "a/b")])
    assert found(tree, "a/c") == ([], []) and found(tree, "a") == ([], [])
    assert tree._cache == {} and tree._older == {}
    tree.subscribe("c", "a/b", SubOptions(qos=2))  # replaced: a new result
    assert found(tree, "a/b") == ([("c", 2)], [("g", "a/b")])
    tree.subscribe("w", "a/+", SubOptions())
    assert found(tree, "a/b") == ([("c", 2), ("w", 0)], [("g", "a/b")])
    assert "a/b" in tree._cache
    assert tree.unsubscribe("w", "a/+")
    assert found(tree, "a/b") == ([("c", 2)], [("g", "a/b")])
    assert tree.unsubscribe("c", "a/b") and tree.unsubscribe("s", "$share/g/a/b")
    assert found(tree, "a/b") == ([], []) and tree._exact == {}
