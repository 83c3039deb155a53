"""The LDAP backend (issue 6) against a real OpenLDAP ``slapd`` the tests start (tests/slapd.py):
direct bind and search-then-bind, group rules on PUBLISH and SUBSCRIBE in v3.1.1 and v5, a
directory that is down or hangs (refused: fail closed), StartTLS and LDAPS with a test CA,
configuration errors, and one end-to-end run of ``mosquitto_pub``/``mosquitto_sub`` against a
``midge broker`` process.

The rule evaluation itself (no directory needed) is tested first.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from midge.auth.ldap import (
    _escape_filter,
    _escape_rdn,
    decide,
    filter_covers,
    parse_settings,
)
from midge.auth.ldap_options import LdapSettings, RawOption
from midge.auth.plugin import Client
from midge.codec.packets import Puback, Publish
from midge.codec.reasons import ConnackV3, Reason
from midge.config import ConfigError, load_config
from tests import slapd as slapd_mod
from tests.conftest import RunningBroker
from tests.procbroker import ProcBroker, free_port, run_midge
from tests.rawclient import RawClient
from tests.slapd import SERVICE_DN, SERVICE_PASSWORD, SUFFIX, USERS, Slapd, listens

V5, V311 = 5, 4
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
RULES = [
    "sensors readwrite sensors/%u/#",
    "ops read sensors/#",
    f"cn=admins,{GROUPS} readwrite #",
    "* read public/#",
    "* deny sensors/secret/#",
]


def settings(*lines: str) -> LdapSettings:
    """``auth_ldap_*`` lines as in mosquitto.conf (without the prefix), checked."""
    raw: list[RawOption] = []
    for i, line in enumerate(lines, 1):
        name, _, value = line.partition(" ")
        raw.append((f"auth_ldap_{name}", value, "<test>", i))
    return parse_settings(raw)


def direct(url: str, *more: str) -> LdapSettings:
    return settings(f"url {url}", f"bind_dn uid=%u,{PEOPLE}", *more)


def with_rules(url: str, *more: str) -> LdapSettings:
    return direct(url, f"group_base {GROUPS}", *(f"group_rule {r}" for r in RULES), *more)


# ---------------------------------------------------------------------------------------------
# Rules, escaping, options (no directory)


def test_filter_covers() -> None:
    assert filter_covers("a/#", "a/+/b") and filter_covers("a/#", "a/#")
    assert filter_covers("a/+/c", "a/+/c") and filter_covers("#", "a/b")
    assert not filter_covers("a/+", "a/#")  # a/# also matches a and a/b/c
    assert not filter_covers("a/b", "a/+") and not filter_covers("a/+/#", "a/#")
    assert not filter_covers("#", "$SYS/#") and filter_covers("$SYS/#", "$SYS/broker/+")


def test_decide_like_mosquitto_acl() -> None:
    rules = settings("url ldap://x", "bind_dn uid=%u", "group_base o=x", *(
        f"group_rule {r}" for r in RULES
    )).rules  # fmt: skip
    alice = Client("c1", "alice")
    sensors = frozenset({"sensors"})
    assert decide(rules, sensors, alice, "publish", "sensors/alice/t")
    assert decide(rules, sensors, alice, "subscribe", "sensors/alice/#")
    assert decide(rules, sensors, alice, "subscribe", "$share/g/sensors/alice/+")
    assert not decide(rules, sensors, alice, "publish", "sensors/bob/t")
    assert not decide(rules, sensors, alice, "publish", "public/x")  # read only
    assert decide(rules, frozenset(), alice, "subscribe", "public/#")
    admins = frozenset({f"cn=admins,{GROUPS}".lower()})
    assert decide(rules, admins, alice, "publish", "any/where")
    assert not decide(rules, admins, alice, "publish", "sensors/secret/x")  # deny first
    assert not decide(rules, admins, alice, "subscribe", "$SYS/#")  # # does not grant $
    # A wildcard in the user name or client id would widen %u / %c: refused (as Mosquitto).
    assert not decide(rules, sensors, Client("c1", "+"), "publish", "sensors/+/t")


def test_escaping() -> None:
    assert _escape_filter("a*)(uid=*") == "a\\2a\\29\\28uid=\\2a"
    assert _escape_rdn("x,ou=admins") == "x\\,ou\\=admins"
    assert _escape_rdn(" #a ") == "\\ #a\\ "


@pytest.mark.parametrize(
    ("lines", "message", "line"),
    [
        (["bind_dn uid=%u,o=x"], "need auth_ldap_url", 1),
        (["url http://x", "bind_dn uid=%u"], "invalid URL 'http://x'", 1),
        (["url ldap://x"], "needs auth_ldap_bind_dn", 1),
        (["url ldap://x", "bind_dn uid=%u", "search_base o=x"], "give one", 2),
        (["url ldap://x", "bind_dn uid=alice"], "must contain %u", 2),
        (["url ldap://x", "bind_dn uid=%u", "group_rule g read a/#"], "group_base", 3),
        (["url ldap://x", "bind_dn uid=%u", "group_base o=x", "group_rule g rw a"], "access", 4),
        (["url ldap://x", "bind_dn uid=%u", "group_base o=x", "group_rule g read a/#/b"], "#", 4),
        (["url ldap://x", "bind_dn uid=%u", "ca_file /no/such/ca.pem"], "cannot read CA", 3),
        (["url ldap://x", "bind_dn uid=%u", "timeout soon"], "seconds", 3),
        (["url ldap://x", "bind_dn uid=%u", "service_dn cn=s"], "go together", 3),
        (["url ldaps://x", "bind_dn uid=%u", "start_tls true"], "one or the other", 3),
        (["url ldap://x", "bind_dn uid=%u", "bind_dn uid=%u"], "given twice", 3),
        (["url ldap://x", "bind_dn uid=%u", "groupbase o=x"], "unknown option", 3),
    ],
)
def test_bad_options_name_the_line(lines: list[str], message: str, line: int) -> None:
    with pytest.raises(ConfigError) as err:
        settings(*lines)
    assert message in str(err.value) and err.value.line == line


def test_options_in_both_file_formats(tmp_path: Path) -> None:
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        "listener 1883\n"
        "auth_ldap_url ldap://a:389 ldap://b:389\n"
        "auth_ldap_search_base ou=people,dc=example,dc=org\n"
        "auth_ldap_service_dn cn=mqtt,dc=example,dc=org\n"
        "auth_ldap_service_password s3cret\n"
        "auth_ldap_group_base ou=groups,dc=example,dc=org\n"
        'auth_ldap_group_rule "cn=ops, ou=groups,dc=example,dc=org" read #\n'
        "auth_ldap_start_tls true\n"
        "auth_ldap_timeout 2.5\n"
    )
    cfg = load_config(str(conf))
    assert cfg.auth_ldap is not None
    assert cfg.auth_ldap.urls == ["ldap://a:389", "ldap://b:389"]
    assert cfg.auth_ldap.start_tls and cfg.auth_ldap.timeout == 2.5
    assert cfg.auth_ldap.rules[0].group == "cn=ops,ou=groups,dc=example,dc=org"
    assert "s3cret" not in repr(cfg)  # never in a log line
    toml = tmp_path / "midge.toml"
    toml.write_text(
        'auth_ldap_url = "ldaps://a"\n'
        'auth_ldap_bind_dn = "uid=%u,ou=people,dc=example,dc=org"\n'
        'auth_ldap_group_base = "ou=groups,dc=example,dc=org"\n'
        "auth_ldap_pool_size = 2\n"
        "auth_ldap_group_rule = [\n"
        '  "sensors readwrite sensors/%u/#",\n'
        '  "* read public/#",\n'
        "]\n"
        "auth_ldap_start_tls = false\n"
    )
    cfg = load_config(str(toml))
    assert cfg.auth_ldap is not None and cfg.auth_ldap.pool_size == 2
    assert [r.topic for r in cfg.auth_ldap.rules] == ["sensors/%u/#", "public/#"]
    toml.write_text('auth_ldap_url = "ldap://a"\nauth_ldap_search_base = "o=x"\nauth_ldap_x = 1\n')
    with pytest.raises(ConfigError, match=r"midge.toml:3: unknown option 'auth_ldap_x'"):
        load_config(str(toml))


def test_a_bad_option_stops_the_broker(tmp_path: Path) -> None:
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        "listener 0 127.0.0.1\nauth_ldap_url ldap://127.0.0.1\n"
        f"auth_ldap_bind_dn uid=%u,{PEOPLE}\nauth_ldap_group_base {GROUPS}\n"
        "auth_ldap_group_rule sensors sometimes sensors/#\n"
    )
    done = run_midge(["broker", "-c", str(conf)])
    assert done.returncode == 1
    assert f"{conf}:5: auth_ldap_group_rule: invalid access 'sometimes'" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------
# Against slapd


def need_slapd() -> None:
    why = slapd_mod.available()
    if why is not None:
        pytest.skip(why)


@pytest.fixture(scope="module")
def directory() -> Iterator[Slapd]:
    """One slapd for the tests that do not change it."""
    need_slapd()
    server = Slapd().start()
    yield server
    server.stop()


@pytest.fixture
def own_directory() -> Iterator[Callable[..., Slapd]]:
    """A fresh slapd for a test that changes, stops or freezes it."""
    need_slapd()
    started: list[Slapd] = []

    def start(tls: bool = False) -> Slapd:
        server = Slapd(tls=tls).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_a_paused_directory_keeps_its_port(own_directory: Callable[..., Slapd]) -> None:
    """The tests' slapd, paused, keeps its port bound (connections refused, as with no server)
    so that no other test's server takes it meanwhile and answers in its place; resumed, it is
    this slapd that listens there again."""
    server = own_directory()
    server.pause()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    other = socket.socket()
    with pytest.raises(OSError):
        other.bind(("127.0.0.1", server.port))
    other.close()
    server.resume()
    assert server.proc is not None and listens(server.proc.pid, server.port)


def login(client: RawClient, user: str | None, password: bytes | None, cid: str = "") -> int:
    fields = {} if user is None else {"username": user}
    if password is not None:
        fields["password"] = password  # type: ignore[assignment]
    return client.connect(cid or f"c-{user}", **fields).reason_code


def codes(version: int) -> tuple[int, int]:
    """(bad user name or password, not authorized) for ``version``."""
    if version == V5:
        return Reason.BAD_USER_NAME_OR_PASSWORD, Reason.NOT_AUTHORIZED
    return ConnackV3.BAD_USERNAME_OR_PASSWORD, ConnackV3.NOT_AUTHORIZED


@pytest.mark.parametrize("version", [V311, V5])
def test_direct_bind(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    directory: Slapd,
    version: int,
) -> None:
    broker = make_broker(auth_ldap=direct(directory.url))
    bad, refused = codes(version)
    assert login(clients(broker, version), "alice", b"alicepw") == 0
    wrong = clients(broker, version)
    assert login(wrong, "alice", b"bobpw") == bad
    assert wrong.wait_closed(2)
    assert login(clients(broker, version), "mallory", b"x") == bad  # unknown user
    assert login(clients(broker, version), "alice", b"") == bad  # anonymous bind, not a login
    if version == V5:  # (3.1.1 allows no password without a user name only)
        assert login(clients(broker, version), "alice", None) == bad
    assert login(clients(broker, version), None, None) == refused  # no user name at all
    # A user name is a value in the DN, never more of the DN.
    assert login(clients(broker, version), f"alice,{PEOPLE}", b"alicepw") == bad


@pytest.mark.parametrize("version", [V311, V5])
def test_search_then_bind(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    directory: Slapd,
    version: int,
) -> None:
    bad, _ = codes(version)
    service = settings(
        f"url {directory.url}",
        f"search_base {PEOPLE}",
        "search_filter (&(objectClass=inetOrgPerson)(uid=%u))",
        f"service_dn {SERVICE_DN}",
        f"service_password {SERVICE_PASSWORD}",
    )
    anonymous = settings(f"url {directory.url}", f"search_base {PEOPLE}")
    for config in (service, anonymous):
        broker = make_broker(auth_ldap=config)
        assert login(clients(broker, version), "bob", b"bobpw") == 0
        assert login(clients(broker, version), "bob", b"alicepw") == bad
        assert login(clients(broker, version), "nobody", b"x") == bad
        assert login(clients(broker, version), "bob", b"") == bad
        # (uid=*) would find every user: the * is escaped, and nobody is called "*".
        assert login(clients(broker, version), "*", b"alicepw") == bad
        assert login(clients(broker, version), "b*", b"bobpw") == bad


@pytest.mark.parametrize("version", [V311, V5])
def test_group_rules(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    directory: Slapd,
    version: int,
) -> None:
    broker = make_broker(auth_ldap=with_rules(directory.url))
    denied_sub = Reason.NOT_AUTHORIZED if version == V5 else 0x80
    denied_pub = Reason.NOT_AUTHORIZED if version == V5 else 0  # 3.1.1: acked, not routed

    bob = clients(broker, version)  # ops: read sensors/#
    assert login(bob, "bob", b"bobpw") == 0
    assert bob.subscribe("sensors/#", 1).reason_codes == [1]
    assert bob.subscribe("#", 1).reason_codes == [denied_sub]

    alice = clients(broker, version)  # sensors: readwrite sensors/alice/#
    assert login(alice, "alice", b"alicepw") == 0
    assert alice.subscribe("sensors/alice/in/+", 0).reason_codes == [0]
    assert alice.subscribe("sensors/bob/#", 0).reason_codes == [denied_sub]
    assert alice.subscribe("sensors/#", 0).reason_codes == [denied_sub]
    assert alice.subscribe("public/#", 0).reason_codes == [0]  # every user (*)
    ok = alice.publish("sensors/alice/t", b"1", qos=1)
    assert isinstance(ok, Puback) and ok.reason_code == 0
    no = alice.publish("sensors/bob/t", b"2", qos=1)
    assert isinstance(no, Puback) and no.reason_code == denied_pub
    no = alice.publish("public/news", b"3", qos=1)  # read only
    assert isinstance(no, Puback) and no.reason_code == denied_pub

    carol = clients(broker, version)  # admins (a posixGroup, by DN): readwrite #
    assert login(carol, "carol", b"carolpw") == 0
    ok = carol.publish("sensors/bob/t", b"4", qos=1)
    assert isinstance(ok, Puback) and ok.reason_code == 0
    no = carol.publish("sensors/secret/x", b"5", qos=1)  # * deny wins over the grant
    assert isinstance(no, Puback) and no.reason_code == denied_pub

    dave = clients(broker, version)  # no group
    assert login(dave, "dave", b"davepw") == 0
    assert dave.subscribe("public/#", 0).reason_codes == [0]
    assert dave.subscribe("sensors/dave/#", 0).reason_codes == [denied_sub]

    got = [bob.expect(Publish, timeout=5) for _ in range(2)]
    for p in got:
        bob.ack(p)
    assert [(p.topic, p.payload) for p in got] == [
        ("sensors/alice/t", b"1"),
        ("sensors/bob/t", b"4"),
    ]
    bob.expect_nothing(0.3)  # the refused ones were not routed


def test_groups_are_read_once_per_login(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    own_directory: Callable[..., Slapd],
) -> None:
    """Group membership is read at login and kept (auth_cache_ttl) for the user, not asked per
    topic: a change in the directory shows at the user's next login once the TTL has passed."""
    server = own_directory()
    broker = make_broker(auth_ldap=with_rules(server.url), auth_cache_ttl=0.5)
    alice = clients(broker)
    assert login(alice, "alice", b"alicepw") == 0
    server.modify(
        f"dn: cn=sensors,{GROUPS}\nchangetype: modify\ndelete: member\nmember: uid=alice,{PEOPLE}\n"
    )
    server.freeze(True)  # the directory is not asked again for alice's publishes
    try:
        ok = alice.publish("sensors/alice/new", b"x", qos=1)
        assert isinstance(ok, Puback) and ok.reason_code == Reason.NO_MATCHING_SUBSCRIBERS
    finally:
        server.freeze(False)
    time.sleep(0.6)
    again = clients(broker)
    assert login(again, "alice", b"alicepw", "c-again") == 0
    no = again.publish("sensors/alice/other", b"y", qos=1)
    assert isinstance(no, Puback) and no.reason_code == Reason.NOT_AUTHORIZED


