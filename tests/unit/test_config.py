"""The configuration readers: mosquitto.conf (Mosquitto 2.0 semantics) and midge's TOML.

Every option is read in both formats; every error names file:line, the option and the fix. The
Debian-style file at the end is one the real Mosquitto 2.0 accepts (checked by running it when
``mosquitto`` is installed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from midge.config import (
    DEFAULT_LOG_TYPES,
    LOG_TYPES,
    UNLIMITED_PACKET_SIZE,
    UNSUPPORTED_OPTIONS,
    Config,
    ConfigError,
    ListenerConfig,
    apply_cli_overrides,
    load_config,
    parse_mosquitto_conf,
    parse_toml,
    resolve_listener,
)
from midge.config.docs import render


def conf(text: str, path: str = "test.conf") -> Config:
    return parse_mosquitto_conf(text, path)


def toml(text: str, path: str = "test.toml") -> Config:
    return parse_toml(text, path)


def conf_error(text: str, path: str = "test.conf") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_mosquitto_conf(text, path)
    return info.value


def toml_error(text: str, path: str = "test.toml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_toml(text, path)
    return info.value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------------
# Defaults


def test_defaults_match_mosquitto_2() -> None:
    c = Config()
    assert c.max_inflight_messages == 20
    assert c.max_inflight_bytes == 0
    assert c.max_queued_messages == 1000
    assert c.max_queued_bytes == 0
    assert c.queue_qos0_messages is False
    assert c.persistent_client_expiration is None
    assert c.max_keepalive == 65535
    assert c.max_packet_size == 0 and c.effective_max_packet_size == UNLIMITED_PACKET_SIZE
    assert c.message_size_limit == 0
    assert c.retain_available is True
    assert c.upgrade_outgoing_qos is False
    assert c.set_tcp_nodelay is False
    assert c.allow_zero_length_clientid is True
    assert c.auto_id_prefix == "auto-"
    assert c.per_listener_settings is False
    assert c.log_dest == ["stderr"]
    assert c.log_type == ["error", "warning", "notice", "information"]
    assert c.log_timestamp is True
    assert c.log_timestamp_format is None
    assert c.connection_messages is True
    assert c.pid_file is None
    assert c.connect_timeout == 10.0
    assert c.batch_window == 0.0  # midge only: no window, every packet handled as it arrives
    assert c.local_only is True
    # Mosquitto 2 with no listener: port 1883 on the loopback only.
    assert c.listeners == [ListenerConfig(port=1883, host="127.0.0.1")]
    lst = ListenerConfig()
    assert (lst.protocol, lst.max_connections, lst.socket_domain) == ("mqtt", -1, None)


def test_config_accepts_overrides_directly() -> None:
    c = Config(max_qos=1, listeners=[ListenerConfig(port=0)])
    assert c.max_qos == 1 and c.listeners[0].port == 0


@pytest.mark.parametrize("text", ["", "# only a comment\n\n   \n", "\n\n"])
def test_empty_files_give_the_defaults(text: str) -> None:
    for c in (conf(text), toml(text)):
        assert c.listeners == [ListenerConfig()]
        assert c.local_only is True
        assert c.log_dest == ["stderr"]


# --------------------------------------------------------------------------------------------
# Every global option, in both formats

GLOBALS: list[tuple[str, str, str, Any]] = [
    # (mosquitto.conf line, TOML line, Config field, expected value)
    ("max_inflight_messages 5", "max_inflight_messages = 5", "max_inflight_messages", 5),
    ("max_inflight_messages 0", "max_inflight_messages = 0", "max_inflight_messages", 0),
    ("max_inflight_bytes 4096", "max_inflight_bytes = 4096", "max_inflight_bytes", 4096),
    ("max_queued_messages 50", "max_queued_messages = 50", "max_queued_messages", 50),
    ("max_queued_bytes 100000", "max_queued_bytes = 100000", "max_queued_bytes", 100000),
    ("queue_qos0_messages true", "queue_qos0_messages = true", "queue_qos0_messages", True),
    ("memory_limit 1048576", "memory_limit = 1048576", "memory_limit", 1048576),
    (
        "persistent_client_expiration 2h",
        'persistent_client_expiration = "2h"',
        "persistent_client_expiration",
        7200,
    ),
    (
        "persistent_client_expiration 14d",
        'persistent_client_expiration = "14d"',
        "persistent_client_expiration",
        14 * 86400,
    ),
    (
        "persistent_client_expiration 1w",
        'persistent_client_expiration = "1w"',
        "persistent_client_expiration",
        7 * 86400,
    ),
    (
        "persistent_client_expiration 2m",
        'persistent_client_expiration = "2m"',
        "persistent_client_expiration",
        60 * 86400,
    ),
    (
        "persistent_client_expiration 1y",
        'persistent_client_expiration = "1y"',
        "persistent_client_expiration",
        365 * 86400,
    ),
    ("max_keepalive 60", "max_keepalive = 60", "max_keepalive", 60),
    ("max_keepalive 0", "max_keepalive = 0", "max_keepalive", 0),
    ("max_keepalive 65535", "max_keepalive = 65535", "max_keepalive", 65535),
    ("max_packet_size 1024", "max_packet_size = 1024", "max_packet_size", 1024),
    ("max_packet_size 20", "max_packet_size = 20", "max_packet_size", 20),
    ("message_size_limit 500", "message_size_limit = 500", "message_size_limit", 500),
    (
        "message_size_limit 268435455",
        "message_size_limit = 268435455",
        "message_size_limit",
        268435455,
    ),
    ("retain_available false", "retain_available = false", "retain_available", False),
    ("upgrade_outgoing_qos true", "upgrade_outgoing_qos = true", "upgrade_outgoing_qos", True),
    ("set_tcp_nodelay true", "set_tcp_nodelay = true", "set_tcp_nodelay", True),
    (
        "allow_zero_length_clientid false",
        "allow_zero_length_clientid = false",
        "allow_zero_length_clientid",
        False,
    ),
    ("auto_id_prefix gen-", 'auto_id_prefix = "gen-"', "auto_id_prefix", "gen-"),
    ("log_timestamp false", "log_timestamp = false", "log_timestamp", False),
    (
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        'log_timestamp_format = "%Y-%m-%dT%H:%M:%S"',
        "log_timestamp_format",
        "%Y-%m-%dT%H:%M:%S",
    ),
    ("connection_messages false", "connection_messages = false", "connection_messages", False),
    (
        "pid_file /run/midge/midge.pid",
        'pid_file = "/run/midge/midge.pid"',
        "pid_file",
        "/run/midge/midge.pid",
    ),
    (
        "scram_file /etc/midge/users.scram",
        'scram_file = "/etc/midge/users.scram"',
        "scram_file",
        "/etc/midge/users.scram",
    ),
    ("per_listener_settings true", "per_listener_settings = true", "per_listener_settings", True),
    ("connect_timeout 3", "connect_timeout = 3", "connect_timeout", 3.0),
    ("connect_timeout 0.5", "connect_timeout = 0.5", "connect_timeout", 0.5),
    ("batch_window 0.005", "batch_window = 0.005", "batch_window", 0.005),
    ("batch_window 0", "batch_window = 0", "batch_window", 0.0),
    ("max_qos 1\nlistener 1884", "max_qos = 1", "max_qos", 2),  # see the listener tests
    ("log_dest stdout", 'log_dest = "stdout"', "log_dest", ["stdout"]),
    ("log_dest none", 'log_dest = "none"', "log_dest", []),
    ("log_type debug", 'log_type = "debug"', "log_type", ["debug"]),
    ("log_type all", 'log_type = "all"', "log_type", [*LOG_TYPES, "websockets"]),
    ("log_type none", 'log_type = "none"', "log_type", []),
]


@pytest.mark.parametrize(("conf_line", "toml_line", "name", "expected"), GLOBALS)
def test_global_option_in_both_formats(
    conf_line: str, toml_line: str, name: str, expected: Any
) -> None:
    assert getattr(conf(conf_line + "\n"), name) == expected
    if name != "max_qos":
        assert getattr(toml(toml_line + "\n"), name) == expected


def test_toml_global_max_qos_and_max_topic_alias_are_listener_defaults() -> None:
    c = toml("max_qos = 1\nmax_topic_alias = 4\n[[listener]]\nport = 1884\n")
    assert (c.max_qos, c.max_topic_alias) == (1, 4)
    assert c.listeners[0].max_qos is None
    resolved = resolve_listener(c, c.listeners[0])
    assert (resolved.max_qos, resolved.max_topic_alias) == (1, 4)


@pytest.mark.parametrize(
    ("word", "value"), [("true", True), ("1", True), ("false", False), ("0", False)]
)
def test_mosquitto_booleans(word: str, value: bool) -> None:
    assert conf(f"retain_available {word}\n").retain_available is value


def test_toml_persistent_client_expiration_as_seconds() -> None:
    assert toml("persistent_client_expiration = 90\n").persistent_client_expiration == 90


def test_negative_counts_mean_no_limit_as_in_mosquitto() -> None:
    c = conf(
        "max_queued_messages -1\nmax_queued_bytes -5\nmax_inflight_bytes -1\n"
        "max_inflight_messages -1\nlistener 1883\nmax_connections -7\n"
    )
    assert (c.max_queued_messages, c.max_queued_bytes, c.max_inflight_bytes) == (0, 0, 0)
    assert c.max_inflight_messages == 0
    assert c.listeners[0].max_connections == -1
    # Mosquitto: max_inflight_messages 65535 also means "no maximum".
    assert conf("max_inflight_messages 65535\n").max_inflight_messages == 0


def test_message_size_limit_notice_like_mosquitto() -> None:
    c = conf("\nmessage_size_limit 10\n")
    assert any("test.conf:2" in n and "max_packet_size" in n for n in c.notices)


# --------------------------------------------------------------------------------------------
# Syntax


def test_comments_blank_lines_whitespace_and_crlf() -> None:
    text = (
        "# a comment\r\n"
        "\r\n"
        "   max_queued_messages 7   \r\n"
        "\t# an indented comment\r\n"
        "auto_id_prefix   two words  \r\n"
        "max_inflight_messages 3 # trailing comment after a one-word value\r\n"
    )
    c = conf(text)
    assert c.max_queued_messages == 7
    assert c.auto_id_prefix == "two words"  # strings run to the end of the line, trimmed
    assert c.max_inflight_messages == 3


def test_tab_after_option_name() -> None:
    assert conf("max_queued_messages\t9\n").max_queued_messages == 9


def test_option_names_are_case_sensitive() -> None:
    err = conf_error("Max_Qos 1\n")
    assert str(err).startswith("test.conf:1: unknown option 'Max_Qos'")
    assert "did you mean 'max_qos'?" in str(err)


def test_maximum_qos_is_mosquittos_alias() -> None:
    assert conf("listener 1883\nmaximum_qos 0\n").listeners[0].max_qos == 0


# --------------------------------------------------------------------------------------------
# Listeners


def test_listener_blocks_take_the_options_after_them() -> None:
    c = conf(
        "listener 1883\n"
        "max_connections 10\n"
        "max_qos 1\n"
        "max_topic_alias 0\n"
        "protocol mqtt\n"
        "socket_domain ipv4\n"
        "listener 8883 127.0.0.1\n"
        "socket_domain ipv6\n"
        "max_topic_alias 65535\n"
    )
    first, second = c.listeners
    assert first == ListenerConfig(
        port=1883,
        host=None,
        max_connections=10,
        max_qos=1,
        max_topic_alias=0,
        socket_domain="ipv4",
    )
    assert second == ListenerConfig(
        port=8883, host="127.0.0.1", max_topic_alias=65535, socket_domain="ipv6"
    )
    assert c.local_only is False


def test_toml_listener_tables() -> None:
    c = toml(
        """
