"""The authentication chain (midge.auth.base.AuthChain): every layer that declares a capability is
asked, in order, and the answers combine as documented there; layers that do not declare it are
never asked. Driven with real layers: the password/ACL files, SCRAM, the plugin layer with the
test plugin, and small recording layers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from midge.auth.base import (
    AllowAll,
    AuthChain,
    Authenticator,
    AuthExchange,
    Capability,
    ConnectRequest,
    Pending,
    Reloaded,
    _CountedExchange,
    chain,
)
from midge.auth.files import FileAuthenticator
from midge.auth.passwd import format_line, hash_password
from midge.auth.plugin import PluginAuthenticator, load_plugin, plugin_methods
from midge.auth.scram import ScramAuthenticator, ScramExchange, ScramStore
from midge.auth.scram_cli import set_user
from midge.broker.broker import Broker
from midge.codec.reasons import Reason
from midge.config import ConfigError, parse_mosquitto_conf
from midge.transport.clock import LoopClock

C = Capability


class _Exchange(AuthExchange):
    def __init__(self, who: str) -> None:
        self.who = who

    def start(self, data: bytes | None) -> tuple[int, bytes | None]:
        return Reason.SUCCESS, self.who.encode()


class Layer(Authenticator):
    """A layer that answers as it is told and writes what it is asked into a shared journal."""

    provides = frozenset(Capability)

    def __init__(
        self,
        name: str,
        provides: Iterable[Capability],
        journal: list[tuple[str, str]],
        *,
        connect: int | Pending = 0,
        allow: bool | Pending = True,
        read: bool = True,
        method: str | None = None,
        reload_error: ConfigError | None = None,
        revoked: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.provides = frozenset(provides)
        self.journal = journal
        self.connect = connect
        self.allow = allow
        self.read = read
        self.method = method
        self.reload_error = reload_error
        self.revoked = revoked

    def _asked(self, what: str) -> None:
        self.journal.append((self.name, what))

    def authenticate(self, request: ConnectRequest) -> int | Pending:
        self._asked("connect")
        return self.connect

    def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
        self._asked("enhanced")
        return _Exchange(self.name) if request.auth_method == self.method else None

    def can_publish(self, client_id: str, username: str | None, topic: str) -> bool | Pending:
        self._asked("publish")
        return self.allow

    def can_subscribe(
        self, client_id: str, username: str | None, topic_filter: str
    ) -> bool | Pending:
        self._asked("subscribe")
        return self.allow

    def can_read(self, client_id: str, topic: str) -> bool:
        self._asked("read")
        return self.read

    def reload(self) -> Reloaded:
        self._asked("reload")
        if self.reload_error is not None:
            raise self.reload_error
        return Reloaded([f"{self.name} reloaded"], list(self.revoked))

    def session_ended(self, client_id: str) -> None:
        self._asked("ended")

    def session_restored(self, client_id: str, username: str | None) -> None:
        self._asked(f"restored {username}")

    async def close(self) -> None:
        self._asked("close")


def _request(username: str | None = "alice", password: bytes | None = b"secret") -> ConnectRequest:
    return ConnectRequest("c1", username, password, "127.0.0.1:1", 5)


# -- who is asked ---------------------------------------------------------------------------------


def test_every_layer_that_provides_a_capability_is_asked_in_order_and_no_other() -> None:
    journal: list[tuple[str, str]] = []
    a = Layer("a", {C.CONNECT, C.PUBLISH, C.SESSION_END}, journal)
    b = Layer("b", {C.PUBLISH, C.READ}, journal)
    c = Layer("c", {C.CONNECT, C.SUBSCRIBE, C.SESSION_END, C.SESSION_RESTORED}, journal)
    auth = AuthChain([a, b, c])
    assert auth.provides == a.provides | b.provides | c.provides
    assert auth.authenticate(_request()) == 0
    assert auth.can_publish("c1", "alice", "t") is True
    assert auth.can_subscribe("c1", "alice", "t/#") is True
    assert auth.can_read("c1", "t") is True
    assert auth.enhanced(ConnectRequest("c1", None, None, "p", 5, "M", None)) is None
    auth.session_ended("c1")
    auth.session_restored("c1", "bob")
    assert auth.reload() == Reloaded()
    asyncio.run(auth.close())
    assert journal == [
        ("a", "connect"),
        ("c", "connect"),
        ("a", "publish"),
        ("b", "publish"),
        ("c", "subscribe"),
        ("b", "read"),
        ("a", "ended"),
        ("c", "ended"),
        ("c", "restored bob"),
    ]


def test_a_chain_of_nothing_answers_as_a_broker_with_nothing_configured() -> None:
    for auth in (AuthChain(), chain(None), chain(AllowAll())):
        assert auth.authenticate(_request()) == Reason.SUCCESS
        assert auth.enhanced(ConnectRequest("c", None, None, "p", 5, "SCRAM-SHA-256", b"")) is None
        assert auth.can_publish("c", None, "t") is True
        assert auth.can_subscribe("c", None, "#") is True
        assert auth.can_read("c", "t") is True
        assert not auth.checks_publish and not auth.checks_subscribe
        assert auth.read_check is None
        assert auth.reload() == Reloaded()


def test_a_chain_is_a_layer_of_another() -> None:
    journal: list[tuple[str, str]] = []
    inner = AuthChain([Layer("a", {C.PUBLISH}, journal), Layer("b", {C.PUBLISH}, journal)])
    outer = AuthChain([inner, Layer("c", {C.PUBLISH, C.CONNECT}, journal)])
    assert chain(outer) is outer
    assert outer.provides == {C.PUBLISH, C.CONNECT}
    assert outer.can_publish("c1", None, "t") is True
    assert journal == [("a", "publish"), ("b", "publish"), ("c", "publish")]


# -- how answers combine --------------------------------------------------------------------------


def test_connect_every_layer_must_accept_and_the_first_refusal_is_final() -> None:
    journal: list[tuple[str, str]] = []
    auth = AuthChain(
        [
            Layer("a", {C.CONNECT}, journal),
            Layer("b", {C.CONNECT}, journal, connect=Reason.BAD_USER_NAME_OR_PASSWORD),
            Layer("c", {C.CONNECT}, journal, connect=Reason.NOT_AUTHORIZED),
        ]
    )
    assert auth.authenticate(_request()) == Reason.BAD_USER_NAME_OR_PASSWORD
    assert journal == [("a", "connect"), ("b", "connect")]


@pytest.mark.parametrize(
    ("first", "second", "expected", "second_asked"),
    [
        (0, 0, 0, True),
        (0, Reason.NOT_AUTHORIZED, Reason.NOT_AUTHORIZED, True),
        (Reason.BAD_USER_NAME_OR_PASSWORD, 0, Reason.BAD_USER_NAME_OR_PASSWORD, False),
        (0, "pending 0", 0, True),
        (0, "pending 0x87", Reason.NOT_AUTHORIZED, True),
    ],
)
def test_connect_a_pending_answer_goes_on_with_the_layers_after_it(
    first: int, second: int | str, expected: int, second_asked: bool
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        journal: list[tuple[str, str]] = []
        waiting: asyncio.Future[int] = loop.create_future()
        later: asyncio.Future[int] = loop.create_future()
        answer: int | Pending = later if isinstance(second, str) else second
        auth = AuthChain(
            [
                Layer("a", {C.CONNECT}, journal, connect=waiting),
                Layer("b", {C.PUBLISH}, journal),
                Layer("c", {C.CONNECT}, journal, connect=answer),
            ]
        )
        decision = auth.authenticate(_request())
        assert not isinstance(decision, int) and not decision.done()
        done = loop.create_future()
        decision.add_done_callback(lambda d: done.set_result(d))
        assert journal == [("a", "connect")]  # nothing after the waiting layer yet
        waiting.set_result(first)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if isinstance(second, str) and second_asked:
            assert not decision.done()  # now waiting for c
            later.set_result(int(second.split()[1], 0))
        assert await asyncio.wait_for(done, 2) is decision
        assert decision.done() and decision.result() == expected
        assert (("c", "connect") in journal) == second_asked
        assert ("b", "connect") not in journal

    asyncio.run(main())


def test_connect_a_pending_that_fails_fails_the_chain() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        journal: list[tuple[str, str]] = []
        waiting: asyncio.Future[int] = loop.create_future()
        auth = AuthChain(
            [Layer("a", {C.CONNECT}, journal, connect=waiting), Layer("b", {C.CONNECT}, journal)]
        )
        decision = auth.authenticate(_request())
        assert not isinstance(decision, int)
        waiting.set_exception(OSError("the directory is down"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert decision.done()
        with pytest.raises(OSError, match="directory is down"):
            decision.result()
        assert journal == [("a", "connect")]

    asyncio.run(main())


@pytest.mark.parametrize("capability", [C.PUBLISH, C.SUBSCRIBE])
def test_authorization_every_layer_must_allow_and_the_first_other_answer_is_final(
    capability: Capability,
) -> None:
    def ask(auth: AuthChain) -> bool | Pending:
        if capability is C.PUBLISH:
            return auth.can_publish("c1", "alice", "t")
        return auth.can_subscribe("c1", "alice", "t")

    what = "publish" if capability is C.PUBLISH else "subscribe"
    journal: list[tuple[str, str]] = []
    layers = [
        Layer("a", {capability}, journal),
        Layer("b", {capability}, journal, allow=False),
        Layer("c", {capability}, journal),
    ]
    assert ask(AuthChain(layers)) is False
    assert journal == [("a", what), ("b", what)]

    async def main() -> None:
        for decided, final, c_asked in (
            (True, False, True),
            (True, True, True),
            (False, False, False),
        ):
            journal.clear()
            waiting: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            layers[1].allow = waiting
            layers[2].allow = final
            # The chain's answer is pending; the layers after the waiting one wait their turn
            # and are asked once it allows (the connection takes the result, it does not ask
            # again).
            answer = ask(AuthChain(layers))
            assert not isinstance(answer, bool) and not answer.done()
            assert journal == [("a", what), ("b", what)]
            waiting.set_result(decided)
            assert await _done(answer) is (decided and final)
            assert (("c", what) in journal) == c_asked

    asyncio.run(main())


def test_authorization_pending_through_the_plugin_layer_then_from_its_cache(
    tmp_path: Path,
) -> None:
    """Files (no ACL) then the test plugin: the plugin's decision is pending, and once it is
    done the same question, asked again later, is answered at once from its cache."""

    async def main() -> None:
        plugin = load_plugin("tests.authplugin:create", {"users": "alice:secret", "delay": "0"})
        files = _files(tmp_path)
        auth = AuthChain([files, PluginAuthenticator([plugin], cache_ttl=60)])
        assert auth.checks_publish and auth.checks_subscribe
        code = auth.authenticate(_request("alice", b"secret"))
        assert not isinstance(code, int)
        assert await _done(code) == 0
        first = auth.can_publish("c1", "alice", "alice/x")
        assert first is not True and first is not False
        assert await _done(first) is True
        assert auth.can_publish("c1", "alice", "alice/x") is True  # from the cache
        refused = auth.can_subscribe("c1", "alice", "bob/#")
        assert refused is not True and refused is not False
        assert await _done(refused) is False
        assert auth.can_subscribe("c1", "alice", "bob/#") is False
        assert plugin.asked == [
            ("authenticate", "alice"),
            ("publish", "alice/x"),
            ("subscribe", "bob/#"),
        ]
        # A refusal by the files comes first: the plugin is not asked at all.
        assert auth.authenticate(_request("mallory", b"x")) == Reason.NOT_AUTHORIZED
        assert len(plugin.asked) == 3

    asyncio.run(main())


async def _done(pending: Pending) -> Any:
    finished = asyncio.get_running_loop().create_future()
    pending.add_done_callback(lambda p: finished.set_result(None))
    await asyncio.wait_for(finished, 2)
    return pending.result()


def test_enhanced_the_first_layer_with_an_exchange_serves_the_method(tmp_path: Path) -> None:
    journal: list[tuple[str, str]] = []
    scram_file = str(tmp_path / "users.scram")
    set_user(scram_file, "alice", "wonderland", create=True)
    scram = ScramAuthenticator.from_file(scram_file)
    auth = AuthChain(
        [
            scram,
            Layer("a", {C.CONNECT}, journal, method="SCRAM-SHA-256"),
            Layer("b", {C.ENHANCED}, journal, method="SCRAM-SHA-256"),
            Layer("c", {C.ENHANCED}, journal, method="OTHER"),
        ]
    )

    def exchange(method: str) -> AuthExchange | None:
        """The layer's own exchange (the chain hands it out wrapped, to count failures)."""
        got = auth.enhanced(ConnectRequest("c1", None, None, "p", 5, method, b""))
        return got.exchange if isinstance(got, _CountedExchange) else got

    assert isinstance(exchange("SCRAM-SHA-256"), ScramExchange)
    assert journal == []  # SCRAM came first and served it
    other = exchange("OTHER")
    assert isinstance(other, _Exchange) and other.who == "c"
    assert journal == [("b", "enhanced"), ("c", "enhanced")]
    assert exchange("UNKNOWN") is None