@pytest.mark.parametrize("version", [V311, V5])
def test_directory_down_refuses(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    own_directory: Callable[..., Slapd],
    version: int,
) -> None:
    """Fail closed: nothing listening, a server that stops after use (its pooled connection
    dead), a server that hangs: all refuse with "not authorized"; back up, logins work."""
    _, refused = codes(version)
    nowhere = make_broker(auth_ldap=direct(f"ldap://127.0.0.1:{free_port()}"))
    assert login(clients(nowhere, version), "alice", b"alicepw") == refused
    server = own_directory()
    broker = make_broker(auth_ldap=direct(server.url, "timeout 0.5"), auth_http_timeout=1.0)
    assert login(clients(broker, version), "alice", b"alicepw") == 0
    server.pause()
    assert login(clients(broker, version), "alice", b"alicepw") == refused
    server.resume()
    assert login(clients(broker, version), "alice", b"alicepw") == 0
    server.freeze(True)
    try:
        started = time.monotonic()
        assert login(clients(broker, version), "bob", b"bobpw") == refused
        assert time.monotonic() - started < 2.5
    finally:
        server.freeze(False)


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
def test_tls_with_a_test_ca(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    own_directory: Callable[..., Slapd],
    tmp_path: Path,
    mode: str,
) -> None:
    server = own_directory(tls=True)
    assert server.ca_file is not None
    url, extra = (server.url, ["start_tls true"]) if mode == "starttls" else (server.ldaps_url, [])
    good = make_broker(auth_ldap=direct(url, f"ca_file {server.ca_file}", *extra))
    assert login(clients(good), "alice", b"alicepw") == 0
    assert login(clients(good), "alice", b"wrong") == Reason.BAD_USER_NAME_OR_PASSWORD
    # A certificate from a CA we were not told to trust: refused, and no password is sent.
    other_ca, _, _ = slapd_mod.make_ca(tmp_path)
    untrusted = make_broker(auth_ldap=direct(url, f"ca_file {other_ca}", *extra))
    assert login(clients(untrusted), "alice", b"alicepw") == Reason.NOT_AUTHORIZED


