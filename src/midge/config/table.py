"""The broker's own options: listeners, TLS, client ids, security files, sessions, packets,
limits, persistence, logging, processes and files, then the Mosquitto options midge refuses.

One :class:`~midge.config.options.Option` per option; the order here is the order of
docs/configuration.md. The authentication backends declare theirs next to them (see
:data:`midge.config.options.OPTION_MODULES`).
"""

from __future__ import annotations

from midge.config import checks
from midge.config.options import (
    BOOL,
    CONF,
    DURATION,
    GLOBAL,
    INT,
    LISTENER,
    MIDGE_ONLY,
    PER_LISTENER,
    RAW,
    SECONDS,
    STRINGS,
    TEXT,
    TOML,
    UNSUPPORTED,
    WORD,
    Option,
    OptionGroup,
)

_LISTENERS = (
    Option(
        "listener",
        LISTENER,
        RAW,
        "Start a listener on PORT, on ADDRESS only or every address.",
        "listeners",
        field=None,
        syntax="`listener PORT [ADDRESS]` (conf) / `[[listener]]` with `port`, `address` (TOML)",
        default_doc="none: local only mode, `127.0.0.1:1883`",
        mosquitto="Port 0 = any free port (Mosquitto: Unix socket, not supported yet). Local only "
        "mode binds `127.0.0.1` only (Mosquitto also `::1`).",
        apply="listener",
    ),
    Option(
        "port",
        LISTENER,
        INT,
        "Deprecated: the port of the default listener.",
        "listeners",
        default=1883,
        check=checks.PORT,
        syntax="`port PORT` (conf only)",
        mosquitto="Same, with a notice. Port 0 allowed.",
        apply="port",
    ),
    Option(
        "bind_address",
        LISTENER,
        TEXT,
        "Deprecated: the address of the default listener.",
        "listeners",
        field=None,
        check=checks.host,
        formats=(CONF,),
        syntax="`bind_address ADDRESS` (conf only)",
        default_doc="every address",
        mosquitto="Same, with a notice; midge does not resolve the name at load time.",
        apply="bind_address",
    ),
    Option(
        "address",
        LISTENER,
        TEXT,
        "TOML: the address of a `[[listener]]` (`host` is the same key); without it, every "
        "address.",
        "listeners",
        default="127.0.0.1",
        default_doc="every address",
        field="host",
        check=checks.host,
        formats=(TOML,),
        syntax="`address` / `host` (TOML only)",
        mosquitto="`listener PORT ADDRESS` in mosquitto.conf.",
    ),
    Option(
        "host",
        LISTENER,
        TEXT,
        "",
        "listeners",
        alias_of="address",
        formats=(TOML,),
        row_of="address",
        field="host",
        default="127.0.0.1",
    ),
    Option(
        "max_connections",
        LISTENER,
        INT,
        "Most clients connected to this listener at once. Any negative value means unlimited. "
        'A client over it is told at CONNECT (v5 0x97 Quota exceeded, v3 "server '
        'unavailable") and closed.',
        "listeners",
        default=-1,
        default_doc="-1 (unlimited)",
        check=checks.negative_is(-1),
        mosquitto="Mosquitto closes the socket at once, without a CONNACK.",
    ),
    Option(
        "max_qos",
        LISTENER,
        INT,
        "Highest QoS clients of this listener may use; v5 clients are told via Maximum QoS, "
        "publishing above it disconnects. Mosquitto's alias `maximum_qos` is accepted.",
        "listeners",
        default=None,
        default_doc="2",
        check=checks.int_range(0, 2),
        syntax="`max_qos 0\\|1\\|2`",
        toml_global=True,
    ),
    Option(
        "maximum_qos",
        LISTENER,
        INT,
        "",
        "listeners",
        alias_of="max_qos",
        suggest=False,
        formats=(CONF,),
        row_of="max_qos",
        check=checks.int_range(0, 2),
        field="max_qos",
    ),
    Option(
        "max_topic_alias",
        LISTENER,
        INT,
        "Topic Alias Maximum a v5 client may use (0..65535; 0 = no aliases).",
        "listeners",
        default=None,
        default_doc="10",
        check=checks.int_range(0, 65535),
        toml_global=True,
    ),
    Option(
        "protocol",
        LISTENER,
        WORD,
        "The protocol spoken.",
        "listeners",
        default="mqtt",
        check=checks.protocol,
        syntax="`protocol mqtt`",
        mosquitto="`websockets` is refused: not supported yet.",
    ),
    Option(
        "socket_domain",
        LISTENER,
        WORD,
        "Listen on IPv4 only or IPv6 only.",
        "listeners",
        default=None,
        default_doc="both",
        check=checks.socket_domain,
        syntax="`socket_domain ipv4\\|ipv6`",
    ),
)