def test_read_every_layer_must_allow_and_the_hot_path_gets_the_one_checker() -> None:
    journal: list[tuple[str, str]] = []
    a = Layer("a", {C.READ}, journal)
    b = Layer("b", {C.READ}, journal, read=False)
    c = Layer("c", {C.READ}, journal)
    assert AuthChain([a, c]).can_read("c1", "t") is True
    both = AuthChain([a, b, c])
    journal.clear()
    assert both.can_read("c1", "t") is False
    assert journal == [("a", "read"), ("b", "read")]
    assert both.read_check == both.can_read
    # One layer checks reads: the broker calls that layer's own method, nothing in between.
    only = AuthChain([Layer("x", {C.CONNECT}, journal), a])
    assert only.read_check == a.can_read
    assert AuthChain([Layer("x", {C.CONNECT, C.PUBLISH}, journal)]).read_check is None


# -- the file layer's declarations and the broker's flags -----------------------------------------


def _files(tmp_path: Path, acl: str | None = None, users: dict[str, bytes] | None = None) -> Any:
    passwd = tmp_path / "passwd"
    if users is None:
        users = {"alice": b"secret"}
    passwd.write_text("".join(format_line(u, hash_password(p, kind=6)) for u, p in users.items()))
    conf = f"listener 0 127.0.0.1\npassword_file {passwd}\n"
    if acl is not None:
        (tmp_path / "acl").write_text(acl)
        conf += f"acl_file {tmp_path / 'acl'}\n"
    return FileAuthenticator(parse_mosquitto_conf(conf))


