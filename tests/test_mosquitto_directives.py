"""Mosquitto's client and topic directives (issue 11), driven in memory from a mosquitto.conf:
``clientid_prefixes``, ``use_username_as_clientid``, ``mount_point``,
``allow_duplicate_messages`` (and the overlapping subscriptions it governs) and
``check_retain_source``, including what it needs the SQLite store to keep. The same directives
against the real Mosquitto 2.0.11: tests/differential/test_directives.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from midge.codec.packets import Puback, Publish, Will
from midge.codec.properties import Prop
from midge.codec.reasons import Reason
from midge.config import ConfigError, parse_mosquitto_conf, parse_toml
from tests.memory import DurableMemoryBroker, MemoryBroker
from tests.rawclient import RawClient

NOT_AUTHORIZED_V3 = 5
NOT_AUTHORIZED = 0x87


def broker(*lines: str) -> MemoryBroker:
    """midge in memory, given these mosquitto.conf lines after ``listener 1883``."""
    return MemoryBroker(parse_mosquitto_conf("\n".join(["listener 1883", *lines]) + "\n"))


def refused_with(client: RawClient, client_id: str, **fields: object) -> int:
    """CONNECT; the CONNACK's code (the connection then closes)."""
    ack = client.connect(client_id, **fields)
    client.expect_closed()
    return ack.reason_code


# -- clientid_prefixes --------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "code"), [(4, NOT_AUTHORIZED_V3), (5, NOT_AUTHORIZED)])
def test_clientid_prefixes_refuses_other_ids_as_not_authorized(version: int, code: int) -> None:
    """Only ids starting with the prefix connect (Mosquitto: "not authorized", v3 5 / v5
    0x87); a generated id is checked too."""
    b = broker("allow_anonymous true", "clientid_prefixes secure-")
    assert any("'clientid_prefixes' option is deprecated" in n for n in b.config.notices)
    assert RawClient(b.link(), version=version).connect("secure-1").reason_code == 0
    assert refused_with(RawClient(b.link(), version=version), "other") == code
    assert refused_with(RawClient(b.link(), version=version), "") == code
    b2 = broker("allow_anonymous true", "clientid_prefixes auto-")
    assert RawClient(b2.link(), version=version).connect("").reason_code == 0


# -- use_username_as_clientid -------------------------------------------------------------------


def test_use_username_as_clientid_replaces_the_id_and_assigns_it_to_v5_clients() -> None:
    """The username is the client id; an MQTT 5 client that sent none is told it (Assigned
    Client Identifier, as Mosquitto sends it)."""
    b = broker("allow_anonymous true", "use_username_as_clientid true")
    c = RawClient(b.link(), version=5)
    ack = c.connect5("", username="alice")
    assert ack.properties.get(Prop.ASSIGNED_CLIENT_IDENTIFIER) == "alice"
    d = RawClient(b.link(), version=5)
    ack = d.connect5("given-id", username="bob")
    assert Prop.ASSIGNED_CLIENT_IDENTIFIER not in ack.properties
    assert b.call(lambda: sorted(b.broker.sessions)) == ["alice", "bob"]


@pytest.mark.parametrize(("version", "code"), [(4, NOT_AUTHORIZED_V3), (5, NOT_AUTHORIZED)])
def test_use_username_as_clientid_refuses_a_client_without_username(
    version: int, code: int
) -> None:
    b = broker("allow_anonymous true", "use_username_as_clientid true")
    assert refused_with(RawClient(b.link(), version=version), "some-id") == code


def test_use_username_as_clientid_two_clients_of_one_user_take_over() -> None:
    """Two connections with one username are one client: the second takes the first over
    (v5: DISCONNECT 0x8E Session taken over)."""
    b = broker("allow_anonymous true", "use_username_as_clientid true")
    first = RawClient(b.link(), version=5)
    first.connect5("a", username="alice")
    second = RawClient(b.link(), version=5)
    second.connect5("b", username="alice")
    first.expect_disconnect(0x8E)
    assert b.call(lambda: list(b.broker.sessions)) == ["alice"]


