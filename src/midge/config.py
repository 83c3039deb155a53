"""One typed configuration for the broker, and its two readers.

Both readers (midge's TOML, :func:`parse_toml`, and Mosquitto's ``mosquitto.conf``,
:func:`parse_mosquitto_conf`) produce a :class:`Config`. Option names follow Mosquitto 2.0 wherever
Mosquitto has the option, with the same meaning, scope and defaults, so an operator can bring a
``mosquitto.conf`` across unchanged. Every problem is a :class:`ConfigError` naming the file, the
line, the option and the fix: nothing in a configuration file is ever silently ignored, and an
option Mosquitto has but midge does not implement yet is refused by name rather than skipped.

docs/configuration.md is the operator's reference for every option below.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from midge.codec.packets import UNLIMITED_PACKET_SIZE as UNLIMITED_PACKET_SIZE

if TYPE_CHECKING:
    from midge.auth.ldap import LdapSettings

MAX_PAYLOAD = 268_435_455  # the largest Remaining Length, hence the largest possible payload

#: Mosquitto's log types, in the order midge keeps them in :attr:`Config.log_type`.
LOG_TYPES = ("debug", "error", "warning", "notice", "information", "subscribe", "unsubscribe")
#: Mosquitto's default ``log_type`` set.
DEFAULT_LOG_TYPES = ("error", "warning", "notice", "information")


class ConfigError(Exception):
    """A configuration problem, with the file and line it comes from and how to fix it."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.message = message
        self.path = path
        self.line = line


