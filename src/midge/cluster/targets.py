"""Where a message published on this node goes beyond it: :func:`peer_targets`, shared by the
workers' and the cluster's routers. It runs for every message published with more than one
worker or node, so it is compiled with mypyc (setup.py's HOT_MODULES)."""

from __future__ import annotations

from midge.broker.topictree import TopicTree

#: A shared subscription group: (share name, topic filter).
Group = tuple[str, str]


def peer_targets(
    local: TopicTree, me: str, remote: TopicTree, turn: dict[Group, int], topic: str
) -> tuple[dict[str, list[Group]], bool, set[Group] | None]:
    """Where a message on ``topic`` published here goes beyond this node (workers and cluster
    nodes alike): every other node (``remote``'s "client ids") whose interest matches, each
    with the shared groups it is picked to serve; whether anyone elsewhere is interested; and
    the groups this node serves itself (None when no other node has members of a group).

    Each message goes to one member of a group overall (MQTT 5 4.8.2): a node is picked in turn
    (``turn``, per group) among those with members, this one (``me``, whose subscriptions are
    ``local``) included, and that node picks one of its members."""
    rsubs, rshared = remote.match(topic)
    targets: dict[str, list[Group]] = {}
    for node, _ in rsubs:
        targets[node] = []
    interested = bool(targets)
    if not rshared:
        return targets, interested, None
    local_groups: set[Group] = set()
    candidates: dict[Group, list[str]] = {}
    for group in local.match(topic)[1]:
        if group.members:
            candidates[(group.name, group.filter)] = [me]
    for group in rshared:
        candidates.setdefault((group.name, group.filter), []).extend(group.members)
    for key, nodes in candidates.items():
        if len(nodes) == 1:
            chosen = nodes[0]
        else:
            nodes.sort()
            n = turn.get(key, 0)
            turn[key] = n + 1
            chosen = nodes[n % len(nodes)]
        if chosen == me:
            local_groups.add(key)
        else:
            targets.setdefault(chosen, []).append(key)
            interested = True
    return targets, interested, local_groups