_TLS = (
    Option(
        "certfile",
        LISTENER,
        TEXT,
        "PEM server certificate (chain). With `keyfile`, makes the listener TLS.",
        "tls",
        once=True,
        syntax="`certfile PATH`",
        default_doc="none",
        mosquitto="Alone (without `keyfile`) it is an error; Mosquitto silently listens without "
        "TLS.",
    ),
    Option(
        "keyfile",
        LISTENER,
        TEXT,
        "PEM private key of `certfile` (not encrypted).",
        "tls",
        once=True,
        syntax="`keyfile PATH`",
        default_doc="none",
        mosquitto="An encrypted key is an error (Mosquitto prompts on the terminal).",
    ),
    Option(
        "cafile",
        LISTENER,
        TEXT,
        "CA certificates client certificates are checked against (`capath`: a directory "
        "prepared with `openssl rehash`).",
        "tls",
        once=True,
        syntax="`cafile PATH` / `capath DIR`",
        default_doc="none",
    ),
    Option("capath", LISTENER, TEXT, "", "tls", once=True, row_of="cafile"),
    Option(
        "ciphers",
        LISTENER,
        TEXT,
        "OpenSSL cipher list for TLS 1.2.",
        "tls",
        once=True,
        syntax="`ciphers LIST`",
        default_doc="`DEFAULT:!aNULL:!eNULL:!LOW:!EXPORT:!SSLv2:@STRENGTH`",
    ),
    Option(
        "tls_version",
        LISTENER,
        WORD,
        "Minimum TLS version.",
        "tls",
        once=True,
        check=checks.tls_version,
        syntax="`tls_version tlsv1.2\\|tlsv1.3`",
        default_doc="TLS 1.2 and 1.3",
        mosquitto="`tlsv1.1` is refused: midge never allows less than TLS 1.2.",
    ),
    Option(
        "require_certificate",
        LISTENER,
        BOOL,
        "Clients must present a certificate signed by the CA, or the handshake fails.",
        "tls",
        default=False,
        mosquitto="Without `cafile`/`capath` it is an error.",
    ),
    Option(
        "use_identity_as_username",
        LISTENER,
        BOOL,
        "The client certificate's CN is the username; CONNECT's username and password are "
        "ignored, no password check.",
        "tls",
        default=False,
        mosquitto="Without `require_certificate true` it is an error (Mosquitto then refuses "
        "every client).",
    ),
    Option(
        "use_subject_as_username",
        LISTENER,
        BOOL,
        "The certificate's whole subject (RFC 2253, as Mosquitto prints it) is the username.",
        "tls",
        default=False,
        mosquitto="Same as above.",
    ),
)

_CLIENT_IDS = (
    Option(
        "per_listener_settings",
        GLOBAL,
        BOOL,
        "When true, the options below and the security options (next section) apply to the "
        "listener they are given in; when false, to all listeners. Must come before any of them.",
        "clientid",
        default=False,
        apply="per_listener_settings",
    ),
    Option(
        "allow_zero_length_clientid",
        PER_LISTENER,
        BOOL,
        "Accept clients that connect with an empty client id (3.1.1/5.0) and give them a "
        "generated one.",
        "clientid",
        default=True,
    ),
    Option(
        "auto_id_prefix",
        PER_LISTENER,
        TEXT,
        "Prefix of the generated client ids.",
        "clientid",
        default="auto-",
        default_doc="`auto-`",
        once=True,
        syntax="`auto_id_prefix PREFIX`",
        mosquitto="Same; a per-listener value before any `listener` is copied to the default "
        "listener (Mosquitto drops it).",
    ),
)

