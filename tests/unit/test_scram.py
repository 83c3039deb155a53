"""SCRAM server side (midge.auth.scram) without sockets: the RFC 7677 vector, message parsing,
the scram_file reader and ``midge scram``'s file operations."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from midge.auth.base import Capability, ConnectRequest
from midge.auth.scram import (
    ScramAuthenticator,
    ScramExchange,
    ScramStore,
    load_scram_file,
    make_credential,
    parse_scram_file,
)
from midge.auth.scram_cli import ScramFileError, delete_user, set_user
from midge.codec.reasons import Reason
from midge.config import ConfigError
from tests.scramclient import ScramClient, tamper

# RFC 7677 3: SCRAM-SHA-256, user "user", password "pencil".
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")


def _store(*users: tuple[str, str, str]) -> ScramStore:
    return ScramStore((user, make_credential(mech, password)) for user, mech, password in users)


def _exchange(
    store: ScramStore,
    mech: str = "SCRAM-SHA-256",
    connect_username: str | None = None,
    server_nonce: str | None = None,
) -> ScramExchange:
    return ScramExchange(mech, store, connect_username, os.urandom(32), server_nonce)


def test_rfc7677_vector() -> None:
    cred = make_credential("SCRAM-SHA-256", "pencil", 4096, RFC_SALT)
    ex = _exchange(ScramStore([("user", cred)]), server_nonce=RFC_SERVER_NONCE)
    assert ex.start(RFC_CLIENT_FIRST) == (Reason.CONTINUE_AUTHENTICATION, RFC_SERVER_FIRST)
    assert ex.step(RFC_CLIENT_FINAL) == (Reason.SUCCESS, RFC_SERVER_FINAL)
    assert ex.username == "user"


def test_rfc7677_vector_with_a_tampered_proof_fails() -> None:
    cred = make_credential("SCRAM-SHA-256", "pencil", 4096, RFC_SALT)
    ex = _exchange(ScramStore([("user", cred)]), server_nonce=RFC_SERVER_NONCE)
    ex.start(RFC_CLIENT_FIRST)
    assert ex.step(tamper(RFC_CLIENT_FINAL)) == (Reason.NOT_AUTHORIZED, None)
    assert ex.username is None


def test_credential_encoding_round_trips() -> None:
    cred = make_credential("SCRAM-SHA-512", "pw", 4096)
    line = f"u:{cred.encode()}"
    assert line.startswith("u:SCRAM-SHA-512$4096:")
    assert parse_scram_file(line).get("u", "SCRAM-SHA-512") == cred


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_client_round_trip(mech: str) -> None:
    ex = _exchange(_store(("al,i=ce", mech, "s3cret")), mech)
    client = ScramClient(mech, "al,i=ce", "s3cret")
    code, server_first = ex.start(client.first())
    assert code == Reason.CONTINUE_AUTHENTICATION and server_first is not None
    code, server_final = ex.step(client.final(server_first))
    assert code == Reason.SUCCESS and server_final is not None
    assert client.verify(server_final)
    assert ex.username == "al,i=ce"


def _run(ex: ScramExchange, client: ScramClient, **final: str) -> int:
    code, server_first = ex.start(client.first())
    if code != Reason.CONTINUE_AUTHENTICATION:
        return code
    assert server_first is not None
    return ex.step(client.final(server_first, **final))[0]


def test_wrong_password_unknown_user_and_other_mechanism_fail_alike() -> None:
    store = _store(("alice", "SCRAM-SHA-256", "right"))
    assert _run(_exchange(store), ScramClient("SCRAM-SHA-256", "alice", "wrong")) == 0x87
    assert _run(_exchange(store), ScramClient("SCRAM-SHA-256", "bob", "right")) == 0x87
    ex512 = _exchange(store, "SCRAM-SHA-512")
    assert _run(ex512, ScramClient("SCRAM-SHA-512", "alice", "right")) == 0x87


def test_unknown_user_gets_a_stable_challenge() -> None:
    """No user enumeration: an unknown user is challenged like a known one, same salt twice."""
    auth = ScramAuthenticator(_store(("alice", "SCRAM-SHA-256", "pw")))
    salts = []
    for _ in range(2):
        request = ConnectRequest("c", None, None, "peer", 5, "SCRAM-SHA-256", None)
        ex = auth.enhanced(request)
        assert ex is not None
        code, first = ex.start(b"n,,n=nobody,r=abc")
        assert code == Reason.CONTINUE_AUTHENTICATION and first is not None
        attrs = dict(p.split("=", 1) for p in first.decode().split(","))
        assert attrs["i"] == "4096"
        salts.append(attrs["s"])
    assert salts[0] == salts[1]


def test_wrong_nonce_fails() -> None:
    store = _store(("alice", "SCRAM-SHA-256", "pw"))
    client = ScramClient("SCRAM-SHA-256", "alice", "pw")
    assert _run(_exchange(store), client, nonce=client.nonce + "other") == 0x87
    assert _run(_exchange(store), client, nonce=client.nonce) == 0x87


def test_connect_username_must_match() -> None:
    store = _store(("alice", "SCRAM-SHA-256", "pw"))
    ok = _exchange(store, connect_username="alice")
    assert _run(ok, ScramClient("SCRAM-SHA-256", "alice", "pw")) == 0
    other = _exchange(store, connect_username="bob")
    assert _run(other, ScramClient("SCRAM-SHA-256", "alice", "pw")) == 0x87


def test_gs2_y_flag_accepted_and_p_refused() -> None:
    store = _store(("alice", "SCRAM-SHA-256", "pw"))
    y = ScramClient("SCRAM-SHA-256", "alice", "pw", gs2_header="y,,")
    assert _run(_exchange(store), y) == 0
    authz = ScramClient("SCRAM-SHA-256", "alice", "pw", gs2_header="n,a=alice,")
    assert _run(_exchange(store), authz) == 0
    other_authz = ScramClient("SCRAM-SHA-256", "alice", "pw", gs2_header="n,a=root,")
    assert _run(_exchange(store), other_authz) == 0x87
    p = ScramClient("SCRAM-SHA-256", "alice", "pw", gs2_header="p=tls-unique,,")
    assert _run(_exchange(store), p) == 0x87


@pytest.mark.parametrize(
    "first",
    [
        None,
        b"",
        b"\xff\xfe",
        b"n,,",
        b"n,n=alice,r=abc",
        b"x,,n=alice,r=abc",
        b"n,,r=abc,n=alice",
        b"n,,m=ext,n=alice,r=abc",
        b"n,,n=alice",
        b"n,,n=,r=abc",
        b"n,,n=al=ice,r=abc",
        b"n,,n=alice,r=",
        b"n,,n=alice,r=a b",
        b"n,,n=alice,,r=abc",
        b"n,b=x,n=alice,r=abc",
    ],
)
def test_malformed_client_first_is_0x87(first: bytes | None) -> None:
    ex = _exchange(_store(("alice", "SCRAM-SHA-256", "pw")))
    assert ex.start(first) == (Reason.NOT_AUTHORIZED, None)


def _final_variants(client: ScramClient, server_first: bytes) -> list[bytes]:
    good = client.final(server_first)
    c, r, p = good.split(b",")
    return [
        b"",
        b"\xff",
        c + b"," + r,  # no proof
        r + b"," + c + b"," + p,  # wrong order
        b"c=eSws," + r + b"," + p,  # "y,," binding but "n,," header
        b"c=biws," + r + b",p=!!!",  # not base64
        b"c=biws," + r + b",p=" + base64.b64encode(b"short"),
        c + b"," + r + b"," + p + b",x=1",  # proof must be last
        good.replace(b"c=biws", b"c=biws="),  # bad padding
    ]


@pytest.mark.parametrize("index", range(9))
def test_malformed_client_final_is_0x87(index: int) -> None:
    store = _store(("alice", "SCRAM-SHA-256", "pw"))
    ex = _exchange(store)
    client = ScramClient("SCRAM-SHA-256", "alice", "pw")
    _, server_first = ex.start(client.first())
    assert server_first is not None
    final = _final_variants(client, server_first)[index]
    assert ex.step(final) == (Reason.NOT_AUTHORIZED, None)


def test_a_second_client_final_fails() -> None:
    store = _store(("alice", "SCRAM-SHA-256", "pw"))
    ex = _exchange(store)
    client = ScramClient("SCRAM-SHA-256", "alice", "pw")
    _, server_first = ex.start(client.first())
    assert server_first is not None
    final = client.final(server_first)
    assert ex.step(final)[0] == 0
    assert ex.step(final) == (Reason.NOT_AUTHORIZED, None)


def test_other_methods_and_the_rest_are_other_layers() -> None:
    """SCRAM provides enhanced authentication only; the chain asks other layers for the rest."""
    auth = ScramAuthenticator(ScramStore())
    assert auth.provides == {Capability.ENHANCED}
    assert auth.enhanced(ConnectRequest("c", None, None, "p", 5, "OTHER", None)) is None
    assert auth.authenticate(ConnectRequest("c", "u", b"p", "p", 4)) == 0
    assert auth.can_publish("c", None, "t") and auth.can_subscribe("c", None, "#")


# -- the scram_file


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("alice\n", 1, "expected USER:MECHANISM"),
        ("# c\n\n:SCRAM-SHA-256$4096:AAAA$AAAA:AAAA\n", 3, "user name is empty"),
        ("alice:SCRAM-SHA-1$4096:AAAA$AAAA:AAAA\n", 1, "unknown mechanism 'SCRAM-SHA-1'"),
        ("alice:SCRAM-SHA-256$many:AAAA$AAAA:AAAA\n", 1, "invalid iteration count"),
        ("alice:SCRAM-SHA-256$0:AAAA$AAAA:AAAA\n", 1, "out of range"),
        ("alice:SCRAM-SHA-256$4096:!!$AAAA:AAAA\n", 1, "invalid salt"),
        ("alice:SCRAM-SHA-256$4096:AAAA$AAAA:AAAA\n", 1, "invalid StoredKey"),
        ("alice:SCRAM-SHA-256$4096:AAAA\n", 1, "expected MECHANISM$ITERATIONS"),
        ("a\x01b:x\n", 1, "control characters"),
    ],
)
def test_bad_scram_file_lines_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_scram_file(text, "users.scram")
    assert info.value.path == "users.scram" and info.value.line == line
    assert message in str(info.value)
    assert str(info.value).startswith(f"users.scram:{line}: ")


def test_duplicate_line_names_both_lines() -> None:
    cred = make_credential("SCRAM-SHA-256", "pw").encode()
    other = make_credential("SCRAM-SHA-512", "pw").encode()
    assert len(parse_scram_file(f"a:{cred}\na:{other}\n")) == 2
    with pytest.raises(ConfigError, match=r"f:3: user 'a' has a second SCRAM-SHA-256 line"):
        parse_scram_file(f"a:{cred}\na:{other}\na:{cred}\n", "f")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read scram_file"):
        load_scram_file(str(tmp_path / "nope"))


def test_set_update_delete(tmp_path: Path) -> None:
    path = str(tmp_path / "users.scram")
    with pytest.raises(ScramFileError, match="use -c"):
        set_user(path, "alice", "pw")
    set_user(path, "alice", "pw", create=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    Path(path).write_text("# my users\n" + Path(path).read_text())
    set_user(path, "bob", "pw2", ["SCRAM-SHA-512"], iterations=5000)
    store = load_scram_file(path)
    assert store.users() == ["alice", "bob"] and len(store) == 3
    bob = store.get("bob", "SCRAM-SHA-512")
    assert bob is not None and bob.iterations == 5000
    before = store.get("alice", "SCRAM-SHA-256")
    set_user(path, "alice", "new")
    after = load_scram_file(path).get("alice", "SCRAM-SHA-256")
    assert after is not None and before is not None and after.salt != before.salt
    lines = Path(path).read_text().splitlines()
    assert lines[0] == "# my users" and lines[1].startswith("alice:SCRAM-SHA-256$")
    delete_user(path, "alice", ["SCRAM-SHA-256"])
    assert len(load_scram_file(path)) == 2
    delete_user(path, "alice")
    assert load_scram_file(path).users() == ["bob"]
    with pytest.raises(ScramFileError, match="user 'alice' not found"):
        delete_user(path, "alice")


@pytest.mark.parametrize(
    ("user", "password", "iterations", "message"),
    [
        ("a:b", "pw", 4096, "cannot contain ':'"),
        ("", "pw", 4096, "empty"),
        ("a", "", 4096, "empty password"),
        ("a", "pw", 1000, "out of range"),
    ],
)
def test_set_user_refuses(
    tmp_path: Path, user: str, password: str, iterations: int, message: str
) -> None:
    with pytest.raises(ScramFileError, match=message):
        set_user(str(tmp_path / "f"), user, password, iterations=iterations, create=True)


def test_set_user_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("ok\n")
    with pytest.raises(ConfigError, match=r":1: expected USER:"):
        set_user(str(path), "a", "pw")
    assert path.read_text() == "ok\n"
