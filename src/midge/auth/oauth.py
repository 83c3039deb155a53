"""The OAuth 2.0 / OIDC backend: an access token given as the MQTT password.

A plugin (:mod:`midge.auth.plugin`) built from the ``auth_oauth_*`` options
(:class:`midge.auth.oauth_options.OAuthConfig`; docs/security.md, "OAuth 2.0 / OIDC backend").
The token is checked in one of two ways:

``jwt``
    The token is a JWT signed by the provider (RFC 7519, RFC 7515). Its signature is verified
    against the provider's JSON Web Key Set (RFC 7517), fetched from ``auth_oauth_jwks_url`` or
    found through OIDC discovery (``ISSUER/.well-known/openid-configuration``, its ``jwks_uri``).
    The keys are cached, fetched again every ``auth_oauth_refresh_interval`` seconds and when a
    token names a key id (``kid``) the cache does not hold (at most once per
    :data:`KID_REFETCH_INTERVAL` seconds, so made-up ``kid`` values cannot make the broker hammer
    the provider): a rotated key works without a restart. RSA (RS*, PS*), EC (ES256/384/512) and
    EdDSA signatures are accepted; ``alg: none`` never, and HMAC (HS*) only with
    ``auth_oauth_secret``. ``exp`` is required; ``nbf`` and ``iat`` are checked when present,
    all with ``auth_oauth_leeway`` seconds of clock skew; ``iss`` and ``aud`` are checked when
    ``auth_oauth_issuer`` / ``auth_oauth_audience`` are set.
``introspection``
    The token is POSTed to the provider's introspection endpoint (RFC 7662), with the broker's
    client credentials (HTTP Basic, RFC 6749 2.3.1). ``"active": false`` refuses. Answers are
    cached by the token's SHA-256 for ``auth_cache_ttl`` seconds, never beyond the token's
    ``exp``.

The claims then decide who the client is and what it may do: ``auth_oauth_username_claim``
(default ``sub``) becomes the connection's user name (with ``auth_oauth_match_username``, the
CONNECT's user name must be that value), and ``auth_oauth_acl_claim`` names a claim listing the
topics allowed (:func:`parse_acl`). The connection is closed when the token expires
(``exp`` + leeway; v5: DISCONNECT 0x87, as EMQX does).

A token that is not valid refuses with "bad user name or password" (v5 0x86, v3.1.1 return
code 4); a provider that cannot be reached, or answers nonsense, refuses with "not authorized"
(0x87, return code 5): fail closed. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

from midge.auth.oauth_options import OAuthConfig
from midge.auth.plugin import Client, PluginError
from midge.codec.reasons import Reason
from midge.codec.topics import split_shared, topic_matches, validate_topic_filter

log = logging.getLogger("midge.auth.oauth")

#: Unknown-``kid`` fetches of the key set are at most this many seconds apart.
KID_REFETCH_INTERVAL = 10.0
#: Introspection answers kept at most (the oldest half is dropped beyond it).
CACHE_SIZE = 100_000
#: Asymmetric algorithms accepted, with the key type each needs.
ASYMMETRIC = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "P-256",
    "ES384": "P-384",
    "ES512": "P-521",
    "EdDSA": "OKP",
}
HMAC = ("HS256", "HS384", "HS512")
ACTIONS = {"pub": "publish", "publish": "publish", "sub": "subscribe", "subscribe": "subscribe"}


class TokenRefused(Exception):
    """The token is not valid (the client's fault): "bad user name or password"."""


class ProviderError(Exception):
    """The provider could not be asked, or gave no usable answer: fail closed."""


# -- ACL claims ---------------------------------------------------------------------------------

#: (allow, action: "publish" / "subscribe" / "all", topic filter with %u / %c)
Rule = tuple[bool, str, str]


def parse_acl(value: Any) -> list[Rule] | None:
    """The rules of an ACL claim, or None if it is not one of the two forms (EMQX's):

    ``{"pub": [FILTER, ...], "sub": [...], "all": [...]}``
        Allow lists: publish on, subscribe to, or both.
    ``[{"permission": "allow" | "deny", "action": "pub" | "sub" | "all", "topic": FILTER}, ...]``
        Rules in order, the first that matches decides (``"topics": [...]`` for several filters;
        ``publish`` / ``subscribe`` are accepted for the actions).

    Anything not allowed is denied.
    """
    rules: list[Rule] = []
    if isinstance(value, dict):
        for key, filters in value.items():
            action = ACTIONS.get(key, "all" if key == "all" else "")
            if not action or not _strings(filters):
                return None
            rules.extend((True, action, f) for f in filters)
        return rules
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, dict):
                return None
            permission = item.get("permission", "allow")
            action = item.get("action", "all")
            action = ACTIONS.get(action, "all" if action == "all" else "")
            topics = item["topics"] if "topics" in item else [item.get("topic")]
            if permission not in ("allow", "deny") or not action or not _strings(topics):
                return None
            rules.extend((permission == "allow", action, str(t)) for t in topics)
        return rules
    return None


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def filter_covers(rule: str, requested: str) -> bool:
    """True if every topic ``requested`` (a topic filter) can match, ``rule`` matches too.

    ``a/#`` covers ``a/+/b``; ``a/+`` does not cover ``a/#``. A rule starting with a wildcard
    does not cover a filter starting with ``$`` (as MQTT-4.7.2-1 for topics).
    """
    if requested.startswith("$") and rule[:1] in ("+", "#"):
        return False
    r_levels = rule.split("/")
    q_levels = requested.split("/")
    for i, r in enumerate(r_levels):
        if r == "#":
            return True
        if i >= len(q_levels):
            return False
        q = q_levels[i]
        if q == "#" or (r != "+" and (q == "+" or q != r)):
            return False
    return len(r_levels) == len(q_levels)