_SECURITY = (
    Option(
        "allow_anonymous",
        PER_LISTENER,
        BOOL,
        "Accept clients that give no username.",
        "security",
        default=None,
        default_doc="true in local only mode, otherwise false",
        mosquitto="Same (local only mode allows them even when set to false). On a `--host` "
        "address other than the loopback without a listener configured, false.",
    ),
    Option(
        "password_file",
        PER_LISTENER,
        TEXT,
        "Mosquitto password file (`midge passwd` / `mosquitto_passwd`); a username must be in it "
        "with the right password. Re-read on SIGHUP.",
        "security",
        once=True,
        syntax="`password_file PATH`",
        default_doc="none",
        mosquitto="A bad line stops the start with file:line (Mosquitto logs it and drops the "
        "user).",
    ),
    Option(
        "acl_file",
        PER_LISTENER,
        TEXT,
        "Mosquitto ACL file: `user`, `topic`, `pattern` lines. Re-read on SIGHUP.",
        "security",
        once=True,
        syntax="`acl_file PATH`",
        default_doc="none (every topic open)",
        mosquitto="A refused SUBSCRIBE gets SUBACK 0x80 / 0x87 where no message could ever pass "
        "(Mosquitto grants it and delivers nothing).",
    ),
)

_SESSIONS = (
    Option(
        "max_inflight_messages",
        GLOBAL,
        INT,
        "Outgoing QoS 1/2 messages in flight per client. 0 (or a negative number, or 65535) = "
        "no maximum; above 65535 is an error. 1 guarantees in-order delivery.",
        "sessions",
        default=20,
        check=checks.inflight,
    ),
    Option(
        "max_inflight_bytes",
        GLOBAL,
        INT,
        "Outgoing QoS 1/2 payload bytes in flight per client; 0 = no limit (negative = 0).",
        "sessions",
        default=0,
        check=checks.negative_is(0),
    ),
    Option(
        "max_queued_messages",
        GLOBAL,
        INT,
        "QoS 1/2 messages queued per client beyond those in flight; 0 = no maximum (negative = 0).",
        "sessions",
        default=1000,
        check=checks.negative_is(0),
    ),
    Option(
        "max_queued_bytes",
        GLOBAL,
        INT,
        "Bytes queued per client beyond those in flight, until the limit is exceeded (the "
        "message that crosses it is still queued); 0 = no maximum.",
        "sessions",
        default=0,
        check=checks.negative_is(0),
    ),
    Option(
        "queue_qos0_messages",
        GLOBAL,
        BOOL,
        "Also queue QoS 0 messages for disconnected persistent clients (non-standard; counted in "
        "`max_queued_messages`).",
        "sessions",
        default=False,
    ),
    Option(
        "persistent_client_expiration",
        GLOBAL,
        DURATION,
        "Remove persistent sessions whose client has not reconnected within DURATION: a "
        "positive whole number followed by `h`, `d`, `w`, `m` (30 days) or `y` (365 days), e.g. "
        "`14d`. TOML also takes a number of seconds.",
        "sessions",
        default=None,
        default_doc="never",
        syntax="`persistent_client_expiration DURATION`",
        mosquitto="Same; `Config` holds seconds.",
    ),
    Option(
        "max_keepalive",
        GLOBAL,
        INT,
        "Largest keepalive (0..65535) a v5 client may use; others are sent a Server Keep Alive "
        "of N.",
        "sessions",
        default=65535,
        check=checks.int_range(0, 65535),
        mosquitto="Mosquitto 2.0.11 refuses values below 10; later 2.0 releases and midge accept "
        "0..65535.",
    ),
    Option(
        "connect_timeout",
        GLOBAL,
        SECONDS,
        "midge only: close a connection that has not sent CONNECT within this many seconds (may "
        "be fractional, must be > 0).",
        "sessions",
        default=10.0,
        default_doc="10",
        check=checks.positive_seconds,
        mosquitto=MIDGE_ONLY,
    ),
)