[[listener]]
port = 1883
max_connections = 10
max_qos = 1
max_topic_alias = 0
protocol = "mqtt"
socket_domain = "ipv4"

[[listener]]
port = 8883
address = "127.0.0.1"
socket_domain = "ipv6"

[[listener]]
port = 0
host = "::1"
"""
    )
    assert c.listeners == [
        ListenerConfig(
            port=1883,
            host=None,
            max_connections=10,
            max_qos=1,
            max_topic_alias=0,
            socket_domain="ipv4",
        ),
        ListenerConfig(port=8883, host="127.0.0.1", socket_domain="ipv6"),
        ListenerConfig(port=0, host="::1"),
    ]
    assert c.local_only is False


def test_listener_without_address_is_every_address_and_port_0_is_allowed() -> None:
    c = conf("listener 0\nlistener 1883 # all addresses\nlistener 1884 ::1 # loopback\n")
    assert [(x.port, x.host) for x in c.listeners] == [(0, None), (1883, None), (1884, "::1")]


def test_legacy_port_and_bind_address_configure_the_default_listener() -> None:
    c = conf("port 1884\nbind_address 127.0.0.1\n")
    assert [(x.port, x.host) for x in c.listeners] == [(1884, "127.0.0.1")]
    assert c.local_only is False
    assert any("'port' is deprecated" in n for n in c.notices)
    assert any("'bind_address' is deprecated" in n for n in c.notices)
    # port alone: every address, as Mosquitto does.
    assert [(x.port, x.host) for x in conf("port 1884\n").listeners] == [(1884, None)]
    assert [(x.port, x.host) for x in conf("bind_address ::1\n").listeners] == [(1883, "::1")]


def test_default_listener_comes_after_explicit_listeners() -> None:
    c = conf("port 1884\nlistener 1885\n")
    assert [x.port for x in c.listeners] == [1885, 1884]


def test_listener_option_before_any_listener_creates_the_default_listener() -> None:
    # Mosquitto: options before the first `listener` configure the default listener (1883, every
    # address), which is started because one of them differs from its default.
    c = conf("max_qos 1\nmax_topic_alias 3\nlistener 1884\nmax_qos 0\n")
    assert [(x.port, x.host, x.max_qos, x.max_topic_alias) for x in c.listeners] == [
        (1884, None, 0, None),
        (1883, None, 1, 3),
    ]
    # max_qos 2 and max_connections -1 are the defaults: Mosquitto does not start it for them.
    c = conf("max_qos 2\nmax_connections -1\n")
    assert c.listeners == [ListenerConfig()] and c.local_only is True


def test_option_before_any_listener_that_mosquitto_would_drop_is_an_error() -> None:
    err = conf_error("\nmax_topic_alias 3\nlistener 1884\n")
    assert str(err).startswith("test.conf:2: 'max_topic_alias' before any 'listener' line")
    assert "move it below a 'listener' line" in str(err)


def test_default_listener_clashing_with_an_explicit_one_is_an_error() -> None:
    err = conf_error("max_connections 5\nlistener 1883\n")
    assert str(err).startswith("test.conf:1: 'max_connections' before any 'listener' line")
    assert "test.conf:2" in str(err)


def test_duplicate_listener_is_an_error() -> None:
    err = conf_error("listener 1883\nlistener 1884\nlistener 1883\n")
    assert str(err).startswith("test.conf:3: listener: a listener on port 1883")
    assert "test.conf:1" in str(err)
    err = toml_error("[[listener]]\nport = 1883\n[[listener]]\nport = 1883\n")
    assert str(err).startswith("test.toml:4:")
    # port 0 (any free port) may repeat
    assert len(conf("listener 0\nlistener 0\n").listeners) == 2


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("listener\n", 1, "missing value for 'listener'"),
        ("listener abc\n", 1, "invalid port 'abc'"),
        ("listener 65536\n", 1, "out of range"),
        ("listener 1883 127.0.0.1 extra\n", 1, "expected 'listener PORT [ADDRESS]'"),
        ("listener 1883 /tmp/mqtt.sock\n", 1, "a Unix socket listener is 'listener 0 /tmp"),
        ("listener 0 /tmp/" + "x" * 110 + "\n", 1, "too long (115 bytes, at most 107)"),
        ("listener 0 /a\nlistener 0 /a\n", 2, "listener on the Unix socket /a is already"),
        ("listener 1883\nprotocol mqttsn\n", 2, "invalid protocol 'mqttsn'"),
        ("listener 1883\nsocket_domain ipv5\n", 2, "invalid socket_domain 'ipv5'"),
        ("listener 1883\nmax_qos 3\n", 2, "max_qos: 3 is out of range: expected 0..2"),
        ("listener 1883\nmax_qos -1\n", 2, "out of range"),
        ("listener 1883\nmax_topic_alias 65536\n", 2, "out of range: expected 0..65535"),
        ("listener 1883\nmount_point site1/#\n", 2, "invalid mount_point 'site1/#'"),
        ("mount_point site1/\nlistener 1883\n", 1, "'mount_point' must follow a 'listener'"),
        ("listener 1883\nbind_interface eth0 eth1\n", 2, "invalid interface name 'eth0 eth1'"),
        ("port 70000\n", 1, "out of range"),
        ("port x\n", 1, "invalid value 'x': expected a whole number"),
        ("batch_window 0.2\n", 1, "0.2 is out of range: expected 0..0.1 seconds (0: no window)"),
        ("batch_window -1\n", 1, "out of range"),
    ],
)
def test_listener_errors(text: str, line: int, words: str) -> None:
    err = conf_error(text)
    assert str(err).startswith(f"test.conf:{line}: ")
    assert words in str(err)
    assert err.path == "test.conf" and err.line == line


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[[listener]]\naddress = "x"\n', 1, "[[listener]] needs a port"),
        ("[[listener]]\nport = 70000\n", 2, "out of range"),
        ('[[listener]]\nport = "1883"\n', 2, "'port' must be a whole number, not the string"),
        ('[[listener]]\nport = 1\nsocket_domain = "x"\n', 3, "invalid socket_domain"),
        ("[[listener]]\nport = 1\nmax_qos = 3\n", 3, "expected 0..2"),
        ('[[listener]]\nport = 1\nmount_point = "a/+"\n', 3, "invalid mount_point 'a/+'"),
        ('[[listener]]\nport = 1\naddress = "/run/m.sock"\n', 3, "Unix socket"),
        ('[[listener]]\nport = 1\naddress = "a"\nhost = "b"\n', 4, "not both"),
        (
            "[[listener]]\nport = 1\nmax_conections = 3\n",
            3,
            "unknown listener option 'max_conections'; did you mean 'max_connections'?",
        ),
        ("[listener]\nport = 1\n", 1, "write [[listener]], not [listener]"),
    ],
)
def test_toml_listener_errors(text: str, line: int, words: str) -> None:
    err = toml_error(text)
    assert str(err).startswith(f"test.toml:{line}: "), str(err)
    assert words in str(err)


# --------------------------------------------------------------------------------------------
# per_listener_settings


def test_per_listener_settings_false_makes_security_options_global() -> None:
    c = conf("listener 1883\nallow_zero_length_clientid false\nauto_id_prefix a-\nlistener 1884\n")
    assert c.allow_zero_length_clientid is False and c.auto_id_prefix == "a-"
    assert all(x.allow_zero_length_clientid is None for x in c.listeners)
    for lst in c.listeners:
        resolved = resolve_listener(c, lst)
        assert resolved.allow_zero_length_clientid is False
        assert resolved.auto_id_prefix == "a-"


def test_per_listener_settings_true_scopes_them_to_the_listener() -> None:
    text = (
        "per_listener_settings true\n"
        "listener 1883\n"
        "allow_zero_length_clientid false\n"
        "auto_id_prefix one-\n"
        "listener 1884\n"
        "auto_id_prefix two-\n"
    )
    c = conf(text)
    one, two = c.listeners
    assert (one.allow_zero_length_clientid, one.auto_id_prefix) == (False, "one-")
    assert (two.allow_zero_length_clientid, two.auto_id_prefix) == (None, "two-")
    assert c.allow_zero_length_clientid is True and c.auto_id_prefix == "auto-"
    r1, r2 = (resolve_listener(c, x) for x in c.listeners)
    assert (r1.allow_zero_length_clientid, r1.auto_id_prefix) == (False, "one-")
    assert (r2.allow_zero_length_clientid, r2.auto_id_prefix) == (True, "two-")

    t = toml(
        """
