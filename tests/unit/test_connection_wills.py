"""The form of a connection's will in a node's ``{midge:ID}:wills`` hash (midge.store.redis):
the serial that tells one connection of a client id from the next comes first, where the
take-over's Lua script reads it (``^(%d+):``), then the message data and the username."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midge.store.redis import decode_connection_will, encode_connection_will

LUA_SERIAL = re.compile(rb"^(\d+):")  # what string.match(v, '^(%d+):') finds


@given(
    st.integers(min_value=0, max_value=2**63),
    st.tuples(st.text(), st.binary(), st.integers(0, 2), st.booleans()),
    st.one_of(st.none(), st.text()),
)
def test_a_connection_will_reads_back_and_its_serial_is_where_the_script_looks(
    serial: int, data: tuple[str, bytes, int, bool], username: str | None
) -> None:
    raw = encode_connection_will(serial, data, username)
    assert decode_connection_will(raw) == (serial, data, username)
    found = LUA_SERIAL.match(raw)
    assert found is not None and int(found.group(1)) == serial


@pytest.mark.parametrize("raw", [b"", b"12", b"x:abc", b":abc", b"-1:abc"])
def test_what_is_not_a_connection_will_is_refused(raw: bytes) -> None:
    with pytest.raises((ValueError, EOFError)):
        decode_connection_will(raw)