_PACKETS = (
    Option(
        "max_packet_size",
        GLOBAL,
        INT,
        "Largest packet accepted from any client, in bytes (20 or more); v5 clients are told via "
        "Maximum Packet Size, larger packets disconnect.",
        "packets",
        default=0,
        default_doc="no limit",
        check=checks.int_range(20, 2**31 - 1, " (Mosquitto forbids less than 20 bytes)"),
        mosquitto="Same (Mosquitto also refuses less than 20).",
    ),
    Option(
        "message_size_limit",
        GLOBAL,
        INT,
        "Largest PUBLISH payload accepted (0..268435455); larger messages are not delivered, the "
        'QoS flow still completes (v5: reason "implementation specific error").',
        "packets",
        default=0,
        default_doc="0 (no limit)",
        check=checks.int_range(0, checks.MAX_PAYLOAD, " (0 = no limit)"),
        mosquitto="Same, including Mosquitto's notice to prefer `max_packet_size`.",
        apply="message_size_limit",
    ),
    Option(
        "retain_available",
        GLOBAL,
        BOOL,
        "When false, retained messages are not supported and a client publishing with RETAIN is "
        "disconnected.",
        "packets",
        default=True,
    ),
    Option(
        "upgrade_outgoing_qos",
        GLOBAL,
        BOOL,
        "Deliver at the subscription's QoS even when the message's is lower (non-standard).",
        "packets",
        default=False,
    ),
    Option(
        "set_tcp_nodelay",
        GLOBAL,
        BOOL,
        "Set TCP_NODELAY on client sockets.",
        "packets",
        default=False,
    ),
)

_LIMITS = (
    Option(
        "global_max_connections",
        GLOBAL,
        INT,
        "Most clients connected over all listeners together (per worker with `--workers`). Over "
        "it: CONNACK 0x97 (v3 return code 3), closed.",
        "limits",
        default=-1,
        default_doc="-1 (unlimited)",
        check=checks.negative_is(-1),
        mosquitto=MIDGE_ONLY,
    ),
    Option(
        "max_connection_rate",
        GLOBAL,
        INT,
        "New connections per second from one IP address (a burst of N allowed). Over it: "
        "CONNACK 0x9F Connection rate exceeded (v3 return code 3), closed.",
        "limits",
        default=0,
        check=checks.negative_is(0),
        mosquitto=MIDGE_ONLY,
    ),
    Option(
        "max_publish_rate",
        GLOBAL,
        INT,
        "PUBLISH packets per second from one client (a burst of N allowed). Over it: DISCONNECT "
        "0x96 Message rate too high (v3: closed).",
        "limits",
        default=0,
        check=checks.negative_is(0),
        mosquitto=MIDGE_ONLY,
    ),
    Option(
        "max_subscriptions",
        GLOBAL,
        INT,
        "Topic filters one client may hold. Over it: SUBACK 0x97 Quota exceeded (v3: 0x80).",
        "limits",
        default=0,
        check=checks.negative_is(0),
        mosquitto=MIDGE_ONLY,
    ),
    Option(
        "max_topic_levels",
        GLOBAL,
        INT,
        "Levels in a topic name or filter. Over it: the PUBLISH is not routed and acknowledged "
        "with 0x90 Topic Name invalid (v3: acknowledged); the SUBSCRIBE gets 0x8F Topic Filter "
        "invalid (v3: 0x80).",
        "limits",
        default=0,
        check=checks.negative_is(0),
        mosquitto=MIDGE_ONLY,
    ),
    Option(
        "max_topic_length",
        GLOBAL,
        INT,
        "UTF-8 bytes in a topic name or filter (0..65535); over it, as `max_topic_levels`.",
        "limits",
        default=0,
        check=checks.int_range(0, 65535, " (0 = no limit)"),
        mosquitto=MIDGE_ONLY,
    ),
)

