"""Valid packets in random order, with random ids, QoS and flags, against a model (v3, v4, v5).

One client subscribes, unsubscribes, publishes (QoS 0/1/2, retained or not, re-using packet
identifiers, v5 Topic Aliases), releases, and acknowledges the messages delivered to it (rightly, or
with identifiers it was never sent). After each packet a PINGREQ is the barrier: everything the
broker sends before the PINGRESP is its answer, and it must be exactly what the model says
(SUBACK/UNSUBACK, PUBACK/PUBREC/PUBREL/PUBCOMP with the v5 reason codes 0x10, 0x11). Every PUBLISH
the broker delivers must be one the model expects (QoS downgraded to the subscription's,
MQTT-3.8.4-8; the RETAIN flag per MQTT-3.3.1-8/-9 and Retain As Published; No Local; one copy per
shared group, and at v5 one per matching subscription), use a packet identifier not in use
(MQTT-2.2.1-3), stay within the client's Receive Maximum (MQTT-3.3.4-9 v5) and Topic Alias Maximum
(MQTT-3.1.2-26 v5), and be re-sent with DUP never (no reconnection here). At the end the client
acknowledges everything and every expected message must have arrived (nothing lost, MQTT-4.3 / 4.5).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from midge.codec.packets import (
    MQTT5,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
)
from midge.codec.properties import Prop
from midge.codec.topics import split_shared, topic_matches
from tests.fuzz.harness import SOON, Rig, fuzz_settings
from tests.rawclient import Closed, RawClient

FUZZ = fuzz_settings(300)

#: Topic filters and names, below the example's own prefix.
FILTERS = ["a", "a/b", "+", "#", "+/b", "$share/g/a", "$share/g/#", "$share/h/+"]
TOPICS = ["a", "a/b", "c"]
#: Few packet identifiers, so that they collide (QoS 2 duplicates, acks for the wrong flow).
PIDS = st.integers(1, 5)


@dataclass(frozen=True)
class Act:
    kind: str
    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0
    e: int = 0


# filter index, QoS, No Local, Retain As Published, Retain Handling
SUB = st.builds(
    Act,
    st.just("sub"),
    st.integers(0, len(FILTERS) - 1),
    st.integers(0, 2),
    st.integers(0, 1),
    st.integers(0, 1),
    st.integers(0, 2),
)
# topic index, QoS, retain (2: with an empty payload, which clears the retained message),
# packet id, topic alias (0: none; 1-3: set it; -1..-3: use it if it stands for the topic)
PUB = st.builds(
    Act,
    st.just("pub"),
    st.integers(0, len(TOPICS) - 1),
    st.integers(0, 2),
    st.integers(0, 2),
    PIDS,
    st.integers(-3, 3),
)
ACTS = st.one_of(
    PUB,
    SUB,
    st.builds(Act, st.just("ack"), st.integers(0, 7)),  # acknowledge a delivery rightly
    PUB,
    st.builds(Act, st.just("unsub"), st.integers(0, len(FILTERS) - 1)),
    st.builds(Act, st.just("pubrel"), PIDS),
    st.builds(Act, st.sampled_from(["puback", "pubrec", "pubcomp"]), PIDS),  # maybe wrongly
    st.just(Act("ping")),
)


@st.composite
def scripts(draw: st.DrawFn) -> list[Act]:
    """A few subscriptions first (so that publishes are delivered), then anything."""
    return draw(st.lists(SUB, min_size=1, max_size=3)) + draw(
        st.lists(ACTS, min_size=4, max_size=20)
    )


@dataclass
class Sub:
    qos: int
    no_local: bool
    rap: bool


@dataclass
class Out:
    """A QoS 1/2 delivery not yet completed."""

    qos: int
    released: bool = False


Delivery = tuple[str, bytes, int, bool]  # topic, payload, QoS, RETAIN


class Model:
    def __init__(self, version: int, prefix: str, receive_max: int, alias_max: int) -> None:
        self.version = version
        self.v5 = version == MQTT5
        self.prefix = prefix
        self.receive_max = receive_max
        self.alias_max = alias_max
        self.subs: dict[str, Sub] = {}
        self.retained: dict[str, tuple[bytes, int]] = {}
        self.awaiting_rel: set[int] = set()
        self.out: dict[int, Out] = {}
        self.expected: Counter[Delivery] = Counter()
        self.aliases_in: dict[int, str] = {}
        self.aliases_out: dict[int, str] = {}
        self.n = 0
        self.n_delivered = 0
        self.pid = 0

    def next_pid(self) -> int:
        self.pid = self.pid % 65535 + 1
        return self.pid

    def rc(self, code: int) -> int:
        return code if self.v5 else 0

    # -- the client's side -------------------------------------------------------------------------

    def step(self, act: Act) -> tuple[list[Packet], list[Packet]]:
        """The packets to send for ``act`` and the answers the broker must give."""
        k = act.kind
        if k == "sub":
            flt = self.prefix_filter(FILTERS[act.a])
            shared = flt.startswith("$share/")
            no_local = bool(act.c) and self.v5 and not shared
            rap = bool(act.d) and self.v5
            rh = act.e if self.v5 else 0
            sub = Subscription(flt, act.b, no_local, rap, rh)
            pid = self.next_pid()
            new = flt not in self.subs
            self.subs[flt] = Sub(act.b, no_local, rap)
            if not shared and (rh == 0 or (rh == 1 and new)):
                # MQTT-3.3.1-8 and Retain Handling (MQTT-3.3.1-9..-11 v5).
                for topic, (payload, qos) in self.retained.items():
                    if topic_matches(flt, topic):
                        self.expected[(topic, payload, min(qos, act.b), True)] += 1
            return [Subscribe(pid, [sub])], [Suback(pid, [act.b])]
        if k == "unsub":
            flt = self.prefix_filter(FILTERS[act.a])
            pid = self.next_pid()
            existed = self.subs.pop(flt, None) is not None
            codes = [0x00 if existed else 0x11] if self.v5 else []
            return [Unsubscribe(pid, [flt])], [Unsuback(pid, codes)]
        if k == "pub":
            return self.publish(act)
        if k == "pubrel":
            self.awaiting_rel.discard(act.a)
            return [Pubrel(act.a)], [Pubcomp(act.a)]  # Success even if unknown, as Mosquitto
        if k == "ack":
            if not self.out:
                return [], []
            pid = sorted(self.out)[act.a % len(self.out)]
            return self.ack(pid, self.proper_ack(pid))
        if k in ("puback", "pubrec", "pubcomp"):
            return self.ack(act.a, k)
        assert k == "ping"
        return [Pingreq()], [Pingresp()]

    def prefix_filter(self, flt: str) -> str:
        share, real = split_shared(flt)
        return f"$share/{share}/{self.prefix}/{real}" if share else f"{self.prefix}/{flt}"

    def publish(self, act: Act) -> tuple[list[Packet], list[Packet]]:
        topic = f"{self.prefix}/{TOPICS[act.a]}"
        qos, pid = act.b, act.d
        retain = act.c > 0
        self.n += 1
        payload = b"" if act.c == 2 else f"m{self.n}".encode()
        props: dict[int, int] = {}
        wire_topic = topic
        if self.v5 and act.e:
            alias = abs(act.e)
            if act.e < 0 and self.aliases_in.get(alias) == topic:
                wire_topic = ""  # MQTT 5.0 3.3.2.3.4: the alias stands for the topic
            self.aliases_in[alias] = topic
            props[Prop.TOPIC_ALIAS] = alias
        packet = Publish(wire_topic, payload, qos, retain, False, pid if qos else None, props)
        if qos == 2 and pid in self.awaiting_rel:
            return [packet], [Pubrec(pid)]  # MQTT-4.3.3-2: a duplicate, not routed again
        if retain:
            # MQTT-3.3.1-5..-7 (3.1.1 and v5): store, replace, or clear on an empty payload.
            if payload:
                self.retained[topic] = (payload, qos)
            else:
                self.retained.pop(topic, None)
        delivered = self.route(topic, payload, qos, retain)
        if qos == 0:
            return [packet], []
        # v5 0x10 as Mosquitto: no subscription matched (No Local ones too); a QoS 2 PUBREC is
        # always Success (Mosquitto routes at PUBREL, so it cannot know yet).
        code = self.rc(0x00 if delivered or qos == 2 else 0x10)
        if qos == 1:
            return [packet], [Puback(pid, code)]
        self.awaiting_rel.add(pid)
        return [packet], [Pubrec(pid, code)]

    def route(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """Expect the deliveries of one message; True if any subscription matched."""
        mine = [
            s
            for f, s in self.subs.items()
            if not f.startswith("$share/") and topic_matches(f, topic)
        ]
        delivered = bool(mine)
        plain = [s for s in mine if not s.no_local]
        if plain and self.v5:
            # As Mosquitto: one copy per matching subscription, each at its own QoS
            # (MQTT-3.3.4-2/-5 v5), never above the message's (MQTT-3.8.4-8 v5).
            for s in plain:
                self.expected[(topic, payload, min(qos, s.qos), retain and s.rap)] += 1
        elif plain:
            # Overlapping subscriptions: one copy at the highest granted QoS (MQTT-3.3.5-1
            # 3.1.1; allow_duplicate_messages false, Mosquitto's default).
            best = max(s.qos for s in plain)
            rap = any(s.rap for s in plain)
            self.expected[(topic, payload, min(qos, best), retain and rap)] += 1
        for f, s in self.subs.items():
            share, real = split_shared(f)
            if share is not None and topic_matches(real, topic):
                # One copy per shared group; we are its only member (MQTT 5.0 4.8.2).
                self.expected[(topic, payload, min(qos, s.qos), retain and s.rap)] += 1
                delivered = True
        return delivered

    def proper_ack(self, pid: int) -> str:
        out = self.out[pid]
        if out.qos == 1:
            return "puback"
        return "pubcomp" if out.released else "pubrec"

    def ack(self, pid: int, kind: str) -> tuple[list[Packet], list[Packet]]:
        out = self.out.get(pid)
        if kind == "puback":
            if out is not None and out.qos == 1:
                del self.out[pid]
            return [Puback(pid)], []
        if kind == "pubrec":
            if out is not None and out.qos == 2:
                out.released = True
                return [Pubrec(pid)], [Pubrel(pid)]
            return [Pubrec(pid)], [Pubrel(pid)]  # Success even if unknown, as Mosquitto
        assert kind == "pubcomp"
        if out is not None and out.qos == 2 and out.released:
            del self.out[pid]
        return [Pubcomp(pid)], []

    # -- the broker's deliveries -----------------------------------------------------------------

    def delivered(self, p: Publish) -> None:
        """Check one PUBLISH the broker sent against the model."""
        topic = p.topic
        if self.v5:
            alias = p.properties.get(Prop.TOPIC_ALIAS)
            if alias is not None:
                # MQTT-3.1.2-26 v5 (and 0 is never an alias, MQTT-3.3.2-8)
                assert 1 <= alias <= self.alias_max, f"Topic Alias {alias} > {self.alias_max}"
                if topic:
                    self.aliases_out[alias] = topic
                else:
                    assert alias in self.aliases_out, f"PUBLISH with unknown alias {alias}"
                    topic = self.aliases_out[alias]
            assert Prop.SUBSCRIPTION_IDENTIFIER not in p.properties, p
        assert topic, f"PUBLISH without a topic: {p!r}"
        assert not p.dup, f"DUP set on a first delivery: {p!r}"
        key = (topic, p.payload, p.qos, p.retain)
        assert self.expected[key] > 0, (
            f"unexpected delivery {key!r}; expected {sorted(+self.expected)!r}"
        )
        self.expected[key] -= 1
        self.n_delivered += 1
        if p.qos:
            pid = p.packet_id
            assert pid is not None
            assert pid not in self.out, f"packet identifier {pid} is still in use (MQTT-2.2.1-3)"
            self.out[pid] = Out(p.qos)
            assert len(self.out) <= self.receive_max, (
                f"{len(self.out)} unacknowledged QoS 1/2 PUBLISH > Receive Maximum"
                f" {self.receive_max} (MQTT-3.3.4-9)"
            )


def run(client: RawClient, model: Model, send: list[Packet], answers: list[Packet]) -> None:
    """Send ``send`` then a PINGREQ; the broker's non-PUBLISH packets must be ``answers``."""
    for packet in [*send, Pingreq()]:
        client.send(packet)
    want = [*answers, Pingresp()]
    got: list[Packet] = []
    while len(got) < len(want):
        try:
            packet = client.recv(SOON)
        except TimeoutError:
            raise AssertionError(
                f"no answer within {SOON} s: got {got!r}, wanted {want!r} for {send!r}"
            ) from None
        except Closed:
            raise AssertionError(f"the broker closed the connection after {send!r}") from None
        if isinstance(packet, Publish):
            model.delivered(packet)
        else:
            got.append(packet)
    assert got == want, f"answers to {send!r}"


