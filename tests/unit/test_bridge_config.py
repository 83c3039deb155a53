"""Bridge configuration (``connection`` sections, ``[[bridge]]`` tables) and the topic mapping,
with Mosquitto 2.0's rules: defaults, ``topic`` lines with ``""`` placeholders, the checks of
config__check, and bridge__remap_topic_in / the outgoing remapping."""

from __future__ import annotations

import socket

import pytest

from midge.bridge.bridge import remap_in, remap_out
from midge.bridge.options import BridgeTopic, topic_line
from midge.config import ConfigError, parse_mosquitto_conf, parse_toml
from midge.config.errors import BadValue


def conf(text: str) -> object:
    return parse_mosquitto_conf(text, "test.conf")


def conf_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_mosquitto_conf(text, "test.conf")
    return str(info.value)


def test_defaults_are_mosquittos() -> None:
    c = parse_mosquitto_conf("connection up\naddress example.org\ntopic a/#\n")
    (b,) = c.bridges
    host = socket.gethostname()
    assert b.addresses == [("example.org", 1883)]
    assert b.remote_clientid == f"{host}.up" and b.local_clientid == f"local.{host}.up"
    assert b.notification_topic == f"$SYS/broker/connection/{host}.up/state"
    assert (b.keepalive_interval, b.idle_timeout, b.threshold) == (60, 60, 10)
    assert b.restart_timeout == (5, 30) and b.start_type == "automatic"
    assert b.try_private and b.notifications and b.bridge_attempt_unsubscribe
    assert b.bridge_outgoing_retain and not b.cleansession and b.clean_local is False
    assert b.bridge_protocol_version == "mqttv311"
    assert b.topics == [BridgeTopic("a/#", "out", 0, None, None)]


def test_every_directive_and_the_aliases() -> None:
    c = parse_mosquitto_conf(
        "\n".join(
            [
                "connection one",
                "addresses 10.0.0.1:1884 [::1]:1885 host3",
                "round_robin true",
                "start_type lazy",
                "restart_timeout 2 40",
                "idle_timeout 5",
                "threshold 3",
                "keepalive_interval 30",
                "clientid remote-one",
                "local_clientid here-one",
                "username ru",
                "password rp",
                "local_username lu",
                "local_password lp",
                "cleansession true",
                "local_cleansession false",
                "try_private false",
                "notifications false",
                "notification_topic state/one",
                "notifications_local_only true",
                "topic # both 2",
                "bridge_protocol_version mqttv50",
                "bridge_outgoing_retain false",
                "bridge_max_packet_size 10000",
                "bridge_attempt_unsubscribe false",
                "bridge_bind_address 127.0.0.1",
                "bridge_cafile /ca.pem",
                "bridge_certfile /c.pem",
                "bridge_keyfile /k.pem",
                "bridge_insecure true",
                "bridge_tls_version tlsv1.2",
                "bridge_alpn mqtt",
                "connection two",
                "address h",
                "topic x",
                "restart_timeout 0",
            ]
        )
        + "\n"
    )
    one, two = c.bridges
    assert one.addresses == [("10.0.0.1", 1884), ("::1", 1885), ("host3", 1883)]
    assert one.round_robin and one.start_type == "lazy" and one.restart_timeout == (2, 40)
    assert (one.idle_timeout, one.threshold, one.keepalive_interval) == (5, 3, 30)
    assert (one.remote_clientid, one.local_clientid) == ("remote-one", "here-one")
    assert (one.remote_username, one.remote_password) == ("ru", "rp")
    assert (one.local_username, one.local_password) == ("lu", "lp")
    assert one.cleansession and one.clean_local is False and not one.try_private
    assert not one.notifications and one.notification_topic == "state/one"
    assert one.notifications_local_only and one.bridge_protocol_version == "mqttv50"
    assert not one.bridge_outgoing_retain and one.bridge_max_packet_size == 10000
    assert not one.bridge_attempt_unsubscribe and one.bridge_bind_address == "127.0.0.1"
    assert one.tls and one.bridge_insecure and one.bridge_tls_version == "tlsv1.2"
    assert one.bridge_alpn == "mqtt"
    assert two.restart_timeout == (1, 1)  # below 1: 1 s, as Mosquitto


def test_toml_bridge_tables() -> None:
    c = parse_toml(
        '[[bridge]]\nconnection = "up"\naddress = ["a:1884", "b"]\n'
        'topic = ["t/# in 1 here/ there/", "\\"\\" out 2 l/x r/y"]\nrestart_timeout = "3 9"\n'
        "cleansession = true\n",
        "test.toml",
    )
    (b,) = c.bridges
    assert b.addresses == [("a", 1884), ("b", 1883)] and b.restart_timeout == (3, 9)
    assert b.topics == [
        BridgeTopic("t/#", "in", 1, "here/", "there/"),
        BridgeTopic(None, "out", 2, "l/x", "r/y"),
    ]
    assert b.cleansession


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("address h\n", "must follow a 'connection NAME' line"),
        ("connection a\ntopic x\n", "has no remote address"),
        ("connection a\naddress h\n", "has no topics"),
        ("connection a\naddress h\ntopic x\nconnection a\n", "duplicate bridge name"),
        ("connection a\naddress h:0\n", "invalid port"),
        ("connection a\naddress h\naddress i\n", "already given"),
        ("connection a\naddress h\ntopic x sideways\n", "invalid bridge topic direction"),
        ("connection a\naddress h\ntopic x in 3\n", "invalid bridge QoS level"),
        ('connection a\naddress h\ntopic "" in 1 l/\n', "invalid bridge remapping"),
        ("connection a\naddress h\ntopic x in 1 l/+\n", "invalid bridge topic local prefix"),
        ("connection a\naddress h\ntopic x\nrestart_timeout 9 3\n", "cap is lower"),
        ("connection a\naddress h\ntopic x\nstart_type sometimes\n", "automatic, lazy, once"),
        ("connection a\naddress h\ntopic x\nbridge_psk 00\n", "TLS-PSK"),
        (
            "connection a\naddress h\ntopic x\nlocal_clientid same\n"
            "connection b\naddress h\ntopic x\nlocal_clientid same\n",
            "is not unique",
        ),
    ],
)
def test_errors_name_the_line_and_the_fix(text: str, message: str) -> None:
    error = conf_error(text)
    assert message in error and error.startswith("test.conf:")