def test_without_an_acl_nothing_is_checked_per_message(tmp_path: Path) -> None:
    files = _files(tmp_path)
    assert C.PUBLISH not in files.provides and C.READ not in files.provides
    auth = AuthChain([files])
    assert not auth.checks_publish and auth.read_check is None
    loop = asyncio.new_event_loop()
    clock = LoopClock(loop)  # the Scheduler the server gives the broker
    try:
        broker = Broker(parse_mosquitto_conf("listener 0\n"), clock, files)
        assert broker.authenticator.layers == (files,)
        assert broker.checks_publish is False
        assert broker.can_read is None and broker.checks_read is False
        with_acl = _files(tmp_path, "user alice\ntopic readwrite alice/#\n")
        broker = Broker(parse_mosquitto_conf("listener 0\n"), clock, AuthChain([with_acl]))
        assert broker.checks_publish is True and broker.checks_read is True
        assert broker.can_read == with_acl.can_read
    finally:
        loop.close()


def test_the_file_layer_in_a_chain(tmp_path: Path) -> None:
    files = _files(tmp_path, "user alice\ntopic readwrite alice/#\n")
    journal: list[tuple[str, str]] = []
    after = Layer("after", {C.CONNECT, C.PUBLISH, C.READ}, journal)
    auth = AuthChain([files, after])
    assert auth.authenticate(_request("alice", b"wrong")) == Reason.NOT_AUTHORIZED
    assert journal == []
    assert auth.authenticate(_request("alice", b"secret")) == 0
    assert auth.can_publish("c1", "alice", "bob/x") is False
    assert auth.can_publish("c1", "alice", "alice/x") is True
    assert auth.can_read("c1", "bob/x") is False
    assert auth.can_read("c1", "alice/x") is True
    assert journal == [("after", "connect"), ("after", "publish"), ("after", "read")]