def test_with_mosquitto_clients(own_directory: Callable[..., Slapd], tmp_path: Path) -> None:
    """A ``midge broker`` process configured by mosquitto.conf, driven by ``mosquitto_pub`` and
    ``mosquitto_sub`` with ``-u``/``-P``, over StartTLS to slapd."""
    if not shutil.which("mosquitto_pub"):
        pytest.skip("mosquitto-clients not installed (make test installs them)")
    server = own_directory(tls=True)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"auth_ldap_url {server.url}\n"
        "auth_ldap_start_tls true\n"
        f"auth_ldap_ca_file {server.ca_file}\n"
        f"auth_ldap_search_base {PEOPLE}\n"
        f"auth_ldap_service_dn {SERVICE_DN}\n"
        f"auth_ldap_service_password {SERVICE_PASSWORD}\n"
        f"auth_ldap_group_base {GROUPS}\n" + "".join(f"auth_ldap_group_rule {r}\n" for r in RULES)
    )
    with ProcBroker(("-c", str(conf))) as proc:
        proc.wait_listening()
        common = ["-h", "127.0.0.1", "-p", str(port)]

        def pub(
            user: str, password: str, topic: str, *more: str
        ) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["mosquitto_pub", *common, "-u", user, "-P", password, "-t", topic,
                 "-m", "hello", "-q", "1", *more],
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip

        sub = subprocess.Popen(
            ["mosquitto_sub", *common, "-V", "5", "-u", "bob", "-P", USERS["bob"],
             "-t", "sensors/#", "-C", "1", "-W", "10", "-v"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            time.sleep(0.7)
            ok = pub("alice", USERS["alice"], "sensors/alice/temp", "-V", "5")
            assert ok.returncode == 0, ok.stderr
            out, err = sub.communicate(timeout=10)
            assert out.strip() == "sensors/alice/temp hello", err
        finally:
            sub.kill()
            sub.wait()
        bad = pub("alice", "wrong", "sensors/alice/temp", "-V", "mqttv311")
        assert bad.returncode != 0
        assert "bad user name or password" in bad.stderr.lower()
        denied = pub("alice", USERS["alice"], "sensors/bob/temp", "-V", "5")
        assert "publish 1 failed: not authorized" in denied.stderr.lower()  # PUBACK 0x87