def test_topic_lines_as_mosquitto_reads_them() -> None:
    assert topic_line("a/#") == BridgeTopic("a/#", "out", 0, None, None)
    assert topic_line("a/# IN 1") == BridgeTopic("a/#", "in", 1, None, None)
    assert topic_line('a/# both 2 "" r/') == BridgeTopic("a/#", "both", 2, None, "r/")
    assert topic_line("a/# out 1 l/ # a comment") == BridgeTopic("a/#", "out", 1, "l/", None)
    with pytest.raises(BadValue):
        topic_line("a/# out 1 l/ r/ extra")


def test_remapping_both_ways() -> None:
    topics = [
        topic_line("sensors/# out 1 local/ site1/"),
        topic_line("cmd/# in 1 ctl/ central/"),
        topic_line('"" both 0 here/x there/y'),
        topic_line("plain/+ both"),
    ]
    assert remap_out(topics, "local/sensors/t") == ("site1/sensors/t", topics[0])
    assert remap_out(topics, "ctl/cmd/x") is None  # an in pattern
    assert remap_out(topics, "here/x") == ("there/y", topics[2])
    assert remap_out(topics, "plain/a") == ("plain/a", topics[3])
    assert remap_out(topics, "other") is None
    assert remap_in(topics, "central/cmd/reboot") == "ctl/cmd/reboot"
    assert remap_in(topics, "site1/sensors/t") is None  # an out pattern
    assert remap_in(topics, "there/y") == "here/x"
    assert remap_in(topics, "plain/b") == "plain/b"


def test_the_examples_of_docs_bridges_md_read_the_same() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "bridges.md").read_text()
    central, edge = re.findall(r"```\n(.*?)```", doc, re.S)[:2]
    (toml_text,) = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert parse_mosquitto_conf(central).bridges == []
    (conf_bridge,) = parse_mosquitto_conf(edge).bridges
    (toml_bridge,) = parse_toml(toml_text).bridges
    assert conf_bridge.topics == toml_bridge.topics
    assert conf_bridge.addresses == toml_bridge.addresses == [("127.0.0.1", 1884)]
    assert remap_out(conf_bridge.topics, "sensors/temp") == (
        "factory1/sensors/temp",
        conf_bridge.topics[0],
    )
    assert remap_in(conf_bridge.topics, "commands/edge1/reboot") == "commands/reboot"


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ('connection = "two"\naddress = "h:0"\ntopic = "x"\n', "m.toml:7: address: invalid port"),
        ('connection = "two"\nadress = "h"\n', "m.toml:7: unknown bridge option 'adress'"),
        ('connection = "two"\ntopic = "x"\n', "m.toml:6: bridge 'two' has no remote address"),
        ('address = "h"\n', "m.toml:5: [[bridge]] needs a name"),
        ('connection = "up"\n', "m.toml:6: duplicate bridge name 'up'"),
    ],
)
def test_toml_bridge_problem_names_its_line(tail: str, expected: str) -> None:
    """A [[bridge]] problem names the line of its key (or of its table), not just the file."""
    text = '[[bridge]]\nconnection = "up"\naddress = "h"\ntopic = "x"\n[[bridge]]\n' + tail
    with pytest.raises(ConfigError) as info:
        parse_toml(text, "m.toml")
    assert str(info.value).startswith(expected)


def test_restart_timeout_backoff() -> None:
    """``restart_timeout BASE CAP``: the waits between attempts grow from BASE (less jitter)
    towards CAP and stay there; one value: always that wait."""
    from types import SimpleNamespace

    from midge.bridge.bridge import Bridge

    def delays(text: str, n: int = 8) -> list[float]:
        (cfg,) = parse_mosquitto_conf(f"connection a\naddress h\ntopic x\n{text}\n").bridges
        backoff = Bridge._backoff(SimpleNamespace(cfg=cfg))  # type: ignore[arg-type]
        return [backoff.delay(attempt) for attempt in range(n)]

    assert delays("restart_timeout 7") == [7.0] * 8
    grown = delays("restart_timeout 2 20")
    ceilings = [2, 4, 8, 16, 20, 20, 20, 20]
    assert all(c / 2 <= d <= c for d, c in zip(grown, ceilings, strict=True)), grown
