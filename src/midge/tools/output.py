"""How ``midge sub`` and ``midge rr`` print a message: byte for byte what mosquitto_sub 2.0.11
prints for the same message and flags (``-v``, ``-N``, ``-F FORMAT``, ``--pretty``).

Written from mosquitto_sub's documented and observed behaviour, quirks included: a field width on
``%p`` also truncates the payload to that many bytes; ``%-p`` (no width) pads with as many spaces
as the payload is long; ``%j``'s payload ends at the first NUL byte; the JSON ``tst`` is
``YYYY-MM-DDTHH:MM:SS.uuuuuuZ`` followed by the local UTC offset. JSON is printed as cJSON prints
it (mosquitto_sub is linked against cJSON): ``\\uXXXX`` only for control characters, other bytes
as they are, tabs for ``--pretty``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from midge.client import Message
from midge.codec.properties import Prop

#: Property names as mosquitto spells them (``-D`` and the JSON ``properties`` object).
PROPERTY_NAMES: dict[int, str] = {p.value: p.name.lower().replace("_", "-") for p in Prop}
PROPERTY_NAMES[Prop.ASSIGNED_CLIENT_IDENTIFIER] = "assigned-client-identifier"

_INT_MAX = 2**31 - 1


@dataclass(slots=True)
class OutputOptions:
    format: bytes | None = None
    verbose: bool = False
    eol: bool = True
    pretty: bool = False


class _Clock:
    """The time of one message, read once when first needed (as mosquitto does per message)."""

    __slots__ = ("_now",)

    def __init__(self) -> None:
        self._now: tuple[time.struct_time, int] | None = None

    def get(self) -> tuple[time.struct_time, int]:
        if self._now is None:
            ns = time.time_ns()
            self._now = (time.localtime(ns // 1_000_000_000), ns % 1_000_000_000)
        return self._now


def render(message: Message, options: OutputOptions) -> tuple[bytes, list[str]]:
    """The bytes to write for ``message`` and any error lines for stderr."""
    if options.format is not None:
        return _formatted(message, options)
    payload = message.payload
    if options.verbose:
        if payload:
            return message.topic.encode() + b" " + payload + (b"\n" if options.eol else b""), []
        return (message.topic.encode() + b" (null)\n" if options.eol else b""), []
    if payload:
        return payload + (b"\n" if options.eol else b""), []
    return b"", []


def _c_int(value: int) -> int:
    """An unsigned 32-bit value read as a C int."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value > _INT_MAX else value


def _int(value: int, align: str, pad: str, width: int) -> bytes:
    if width == 0:
        return str(value).encode()
    if align == "-":
        return f"{value:<{width}d}".encode()
    if pad == "0":
        return f"{value:0{width}d}".encode()
    return f"{value:>{width}d}".encode()


def _str(value: bytes, align: str, width: int, precision: int) -> bytes:
    if precision >= 0:
        value = value[:precision]
    if len(value) >= width:
        return value
    fill = b" " * (width - len(value))
    return value + fill if align == "-" else fill + value


def _payload(payload: bytes, hexmode: int, align: str, pad: str, width: int) -> bytes:
    n = len(payload)
    if width > 0:
        n = min(n, width)
        if hexmode:
            n //= 2
            padlen = width - n * 2
        else:
            padlen = width - n
    else:
        padlen = width - n
    data = payload[:n]
    if hexmode == 1:
        data = data.hex().encode()
    elif hexmode == 2:
        data = data.hex().upper().encode()
    out = b""
    if align != "-" and padlen > 0:
        out += pad.encode() * padlen
    out += data
    if align == "-":
        out += b" " * abs(padlen)  # printf("%*s", padlen, ""): a negative width left-justifies
    return out