per_listener_settings = true
auto_id_prefix = "site-"
[[listener]]
port = 1883
allow_zero_length_clientid = false
auto_id_prefix = "one-"
[[listener]]
port = 1884
"""
    )
    r1, r2 = (resolve_listener(t, x) for x in t.listeners)
    assert (r1.allow_zero_length_clientid, r1.auto_id_prefix) == (False, "one-")
    assert (r2.allow_zero_length_clientid, r2.auto_id_prefix) == (True, "site-")


def test_per_listener_allow_zero_length_clientid_false_creates_default_listener() -> None:
    c = conf("per_listener_settings true\nallow_zero_length_clientid false\n")
    assert [(x.port, x.host, x.allow_zero_length_clientid) for x in c.listeners] == [
        (1883, None, False)
    ]


def test_per_listener_settings_must_come_before_security_options() -> None:
    err = conf_error("allow_zero_length_clientid false\nper_listener_settings true\n")
    assert str(err).startswith("test.conf:2: per_listener_settings: must be set before")
    # false after them is harmless, as in Mosquitto
    conf("allow_zero_length_clientid false\nper_listener_settings false\n")


def test_toml_per_listener_option_needs_per_listener_settings() -> None:
    err = toml_error('[[listener]]\nport = 1\nauto_id_prefix = "x"\n')
    assert str(err).startswith(
        "test.toml:3: 'auto_id_prefix' in a [[listener]] table needs per_listener_settings = true"
    )


def test_resolve_listener_fills_only_inherited_fields_and_copies() -> None:
    c = Config(max_qos=1, max_topic_alias=7, allow_zero_length_clientid=False, auto_id_prefix="p-")
    lst = ListenerConfig(port=5, host=None, max_qos=0, socket_domain="ipv4")
    r = resolve_listener(c, lst)
    assert r == ListenerConfig(
        port=5,
        host=None,
        max_qos=0,
        max_topic_alias=7,
        allow_zero_length_clientid=False,
        auto_id_prefix="p-",
        socket_domain="ipv4",
    )
    assert r is not lst and lst.max_topic_alias is None


# --------------------------------------------------------------------------------------------
# Logging


def test_log_dest_first_line_replaces_default_later_lines_add() -> None:
    c = conf("log_dest stdout\nlog_dest file /var/log/midge/a b.log\nlog_dest stdout\n")
    assert c.log_dest == ["stdout", "file"]
    assert c.log_file == "/var/log/midge/a b.log"
    c = conf("log_dest stdout\nlog_dest none\nlog_dest stderr\n")
    assert c.log_dest == ["stderr"] and c.log_file is None
    t = toml('log_dest = ["stdout", "file /var/log/midge.log"]\n')
    assert t.log_dest == ["stdout", "file"] and t.log_file == "/var/log/midge.log"


def test_log_dest_syslog_and_topic_and_the_midge_log_options() -> None:
    """Issue 14: ``log_dest syslog`` and ``topic`` (Mosquitto's) are accepted; ``log_format``,
    ``log_level`` and ``log_syslog_socket`` are midge's, in both formats."""
    c = conf(
        "log_dest syslog\nlog_dest topic\nlog_dest stderr\nlog_facility 3\nlog_format json\n"
        "log_level auth=debug, subscribe=none\nlog_syslog_socket /run/log.sock\n"
        "log_timestamp_format iso8601\n"
    )
    assert c.log_dest == ["syslog", "topic", "stderr"] and c.log_facility == 3
    assert c.log_format == "json" and c.log_level == {"auth": "debug", "subscribe": "none"}
    assert c.log_syslog_socket == "/run/log.sock" and c.log_timestamp_format == "iso8601"
    t = toml(
        'log_dest = ["syslog", "topic"]\nlog_facility = 3\nlog_format = "json"\n'
        'log_level = "auth=debug subscribe=none"\n'
    )
    assert t.log_dest == ["syslog", "topic"] and t.log_facility == 3
    assert t.log_format == "json" and t.log_level == c.log_level
    assert Config().log_format == "text" and Config().log_level == {}


def test_log_type_accumulates() -> None:
    c = conf("log_type error\nlog_type subscribe\nlog_type unsubscribe\n")
    assert c.log_type == ["error", "subscribe", "unsubscribe"]
    assert conf("log_type all\nlog_type none\nlog_type warning\n").log_type == ["warning"]
    assert toml('log_type = ["notice", "error"]\n').log_type == ["error", "notice"]
    assert conf("log_timestamp true\n").log_type == list(DEFAULT_LOG_TYPES)


@pytest.mark.parametrize(
    ("conf_text", "toml_text", "words"),
    [
        ("log_dest dlt\n", 'log_dest = "dlt"\n', "'dlt' (the GENIVI"),
        ("log_dest syslog now\n", 'log_dest = "syslog now"\n', "unexpected text 'now'"),
        ("log_format xml\n", 'log_format = "xml"\n', "invalid log_format 'xml'"),
        ("log_level auth=loud\n", 'log_level = "auth=loud"\n', "invalid log_level 'auth=loud'"),
        ("log_level cache=debug\n", 'log_level = "cache=debug"\n', "invalid log_level"),
        ("log_facility 8\n", "log_facility = 8\n", "out of range"),
        ("log_dest printer\n", 'log_dest = "printer"\n', "invalid"),
        ("log_dest file\n", 'log_dest = "file"\n', "needs a path"),
        ("log_dest file /a\nlog_dest file /b\n", 'log_dest = ["file /a", "file /b"]\n', "only one"),
        ("log_type chatter\n", 'log_type = "chatter"\n', "invalid log_type 'chatter'"),
        ("log_dest\n", "log_dest = 3\n", "log_dest"),
    ],
)
def test_logging_errors(conf_text: str, toml_text: str, words: str) -> None:
    err = conf_error(conf_text)
    assert str(err).startswith("test.conf:"), str(err)
    assert words in str(err) or "missing value" in str(err)
    err = toml_error(toml_text)
    assert str(err).startswith("test.toml:1: "), str(err)
    assert words in str(err) or "must be a string or an array of strings" in str(err)


# --------------------------------------------------------------------------------------------
# Value errors (type, range, missing) and unknown options, in both formats


@pytest.mark.parametrize(
    ("conf_text", "toml_text", "words"),
    [
        ("max_queued_messages lots", 'max_queued_messages = "lots"', "whole number"),
        ("max_queued_messages 10abc", "max_queued_messages = 1.5", "whole number"),
        ("retain_available yes", 'retain_available = "yes"', "true or false"),
        ("max_keepalive 65536", "max_keepalive = 65536", "out of range: expected 0..65535"),
        ("max_keepalive -1", "max_keepalive = -1", "out of range"),
        ("max_packet_size 19", "max_packet_size = 19", "less than 20 bytes"),
        ("max_packet_size 0", "max_packet_size = 0", "out of range"),
        ("memory_limit -1", "memory_limit = -1", "out of range: expected at least 0"),
        ("message_size_limit 268435456", "message_size_limit = 268435456", "out of range"),
        ("max_inflight_messages 65536", "max_inflight_messages = 65536", "out of range"),
        (
            "persistent_client_expiration 5s",
            'persistent_client_expiration = "5s"',
            "invalid duration '5s'",
        ),
        (
            "persistent_client_expiration 0d",
            'persistent_client_expiration = "0d"',
            "invalid duration '0d'",
        ),
        (
            "persistent_client_expiration d",
            'persistent_client_expiration = "-1d"',
            "invalid duration",
        ),
        ("connect_timeout 0", "connect_timeout = 0", "greater than 0"),
        ("connect_timeout soon", 'connect_timeout = "soon"', "number of seconds"),
        ("max_queued_messages 10 20", "max_queued_messages = [10]", "max_queued_messages"),
    ],
)
def test_bad_values(conf_text: str, toml_text: str, words: str) -> None:
    err = conf_error("# header\n" + conf_text + "\n")
    assert str(err).startswith("test.conf:2: "), str(err)
    err2 = toml_error("# header\n" + toml_text + "\n")
    assert str(err2).startswith("test.toml:2: "), str(err2)
    assert words in str(err) or words in str(err2)
    name = conf_text.split()[0]
    assert name in str(err) and name in str(err2)


@pytest.mark.parametrize(
    "name",
    [
        "max_inflight_messages",
        "max_keepalive",
        "retain_available",
        "auto_id_prefix",
        "pid_file",
        "scram_file",
        "log_timestamp_format",
        "persistent_client_expiration",
        "max_qos",
        "port",
        "bind_address",
        "include_dir",
        "connect_timeout",
        "log_type",
    ],
)
def test_missing_value(name: str) -> None:
    err = conf_error(f"\n{name}\n")
    assert str(err) == f"test.conf:2: missing value for '{name}'"


def test_string_option_given_twice_is_an_error_as_in_mosquitto() -> None:
    err = conf_error("pid_file /a\npid_file /b\n")
    assert str(err).startswith("test.conf:2: pid_file: given twice (first at test.conf:1)")


def test_unknown_option_with_and_without_suggestion() -> None:
    err = conf_error("\n\nmax_queued_mesages 5\n")
    assert str(err) == (
        "test.conf:3: unknown option 'max_queued_mesages'; did you mean 'max_queued_messages'?"
    )
    assert str(conf_error("frobnicate 1\n")) == "test.conf:1: unknown option 'frobnicate'"
    err = toml_error("a = 1\nretain_avalable = true\n")
    assert str(err).startswith("test.toml:1: unknown option 'a'")
    err = toml_error("retain_avalable = true\n")
    assert "did you mean 'retain_available'?" in str(err)
    err = toml_error("[server]\nport = 1\n")
    assert str(err).startswith("test.toml:1: unknown table [server]")


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_OPTIONS))
def test_unsupported_mosquitto_options_are_named(name: str) -> None:
    err = conf_error(f"\n{name} something\n")
    assert str(err).startswith(f"test.conf:2: '{name}' is not supported yet by midge")
    err = toml_error(f'\n"{name}" = "something"\n')
    assert str(err).startswith(f"test.toml:2: '{name}' is not supported yet by midge")