# -- reload, session end, close -------------------------------------------------------------------


def test_reload_every_layer_that_reloads_and_a_failure_keeps_only_that_layer(
    tmp_path: Path,
) -> None:
    journal: list[tuple[str, str]] = []
    scram_file = tmp_path / "users.scram"
    set_user(str(scram_file), "alice", "wonderland", create=True)
    scram = ScramAuthenticator.from_file(str(scram_file))
    files = _files(tmp_path, "user alice\ntopic read a/#\n", {"alice": b"a", "bob": b"b"})
    assert files.authenticate(ConnectRequest("bob-1", "bob", b"b", "p", 4)) == 0
    assert files.authenticate(ConnectRequest("alice-1", "alice", b"a", "p", 4)) == 0
    not_reloading = Layer("quiet", {C.CONNECT}, journal)
    failing = Layer("broken", {C.RELOAD}, journal, reload_error=ConfigError("bad", "f", 3))
    last = Layer("last", {C.RELOAD}, journal, revoked=("x-1",))
    auth = AuthChain([scram, not_reloading, files, failing, last])

    passwd = tmp_path / "passwd"
    passwd.write_text(
        "".join(line for line in passwd.read_text().splitlines(True) if "bob" not in line)
    )
    (tmp_path / "acl").write_text("user alice\ntopic read b/#\n")
    scram_file.write_text("alice\n")  # not a scram_file line: SCRAM keeps what it had
    before = scram.store
    done = auth.reload()
    assert scram.store is before
    assert len(done.errors) == 2
    assert str(done.errors[0]).startswith(f"{scram_file}:1: ") and str(done.errors[1]) == "f:3: bad"
    assert done.revoked == ["bob-1", "x-1"]  # bob left the password file
    assert "last reloaded" in done.notices
    assert journal == [("broken", "reload"), ("last", "reload")]
    assert files.can_read("alice-1", "b/x") and not files.can_read("alice-1", "a/x")