@dataclass(slots=True)
class ListenerConfig:
    """One listening socket.

    ``host`` None or "" means every address (Mosquitto's ``listener PORT`` with no address); the
    default "127.0.0.1" is Mosquitto 2's local-only listener used when no listener is configured.
    ``port`` 0 asks the OS for a free port (a midge extension, for tests).

    The options Mosquitto applies per listener only when ``per_listener_settings`` is true
    (``allow_zero_length_clientid``, ``auto_id_prefix``) and the listener options that midge also
    accepts as global defaults in TOML (``max_qos``, ``max_topic_alias``) are None here when the
    listener does not set them: None means "inherit the :class:`Config` value", and
    :func:`resolve_listener` fills them in. ``socket_domain`` None means both IPv4 and IPv6.
    """

    port: int = 1883
    host: str | None = "127.0.0.1"
    protocol: str = "mqtt"  # "mqtt" only for now; "websockets" comes with its issue
    max_connections: int = -1  # -1: unlimited (Mosquitto's meaning)
    max_qos: int | None = None  # None: Config.max_qos
    max_topic_alias: int | None = None  # None: Config.max_topic_alias
    allow_zero_length_clientid: bool | None = None  # None: Config.allow_zero_length_clientid
    auto_id_prefix: str | None = None  # None: Config.auto_id_prefix
    socket_domain: str | None = None  # "ipv4", "ipv6", or None for both
    # Security (docs/security.md), set here only when per_listener_settings is true; None:
    # Config's value. allow_anonymous None means Mosquitto 2's default (see midge.auth.files).
    allow_anonymous: bool | None = None
    password_file: str | None = None
    acl_file: str | None = None

    # TLS (docs/security.md, Mosquitto's "Certificate based SSL/TLS Support"). These are always
    # per listener in Mosquitto, whatever per_listener_settings says; TLS is on when both certfile
    # and keyfile are set. The files are read when the listener starts (midge.transport.tls).
    certfile: str | None = None  # PEM server certificate (chain)
    keyfile: str | None = None  # PEM private key of certfile
    cafile: str | None = None  # PEM CA certificates trusted for client certificates
    capath: str | None = None  # directory of hashed PEM CA certificates (openssl rehash)
    require_certificate: bool = False  # clients must present a certificate signed by the CA
    use_identity_as_username: bool = False  # the certificate's CN is the username
    use_subject_as_username: bool = False  # the certificate's subject (RFC 2253) is the username
    tls_version: str | None = None  # minimum version: "tlsv1.2" (the default) or "tlsv1.3"
    ciphers: str | None = None  # OpenSSL cipher list (TLS 1.2); None: Mosquitto's default list
    #: Where each option of this listener was set: option -> (file, line), so that problems found
    #: only when the listener starts (an unreadable certfile) still name the line to fix.
    where: dict[str, tuple[str, int | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def tls(self) -> bool:
        """True for a TLS listener (Mosquitto: "this option and keyfile must be present")."""
        return self.certfile is not None and self.keyfile is not None


@dataclass(slots=True)
class OAuthConfig:
    """The OAuth 2.0 / OIDC backend (midge.auth.oauth; docs/security.md): an access token given
    as the MQTT password, verified as a JWT (``mode`` "jwt") or by RFC 7662 token introspection
    ("introspection"). Each field is the option ``auth_oauth_<field>`` (mosquitto.conf and TOML);
    ``mode`` None leaves the backend off."""

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


#: ``auth_oauth_*`` option -> its kind: "url", "word", "text" (the rest of the line), "bool",
#: "seconds" (0 or more), "interval" (more than 0).
OAUTH_OPTIONS: dict[str, str] = {
    "auth_oauth_mode": "word",
    "auth_oauth_jwks_url": "url",
    "auth_oauth_issuer": "word",
    "auth_oauth_audience": "word",
    "auth_oauth_introspection_url": "url",
    "auth_oauth_client_id": "word",
    "auth_oauth_client_secret": "text",
    "auth_oauth_secret": "text",
    "auth_oauth_username_claim": "word",
    "auth_oauth_match_username": "bool",
    "auth_oauth_acl_claim": "word",
    "auth_oauth_leeway": "seconds",
    "auth_oauth_refresh_interval": "interval",
}
OAUTH_MODES = ("jwt", "introspection")


@dataclass(slots=True)
class Config:
    """Everything the broker needs to start. Defaults match Mosquitto 2's where it has one."""

    listeners: list[ListenerConfig] = field(default_factory=lambda: [ListenerConfig()])
    # True when no listener was configured at all (Mosquitto's "local only mode"): the broker then
    # listens on 127.0.0.1:1883 only, and ``-p`` ports replace that listener (see
    # apply_cli_overrides). Any ``listener``, ``port``, ``bind_address`` or listener option set
    # before the first ``listener`` line makes it False.
    local_only: bool = True

    # Sessions and queues
    max_inflight_messages: int = 20  # outgoing QoS 1/2 in flight per client; 0 = unlimited
    max_inflight_bytes: int = (
        0  # outgoing QoS 1/2 payload bytes in flight per client; 0 = unlimited
    )
    max_queued_messages: int = 1000  # per offline/slow session; 0 = unlimited
    max_queued_bytes: int = 0  # 0 = unlimited
    queue_qos0_messages: bool = False  # queue QoS 0 for offline persistent sessions (non-standard)
    persistent_client_expiration: int | None = None  # seconds; None = never expire (v3 sessions)
    max_keepalive: int = 65535
    connect_timeout: float = 10.0  # midge: close a connection that sends no CONNECT in time

    # Packets and messages
    max_packet_size: int = 0  # 0 = unlimited (UNLIMITED_PACKET_SIZE)
    message_size_limit: int = 0  # maximum PUBLISH payload; 0 = unlimited
    max_qos: int = 2  # default for listeners that do not set max_qos
    retain_available: bool = True
    max_topic_alias: int = 10  # Topic Alias Maximum we accept from v5 clients (listener default)
    upgrade_outgoing_qos: bool = False
    set_tcp_nodelay: bool = False

    # Limits (midge's own; 0 or -1 = none). See docs/security.md, "Limits".
    global_max_connections: int = -1  # client connections over all listeners
    max_connection_rate: int = 0  # new connections per second from one IP address
    max_publish_rate: int = 0  # PUBLISH packets per second from one client
    max_subscriptions: int = 0  # topic filters one client may hold
    max_topic_levels: int = 0  # levels in a topic name or filter
    max_topic_length: int = 0  # UTF-8 bytes in a topic name or filter

    # Authentication and authorization backends (midge only; docs/security.md, "Plugins"):
    # a Python plugin (``module:factory`` or an entry point of group ``midge.auth``) with its
    # options, and/or the HTTP backend; their decisions are cached for ``auth_cache_ttl`` s.
    auth_python: str | None = None
    auth_python_options: dict[str, str] = field(default_factory=dict)
    auth_http_url: str | None = None
    auth_http_timeout: float = 5.0
    auth_cache_ttl: float = 60.0
    # The LDAP backend (midge.auth.ldap, docs/security.md "LDAP backend"): the ``auth_ldap_*``
    # lines as read (option, value, file, line), and checked into settings when reading ends.
    # (not in repr: a service password is among them)
    auth_ldap_options: list[tuple[str, str, str | None, int | None]] = field(
        default_factory=list, repr=False
    )
    auth_ldap: LdapSettings | None = None
    auth_oauth: OAuthConfig = field(default_factory=OAuthConfig)

    # Client identifiers
    allow_zero_length_clientid: bool = True
    auto_id_prefix: str = "auto-"

    # Listener-scoped options apply per listener when True
    per_listener_settings: bool = False

    # Security (docs/security.md). allow_anonymous None: not set, Mosquitto 2's default applies
    # (allowed in local-only mode, refused as soon as a listener is configured).
    allow_anonymous: bool | None = None
    password_file: str | None = None  # Mosquitto password file (midge passwd / mosquitto_passwd)
    acl_file: str | None = None  # Mosquitto ACL file

    # Logging
    verbose: bool = False  # -v: every log type, overriding log_type
    log_dest: list[str] = field(default_factory=lambda: ["stderr"])  # "stderr"/"stdout"/"file"
    log_file: str | None = None  # the path of the "file" log_dest
    log_type: list[str] = field(default_factory=lambda: list(DEFAULT_LOG_TYPES))
    log_timestamp: bool = True
    log_timestamp_format: str | None = None  # strftime format; None = seconds since the epoch
    connection_messages: bool = True

    # Persistence (docs/durability.md). ``durability``: "fsync" (an ack goes out once its message
    # is committed and fsynced), "os" (committed, not fsynced), "none" (memory only). ``data_dir``
    # None keeps nothing on disk (in-process brokers, tests); ``midge broker`` uses ./data then.
    # Mosquitto's ``persistence false`` is durability "none"; ``persistence_location`` is data_dir.
    durability: str = "fsync"
    data_dir: str | None = None

    # Processes (midge only): broker processes sharing the listeners, with cross-worker routing
    workers: int = 1

    # Files
    pid_file: str | None = None
    # midge only: SCRAM-SHA-256/512 credentials for MQTT 5 enhanced authentication
    # (midge.auth.scram, docs/security.md); None: the SCRAM methods are refused (0x8C).
    scram_file: str | None = None
    source: str | None = None  # the file this was read from, for messages

    # Things the operator should see at startup (deprecated options, ignored -p ports, ...): the
    # broker logs each at notice level. Reading a file never fails silently; this is for options
    # that are valid but that Mosquitto itself would comment on.
    notices: list[str] = field(default_factory=list)

    @property
    def effective_max_packet_size(self) -> int:
        return self.max_packet_size or UNLIMITED_PACKET_SIZE


# ---------------------------------------------------------------------------------------------
# Public entry points


def load_config(path: str) -> Config:
    """Read ``path``: ``*.toml`` is midge's TOML, any other name is ``mosquitto.conf``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file: {exc.strerror}", path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("configuration file is not valid UTF-8", path) from exc
    if path.endswith(".toml"):
        return parse_toml(text, path)
    return parse_mosquitto_conf(text, path)


def parse_mosquitto_conf(text: str, path: str = "<string>") -> Config:
    """Parse Mosquitto 2.0 ``mosquitto.conf`` text (``include_dir`` files are read from disk)."""
    parser = _ConfParser(path)
    parser.parse_text(text, path, level=0)
    return parser.finish()


def parse_toml(text: str, path: str = "<string>") -> Config:
    """Parse midge's TOML layout: top-level keys for global options, ``[[listener]]`` tables."""
    return _TomlReader(text, path).read()


def resolve_listener(config: Config, listener: ListenerConfig) -> ListenerConfig:
    """A copy of ``listener`` whose None ("inherit") fields are filled from ``config``.

    The readers only set ``allow_zero_length_clientid``/``auto_id_prefix`` on a listener when
    ``per_listener_settings`` is true, so a listener value, when present, always wins.
    """
    return dataclasses.replace(
        listener,
        max_qos=config.max_qos if listener.max_qos is None else listener.max_qos,
        max_topic_alias=(
            config.max_topic_alias if listener.max_topic_alias is None else listener.max_topic_alias
        ),
        allow_zero_length_clientid=(
            config.allow_zero_length_clientid
            if listener.allow_zero_length_clientid is None
            else listener.allow_zero_length_clientid
        ),
        auto_id_prefix=(
            config.auto_id_prefix if listener.auto_id_prefix is None else listener.auto_id_prefix
        ),
    )


def apply_cli_overrides(
    config: Config, host: str | None, ports: list[int], verbose: bool
) -> Config:
    """Apply Mosquitto's ``-p PORT`` (repeatable) and ``-v`` to a copy of ``config``.

    Mosquitto 2 (mosquitto(8)): ``-p`` ports listen on the loopback only, and when the
    configuration file defines any listener the ``-p`` options are IGNORED; midge does the same and
    records a notice. ``host`` (midge's own flag; None = "127.0.0.1") is the address the ``-p``
    listeners (or, without ``-p``, the local-only default listener) bind to. ``-v`` turns on every
    log type, overriding ``log_type`` from the file.
    """
    new = dataclasses.replace(
        config,
        listeners=[dataclasses.replace(lst) for lst in config.listeners],
        log_dest=list(config.log_dest),
        log_type=list(config.log_type),
        notices=list(config.notices),
    )
    for port in ports:
        if not 0 <= port <= 65535:
            raise ConfigError(f"invalid port {port} for -p: expected 0..65535")
    if config.local_only:
        bind = "127.0.0.1" if host is None else host
        if ports:
            new.listeners = [ListenerConfig(port=p, host=bind) for p in ports]
        elif host is not None:
            new.listeners = [ListenerConfig(port=lst.port, host=bind) for lst in new.listeners]
    elif ports:
        new.notices.append(
            "-p " + " -p ".join(str(p) for p in ports) + " ignored: the configuration file "
            "defines listeners (as in Mosquitto 2); add a 'listener' line instead"
        )
    if verbose:
        new.verbose = True
        new.log_type = list(LOG_TYPES)
    return new


# ---------------------------------------------------------------------------------------------
# Option catalogue


_UNSUPPORTED_GROUPS: dict[str, tuple[str, ...]] = {
    "security (authentication, access control, TLS)": (
        "psk_file",
        "psk_hint",
        "auth_plugin",
        "plugin",
        "auth_plugin_deny_special_chars",
        "check_retain_source",
        "clientid_prefixes",
        "use_username_as_clientid",
        "ciphers_tls1.3",
        "crlfile",
        "dhparamfile",
        "tls_engine",
        "tls_engine_kpass_sha1",
        "tls_keyform",
    ),
    "persistence": ("persistence_file",),
    "websockets": ("http_dir", "websockets_log_level", "websockets_headers_size"),
    "bridges": (
        "connection",
        "address",
        "addresses",
        "bridge_alpn",
        "bridge_attempt_unsubscribe",
        "bridge_bind_address",
        "bridge_cafile",
        "bridge_capath",
        "bridge_certfile",
        "bridge_identity",
        "bridge_insecure",
        "bridge_keyfile",
        "bridge_max_packet_size",
        "bridge_outgoing_retain",
        "bridge_protocol_version",
        "bridge_psk",
        "bridge_require_ocsp",
        "bridge_tls_version",
        "cleansession",
        "local_cleansession",
        "clientid",
        "remote_clientid",
        "idle_timeout",
        "keepalive_interval",
        "local_clientid",
        "local_password",
        "local_username",
        "notifications",
        "notifications_local_only",
        "notification_topic",
        "password",
        "remote_password",
        "username",
        "remote_username",
        "restart_timeout",
        "round_robin",
        "start_type",
        "threshold",
        "topic",
        "try_private",
    ),
    "$SYS": ("sys_interval",),
    "listener options": ("mount_point", "bind_interface"),
    "other": (
        "allow_duplicate_messages",
        "log_facility",
        "memory_limit",
        "retry_interval",
        "user",
    ),
}

#: Mosquitto option name -> the later work that brings it to midge.
UNSUPPORTED_OPTIONS: dict[str, str] = {
    name: group for group, names in _UNSUPPORTED_GROUPS.items() for name in names
}

_UNSUPPORTED_NOTES: dict[str, str] = {
    "allow_duplicate_messages": "deprecated in Mosquitto; midge never sends duplicates",
    "retry_interval": "Mosquitto 2 no longer has it either",
    "user": "run midge as the user you want instead",
    "log_facility": "it only matters for syslog, which comes later",
    "memory_limit": "no memory accounting yet",
    "persistence_file": "midge keeps midge.db in persistence_location (data_dir)",
    "ciphers_tls1.3": "Python's ssl module cannot restrict TLS 1.3 cipher suites; 'ciphers' "
    "restricts TLS 1.2",
    "tls_engine": "OpenSSL engines are not available to Python's ssl module",
    "tls_engine_kpass_sha1": "OpenSSL engines are not available to Python's ssl module",
    "tls_keyform": "only PEM key files are supported, which is Mosquitto's default",
}


def _unsupported_message(name: str) -> str:
    group = UNSUPPORTED_OPTIONS[name]
    note = _UNSUPPORTED_NOTES.get(name)
    if group == "other":
        detail = note or "not planned yet"
    elif name in _UNSUPPORTED_NOTES:
        detail = _UNSUPPORTED_NOTES[name]
    elif group == "listener options":
        detail = "the broker does not implement it yet"
    else:
        detail = f"it comes with {group} support"
    return f"'{name}' is not supported yet by midge ({detail}); remove the line or comment it out"


def _closest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.7)
    return f"; did you mean '{match[0]}'?" if match else ""


def _parse_duration(text: str) -> int | None:
    """Mosquitto's ``<n>h|d|w|m|y`` (month = 30 days, year = 365 days) in seconds, or None."""
    m = re.fullmatch(r"([0-9]+)([hdwmy])", text)
    if m is None or int(m.group(1)) <= 0:
        return None
    mult = {"h": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}
    return int(m.group(1)) * mult[m.group(2)]


DURABILITIES = ("fsync", "os", "none")
#: Where ``midge broker`` keeps its database when the configuration names no directory.
DEFAULT_DATA_DIR = "./data"
#: Mosquitto's options for its periodic snapshot; midge commits every change instead.
_AUTOSAVE = ("autosave_interval", "autosave_on_changes")


def _check_durability(value: str) -> str:
    if value not in DURABILITIES:
        raise _Bad(
            f"invalid value '{value}': expected fsync (committed and fsynced before an ack), "
            "os (committed, not fsynced) or none (memory only)"
        )
    return value


def _autosave_notice(where: str, name: str) -> str:
    return (
        f"{where}'{name}' ignored: midge writes every change as it happens (group commit), "
        "with no snapshot interval"
    )


class _Bad(Exception):
    """A value problem found by a checker; the reader adds the file, line and option name."""


def _check_int(lo: int, hi: int | None, what: str = "") -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < lo or (hi is not None and value > hi):
            rng = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
            raise _Bad(f"{value} is out of range: expected {rng}{what}")
        return value

    return check


def _clamp_negative(to: int) -> Callable[[int], int]:
    """Mosquitto treats a negative count as 'no limit' (0 or -1); so does midge."""

    def check(value: int) -> int:
        return to if value < 0 else value

    return check


def _check_inflight(value: int) -> int:
    # Mosquitto: negative or 65535 means no maximum (0); above 65535 is an error.
    if value < 0 or value == 65535:
        return 0
    if value > 65535:
        raise _Bad(f"{value} is out of range: expected 0..65535 (0 = no maximum)")
    return value


_SIMPLE_INT: dict[str, Callable[[int], int]] = {
    "max_inflight_messages": _check_inflight,
    "max_inflight_bytes": _clamp_negative(0),
    "max_queued_messages": _clamp_negative(0),
    "max_queued_bytes": _clamp_negative(0),
    "max_keepalive": _check_int(0, 65535),
    "max_packet_size": _check_int(20, 2**31 - 1, " (Mosquitto forbids less than 20 bytes)"),
    "message_size_limit": _check_int(0, MAX_PAYLOAD, " (0 = no limit)"),
    "workers": _check_int(1, 256, " (broker processes; midge only)"),
    "global_max_connections": _clamp_negative(-1),
    "max_connection_rate": _clamp_negative(0),
    "max_publish_rate": _clamp_negative(0),
    "max_subscriptions": _clamp_negative(0),
    "max_topic_levels": _clamp_negative(0),
    "max_topic_length": _check_int(0, 65535, " (0 = no limit)"),
}
_SIMPLE_BOOL = (
    "queue_qos0_messages",
    "retain_available",
    "upgrade_outgoing_qos",
    "set_tcp_nodelay",
    "log_timestamp",
    "connection_messages",
)
_LISTENER_INT: dict[str, Callable[[int], int]] = {
    "max_qos": _check_int(0, 2),
    "max_topic_alias": _check_int(0, 65535),
    "max_connections": _clamp_negative(-1),
}
_PORT_CHECK = _check_int(0, 65535, " (0 = any free port)")


def _check_connect_timeout(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise _Bad(f"{value} is out of range: expected a number of seconds greater than 0")
    return value


def _check_ttl(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise _Bad(f"{value} is out of range: expected a number of seconds, 0 or more")
    return value


def _check_auth_target(name: str, value: str) -> str:
    if name == "auth_http_url" and not value.startswith(("http://", "https://")):
        raise _Bad(f"invalid URL '{value}': expected http://... or https://...")
    return value


def _oauth_value(name: str, value: Any) -> Any:
    """An ``auth_oauth_*`` value, checked (``value`` is TOML's, or a mosquitto.conf string)."""
    kind = OAUTH_OPTIONS[name]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if value not in ("true", "false"):
            raise _Bad(f"invalid value '{value}': expected true or false")
        return value == "true"
    if kind in ("seconds", "interval"):
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except ValueError:
            raise _Bad(f"invalid value '{value}': expected a number of seconds") from None
        if kind == "seconds":
            return _check_ttl(number)
        return _check_connect_timeout(number)
    if not isinstance(value, str):
        raise _Bad("expected a string")
    if not value:
        raise _Bad("must not be empty")
    is_url = kind == "url" or (name == "auth_oauth_issuer" and "://" in value)
    if is_url and not value.startswith(("http://", "https://")):
        raise _Bad(f"invalid URL '{value}': expected http://... or https://...")
    if name == "auth_oauth_mode" and value not in OAUTH_MODES:
        raise _Bad(
            f"invalid mode '{value}': expected jwt (verify signed tokens against the "
            "provider's keys) or introspection (ask the provider, RFC 7662)"
        )
    return value


def _check_oauth(oauth: OAuthConfig, given: list[str]) -> tuple[str, str] | None:
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


def _oauth_notices(oauth: OAuthConfig, where: str) -> list[str]:
    if oauth.mode is not None and oauth.audience is None:
        return [
            f"{where}auth_oauth_audience is not set: tokens issued for any audience are "
            "accepted; set it to this broker's audience"
        ]
    return []


def _check_protocol(value: str) -> str:
    if value == "mqtt":
        return value
    if value == "websockets":
        raise _Bad("'websockets' is not supported yet by midge; use 'mqtt'")
    raise _Bad(f"invalid protocol '{value}': expected mqtt")


def _check_socket_domain(value: str) -> str:
    if value not in ("ipv4", "ipv6"):
        raise _Bad(f"invalid socket_domain '{value}': expected ipv4 or ipv6")
    return value


def _check_host(value: str) -> str:
    if value.startswith("/"):
        raise _Bad("Unix socket listeners are not supported yet by midge; give an IP address")
    return value


#: TLS listener options with a string value; tls_version is a single word.
_TLS_STRINGS = ("certfile", "keyfile", "cafile", "capath", "ciphers", "tls_version")
_TLS_BOOLS = ("require_certificate", "use_identity_as_username", "use_subject_as_username")
#: Every TLS listener option midge implements (Mosquitto's names).
TLS_OPTIONS = (*_TLS_STRINGS, *_TLS_BOOLS)
#: Mosquitto's tls_version values that midge accepts: the minimum is always TLS 1.2.
TLS_VERSIONS = ("tlsv1.2", "tlsv1.3")


def _check_tls_version(value: str) -> str:
    if value in TLS_VERSIONS:
        return value
    if value in ("tlsv1.1", "tlsv1", "tlsv1.0", "sslv3"):
        raise _Bad(
            f"'{value}' is not allowed: midge always requires TLS 1.2 or later; use tlsv1.2 "
            "(the default) or tlsv1.3"
        )
    raise _Bad(f"invalid value '{value}': expected tlsv1.2 or tlsv1.3")


def tls_problem(listener: ListenerConfig) -> tuple[str, str] | None:
    """The first inconsistency among ``listener``'s TLS options: (option at fault, message), or
    None. The readers report it with that option's file and line.

    Mosquitto starts with most of these and then behaves in a way nobody wants (a ``certfile``
    without ``keyfile`` silently gives a plain listener; ``require_certificate`` without a CA
    refuses every client; ``use_identity_as_username`` without ``require_certificate`` never asks
    for a certificate, so every CONNECT is refused). midge refuses to start instead.
    """
    has_cert = listener.certfile is not None
    has_key = listener.keyfile is not None
    if has_cert != has_key:
        present, missing = ("certfile", "keyfile") if has_cert else ("keyfile", "certfile")
        return present, (
            f"'{present}' without '{missing}': a TLS listener needs both its certificate "
            f"(certfile) and that certificate's private key (keyfile); add '{missing}'"
        )
    if not listener.tls:
        for name in TLS_OPTIONS:
            if name in ("certfile", "keyfile") or not getattr(listener, name):
                continue
            return name, (
                f"'{name}' has no effect on a listener without TLS: add certfile and keyfile "
                f"to this listener, or remove '{name}'"
            )
        return None
    if listener.require_certificate and not (listener.cafile or listener.capath):
        return "require_certificate", (
            "'require_certificate true' needs 'cafile' or 'capath' (the CA certificates client "
            "certificates are checked against); add one"
        )
    for name in ("use_identity_as_username", "use_subject_as_username"):
        if getattr(listener, name) and not listener.require_certificate:
            return name, (
                f"'{name} true' needs 'require_certificate true' on this listener: without it "
                "clients are not asked for a certificate, so every connection would be refused; "
                "add 'require_certificate true'"
            )
    return None


def _sort_key_mosquitto(name: str) -> list[tuple[str, str]]:
    """Mosquitto's include_dir order: case-insensitive, upper case first within the same letter."""
    return [(c.upper(), c) for c in name]


def _include_files(directory: str) -> list[str]:
    names = [n for n in os.listdir(directory) if len(n) > 5 and n.endswith(".conf")]
    names.sort(key=_sort_key_mosquitto)
    return [os.path.join(directory, n) for n in names]


def _log_types(values: list[str]) -> list[str]:
    """Turn Mosquitto ``log_type`` words (accumulated in order) into midge's canonical list."""
    chosen: set[str] = set()
    for value in values:
        if value == "none":
            chosen = set()
        elif value == "all":
            chosen = set(LOG_TYPES)
        elif value in LOG_TYPES:
            chosen.add(value)
        elif value == "websockets":
            raise _Bad("'websockets' is not supported yet by midge (it comes with websockets)")
        else:
            raise _Bad(
                f"invalid log_type '{value}': expected one of {', '.join(LOG_TYPES)}, all, none"
            )
    return [t for t in LOG_TYPES if t in chosen]


# ---------------------------------------------------------------------------------------------
# mosquitto.conf


_GLOBAL_OPTIONS = (
    *_SIMPLE_INT,
    *_SIMPLE_BOOL,
    "per_listener_settings",
    "persistent_client_expiration",
    "log_dest",
    "log_type",
    "log_timestamp_format",
    "pid_file",
    "scram_file",
    "include_dir",
    "connect_timeout",
    "auth_python",
    "auth_http_url",
    "auth_http_timeout",
    "auth_cache_ttl",
    *OAUTH_OPTIONS,
    "persistence",
    "retained_persistence",
    "persistence_location",
    "durability",
    "data_dir",
    *_AUTOSAVE,
)
_PER_LISTENER_SECURITY = (
    "allow_zero_length_clientid",
    "auto_id_prefix",
    "allow_anonymous",
    "password_file",
    "acl_file",
)
_SECURITY_STRINGS = ("auto_id_prefix", "password_file", "acl_file")
_LISTENER_OPTIONS = (
    "listener",
    "port",
    "bind_address",
    "protocol",
    "socket_domain",
    *_LISTENER_INT,
    *TLS_OPTIONS,
)
_LISTENER_SCOPED = (
    *_PER_LISTENER_SECURITY,
    *_LISTENER_INT,
    "maximum_qos",
    "protocol",
    "socket_domain",
    *TLS_OPTIONS,
)
KNOWN_OPTIONS: tuple[str, ...] = (*_GLOBAL_OPTIONS, *_PER_LISTENER_SECURITY, *_LISTENER_OPTIONS)


class _ConfParser:
    """Mosquitto 2.0's reader, option by option, with errors instead of warnings."""

    def __init__(self, path: str) -> None:
        self.main_path = path
        self.config = Config(source=path)
        self.config.listeners = []
        # Listener options before any ``listener`` line configure Mosquitto's default listener,
        # which exists (port 1883, every address) only if one of them was set.
        self.default = ListenerConfig(port=1883, host=None)
        self.default_port_set = False
        self.default_host_set = False
        self.default_where: tuple[str, int, str] | None = None  # first option that set it up
        self.default_set: dict[str, tuple[str, int]] = {}  # listener option -> where, if set
        self.current: ListenerConfig | None = None  # None: the default listener
        self.current_line: dict[int, tuple[str, int]] = {}  # id(listener) -> where it was defined
        self.security_set = False  # a per-listener security option was seen
        self.log_dest: list[str] | None = None
        self.log_types: list[str] | None = None
        self.seen: dict[tuple[int, str], tuple[str, int]] = {}  # (scope, option) -> where

    # -- driving

    def parse_text(self, text: str, path: str, level: int) -> None:
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, _, rest = line.partition(" ")
            if "\t" in name:  # tab after the name
                name, _, more = name.partition("\t")
                rest = more + " " + rest
            self.option(name, rest.strip(), path, lineno, level)

    def error(self, message: str, path: str, line: int) -> ConfigError:
        return ConfigError(message, path, line)

    def option(self, name: str, value: str, path: str, line: int, level: int) -> None:
        try:
            self._option(name, value, path, line, level)
        except _Bad as exc:
            raise self.error(f"{name}: {exc}", path, line) from None

    def _option(self, name: str, value: str, path: str, line: int, level: int) -> None:
        cfg = self.config
        if name in UNSUPPORTED_OPTIONS:
            raise self.error(_unsupported_message(name), path, line)
        if name.startswith("auth_python_opt_") and len(name) > len("auth_python_opt_"):
            cfg.auth_python_options[name[len("auth_python_opt_") :]] = value
            return
        if name.startswith("auth_ldap_"):
            cfg.auth_ldap_options.append((name, value, path, line))
            return
        if name.startswith(("auth_opt_", "plugin_opt_")):
            raise self.error(
                f"'{name}' is not supported by midge (options of Mosquitto's C plugins); "
                "midge's Python plugins take auth_python_opt_NAME; remove the line",
                path,
                line,
            )
        if name not in KNOWN_OPTIONS and name != "maximum_qos":
            raise self.error(
                f"unknown option '{name}'{_closest(name, self._all_names())}", path, line
            )
        if name == "include_dir":
            self.include_dir(value, path, line, level)
            return
        if not value:
            raise self.error(f"missing value for '{name}'", path, line)

        if name in _SIMPLE_INT:
            setattr(cfg, name, _SIMPLE_INT[name](self.int_value(name, value)))
            if name == "message_size_limit":
                cfg.notices.append(
                    f"{path}:{line}: it is recommended to replace 'message_size_limit' with "
                    "'max_packet_size' (as Mosquitto says)"
                )
        elif name in _SIMPLE_BOOL:
            setattr(cfg, name, self.bool_value(name, value))
        elif name in ("connect_timeout", "auth_http_timeout", "auth_cache_ttl"):
            word = self.word(name, value)
            try:
                number = float(word)
            except ValueError:
                raise _Bad(f"invalid value '{word}': expected a number of seconds") from None
            check = _check_ttl if name == "auth_cache_ttl" else _check_connect_timeout
            setattr(cfg, name, check(number))
        elif name in ("auth_python", "auth_http_url"):
            self.once(0, name, path, line)
            setattr(cfg, name, _check_auth_target(name, self.word(name, value)))
        elif name in OAUTH_OPTIONS:
            self.once(0, name, path, line)
            text = value if OAUTH_OPTIONS[name] == "text" else self.word(name, value)
            setattr(cfg.auth_oauth, name[len("auth_oauth_") :], _oauth_value(name, text))
        elif name == "per_listener_settings":
            flag = self.bool_value(name, value)
            if flag and self.security_set:
                raise _Bad(
                    "must be set before any per-listener security option (allow_anonymous, "
                    "password_file, acl_file, allow_zero_length_clientid, auto_id_prefix); move "
                    "it to the top of the file"
                )
            cfg.per_listener_settings = flag
        elif name == "persistent_client_expiration":
            word = self.word(name, value)
            seconds = _parse_duration(word)
            if seconds is None:
                raise _Bad(
                    f"invalid duration '{word}': expected a positive whole number followed by "
                    "h, d, w, m or y (hours, days, weeks, months, years), e.g. 14d"
                )
            cfg.persistent_client_expiration = seconds
        elif name in ("persistence", "retained_persistence"):
            # retained_persistence is Mosquitto's old name for persistence.
            on = self.bool_value(name, value)
            if not on:
                cfg.durability = "none"
            elif cfg.durability == "none":
                cfg.durability = "fsync"
        elif name in ("persistence_location", "data_dir"):
            self.once(0, "data_dir", path, line)
            cfg.data_dir = value
        elif name == "durability":
            cfg.durability = _check_durability(self.word(name, value))
        elif name in _AUTOSAVE:
            if name == "autosave_interval":
                self.int_value(name, value)
            else:
                self.bool_value(name, value)
            cfg.notices.append(_autosave_notice(f"{path}:{line}: ", name))
        elif name == "log_dest":
            self.log_dest_option(value)
        elif name == "log_type":
            words = self.log_types or []
            words.append(self.word(name, value))
            self.log_types = words
            _log_types(words)  # validate now, so the error names this line
        elif name in ("log_timestamp_format", "pid_file", "scram_file"):
            self.once(0, name, path, line)
            setattr(cfg, name, value)
        elif name in _LISTENER_SCOPED:
            self.listener_scoped(name, value, path, line)
        elif name == "listener":
            self.listener(value, path, line)
        elif name == "port":
            port = _PORT_CHECK(self.int_value(name, value))
            if self.default_port_set:
                cfg.notices.append(
                    f"{path}:{line}: default listener port specified multiple times; "
                    "only the latest is used"
                )
            self.default.port = port
            self.default_port_set = True
            self.default_where = self.default_where or (path, line, name)
            cfg.notices.append(
                f"{path}:{line}: 'port' is deprecated (as in Mosquitto); use 'listener {port}'"
            )
        elif name == "bind_address":
            self.once(-1, name, path, line)
            self.default.host = _check_host(value)
            self.default_host_set = True
            self.default_where = self.default_where or (path, line, name)
            cfg.notices.append(
                f"{path}:{line}: 'bind_address' is deprecated (as in Mosquitto); "
                f"use 'listener PORT {value}'"
            )
        else:  # pragma: no cover - every known option is handled above
            raise AssertionError(name)

    # -- values

    @staticmethod
    def word(name: str, value: str) -> str:
        """One-word values; a trailing ``# comment`` is allowed, anything else is an error."""
        parts = value.split(None, 1)
        first = parts[0] if parts else ""
        extra = parts[1].strip() if len(parts) > 1 else ""
        if extra and not extra.startswith("#"):
            raise _Bad(f"unexpected text '{extra}' after the value '{first}'")
        return first

    def int_value(self, name: str, value: str) -> int:
        word = self.word(name, value)
        if not re.fullmatch(r"[+-]?[0-9]+", word):
            raise _Bad(f"invalid value '{word}': expected a whole number")
        return int(word)

    def bool_value(self, name: str, value: str) -> bool:
        word = self.word(name, value)
        if word in ("true", "1"):
            return True
        if word in ("false", "0"):
            return False
        raise _Bad(f"invalid value '{word}': expected true or false")

    def once(self, scope: int, name: str, path: str, line: int) -> None:
        """Mosquitto refuses a string option given twice in one scope ("Duplicate ... value")."""
        where = self.seen.get((scope, name))
        if where is not None:
            raise _Bad(f"given twice (first at {where[0]}:{where[1]}); keep only one")
        self.seen[(scope, name)] = (path, line)

    # -- listeners

    def listener(self, value: str, path: str, line: int) -> None:
        words = value.split()
        for i, word in enumerate(words[1:], start=1):
            if word.startswith("#"):  # a trailing comment, as Mosquitto allows here
                del words[i:]
                break
        port_word = words[0]
        if not re.fullmatch(r"[0-9]+", port_word):
            raise _Bad(
                f"invalid port '{port_word}': expected a number 0..65535 (0 = any free port)"
            )
        port = _PORT_CHECK(int(port_word))
        host: str | None = None
        if len(words) >= 2:
            host = _check_host(words[1])
            if len(words) >= 3:
                raise _Bad(
                    f"unexpected text '{' '.join(words[2:])}': expected 'listener PORT [ADDRESS]'"
                )
        for other in self.config.listeners:
            if port != 0 and other.port == port and other.host == host:
                first = self.current_line[id(other)]
                raise _Bad(
                    f"a listener on port {port}"
                    + (f" address {host}" if host else "")
                    + f" is already defined at {first[0]}:{first[1]}"
                )
        new = ListenerConfig(port=port, host=host)
        self.config.listeners.append(new)
        self.current_line[id(new)] = (path, line)
        self.current = new
        self.config.local_only = False

    def listener_scoped(self, name: str, value: str, path: str, line: int) -> None:
        target = self.current if self.current is not None else self.default
        on_listener = name not in _PER_LISTENER_SECURITY or self.config.per_listener_settings
        if on_listener and self.current is None:
            self.default_where = self.default_where or (path, line, name)
            self.default_set.setdefault(name, (path, line))
        scope = id(target)
        if name in _PER_LISTENER_SECURITY:
            self.security_set = True
            per_listener = self.config.per_listener_settings
            where: ListenerConfig | Config = target if per_listener else self.config
            if name in _SECURITY_STRINGS:
                self.once(scope if per_listener else 0, name, path, line)
                setattr(where, name, value)
            else:
                setattr(where, name, self.bool_value(name, value))
        elif name in ("max_qos", "maximum_qos"):
            target.max_qos = _LISTENER_INT["max_qos"](self.int_value(name, value))
        elif name in _LISTENER_INT:
            setattr(target, name, _LISTENER_INT[name](self.int_value(name, value)))
        elif name == "protocol":
            target.protocol = _check_protocol(self.word(name, value))
        elif name == "socket_domain":
            target.socket_domain = _check_socket_domain(self.word(name, value))
        elif name in _TLS_STRINGS:
            # Always per listener (Mosquitto 2.0: per_listener_settings does not apply); a string
            # option is refused when given twice for one listener, as Mosquitto does.
            self.once(scope, name, path, line)
            if name == "tls_version":
                value = _check_tls_version(self.word(name, value))
            setattr(target, name, value)
            target.where[name] = (path, line)
        elif name in _TLS_BOOLS:
            setattr(target, name, self.bool_value(name, value))
            target.where[name] = (path, line)

    # -- logging

    def log_dest_option(self, value: str) -> None:
        kind, _, rest = value.replace("\t", " ").partition(" ")
        dests = self.log_dest if self.log_dest is not None else []
        if kind == "none":
            self.word("log_dest", value)
            dests = []
            self.config.log_file = None
        elif kind in ("stderr", "stdout"):
            self.word("log_dest", value)
            if kind not in dests:
                dests.append(kind)
        elif kind == "file":
            target = rest.strip()
            if not target:
                raise _Bad("'log_dest file' needs a path: log_dest file /var/log/midge.log")
            if self.config.log_file is not None:
                raise _Bad("only one 'log_dest file' may be configured (as in Mosquitto)")
            self.config.log_file = target
            dests.append("file")
        elif kind in ("syslog", "topic", "dlt"):
            raise _Bad(
                f"'{kind}' is not supported yet by midge; use stderr, stdout, file PATH or none"
            )
        else:
            raise _Bad(f"invalid log_dest '{kind}': expected stderr, stdout, file PATH or none")
        self.log_dest = dests

    # -- include_dir

    def include_dir(self, value: str, path: str, line: int, level: int) -> None:
        if level > 0:
            raise self.error(
                "include_dir is only allowed in the main configuration file (as in Mosquitto); "
                "move it there",
                path,
                line,
            )
        if not value:
            raise self.error("missing value for 'include_dir'", path, line)
        try:
            files = _include_files(value)
        except OSError as exc:
            raise self.error(
                f"include_dir: cannot read directory '{value}': {exc.strerror}", path, line
            ) from None
        main = os.path.realpath(self.main_path)
        for file in files:
            if os.path.realpath(file) == main:
                raise self.error(
                    f"include_dir: '{value}' contains the main configuration file; "
                    "move one of them",
                    path,
                    line,
                )
        for file in files:
            try:
                with open(file, encoding="utf-8") as f:
                    text = f.read()
            except OSError as exc:
                raise ConfigError(f"cannot read included file: {exc.strerror}", file) from None
            except UnicodeDecodeError:
                raise ConfigError("included file is not valid UTF-8", file) from None
            self.parse_text(text, file, level + 1)

    # -- result

    @staticmethod
    def _all_names() -> list[str]:
        return [*KNOWN_OPTIONS, *UNSUPPORTED_OPTIONS]

    def finish(self) -> Config:
        cfg = self.config
        given = [n for n in OAUTH_OPTIONS if (0, n) in self.seen]
        problem = _check_oauth(cfg.auth_oauth, given)
        if problem is not None:
            opt, message = problem
            opath, oline = self.seen.get((0, opt), (self.main_path, None))
            raise ConfigError(f"{opt}: {message}", opath, oline)
        if cfg.auth_oauth.mode is not None:
            mpath, mline = self.seen[(0, "auth_oauth_mode")]
            cfg.notices.extend(_oauth_notices(cfg.auth_oauth, f"{mpath}:{mline}: "))
        d = self.default
        # Mosquitto creates the default listener if any of its options differs from the default.
        if (
            self.default_port_set
            or self.default_host_set
            or d.max_connections != -1
            or (d.max_qos is not None and d.max_qos != 2)
            or d.protocol != "mqtt"
            or d.socket_domain is not None
            or d.allow_zero_length_clientid is False
            or d.password_file is not None
            or any(getattr(d, name) for name in TLS_OPTIONS)
        ):
            for other in cfg.listeners:
                if other.port == d.port and other.port != 0 and other.host == d.host:
                    where = self.current_line[id(other)]
                    assert self.default_where is not None
                    dpath, dline, dname = self.default_where
                    raise ConfigError(
                        f"'{dname}' before any 'listener' line configures Mosquitto's default "
                        f"listener (port {d.port}), which clashes with the listener defined at "
                        f"{where[0]}:{where[1]}; move '{dname}' below that 'listener' line",
                        dpath,
                        dline,
                    )
            cfg.listeners.append(d)
            cfg.local_only = False
        else:
            # Mosquitto keeps these on a default listener it then never creates: the setting would
            # be lost without a word. Say so instead.
            for name in ("max_topic_alias", "auto_id_prefix", "allow_anonymous", "acl_file"):
                if name in self.default_set:
                    where = self.default_set[name]
                    raise ConfigError(
                        f"'{name}' before any 'listener' line applies to Mosquitto's default "
                        "listener, which this file does not create, so it would have no effect; "
                        "move it below a 'listener' line",
                        *where,
                    )
        for lst in cfg.listeners:
            problem = tls_problem(lst)
            if problem is not None:
                name, message = problem
                at = lst.where.get(name) or self.current_line.get(id(lst))
                raise ConfigError(message, *(at or (self.main_path, None)))
        if not cfg.listeners:
            cfg.listeners = [ListenerConfig()]
        if self.log_dest is not None:
            cfg.log_dest = self.log_dest
        if self.log_types is not None:
            cfg.log_type = _log_types(self.log_types)
        _finish_ldap(cfg)
        return cfg


def _finish_ldap(cfg: Config) -> None:
    """Check the ``auth_ldap_*`` options (midge.auth.ldap) once the whole file is read."""
    if cfg.auth_ldap_options:
        from midge.auth.ldap import parse_settings

        cfg.auth_ldap = parse_settings(cfg.auth_ldap_options)


# ---------------------------------------------------------------------------------------------
# TOML


_TOML_GLOBAL_LISTENER_DEFAULTS = ("max_qos", "max_topic_alias")
_TOML_LISTENER_KEYS = (
    "port",
    "address",
    "host",
    "protocol",
    "max_connections",
    "max_qos",
    "max_topic_alias",
    "socket_domain",
    "allow_zero_length_clientid",
    "auto_id_prefix",
    "allow_anonymous",
    "password_file",
    "acl_file",
    *TLS_OPTIONS,
)
_TOML_GLOBAL_KEYS = (
    *_SIMPLE_INT,
    *_SIMPLE_BOOL,
    *_PER_LISTENER_SECURITY,
    *_TOML_GLOBAL_LISTENER_DEFAULTS,
    "per_listener_settings",
    "persistent_client_expiration",
    "log_dest",
    "log_type",
    "log_timestamp_format",
    "pid_file",
    "scram_file",
    "connect_timeout",
    "auth_python",
    "auth_python_options",
    "auth_http_url",
    "auth_http_timeout",
    "auth_cache_ttl",
    *OAUTH_OPTIONS,
    "listener",
    "persistence",
    "persistence_location",
    "durability",
    "data_dir",
    *_AUTOSAVE,
)


class _TomlReader:
    """midge's TOML layout; every key keeps its Mosquitto name and meaning."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.lines = self._locate(text)

    @staticmethod
    def _locate(text: str) -> dict[tuple[int, str], int]:
        """(listener index or -1 for top level, key) -> line, found by scanning the text."""
        where: dict[tuple[int, str], int] = {}
        table = -1
        in_other_table = False
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if re.match(r"\[\[\s*listener\s*\]\]", line):
                table += 1
                in_other_table = False
                where.setdefault((table, "[[listener]]"), lineno)
                continue
            m = re.match(r"\[+\s*([^\]]+?)\s*\]", line)
            if m:
                in_other_table = True
                where.setdefault((-2, m.group(1).strip().strip('"')), lineno)
                continue
            m = re.match(r'("[^"]*"|[A-Za-z0-9_.-]+)\s*=', line)
            if m and not in_other_table:
                where.setdefault((table, m.group(1).strip('"')), lineno)
        return where

    def error(self, message: str, table: int, key: str | None) -> ConfigError:
        line = None
        if key is not None:
            line = self.lines.get((table, key))
        if line is None and table >= 0:
            line = self.lines.get((table, "[[listener]]"))
        return ConfigError(message, self.path, line)

    def read(self) -> Config:
        try:
            data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
            line = int(m.group(1)) if m else None
            msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
            raise ConfigError(f"invalid TOML: {msg}", self.path, line) from None
        cfg = Config(source=self.path, listeners=[])
        # per_listener_settings decides where the security options may go, so read it first.
        if "per_listener_settings" in data:
            cfg.per_listener_settings = self.boolean(
                data["per_listener_settings"], -1, "per_listener_settings"
            )
        for key, value in data.items():
            self.global_key(cfg, key, value)
        problem = _check_oauth(cfg.auth_oauth, [k for k in OAUTH_OPTIONS if k in data])
        if problem is not None:
            raise self.error(f"{problem[0]}: {problem[1]}", -1, problem[0])
        cfg.notices.extend(_oauth_notices(cfg.auth_oauth, f"{self.path}: "))
        if not cfg.listeners:
            cfg.listeners = [ListenerConfig()]
        else:
            cfg.local_only = False
        _finish_ldap(cfg)
        return cfg

    # -- typed values

    def typed(self, value: Any, kind: type, table: int, key: str, expected: str) -> Any:
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.error(f"'{key}' must be {expected}, not {self.describe(value)}", table, key)
        if kind is not int and not isinstance(value, kind):
            raise self.error(f"'{key}' must be {expected}, not {self.describe(value)}", table, key)
        return value

    @staticmethod
    def describe(value: Any) -> str:
        if isinstance(value, bool):
            return f"the boolean {str(value).lower()}"
        if isinstance(value, str):
            return f"the string {value!r}"
        if isinstance(value, int | float):
            return f"the number {value}"
        if isinstance(value, list):
            return "an array"
        if isinstance(value, dict):
            return "a table"
        return type(value).__name__

    def boolean(self, value: Any, table: int, key: str) -> bool:
        return bool(self.typed(value, bool, table, key, "true or false"))

    def integer(self, value: Any, table: int, key: str, check: Callable[[int], int]) -> int:
        number = int(self.typed(value, int, table, key, "a whole number"))
        try:
            return check(number)
        except _Bad as exc:
            raise self.error(f"{key}: {exc}", table, key) from None

    def string(self, value: Any, table: int, key: str) -> str:
        text = str(self.typed(value, str, table, key, "a string"))
        if not text:
            raise self.error(f"'{key}' must not be empty", table, key)
        return text

    def strings(self, value: Any, table: int, key: str) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise self.error(
                f"'{key}' must be a string or an array of strings, not {self.describe(value)}",
                table,
                key,
            )
        return list(items)

    def scope_error(self, key: str, table: int) -> ConfigError | None:
        if key in UNSUPPORTED_OPTIONS:
            return self.error(_unsupported_message(key), table, key)
        if key.startswith(("auth_opt_", "plugin_opt_")):
            return self.error(
                f"'{key}' is not supported yet by midge (plugin options come with security "
                "support); remove it",
                table,
                key,
            )
        return None

    # -- top level

    def global_key(self, cfg: Config, key: str, value: Any) -> None:
        t = -1
        err = self.scope_error(key, t)
        if err is not None:
            raise err
        if key == "listener":
            if isinstance(value, dict):
                raise self.error(
                    "'listener' must be an array of tables: write [[listener]], not [listener]",
                    -2,
                    "listener",
                )
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise self.error("'listener' must be [[listener]] tables", t, key)
            for index, table in enumerate(value):
                cfg.listeners.append(self.listener(cfg, index, table))
            return
        if key in _SIMPLE_INT:
            setattr(cfg, key, self.integer(value, t, key, _SIMPLE_INT[key]))
        elif key in (
            *_SIMPLE_BOOL,
            "per_listener_settings",
            "allow_zero_length_clientid",
            "allow_anonymous",
        ):
            setattr(cfg, key, self.boolean(value, t, key))
        elif key in (
            "auto_id_prefix",
            "log_timestamp_format",
            "pid_file",
            "scram_file",
            *_SECURITY_STRINGS,
        ):
            setattr(cfg, key, self.string(value, t, key))
        elif key in _TOML_GLOBAL_LISTENER_DEFAULTS:
            setattr(cfg, key, self.integer(value, t, key, _LISTENER_INT[key]))
        elif key in ("connect_timeout", "auth_http_timeout", "auth_cache_ttl"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.error(
                    f"'{key}' must be a number of seconds, not {self.describe(value)}", t, key
                )
            check = _check_ttl if key == "auth_cache_ttl" else _check_connect_timeout
            try:
                setattr(cfg, key, check(float(value)))
            except _Bad as exc:
                raise self.error(f"{key}: {exc}", t, key) from None
        elif key in ("auth_python", "auth_http_url"):
            try:
                setattr(cfg, key, _check_auth_target(key, self.string(value, t, key)))
            except _Bad as exc:
                raise self.error(f"{key}: {exc}", t, key) from None
        elif key.startswith("auth_ldap_"):
            line = self.lines.get((t, key))
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, bool):
                    item = str(item).lower()
                if not isinstance(item, str | int | float):
                    raise self.error(
                        f"'{key}' must be a string, number or boolean (or an array of strings), "
                        f"not {self.describe(value)}",
                        t,
                        key,
                    )
                cfg.auth_ldap_options.append((key, str(item), self.path, line))
        elif key in OAUTH_OPTIONS:
            try:
                setattr(cfg.auth_oauth, key[len("auth_oauth_") :], _oauth_value(key, value))
            except _Bad as exc:
                raise self.error(f"{key}: {exc}", t, key) from None
        elif key == "auth_python_options":
            if not isinstance(value, dict) or not all(
                isinstance(v, str | int | float | bool) for v in value.values()
            ):
                raise self.error(f"'{key}' must be a table of NAME = value", t, key)
            cfg.auth_python_options = {str(k): str(v) for k, v in value.items()}
        elif key == "persistent_client_expiration":
            if isinstance(value, int) and not isinstance(value, bool):
                cfg.persistent_client_expiration = self.integer(value, t, key, _check_int(1, None))
            else:
                text = self.string(value, t, key)
                seconds = _parse_duration(text)
                if seconds is None:
                    raise self.error(
                        f"{key}: invalid duration '{text}': expected a positive whole number "
                        'followed by h, d, w, m or y, e.g. "14d" (or a number of seconds)',
                        t,
                        key,
                    )
                cfg.persistent_client_expiration = seconds
        elif key == "persistence":
            if not self.boolean(value, t, key):
                cfg.durability = "none"
            elif cfg.durability == "none":
                cfg.durability = "fsync"
        elif key in ("persistence_location", "data_dir"):
            cfg.data_dir = self.string(value, t, key)
        elif key == "durability":
            try:
                cfg.durability = _check_durability(self.string(value, t, key))
            except _Bad as exc:
                raise self.error(f"{key}: {exc}", t, key) from None
        elif key in _AUTOSAVE:
            if key == "autosave_interval":
                self.integer(value, t, key, _check_int(0, None))
            else:
                self.boolean(value, t, key)
            cfg.notices.append(_autosave_notice(f"{self.path}: ", key))
        elif key == "log_dest":
            self.log_dest(cfg, self.strings(value, t, key))
        elif key == "log_type":
            try:
                cfg.log_type = _log_types(self.strings(value, t, key))
            except _Bad as exc:
                raise self.error(f"log_type: {exc}", t, key) from None
        elif key in ("port", "bind_address"):
            raise self.error(
                f"'{key}' (Mosquitto's deprecated default-listener option) is not used in TOML; "
                "configure a [[listener]] table with port = ... and address = ...",
                t,
                key,
            )
        elif key in _TOML_LISTENER_KEYS:
            raise self.error(
                f"'{key}' is a listener option; put it in a [[listener]] table", t, key
            )
        elif key == "include_dir":
            raise self.error(
                "'include_dir' is a mosquitto.conf option; TOML files do not include others",
                t,
                key,
            )
        elif isinstance(value, dict):
            raise self.error(
                f"unknown table [{key}]{_closest(key, ['listener'])}; midge's TOML has "
                "top-level options and [[listener]] tables",
                -2,
                key,
            )
        else:
            raise self.error(f"unknown option '{key}'{_closest(key, self._names())}", t, key)

    @staticmethod
    def _names() -> list[str]:
        return [*_TOML_GLOBAL_KEYS, *_TOML_LISTENER_KEYS, *UNSUPPORTED_OPTIONS]

    def log_dest(self, cfg: Config, values: list[str]) -> None:
        dests: list[str] = []
        log_file: str | None = None
        for item in values:
            kind, _, rest = item.strip().partition(" ")
            try:
                if kind == "none":
                    if rest.strip():
                        raise _Bad(f"unexpected text '{rest.strip()}' after 'none'")
                    dests, log_file = [], None
                elif kind in ("stderr", "stdout"):
                    if rest.strip():
                        raise _Bad(f"unexpected text '{rest.strip()}' after '{kind}'")
                    if kind not in dests:
                        dests.append(kind)
                elif kind == "file":
                    if not rest.strip():
                        raise _Bad("'file' needs a path: \"file /var/log/midge.log\"")
                    if log_file is not None:
                        raise _Bad("only one 'file' destination may be configured")
                    log_file = rest.strip()
                    dests.append("file")
                elif kind in ("syslog", "topic", "dlt"):
                    raise _Bad(
                        f"'{kind}' is not supported yet by midge; use stderr, stdout, "
                        '"file PATH" or none'
                    )
                else:
                    raise _Bad(
                        f"invalid destination '{item}': expected stderr, stdout, "
                        '"file PATH" or none'
                    )
            except _Bad as exc:
                raise self.error(f"log_dest: {exc}", -1, "log_dest") from None
        cfg.log_dest = dests
        cfg.log_file = log_file

    # -- [[listener]]

    def listener(self, cfg: Config, index: int, table: dict[str, Any]) -> ListenerConfig:
        t = index
        if "port" not in table:
            raise self.error("[[listener]] needs a port, e.g. port = 1883", t, None)
        lst = ListenerConfig(port=self.integer(table["port"], t, "port", _PORT_CHECK), host=None)
        if "address" in table and "host" in table:
            raise self.error(
                "give either 'address' or 'host' (the same thing), not both", t, "host"
            )
        for key, value in table.items():
            err = None if key in _TOML_LISTENER_KEYS else self.scope_error(key, t)
            if err is not None:
                raise err
            if key == "port":
                continue
            if key in ("address", "host"):
                text = self.string(value, t, key)
                try:
                    lst.host = _check_host(text)
                except _Bad as exc:
                    raise self.error(f"{key}: {exc}", t, key) from None
            elif key in _LISTENER_INT:
                setattr(lst, key, self.integer(value, t, key, _LISTENER_INT[key]))
            elif key in ("protocol", "socket_domain"):
                text = self.string(value, t, key)
                check = _check_protocol if key == "protocol" else _check_socket_domain
                try:
                    setattr(lst, key, check(text))
                except _Bad as exc:
                    raise self.error(f"{key}: {exc}", t, key) from None
            elif key in _TLS_STRINGS:
                text = self.string(value, t, key)
                if key == "tls_version":
                    try:
                        text = _check_tls_version(text)
                    except _Bad as exc:
                        raise self.error(f"{key}: {exc}", t, key) from None
                setattr(lst, key, text)
                lst.where[key] = (self.path, self.lines.get((t, key)))
            elif key in _TLS_BOOLS:
                setattr(lst, key, self.boolean(value, t, key))
                lst.where[key] = (self.path, self.lines.get((t, key)))
            elif key in _PER_LISTENER_SECURITY:
                if not cfg.per_listener_settings:
                    raise self.error(
                        f"'{key}' in a [[listener]] table needs per_listener_settings = true "
                        "at the top of the file (otherwise it is a global option: move it above "
                        "the first [[listener]])",
                        t,
                        key,
                    )
                if key in _SECURITY_STRINGS:
                    setattr(lst, key, self.string(value, t, key))
                else:
                    setattr(lst, key, self.boolean(value, t, key))
            elif key in _TOML_GLOBAL_KEYS or key in KNOWN_OPTIONS:
                raise self.error(
                    f"'{key}' is a global option, not a listener option; move it above the "
                    "first [[listener]] table",
                    t,
                    key,
                )
            else:
                raise self.error(
                    f"unknown listener option '{key}'{_closest(key, list(_TOML_LISTENER_KEYS))}",
                    t,
                    key,
                )
        for other in cfg.listeners:
            if lst.port != 0 and other.port == lst.port and other.host == lst.host:
                raise self.error(
                    f"a listener on port {lst.port} with the same address is defined twice",
                    t,
                    "port",
                )
        problem = tls_problem(lst)
        if problem is not None:
            raise self.error(problem[1], t, problem[0])
        return lst