def test_unsupported_options_say_which_work_brings_them() -> None:
    # persistence_file is supported since issue 11 (test_config_persistence).
    assert "engines" in str(conf_error("tls_engine x\n"))
    assert "has no TLS-PSK support" in str(conf_error("psk_file /etc/mosquitto/psk\n"))
    assert "has no TLS-PSK support" in str(conf_error("bridge_psk abc\n"))
    for c_plugin in ("plugin /usr/lib/x.so\n", "auth_plugin /x.so\n", "auth_opt_db x\n"):
        assert "auth_python" in str(conf_error(c_plugin)), c_plugin
    assert "OCSP" in str(conf_error("bridge_require_ocsp true\n"))
    # Mosquitto's C plugins cannot load in midge: their options say what midge takes instead.
    assert "auth_python_opt_NAME" in str(conf_error("auth_opt_host localhost\n"))
    assert "security" in str(toml_error("plugin_opt_x = 1\n"))


# --------------------------------------------------------------------------------------------
# TOML specifics


def test_toml_complete_example() -> None:
    """The complete example docs/configuration.md shows (taken from its generator, so the page's
    example is the one that must parse) reads into these values."""
    page = render()
    start = page.index("```toml\n", page.index("A complete example:")) + len("```toml\n")
    c = toml(page[start : page.index("```", start)])
    assert c.max_packet_size == 1048576 and c.set_tcp_nodelay is True
    assert c.persistent_client_expiration == 14 * 86400
    assert c.log_dest == ["stderr", "file"] and c.log_file == "/var/log/midge/midge.log"
    assert c.log_timestamp_format == "%Y-%m-%dT%H:%M:%S"
    assert c.pid_file == "/run/midge/midge.pid"
    assert c.listeners == [
        ListenerConfig(port=1883, host=None),
        ListenerConfig(
            port=1884,
            host="127.0.0.1",
            max_connections=100,
            max_qos=1,
            max_topic_alias=0,
            socket_domain="ipv4",
        ),
    ]
    assert c.source == "test.toml"