def _first(props: dict[int, Any], prop: Prop) -> Any:
    value = props.get(prop)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _spec(
    message: Message,
    options: OutputOptions,
    spec: str,
    align: str,
    pad: str,
    width: int,
    precision: int,
    clock: _Clock,
    errors: list[str],
) -> bytes:
    props = message.properties
    if spec == "%":
        return b"%"
    if spec in "AEFS":
        prop = {
            "A": Prop.TOPIC_ALIAS,
            "E": Prop.MESSAGE_EXPIRY_INTERVAL,
            "F": Prop.PAYLOAD_FORMAT_INDICATOR,
            "S": Prop.SUBSCRIPTION_IDENTIFIER,
        }[spec]
        value = _first(props, prop)
        if value is None:
            return pad.encode() * width
        return _int(_c_int(value), align, pad, width)
    if spec == "C":
        value = props.get(Prop.CONTENT_TYPE)
        if value is None:
            return b" " * width
        return _str(value.encode(), align, width, precision)
    if spec == "D":
        data = props.get(Prop.CORRELATION_DATA)
        return bytes(data) if data is not None else b""
    if spec == "I":
        now, _ = clock.get()
        return _str(time.strftime("%Y-%m-%dT%H:%M:%S%z", now).encode(), align, width, precision)
    if spec in "jJ":
        now, ns = clock.get()
        try:
            return json_message(message, now, ns, escaped=spec == "j", pretty=options.pretty)
        except ValueError:
            errors.append(f"Error: Message payload is not valid JSON on topic {message.topic}.")
            return b""
    if spec == "l":
        return _int(len(message.payload), align, pad, width)
    if spec == "m":
        return _int(message.packet_id or 0, align, pad, width)
    if spec == "P":
        pairs = props.get(Prop.USER_PROPERTY) or []
        return b" ".join(f"{k}:{v}".encode() for k, v in pairs)
    if spec == "p":
        return _payload(message.payload, 0, align, pad, width)
    if spec == "q":
        return bytes([message.qos + 48])
    if spec == "R":
        value = props.get(Prop.RESPONSE_TOPIC)
        return b"" if value is None else _str(value.encode(), align, width, precision)
    if spec == "r":
        return b"1" if message.retain else b"0"
    if spec == "t":
        return _str(message.topic.encode(), align, width, precision)
    if spec == "U":
        now, ns = clock.get()
        return f"{time.strftime('%s', now)}.{ns:09d}".encode()
    if spec == "x":
        return _payload(message.payload, 1, align, pad, width)
    if spec == "X":
        return _payload(message.payload, 2, align, pad, width)
    return b""


_ESCAPES = {
    "\\": b"\\",
    "0": b"\0",
    "a": b"\a",
    "e": b"\033",
    "n": b"\n",
    "r": b"\r",
    "t": b"\t",
    "v": b"\v",
}


def _formatted(message: Message, options: OutputOptions) -> tuple[bytes, list[str]]:
    assert options.format is not None
    fmt = options.format.decode("latin-1")  # one character per byte
    n = len(fmt)
    out: list[bytes] = []
    errors: list[str] = []
    clock = _Clock()  # @ conversions share one time per message
    i = 0
    while i < n:
        c = fmt[i]
        if c == "%":
            align, pad, width, precision = "", " ", 0, -1
            if i < n - 1:
                i += 1
                if fmt[i] == "-":
                    align = "-"
                    if i < n - 1:
                        i += 1
                if fmt[i] == "0":
                    pad = "0"
                    if i < n - 1:
                        i += 1
                while i < n - 1 and fmt[i].isdigit():
                    width = width * 10 + int(fmt[i])
                    i += 1
                if fmt[i] == "." and i < n - 1:
                    i += 1
                    precision = 0
                    while i < n - 1 and fmt[i].isdigit():
                        precision = precision * 10 + int(fmt[i])
                        i += 1
                # each % conversion reads the time afresh
                out.append(
                    _spec(message, options, fmt[i], align, pad, width, precision, _Clock(), errors)
                )
        elif c == "@":
            if i < n - 1:
                i += 1
                if fmt[i] == "@":
                    out.append(b"@")
                else:
                    now, ns = clock.get()
                    if fmt[i] == "N":
                        out.append(f"{ns:09d}".encode())
                    else:
                        out.append(_strftime("%" + fmt[i], now))
        elif c == "\\":
            if i < n - 1:
                i += 1
                out.append(_ESCAPES.get(fmt[i], b""))
        else:
            out.append(fmt[i].encode("latin-1"))
        i += 1
    if options.eol:
        out.append(b"\n")
    return b"".join(out), errors


def _strftime(spec: str, now: time.struct_time) -> bytes:
    try:
        return time.strftime(spec, now).encode("utf-8", "surrogateescape")
    except ValueError:
        return b""


# ---------------------------------------------------------------------------------------------
# JSON, as cJSON prints it