_PERSISTENCE = (
    Option(
        "persistence",
        GLOBAL,
        BOOL,
        "false: keep nothing on disk (the same as `durability none`). true: keep sessions, their "
        "subscriptions, queued and in-flight messages, inbound QoS 2 state, retained messages "
        "and pending wills in SQLite, and acknowledge a message only once it is recorded. "
        "`retained_persistence` is accepted as its old name.",
        "persistence",
        field=None,
        default_doc="true for `midge broker` with no file or a TOML file; false under a "
        "mosquitto.conf (unless it sets midge's `durability fsync\\|os`)",
        mosquitto="Mosquitto's default is false, and so is midge's under a mosquitto.conf: "
        "without `persistence true` nothing survives a restart. Mosquitto saves a snapshot every "
        "`autosave_interval` (losing what came since); midge commits every change before "
        "acknowledging it.",
        apply="persistence",
    ),
    Option(
        "retained_persistence",
        GLOBAL,
        BOOL,
        "",
        "persistence",
        field=None,
        alias_of="persistence",
        formats=(CONF,),
        row_of="persistence",
        apply="persistence",
    ),
    Option(
        "persistence_location",
        GLOBAL,
        TEXT,
        "Directory of the database (see `persistence_file`, with its `-wal`/`-shm` files) and "
        "its lock file (the database's name ending `.lock`: `midge.lock`); created if missing.",
        "persistence",
        alias_of="data_dir",
        field="data_dir",
        once=True,
        syntax="`persistence_location DIR` / `data_dir DIR` (the same option)",
        default_doc="`./data` for `midge broker`; the current directory under a mosquitto.conf",
        mosquitto="Mosquitto's default is the current directory too. With persistence off it has "
        "no effect (a notice says so).",
    ),
    Option(
        "persistence_file",
        GLOBAL,
        TEXT,
        "Name of the database file in `persistence_location`. Its format is midge's own "
        "(SQLite): midge cannot read a file Mosquitto wrote, and stops at start, naming it, "
        "rather than touch one.",
        "persistence",
        once=True,
        syntax="`persistence_file NAME`",
        default_doc="`midge.db`; `mosquitto.db` under a mosquitto.conf",
        mosquitto="Mosquitto's default is `mosquitto.db`; its file and midge's are not "
        "interchangeable.",
    ),
    Option(
        "data_dir",
        GLOBAL,
        TEXT,
        "",
        "persistence",
        once=True,
        row_of="persistence_location",
    ),
    Option(
        "durability",
        GLOBAL,
        WORD,
        "midge only. `fsync`: an ack (PUBACK, PUBREC) goes out once the message is committed and "
        "fsynced (survives power loss). `os`: committed to the operating system, not fsynced "
        "(survives a broker crash or SIGKILL, not a power cut). `none`: memory only.",
        "persistence",
        default="fsync",
        check=checks.durability,
        syntax="`durability fsync\\|os\\|none`",
        mosquitto=MIDGE_ONLY,
        apply="durability",
    ),
    Option(
        "autosave_interval",
        GLOBAL,
        INT,
        "Accepted and ignored with a notice: midge has no snapshot interval, it commits "
        "every change before acknowledging it (group commit), which is stronger than any "
        "autosave setting.",
        "persistence",
        field=None,
        syntax="`autosave_interval N`, `autosave_on_changes BOOL`",
        default_doc="—",
        mosquitto="Mosquitto saves its state at these moments only.",
        apply="autosave",
    ),
    Option(
        "autosave_on_changes",
        GLOBAL,
        BOOL,
        "",
        "persistence",
        field=None,
        row_of="autosave_interval",
        apply="autosave",
    ),
)

