"""The load generator's bytes: PUBLISH packets encoded once, and a one-pass reader of the replies.

The generator must not be the bottleneck, so nothing here builds a packet object per message.
:class:`PublishTemplate` encodes a client's PUBLISH once with midge's own codec and afterwards only
splices in the 8-byte send timestamp (and, at QoS 1/2, patches the packet identifier); a batch of
``k`` QoS 0 messages sent at one instant is a single ``bytes * k``. :class:`Reader` walks a received
chunk once, counting PUBLISH deliveries, taking the latency of each from the timestamp at the start
of its payload, and answering the QoS handshakes (PUBACK, PUBREC/PUBREL/PUBCOMP) with one bytes
object per chunk so the caller makes one write per socket per read.

Timestamps are ``time.monotonic_ns() - epoch`` as an unsigned big-endian 64-bit integer; the
monotonic clock is one clock for every process on the machine, so a publisher in one worker process
and a subscriber in another measure the same interval.
"""

from __future__ import annotations

from array import array

from midge.codec import encode
from midge.codec.packets import MQTT5, Publish

#: Bytes of the send timestamp at the start of every payload.
TS_LEN = 8
#: The smallest payload that can carry the timestamp.
MIN_PAYLOAD = TS_LEN

_PUBLISH = 3
_PUBACK = 4
_PUBREC = 5
_PUBREL = 6
_PUBCOMP = 7
_CONNACK = 2
_SUBACK = 9
_PINGRESP = 13
_DISCONNECT = 14


class ProtocolFailure(Exception):
    """The broker sent something the generator did not ask for (or refused what it asked)."""


class PublishTemplate:
    """One publisher's PUBLISH, encoded once; only the timestamp and packet id change per message.

    ``head`` is everything before the timestamp (fixed header, topic, packet id, v5 property
    length), ``tail`` the payload padding after it. ``pid_offset`` is where the packet identifier
    sits in the packet, or -1 at QoS 0.
    """

    __slots__ = ("head", "pid_offset", "qos", "size", "tail")

    def __init__(self, topic: str, payload_size: int, qos: int, version: int) -> None:
        if payload_size < MIN_PAYLOAD:
            raise ValueError(f"payload must be at least {MIN_PAYLOAD} bytes (the send timestamp)")
        packet = encode(
            Publish(topic, bytes(payload_size), qos, packet_id=0xA1B2 if qos else None), version
        )
        ts_offset = len(packet) - payload_size
        self.head = packet[:ts_offset]
        self.tail = packet[ts_offset + TS_LEN :]
        self.size = len(packet)
        self.qos = qos
        if qos:
            # The packet identifier precedes the v5 property length (one 0 byte: no properties).
            self.pid_offset = ts_offset - 2 - (1 if version == MQTT5 else 0)
            assert packet[self.pid_offset : self.pid_offset + 2] == b"\xa1\xb2"
        else:
            self.pid_offset = -1

    def one(self, ts: int) -> bytes:
        """A single packet stamped ``ts`` (packet id 0xA1B2 at QoS > 0: patch it)."""
        return self.head + ts.to_bytes(TS_LEN) + self.tail

    def batch(self, count: int, ts: int, first_pid: int) -> tuple[bytes | bytearray, int]:
        """``count`` packets stamped ``ts``, numbered from ``first_pid``; and the next free id.

        Packet identifiers run 1..65535 and wrap; the caller's in-flight window (< 65535) keeps an
        identifier from being reused while its acknowledgement is outstanding (MQTT-2.2.1-3).
        """
        one = self.head + ts.to_bytes(TS_LEN) + self.tail
        if self.pid_offset < 0:
            return one * count, first_pid
        buf = bytearray(one * count)
        offset = self.pid_offset
        size = self.size
        pid = first_pid
        for _ in range(count):
            buf[offset] = pid >> 8
            buf[offset + 1] = pid & 0xFF
            offset += size
            pid = pid + 1 if pid < 65535 else 1
        return buf, pid


def _ack(first: int, pid: bytes) -> bytes:
    return bytes((first, 2)) + pid


