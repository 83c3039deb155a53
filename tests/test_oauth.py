"""The OAuth 2.0 / OIDC backend (issue 6) against a local identity provider the test starts: a
small HTTP server in a thread serving the OIDC discovery document, the JWKS and an RFC 7662
introspection endpoint, with keys generated here by ``cryptography``.

Real sockets throughout: our raw client for exact reason codes (v3.1.1 and v5), and
``mosquitto_pub``/``mosquitto_sub`` with ``-u``/``-P`` against a ``midge broker`` process.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from midge.auth.oauth import allowed, filter_covers, parse_acl
from midge.auth.oauth_options import OAuthConfig
from midge.codec.packets import Disconnect, Puback, Publish, Will
from midge.codec.reasons import ConnackV3, Reason
from tests.conftest import RunningBroker
from tests.interop.clients import mosquitto_pub
from tests.procbroker import ProcBroker, free_port
from tests.rawclient import RawClient

V5, V311 = 5, 4
AUD = "mqtt-broker"


class IdentityProvider:
    """A tiny OIDC provider: ``/.well-known/openid-configuration``, ``/jwks`` (the keys in
    ``published``), ``/introspect`` (answers from ``active``, HTTP Basic ``broker:s3cret``).
    Every request path is recorded."""

    def __init__(self) -> None:
        self.private: dict[str, tuple[Any, str]] = {}  # kid -> (private key, alg)
        self.published: list[str] = []  # kids in the JWKS
        self.active: dict[str, dict[str, Any]] = {}  # token -> introspection answer
        self.requests: list[str] = []
        self.introspect_auth: list[str | None] = []
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                idp.requests.append(self.path)
                if self.path == "/.well-known/openid-configuration":
                    self.reply(
                        200,
                        {
                            "issuer": idp.url,
                            "jwks_uri": idp.url + "/jwks",
                            "introspection_endpoint": idp.url + "/introspect",
                        },
                    )
                elif self.path == "/jwks":
                    self.reply(200, {"keys": [idp.jwk(kid) for kid in idp.published]})
                else:
                    self.reply(404, {})

            def do_POST(self) -> None:
                idp.requests.append(self.path)
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                form = urllib.parse.parse_qs(body)
                idp.introspect_auth.append(self.headers.get("Authorization"))
                expected = "Basic " + base64.b64encode(b"broker:s3cret").decode()
                if self.headers.get("Authorization") != expected:
                    self.reply(401, {"error": "invalid_client"})
                    return
                token = form.get("token", [""])[0]
                self.reply(200, idp.active.get(token, {"active": False}))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def new_key(self, kid: str, alg: str = "RS256", publish: bool = True) -> None:
        if alg.startswith("RS"):
            key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        self.private[kid] = (key, alg)
        if publish:
            self.published.append(kid)

    def jwk(self, kid: str) -> dict[str, Any]:
        key, alg = self.private[kid]
        algo = RSAAlgorithm if alg.startswith("RS") else ECAlgorithm
        jwk: dict[str, Any] = algo.to_jwk(key.public_key(), as_dict=True)
        jwk.update(kid=kid, alg=alg, use="sig")
        return jwk

    def token(
        self, kid: str = "k1", ttl: float = 300, header_kid: str | None = None, **claims: Any
    ) -> str:
        key, alg = self.private[kid]
        now = int(time.time())
        payload = {"iss": self.url, "aud": AUD, "sub": "alice", "iat": now, "exp": now + ttl}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": header_kid or kid})

    def count(self, path: str) -> int:
        return self.requests.count(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.new_key("k1", "RS256")
    provider.new_key("e1", "ES256")
    yield provider
    provider.close()


def jwt_broker(
    make_broker: Callable[..., RunningBroker], idp: IdentityProvider, **opts: Any
) -> RunningBroker:
    opts.setdefault("issuer", idp.url)  # keys found by OIDC discovery
    opts.setdefault("audience", AUD)
    return make_broker(auth_oauth=OAuthConfig(mode="jwt", **opts))


def login(client: RawClient, token: str, user: str = "alice", cid: str = "", **fields: Any) -> int:
    connack = client.connect(cid or f"c-{user}", username=user, password=token.encode(), **fields)
    return connack.reason_code


def bad(version: int) -> int:
    return Reason.BAD_USER_NAME_OR_PASSWORD if version == V5 else ConnackV3.BAD_USERNAME_OR_PASSWORD


def refused(version: int) -> int:
    return Reason.NOT_AUTHORIZED if version == V5 else ConnackV3.NOT_AUTHORIZED


def usernames(broker: RunningBroker) -> dict[str, str | None]:
    assert broker.server.broker is not None
    conns = broker.server.broker.connections
    names: dict[str, str | None] = broker.call(lambda: {c.client_id: c.username for c in conns})
    return names


# -- JWT ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V311, V5])
def test_valid_tokens_rs256_and_es256(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    idp: IdentityProvider,
    version: int,
) -> None:
    broker = jwt_broker(make_broker, idp)
    assert login(clients(broker, version), idp.token("k1"), cid="rsa") == 0
    assert login(clients(broker, version), idp.token("e1", sub="bob"), "anything", "ec") == 0
    # The token's sub is the connection's user name (what ACLs and logs see).
    assert usernames(broker) == {"rsa": "alice", "ec": "bob"}
    assert idp.count("/.well-known/openid-configuration") == 1
    assert idp.count("/jwks") == 1  # cached


@pytest.mark.parametrize("version", [V311, V5])
def test_invalid_tokens_are_refused(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    idp: IdentityProvider,
    version: int,
) -> None:
    broker = jwt_broker(make_broker, idp, leeway=0)
    idp.new_key("other", "RS256", publish=False)
    good = idp.token("k1")
    head, body, sig = good.split(".")
    other_sig = idp.token("other", header_kid="k1").split(".")[2]
    hs_key = "k1-secret-that-is-long-enough-for-hs256"
    cases = {
        "expired": idp.token("k1", ttl=-5),
        "wrong audience": idp.token("k1", aud="someone-else"),
        "wrong issuer": idp.token("k1", iss="https://evil.example"),
        "no exp": idp.token("k1", exp=None),
        "not yet valid": idp.token("k1", nbf=int(time.time()) + 600),
        "bad signature": f"{head}.{body}.{other_sig}",
        "tampered claims": head + "." + idp.token("k1", sub="root").split(".")[1] + "." + sig,
        "unknown kid": idp.token("other"),
        "alg none": jwt.encode(
            {"sub": "alice", "aud": AUD, "iss": idp.url, "exp": int(time.time()) + 60},
            # PyJWT wants None as the key of alg none, but its annotation leaves None out
            None,  # type: ignore[arg-type]
            algorithm="none",
        ),
        "HS256 without a secret": jwt.encode(
            {"sub": "alice", "aud": AUD, "iss": idp.url, "exp": int(time.time()) + 60},
            hs_key,
            algorithm="HS256",
            headers={"kid": "k1"},
        ),
        "not a token": "hunter2",
    }
    for name, token in cases.items():
        client = clients(broker, version)
        assert login(client, token) == bad(version), name
        assert client.wait_closed(2), name
    assert login(clients(broker, version), good) == 0


def test_hs256_with_a_shared_secret(
    make_broker: Callable[..., RunningBroker], clients: Callable[..., RawClient]
) -> None:
    secret = "a-shared-secret-of-at-least-32-bytes!"
    broker = make_broker(auth_oauth=OAuthConfig(mode="jwt", secret=secret, audience=AUD))
    claims = {"sub": "carol", "aud": AUD, "exp": int(time.time()) + 60}
    assert login(clients(broker), jwt.encode(claims, secret, algorithm="HS256")) == 0
    forged = jwt.encode(claims, "not-the-secret-but-just-as-long!!!!!", algorithm="HS256")
    assert login(clients(broker), forged) == Reason.BAD_USER_NAME_OR_PASSWORD


def test_rotated_key_works_after_refresh(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    idp: IdentityProvider,
) -> None:
    broker = jwt_broker(make_broker, idp)
    assert login(clients(broker), idp.token("k1")) == 0
    fetched = idp.count("/jwks")
    # The provider rotates: k2 replaces k1.
    idp.new_key("k2", "RS256", publish=False)
    idp.published = ["k2"]
    assert login(clients(broker), idp.token("k2")) == 0  # unknown kid: fetched again
    assert idp.count("/jwks") == fetched + 1
    # k1 is gone from the set; made-up kids do not make the broker fetch again (rate limit).
    assert login(clients(broker), idp.token("k1")) == Reason.BAD_USER_NAME_OR_PASSWORD
    for kid in ("x1", "x2", "x3"):
        forged = idp.token("k2", header_kid=kid)
        assert login(clients(broker), forged) == Reason.BAD_USER_NAME_OR_PASSWORD
    assert idp.count("/jwks") == fetched + 1


def test_keys_refreshed_on_a_timer(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    idp: IdentityProvider,
) -> None:
    broker = jwt_broker(make_broker, idp, jwks_url=idp.url + "/jwks", refresh_interval=0.2)
    assert login(clients(broker), idp.token("k1")) == 0
    idp.new_key("k3", "ES256", publish=False)
    idp.published = ["k3"]
    before = idp.count("/jwks")
    deadline = time.monotonic() + 5
    while idp.count("/jwks") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert idp.count("/jwks") >= before + 2
    now = idp.count("/jwks")
    assert login(clients(broker), idp.token("k3")) == 0  # already known: no fetch at CONNECT
    assert idp.count("/jwks") <= now + 1  # (at most the timer's own)
    assert idp.count("/.well-known/openid-configuration") == 0  # jwks_url given


@pytest.mark.parametrize("version", [V311, V5])
def test_provider_down_fails_closed(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    version: int,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    broker = make_broker(
        auth_oauth=OAuthConfig(mode="jwt", jwks_url=nowhere + "/jwks", audience=AUD)
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        {"sub": "a", "aud": AUD, "exp": int(time.time()) + 60}, key, "RS256", {"kid": "k"}
    )
    assert login(clients(broker, version), token) == refused(version)
    intro = make_broker(
        auth_oauth=OAuthConfig(
            mode="introspection",
            introspection_url=nowhere + "/introspect",
            client_id="broker",
            client_secret="s3cret",
        )
    )
    assert login(clients(intro, version), "opaque-token") == refused(version)


# -- introspection ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V311, V5])
def test_introspection(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    idp: IdentityProvider,
    version: int,
) -> None:
    now = int(time.time())
    idp.active["tok-alice"] = {"active": True, "sub": "alice", "aud": AUD, "exp": now + 300}
    idp.active["tok-late"] = {"active": True, "sub": "alice", "aud": AUD, "exp": now - 60}
    idp.active["tok-other"] = {"active": True, "sub": "alice", "aud": "other", "exp": now + 300}
    broker = make_broker(
        auth_oauth=OAuthConfig(
            mode="introspection",
            issuer=idp.url,  # the endpoint found by discovery
            audience=AUD,
            client_id="broker",
            client_secret="s3cret",
        )
    )
    assert login(clients(broker, version), "tok-alice", cid="a1") == 0
    assert login(clients(broker, version), "tok-alice", cid="a2") == 0  # cached
    assert idp.count("/introspect") == 1
    assert login(clients(broker, version), "tok-unknown") == bad(version)  # active: false
    assert login(clients(broker, version), "tok-late") == bad(version)
    assert login(clients(broker, version), "tok-other") == bad(version)
    # An answer that becomes inactive is seen once the cached one is gone (auth_cache_ttl).
    assert all(a is not None and a.startswith("Basic ") for a in idp.introspect_auth)


def test_introspection_wrong_client_credentials_fail_closed(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    idp: IdentityProvider,
) -> None:
    idp.active["tok"] = {"active": True, "sub": "alice"}
    broker = make_broker(
        auth_oauth=OAuthConfig(
            mode="introspection",
            introspection_url=idp.url + "/introspect",
            client_id="broker",
            client_secret="wrong",
        )
    )
    assert login(clients(broker), "tok") == Reason.NOT_AUTHORIZED


# -- claims: user name and topics ---------------------------------------------------------------


def test_username_must_match_the_claim_when_asked(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    idp: IdentityProvider,
) -> None:
    broker = jwt_broker(make_broker, idp, match_username=True, username_claim="preferred_username")
    token = idp.token("k1", preferred_username="alice", sub="0f8a-uuid")
    assert login(clients(broker), token, "alice", "ok") == 0
    assert login(clients(broker), token, "mallory", "no") == Reason.BAD_USER_NAME_OR_PASSWORD
    assert login(clients(broker), idp.token("k1")) == Reason.BAD_USER_NAME_OR_PASSWORD
    assert usernames(broker) == {"ok": "alice"}


@pytest.mark.parametrize("version", [V311, V5])
def test_acl_claims_publish_and_subscribe(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    idp: IdentityProvider,
    version: int,
) -> None:
    broker = jwt_broker(make_broker, idp, acl_claim="acl")
    acl = {"pub": ["rooms/%u/#", "clients/%c"], "sub": ["rooms/+/chat", "rooms/%u/#"]}
    sub = clients(broker, version)
    assert login(sub, idp.token("k1", acl=acl), cid="sub") == 0
    denied_sub = Reason.NOT_AUTHORIZED if version == V5 else 0x80
    assert sub.subscribe("rooms/alice/#", 1).reason_codes == [1]
    assert sub.subscribe("rooms/bob/chat", 1).reason_codes == [1]
    assert sub.subscribe("rooms/#", 1).reason_codes == [denied_sub]  # wider than allowed
    assert sub.subscribe("rooms/+/secret", 1).reason_codes == [denied_sub]
    pub = clients(broker, version)
    assert login(pub, idp.token("k1", acl=acl), cid="pub") == 0
    for topic in ("rooms/alice/chat", "clients/pub"):
        ack = pub.publish(topic, b"ok", qos=1)
        assert isinstance(ack, Puback), topic
        assert ack.reason_code in (0, Reason.NO_MATCHING_SUBSCRIBERS), topic
    got = sub.expect(Publish)
    sub.ack(got)
    assert got.topic == "rooms/alice/chat"
    denied = pub.publish("rooms/bob/chat", b"no", qos=1)
    assert isinstance(denied, Puback)
    assert denied.reason_code == (Reason.NOT_AUTHORIZED if version == V5 else 0)
    sub.expect_nothing(0.3)  # not routed
    # A token without the claim may use no topic.
    bare = clients(broker, version)
    assert login(bare, idp.token("k1"), cid="bare") == 0
    assert bare.subscribe("rooms/alice/#", 0).reason_codes == [denied_sub]


def test_acl_claim_rule_list_with_deny(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    idp: IdentityProvider,
) -> None:
    broker = jwt_broker(make_broker, idp, acl_claim="mqtt")
    rules = [
        {"permission": "deny", "action": "all", "topic": "data/secret/#"},
        {"permission": "allow", "action": "subscribe", "topics": ["data/#"]},
    ]
    c = clients(broker)
    assert login(c, idp.token("k1", mqtt=rules)) == 0
    assert c.subscribe("data/public/#").reason_codes == [0]
    assert c.subscribe("$share/g/data/x").reason_codes == [0]
    assert c.subscribe("data/secret/a").reason_codes == [Reason.NOT_AUTHORIZED]
    ack = c.publish("data/public/x", b"", qos=1)
    assert isinstance(ack, Puback) and ack.reason_code == Reason.NOT_AUTHORIZED


def test_connection_closed_when_the_token_expires(
    make_broker: Callable[..., RunningBroker],
    clients: Callable[..., RawClient],
    idp: IdentityProvider,
) -> None:
    """v5: DISCONNECT 0x87 at exp (+ leeway), and the will is published (as EMQX); v3.1.1: the
    connection is closed."""
    broker = jwt_broker(make_broker, idp, leeway=0)
    watcher = clients(broker)
    assert login(watcher, idp.token("k1", ttl=60), cid="watcher") == 0
    watcher.subscribe("wills/#", 0)
    short = clients(broker)
    will = Will("wills/short", b"gone")
    started = time.monotonic()
    assert login(short, idp.token("k1", ttl=2), cid="short", will=will) == 0
    disconnect = short.expect(Disconnect, timeout=6)
    assert disconnect.reason_code == Reason.NOT_AUTHORIZED
    assert 1.0 < time.monotonic() - started < 5
    assert short.wait_closed(2)
    assert watcher.expect(Publish, timeout=2).payload == b"gone"
    v3 = clients(broker, V311)
    assert login(v3, idp.token("k1", ttl=1), cid="v3") == 0
    assert v3.wait_closed(5)


# -- the rules themselves -----------------------------------------------------------------------


def test_acl_rule_matching() -> None:
    assert filter_covers("a/#", "a/+/b") and filter_covers("a/#", "a")
    assert not filter_covers("a/+", "a/#") and not filter_covers("a/+", "a/b/c")
    assert filter_covers("a/+/c", "a/+/c") and not filter_covers("a/b/c", "a/+/c")
    assert not filter_covers("#", "$SYS/x") and filter_covers("$SYS/#", "$SYS/x")
    rules = parse_acl({"pub": ["u/%u/#"], "all": ["c/%c"]})
    assert rules is not None
    assert allowed(rules, "publish", "u/al/x", "al", "c1")
    assert not allowed(rules, "subscribe", "u/al/x", "al", "c1")
    assert allowed(rules, "subscribe", "c/c1", "al", "c1")
    # A user name with a wildcard does not widen a %u rule.
    assert not allowed(rules, "publish", "u/x/y", "+", "c1")
    assert parse_acl({"pub": "not-a-list"}) is None
    assert parse_acl([{"permission": "maybe", "topic": "a"}]) is None
    assert parse_acl("a/b") is None


# -- mosquitto clients against a midge broker process -------------------------------------------


def test_mosquitto_clients_with_a_token(tmp_path: Path, idp: IdentityProvider) -> None:
    if not shutil.which("mosquitto_pub"):
        pytest.skip("mosquitto-clients not installed (make test installs them)")
    port = free_port()
    conf = tmp_path / "midge.toml"
    conf.write_text(
        'auth_oauth_mode = "jwt"\n'
        f'auth_oauth_issuer = "{idp.url}"\n'
        f'auth_oauth_audience = "{AUD}"\n'
        'auth_oauth_acl_claim = "acl"\n'
        "[[listener]]\n"
        f"port = {port}\n"
        'address = "127.0.0.1"\n'
    )
    token = idp.token("k1", acl={"all": ["rooms/%u/#"]})
    with ProcBroker(("-c", str(conf))) as proc:
        proc.wait_listening()
        common = ["-h", "127.0.0.1", "-p", str(port), "-u", "alice", "-P", token]
        sub = subprocess.Popen(
            ["mosquitto_sub", *common, "-V", "5", "-t", "rooms/alice/#", "-C", "1", "-W", "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(0.5)
            mosquitto_pub(port, "rooms/alice/x", "-u", "alice", "-P", token, message="hello", qos=1)
            out, err = sub.communicate(timeout=10)
            assert out.strip() == "hello", (err, proc.stderr_lines)
        finally:
            sub.kill()
            sub.wait()
        expired = idp.token("k1", ttl=-60)
        no = mosquitto_pub(
            port, "rooms/alice/x", "-u", "alice", "-P", expired, message="no", must_succeed=False
        )
        assert no.returncode != 0
        assert "bad user name or password" in no.stderr.decode().lower()


def test_bad_oauth_configuration_stops_the_broker(tmp_path: Path) -> None:
    from tests.procbroker import run_midge

    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        "listener 0 127.0.0.1\nauth_oauth_mode introspection\n"
        "auth_oauth_introspection_url https://idp/introspect\n"
    )
    done = run_midge(["broker", "-c", str(conf)])
    assert done.returncode == 1
    assert f"{conf}:2:" in done.stderr and "auth_oauth_client_id" in done.stderr
    assert "Traceback" not in done.stderr