_IGNORED = (
    Option(
        "retry_interval",
        GLOBAL,
        INT,
        "Accepted and ignored, with a notice, as Mosquitto 2 does: an unacknowledged QoS 1/2 "
        "message is re-sent when its client reconnects (MQTT-4.4.0-1), never on a timer.",
        "sessions",
        field=None,
        check=checks.int_range(0, None),
        default_doc="—",
        mosquitto="Mosquitto 2 ignores it too (with a warning).",
        apply="ignored",
    ),
    Option(
        "log_facility",
        GLOBAL,
        INT,
        "The syslog facility (0..7: local0..local7) of `log_dest syslog`; accepted, and without "
        "effect while midge does not log to syslog (with a notice).",
        "logging",
        field=None,
        check=checks.int_range(0, 7),
        default_doc="—",
        mosquitto="Mosquitto uses it for syslog.",
        apply="ignored",
    ),
)

_LOGGING = (
    Option(
        "log_dest",
        GLOBAL,
        STRINGS,
        "Where log lines go. May repeat: the first `log_dest` replaces the default, later ones "
        'add; `none` clears. Only one `file`. TOML: a string or array, `"file PATH"`.',
        "logging",
        default=["stderr"],
        default_doc="stderr",
        syntax="`log_dest stderr\\|stdout\\|file PATH\\|none`",
        mosquitto="`syslog`, `topic` and `dlt` are refused: not supported yet.",
        apply="log_dest",
    ),
    Option(
        "log_type",
        GLOBAL,
        STRINGS,
        "Which messages to log: `debug`, `error`, `warning`, `notice`, `information`, "
        "`subscribe`, `unsubscribe`, `all`, `none`. May repeat, like `log_dest`.",
        "logging",
        default=list(checks.DEFAULT_LOG_TYPES),
        default_doc=", ".join(checks.DEFAULT_LOG_TYPES),
        syntax="`log_type TYPE`",
        mosquitto="`websockets` refused: not supported yet.",
        apply="log_type",
    ),
    Option(
        "log_timestamp",
        GLOBAL,
        BOOL,
        "Prefix each line with a timestamp.",
        "logging",
        default=True,
    ),
    Option(
        "log_timestamp_format",
        GLOBAL,
        TEXT,
        "strftime format of the timestamp, e.g. `%Y-%m-%dT%H:%M:%S`.",
        "logging",
        once=True,
        syntax="`log_timestamp_format FORMAT`",
        default_doc="seconds since the epoch",
    ),
    Option(
        "connection_messages",
        GLOBAL,
        BOOL,
        "Log client connections and disconnections.",
        "logging",
        default=True,
    ),
)

_PROCESSES = (
    Option(
        "workers",
        GLOBAL,
        INT,
        "midge only: run N broker processes (1..256) that share every listener (SO_REUSEPORT) "
        "and route messages to each other; `--workers N` overrides it. See "
        "[workers.md](workers.md).",
        "processes",
        default=1,
        check=checks.int_range(1, 256, " (broker processes; midge only)"),
        mosquitto=MIDGE_ONLY,
    ),
)

_FILES = (
    Option(
        "pid_file",
        GLOBAL,
        TEXT,
        "Write the broker's process id to PATH.",
        "files",
        once=True,
        syntax="`pid_file PATH`",
        default_doc="none",
        mosquitto="Same. With `workers`, the supervising parent's id.",
    ),
    Option(
        "scram_file",
        GLOBAL,
        TEXT,
        "midge only: SCRAM-SHA-256/SCRAM-SHA-512 credentials for MQTT 5 enhanced "
        "authentication, written by `midge scram`; without it those methods are refused (0x8C). "
        "See [security.md](security.md#scram-mqtt-5-enhanced-authentication).",
        "files",
        once=True,
        syntax="`scram_file PATH`",
        default_doc="none",
        mosquitto="Mosquitto has no such option (it needs an auth plugin for enhanced "
        "authentication).",
    ),
    Option(
        "include_dir",
        GLOBAL,
        RAW,
        "Read `DIR/*.conf`; see the format section above.",
        "files",
        field=None,
        formats=(CONF,),
        syntax="`include_dir DIR` (conf only)",
        default_doc="—",
        mosquitto="Same; in an included file it is an error (Mosquitto skips it silently).",
        apply="include_dir",
    ),
)


