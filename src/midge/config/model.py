"""The typed configuration: :class:`Config` (global) and :class:`ListenerConfig` (one listener).

Both stay plain dataclasses, so the broker reads attributes and mypy checks them; the option
table (:mod:`midge.config.table` and the backends' groups) says which option sets which field,
and ``tests/unit/test_config_table.py`` fails when a field and the table disagree (a field no
option sets and that is not listed in :data:`NOT_OPTIONS`, an option naming a field that does not
exist, or a default that differs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from midge.codec.packets import UNLIMITED_PACKET_SIZE
from midge.config.checks import DEFAULT_LOG_TYPES, LOG_TYPES
from midge.config.errors import ConfigError
from midge.config.options import group_settings
from midge.config.table import TLS_OPTIONS

if TYPE_CHECKING:
    from midge.auth.ldap_options import LdapSettings
    from midge.auth.oauth_options import OAuthConfig
    from midge.bridge.options import BridgeConfig

#: Where ``midge broker`` keeps its database when the configuration names no directory.
DEFAULT_DATA_DIR = "./data"
#: The database's name there (``persistence_file``).
DEFAULT_DB_NAME = "midge.db"
#: Mosquitto's defaults, used under a mosquitto.conf that turns persistence on without naming
#: them: ``persistence_location`` the current directory, ``persistence_file`` ``mosquitto.db``.
MOSQUITTO_DATA_DIR = "."
MOSQUITTO_DB_NAME = "mosquitto.db"

#: Model fields that no option sets directly: the readers' bookkeeping and values built by an
#: option's behaviour (``listener`` builds ``listeners``, ``log_dest file`` sets ``log_file``, ...).
NOT_OPTIONS = {
    "Config": (
        "listeners",
        "local_only",
        "verbose",
        "log_file",
        "auth_ldap",
        "source",
        "mosquitto_conf",
        "notices",
        "bridges",
    ),
    "ListenerConfig": ("where",),
    "BridgeConfig": ("name", "where"),
}


def _default_oauth() -> OAuthConfig:
    return cast("OAuthConfig", group_settings("auth_oauth"))


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
    # "mqtt"; "websockets": MQTT over WebSocket (midge.transport.websocket); "http": /metrics
    # and the admin API (midge.observe)
    protocol: str = "mqtt"
    http_dir: str | None = None  # websockets: static files served to plain HTTP GETs
    max_connections: int = -1  # -1: unlimited (Mosquitto's meaning)
    max_qos: int | None = None  # None: Config.max_qos
    max_topic_alias: int | None = None  # None: Config.max_topic_alias
    allow_zero_length_clientid: bool | None = None  # None: Config.allow_zero_length_clientid
    auto_id_prefix: str | None = None  # None: Config.auto_id_prefix
    socket_domain: str | None = None  # "ipv4", "ipv6", or None for both
    # A Unix socket listener (mosquitto.conf ``listener 0 PATH``, TOML ``unix_socket_path``):
    # port 0, no host; the socket file is made at start and removed at stop (midge.transport.tcp).
    unix_socket_path: str | None = None
    bind_interface: str | None = None  # listen on this interface's addresses only (Linux)
    # PROXY protocol (midge.transport.proxy): 0 none, 1 the v1 text header, 2 the v2 binary one.
    enable_proxy_protocol: int = 0
    proxy_protocol_v2_require_tls: bool = False  # the v2 header must say the client used TLS
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
    # Mosquitto's per-listener client and topic directives (always per listener).
    mount_point: str | None = None  # prefix of every topic of this listener's clients
    use_username_as_clientid: bool = False  # the client id is the username (none: refused)
    crlfile: str | None = None  # PEM CRL: revoked client certificates fail the handshake
    dhparamfile: str | None = None  # PEM DH parameters for TLS 1.2's DHE ciphers
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
    memory_limit: int = 0  # bytes of messages held (Broker.memory_used); 0 = unlimited
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

    # $SYS (midge.broker.systree): seconds between updates; 0 = none
    sys_interval: int = 10
    # The admin API's HTTP Basic credentials (midge.observe.http); None: the API is closed.
    admin_user: str | None = None
    admin_password_hash: str | None = None

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
    auth_oauth: OAuthConfig = field(default_factory=_default_oauth)
    # Bridges: one per ``connection NAME`` section / ``[[bridge]]`` table (midge.bridge.options)
    bridges: list[BridgeConfig] = field(default_factory=list)

    # Client identifiers
    allow_zero_length_clientid: bool = True
    auto_id_prefix: str = "auto-"

    clientid_prefixes: str | None = None  # only client ids with this prefix may connect

    # Retained and overlapping deliveries (Mosquitto's check_retain_source and deprecated
    # allow_duplicate_messages: see the option table)
    check_retain_source: bool = False
    allow_duplicate_messages: bool = False

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
    websockets_headers_size: int = 0  # 0: 4096 (midge.transport.websocket)
    websockets_log_level: int = 0
    log_type: list[str] = field(default_factory=lambda: list(DEFAULT_LOG_TYPES))
    log_timestamp: bool = True
    log_timestamp_format: str | None = None  # strftime format or "iso8601"; None = epoch seconds
    log_format: str = "text"  # midge only: "text" (Mosquitto's lines) or "json" (JSON lines)
    log_level: dict[str, str] = field(default_factory=dict)  # midge only: component -> level
    log_facility: int | None = None  # log_dest syslog: LOG_LOCAL<n>; None = LOG_DAEMON
    log_syslog_socket: str = "/dev/log"  # midge only: log_dest syslog's Unix socket
    connection_messages: bool = True

    # Persistence (docs/durability.md). ``durability``: "fsync" (an ack goes out once its message
    # is committed and fsynced), "os" (committed, not fsynced), "none" (memory only). ``data_dir``
    # None keeps nothing on disk (in-process brokers, tests); ``midge broker`` uses ./data then.
    # Mosquitto's ``persistence false`` is durability "none"; ``persistence_location`` is data_dir.
    # ``persistence_file``: the database's name in data_dir; None: ``midge.db``, or Mosquitto's
    # ``mosquitto.db`` under a mosquitto.conf. Under a mosquitto.conf persistence is off unless the
    # file turns it on, as in Mosquitto (``mosquitto_conf``, set by that reader).
    durability: str = "fsync"
    data_dir: str | None = None
    persistence_file: str | None = None

    # Processes (midge only): broker processes sharing the listeners, with cross-worker routing
    workers: int = 1
    batch_window: float = 0.0  # midge: seconds a busy process gathers I/O between turns
    # midge only: the Redis where the cluster's nodes meet (midge.cluster.redis_router), and this
    # node's name there; None: a single node (the name defaults to HOSTNAME-PID)
    cluster_redis: str | None = None
    cluster_node_id: str | None = None

    # Processes: started as root, run as this user once the listeners are bound (midge.privileges)
    user: str | None = None

    # Files
    pid_file: str | None = None
    # midge only: SCRAM-SHA-256/512 credentials for MQTT 5 enhanced authentication
    # (midge.auth.scram, docs/security.md); None: the SCRAM methods are refused (0x8C).
    scram_file: str | None = None
    source: str | None = None  # the file this was read from, for messages
    mosquitto_conf: bool = False  # read from a mosquitto.conf: Mosquitto's persistence defaults

    # Things the operator should see at startup (deprecated options, ignored -p ports, ...): the
    # broker logs each at notice level. Reading a file never fails silently; this is for options
    # that are valid but that Mosquitto itself would comment on.
    notices: list[str] = field(default_factory=list)

    @property
    def effective_max_packet_size(self) -> int:
        return self.max_packet_size or UNLIMITED_PACKET_SIZE


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


def tls_problem(listener: ListenerConfig) -> tuple[str, str] | None:
    """The first inconsistency among ``listener``'s TLS options: (option at fault, message), or
    None. The readers report it with that option's file and line.

    Mosquitto starts with most of these and then behaves in a way nobody wants (a ``certfile``
    without ``keyfile`` silently gives a plain listener; ``require_certificate`` without a CA
    refuses every client). midge refuses to start instead. Those Mosquitto starts with and midge
    too, with a notice, are :func:`tls_notices`.
    """
    has_cert = listener.certfile is not None
    has_key = listener.keyfile is not None
    if has_cert != has_key:
        present, missing = ("certfile", "keyfile") if has_cert else ("keyfile", "certfile")
        return present, (
            f"'{present}' without '{missing}': a TLS listener needs both its certificate "
            f"(certfile) and that certificate's private key (keyfile); add '{missing}'"
        )
    proxy = listener.enable_proxy_protocol
    if listener.proxy_protocol_v2_require_tls and proxy != 2:
        return "proxy_protocol_v2_require_tls", (
            "'proxy_protocol_v2_require_tls' needs 'enable_proxy_protocol 2' on the listener "
            "(only the v2 header carries TLS information); add it, or remove this line"
        )
    if proxy == 2 and not listener.tls and listener.use_subject_as_username:
        return "use_subject_as_username", (
            "'use_subject_as_username' cannot be used with 'enable_proxy_protocol 2' when the "
            "proxy terminates TLS: the PROXY header carries the certificate's CN only; use "
            "'use_identity_as_username' (HAProxy's send-proxy-v2-ssl-cn)"
        )
    if not listener.tls:
        # With the v2 header, the proxy's TLS stands for the listener's own (Mosquitto 2.1).
        proxied = ("require_certificate", "use_identity_as_username") if proxy == 2 else ()
        for name in TLS_OPTIONS:
            if name in ("certfile", "keyfile") or name in proxied or not getattr(listener, name):
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
    return None


def tls_notices(listener: ListenerConfig) -> list[tuple[str, str]]:
    """TLS settings Mosquitto starts with although they cannot do what they seem to: (option,
    notice) pairs the readers add to ``Config.notices`` with that option's file and line.

    ``use_identity_as_username`` / ``use_subject_as_username`` without ``require_certificate``:
    no certificate is asked for, so every client is refused at CONNECT (as in Mosquitto, whose
    ``handle_connect.c`` finds no peer certificate). ``crlfile`` without it: no certificate is
    checked, so the list is never consulted.
    """
    if not listener.tls or listener.require_certificate:
        return []
    found: list[tuple[str, str]] = []
    for name in ("use_identity_as_username", "use_subject_as_username"):
        if getattr(listener, name):
            found.append(
                (
                    name,
                    f"'{name} true' without 'require_certificate true': clients are not asked "
                    "for a certificate, so every CONNECT on this listener is refused (bad "
                    "username or password), as in Mosquitto; add 'require_certificate true'",
                )
            )
    if listener.crlfile:
        found.append(
            (
                "crlfile",
                "'crlfile' without 'require_certificate true' has no effect: client "
                "certificates are not asked for, so none is checked against the list",
            )
        )
    return found