def test_toml_syntax_error_has_the_line() -> None:
    err = toml_error("max_qos = 1\nretain_available = \n")
    assert str(err).startswith("test.toml:2: invalid TOML:")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("\nmax_connections = 5\n", 2, "'max_connections' is a listener option"),
        ('socket_domain = "ipv4"\n', 1, "'socket_domain' is a listener option"),
        ("port = 1883\n", 1, "configure a [[listener]] table"),
        ('bind_address = "0.0.0.0"\n', 1, "configure a [[listener]] table"),
        ('include_dir = "/etc/midge"\n', 1, "TOML files do not include others"),
        (
            "[[listener]]\nport = 1\n\nmax_queued_messages = 3\n",
            4,
            "'max_queued_messages' is a global option, not a listener option",
        ),
        ("retain_available = 1\n", 1, "'retain_available' must be true or false, not the number"),
        ('auto_id_prefix = ""\n', 1, "'auto_id_prefix' must not be empty"),
        ("connect_timeout = true\n", 1, "number of seconds"),
    ],
)
def test_toml_scope_and_type_errors(text: str, line: int, words: str) -> None:
    err = toml_error(text)
    assert str(err).startswith(f"test.toml:{line}: "), str(err)
    assert words in str(err)


def test_toml_error_line_in_second_listener_table() -> None:
    err = toml_error(
        "[[listener]]\nport = 1883\nmax_qos = 1\n\n[[listener]]\nport = 1884\nmax_qos = 7\n"
    )
    assert str(err).startswith("test.toml:7: max_qos: 7 is out of range")


