"""The ``-d`` / ``--debug`` lines of ``midge pub``, ``midge sub`` and ``midge rr``: the lines
libmosquitto's log callback gives mosquitto_pub, mosquitto_sub and mosquitto_rr (2.0.11), one per
packet sent or received, printed on standard output among the messages.

:class:`DebugLog` is the :class:`midge.client.Client`'s ``packet_hook``. What it mirrors of
libmosquitto:

* the client is named by its identifier, ``(null)`` while it has none (an empty identifier in
  MQTT 3.1.1), and by the Assigned Client Identifier from an MQTT 5 CONNACK on;
* a message identifier ("Mid", "m") for every PUBLISH sent, QoS 0 included (libmosquitto counts
  them with the same counter as QoS 1/2 ones, SUBSCRIBE and UNSUBSCRIBE); a received QoS 0
  PUBLISH shows ``m0``;
* one SUBSCRIBE (UNSUBSCRIBE) line per topic filter, all with the packet's Mid;
* the topic of a PUBLISH whose topic is a Topic Alias is the topic the alias stands for;
* ``mosquitto_sub -d`` adds ``Subscribed (mid: M): Q, Q...`` after each SUBACK (not with
  ``--quiet``);
* a line is cut at the length of its printf format plus 499 bytes, as libmosquitto's buffer is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from midge.codec.packets import (
    Auth,
    Connack,
    Connect,
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
    Unsuback,
    Unsubscribe,
)
from midge.codec.properties import Prop

_SENDING = "Client %s sending PUBLISH (d%d, q%d, r%d, m%d, '%s', ... (%ld bytes))"
_RECEIVED = "Client %s received PUBLISH (d%d, q%d, r%d, m%d, '%s', ... (%ld bytes))"


def _line(fmt: str, *args: object) -> bytes:
    """printf(fmt, args) into libmosquitto's buffer: strlen(fmt) + 500 bytes, NUL included."""
    return (fmt % args).encode()[: len(fmt.encode()) + 499] + b"\n"


def _stdout(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except OSError:  # a closed pipe: the message output notices and stops
        pass


class DebugLog:
    """Prints a ``-d`` line for each packet; ``client_id`` is the identifier the CONNECT
    carries (read when CONNECT is sent)."""

    def __init__(
        self,
        client_id: Callable[[], str],
        subscribed_lines: bool,
        write: Callable[[bytes], None] = _stdout,
    ) -> None:
        self._client_id = client_id
        self._subscribed_lines = subscribed_lines
        self._write = write
        self.name = "(null)"
        self._mid = 0
        self._aliases: tuple[dict[int, str], dict[int, str]] = ({}, {})

    def __call__(self, sent: bool, packet: Packet) -> None:
        data = self.lines(sent, packet)
        if data:
            self._write(data)

    def _topic(self, sent: bool, packet: Publish) -> str:
        alias = packet.properties.get(Prop.TOPIC_ALIAS)
        if alias is None:
            return packet.topic
        aliases = self._aliases[sent]
        if packet.topic:
            aliases[alias] = packet.topic
            return packet.topic
        return aliases.get(alias, "")

    def lines(self, sent: bool, packet: Packet) -> bytes:
        name = self.name
        if sent:
            if isinstance(packet, Publish):
                if packet.packet_id is None:
                    self._mid = self._mid % 65535 + 1
                    mid = self._mid
                else:
                    mid = self._mid = packet.packet_id
                return _line(
                    _SENDING,
                    name,
                    packet.dup,
                    packet.qos,
                    packet.retain,
                    mid,
                    self._topic(True, packet),
                    len(packet.payload),
                )
            if isinstance(packet, Puback):
                return _line(
                    "Client %s sending PUBACK (m%d, rc%d)",
                    name,
                    packet.packet_id,
                    packet.reason_code,
                )
            if isinstance(packet, Pubrec):
                return _line(
                    "Client %s sending PUBREC (m%d, rc%d)",
                    name,
                    packet.packet_id,
                    packet.reason_code,
                )
            if isinstance(packet, Pubrel):
                return _line("Client %s sending PUBREL (m%d)", name, packet.packet_id)
            if isinstance(packet, Pubcomp):
                return _line("Client %s sending PUBCOMP (m%d)", name, packet.packet_id)
            if isinstance(packet, Subscribe):
                self._mid = packet.packet_id
                fmt = "Client %s sending SUBSCRIBE (Mid: %d, Topic: %s, QoS: %d, Options: 0x%02x)"
                return b"".join(
                    _line(
                        fmt,
                        name,
                        packet.packet_id,
                        s.topic_filter,
                        s.qos,
                        _options(s.no_local, s.retain_as_published, s.retain_handling),
                    )
                    for s in packet.subscriptions
                )
            if isinstance(packet, Unsubscribe):
                self._mid = packet.packet_id
                fmt = "Client %s sending UNSUBSCRIBE (Mid: %d, Topic: %s)"
                return b"".join(_line(fmt, name, packet.packet_id, t) for t in packet.topic_filters)
            if isinstance(packet, Connect):
                self.name = name = self._client_id() or "(null)"
                return _line("Client %s sending CONNECT", name)
            if isinstance(packet, Disconnect):
                return _line("Client %s sending DISCONNECT", name)
            if isinstance(packet, Pingreq):
                return _line("Client %s sending PINGREQ", name)
            return b""  # AUTH: libmosquitto logs none
        if isinstance(packet, Publish):
            return _line(
                _RECEIVED,
                name,
                packet.dup,
                packet.qos,
                packet.retain,
                packet.packet_id or 0,
                self._topic(False, packet),
                len(packet.payload),
            )
        if isinstance(packet, Puback | Pubcomp):
            kind = "PUBACK" if isinstance(packet, Puback) else "PUBCOMP"
            return _line(
                "Client %s received %s (Mid: %d, RC:%d)",
                name,
                kind,
                packet.packet_id,
                packet.reason_code,
            )
        if isinstance(packet, Pubrec):
            return _line("Client %s received PUBREC (Mid: %d)", name, packet.packet_id)
        if isinstance(packet, Pubrel):
            return _line("Client %s received PUBREL (Mid: %d)", name, packet.packet_id)
        if isinstance(packet, Suback):
            out = _line("Client %s received SUBACK", name)
            if self._subscribed_lines:
                codes = ", ".join(str(c) for c in packet.reason_codes)
                out += f"Subscribed (mid: {packet.packet_id}): {codes}\n".encode()
            return out
        if isinstance(packet, Unsuback):
            return _line("Client %s received UNSUBACK", name)
        if isinstance(packet, Connack):
            assigned = packet.properties.get(Prop.ASSIGNED_CLIENT_IDENTIFIER)
            if assigned:
                self.name = name = assigned
            return _line("Client %s received CONNACK (%d)", name, packet.reason_code)
        if isinstance(packet, Pingresp):
            return _line("Client %s received PINGRESP", name)
        if isinstance(packet, Disconnect):
            return _line("Received DISCONNECT (%d)", packet.reason_code)
        if isinstance(packet, Auth):
            return _line("Client %s received AUTH", name)
        return b""


def _options(no_local: bool, retain_as_published: bool, retain_handling: int) -> int:
    """The subscription options byte without its QoS bits (MQTT 5 3.8.3.1)."""
    return (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | retain_handling << 4