class Reader:
    """Parses one connection's incoming stream in a single pass per chunk (sans-IO).

    :meth:`feed` returns the bytes to send back (acknowledgements), possibly empty. Counters:
    ``delivered`` PUBLISH packets received; ``completed`` of our own QoS 1/2 PUBLISHes whose flow
    finished (PUBACK, or PUBCOMP); ``refused`` acknowledgements with a v5 failure reason code.
    ``lat`` when not None receives ``now - timestamp`` of every delivery (the caller sets it only
    during the measured window). ``ack_lat`` likewise receives, for each PUBACK (QoS 1) or PUBREC
    (QoS 2) of our own PUBLISHes, ``now`` minus the send time the caller recorded for its packet
    identifier in ``sent_ts``: the publisher's ack latency, which for a durable broker includes
    the commit (issue 5). ``connack`` and ``suback`` hold the last such answer.
    """

    __slots__ = (
        "ack_lat",
        "completed",
        "connack",
        "delivered",
        "disconnect",
        "lat",
        "refused",
        "rest",
        "sent_ts",
        "suback",
        "ts_mask",
        "v5",
    )

    def __init__(self, version: int) -> None:
        self.v5 = version == MQTT5
        self.rest = b""
        self.delivered = 0
        self.completed = 0
        self.refused = 0
        self.lat: array[int] | None = None
        self.ack_lat: array[int] | None = None
        self.sent_ts: array[int] | None = None  # by packet identifier, set by the publisher
        self.ts_mask = 0xFFFF  # sent_ts is indexed by packet identifier & ts_mask
        self.connack: int | None = None
        self.suback: bytes | None = None
        self.disconnect: int | None = None

    def feed(self, data: bytes, now: int) -> bytes:
        """Consume ``data`` (received at ``now``, epoch-relative ns); return the bytes to send."""
        if self.rest:
            data = self.rest + data
        n = len(data)
        i = 0
        out: list[bytes] | None = None
        lat = self.lat
        v5 = self.v5
        delivered = 0
        while i + 1 < n:
            b0 = data[i]
            rl = data[i + 1]
            if rl < 128:
                start = i + 2
            else:
                # A multi-byte Remaining Length (MQTT 1.5.5): at most 4 bytes.
                rl &= 0x7F
                shift = 7
                j = i + 2
                while True:
                    if j >= n:
                        self.rest = data[i:]
                        self.delivered += delivered
                        return b"".join(out) if out else b""
                    b = data[j]
                    rl |= (b & 0x7F) << shift
                    j += 1
                    if b < 128:
                        break
                    shift += 7
                    if shift > 21:
                        raise ProtocolFailure("malformed Remaining Length from the broker")
                start = j
            end = start + rl
            if end > n:
                break
            kind = b0 >> 4
            if kind == _PUBLISH:
                delivered += 1
                qos = (b0 >> 1) & 3
                j = start + 2 + ((data[start] << 8) | data[start + 1])
                if qos:
                    pid = data[j : j + 2]
                    j += 2
                    if out is None:
                        out = []
                    out.append(_ack(0x40 if qos == 1 else 0x50, pid))
                if v5:
                    plen = data[j]
                    if plen < 128:
                        j += 1 + plen
                    else:
                        j += 1
                        plen &= 0x7F
                        shift = 7
                        while True:
                            b = data[j]
                            j += 1
                            plen |= (b & 0x7F) << shift
                            if b < 128:
                                break
                            shift += 7
                        j += plen
                if lat is not None and end - j >= TS_LEN:
                    lat.append(now - int.from_bytes(data[j : j + TS_LEN]))
            elif kind in (_PUBACK, _PUBCOMP):
                self.completed += 1
                if rl > 2 and data[start + 2] >= 0x80:
                    self.refused += 1
                if kind == _PUBACK and self.ack_lat is not None and self.sent_ts is not None:
                    ident = (data[start] << 8) | data[start + 1]
                    self.ack_lat.append(now - self.sent_ts[ident & self.ts_mask])
            elif kind == _PUBREC:
                if self.ack_lat is not None and self.sent_ts is not None:
                    ident = (data[start] << 8) | data[start + 1]
                    self.ack_lat.append(now - self.sent_ts[ident & self.ts_mask])
                if rl > 2 and data[start + 2] >= 0x80:
                    # A refused QoS 2 message ends here (MQTT 5.0 4.3.3): no PUBREL.
                    self.completed += 1
                    self.refused += 1
                else:
                    if out is None:
                        out = []
                    out.append(_ack(0x62, data[start : start + 2]))
            elif kind == _PUBREL:
                if out is None:
                    out = []
                out.append(_ack(0x70, data[start : start + 2]))
            elif kind == _CONNACK:
                self.connack = data[start + 1]
            elif kind == _SUBACK:
                # Packet id, then (v5) properties, then one reason code per filter: keep the last.
                self.suback = data[end - 1 : end]
            elif kind == _DISCONNECT:
                self.disconnect = data[start] if rl else 0
            elif kind != _PINGRESP:
                raise ProtocolFailure(f"unexpected packet type {kind} from the broker")
            i = end
        self.rest = data[i:] if i < n else b""
        self.delivered += delivered
        return b"".join(out) if out else b""