def test_reload_has_one_signature_on_every_layer(tmp_path: Path) -> None:
    scram_file = tmp_path / "users.scram"
    set_user(str(scram_file), "alice", "wonderland", create=True)
    layers: list[Authenticator] = [
        ScramAuthenticator.from_file(str(scram_file)),
        _files(tmp_path),
        AuthChain(),
    ]
    for layer in layers:
        assert isinstance(layer.reload(), Reloaded)
    assert C.RELOAD not in ScramAuthenticator(ScramStore()).provides  # no file: nothing to reload


def test_close_every_layer_that_closes() -> None:
    class Closing:
        def __init__(self) -> None:
            self.closed = False

        async def authorize(self, client: Any, action: str, topic: str) -> bool:
            return True

        async def close(self) -> None:
            self.closed = True

    journal: list[tuple[str, str]] = []
    closing = Closing()
    plugins = PluginAuthenticator([closing, object()])  # one without close: not closed
    auth = AuthChain([plugins, Layer("a", {C.CLOSE}, journal), Layer("b", {C.CONNECT}, journal)])
    asyncio.run(auth.close())
    assert closing.closed and journal == [("a", "close")]


# -- declarations ---------------------------------------------------------------------------------


def test_a_method_without_its_declaration_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"defines can_publish\(\).*Capability\.PUBLISH"):

        class Forgot(Authenticator):
            provides = frozenset({C.CONNECT})

            def can_publish(self, client_id: str, username: str | None, topic: str) -> bool:
                return False

    with pytest.raises(TypeError, match=r"Capability\.ENHANCED"):

        class Inherited(AllowAll):
            def enhanced(self, request: ConnectRequest) -> AuthExchange | None:
                return None