def _substitute(rule: str, identity: str, client_id: str) -> str | None:
    """``%u`` and ``%c`` replaced; None if a value would add a wildcard or the rule is not a
    valid filter (the rule then matches nothing)."""
    if "%u" in rule:
        if not identity or "+" in identity or "#" in identity:
            return None
        rule = rule.replace("%u", identity)
    if "%c" in rule:
        if not client_id or "+" in client_id or "#" in client_id:
            return None
        rule = rule.replace("%c", client_id)
    try:
        validate_topic_filter(rule)
    except Exception:
        return None
    return rule


def allowed(rules: list[Rule], action: str, topic: str, identity: str, client_id: str) -> bool:
    """The first rule for ``action`` that matches ``topic`` decides; none: denied.

    Publish: the topic name is matched against the rule's filter (``topic_matches``).
    Subscribe: the rule must cover the requested filter (:func:`filter_covers`); a shared
    subscription ``$share/GROUP/FILTER`` is decided on FILTER.
    """
    if action == "subscribe":
        topic = split_shared(topic)[1]
    for allow, rule_action, rule in rules:
        if rule_action != "all" and rule_action != action:
            continue
        flt = _substitute(rule, identity, client_id)
        if flt is None:
            continue
        hit = topic_matches(flt, topic) if action == "publish" else filter_covers(flt, topic)
        if hit:
            return allow
    return False


# -- the plugin ---------------------------------------------------------------------------------


class Grant:
    """What a client's token allows: who it is, its rules (None: any topic), until when."""

    __slots__ = ("expires", "identity", "rules")

    def __init__(self, identity: str, rules: list[Rule] | None, expires: float | None) -> None:
        self.identity = identity
        self.rules = rules
        self.expires = expires