@st.composite
def connect_options(draw: st.DrawFn, version: int) -> dict[int, int]:
    if version != MQTT5:
        return {}
    return draw(
        st.fixed_dictionaries(
            {},
            optional={
                Prop.RECEIVE_MAXIMUM: st.sampled_from([1, 2, 5]),
                Prop.TOPIC_ALIAS_MAXIMUM: st.integers(0, 3),
            },
        )
    )


@pytest.mark.parametrize("version", [3, 4, 5])
@FUZZ
@given(data=st.data())
def test_valid_packets_in_random_order(rig: Rig, version: int, data: st.DataObject) -> None:
    props = data.draw(connect_options(version), label="CONNECT properties")
    actions = data.draw(scripts(), label="actions")
    with rig.example(sessions_clean=True):
        client, _ = rig.connected(version, properties=props)
        model = Model(
            version,
            rig.prefix(),
            props.get(Prop.RECEIVE_MAXIMUM, 65535),
            props.get(Prop.TOPIC_ALIAS_MAXIMUM, 0),
        )
        for act in actions:
            run(client, model, *model.step(act))
        # Acknowledge everything until nothing is left in flight or queued.
        for _ in range(200):
            if not model.out:
                break
            pid = min(model.out)
            run(client, model, *model.ack(pid, model.proper_ack(pid)))
        assert not model.out, "deliveries still in flight after acknowledging everything"
        event(f"deliveries: {min(model.n_delivered, 10)}+")
        missing = +model.expected
        assert not missing, f"messages never delivered: {sorted(missing)!r}"
        client.send(Disconnect())
        assert client.wait_closed(SOON), "the broker did not close after DISCONNECT"