def _refused(group: str, names: str, notes: dict[str, str] | None = None) -> tuple[Option, ...]:
    notes = notes or {}
    return tuple(
        Option(
            name,
            GLOBAL,
            UNSUPPORTED,
            "",
            "unsupported",
            field=None,
            unsupported=group,
            note=notes.get(name, ""),
        )
        for name in names.split()
    )


_TLS_ENGINE = "OpenSSL engines are not available to Python's ssl module"

#: The Mosquitto options midge refuses by name, by the support they come with.
_UNSUPPORTED = (
    *_refused(
        "security (authentication, access control, TLS)",
        "psk_file psk_hint auth_plugin plugin auth_plugin_deny_special_chars check_retain_source "
        "clientid_prefixes use_username_as_clientid ciphers_tls1.3 crlfile dhparamfile tls_engine "
        "tls_engine_kpass_sha1 tls_keyform",
        {
            "ciphers_tls1.3": "Python's ssl module cannot restrict TLS 1.3 cipher suites; "
            "'ciphers' restricts TLS 1.2",
            "tls_engine": _TLS_ENGINE,
            "tls_engine_kpass_sha1": _TLS_ENGINE,
            "tls_keyform": "only PEM key files are supported, which is Mosquitto's default",
        },
    ),
    Option(
        "auth_opt_",
        GLOBAL,
        RAW,
        "",
        "unsupported",
        field=None,
        prefix=True,
        apply="c_plugin_option",
        unsupported="security (authentication, access control, TLS)",
    ),
    Option(
        "plugin_opt_",
        GLOBAL,
        RAW,
        "",
        "unsupported",
        field=None,
        prefix=True,
        note="Mosquitto's C plugins: midge takes Python plugins, `auth_python`",
        apply="c_plugin_option",
        unsupported="security (authentication, access control, TLS)",
    ),
    *_refused("websockets", "http_dir websockets_log_level websockets_headers_size"),
    *_refused(
        "bridges",
        "connection address addresses bridge_alpn bridge_attempt_unsubscribe bridge_bind_address "
        "bridge_cafile bridge_capath bridge_certfile bridge_identity bridge_insecure "
        "bridge_keyfile bridge_max_packet_size bridge_outgoing_retain bridge_protocol_version "
        "bridge_psk bridge_require_ocsp bridge_tls_version cleansession local_cleansession "
        "clientid remote_clientid idle_timeout keepalive_interval local_clientid local_password "
        "local_username notifications notifications_local_only notification_topic password "
        "remote_password username remote_username restart_timeout round_robin start_type "
        "threshold topic try_private",
    ),
    *_refused("$SYS", "sys_interval"),
    *_refused("listener options", "mount_point bind_interface"),
    *_refused(
        "other",
        "allow_duplicate_messages memory_limit user",
        {
            "allow_duplicate_messages": "deprecated in Mosquitto; midge never sends duplicates",
            "user": "run midge as the user you want instead",
            "memory_limit": "no memory accounting yet",
        },
    ),
)

OPTIONS: tuple[Option, ...] = (
    *_LISTENERS,
    *_TLS,
    *_CLIENT_IDS,
    *_SECURITY,
    *_SESSIONS,
    *_PACKETS,
    *_LIMITS,
    *_PERSISTENCE,
    *_LOGGING,
    *_IGNORED,
    *_PROCESSES,
    *_FILES,
    *_UNSUPPORTED,
)

GROUP = OptionGroup("broker", OPTIONS)

#: Every TLS listener option midge implements (Mosquitto's names).
TLS_OPTIONS: tuple[str, ...] = tuple(o.name for o in _TLS)