class _Pairs(list[tuple[str, Any]]):
    """A JSON object with its keys in order, duplicates kept (as cJSON keeps them)."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def parse_json(payload: bytes) -> Any:
    """Parse as cJSON does for ``%J``: one value, numbers as doubles, duplicate keys kept."""
    text = payload.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    return json.loads(text, object_pairs_hook=_Pairs, parse_int=float, parse_constant=_no_constants)


def _json_string(value: bytes) -> bytes:
    out = bytearray(b'"')
    for b in value:
        if b == 0x22:
            out += b'\\"'
        elif b == 0x5C:
            out += b"\\\\"
        elif b < 32:
            out += {8: b"\\b", 12: b"\\f", 10: b"\\n", 13: b"\\r", 9: b"\\t"}.get(b, b"\\u%04x" % b)
        else:
            out.append(b)
    out += b'"'
    return bytes(out)


def _json_number(d: float) -> bytes:
    if math.isnan(d) or math.isinf(d):
        return b"null"
    text = f"{d:1.15g}"
    if abs(float(text) - d) > max(abs(float(text)), abs(d)) * 2.220446049250313e-16:
        text = f"{d:1.17g}"
    return text.encode()


def _encode(value: Any) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def dump_json(value: Any, pretty: bool, depth: int = 0) -> bytes:
    if value is None:
        return b"null"
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if isinstance(value, (int, float)):
        return _json_number(float(value))
    if isinstance(value, (str, bytes)):
        return _json_string(_encode(value))
    if isinstance(value, _Pairs):
        if not pretty:
            items = [_json_string(_encode(k)) + b":" + dump_json(v, False) for k, v in value]
            return b"{" + b",".join(items) + b"}"
        inner = b"\t" * (depth + 1)
        items = [
            inner + _json_string(_encode(k)) + b":\t" + dump_json(v, True, depth + 1)
            for k, v in value
        ]
        return (
            b"{\n"
            + b"".join(item + b",\n" for item in items[:-1])
            + (items[-1] + b"\n" if items else b"")
            + b"\t" * depth
            + b"}"
        )
    if isinstance(value, list):
        sep = b", " if pretty else b","
        return b"[" + sep.join(dump_json(v, pretty, depth + 1) for v in value) + b"]"
    raise TypeError(type(value))


def json_message(
    message: Message, now: time.struct_time, ns: int, *, escaped: bool, pretty: bool
) -> bytes:
    """``%j`` (payload as a string) or ``%J`` (payload as JSON; ValueError if it is not)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", now) + f".{ns // 1000:06d}Z"
    stamp += time.strftime("%z", now)
    root = _Pairs(
        [
            ("tst", stamp),
            ("topic", message.topic),
            ("qos", message.qos),
            ("retain", int(message.retain)),
            ("payloadlen", len(message.payload)),
        ]
    )
    if message.qos > 0:
        root.append(("mid", message.packet_id or 0))
    if message.properties:
        root.append(("properties", _json_properties(message.properties)))
    payload: Any
    if escaped:
        payload = message.payload.split(b"\0", 1)[0] if message.payload else None
    elif message.payload:
        if b"\0" in message.payload:
            raise ValueError("NUL in the payload")
        payload = parse_json(message.payload)
    else:
        payload = None
    root.append(("payload", payload))
    return dump_json(root, pretty)


def _json_properties(props: dict[int, Any]) -> _Pairs:
    out = _Pairs()
    users: _Pairs | None = None
    for key, value in props.items():
        name = PROPERTY_NAMES.get(key, "")
        if key in (
            Prop.PAYLOAD_FORMAT_INDICATOR,
            Prop.MESSAGE_EXPIRY_INTERVAL,
            Prop.TOPIC_ALIAS,
            Prop.CONTENT_TYPE,
            Prop.RESPONSE_TOPIC,
        ):
            out.append((name, value))
        elif key == Prop.CORRELATION_DATA:
            out.append((name, bytes(value).split(b"\0", 1)[0]))
        elif key == Prop.SUBSCRIPTION_IDENTIFIER:
            for ident in value if isinstance(value, list) else [value]:
                out.append((name, ident))
        elif key == Prop.USER_PROPERTY:
            if users is None:
                users = _Pairs()
                out.append(("user-properties", users))
            users.extend(value)
    return out
