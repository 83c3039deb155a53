"""midge sub's output and command line, without processes. The side-by-side comparison with
mosquitto_sub is tests/interop/test_cli_tools.py; these pin the quirks it relies on."""

from __future__ import annotations

import json
import time

import pytest

from midge.client import Message, Prop
from midge.tools.options import UsageError, parse
from midge.tools.output import OutputOptions, json_message, render


def _out(message: Message, fmt: str, eol: bool = True, pretty: bool = False) -> bytes:
    data, errors = render(message, OutputOptions(format=fmt.encode(), eol=eol, pretty=pretty))
    assert errors == []
    return data


MSG = Message(
    "a/b",
    b"hello world",
    1,
    False,
    {
        Prop.CONTENT_TYPE: "text/plain",
        Prop.USER_PROPERTY: [("k", "v"), ("k2", "v2")],
        Prop.MESSAGE_EXPIRY_INTERVAL: 4294967295,
    },
    packet_id=7,
)


def test_widths_and_quirks() -> None:
    assert (
        _out(MSG, "%5p|%-p|%08l|%-4m|%4x") == b"hello|hello world           |00000011|7   |6865\n"
    )
    assert _out(MSG, "%.3t|%6.2t|%-6t|%10C|%.4C|%R|%S|%3S|%E") == (
        b"a/b|    a/|a/b   |text/plain|text|||   |-1\n"
    )
    assert _out(MSG, "%P|%q%r|%%|@@|\\t\\0\\\\", eol=False) == b"k:v k2:v2|10|%|@|\t\0\\"


def test_plain_and_verbose() -> None:
    empty = Message("t", b"", 0, True, {})
    assert render(MSG, OutputOptions())[0] == b"hello world\n"
    assert render(MSG, OutputOptions(verbose=True, eol=False))[0] == b"a/b hello world"
    assert render(empty, OutputOptions())[0] == b""
    assert render(empty, OutputOptions(verbose=True))[0] == b"t (null)\n"


def test_json_is_valid_json_lines() -> None:
    now = time.localtime(0)
    line = json_message(MSG, now, 123456789, escaped=True, pretty=False)
    doc = json.loads(line)
    assert doc["tst"].startswith("1970-01-01T") or doc["tst"].startswith("1969-12-31T")
    assert doc["tst"][19:27] == ".123456Z"
    assert (doc["topic"], doc["qos"], doc["mid"], doc["payload"]) == ("a/b", 1, 7, "hello world")
    assert doc["properties"]["user-properties"] == {"k": "v", "k2": "v2"}
    binary = Message("t", b'a"\\\x01\nb\0c', 0, False, {})
    doc = json.loads(json_message(binary, now, 0, escaped=True, pretty=False))
    assert doc["payload"] == 'a"\\\x01\nb' and "mid" not in doc  # cut at the NUL, as cJSON
    raw = json_message(Message("t", b'{"a": [1, 2.5e3, -0.0]}', 0, False, {}), now, 0,
                       escaped=False, pretty=False)  # fmt: skip
    assert raw.endswith(b'"payload":{"a":[1,2500,-0]}}')
    with pytest.raises(ValueError):
        json_message(Message("t", b"not json", 0, False, {}), now, 0, escaped=False, pretty=False)


def test_invalid_json_payload_is_reported() -> None:
    data, errors = render(Message("t", b"{", 0, False, {}), OutputOptions(format=b"<%J>"))
    assert data == b"<>\n" and errors == ["Error: Message payload is not valid JSON on topic t."]


def test_command_line() -> None:
    opts = parse(
        "sub",
        ["-t", "a", "-t", "b", "-V", "mqttv5", "-x", "-1", "-c", "-i", "me", "-D", "connect",
         "user-property", "k", "v", "-D", "subscribe", "subscription-identifier", "3"],
    )  # fmt: skip
    assert opts.topics == ["a", "b"] and opts.session_expiry == 0xFFFFFFFF and not opts.clean
    assert opts.props("connect") == {Prop.USER_PROPERTY: [("k", "v")]}
    opts = parse("pub", ["-L", "mqtt://u:p%40ss@example.org:1884/some/topic", "-n"])
    assert (opts.host, opts.port, opts.username, opts.password) == (
        "example.org",
        1884,
        "u",
        "p@ss",
    )
    assert opts.topics == ["some/topic"] and opts.pub_mode == "n"
    assert parse("sub", ["-t", "x", "--ws"]).ws
    for bad in (
        ["-t", "x", "-F", "%Z"],
        ["-t", "x", "-F", "%"],
        ["-t", "x", "-R", "--retained-only"],
        ["-t", "x", "-c"],
        ["-t", "x", "-D", "publish", "content-type", "x"],  # -D needs MQTT 5
        ["-t", "x", "-m", "not for sub"],
    ):
        with pytest.raises(UsageError):
            parse("sub", bad)
    assert parse("sub", ["-t", "x", "--json"]).output.format == b"%j"
    with pytest.raises(UsageError, match="Only one type"):
        parse("pub", ["-t", "x", "-m", "a", "-n"])


def test_bad_tls_files_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    from midge.tools.commands import main

    assert main("sub", ["-t", "x", "--cafile", "/nonexistent/ca.crt"]) == 1
    assert "Problem setting TLS options" in capsys.readouterr().err
    assert main("pub", ["-t", "x", "-n", "--cafile", "/nonexistent", "--cert", "c"]) == 1
    capsys.readouterr()
    assert main("sub", ["-t", "x", "--psk", "00", "--psk-identity", "me"]) == 1
    assert "TLS-PSK" in capsys.readouterr().err