def test_use_username_as_clientid_is_per_listener_and_makes_the_default_listener() -> None:
    """Per listener, whatever per_listener_settings says; before any listener line it configures
    Mosquitto's default listener (port 1883), which it creates."""
    cfg = parse_mosquitto_conf(
        "use_username_as_clientid true\nallow_anonymous true\nlistener 1884\n"
    )
    assert [(lst.port, lst.use_username_as_clientid) for lst in cfg.listeners] == [
        (1884, False),
        (1883, True),
    ]
    b = MemoryBroker(cfg)
    RawClient(b.link(0), version=4).connect("kept", username="u1")
    RawClient(b.link(1), version=4).connect("replaced", username="u2")
    assert b.call(lambda: sorted(b.broker.sessions)) == ["kept", "u2"]
    toml = parse_toml("[[listener]]\nport = 1\nuse_username_as_clientid = true\n")
    assert toml.listeners[0].use_username_as_clientid


def test_use_username_as_clientid_is_the_id_acl_patterns_see(tmp_path: Path) -> None:
    """The id is replaced before authentication: an ACL ``%c`` pattern is the username."""
    acl = tmp_path / "acl"
    acl.write_text("pattern readwrite c/%c/#\n")
    b = broker("allow_anonymous true", f"acl_file {acl}", "use_username_as_clientid true")
    c = RawClient(b.link(), version=5)
    c.connect5("ignored", username="carol")
    c.subscribe("c/carol/#", 1)
    c.pub("c/carol/x", b"mine", qos=1)
    assert c.expect(Publish).topic == "c/carol/x"


# -- mount_point --------------------------------------------------------------------------------


def mounted() -> MemoryBroker:
    """Listener 0 plain, listener 1 with ``mount_point m/``."""
    return MemoryBroker(
        parse_mosquitto_conf("listener 1883\nallow_anonymous true\nlistener 1884\nmount_point m/\n")
    )


@pytest.mark.parametrize("version", [4, 5])
def test_mount_point_prefixes_publishes_and_strips_deliveries(version: int) -> None:
    """A mount listener's client publishes below the mount point, subscribes below it, and is
    sent topics without it; clients of other listeners see the prefixed topics."""
    b = mounted()
    outside = RawClient(b.link(0), version=version)
    outside.connect("outside")
    outside.subscribe("#", 1)
    inside = RawClient(b.link(1), version=version)
    inside.connect("inside")
    inside.subscribe("#", 1)
    inside.pub("t", b"from inside", qos=1)
    seen = [outside.expect(Publish), inside.expect(Publish)]
    assert [(p.topic, p.payload) for p in seen] == [
        ("m/t", b"from inside"),
        ("t", b"from inside"),
    ]
    outside.ack(seen[0])
    inside.ack(seen[1])
    outside.publish("m/a/b", b"to inside", qos=0)
    outside.publish("elsewhere", b"not inside", qos=0)
    assert [p.topic for p in outside.publishes(2)] == ["m/a/b", "elsewhere"]
    got = inside.expect(Publish)
    assert (got.topic, got.payload) == ("a/b", b"to inside")
    inside.no_publish()


def test_mount_point_retained_wills_unsubscribe_and_sys() -> None:
    """Retained messages are kept under the prefixed topic and sent stripped; a will goes
    below the mount point; UNSUBSCRIBE removes the prefixed filter; ``$SYS`` is out of sight."""
    b = mounted()
    outside = RawClient(b.link(0), version=5)
    outside.connect5("outside")
    outside.publish("m/kept", b"r", qos=1, retain=True)
    outside.publish("$SYS/x", b"no", qos=0, retain=True)
    outside.subscribe("m/#", 0)
    assert outside.expect(Publish).topic == "m/kept"
    inside = RawClient(b.link(1), version=5)
    inside.connect5("inside")
    inside.subscribe("+", 0)
    got = inside.expect(Publish)
    assert (got.topic, got.payload, got.retain) == ("kept", b"r", True)
    inside.subscribe("$SYS/#", 0)
    inside.no_publish()
    assert inside.unsubscribe("+").reason_codes == [0x00]
    outside.publish("m/kept2", b"x")
    assert outside.expect(Publish).topic == "m/kept2"
    inside.no_publish()
    dying = RawClient(b.link(1), version=5)
    dying.connect5("dying", will=Will("last", b"bye"))
    dying.close()
    will = outside.expect(Publish)
    assert (will.topic, will.payload) == ("m/last", b"bye")