# --------------------------------------------------------------------------------------------
# include_dir


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_include_dir_reads_conf_files_in_mosquitto_order(tmp_path: Path) -> None:
    inc = tmp_path / "conf.d"
    inc.mkdir()
    # Each file adds one listener; listeners keep the order in which the files were read.
    names = ["b.conf", "A.conf", "01.conf", "a.conf", "B.conf", "00.conf"]
    for i, name in enumerate(names):
        write(inc / name, f"listener {2000 + i}\n")
    write(inc / "ignored.txt", "this is not read\n")
    write(inc / ".conf", "neither is this\n")
    main = write(tmp_path / "mosquitto.conf", f"include_dir {inc}\n")
    c = load_config(str(main))
    order = [names[x.port - 2000] for x in c.listeners]
    # mosquitto.conf(5): 00.conf, 01.conf, A.conf, a.conf, B.conf, b.conf
    assert order == ["00.conf", "01.conf", "A.conf", "a.conf", "B.conf", "b.conf"]


def test_include_dir_options_continue_the_main_file(tmp_path: Path) -> None:
    inc = tmp_path / "conf.d"
    inc.mkdir()
    write(inc / "10-tuning.conf", "max_qos 1\nmax_queued_messages 5\n")
    main = write(tmp_path / "m.conf", f"listener 1883\ninclude_dir {inc}\nlistener 1884\n")
    c = load_config(str(main))
    # the included file continues the current listener block, as in Mosquitto
    assert [(x.port, x.max_qos) for x in c.listeners] == [(1883, 1), (1884, None)]
    assert c.max_queued_messages == 5


