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
    SAME,
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
        "Start a listener on PORT, on ADDRESS only or every address. `listener 0 PATH` listens on "
        "the Unix socket PATH instead (see `unix_socket_path`).",
        "listeners",
        field=None,
        syntax="`listener PORT [ADDRESS]`, `listener 0 PATH` (conf) / `[[listener]]` with `port`, "
        "`address` (TOML)",
        default_doc="none: local only mode, `127.0.0.1:1883`",
        mosquitto="`listener 0 PATH` is a Unix socket when PATH contains a `/` (write `./name` "
        "for a relative one); port 0 with an address, or alone, means any free port (Mosquitto "
        "refuses port 0 without a path). Local only mode binds `127.0.0.1` only (Mosquitto also "
        "`::1`).",
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
        syntax="`protocol mqtt\\|websockets\\|http`",
        mosquitto="Same: `websockets` is MQTT over WebSocket (ws, or wss with the TLS options; "
        "docs/websockets.md). `http` is midge's: Prometheus `/metrics` and the admin API "
        "([operations.md](operations.md)); such a listener without an address listens on "
        "127.0.0.1 only.",
    ),
    Option(
        "http_dir",
        LISTENER,
        TEXT,
        "On a `protocol websockets` listener: serve the files under DIRECTORY to plain HTTP "
        "GET requests on the same port (`/` is `index.html`); a path leading outside "
        "DIRECTORY is refused (403). Without it, only WebSocket upgrades are answered.",
        "listeners",
        once=True,
        syntax="`http_dir DIRECTORY`",
        default_doc="none",
        mosquitto="Same (GET and HEAD, one request per connection; docs/websockets.md).",
    ),
    Option(
        "websockets_headers_size",
        GLOBAL,
        INT,
        "Largest HTTP request head (request line and headers) a WebSocket listener reads, in "
        "bytes; larger requests are answered 431. 0: 4096.",
        "listeners",
        default=0,
        default_doc="0 (4096 bytes)",
        check=checks.int_range(0, 65535),
        mosquitto="Mosquitto sizes libwebsockets' header buffer (default 1024, header values "
        "only); midge counts the whole request head, hence the larger default.",
    ),
    Option(
        "websockets_log_level",
        GLOBAL,
        INT,
        "With `log_type websockets` (or `all`), any non-zero value logs the WebSocket layer's "
        "own lines (logger `midge.websockets`: upgrades refused, ...); 0 logs none, as "
        "Mosquitto.",
        "logging",
        default=0,
        check=checks.int_range(0, 2**31 - 1),
        mosquitto="Mosquitto passes the bit mask to libwebsockets; midge has no such levels.",
        reload=True,
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
    # -- issue 11 (i11-dirs-proc): Unix socket listeners, bind_interface
    Option(
        "unix_socket_path",
        LISTENER,
        TEXT,
        "TOML: listen on this Unix socket instead of TCP (`port` then 0 or left out); "
        "mosquitto.conf writes it `listener 0 PATH`. An old socket file at PATH is removed first; "
        "the socket is made with umask 007 (owner and group may connect) and removed when midge "
        "stops. Limits, authentication and `per_listener_settings` apply as to a TCP listener.",
        "listeners",
        default=None,
        default_doc="none",
        check=checks.unix_socket_path,
        formats=(TOML,),
        syntax="`unix_socket_path = PATH` (TOML only)",
        mosquitto="Mosquitto's `listener 0 PATH`, the same.",
    ),
    Option(
        "bind_interface",
        LISTENER,
        TEXT,
        "Listen only on the addresses of this network interface (e.g. `eth0`, `lo`), as "
        "Mosquitto does: each address family's socket binds to the interface's first address of "
        "that family; with a listener ADDRESS, that address must be the interface's. An unknown "
        "interface, or one with no address the listener can use, stops the start.",
        "listeners",
        default=None,
        default_doc="none",
        once=True,
        check=checks.interface_name,
        syntax="`bind_interface NAME`",
        mosquitto="Same (Mosquitto 2.0 binds to the interface's address, not SO_BINDTODEVICE, so "
        "no privilege is needed); midge names the line of the problem.",
    ),
    # -- issue 13 (i13-proxy): the PROXY protocol (docs/proxy.md)
    Option(
        "enable_proxy_protocol",
        LISTENER,
        INT,
        "Every connection on this listener starts with HAProxy's PROXY protocol header, version "
        "1 (text, HAProxy's `send-proxy`) or 2 (binary, `send-proxy-v2`); the client address it "
        "gives is used for the limits, the logs and the authentication plugins. A connection "
        "without a valid header within `connect_timeout` is closed and logged. On a TLS "
        "listener the header comes before the TLS handshake (the proxy passes TLS through). With "
        "2 and no `certfile`, the TLS the proxy terminated counts: `require_certificate` and "
        "`use_identity_as_username` read the header's TLS fields (see docs/proxy.md). Only for "
        "listeners that nothing but the proxy can reach.",
        "listeners",
        default=0,
        default_doc="off",
        once=True,
        check=checks.int_range(1, 2),
        syntax="`enable_proxy_protocol 1\\|2`",
        mosquitto="Mosquitto 2.1's option (2.0 has none). Mosquitto refuses `certfile` with 2 and "
        "closes v2 LOCAL connections; midge reads the header before its own TLS and treats "
        "LOCAL as the spec says (docs/mosquitto.md).",
    ),
    Option(
        "proxy_protocol_v2_require_tls",
        LISTENER,
        BOOL,
        "With `enable_proxy_protocol 2`: refuse a connection whose PROXY header does not say "
        "the client used TLS to the proxy (HAProxy's `send-proxy-v2-ssl`).",
        "listeners",
        default=False,
        mosquitto="Mosquitto 2.1's option, the same.",
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
        "ignored, no password check. A client without a certificate (or whose certificate has "
        "no CN) is refused at CONNECT: v5 0x86, v3 return code 4 (bad username or password). "
        "Without `require_certificate true` no certificate is asked for, so every client is "
        "refused (as in Mosquitto; a notice says so).",
        "tls",
        default=False,
    ),
    Option(
        "use_subject_as_username",
        LISTENER,
        BOOL,
        "The certificate's whole subject (RFC 2253, as Mosquitto prints it) is the username.",
        "tls",
        default=False,
        mosquitto="Same.",
    ),
    # -- issue 11 (i11-dirs-proc): crlfile, dhparamfile
    Option(
        "crlfile",
        LISTENER,
        TEXT,
        "PEM certificate revocation list(s) of the CA: a client whose certificate it revokes "
        "fails the TLS handshake. Needs `require_certificate true`.",
        "tls",
        once=True,
        syntax="`crlfile PATH`",
        default_doc="none",
        mosquitto="Same: only the client's own certificate is checked (OpenSSL's CRL_CHECK), so "
        "the CRL of its issuing CA must be in the file.",
    ),
    Option(
        "dhparamfile",
        LISTENER,
        TEXT,
        "PEM Diffie-Hellman parameters (`openssl dhparam`), for the DHE ciphers of TLS 1.2.",
        "tls",
        once=True,
        syntax="`dhparamfile PATH`",
        default_doc="none",
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
        reload=True,
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
        reload=True,
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
        reload=True,
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
        reload=True,
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
        mosquitto="Same: every SUBSCRIBE is granted, each delivery is checked for read access.",
        reload=True,
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
        "Messages queued per client beyond those in flight; 0 = no maximum (negative = 0). "
        "Bounds two queues apart: the QoS 1/2 messages waiting for the in-flight window or for a "
        "disconnected client, and the QoS 0 messages waiting for a connected client whose socket "
        "is backed up (it reads slower than messages come). A message that finds its queue full "
        "is dropped and counted (stats `messages_dropped`, `queue_dropped`).",
        "sessions",
        default=1000,
        mosquitto="Same; Mosquitto also bounds a connected client's unwritten QoS 0 packets by "
        "it, counting all its unwritten packets ([mosquitto.md](mosquitto.md)).",
        check=checks.negative_is(0),
    ),
    Option(
        "max_queued_bytes",
        GLOBAL,
        INT,
        "Payload bytes queued per client beyond those in flight, until the limit is exceeded "
        "(the message that crosses it is still queued); 0 = no maximum. Bounds the same two "
        "queues as `max_queued_messages`, each apart; the first limit reached drops.",
        "sessions",
        default=0,
        check=checks.negative_is(0),
    ),
    Option(
        "memory_limit",
        GLOBAL,
        INT,
        "Bytes of messages the broker may hold; 0 = no limit. Counted: the payloads of the "
        "retained messages and of every message a session holds (queued, in flight, or QoS 0 "
        "waiting for a slow socket), once per session. Once an incoming PUBLISH would go "
        "beyond it, the PUBLISH is refused and counted as dropped: MQTT 5 QoS 1/2 with reason "
        "0x97 Quota exceeded in PUBACK/PUBREC (the client stays connected), MQTT 5 QoS 0 "
        "silently; an MQTT 3.1/3.1.1 client is disconnected, as Mosquitto does. Publishing works "
        "again once deliveries free memory.",
        "sessions",
        default=0,
        mosquitto="Mosquitto counts its whole heap and disconnects the publisher (v5 with "
        "DISCONNECT 0x80) whatever the QoS; see [mosquitto.md](mosquitto.md).",
        check=checks.int_range(0, None),
    ),
    Option(
        "queue_qos0_messages",
        GLOBAL,
        BOOL,
        "Also queue QoS 0 messages for disconnected persistent clients (non-standard; counted in "
        "`max_queued_messages`).",
        "sessions",
        default=False,
        reload=True,
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
        reload=True,
    ),
    Option(
        "max_keepalive",
        GLOBAL,
        INT,
        "Largest keepalive (0..65535) a client may use: a v5 client asking for more (or for 0) "
        "is sent a Server Keep Alive of N; a v3.1/3.1.1 client asking for more (or for 0, when "
        "N < 65535) is refused with return code 2 (identifier rejected). 0: no limit.",
        "sessions",
        default=65535,
        check=checks.int_range(0, 65535),
        mosquitto="Mosquitto 2.0.11 refuses values below 10 and does not apply the limit to "
        "v3.1/3.1.1 clients; 2.0.12 and later refuse them as midge does (documented in "
        "mosquitto.conf(5)); midge accepts 0..65535.",
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
        reload=True,
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
        reload=True,
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
        reload=True,
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
        reload=True,
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
    # log_facility: see _LOGGING.
)

_LOGGING = (
    Option(
        "log_dest",
        GLOBAL,
        STRINGS,
        "Where log lines go. May repeat: the first `log_dest` replaces the default, later ones "
        'add; `none` clears. Only one `file`. TOML: a string or array, `"file PATH"`. `syslog`: '
        "the local syslog socket (`log_syslog_socket`, facility `log_facility`); `topic`: "
        "`$SYS/broker/log/E\\|W\\|N\\|I\\|M/subscribe\\|M/unsubscribe` (QoS 2, expiring after "
        "20 s; debug lines never). See [operations.md](operations.md#logs).",
        "logging",
        default=["stderr"],
        default_doc="stderr",
        syntax="`log_dest stderr\\|stdout\\|file PATH\\|syslog\\|topic\\|none`",
        mosquitto="Same. `dlt` is refused: it needs the C DLT library.",
        apply="log_dest",
        reload=True,
    ),
    Option(
        "log_type",
        GLOBAL,
        STRINGS,
        "Which messages to log: `debug`, `error`, `warning`, `notice`, `information`, "
        "`subscribe`, `unsubscribe`, `websockets` (the WebSocket layer's own lines, with "
        "`websockets_log_level`), `all` (every type), `none`. May repeat, like `log_dest`.",
        "logging",
        default=list(checks.DEFAULT_LOG_TYPES),
        default_doc=", ".join(checks.DEFAULT_LOG_TYPES),
        syntax="`log_type TYPE`",
        apply="log_type",
        reload=True,
    ),
    Option(
        "log_timestamp",
        GLOBAL,
        BOOL,
        "Prefix each line with a timestamp.",
        "logging",
        default=True,
        reload=True,
    ),
    Option(
        "log_timestamp_format",
        GLOBAL,
        TEXT,
        "strftime format of the timestamp, e.g. `%Y-%m-%dT%H:%M:%S`; midge also takes "
        "`iso8601`: ISO 8601 with milliseconds and the UTC offset "
        "(`2026-12-06T05:20:01.123+00:00`). Also the `ts` of `log_format json`.",
        "logging",
        once=True,
        syntax="`log_timestamp_format FORMAT\\|iso8601`",
        default_doc="seconds since the epoch (JSON: iso8601)",
        mosquitto="Same, plus midge's `iso8601`.",
        reload=True,
    ),
    Option(
        "log_format",
        GLOBAL,
        WORD,
        "midge only: `text`, Mosquitto's lines (`1700000000: New client connected from ...`), "
        "or `json`, one JSON object per line with `ts`, `level`, `component`, `message` and, "
        "for connections, `event`, `client_id`, `address`, `port`, `listener`, `protocol`, "
        "`username`, `reason`. See [operations.md](operations.md#logs).",
        "logging",
        default="text",
        check=checks.log_format,
        syntax="`log_format text\\|json`",
        mosquitto=MIDGE_ONLY,
        reload=True,
    ),
    Option(
        "log_level",
        GLOBAL,
        TEXT,
        "midge only: a level per component, replacing `log_type` for it: `COMPONENT=LEVEL` "
        "pairs, COMPONENT one of " + ", ".join(f"`{c}`" for c in checks.LOG_COMPONENTS) + "; "
        "LEVEL `debug`, `info`, `notice`, `warning`, `error` or `none`. E.g. "
        "`log_level auth=debug subscribe=none`.",
        "logging",
        default={},
        default_doc="none (log_type decides)",
        once=True,
        check=checks.log_levels,
        syntax="`log_level COMPONENT=LEVEL ...`",
        mosquitto=MIDGE_ONLY,
        reload=True,
    ),
    Option(
        "log_facility",
        GLOBAL,
        INT,
        "The syslog facility of `log_dest syslog`: 0..7 for local0..local7.",
        "logging",
        default=None,
        check=checks.int_range(0, 7),
        default_doc="daemon",
        syntax="`log_facility N`",
        mosquitto=SAME,
        reload=True,
    ),
    Option(
        "log_syslog_socket",
        GLOBAL,
        TEXT,
        "midge only: the local syslog daemon's Unix socket for `log_dest syslog`.",
        "logging",
        default="/dev/log",
        once=True,
        syntax="`log_syslog_socket PATH`",
        mosquitto=MIDGE_ONLY + " (Mosquitto calls syslog(3), which uses /dev/log.)",
    ),
    Option(
        "connection_messages",
        GLOBAL,
        BOOL,
        "Log client connections and disconnections.",
        "logging",
        default=True,
        reload=True,
    ),
)

_SYS = (
    Option(
        "sys_interval",
        GLOBAL,
        INT,
        "Seconds between updates of the `$SYS/broker/...` status topics (0..65535); 0 = no "
        "`$SYS` at all. See [mosquitto.md](mosquitto.md#sys) for what differs from Mosquitto.",
        "sys",
        default=10,
        check=checks.int_range(0, 65535),
        mosquitto="Same topics and payload formats; with `--workers`, worker 0's numbers.",
        reload=True,
    ),
)

_ADMIN = (
    Option(
        "admin_user",
        GLOBAL,
        TEXT,
        "The user name of the admin API (HTTP Basic) on `protocol http` listeners; without it "
        "the API answers 403 (`/metrics`, `/api/health`, `/api/ready` stay open).",
        "admin",
        once=True,
        default=None,
        default_doc="none",
        syntax="`admin_user NAME`",
    ),
    Option(
        "admin_password_hash",
        GLOBAL,
        TEXT,
        "That user's password, hashed as in a password file (`$7$...`, the part after `NAME:` "
        "of a `midge passwd` line).",
        "admin",
        once=True,
        default=None,
        default_doc="none",
        check=checks.password_hash,
        syntax="`admin_password_hash $7$...`",
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
    Option(
        "batch_window",
        GLOBAL,
        SECONDS,
        "midge only: while busy, each broker process handles its sockets at most once per this "
        "many seconds (0..0.1, may be fractional) and sleeps in between, so that one wake-up "
        "handles many packets: less CPU per message under a steady load, for up to this much "
        "more latency per process a message passes through. An idle broker still answers at "
        "once, a saturated one never sleeps, and nothing ready waits for the sleep to end. "
        "Default 0: every packet handled as it arrives. See [workers.md](workers.md).",
        "processes",
        default=0.0,
        default_doc="0",
        check=checks.batch_window,
        mosquitto=MIDGE_ONLY,
        reload=True,
    ),
    Option(
        "cluster_redis",
        GLOBAL,
        TEXT,
        "midge only: join the cluster of midge nodes that meet in this Redis "
        "(`redis://[USER:PASSWORD@]HOST:PORT/DB`, `rediss://` for TLS, `unix://PATH`, any "
        "master of a Redis Cluster, or `redis+sentinel://HOST:PORT[,...]/SERVICE/DB`): nodes "
        "register and send heartbeats there, share their route table, retained messages and "
        "client ids, and pass messages to each other through it; `--cluster URL` overrides it. "
        "See [cluster.md](cluster.md).",
        "processes",
        default=None,
        default_doc="none (a single node)",
        once=True,
        check=checks.redis_url,
        syntax="`cluster_redis URL`",
        mosquitto=MIDGE_ONLY,
    ),
    Option(
        "cluster_node_id",
        GLOBAL,
        TEXT,
        "midge only: this node's name in the cluster (letters, digits, `.`, `_`, `-`; unique "
        "among the live nodes); `--node-id NAME` overrides it.",
        "processes",
        default=None,
        default_doc="HOSTNAME-PID",
        once=True,
        check=checks.node_id,
        syntax="`cluster_node_id NAME`",
        mosquitto=MIDGE_ONLY,
    ),
    # -- issue 11 (i11-dirs-proc): user
    Option(
        "user",
        GLOBAL,
        TEXT,
        "Started as root, run as this user once the listeners are bound, the TLS, password and "
        "ACL files read, and the log and pid files opened: its groups (initgroups), group and "
        "user ids are set before the persistence database is opened, so `persistence_location` "
        "must be writable by it. A user that does not exist stops the start (for `mosquitto`, "
        "midge falls back to `nobody`, as Mosquitto does); `root` keeps root. Not root: no "
        "effect.",
        "processes",
        default=None,
        default_doc="none (no change)",
        once=True,
        syntax="`user NAME`",
        mosquitto="Mosquitto 2.0 drops to `mosquitto` when started as root with no `user`; midge "
        "changes user only when told. Mosquitto 2.0 drops before binding (privileged ports then "
        "need setcap) and opens its log, pid and database files as the user.",
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

#: Mosquitto's directives about which clients may connect under which id, where a listener's
#: topics live, and how retained and overlapping deliveries behave (issue 11): kept together.
_CLIENTS_AND_TOPICS = (
    Option(
        "mount_point",
        LISTENER,
        TEXT,
        "Prefix every topic of this listener's clients with PREFIX: what they publish (wills "
        "too) goes to `PREFIX` + topic, what they subscribe to is `PREFIX` + filter (ACLs see "
        "the prefixed names), and the prefix is removed from what they receive. They see "
        "nothing outside PREFIX (no `$SYS`); clients of other listeners see the prefixed "
        "topics.",
        "listeners",
        once=True,
        check=checks.mount_point,
        syntax="`mount_point PREFIX`",
        default_doc="none",
        mosquitto="Same, as documented; Mosquitto 2.0.0..2.0.11 forget to remove the prefix "
        "from what the client receives (fixed in 2.0.12), midge removes it. In a "
        "mosquitto.conf it must follow a `listener` line.",
    ),
    Option(
        "use_username_as_clientid",
        LISTENER,
        BOOL,
        "The client id is replaced by the username (before authentication, so ACL `%c` is the "
        "username); a second client with the same username takes the first one over. A client "
        'without username is refused: CONNACK 0x87 (v3: 5 "not authorized").',
        "clientid",
        default=False,
        mosquitto="Same. Per listener, whatever `per_listener_settings` says.",
    ),
    Option(
        "clientid_prefixes",
        GLOBAL,
        TEXT,
        "Deprecated (as in Mosquitto): only client ids starting with PREFIX may connect; others "
        'are refused with CONNACK 0x87 (v3: 5 "not authorized"). Generated ids are checked '
        "too.",
        "clientid",
        once=True,
        syntax="`clientid_prefixes PREFIX`",
        default_doc="none (every id)",
        mosquitto="Same, with the same deprecation notice. Global.",
        apply="deprecated",
        reload=True,
    ),
    Option(
        "check_retain_source",
        GLOBAL,
        BOOL,
        "When a retained message is delivered to a new subscriber, check again that the client "
        "that published it (its client id, username and listener, remembered with the message "
        "and kept on disk) may still publish to its topic; if not (the ACL changed since), it "
        "is not delivered.",
        "security",
        default=False,
        mosquitto="Same. Mosquitto's man page says the default is true, its code (2.0.11) uses "
        "false; midge follows the code.",
    ),
    Option(
        "allow_duplicate_messages",
        GLOBAL,
        BOOL,
        "Deprecated (as in Mosquitto). A message matching several subscriptions of one client: "
        "false sends an MQTT 3.1/3.1.1 client one copy (at the highest QoS of those "
        "subscriptions); true sends it one copy per subscription. MQTT 5 clients always get one "
        "copy per subscription, each with that subscription's QoS and identifier.",
        "packets",
        default=False,
        mosquitto="Same, with the same deprecation notice; Mosquitto's one v3 copy takes the QoS "
        "of the subscription it meets first, midge the highest (MQTT-3.3.5-1).",
        apply="deprecated",
        reload=True,
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
# -- issue 11 (i11-dirs-proc): the reasons PSK and C plugins stay refused
_NO_PSK = "Python's ssl module (3.11) has no TLS-PSK support"
_C_PLUGIN = (
    "Mosquitto's C plugins cannot load in midge; use a Python plugin: auth_python and "
    "auth_python_opt_NAME, see docs/security.md"
)

#: The Mosquitto options midge refuses by name, by the support they come with.
_UNSUPPORTED = (
    *_refused(
        "security (authentication, access control, TLS)",
        "psk_file psk_hint auth_plugin plugin auth_plugin_deny_special_chars "
        "ciphers_tls1.3 tls_engine tls_engine_kpass_sha1 tls_keyform",
        {
            "psk_file": _NO_PSK,
            "psk_hint": _NO_PSK,
            "auth_plugin": _C_PLUGIN,
            "plugin": _C_PLUGIN,
            "auth_plugin_deny_special_chars": "it belongs to Mosquitto's C auth plugins; midge "
            "passes usernames and client ids to its Python plugins (auth_python) as they are",
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
        note=_C_PLUGIN,
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
        note=_C_PLUGIN,
        apply="c_plugin_option",
        unsupported="security (authentication, access control, TLS)",
    ),
    *_refused(
        "bridges",
        "bridge_identity bridge_psk bridge_require_ocsp",
        {
            "bridge_psk": _NO_PSK,
            "bridge_identity": _NO_PSK,
            "bridge_require_ocsp": "Python's ssl module cannot require an OCSP response",
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
    *_SYS,
    *_ADMIN,
    *_IGNORED,
    *_PROCESSES,
    *_FILES,
    *_CLIENTS_AND_TOPICS,
    *_UNSUPPORTED,
)

GROUP = OptionGroup("broker", OPTIONS)

#: Every TLS listener option midge implements (Mosquitto's names).
TLS_OPTIONS: tuple[str, ...] = tuple(o.name for o in _TLS)