def test_mount_point_shared_subscriptions_and_topic_aliases() -> None:
    """A shared subscription's filter is mounted (the group is kept); a PUBLISH by Topic Alias
    is mounted like any other."""
    b = mounted()
    inside = RawClient(b.link(1), version=5)
    inside.connect5("inside")
    inside.subscribe("$share/g/s/#", 0)
    outside = RawClient(b.link(0), version=5)
    outside.connect5("outside")
    outside.subscribe("m/#", 0)
    pub = RawClient(b.link(1), version=5)
    pub.connect5("pub")
    pub.send(Publish("s/1", b"a", properties={Prop.TOPIC_ALIAS: 1}))
    pub.send(Publish("", b"b", properties={Prop.TOPIC_ALIAS: 1}))
    assert [(p.topic, p.payload) for p in inside.publishes(2)] == [("s/1", b"a"), ("s/1", b"b")]
    assert [(p.topic, p.payload) for p in outside.publishes(2)] == [
        ("m/s/1", b"a"),
        ("m/s/1", b"b"),
    ]


def test_mount_point_acls_see_the_prefixed_topics(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite m/open/#\ntopic read m/closed/#\n")
    b = MemoryBroker(
        parse_mosquitto_conf(
            f"acl_file {acl}\nlistener 1883\nallow_anonymous true\nlistener 1884\nmount_point m/\n"
        )
    )
    inside = RawClient(b.link(1), version=5)
    inside.connect5("inside")
    # An ACL file grants every SUBSCRIBE (Mosquitto 2.0.11); access is checked per message.
    assert inside.subscribe("open/#", 1).reason_codes == [1]
    assert inside.subscribe("closed/#", 1).reason_codes == [1]
    denied = inside.pub("closed/x", b"no", qos=1)  # m/closed/x: read only
    assert isinstance(denied, Puback) and denied.reason_code == Reason.NOT_AUTHORIZED
    inside.pub("open/x", b"ok", qos=1)  # m/open/x: read and write
    assert inside.expect(Publish).topic == "open/x"


def test_mount_point_errors() -> None:
    with pytest.raises(ConfigError, match="must follow a 'listener' line"):
        parse_mosquitto_conf("mount_point m/\nlistener 1883\n")
    with pytest.raises(ConfigError, match="invalid mount_point 'm/#'"):
        parse_mosquitto_conf("listener 1883\nmount_point m/#\n")
    with pytest.raises(ConfigError, match="given twice"):
        parse_mosquitto_conf("listener 1883\nmount_point a/\nmount_point b/\n")
    toml = parse_toml('[[listener]]\nport = 1\nmount_point = "t1/"\n')
    assert toml.listeners[0].mount_point == "t1/"


# -- overlapping subscriptions and allow_duplicate_messages ---------------------------------------


def overlapping(client: RawClient, v5: bool) -> None:
    """Three subscriptions matching ``o/a/b``, made in an order unlike the delivery order."""
    sid: Callable[[int], dict[int, Any] | None] = (
        (lambda n: {Prop.SUBSCRIPTION_IDENTIFIER: n}) if v5 else (lambda n: None)
    )
    client.subscribe("o/#", 0, properties=sid(1))
    client.subscribe("o/+/b", 2, properties=sid(2))
    client.subscribe("o/a/b", 1, properties=sid(3))


@pytest.mark.parametrize("duplicates", [False, True])
def test_overlapping_subscriptions_of_a_v311_client(duplicates: bool) -> None:
    """allow_duplicate_messages false (Mosquitto's default): one copy at the highest QoS
    (MQTT-3.3.5-1); true: one copy per subscription, at its QoS, in Mosquitto's order."""
    b = broker("allow_anonymous true", f"allow_duplicate_messages {str(duplicates).lower()}")
    assert any("'allow_duplicate_messages' option is deprecated" in n for n in b.config.notices)
    sub = RawClient(b.link(), version=4)
    sub.connect("sub")
    overlapping(sub, v5=False)
    pub = RawClient(b.link(), version=4)
    pub.connect("pub")
    pub.publish("o/a/b", b"x", qos=2)
    if duplicates:
        got = sub.publishes(3)
        assert [p.qos for p in got] == [1, 2, 0]
    else:
        assert [p.qos for p in sub.publishes(1)] == [2]
    sub.no_publish()


def test_overlapping_subscriptions_of_a_v5_client_give_one_copy_each() -> None:
    """MQTT 5 (Mosquitto, whatever allow_duplicate_messages says): one copy per matching
    subscription, each with its QoS and its Subscription Identifier (MQTT-3.3.4-5 v5), in
    Mosquitto's order (exact level, then '+', then '#'); a v3 client of the same broker gets
    one copy."""
    b = broker("allow_anonymous true")
    sub = RawClient(b.link(), version=5)
    sub.connect5("sub5")
    overlapping(sub, v5=True)
    old = RawClient(b.link(), version=4)
    old.connect("sub4")
    overlapping(old, v5=False)
    pub = RawClient(b.link(), version=5)
    pub.connect5("pub")
    pub.publish("o/a/b", b"x", qos=2)
    got = sub.publishes(3)
    assert [(p.qos, p.properties.get(Prop.SUBSCRIPTION_IDENTIFIER)) for p in got] == [
        (1, [3]),
        (2, [2]),
        (0, [1]),
    ]
    assert [p.qos for p in old.publishes(1)] == [2]
    old.no_publish()


# -- check_retain_source --------------------------------------------------------------------------

ACL_OPEN = "user alice\ntopic readwrite r/#\nuser bob\ntopic read r/#\n"
ACL_REVOKED = "user alice\ntopic read r/#\nuser bob\ntopic read r/#\n"


def retained_after_revocation(b: MemoryBroker, acl: Path) -> list[Publish]:
    """alice publishes a retained message, leaves, loses write access; what bob then gets."""
    alice = RawClient(b.link(), version=4)
    alice.connect("alice-id", username="alice")
    alice.publish("r/t", b"kept", qos=1, retain=True)
    alice.disconnect()
    acl.write_text(ACL_REVOKED)
    b.call(b.authenticator.reload)
    bob = RawClient(b.link(), version=4)
    bob.connect("bob-id", username="bob")
    bob.subscribe("r/#", 1)
    return bob.more_publishes(ack=True)


@pytest.mark.parametrize("check", [True, False])
def test_check_retain_source_drops_retained_messages_their_publisher_may_no_longer_write(
    tmp_path: Path, check: bool
) -> None:
    acl = tmp_path / "acl"
    acl.write_text(ACL_OPEN)
    b = broker(
        "allow_anonymous true", f"acl_file {acl}", f"check_retain_source {str(check).lower()}"
    )
    got = retained_after_revocation(b, acl)
    assert [p.payload for p in got] == ([] if check else [b"kept"])


def test_check_retain_source_uses_the_source_listener_with_per_listener_settings(
    tmp_path: Path,
) -> None:
    """Per listener, the publisher's listener's ACL decides (Mosquitto keeps the listener of
    the retained message's source), though the subscriber is on another listener."""
    acl1 = tmp_path / "acl1"
    acl1.write_text("topic readwrite r/#\n")
    acl2 = tmp_path / "acl2"
    acl2.write_text("topic read r/#\n")
    b = MemoryBroker(
        parse_mosquitto_conf(
            "per_listener_settings true\ncheck_retain_source true\n"
            f"listener 1883\nallow_anonymous true\nacl_file {acl1}\n"
            f"listener 1884\nallow_anonymous true\nacl_file {acl2}\n"
        )
    )
    pub = RawClient(b.link(0), version=5)
    pub.connect5("pub")
    pub.publish("r/a", b"written on 1883", qos=1, retain=True)
    sub = RawClient(b.link(1), version=5)
    sub.connect5("sub")
    sub.subscribe("r/#", 0)
    assert sub.expect(Publish).payload == b"written on 1883"
    acl1.write_text("topic read r/#\n")
    b.call(b.authenticator.reload)
    late = RawClient(b.link(1), version=5)
    late.connect5("late")
    late.subscribe("r/#", 0)
    late.no_publish()


def test_check_retain_source_survives_a_restart(tmp_path: Path) -> None:
    """The retained message's source (client id, username, listener) is kept on disk: after a
    restart a revoked publisher's retained message is still withheld, an allowed one sent."""
    acl = tmp_path / "acl"
    acl.write_text(ACL_OPEN + "user carol\ntopic readwrite r/#\n")
    cfg = parse_mosquitto_conf(
        f"listener 1883\nallow_anonymous true\nacl_file {acl}\ncheck_retain_source true\n"
    )
    cfg.max_queued_messages = 0
    b = DurableMemoryBroker(tmp_path / "data", cfg)
    for user in ("alice", "carol"):
        c = b.client(4)
        c.connect(f"{user}-id", username=user)
        c.publish(f"r/{user}", user.encode(), qos=1, retain=True)
        c.disconnect()
    b.settle()
    b.restart()
    acl.write_text(ACL_REVOKED + "user carol\ntopic readwrite r/#\n")
    b.call(b.authenticator.reload)
    bob = b.client(4)
    bob.connect("bob-id", username="bob")
    bob.subscribe("r/#", 1)
    assert [p.payload for p in bob.more_publishes(ack=True)] == [b"carol"]
    b.stop()


def test_a_store_written_before_retained_sources_opens_and_keeps_its_messages(
    tmp_path: Path,
) -> None:
    """A database whose retained and wills tables lack the source columns (midge before
    check_retain_source) gets them when opened; its retained messages load, of unknown source."""
    data = tmp_path / "data"
    b = DurableMemoryBroker(data)
    c = b.client(4)
    c.connect("old")
    c.publish("old/t", b"from before", qos=1, retain=True)
    b.settle()
    b.kill()
    db = sqlite3.connect(data / "midge.db")
    for table in ("retained", "wills"):
        for column in ("source_username", "source_port"):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.commit()
    db.close()
    b.restart()
    sub = b.client(4)
    sub.connect("reader")
    sub.subscribe("old/#", 1)
    got = sub.more_publishes(ack=True)
    assert [p.payload for p in got] == [b"from before"]
    b.stop()
    db = sqlite3.connect(data / "midge.db")
    columns = {row[1] for row in db.execute("PRAGMA table_info(retained)")}
    db.close()
    assert {"source_username", "source_port"} <= columns


def test_will_remembers_its_source_for_check_retain_source(tmp_path: Path) -> None:
    """A retained will is a retained message of its client: withheld too once that client may
    no longer write its topic."""
    acl = tmp_path / "acl"
    acl.write_text(ACL_OPEN)
    b = broker("allow_anonymous true", f"acl_file {acl}", "check_retain_source true")
    alice = RawClient(b.link(), version=4)
    alice.connect("alice-id", username="alice", will=Will("r/will", b"gone", 1, True))
    alice.close()
    b.call(lambda: None)
    assert b.call(lambda: b.broker.retained.get("r/will")) is not None
    acl.write_text(ACL_REVOKED)
    b.call(b.authenticator.reload)
    bob = RawClient(b.link(), version=4)
    bob.connect("bob-id", username="bob")
    bob.subscribe("r/#", 1)
    bob.no_publish()


def test_global_directives_in_toml() -> None:
    """The global ones in midge's TOML too, with the same deprecation notices."""
    cfg = parse_toml(
        'clientid_prefixes = "c-"\ncheck_retain_source = true\nallow_duplicate_messages = true\n'
    )
    assert (cfg.clientid_prefixes, cfg.check_retain_source, cfg.allow_duplicate_messages) == (
        "c-",
        True,
        True,
    )
    assert sum("is deprecated" in n for n in cfg.notices) == 2
