"""A session's plain form (:class:`midge.broker.model.SessionState`): ``Session.snapshot`` and
``restore`` round-trip everything a session holds (MQTT-4.1 v5), and the ``--workers`` hand-off
carries the snapshot through marshal unchanged."""

from __future__ import annotations

import marshal

from midge.broker.model import Message, SessionState, SubOptions
from midge.broker.outgoing import Outgoing
from midge.broker.session import Session, Stats
from midge.cluster.workers import state_from_data, state_to_data
from midge.codec import Decoder
from midge.codec.packets import UNLIMITED_PACKET_SIZE, Packet, Publish, Pubrel


class Wall:
    """The clock the outgoing side reads (Message Expiry), fixed."""

    def wall(self) -> float:
        return 1000.0


class Written:
    """A transport that keeps what is written, decoded."""

    def __init__(self) -> None:
        self.decoder = Decoder(4)

    def write(self, data: bytes) -> None:
        self.decoder.receive(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def packets(self) -> list[Packet]:
        out = []
        while (p := self.decoder.next_packet()) is not None:
            out.append(p)
        return out


def attach(session: Session) -> Written:
    """Attach ``session`` to a real outgoing side (v3.1.1) writing to a :class:`Written`."""
    written = Written()
    sink = Outgoing(written, Stats(), Wall())  # type: ignore[arg-type]
    sink.start(4, UNLIMITED_PACKET_SIZE, 0)
    session.open(sink, 2, 0, 10)
    return written


def busy_session() -> Session:
    s = Session("c1")
    s.set_expiry(300)
    s.subscriptions["a/#"] = SubOptions(1, True, False, 2, 7)
    s.subscriptions["b"] = SubOptions(2)
    attach(s)
    s.deliver(Message("a/1", b"one", 1), 1, False, (7,))
    s.deliver(Message("a/2", b"two", 2, expires_at=1e12), 2, True, ())
    s.deliver(Message("a/3", b"three", 1), 1, False, ())  # over the window of 2: queued
    assert s.received(2)  # PUBREC: released
    s.qos2_received(41)
    s.detached()
    return s


def describe(state: SessionState) -> tuple[object, ...]:
    def delivery(d: tuple[Message, int, bool, tuple[int, ...]]) -> tuple[object, ...]:
        m = d[0]
        return (m.topic, m.payload, m.qos, m.expires_at, d[1], d[2], d[3])

    return (
        state.client_id,
        state.expiry_interval,
        sorted(
            (f, o.qos, o.no_local, o.retain_as_published, o.retain_handling, o.subscription_id)
            for f, o in state.subscriptions.items()
        ),
        [(pid, delivery(d), released) for pid, d, released in state.inflight],
        [delivery(d) for d in state.queue],
        state.awaiting_rel,
        state.next_pid,
        state.dropped,
        state.username,
    )


def test_snapshot_restore_round_trip() -> None:
    s = busy_session()
    state = s.snapshot("alice", 5)
    assert [(pid, released) for pid, _, released in state.inflight] == [(1, False), (2, True)]
    assert [d[0].topic for d in state.queue] == ["a/3"]
    assert state.awaiting_rel == [41] and state.next_pid == 3
    copy = Session("c1")
    copy.restore(state)
    assert describe(copy.snapshot("alice", 5)) == describe(state)
    assert copy.inflight_bytes == s.inflight_bytes and copy.queued_bytes == s.queued_bytes
    assert copy.qos2_known(41) and not copy.qos2_known(42)


def test_restored_session_resends_in_order_with_dup() -> None:
    copy = Session("c1")
    copy.restore(busy_session().snapshot())
    written = attach(copy)
    copy.resend()
    copy.pump(0.0)
    first = written.packets()
    # The window of 2 is full: a/3 stays queued.
    assert [type(p).__name__ for p in first] == ["Publish", "Pubrel"]
    again = first[0]
    assert isinstance(again, Publish) and (again.topic, again.packet_id, again.dup) == (
        "a/1",
        1,
        True,
    )
    assert isinstance(first[1], Pubrel) and first[1].packet_id == 2
    assert copy.acked(1, 1)
    copy.pump(0.0)
    (new,) = written.packets()
    # The next packet id after the snapshot's, not a re-send.
    assert isinstance(new, Publish) and (new.topic, new.packet_id, new.dup) == ("a/3", 3, False)


def test_worker_hand_off_carries_the_snapshot() -> None:
    state = busy_session().snapshot("alice", 5)
    moved = state_from_data(marshal.loads(marshal.dumps(state_to_data(state))))
    assert describe(moved) == describe(state)
