"""Authentication and every path of authorization, in MQTT 3.1.1 and 5, with raw clients.

A broker on a real socket reads a password file and an ACL file (a configured listener, so
anonymous clients are refused unless allowed). Codes are Mosquitto 2.0.11's, checked on the wire:
every refused CONNECT is "not authorised" (v3 return code 5, v5 0x87).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from midge.auth.passwd import format_line, hash_password
from midge.codec.packets import Puback, Pubcomp, Publish, Pubrec, Pubrel, Will
from midge.config import ListenerConfig
from tests.rawclient import RawClient

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "root": "root-pw"}
ACL = """\
topic read public/#
user alice
topic readwrite alice/#
topic deny alice/secret
topic write shared/#
topic read $SYS/#
user bob
topic read alice/#
user root
topic read #
pattern readwrite clients/%c/#
"""
VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
NOT_AUTHORIZED = {4: 5, 5: 0x87}  # CONNACK


def write_files(directory: Path, acl: str = ACL) -> tuple[str, str]:
    pw = directory / "passwd"
    pw.write_text("".join(format_line(u, hash_password(p.encode())) for u, p in PASSWORDS.items()))
    acl_path = directory / "acl"
    acl_path.write_text(acl)
    return str(pw), str(acl_path)


@pytest.fixture
def secured(
    make_broker: Callable[..., Any], tmp_path: Path
) -> Iterator[Callable[..., Callable[..., RawClient]]]:
    """``secured(**config)`` starts a broker with the files and a configured listener, and
    returns ``client(version, user=None, client_id=..., **connect_fields)`` that connects and
    asserts the CONNACK (``expect`` a return code instead of 0)."""
    opened: list[RawClient] = []

    def start(**config: Any) -> Callable[..., RawClient]:
        pw, acl = write_files(tmp_path)
        config.setdefault("password_file", pw)
        config.setdefault("acl_file", acl)
        config.setdefault("local_only", False)
        broker = make_broker(**config)

        def client(
            version: int, user: str | None = None, client_id: str = "", expect: int = 0, **f: Any
        ) -> RawClient:
            c = RawClient(broker.host, broker.port, version=version)
            opened.append(c)
            if user is not None:
                f.setdefault("username", user)
                f.setdefault("password", PASSWORDS.get(user, "?").encode())
            connack = c.connect(client_id or f"{user or 'anon'}-{len(opened)}", **f)
            assert connack.reason_code == expect, connack
            return c

        return client

    yield start
    for c in opened:
        c.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_connect_outcomes(secured: Callable[..., Any], version: int) -> None:
    client = secured()
    refused = NOT_AUTHORIZED[version]
    client(version, "alice")
    client(version, "alice", password=b"wrong", expect=refused)
    client(version, "mallory", password=b"alice-pw", expect=refused)  # unknown user
    client(version, "alice", password=None, expect=refused)
    client(version, None, expect=refused)  # anonymous: refused on a configured listener


@pytest.mark.parametrize("version", VERSIONS)
def test_anonymous_allowed_when_configured(secured: Callable[..., Any], version: int) -> None:
    client = secured(allow_anonymous=True)
    anon = client(version, None)
    assert anon.subscribe("public/#").reason_codes == [0]
    assert anon.subscribe("alice/#").reason_codes == [0]  # granted; deliveries are read-checked
    alice = client(version, "alice")
    alice.publish("alice/x", b"not for anon", qos=1)
    anon.no_publish(0.2)
    client(version, "alice", password=b"wrong", expect=NOT_AUTHORIZED[version])


@pytest.mark.parametrize("version", VERSIONS)
def test_subscribe_granted_and_deliveries_read_checked(
    secured: Callable[..., Any], version: int
) -> None:
    """Mosquitto 2 grants every filter whatever the ACL file says (tests/differential/
    test_acl.py compares it on the wire) and checks read access on each delivery."""
    alice = secured()(version, "alice")
    suback = alice.subscribe("alice/#", 1)
    assert suback.reason_codes == [1]
    assert alice.subscribe("bob/#").reason_codes == [0]
    assert alice.subscribe("shared/x").reason_codes == [0]  # write-only
    assert alice.subscribe("$share/g/alice/+", 0).reason_codes == [0]
    alice.publish("shared/x", b"write-only", qos=1)
    ack = alice.publish("alice/secret", b"denied", qos=1)
    assert isinstance(ack, Puback) and ack.reason_code == (0x87 if version == 5 else 0)
    alice.no_publish(0.2)


@pytest.mark.parametrize("version", VERSIONS)
def test_publish_refused(secured: Callable[..., Any], version: int) -> None:
    client = secured()
    root = client(version, "root")
    root.subscribe("#", 2)
    alice = client(version, "alice")
    denied = 0x87 if version == 5 else 0
    # QoS 0: dropped silently; QoS 1: PUBACK (v5 0x87); QoS 2: PUBREC (v5 0x87, no PUBREL then).
    alice.publish("bob/x", b"0")
    ack = alice.publish("bob/x", b"1", qos=1)
    assert isinstance(ack, Puback) and ack.reason_code == denied
    ack = alice.publish("alice/secret", b"2", qos=2)
    if version == 5:
        assert isinstance(ack, Pubrec) and ack.reason_code == 0x87
    else:
        assert isinstance(ack, Pubcomp)  # 3.1.1: acknowledged as the spec requires
    ack = alice.publish("alice/ok", b"3", qos=1)
    assert isinstance(ack, Puback) and ack.reason_code == 0
    got = root.expect(Publish)
    assert (got.topic, got.payload) == ("alice/ok", b"3")
    root.expect_nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_delivery_checks_read_access(secured: Callable[..., Any], version: int) -> None:
    """bob may subscribe to '#' (it overlaps what he may read), but gets only what he may read:
    Mosquitto checks read access on each delivery."""
    client = secured()
    bob = client(version, "bob")
    assert bob.subscribe("#").reason_codes == [0]
    alice = client(version, "alice")
    alice.publish("shared/x", b"not for bob", qos=1)
    alice.publish("alice/x", b"for bob", qos=1)
    got = bob.expect(Publish)
    assert (got.topic, got.payload) == ("alice/x", b"for bob")
    bob.expect_nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_messages_check_read_access(secured: Callable[..., Any], version: int) -> None:
    client = secured()
    alice = client(version, "alice")
    alice.publish("alice/r", b"readable", qos=1, retain=True)
    alice.publish("shared/r", b"hidden", qos=1, retain=True)
    bob = client(version, "bob")
    bob.subscribe("#", 1)
    got = bob.expect(Publish)
    assert (got.topic, got.payload, got.retain) == ("alice/r", b"readable", True)
    bob.ack(got)
    bob.expect_nothing()
    root = client(version, "root")
    root.subscribe("shared/#")
    assert root.expect(Publish).payload == b"hidden"  # it is there, bob just may not read it


@pytest.mark.parametrize("version", VERSIONS)
def test_wills_are_checked_like_a_publish(secured: Callable[..., Any], version: int) -> None:
    client = secured()
    root = client(version, "root")
    root.subscribe("#")
    denied = client(version, "alice", will=Will("bob/will", b"denied"))
    allowed = client(version, "alice", will=Will("alice/will", b"allowed"))
    denied.close()  # no DISCONNECT: the will is due
    allowed.close()
    got = root.expect(Publish)
    assert (got.topic, got.payload) == ("alice/will", b"allowed")
    root.expect_nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_sys_topics_only_where_allowed(secured: Callable[..., Any], version: int) -> None:
    client = secured()
    root = client(version, "root")  # 'topic read #' does not reach $SYS (MQTT-4.7.2-1)
    assert root.subscribe("$SYS/#").reason_codes == [0]  # granted; nothing readable comes
    alice = client(version, "alice")
    assert alice.sub("$SYS/broker/#").reason_codes == [0]  # the $SYS tree may come first
    ack = alice.pub("$SYS/broker/fake", b"x", qos=1)  # clients never publish to $SYS
    assert isinstance(ack, Puback) and ack.reason_code == (0x87 if version == 5 else 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_patterns_use_client_id_and_username(secured: Callable[..., Any], version: int) -> None:
    client = secured()
    dev = client(version, "bob", client_id="dev-7")
    assert dev.subscribe("clients/dev-8/#").reason_codes == [0]  # granted, nothing readable
    ack = dev.publish("clients/dev-8/up", b"x", qos=1)
    assert isinstance(ack, Puback) and ack.reason_code == (0x87 if version == 5 else 0)
    dev.no_publish(0.2)
    assert dev.subscribe("clients/dev-7/#").reason_codes == [0]
    dev.send(Publish("clients/dev-7/up", b"mine", 1, False, False, 5))
    packets = dev.recv_all()
    assert [type(p).__name__ for p in packets] == ["Puback", "Publish"] or [
        type(p).__name__ for p in packets
    ] == ["Publish", "Puback"]
    assert next(p for p in packets if isinstance(p, Publish)).payload == b"mine"


def test_qos2_refused_in_v311_completes_the_flow(secured: Callable[..., Any]) -> None:
    """3.1.1 has no refusal in PUBREC: the flow completes, the message goes nowhere."""
    alice = secured()(4, "alice")
    alice.send(Publish("bob/x", b"q2", 2, False, False, 9))
    assert alice.expect(Pubrec).packet_id == 9
    alice.send(Pubrel(9))
    assert alice.expect(Pubcomp).packet_id == 9


def test_password_only_no_acl_allows_every_topic(
    make_broker: Callable[..., Any], tmp_path: Path
) -> None:
    pw, _ = write_files(tmp_path)
    broker = make_broker(password_file=pw, local_only=False)
    assert broker.server.broker.checks_publish is False  # no per-message calls at all
    with RawClient(broker.host, broker.port, version=5) as c:
        assert c.connect("x", username="bob", password=b"bob-pw").reason_code == 0
        assert c.subscribe("any/#").reason_codes == [0]
        c.publish("any/t", b"1")
        assert c.expect(Publish).payload == b"1"


def test_per_listener_settings(make_broker: Callable[..., Any], tmp_path: Path) -> None:
    """Each listener its own files and allow_anonymous (Mosquitto 2's per_listener_settings)."""
    pw, acl = write_files(tmp_path)
    open_listener = ListenerConfig(port=0, host="127.0.0.1", allow_anonymous=True)
    closed = ListenerConfig(port=0, host="127.0.0.1", password_file=pw, acl_file=acl)
    broker = make_broker(
        per_listener_settings=True, local_only=False, listeners=[open_listener, closed]
    )
    addresses = broker.server.addresses
    first, second = addresses[0][1], addresses[1][1]
    with RawClient("127.0.0.1", first, version=5) as c:
        assert c.connect("anon").reason_code == 0
        assert c.subscribe("alice/#").reason_codes == [0]  # no ACL on this listener
    with RawClient("127.0.0.1", second, version=5) as c:
        assert c.connect("anon2").reason_code == 0x87
    with RawClient("127.0.0.1", second, version=4) as c:
        assert c.connect("a", username="alice", password=b"alice-pw").reason_code == 0
        assert c.subscribe("bob/#").reason_codes == [0]  # granted; deliveries read-checked
    with RawClient("127.0.0.1", first, version=4) as c:
        # no password file on the first listener: a username proves nothing, anonymous rules
        assert c.connect("b", username="alice", password=b"whatever").reason_code == 0


def test_local_only_allows_anonymous_even_with_a_password_file(
    make_broker: Callable[..., Any], tmp_path: Path
) -> None:
    """Mosquitto 2: with no listener configured (local-only mode) anonymous clients are
    allowed; a username must still be in the password file."""
    pw, _ = write_files(tmp_path)
    broker = make_broker(password_file=pw, allow_anonymous=False)  # local_only: the default
    with RawClient(broker.host, broker.port) as c:
        assert c.connect("anon").reason_code == 0
    with RawClient(broker.host, broker.port) as c:
        assert c.connect("x", username="alice", password=b"nope").reason_code == 5


@pytest.mark.parametrize("version", VERSIONS)
def test_a_session_restored_from_disk_is_read_checked_as_its_user(
    make_broker: Callable[..., Any], tmp_path: Path, version: int
) -> None:
    """bob's persistent session comes back after a restart before bob does: what alice publishes
    meanwhile is queued for him as his user may read (the user is kept with the session), and
    what he may not read is not."""
    pw, acl = write_files(tmp_path)
    data = tmp_path / "data"
    config = {"password_file": pw, "acl_file": acl, "local_only": False, "data_dir": str(data)}
    persistent: dict[str, Any] = (
        {"clean_start": False, "properties": {0x11: 3600}}
        if version == 5
        else {"clean_start": False}
    )

    def connect(broker: Any, user: str, client_id: str, **fields: Any) -> RawClient:
        c = RawClient(broker.host, broker.port, version=version)
        connack = c.connect(client_id, username=user, password=PASSWORDS[user].encode(), **fields)
        assert connack.reason_code == 0
        return c

    broker = make_broker(**config)
    bob = connect(broker, "bob", "bob-1", **persistent)
    assert bob.subscribe("#", 1).reason_codes == [1]
    bob.disconnect()
    broker.stop()

    broker = make_broker(**config)  # the same data directory: bob's session is restored
    alice = connect(broker, "alice", "alice-1")
    alice.publish("shared/x", b"not for bob", qos=1)
    alice.publish("alice/x", b"for bob", qos=1)
    alice.close()
    bob = connect(broker, "bob", "bob-1", **persistent)
    try:
        got = bob.expect(Publish)
        assert (got.topic, got.payload) == ("alice/x", b"for bob")
        bob.ack(got)
        bob.expect_nothing()
    finally:
        bob.close()
