"""The OAuth 2.0 / OIDC backend's settings (:class:`OAuthConfig`) and options: its part of the
configuration table. The backend itself is midge.auth.oauth.

Declared here, apart from the backend, so that reading a configuration file never imports the
backend (see :mod:`midge.config.options`). Each field of :class:`OAuthConfig` is the option
``auth_oauth_<field>`` (mosquitto.conf and TOML); :func:`finish` checks that they fit together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from midge.config import checks
from midge.config.errors import BadValue, ConfigError
from midge.config.options import GLOBAL, MIDGE_ONLY, TEXT, WORD, Given, Option, OptionGroup

if TYPE_CHECKING:
    from midge.config.model import Config


@dataclass(slots=True)
class OAuthConfig:
    """The OAuth 2.0 / OIDC backend (midge.auth.oauth; docs/security.md): an access token given
    as the MQTT password, verified as a JWT (``mode`` "jwt") or by RFC 7662 token introspection
    ("introspection"). ``mode`` None leaves the backend off."""

    mode: str | None = None
    jwks_url: str | None = None  # None: from the issuer's OIDC discovery document
    issuer: str | None = None  # the expected ``iss``, and where discovery starts
    audience: str | None = None  # the expected ``aud`` (None: not checked, with a notice)
    introspection_url: str | None = None  # None: from the issuer's OIDC discovery document
    client_id: str | None = None  # introspection: the broker's client credentials
    client_secret: str | None = None
    secret: str | None = None  # a shared secret: HS256/384/512 tokens are accepted then
    username_claim: str = "sub"  # the claim the connection's user name is taken from
    match_username: bool = False  # True: the CONNECT's user name must equal that claim
    acl_claim: str | None = None  # a claim listing the topics allowed (None: not restricted)
    leeway: float = 10.0  # seconds of clock skew allowed for exp, nbf and iat
    refresh_interval: float = 300.0  # seconds between JWKS fetches


OAUTH_MODES = ("jwt", "introspection")

# -- value checks: each takes the word (mosquitto.conf) or the TOML value as parsed


def _string(value: Any, url: bool = False) -> str:
    if not isinstance(value, str):
        raise BadValue("expected a string")
    if not value:
        raise BadValue("must not be empty")
    if url and not value.startswith(("http://", "https://")):
        raise BadValue(f"invalid URL '{value}': expected http://... or https://...")
    return value


def _word(value: Any) -> str:
    return _string(value)


def _url(value: Any) -> str:
    return _string(value, url=True)


def _issuer(value: Any) -> str:
    return _string(value, url=isinstance(value, str) and "://" in value)


def _mode(value: Any) -> str:
    text = _string(value)
    if text not in OAUTH_MODES:
        raise BadValue(
            f"invalid mode '{text}': expected jwt (verify signed tokens against the "
            "provider's keys) or introspection (ask the provider, RFC 7662)"
        )
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value not in ("true", "false"):
        raise BadValue(f"invalid value '{value}': expected true or false")
    return bool(value == "true")


def _seconds(check: Callable[[float], float]) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except ValueError:
            raise BadValue(f"invalid value '{value}': expected a number of seconds") from None
        return check(number)

    return convert


def _oauth(
    field: str,
    check: Callable[[Any], Any],
    syntax: str,
    doc: str,
    default: Any = None,
    default_doc: str = "none",
    kind: str = WORD,
    row_of: str | None = None,
) -> Option:
    return Option(
        f"auth_oauth_{field}",
        GLOBAL,
        kind,
        doc,
        "backends",
        default=default,
        default_doc=default_doc,
        check=check,
        field=field,
        target="auth_oauth",
        once=True,
        toml_raw=True,
        syntax=syntax,
        mosquitto=MIDGE_ONLY,
        row_of=row_of,
    )


OPTIONS = (
    _oauth(
        "mode",
        _mode,
        "`auth_oauth_mode jwt\\|introspection`",
        "The OAuth 2.0 / OIDC backend: an access token as the password, verified as a JWT or by "
        "introspection ([security.md](security.md#oauth-20--oidc-backend)). The other "
        "`auth_oauth_*` options need it.",
    ),
    _oauth(
        "jwks_url",
        _url,
        "`auth_oauth_jwks_url URL`",
        "jwt: the provider's JSON Web Key Set.",
        default_doc="from discovery",
    ),
    _oauth(
        "issuer",
        _issuer,
        "`auth_oauth_issuer ISSUER`",
        "The expected `iss`; when it is a URL and no `jwks_url`/`introspection_url` is given, "
        "they are found by OIDC discovery.",
    ),
    _oauth(
        "audience",
        _word,
        "`auth_oauth_audience AUDIENCE`",
        "The expected `aud`.",
        default_doc="none (any, with a notice)",
    ),
    _oauth(
        "introspection_url",
        _url,
        "`auth_oauth_introspection_url URL`",
        "introspection: the RFC 7662 endpoint.",
        default_doc="from discovery",
    ),
    _oauth(
        "client_id",
        _word,
        "`auth_oauth_client_id ID`, `auth_oauth_client_secret SECRET`",
        "introspection: the broker's client credentials (HTTP Basic).",
    ),
    _oauth("client_secret", _word, "", "", kind=TEXT, row_of="auth_oauth_client_id"),
    _oauth(
        "secret",
        _word,
        "`auth_oauth_secret SECRET`",
        "jwt: a shared secret; HS256/384/512 tokens are accepted only with it.",
        kind=TEXT,
    ),
    _oauth(
        "username_claim",
        _word,
        "`auth_oauth_username_claim CLAIM`",
        "The claim that becomes the connection's user name.",
        default="sub",
        default_doc="`sub`",
    ),
    _oauth(
        "match_username",
        _bool,
        "`auth_oauth_match_username true\\|false`",
        "true: the CONNECT's user name must equal that claim.",
        default=False,
        default_doc="false",
    ),
    _oauth(
        "acl_claim",
        _word,
        "`auth_oauth_acl_claim CLAIM`",
        "The claim listing the topics the token allows.",
        default_doc="none (topics not restricted)",
    ),
    _oauth(
        "leeway",
        _seconds(checks.seconds_or_zero),
        "`auth_oauth_leeway SECONDS`",
        "Clock skew allowed for `exp`, `nbf`, `iat`.",
        default=10.0,
        default_doc="10",
    ),
    _oauth(
        "refresh_interval",
        _seconds(checks.positive_seconds),
        "`auth_oauth_refresh_interval SECONDS`",
        "jwt: how often the key set is fetched again.",
        default=300.0,
        default_doc="300",
    ),
)


def problem(oauth: OAuthConfig, given: list[str]) -> tuple[str, str] | None:
    """(option to blame, message) if the ``auth_oauth_*`` options given do not fit together."""
    if oauth.mode is None:
        if given:
            return given[0], (
                "auth_oauth_mode is not set: add 'auth_oauth_mode jwt' or "
                "'auth_oauth_mode introspection' to turn the OAuth backend on"
            )
        return None
    mode_opt = "auth_oauth_mode"
    if oauth.mode == "jwt":
        if not (oauth.jwks_url or oauth.issuer or oauth.secret):
            return mode_opt, (
                "jwt mode needs auth_oauth_jwks_url (the provider's keys), or auth_oauth_issuer "
                "(found by OIDC discovery), or auth_oauth_secret (HS256 tokens)"
            )
        if oauth.jwks_url is None and oauth.issuer is not None and "://" not in oauth.issuer:
            return "auth_oauth_issuer", (
                f"'{oauth.issuer}' is not a URL, so its keys cannot be discovered: give "
                "auth_oauth_jwks_url too, or the issuer's https:// URL"
            )
    else:
        if not (oauth.introspection_url or (oauth.issuer and "://" in oauth.issuer)):
            return mode_opt, (
                "introspection mode needs auth_oauth_introspection_url, or auth_oauth_issuer's "
                "URL (found by OIDC discovery)"
            )
        if not (oauth.client_id and oauth.client_secret):
            return mode_opt, (
                "introspection mode needs the broker's client credentials: "
                "auth_oauth_client_id and auth_oauth_client_secret"
            )
    return None


def finish(config: Config, given: Given) -> None:
    """Refuse ``auth_oauth_*`` options that do not fit together; notice a missing audience."""
    oauth = config.auth_oauth
    found = problem(oauth, given.names)
    if found is not None:
        name, message = found
        raise ConfigError(f"{name}: {message}", *given.where(name))
    if oauth.mode is not None and oauth.audience is None:
        config.notices.append(
            f"{given.notice_prefix('auth_oauth_mode')}auth_oauth_audience is not set: tokens "
            "issued for any audience are accepted; set it to this broker's audience"
        )


GROUP = OptionGroup("auth_oauth", OPTIONS, finish=finish, settings=OAuthConfig)
