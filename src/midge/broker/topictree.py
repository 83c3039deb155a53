"""Subscriptions and retained messages, each in a trie of topic levels.

:class:`TopicTree` answers "who is subscribed to this topic?" by walking the trie once per topic,
so the cost of a publish does not grow with unrelated subscriptions. While no filter has
wildcards, a topic is matched by one lookup of an index of filters instead; otherwise the results
are cached by topic (see :meth:`TopicTree.match`).

:class:`RetainedTree` answers "which retained messages match this filter?" the other way round:
the filter's levels are walked over a trie of retained topics.

Both apply MQTT-4.7.2-1: a filter starting with a wildcard does not match topics starting with $.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Generic, TypeVar

from midge.broker.model import Message, SubOptions
from midge.codec.topics import split_shared

T = TypeVar("T")

#: Entries in each of the exact-topic match cache's two generations (see TopicTree.match).
CACHE_SIZE: Final = 4096
#: A generation that filled with fewer hits than this (a working set too large for the cache)
#: stops the caching of the results of the next CACHE_SKIP lookups that miss.
CACHE_FUTILE: Final = CACHE_SIZE // 8
CACHE_SKIP: Final = 8 * CACHE_SIZE

# What a retained-search task does (:func:`_search`).
_SEARCH: Final = 0
_VALUE: Final = 1
_SUBTREE: Final = 2


class SharedGroup:
    """``$share/{name}/{filter}``: each message goes to one member, in turn (MQTT-4.8.2 v5)."""

    __slots__ = ("filter", "members", "name", "next")

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name = name
        self.filter = topic_filter
        self.members: dict[str, SubOptions] = {}
        self.next = 0

    def __repr__(self) -> str:
        return f"SharedGroup({self.name!r}, {self.filter!r}, {list(self.members)})"


#: What a topic matches: (client id, options) for plain subscriptions, and the shared groups.
#: A result is shared by every caller that gets it (cached): nobody changes it.
Matches = tuple[list[tuple[str, SubOptions]], list[SharedGroup]]

#: What a topic that matches nothing matches.
_NOTHING: Final[Matches] = ([], [])


def _wild(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


class _Node:
    """One topic level. ``subs`` and ``shared`` are made on first use: most nodes are just
    a path to deeper levels, and the trie holds one node per level of every subscription.
    ``matched``: this node's own subscriptions as a match result, made when first asked for
    (see TopicTree.match) and dropped when they change."""

    __slots__ = ("children", "matched", "shared", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subs: dict[str, SubOptions] | None = None  # client id -> options
        self.shared: dict[str, SharedGroup] | None = None  # share name -> group
        self.matched: Matches | None = None

    def empty(self) -> bool:
        return not (self.children or self.subs or self.shared)


class TopicTree:
    """The subscription trie. Filters may be plain or ``$share/{name}/{filter}``."""

    def __init__(self) -> None:
        self._root = _Node()
        #: The node of each filter without wildcards that has subscriptions (plain or shared),
        #: by filter; and how many subscriptions have a filter with wildcards. While there are
        #: none, a topic matches at most one filter, itself (see :meth:`match`).
        self._exact: dict[str, _Node] = {}
        self._wildcards = 0
        #: The match cache: the current generation, and the one before it (see :meth:`match`).
        self._cache: dict[str, Matches] = {}
        self._older: dict[str, Matches] = {}
        #: Hits while the current generation filled; generations filled since the last
        #: change; lookups left that do not cache their result.
        self._hits = 0
        self._filled = 0
        self._skip = 0
        #: Subscriptions held, and of those the shared ones ($SYS counts them apart).
        self.count = 0
        self.shared_count = 0

    def subscribe(self, client_id: str, topic_filter: str, options: SubOptions) -> bool:
        """Add or replace a subscription; True if it is new (False: replaced, MQTT-3.8.4-3)."""
        share, flt = split_shared(topic_filter)
        node = self._root
        for level in flt.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if share is None:
            if node.subs is None:
                node.subs = {}
            new = client_id not in node.subs
            node.subs[client_id] = options
        else:
            if node.shared is None:
                node.shared = {}
            group = node.shared.get(share)
            if group is None:
                group = node.shared[share] = SharedGroup(share, flt)
            new = client_id not in group.members
            group.members[client_id] = options
        node.matched = None
        wild = _wild(flt)
        if not wild:
            self._exact[flt] = node
        if new:
            self.count += 1
            if share is not None:
                self.shared_count += 1
            if wild:
                self._wildcards += 1
        self._forget(flt, wild)
        return new

    def unsubscribe(self, client_id: str, topic_filter: str) -> bool:
        """Remove a subscription; True if it existed."""
        share, flt = split_shared(topic_filter)
        path = [self._root]
        node: _Node | None = self._root
        levels = flt.split("/")
        for level in levels:
            assert node is not None
            node = node.children.get(level)
            if node is None:
                return False
            path.append(node)
        assert node is not None
        if share is None:
            if not node.subs or node.subs.pop(client_id, None) is None:
                return False
        else:
            group = node.shared.get(share) if node.shared else None
            if group is None or group.members.pop(client_id, None) is None:
                return False
            if not group.members:
                del node.shared[share]  # type: ignore[union-attr]
            self.shared_count -= 1
        self.count -= 1
        node.matched = None
        wild = _wild(flt)
        if wild:
            self._wildcards -= 1
        elif not node.subs and not node.shared:
            del self._exact[flt]
        # Prune empty nodes so the trie does not grow without bound under churn.
        for depth in range(len(levels), 0, -1):
            if not path[depth].empty():
                break
            del path[depth - 1].children[levels[depth - 1]]
        self._forget(flt, wild)
        return True

    def match(self, topic: str) -> Matches:
        """Every subscription matching ``topic`` (a topic name, never a filter), in Mosquitto's
        order (its sub__search): at each level the exact child's matches (deeper ones first,
        then its own), then the ``+`` child's likewise, then ``#``. A client with several
        matching subscriptions may be sent one copy per subscription, in this order.

        The results are cached by topic in two generations: a topic is looked up in the
        current one, then in the older one (and moved to the current one), and searched
        only if in neither. When the current generation is full it becomes the older one
        and the older one is dropped: up to CACHE_SIZE topics in use stay cached, and most
        of up to twice as many. (Dropping the oldest entry one at a time, as a FIFO, costs a
        scan over the dict's deleted slots at each eviction, and with more topics than
        the cache holds, taken in turn, it never hits.)

        When the topics in use are too many for the cache even so (a generation, not the
        first, filled with fewer than CACHE_FUTILE hits: the seed's 50,000 pairs, one topic
        each, taken in turn), the results of the next CACHE_SKIP lookups that miss are not
        cached; then caching is tried again. A cached result lives until its generation is
        dropped, long enough to outlive the garbage collector's young generations: caching
        results that are never hit again costs collections as well as the cache's own work.

        While no subscription has a filter with wildcards (the seed's pairs, and any broker
        whose clients subscribe to exact topics only), a topic matches one filter at most,
        itself: the match is the subscriptions of the filter's node, found in one lookup of
        the filter index, and made into a result once per change of that node's
        subscriptions. The cache is not used then: it could only cost more."""
        if not self._wildcards:
            node = self._exact.get(topic)
            if node is None:
                return _NOTHING
            found = node.matched
            if found is None:
                found = node.matched = (
                    list(node.subs.items()) if node.subs else [],
                    list(node.shared.values()) if node.shared else [],
                )
            return found
        cache = self._cache
        result = cache.get(topic)
        if result is not None:
            self._hits += 1
            return result
        result = self._older.pop(topic, None)
        if result is None:
            subs: list[tuple[str, SubOptions]] = []
            shared: list[SharedGroup] = []
            levels = topic.split("/")
            _search(self._root, levels, len(levels), topic.startswith("$"), subs, shared)
            result = (subs, shared)
            if self._skip:
                self._skip -= 1
                if not self._skip:
                    self._hits = 0  # the next generation's fill is judged on its own
                return result
        else:
            self._hits += 1
        if len(cache) >= CACHE_SIZE:
            self._filled += 1
            if self._hits < CACHE_FUTILE and self._filled > 1:
                self._skip = CACHE_SKIP
            self._hits = 0
            self._older = cache
            cache = self._cache = {}
        cache[topic] = result
        return result

    def _forget(self, topic_filter: str, wild: bool) -> None:
        """A subscription to ``topic_filter`` (its filter part, for a shared one) changed. A
        filter without wildcards matches one topic, itself: only that topic's cached match is
        stale (clients subscribing and leaving all the time, each to topics of its own, keep
        the cache). After a change to a wildcard filter no cached match holds any more."""
        if wild:
            self._cache = {}
            self._older = {}
            self._hits = self._filled = self._skip = 0
        else:
            self._cache.pop(topic_filter, None)
            self._older.pop(topic_filter, None)


def _search(
    root: _Node,
    levels: list[str],
    last: int,
    dollar: bool,
    subs: list[tuple[str, SubOptions]],
    shared: list[SharedGroup],
) -> None:
    """:meth:`TopicTree.match`: Mosquitto's recursive walk, on an explicit stack (a topic may
    have thousands of levels). An entry is (node, level, take): visit ``node``, which matched
    ``levels[:level]``, or (take) collect its subscriptions; each visit pushes its steps in
    reverse, so that they run in Mosquitto's order."""
    stack: list[tuple[_Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, i, take = stack.pop()
        if take:
            if node.subs:
                subs.extend(node.subs.items())
            if node.shared:
                shared.extend(node.shared.values())
            continue
        children = node.children
        if not children:
            continue
        # "+" and "#" do not match a first level starting with "$" (MQTT-4.7.2-1).
        wild = not (dollar and i == 0)
        # Pushed last first: popped as the child's visit and take, then "+"'s, then "#".
        if wild:
            # "a/#" matches "a/b" and "a" too (MQTT-4.7.1-2: # includes the parent level).
            hash_node = children.get("#")
            if hash_node is not None:
                stack.append((hash_node, 0, True))
        if i < last:
            end = i + 1 == last
            if wild:
                plus = children.get("+")
                if plus is not None:
                    if end:
                        stack.append((plus, 0, True))
                    stack.append((plus, i + 1, False))
            child = children.get(levels[i])
            if child is not None:
                if end:
                    stack.append((child, 0, True))
                stack.append((child, i + 1, False))


class _RNode(Generic[T]):
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _RNode[T]] = {}
        self.value: T | None = None


class RetainedTree:
    """Retained messages by topic (MQTT-3.3.1-5..-11): one per topic, found by filter."""

    def __init__(self) -> None:
        self._root: _RNode[Message] = _RNode()
        #: Retained messages held, and their payload bytes ($SYS).
        self.count = 0
        self.payload_bytes = 0

    def set(self, message: Message) -> None:
        """Store ``message`` as the topic's retained message; an empty payload clears it."""
        levels = message.topic.split("/")
        if not message.payload:
            self._remove(levels)
            return
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _RNode()
            node = child
        old = node.value
        if old is None:
            self.count += 1
        else:
            self.payload_bytes -= len(old.payload)
        self.payload_bytes += len(message.payload)
        node.value = message

    def get(self, topic: str) -> Message | None:
        node: _RNode[Message] | None = self._root
        for level in topic.split("/"):
            assert node is not None
            node = node.children.get(level)
            if node is None:
                return None
        return node.value if node is not None else None

    def _remove(self, levels: list[str]) -> None:
        path = [self._root]
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                return
            node = child
            path.append(node)
        old = node.value
        if old is None:
            return
        node.value = None
        self.count -= 1
        self.payload_bytes -= len(old.payload)
        for depth in range(len(levels), 0, -1):
            n = path[depth]
            if n.value is not None or n.children:
                break
            del path[depth - 1].children[levels[depth - 1]]

    def match(self, topic_filter: str) -> Iterator[Message]:
        """Retained messages whose topic matches ``topic_filter`` (not a shared filter), in
        Mosquitto's order: topics in the order they were first retained, each before the topics
        below it, except that the ``a`` of ``a/#`` comes after everything below it."""
        out: list[Message] = []
        _search_retained(self._root, topic_filter.split("/"), out)
        return iter(out)

    def all(self) -> Iterator[Message]:
        todo: list[_RNode[Message]] = [self._root]
        while todo:
            n = todo.pop()
            if n.value is not None:
                yield n.value
            todo.extend(n.children.values())


def _search_retained(root: _RNode[Message], levels: list[str], out: list[Message]) -> None:
    """Append the retained messages matching the filter ``levels`` to ``out``, in Mosquitto's
    order, without recursion: a stack of (node, level, what) tasks pushed in reverse of their
    order; ``what`` is _SEARCH (match ``levels[i:]`` below the node), _VALUE (its message) or
    _SUBTREE (its message, then everything below it)."""
    n = len(levels)
    stack: list[tuple[_RNode[Message], int, int]] = [(root, 0, _SEARCH)]
    while stack:
        node, i, what = stack.pop()
        if what == _VALUE:
            if node.value is not None:
                out.append(node.value)
            continue
        if what == _SUBTREE:
            if node.value is not None:
                out.append(node.value)
            stack.extend((c, i, _SUBTREE) for c in reversed(node.children.values()))
            continue
        level = levels[i]
        if level == "#":
            # Everything below; $-topics are skipped at the root (MQTT-4.7.2-1).
            stack.extend(
                (c, i, _SUBTREE)
                for name, c in reversed(node.children.items())
                if not (i == 0 and name.startswith("$"))
            )
            continue
        if level == "+":
            children = [c for m, c in node.children.items() if not (i == 0 and m.startswith("$"))]
        else:
            exact = node.children.get(level)
            children = [] if exact is None else [exact]
        more = i + 1 < n
        for child in reversed(children):
            if more:
                # "a/#" also matches "a" (MQTT-4.7.1-2), after what is below it.
                if levels[i + 1] == "#":
                    stack.append((child, i, _VALUE))
                stack.append((child, i + 1, _SEARCH))
            else:
                stack.append((child, i, _VALUE))
