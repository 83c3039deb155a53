"""What the SQLite store gives back is exactly what the broker held: random traffic (seeded),
then a clean stop and a restart, and the restored state must equal the state before.

It exercises every report the core makes (queue tail and head, in flight by packet id, PUBREC
received, inbound QoS 2 ids, subscriptions added and removed, retained set and cleared, sessions
taken over and ended) against the store's FIFO and reference-count bookkeeping.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from midge.broker.broker import Broker
from midge.codec.packets import Puback, Pubcomp, Publish, Pubrec, Pubrel, Unsubscribe
from midge.codec.properties import Prop
from tests.conftest import RunningBroker
from tests.durability.harness import connect
from tests.rawclient import RawClient


def snapshot(broker: Broker) -> dict[str, Any]:
    sessions = {}
    for cid, s in broker.sessions.items():
        if s.store is None:
            continue
        sessions[cid] = (
            s.expiry_interval,
            sorted(
                (f, o.qos, o.no_local, o.retain_as_published, o.retain_handling, o.subscription_id)
                for f, o in s.subscriptions.items()
            ),
            [(d[0].topic, d[0].payload, d[0].qos, d[1], d[2], d[3]) for d in (s.queue or ())],
            sorted(
                (pid, o.delivery[0].payload, o.delivery[1], o.delivery[3], o.released)
                for pid, o in s.inflight.items()
            ),
            sorted(s.awaiting_rel),
        )
    retained = sorted(
        (m.topic, m.payload, m.qos)
        for m in broker.retained.all()
        if m.payload and not m.topic.startswith("$SYS")  # this run's own: never kept
    )
    return {"sessions": sessions, "retained": retained}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restored_state_equals_state_before(
    make_broker: Callable[..., RunningBroker], tmp_path: Path, seed: int
) -> None:
    rnd = random.Random(seed)
    options = {"data_dir": str(tmp_path), "max_queued_messages": 40, "max_inflight_messages": 5}
    broker = make_broker(**options)
    clients = {f"s{i}": 4 + i % 2 for i in range(4)}  # client id -> protocol version
    topics = ["a/b", "a/c", "b/x", "c"]
    filters = ["a/#", "a/b", "+/x", "c", "#"]
    for cid, version in clients.items():
        c = RawClient(broker.host, broker.port, version)
        connect(c, cid)
        for f in rnd.sample(filters, 2):
            props: dict[int, Any] | None = (
                {Prop.SUBSCRIPTION_IDENTIFIER: rnd.randint(1, 9)} if version == 5 else None
            )
            c.subscribe(f, rnd.randint(0, 2), props)
        c.disconnect()
    pub = RawClient(broker.host, broker.port, 5)
    connect(pub, "pub")
    n = half = 0
    for _step in range(120):
        action = rnd.random()
        if action < 0.6:
            n += 1
            qos = rnd.randint(0, 2)
            retain = rnd.random() < 0.15
            payload = b"" if retain and rnd.random() < 0.3 else f"m{n}".encode()
            props = {Prop.MESSAGE_EXPIRY_INTERVAL: 3600} if rnd.random() < 0.2 else None
            pub.publish(rnd.choice(topics), payload, qos, retain, props)
        elif action < 0.7 and half < 3:  # below the Receive Maximum (max_inflight_messages)
            half += 1
            # An inbound QoS 2 left waiting for PUBREL.
            pid = 1000 + _step
            pub.send(Publish(rnd.choice(topics), b"half", 2, False, False, pid))
            pub.expect(Pubrec)
        else:
            cid = rnd.choice(list(clients))
            c = RawClient(broker.host, broker.port, clients[cid])
            connect(c, cid)
            if rnd.random() < 0.2:
                c.send(Unsubscribe(60000, [rnd.choice(filters)]))
            for packet in c.recv_all(0.05):
                if isinstance(packet, Publish) and packet.qos and rnd.random() < 0.6:
                    # QoS 1 acknowledged; QoS 2 PUBREC'd (released), completed below or not.
                    pid = packet.packet_id or 0
                    c.send(Puback(pid) if packet.qos == 1 else Pubrec(pid))
                elif isinstance(packet, Pubrel) and rnd.random() < 0.5:
                    c.send(Pubcomp(packet.packet_id))
            c.disconnect()
    pub.disconnect()
    time.sleep(0.2)
    core = broker.server.broker
    assert core is not None
    before = broker.call(lambda: snapshot(core))
    assert before["sessions"], "the scenario made no persistent state"
    assert any(s[2] for s in before["sessions"].values()), "nothing queued"
    assert any(s[3] for s in before["sessions"].values()), "nothing in flight"
    broker.stop()
    broker = make_broker(**options)
    restored = broker.server.broker
    assert restored is not None
    after = broker.call(lambda: snapshot(restored))
    assert after == before