class OAuthAuth:
    """The plugin's authentication (``auth_oauth_acl_claim`` unset: topics are not restricted
    by the token; other checks still apply)."""

    def __init__(self, config: OAuthConfig, timeout: float = 5.0, cache_ttl: float = 60.0) -> None:
        try:
            import httpx
            import jwt  # noqa: F401
        except ImportError:
            raise PluginError(
                "auth_oauth_mode needs the httpx, pyjwt and cryptography packages: "
                "pip install 'midge[auth]'"
            ) from None
        self.config = config
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self.grants: dict[str, Grant] = {}
        self._connects = 0
        # jwt mode: kid -> JWKs (key dict, key object); "" holds keys without a kid.
        self._keys: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        self._jwks_url = config.jwks_url
        self._introspection_url = config.introspection_url
        self._fetched_keys = False
        self._last_kid_fetch = -KID_REFETCH_INTERVAL
        self._fetching: asyncio.Future[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        #: introspection: sha256(token) -> (claims or None if inactive, until (time.time()))
        self._answers: dict[bytes, tuple[dict[str, Any] | None, float]] = {}
        #: how many times the key set was fetched (for tests and logs)
        self.jwks_fetches = 0
        if config.mode == "jwt" and (self._jwks_url or config.issuer):
            self._refresher = asyncio.ensure_future(self._refresh_keys())

    # -- authentication ---------------------------------------------------------------------

    async def authenticate(self, client: Client) -> bool | int:
        token = _token(client.password)
        if token is None:
            log.info("oauth: %r gave no token as its password: refused", client)
            return False
        try:
            if self.config.mode == "introspection":
                claims = await self._introspect(token)
            else:
                claims = await self._verify_jwt(token)
            identity, rules, expires = self._grant(client, claims)
        except TokenRefused as exc:
            log.info("oauth: token of %r refused: %s", client, exc)
            return False
        except ProviderError as exc:
            log.warning("oauth: cannot check the token of %r: %s: refused", client, exc)
            return Reason.NOT_AUTHORIZED
        client.username = identity
        client.expires = expires
        self._prune()
        self.grants[client.client_id] = Grant(identity, rules, expires)
        return True

    def _grant(
        self, client: Client, claims: dict[str, Any]
    ) -> tuple[str, list[Rule] | None, float | None]:
        config = self.config
        identity = claims.get(config.username_claim)
        if isinstance(identity, int) and not isinstance(identity, bool):
            identity = str(identity)
        if not isinstance(identity, str) or not identity:
            raise TokenRefused(f"no '{config.username_claim}' claim (auth_oauth_username_claim)")
        if config.match_username and client.username != identity:
            raise TokenRefused(
                f"the user name is not the token's '{config.username_claim}' "
                "(auth_oauth_match_username)"
            )
        rules: list[Rule] | None = None
        if config.acl_claim is not None:
            rules = parse_acl(claims.get(config.acl_claim))
            if rules is None:
                log.info(
                    "oauth: token of %r has no usable '%s' claim: no topic is allowed",
                    client,
                    config.acl_claim,
                )
                rules = []
        exp = claims.get("exp")
        expires = None
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            expires = float(exp) + config.leeway
        return identity, rules, expires

    def _prune(self) -> None:
        """Drop the grants of tokens that expired (their connections are closed)."""
        self._connects += 1
        if self._connects % 1000 == 0 or len(self.grants) > CACHE_SIZE:
            now = time.time()
            for cid in [c for c, g in self.grants.items() if g.expires and g.expires <= now]:
                del self.grants[cid]

    # -- JWT ---------------------------------------------------------------------------------

    async def _verify_jwt(self, token: str) -> dict[str, Any]:
        import jwt

        config = self.config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenRefused(f"not a JWT ({exc})") from None
        alg = header.get("alg")
        kid = header.get("kid")
        if alg in HMAC and config.secret is not None:
            candidates: list[Any] = [config.secret.encode()]
        elif alg in ASYMMETRIC and (self._jwks_url or config.issuer):
            if kid is not None and not isinstance(kid, str):
                raise TokenRefused("the kid is not a string")
            candidates = await self._keys_for(kid, alg)
            if not candidates:
                raise TokenRefused(f"no key {kid!r} for {alg} in the provider's key set")
        else:
            raise TokenRefused(f"algorithm {alg!r} is not accepted")
        failure: Exception | None = None
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=config.audience,
                    issuer=config.issuer,
                    leeway=config.leeway,
                    options={"require": ["exp"], "verify_aud": config.audience is not None},
                )
                return claims
            except jwt.InvalidSignatureError as exc:
                failure = exc  # perhaps another key without a kid
            except jwt.InvalidTokenError as exc:
                raise TokenRefused(str(exc) or type(exc).__name__) from None
        raise TokenRefused(f"bad signature ({failure})")

    async def _keys_for(self, kid: str | None, alg: str) -> list[Any]:
        """The key objects that may have signed a token with ``kid`` and ``alg``."""
        if not self._fetched_keys:
            await self._fetch_shared()
        found = self._matching(kid, alg)
        if not found and kid is not None:
            now = time.monotonic()
            if now - self._last_kid_fetch >= KID_REFETCH_INTERVAL:
                self._last_kid_fetch = now
                log.info("oauth: unknown key id %r: fetching the key set again", kid)
                await self._fetch_shared()
                found = self._matching(kid, alg)
        return found

    def _matching(self, kid: str | None, alg: str) -> list[Any]:
        if kid is not None:
            entries = self._keys.get(kid, [])
        else:
            entries = [e for group in self._keys.values() for e in group]
        return [key for jwk, key in entries if _fits(jwk, key, alg)]

    async def _fetch_shared(self) -> None:
        """Fetch the key set, once for everyone waiting; a failure raises ProviderError
        (unless keys fetched earlier are still there to use)."""
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.ensure_future(self._fetch_keys())
        try:
            await asyncio.shield(self._fetching)
        except ProviderError:
            if not self._fetched_keys:
                raise

    async def _fetch_keys(self) -> None:
        import jwt

        url = self._jwks_url or await self._discover("jwks_uri")
        self._jwks_url = url
        body = await self._get_json(url)
        entries = body.get("keys")
        if not isinstance(entries, list):
            raise ProviderError(f"{url}: no 'keys' list in the key set")
        keys: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
                log.info("oauth: %s: key %r skipped: %s", url, entry.get("kid"), exc)
                continue
            keys.setdefault(str(entry.get("kid", "")), []).append((entry, key))
        self._keys = keys
        self._fetched_keys = True
        self.jwks_fetches += 1
        log.info("oauth: %d keys from %s", sum(len(v) for v in keys.values()), url)

    async def _refresh_keys(self) -> None:
        """Fetch the key set at start and every ``refresh_interval`` seconds; a failure keeps
        the keys fetched before (logged)."""
        while True:
            try:
                await self._fetch_shared()
            except ProviderError as exc:
                log.warning("oauth: cannot fetch the key set: %s", exc)
            except Exception:  # pragma: no cover - keep refreshing whatever happens
                log.exception("oauth: fetching the key set failed")
            await asyncio.sleep(self.config.refresh_interval)

    async def _discover(self, field: str) -> str:
        """``field`` of the issuer's OIDC discovery document (OpenID Connect Discovery 1.0,
        section 4); its ``issuer`` must be the one configured (section 4.3)."""
        issuer = self.config.issuer
        if issuer is None or "://" not in issuer:
            raise ProviderError(f"no URL to find '{field}' at: set auth_oauth_issuer's URL")
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._get_json(url)
        if doc.get("issuer") != issuer:
            raise ProviderError(f"{url}: the document is for issuer {doc.get('issuer')!r}")
        value = doc.get(field)
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise ProviderError(f"{url}: no '{field}' URL")
        return value

    async def _get_json(self, url: str) -> dict[str, Any]:
        import httpx

        try:
            response = await self._client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ProviderError(f"GET {url}: {exc or type(exc).__name__}") from None
        return _json_object(response.status_code, response.content, f"GET {url}")

    # -- introspection (RFC 7662) ------------------------------------------------------------

    async def _introspect(self, token: str) -> dict[str, Any]:
        import httpx

        config = self.config
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        cached = self._answers.get(digest)
        if cached is not None and cached[1] > now:
            claims = cached[0]
        else:
            url = self._introspection_url or await self._discover("introspection_endpoint")
            self._introspection_url = url
            assert config.client_id is not None and config.client_secret is not None
            try:
                response = await self._client.post(
                    url,
                    data={"token": token, "token_type_hint": "access_token"},
                    auth=(config.client_id, config.client_secret),
                    headers={"Accept": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise ProviderError(f"POST {url}: {exc or type(exc).__name__}") from None
            answer = _json_object(response.status_code, response.content, f"POST {url}")
            claims = answer if answer.get("active") is True else None
            until = now + self.cache_ttl
            exp = answer.get("exp")
            if claims is not None and isinstance(exp, int | float):
                until = min(until, float(exp) + config.leeway)
            answers = self._answers
            if len(answers) >= CACHE_SIZE:
                for old in list(answers)[: CACHE_SIZE // 2]:
                    del answers[old]
            answers[digest] = (claims, until)
        if claims is None:
            raise TokenRefused("not active (introspection)")
        self._check_introspected(claims, now)
        return claims

    def _check_introspected(self, claims: dict[str, Any], now: float) -> None:
        config = self.config
        leeway = config.leeway
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp + leeway <= now:
            raise TokenRefused("expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf - leeway > now:
            raise TokenRefused("not valid yet (nbf)")
        if config.issuer is not None and claims.get("iss", config.issuer) != config.issuer:
            raise TokenRefused("issued by another issuer")
        if config.audience is not None:
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if config.audience not in auds:
                raise TokenRefused("not for this audience")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self._fetching is not None and not self._fetching.done():
            self._fetching.cancel()
        await self._client.aclose()


class OAuthAclAuth(OAuthAuth):
    """With ``auth_oauth_acl_claim``: publish and subscribe as the token's rules allow."""

    async def authorize(self, client: Client, action: str, topic: str) -> bool:
        grant = self.grants.get(client.client_id)
        if grant is None or grant.identity != client.username:
            return False
        if grant.expires is not None and grant.expires <= time.time():
            return False
        if grant.rules is None:
            return True
        return allowed(grant.rules, action, topic, grant.identity, client.client_id)


def create(config: OAuthConfig, timeout: float = 5.0, cache_ttl: float = 60.0) -> OAuthAuth:
    """The plugin for ``config`` (``auth_oauth_mode`` set)."""
    cls = OAuthAclAuth if config.acl_claim is not None else OAuthAuth
    return cls(config, timeout, cache_ttl)


def _token(password: bytes | None) -> str | None:
    if not password:
        return None
    try:
        return password.decode("ascii").strip()
    except UnicodeDecodeError:
        return None


def _json_object(status: int, content: bytes, what: str) -> dict[str, Any]:
    if status != 200:
        raise ProviderError(f"{what}: status {status}")
    try:
        value = json.loads(content)
    except ValueError:
        raise ProviderError(f"{what}: the answer is not JSON") from None
    if not isinstance(value, dict):
        raise ProviderError(f"{what}: the answer is not a JSON object")
    return value


def _fits(jwk: dict[str, Any], key: Any, alg: str) -> bool:
    """Whether ``key`` (from JWK ``jwk``) may verify ``alg``: the JWK's own ``alg``, if any,
    must be it (RFC 7517 4.4), and the key type must be the algorithm's (no RSA key used for an
    EC algorithm, no curve swapped)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if jwk.get("alg") not in (None, alg):
        return False
    need = ASYMMETRIC.get(alg)
    if need == "RSA":
        return isinstance(key, rsa.RSAPublicKey)
    if need == "OKP":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    if need is None or not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    curves = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}
    return key.curve.name == curves[need]
