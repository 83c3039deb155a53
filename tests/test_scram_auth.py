"""SCRAM-SHA-256/512 over MQTT 5 enhanced authentication, end to end on real sockets.

The client side is tests/scramclient.py (hashlib/hmac only); the credentials are written by
``midge scram``'s own functions, and by the ``midge scram`` command for the subprocess tests.
paho-mqtt 2.2 cannot take part: it treats an incoming AUTH packet as an unknown command.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from midge.auth.base import Authenticator, Capability
from midge.auth.scram_cli import set_user
from midge.codec.packets import Auth, Connack, Connect, Disconnect, Publish
from midge.codec.properties import Prop
from midge.codec.reasons import Reason
from tests.procbroker import ProcBroker, module_command, run_midge
from tests.rawclient import RawClient
from tests.scramclient import ScramClient, tamper

SHA256 = "SCRAM-SHA-256"
SHA512 = "SCRAM-SHA-512"


class OnlyAliceMaySubscribe(Authenticator):
    """A layer after SCRAM (the ACL's role): ``alice/#`` for alice, nothing for others."""

    provides = frozenset({Capability.SUBSCRIBE})

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def can_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        self.seen.append(username)
        return username == "alice" and topic_filter.startswith("alice/")


@pytest.fixture
def scram_file(tmp_path: Path) -> str:
    path = str(tmp_path / "users.scram")
    set_user(path, "alice", "wonderland", create=True)
    set_user(path, "bob", "builder", [SHA512])
    return path


def _props(method: str, data: bytes | None) -> dict[int, Any]:
    props: dict[int, Any] = {Prop.AUTHENTICATION_METHOD: method}
    if data is not None:
        props[Prop.AUTHENTICATION_DATA] = data
    return props


def _connect_scram(
    c: RawClient,
    client: ScramClient,
    method: str,
    username: str | None = None,
    final: Callable[[bytes], bytes] | None = None,
) -> Connack:
    """CONNECT with client-first, answer the challenge, return the CONNACK."""
    c.send(
        Connect(
            "c1", protocol_level=5, username=username, properties=_props(method, client.first())
        )
    )
    challenge = c.expect(Auth)
    assert challenge.reason_code == Reason.CONTINUE_AUTHENTICATION
    assert challenge.properties[Prop.AUTHENTICATION_METHOD] == method
    answer = client.final(challenge.properties[Prop.AUTHENTICATION_DATA])
    if final is not None:
        answer = final(answer)
    c.send(Auth(Reason.CONTINUE_AUTHENTICATION, _props(method, answer)))
    return c.expect(Connack)


def _reauth(c: RawClient, client: ScramClient, method: str) -> None:
    c.send(Auth(Reason.RE_AUTHENTICATE, _props(method, client.first())))
    challenge = c.expect(Auth)
    assert challenge.reason_code == Reason.CONTINUE_AUTHENTICATION
    answer = client.final(challenge.properties[Prop.AUTHENTICATION_DATA])
    c.send(Auth(Reason.CONTINUE_AUTHENTICATION, _props(method, answer)))


@pytest.mark.parametrize(
    ("method", "user", "password"), [(SHA256, "alice", "wonderland"), (SHA512, "bob", "builder")]
)
def test_round_trip(
    make_broker: Callable[..., Any], scram_file: str, method: str, user: str, password: str
) -> None:
    b = make_broker(scram_file=scram_file)
    with RawClient(b.host, b.port, version=5) as c:
        client = ScramClient(method, user, password)
        ack = _connect_scram(c, client, method)
        assert ack.reason_code == Reason.SUCCESS
        assert ack.properties[Prop.AUTHENTICATION_METHOD] == method
        assert client.verify(ack.properties[Prop.AUTHENTICATION_DATA])
        # The session works after the exchange.
        assert c.subscribe("t", 1).reason_codes == [1]
        c.publish("t", b"hi", qos=0)
        assert c.expect(Publish).payload == b"hi"


def test_scram_user_is_the_connection_user(
    make_broker: Callable[..., Any], scram_file: str
) -> None:
    """No User Name in CONNECT: the SCRAM user is who the inner authenticator (ACL) sees."""
    inner = OnlyAliceMaySubscribe()
    b = make_broker(authenticator=inner, scram_file=scram_file)
    with RawClient(b.host, b.port, version=5) as c:
        assert (
            _connect_scram(c, ScramClient(SHA256, "alice", "wonderland"), SHA256).reason_code == 0
        )
        assert c.subscribe("alice/x", 0).reason_codes == [0]
    with RawClient(b.host, b.port, version=5) as c:
        ack = _connect_scram(c, ScramClient(SHA512, "bob", "builder"), SHA512, username="bob")
        assert ack.reason_code == 0
        assert c.subscribe("alice/x", 0).reason_codes == [Reason.NOT_AUTHORIZED]
    assert inner.seen == ["alice", "bob"]


@pytest.mark.parametrize(
    ("user", "password", "method", "username", "final"),
    [
        ("alice", "wrong", SHA256, None, None),  # wrong password
        ("carol", "x", SHA256, None, None),  # unknown user: challenged, then refused
        ("bob", "builder", SHA256, None, None),  # bob has no SHA-256 credential
        ("alice", "wonderland", SHA256, None, tamper),  # tampered proof
        ("alice", "wonderland", SHA256, None, lambda f: f.replace(b",r=", b",r=x")),  # nonce
    ],
    ids=["wrong-password", "unknown-user", "other-mechanism", "tampered-proof", "wrong-nonce"],
)
def test_refused_with_0x87(
    make_broker: Callable[..., Any],
    scram_file: str,
    user: str,
    password: str,
    method: str,
    username: str | None,
    final: Callable[[bytes], bytes] | None,
) -> None:
    b = make_broker(scram_file=scram_file)
    with RawClient(b.host, b.port, version=5) as c:
        ack = _connect_scram(c, ScramClient(method, user, password), method, username, final)
        assert ack.reason_code == Reason.NOT_AUTHORIZED
        assert Prop.AUTHENTICATION_DATA not in ack.properties
        assert c.wait_closed(2)


@pytest.mark.parametrize(
    ("username", "data"),
    [
        ("bob", b"n,,n=alice,r=abc"),  # CONNECT User Name differs from the SCRAM user
        (None, None),  # no client-first message
        (None, b"p=tls-unique,,n=alice,r=abc"),  # channel binding required by the client
        (None, b"garbage"),
    ],
)
def test_refused_at_client_first(
    make_broker: Callable[..., Any], scram_file: str, username: str | None, data: bytes | None
) -> None:
    b = make_broker(scram_file=scram_file)
    with RawClient(b.host, b.port, version=5) as c:
        c.send(Connect("c", protocol_level=5, username=username, properties=_props(SHA256, data)))
        assert c.expect(Connack).reason_code == Reason.NOT_AUTHORIZED
        assert c.wait_closed(2)


def test_reauthentication(make_broker: Callable[..., Any], scram_file: str) -> None:
    b = make_broker(scram_file=scram_file)
    with RawClient(b.host, b.port, version=5) as c:
        assert (
            _connect_scram(c, ScramClient(SHA256, "alice", "wonderland"), SHA256).reason_code == 0
        )
        again = ScramClient(SHA256, "alice", "wonderland")
        _reauth(c, again, SHA256)
        done = c.expect(Auth)
        assert done.reason_code == Reason.SUCCESS
        assert again.verify(done.properties[Prop.AUTHENTICATION_DATA])
        assert c.subscribe("t", 0).reason_codes == [0]
        # A wrong password on re-authentication ends the connection with 0x87.
        _reauth(c, ScramClient(SHA256, "alice", "nope"), SHA256)
        assert c.expect(Disconnect).reason_code == Reason.NOT_AUTHORIZED
        assert c.wait_closed(2)


def test_reauthentication_as_another_user_fails(
    make_broker: Callable[..., Any], scram_file: str, tmp_path: Path
) -> None:
    set_user(scram_file, "bob", "builder", [SHA256])
    b = make_broker(scram_file=scram_file)
    with RawClient(b.host, b.port, version=5) as c:
        assert (
            _connect_scram(c, ScramClient(SHA256, "alice", "wonderland"), SHA256).reason_code == 0
        )
        c.send(Auth(Reason.RE_AUTHENTICATE, _props(SHA256, b"n,,n=bob,r=abc")))
        assert c.expect(Disconnect).reason_code == Reason.NOT_AUTHORIZED
        assert c.wait_closed(2)


def test_v311_and_plain_v5_clients_unaffected(
    make_broker: Callable[..., Any], scram_file: str
) -> None:
    b = make_broker(scram_file=scram_file)
    with RawClient(b.host, b.port, version=4) as c:
        assert c.connect("v4", username="alice", password=b"whatever").reason_code == 0
        assert c.subscribe("t", 1).reason_codes == [1]
    with RawClient(b.host, b.port, version=5) as c:
        assert c.connect("v5").reason_code == 0


def test_without_scram_file_the_methods_are_refused(make_broker: Callable[..., Any]) -> None:
    b = make_broker()
    with RawClient(b.host, b.port, version=5) as c:
        c.send(Connect("c", protocol_level=5, properties=_props(SHA256, b"n,,n=alice,r=abc")))
        assert c.expect(Connack).reason_code == Reason.BAD_AUTHENTICATION_METHOD


def test_other_methods_still_refused_with_0x8c(
    make_broker: Callable[..., Any], scram_file: str
) -> None:
    b = make_broker(scram_file=scram_file)
    with RawClient(b.host, b.port, version=5) as c:
        c.send(Connect("c", protocol_level=5, properties=_props("SCRAM-SHA-1", b"n,,n=a,r=b")))
        assert c.expect(Connack).reason_code == Reason.BAD_AUTHENTICATION_METHOD


def test_reload_rereads_the_scram_file(make_broker: Callable[..., Any], scram_file: str) -> None:
    """SIGHUP (Server.reload) reloads the SCRAM layer of the chain; a file that does not parse
    keeps the credentials in force."""
    b = make_broker(scram_file=scram_file)

    def carol() -> int:
        with RawClient(b.host, b.port, version=5) as c:
            return _connect_scram(c, ScramClient(SHA256, "carol", "pw"), SHA256).reason_code

    set_user(scram_file, "carol", "pw")
    assert carol() == Reason.NOT_AUTHORIZED  # not read yet
    assert b.call(b.server.reload) is True
    assert carol() == Reason.SUCCESS
    Path(scram_file).write_text("carol\n")
    assert b.call(b.server.reload) is False
    assert carol() == Reason.SUCCESS


# -- the real command line: midge scram, then midge broker -c with scram_file


@pytest.mark.parametrize(
    ("conf_name", "workers"), [("midge.conf", 1), ("midge.toml", 1), ("midge.conf", 2)]
)
def test_midge_scram_and_broker_process(tmp_path: Path, conf_name: str, workers: int) -> None:
    users = tmp_path / "users.scram"
    made = run_midge(["scram", "-c", "-b", str(users), "alice", "wonderland"])
    assert made.returncode == 0, made.stderr
    # Without -b and without a terminal, the password is read from standard input.
    added = subprocess.run(
        [*module_command(), "scram", "-m", SHA512, str(users), "bob"],
        input="builder\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    assert "wonderland" not in users.read_text() and "builder" not in users.read_text()
    conf = tmp_path / conf_name
    if conf_name.endswith(".toml"):
        conf.write_text(
            f'scram_file = "{users}"\npersistence = false\n'
            '[[listener]]\nport = 0\naddress = "127.0.0.1"\n'
        )
    else:
        conf.write_text(f"scram_file {users}\npersistence false\nlistener 0 127.0.0.1\n")
    with ProcBroker(["-c", str(conf), "--workers", str(workers)]) as broker:
        broker.wait_listening()
        for method, user, password in [(SHA256, "alice", "wonderland"), (SHA512, "bob", "builder")]:
            with RawClient(broker.host, broker.port, version=5) as c:
                client = ScramClient(method, user, password)
                ack = _connect_scram(c, client, method)
                assert ack.reason_code == 0
                assert client.verify(ack.properties[Prop.AUTHENTICATION_DATA])
        with RawClient(broker.host, broker.port, version=5) as c:
            assert (
                _connect_scram(c, ScramClient(SHA256, "bob", "builder"), SHA256).reason_code == 0x87
            )
    assert "wonderland" not in broker.stderr and "builder" not in broker.stderr


def test_bad_scram_file_stops_the_broker(tmp_path: Path) -> None:
    users = tmp_path / "users.scram"
    users.write_text("# users\nalice:SCRAM-SHA-256$4096:AAAA$AAAA:AAAA\n")
    conf = tmp_path / "midge.conf"
    conf.write_text(f"scram_file {users}\npersistence false\nlistener 0 127.0.0.1\n")
    for workers in ("1", "2"):
        result = run_midge(["broker", "-c", str(conf), "--workers", workers])
        assert result.returncode == 1
        assert f"{users}:2: user 'alice': invalid StoredKey" in result.stderr
        assert "Traceback" not in result.stderr
    conf.write_text(f"scram_file {tmp_path / 'nope'}\npersistence false\nlistener 0 127.0.0.1\n")
    result = run_midge(["broker", "-c", str(conf)])
    assert result.returncode == 1 and "cannot read scram_file" in result.stderr
    assert "Traceback" not in result.stderr


def test_midge_scram_errors(tmp_path: Path) -> None:
    users = tmp_path / "users.scram"
    result = run_midge(["scram", "-b", str(users), "alice", "pw"])
    assert result.returncode == 1 and "does not exist (use -c to create it)" in result.stderr
    result = run_midge(["scram", "-c", str(users), "alice", "pw"])
    assert result.returncode == 1 and "needs -b" in result.stderr
    assert run_midge(["scram", "-c", "-b", str(users), "alice", "pw"]).returncode == 0
    result = run_midge(["scram", "-D", str(users), "nobody"])
    assert result.returncode == 1 and "user 'nobody' not found" in result.stderr
    assert run_midge(["scram", "-D", str(users), "alice"]).returncode == 0
    assert users.read_text() == ""