def test_include_dir_errors_name_the_included_file(tmp_path: Path) -> None:
    inc = tmp_path / "conf.d"
    inc.mkdir()
    bad = write(inc / "50-bad.conf", "# fine\n\nmax_qos nine\n")
    main = write(tmp_path / "m.conf", f"listener 1883\ninclude_dir {inc}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(main))
    assert str(info.value).startswith(f"{bad}:3: max_qos: invalid value 'nine'")
    assert info.value.path == str(bad) and info.value.line == 3


def test_include_dir_only_in_the_main_file(tmp_path: Path) -> None:
    inc = tmp_path / "conf.d"
    inc.mkdir()
    nested = write(inc / "a.conf", f"include_dir {tmp_path}\n")
    main = write(tmp_path / "m.conf", f"include_dir {inc}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(main))
    assert str(info.value).startswith(f"{nested}:1: include_dir is only allowed in the main")


def test_include_dir_missing_directory(tmp_path: Path) -> None:
    main = write(tmp_path / "m.conf", f"\ninclude_dir {tmp_path / 'nope'}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(main))
    assert str(info.value).startswith(f"{main}:2: include_dir: cannot read directory")


def test_include_dir_must_not_contain_the_main_file(tmp_path: Path) -> None:
    main = write(tmp_path / "m.conf", f"include_dir {tmp_path}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(main))
    assert "contains the main configuration file" in str(info.value)


# --------------------------------------------------------------------------------------------
# load_config and CLI overrides


def test_load_config_picks_the_reader_by_name(tmp_path: Path) -> None:
    t = write(tmp_path / "midge.toml", "max_queued_messages = 3\n")
    m = write(tmp_path / "midge.conf", "max_queued_messages 4\n")
    other = write(tmp_path / "broker.cfg", "max_queued_messages 5\n")
    assert load_config(str(t)).max_queued_messages == 3
    assert load_config(str(m)).max_queued_messages == 4
    assert load_config(str(other)).max_queued_messages == 5
    assert load_config(str(t)).source == str(t)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.conf")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: cannot read configuration file")


def test_cli_ports_replace_the_local_only_listener() -> None:
    base = conf("max_queued_messages 3\n")
    c = apply_cli_overrides(base, None, [1884, 1885], False)
    assert [(x.port, x.host) for x in c.listeners] == [(1884, "127.0.0.1"), (1885, "127.0.0.1")]
    assert base.listeners == [ListenerConfig()]  # the input is not changed
    c = apply_cli_overrides(Config(), "0.0.0.0", [1886], False)
    assert [(x.port, x.host) for x in c.listeners] == [(1886, "0.0.0.0")]
    c = apply_cli_overrides(Config(), "::1", [], False)
    assert [(x.port, x.host) for x in c.listeners] == [(1883, "::1")]


def test_cli_ports_are_ignored_when_the_file_has_listeners() -> None:
    base = conf("listener 1883\n")
    c = apply_cli_overrides(base, None, [1884], False)
    assert [(x.port, x.host) for x in c.listeners] == [(1883, None)]
    assert any("-p 1884 ignored" in n for n in c.notices)
    assert base.notices == []


def test_cli_verbose_turns_on_every_log_type() -> None:
    base = conf("log_type error\n")
    c = apply_cli_overrides(base, None, [], True)
    assert c.verbose is True and c.log_type == list(LOG_TYPES)
    assert base.log_type == ["error"] and base.verbose is False


def test_cli_bad_port() -> None:
    with pytest.raises(ConfigError, match="invalid port 70000"):
        apply_cli_overrides(Config(), None, [70000], False)


# --------------------------------------------------------------------------------------------
# A realistic Debian-style configuration that Mosquitto 2.0 itself accepts

DEBIAN_MAIN = """\
# Place your local configuration in /etc/mosquitto/conf.d/
#
# A full description of the configuration file is at
# /usr/share/doc/mosquitto/examples/mosquitto.conf.example

pid_file {dir}/mosquitto.pid

log_dest file {dir}/mosquitto.log
log_dest stdout
log_type error
log_type warning
log_type notice
log_type information
log_timestamp true
log_timestamp_format %Y-%m-%dT%H:%M:%S

include_dir {dir}/conf.d
"""

DEBIAN_LISTENERS = """\
# The one listener, on the loopback
per_listener_settings false
listener {port} 127.0.0.1
max_connections 100
max_qos 2
max_topic_alias 10
socket_domain ipv4
protocol mqtt
"""

DEBIAN_LIMITS = """\
# Limits, as a site would tune them
allow_zero_length_clientid true
auto_id_prefix auto-
max_inflight_messages 20
max_inflight_bytes 0
max_queued_messages 1000
max_queued_bytes 0
queue_qos0_messages false
persistent_client_expiration 14d
max_keepalive 65535
max_packet_size 1048576
message_size_limit 0
retain_available true
upgrade_outgoing_qos false
set_tcp_nodelay true
connection_messages true
"""


def write_debian(directory: str, port: int) -> str:
    os.makedirs(os.path.join(directory, "conf.d"))
    main = os.path.join(directory, "mosquitto.conf")
    Path(main).write_text(DEBIAN_MAIN.format(dir=directory), encoding="utf-8")
    Path(directory, "conf.d", "listeners.conf").write_text(
        DEBIAN_LISTENERS.format(port=port), encoding="utf-8"
    )
    Path(directory, "conf.d", "limits.conf").write_text(DEBIAN_LIMITS, encoding="utf-8")
    return main


def test_debian_style_mosquitto_conf(tmp_path: Path) -> None:
    main = write_debian(str(tmp_path), 18830)
    c = load_config(main)
    assert c.listeners == [
        ListenerConfig(
            port=18830,
            host="127.0.0.1",
            max_connections=100,
            max_qos=2,
            max_topic_alias=10,
            socket_domain="ipv4",
        )
    ]
    assert c.local_only is False
    assert c.pid_file == f"{tmp_path}/mosquitto.pid"
    assert c.log_dest == ["file", "stdout"] and c.log_file == f"{tmp_path}/mosquitto.log"
    assert c.log_type == list(DEFAULT_LOG_TYPES)
    assert c.log_timestamp_format == "%Y-%m-%dT%H:%M:%S"
    assert c.persistent_client_expiration == 14 * 86400
    assert c.max_packet_size == 1048576 and c.set_tcp_nodelay is True
    assert (c.max_inflight_messages, c.max_queued_messages) == (20, 1000)


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")
def test_real_mosquitto_accepts_the_debian_style_conf() -> None:
    # /tmp and world-writable: Mosquitto started as root drops to the 'mosquitto' user before it
    # writes its pid and log files.
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        os.chmod(directory, 0o777)
        port = free_port()
        main = write_debian(directory, port)
        for root, dirs, files in os.walk(directory):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o777)
        proc = subprocess.Popen(
            [shutil.which("mosquitto") or "mosquitto", "-c", main],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 10
            listening = False
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        listening = True
                        break
                except OSError:
                    time.sleep(0.05)
            assert listening, f"mosquitto did not start: rc={proc.poll()}"
        finally:
            proc.terminate()
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
        assert b"Error" not in out, out.decode(errors="replace")
        # and midge reads the very same files
        assert load_config(main).listeners[0].port == port


def test_auth_plugin_options() -> None:
    c = conf(
        "auth_python mypkg.auth:create\nauth_python_opt_users a:b\nauth_python_opt_mode strict\n"
        "auth_http_url https://auth.example/mqtt\nauth_http_timeout 2.5\nauth_cache_ttl 0\n"
    )
    assert c.auth_python == "mypkg.auth:create"
    assert c.auth_python_options == {"users": "a:b", "mode": "strict"}
    assert (c.auth_http_url, c.auth_http_timeout, c.auth_cache_ttl) == (
        "https://auth.example/mqtt",
        2.5,
        0.0,
    )
    t = parse_toml(
        'auth_python = "mypkg.auth:create"\nauth_http_url = "http://127.0.0.1:8080"\n'
        'auth_http_timeout = 1\nauth_cache_ttl = 30\n[auth_python_options]\nusers = "a:b"\n'
    )
    assert t.auth_python_options == {"users": "a:b"} and t.auth_cache_ttl == 30.0
    assert "expected http://" in str(conf_error("auth_http_url ftp://x\n"))
    assert "auth_cache_ttl" in str(conf_error("auth_cache_ttl -1\n"))


def test_websocket_listeners_in_both_formats() -> None:
    """Issue 13: ``protocol websockets`` (ws, wss with the TLS options), ``http_dir`` per
    listener, ``websockets_headers_size`` and ``websockets_log_level`` globally, ``log_type
    websockets`` accepted; the same in TOML."""
    text = (
        "websockets_headers_size 8192\n"
        "websockets_log_level 255\n"
        "log_type websockets\n"
        "listener 1883\n"
        "listener 8080\n"
        "protocol websockets\n"
        "http_dir /srv/www\n"
        "listener 8081\n"
        "protocol websockets\n"
        "certfile /etc/midge/server.crt\n"
        "keyfile /etc/midge/server.key\n"
    )
    c = conf(text)
    assert [(lst.port, lst.protocol, lst.http_dir) for lst in c.listeners] == [
        (1883, "mqtt", None),
        (8080, "websockets", "/srv/www"),
        (8081, "websockets", None),
    ]
    assert c.listeners[2].tls
    assert (c.websockets_headers_size, c.websockets_log_level) == (8192, 255)
    assert "websockets" in c.log_type
    t = toml(
        'websockets_headers_size = 8192\nwebsockets_log_level = 255\nlog_type = "websockets"\n'
        '[[listener]]\nport = 1883\n[[listener]]\nport = 8080\nprotocol = "websockets"\n'
        'http_dir = "/srv/www"\n'
    )
    assert [(lst.protocol, lst.http_dir) for lst in t.listeners] == [
        ("mqtt", None),
        ("websockets", "/srv/www"),
    ]
    assert (t.websockets_headers_size, t.websockets_log_level) == (8192, 255)
    assert "out of range" in str(conf_error("websockets_headers_size 70000\n"))
    assert "expected mqtt, websockets or http" in str(conf_error("listener 1\nprotocol ws\n"))


def _load_included(path: str) -> object:
    """An include_dir holding ``path`` (the loader of included files)."""
    main = Path(path).parent.parent / "main.conf"
    main.write_text(f"include_dir {Path(path).parent}\n")
    return load_config(str(main))


def _loaders() -> list[tuple[str, Callable[[str], object]]]:
    from midge.auth.acl import load_acl_file
    from midge.auth.passwd import load_password_file
    from midge.auth.scram import load_scram_file

    return [
        ("configuration file", load_config),
        ("included file", _load_included),
        ("password file", load_password_file),
        ("ACL file", load_acl_file),
        ("scram_file", load_scram_file),
    ]


@pytest.mark.parametrize("problem", ["missing", "directory", "latin-1"])
def test_every_file_the_broker_reads_says_what_is_wrong_with_it(
    tmp_path: Path, problem: str
) -> None:
    """The configuration, included, password, ACL and SCRAM files go through one reader, so
    each problem is worded the same way: the file, what it is, and the fix."""
    for what, load in _loaders():
        folder = tmp_path / what.replace(" ", "-") / "conf.d"
        folder.mkdir(parents=True)
        path = folder / "file.conf"
        if problem == "directory":
            path.mkdir()
        elif problem == "latin-1":
            path.write_bytes("# caf\xe9\n".encode("latin-1"))
        elif what == "included file":
            continue  # include_dir lists the files that exist
        with pytest.raises(ConfigError) as info:
            load(str(path))
        err = info.value
        assert err.path == str(path), what
        expected = {
            "missing": f"cannot read {what}: No such file or directory; check the path",
            "directory": f"cannot read {what}: it is a directory",
            "latin-1": f"{what} is not valid UTF-8 (byte 5); save it as UTF-8",
        }[problem]
        assert err.message.startswith(expected), (what, err.message)
