"""UTF-8 string validation for MQTT strings (3.1.1 section 1.5.3, 5.0 section 1.5.4).

The spec requires well-formed UTF-8 without surrogates (MQTT-1.5.3-1 / MQTT-1.5.4-1) and without
U+0000 (MQTT-1.5.3-2 / MQTT-1.5.4-2); a receiver MAY also close on control characters and
non-characters. Mosquitto 2 (``lib/utf8_mosq.c``, ``mosquitto_validate_utf8``) rejects all of them:
U+0000..U+001F, U+007F..U+009F, U+FDD0..U+FDEF and every U+xFFFE / U+xFFFF. We do the same, so a
client sees the same behaviour from midge as from Mosquitto. U+FEFF is an ordinary character and is
kept (MQTT-1.5.3-3 / MQTT-1.5.4-3).

Python's strict ``utf-8`` codec already rejects malformed sequences, overlong forms, surrogates and
code points above U+10FFFF; one precompiled regex search finds the rest, with no Python loop.
"""

from __future__ import annotations

import re

from midge.codec.reasons import MalformedPacket

_NONCHARS = "".join(
    f"\\U{(plane << 16) | 0xFFFE:08x}\\U{(plane << 16) | 0xFFFF:08x}" for plane in range(17)
)
#: Code points MQTT forbids (U+0000) or Mosquitto refuses (controls and non-characters).
FORBIDDEN = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\ufdd0-\\ufdef{_NONCHARS}]")


def has_forbidden(text: str) -> bool:
    """True if ``text`` contains a code point in :data:`FORBIDDEN`.

    Pure-ASCII text (nearly every topic) needs no regex: its only forbidden characters are the
    C0 controls and DEL, exactly the ASCII characters ``str.isprintable`` rejects. The regex's
    character class is slow to scan (it is tested range by range for every character).
    """
    if text.isascii():
        return not text.isprintable()
    return FORBIDDEN.search(text) is not None


def decode_utf8(data: bytes) -> str:
    """Decode an MQTT UTF-8 string; raise :class:`MalformedPacket` if it is not acceptable."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("string is not well-formed UTF-8 (MQTT-1.5.4-1)") from None
    if has_forbidden(text):
        raise MalformedPacket("string contains U+0000, a control character or a non-character")
    return text


def is_valid_utf8_text(text: str) -> bool:
    """True if ``text`` may be sent as an MQTT string (encodable and no forbidden code points)."""
    if has_forbidden(text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True