def test_a_layer_must_be_an_authenticator() -> None:
    class Undeclared:
        def can_publish(self, client_id: str, username: str | None, topic: str) -> bool:
            return False

    with pytest.raises(TypeError, match=r"not a midge\.auth\.base\.Authenticator"):
        AuthChain([AllowAll(), Undeclared()])  # type: ignore[list-item]


def test_a_plugin_declares_what_it_defines_without_saying_so() -> None:
    class OnlyAuthorize:
        async def authorize(self, client: Any, action: str, topic: str) -> bool:
            return False

    class OnlyAuthenticate:
        async def authenticate(self, client: Any) -> bool:
            return True

    plugin = load_plugin("tests.authplugin:create", {})
    assert plugin_methods(plugin).close is None
    assert PluginAuthenticator([plugin]).provides == {C.CONNECT, C.PUBLISH, C.SUBSCRIBE}
    assert PluginAuthenticator([OnlyAuthorize()]).provides == {C.PUBLISH, C.SUBSCRIBE}
    assert PluginAuthenticator([OnlyAuthenticate()]).provides == {C.CONNECT}
    assert PluginAuthenticator([object()]).provides == frozenset()
    # Nothing to ask: a chain with only such a plugin checks nothing per message.
    assert not AuthChain([PluginAuthenticator([OnlyAuthenticate()])]).checks_publish


def test_the_file_layer_grants_every_filter_and_read_checks_clients_of_other_layers(
    tmp_path: Path,
) -> None:
    """An ACL file refuses no SUBSCRIBE (Mosquitto 2's security_default.c); a subscriber that
    another layer authenticated (SCRAM, a plugin) is registered with its rules there, so its
    deliveries are still read-checked, under the identity it subscribed with."""
    files = _files(tmp_path, "user alice\ntopic read alice/#\nuser bob\ntopic read bob/#\n")
    assert files.can_read("scram-1", "alice/x") is False  # unknown: nothing, fail closed
    assert files.can_subscribe("scram-1", "alice", "#") is True
    assert files.can_subscribe("scram-1", "alice", "bob/#") is True
    assert files.can_read("scram-1", "alice/x") is True
    assert files.can_read("scram-1", "bob/x") is False
    # The client id comes back as another user (authenticated elsewhere): its rules now.
    assert files.can_subscribe("scram-1", "bob", "#") is True
    assert files.can_read("scram-1", "alice/x") is False
    assert files.can_read("scram-1", "bob/x") is True
    per_listener = tmp_path / "per"
    per_listener.mkdir()
    (per_listener / "acl").write_text("topic read #\n")
    conf = (
        f"per_listener_settings true\nlistener 0 127.0.0.1\nacl_file {per_listener / 'acl'}\n"
        "allow_anonymous true\n"
    )
    files = FileAuthenticator(parse_mosquitto_conf(conf))
    # No telling which listener's rules apply to a client this layer did not see: refused.
    assert files.can_subscribe("elsewhere", "carol", "x") is False
