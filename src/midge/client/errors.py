"""The one error type of :mod:`midge.client`: every failure carries an MQTT reason code."""

from __future__ import annotations

from collections.abc import Sequence

from midge.codec.packets import Properties
from midge.codec.properties import Prop
from midge.codec.reasons import V5_TO_V3_CONNACK, ConnackV3, Reason

#: MQTT 3.1.1 CONNACK return codes as the MQTT 5 reason code that means the same.
V3_TO_V5_CONNACK: dict[int, int] = {
    ConnackV3.UNACCEPTABLE_PROTOCOL_VERSION: Reason.UNSUPPORTED_PROTOCOL_VERSION,
    ConnackV3.IDENTIFIER_REJECTED: Reason.CLIENT_IDENTIFIER_NOT_VALID,
    ConnackV3.SERVER_UNAVAILABLE: Reason.SERVER_UNAVAILABLE,
    ConnackV3.BAD_USERNAME_OR_PASSWORD: Reason.BAD_USER_NAME_OR_PASSWORD,
    ConnackV3.NOT_AUTHORIZED: Reason.NOT_AUTHORIZED,
}
assert all(V5_TO_V3_CONNACK[v5] == v3 for v3, v5 in V3_TO_V5_CONNACK.items())


def reason_name(code: int) -> str:
    try:
        return Reason(code).name
    except ValueError:
        return f"0x{code:02X}"


class MQTTError(Exception):
    """A failure of the client, always with an MQTT 5 reason code.

    ``reason_code`` is what the server sent (a CONNACK refusal, a PUBACK/PUBREC/SUBACK failure, a
    DISCONNECT) or, for failures found on this side, the code that names them: 0x80 Unspecified
    error for a lost connection, 0x95 Packet too large for a PUBLISH over the server's maximum,
    0x87 Not authorized for a server that fails SCRAM's proof. ``packet`` says which packet
    carried it ("CONNACK", "DISCONNECT", "PUBACK", ..., or "" for local failures);
    ``properties`` are that packet's (Reason String, Server Reference, User Property ...).
    For an MQTT 3.1.1 CONNACK, ``return_code`` keeps the original 1-5 and ``reason_code`` is the
    MQTT 5 code that means the same (2 -> 0x85 ...). For a SUBACK, ``reason_codes`` has the
    code of every filter (some may have been granted).
    """

    def __init__(
        self,
        reason_code: int,
        message: str = "",
        *,
        packet: str = "",
        properties: Properties | None = None,
        return_code: int | None = None,
        reason_codes: Sequence[int] = (),
        packet_id: int | None = None,
    ) -> None:
        self.reason_code = reason_code
        self.packet = packet
        self.properties: Properties = properties or {}
        self.return_code = return_code
        self.reason_codes = list(reason_codes)
        #: The Packet Identifier of a refused PUBLISH (PUBACK / PUBREC >= 0x80).
        self.packet_id = packet_id
        text = f"{packet + ' ' if packet else ''}{reason_name(reason_code)} (0x{reason_code:02X})"
        reason_string = self.properties.get(Prop.REASON_STRING)
        if reason_string:
            text += f": {reason_string}"
        if message:
            text += f": {message}"
        super().__init__(text)

    @property
    def reason_string(self) -> str | None:
        value = self.properties.get(Prop.REASON_STRING)
        return value if isinstance(value, str) else None

    @property
    def server_reference(self) -> str | None:
        """The Server Reference of a 0x9C Use another server / 0x9D Server moved (MQTT 5 4.11)."""
        value = self.properties.get(Prop.SERVER_REFERENCE)
        return value if isinstance(value, str) else None


class ConnectionLost(MQTTError):
    """The network connection ended without a DISCONNECT saying why (reason 0x80)."""

    def __init__(self, message: str = "connection lost") -> None:
        super().__init__(Reason.UNSPECIFIED_ERROR, message)
