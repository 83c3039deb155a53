"""The bridge options: Mosquitto's ``connection NAME`` sections (``[[bridge]]`` tables in TOML).

Every option after ``connection NAME`` in mosquitto.conf, up to the next ``connection``, belongs
to that bridge (scope ``bridge``); the readers fill one :class:`BridgeConfig` per section and
:func:`finish` checks them as Mosquitto's ``config__check`` does (an address and a topic each,
unique names and local client ids) and fills the defaults that depend on others (the client ids,
the notification topic).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from midge.codec.reasons import CodecError
from midge.codec.topics import validate_topic_filter, validate_topic_name
from midge.config.errors import BadValue, ConfigError
from midge.config.options import (
    BOOL,
    BRIDGE,
    CONF,
    GLOBAL,
    INT,
    STRINGS,
    TEXT,
    TOML,
    WORD,
    Given,
    Option,
    OptionGroup,
)

if TYPE_CHECKING:
    from midge.config.model import Config

IN, OUT, BOTH = "in", "out", "both"


@dataclass(frozen=True, slots=True)
class BridgeTopic:
    """One ``topic`` line, as Mosquitto's bridge__add_topic keeps it: ``local_topic`` is the
    pattern as seen locally (local prefix + pattern), ``remote_topic`` as seen remotely."""

    pattern: str | None  # None: the "" placeholder (the prefixes alone name the topic)
    direction: str
    qos: int
    local_prefix: str | None
    remote_prefix: str | None

    @property
    def local_topic(self) -> str:
        return (self.local_prefix or "") + (self.pattern or "")

    @property
    def remote_topic(self) -> str:
        return (self.remote_prefix or "") + (self.pattern or "")


@dataclass(slots=True)
class BridgeConfig:
    """One ``connection NAME`` section; field names are the options'."""

    name: str = ""
    addresses: list[tuple[str, int]] = field(default_factory=list)
    round_robin: bool = False
    start_type: str = "automatic"
    restart_timeout: tuple[int, int] = (5, 30)  # (base, cap); base == cap: a fixed interval
    idle_timeout: int = 60
    threshold: int = 10
    keepalive_interval: int = 60
    remote_clientid: str | None = None
    local_clientid: str | None = None
    remote_username: str | None = None
    remote_password: str | None = None
    local_username: str | None = None
    local_password: str | None = None
    cleansession: bool = False
    local_cleansession: bool | None = None
    try_private: bool = True
    notifications: bool = True
    notification_topic: str | None = None
    notifications_local_only: bool = False
    topics: list[BridgeTopic] = field(default_factory=list)
    bridge_protocol_version: str = "mqttv311"
    bridge_outgoing_retain: bool = True
    bridge_max_packet_size: int = 0
    bridge_attempt_unsubscribe: bool = True
    bridge_bind_address: str | None = None
    bridge_cafile: str | None = None
    bridge_capath: str | None = None
    bridge_certfile: str | None = None
    bridge_keyfile: str | None = None
    bridge_insecure: bool = False
    bridge_tls_version: str | None = None
    bridge_alpn: str | None = None
    where: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    @property
    def clean_local(self) -> bool:
        """local_cleansession, which defaults to cleansession (Mosquitto's -1)."""
        return self.cleansession if self.local_cleansession is None else self.local_cleansession

    @property
    def tls(self) -> bool:
        return bool(self.bridge_cafile or self.bridge_capath)


def topic_name_valid(topic: str) -> bool:
    try:
        validate_topic_name(topic)
    except CodecError:
        return False
    return True


def topic_filter_valid(topic: str) -> bool:
    try:
        validate_topic_filter(topic)
    except CodecError:
        return False
    return True


# -- checks ---------------------------------------------------------------------------------


def addresses(value: Any) -> list[tuple[str, int]]:
    """``host[:port] ...`` (a TOML array of them too); the port after the last ``:``, 1883
    when none, as Mosquitto reads it."""
    words = value if isinstance(value, list) else str(value).split()
    found: list[tuple[str, int]] = []
    for word in words:
        if not isinstance(word, str):
            raise BadValue("expected host[:port] strings")
        if word.startswith("#"):
            break
        host, sep, port_text = word.rpartition(":")
        if not sep:
            host, port = word, 1883
        else:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise BadValue(f"invalid port in '{word}': expected 1..65535")
            port = int(port_text)
        found.append((host.strip("[]"), port))
    if not found:
        raise BadValue("empty address: expected host[:port] [host[:port] ...]")
    return found


def restart_timeout(value: Any) -> tuple[int, int]:
    """``BASE [CAP]``: one value, a fixed interval (at least 1 s, as Mosquitto); two, an
    exponential backoff from BASE to CAP."""
    words = [str(v) for v in value] if isinstance(value, list) else str(value).split()
    try:
        numbers = [int(w) for w in words if not w.startswith("#")]
    except ValueError:
        raise BadValue(f"invalid value '{value}': expected BASE [CAP] in seconds") from None
    if not 1 <= len(numbers) <= 2:
        raise BadValue(f"invalid value '{value}': expected BASE [CAP] in seconds")
    base = max(numbers[0], 1)
    if len(numbers) == 1:
        return (base, base)
    if numbers[1] < base:
        raise BadValue("the backoff cap is lower than the base")
    return (base, numbers[1])


def choice(*allowed: str) -> Any:
    def check(value: str) -> str:
        if value not in allowed:
            raise BadValue(f"invalid value '{value}': expected {', '.join(allowed)}")
        return value

    return check


def topic_line(value: str) -> BridgeTopic:
    """``PATTERN [in|out|both [QOS [LOCAL-PREFIX [REMOTE-PREFIX]]]]``, ``""`` an empty
    placeholder, as Mosquitto's reader."""
    words = value.split()
    cut = next((i for i, w in enumerate(words) if i > 0 and w.startswith("#")), None)
    if cut is not None:
        words = words[:cut]
    if not words:
        raise BadValue("empty topic: expected PATTERN [in|out|both] [QOS] [LOCAL] [REMOTE]")
    if len(words) > 5:
        raise BadValue(f"unexpected text '{' '.join(words[5:])}'")
    pattern: str | None = None if words[0] == '""' else words[0]
    direction = OUT
    if len(words) > 1:
        direction = words[1].lower()
        if direction not in (IN, OUT, BOTH):
            raise BadValue(f"invalid bridge topic direction '{words[1]}': expected in, out, both")
    qos = 0
    if len(words) > 2:
        if words[2] not in ("0", "1", "2"):
            raise BadValue(f"invalid bridge QoS level '{words[2]}': expected 0, 1 or 2")
        qos = int(words[2])
    local = words[3] if len(words) > 3 and words[3] != '""' else None
    remote = words[4] if len(words) > 4 and words[4] != '""' else None
    for what, prefix in (("local", local), ("remote", remote)):
        if prefix is not None:
            if not topic_name_valid(prefix):
                raise BadValue(f"invalid bridge topic {what} prefix '{prefix}'")
            if not topic_filter_valid(prefix + (pattern or "")):
                raise BadValue(
                    f"invalid bridge topic {what} prefix and pattern combination "
                    f"'{prefix}{pattern or ''}'"
                )
    if pattern is None and (local is None or remote is None):
        raise BadValue('invalid bridge remapping: a "" pattern needs both prefixes')
    if pattern is not None and not topic_filter_valid(pattern):
        raise BadValue(f"invalid topic pattern '{pattern}'")
    return BridgeTopic(pattern, direction, qos, local, remote)


def _topics(value: Any) -> list[BridgeTopic]:
    lines = value if isinstance(value, list) else [value]
    return [topic_line(line) for line in lines]


# -- the table ------------------------------------------------------------------------------


def _opt(name: str, kind: str, doc: str, default: Any = None, **kw: Any) -> Option:
    return Option(name, BRIDGE, kind, doc, "bridges", default=default, **kw)


OPTIONS: tuple[Option, ...] = (
    Option(
        "connection",
        GLOBAL,
        WORD,
        "Start a bridge called NAME: the bridge options below it, up to the next `connection`, "
        "configure it. TOML: a `[[bridge]]` table with `connection = NAME`.",
        "bridges",
        syntax="`connection NAME` (conf) / `[[bridge]]` with `connection = NAME` (TOML)",
        field=None,
        apply="connection",
        formats=(CONF,),
    ),
    Option(
        "bridge",
        GLOBAL,
        TEXT,
        "TOML: one bridge per `[[bridge]]` table (its keys are the bridge options).",
        "bridges",
        syntax="`[[bridge]]`",
        field=None,
        apply="bridge",
        formats=(TOML,),
        toml_raw=True,
    ),
    _opt(
        "address",
        TEXT,
        "The remote broker(s): `host[:port]` (port 1883 by default), several separated by "
        "spaces (TOML: a string or an array). Tried in order.",
        [],
        field="addresses",
        check=addresses,
        toml_raw=True,
        default_doc="none (required)",
        syntax="`address HOST[:PORT] ...`",
    ),
    _opt("addresses", TEXT, "Same as `address`.", [], alias_of="address", field="addresses"),
    _opt(
        "round_robin",
        BOOL,
        "With several addresses: true, move to the next address after each lost connection; "
        "false, the first is the primary, the others are used only while it is unreachable.",
        False,
    ),
    _opt(
        "start_type",
        WORD,
        "automatic: connect at start and reconnect; lazy: connect once `threshold` messages "
        "wait, disconnect after `idle_timeout` s idle; once: connect at start, never again.",
        "automatic",
        check=choice("automatic", "lazy", "once"),
    ),
    _opt(
        "restart_timeout",
        TEXT,
        "Seconds before reconnecting: `BASE` a fixed interval, `BASE CAP` an exponential "
        "backoff from BASE up to CAP.",
        (5, 30),
        default_doc="5 30",
        check=restart_timeout,
        toml_raw=True,
        syntax="`restart_timeout BASE [CAP]`",
    ),
    _opt(
        "idle_timeout",
        INT,
        "lazy: seconds idle before the bridge disconnects (below 1: 1, as Mosquitto).",
        60,
        check=lambda n: max(int(n), 1),
    ),
    _opt("threshold", INT, "lazy: messages waiting before the bridge connects.", 10),
    _opt("keepalive_interval", INT, "Keep alive (seconds) of the remote connection.", 60),
    _opt(
        "remote_clientid",
        WORD,
        "Client id on the remote broker.",
        None,
        default_doc="HOSTNAME.NAME",
    ),
    _opt(
        "clientid",
        WORD,
        "Same as `remote_clientid`.",
        None,
        alias_of="remote_clientid",
        field="remote_clientid",
    ),
    _opt(
        "local_clientid",
        WORD,
        "Client id of the bridge's session in this broker.",
        None,
        default_doc="local.REMOTE_CLIENTID",
    ),
    _opt("remote_username", WORD, "Username on the remote broker.", None),
    _opt(
        "username",
        WORD,
        "Same as `remote_username`.",
        None,
        alias_of="remote_username",
        field="remote_username",
    ),
    _opt("remote_password", WORD, "Password on the remote broker.", None),
    _opt(
        "password",
        WORD,
        "Same as `remote_password`.",
        None,
        alias_of="remote_password",
        field="remote_password",
    ),
    _opt(
        "local_username",
        WORD,
        "Username of the bridge's local session (checked by this broker's authentication "
        "and ACLs like any client's).",
        None,
    ),
    _opt("local_password", WORD, "Password of the bridge's local session.", None),
    _opt(
        "cleansession",
        BOOL,
        "Clean session on the remote broker; false keeps the remote subscriptions and queued "
        "messages across reconnections.",
        False,
    ),
    _opt(
        "local_cleansession",
        BOOL,
        "Clean session of the local session (false: messages bound for the remote wait in "
        "this broker's store while it is away).",
        None,
        default_doc="cleansession",
    ),
    _opt(
        "try_private",
        BOOL,
        "Tell the remote broker this is a bridge (bit 0x80 of the CONNECT protocol level, "
        "MQTT 3.1/3.1.1): it sends none of the bridge's own messages back.",
        True,
    ),
    _opt(
        "notifications",
        BOOL,
        "Publish the connection state, retained: 1 connected, 0 not (a will on the remote).",
        True,
    ),
    _opt(
        "notification_topic",
        TEXT,
        "The topic of the state notifications.",
        None,
        default_doc="$SYS/broker/connection/REMOTE_CLIENTID/state",
    ),
    _opt(
        "notifications_local_only",
        BOOL,
        "Publish the notifications on this broker only.",
        False,
    ),
    _opt(
        "topic",
        STRINGS,
        "Bridge PATTERN: `out` local to remote (the default), `in` remote to local, `both`; "
        'QOS (default 0); the prefixes are added on their side and removed on the other (`""` '
        "for none, or as PATTERN). Repeatable; TOML: an array of these lines.",
        [],
        field="topics",
        check=_topics,
        toml_raw=True,
        syntax="`topic PATTERN [in|out|both] [QOS] [LOCAL-PREFIX] [REMOTE-PREFIX]`",
    ),
    _opt(
        "bridge_protocol_version",
        WORD,
        "The protocol the bridge speaks to the remote: mqttv311, mqttv50 or mqttv31 (MQTT 3.1, "
        '"MQIsdp").',
        "mqttv311",
        check=choice("mqttv31", "mqttv311", "mqttv50"),
    ),
    _opt(
        "bridge_outgoing_retain",
        BOOL,
        "Keep the retain flag on messages sent to the remote (false: clear it).",
        True,
    ),
    _opt(
        "bridge_max_packet_size",
        INT,
        "mqttv50: the largest packet the bridge accepts from the remote (0: no limit).",
        0,
    ),
    _opt(
        "bridge_attempt_unsubscribe",
        BOOL,
        "Unsubscribe from the remote `in` topics when the bridge stops for good.",
        True,
    ),
    _opt(
        "bridge_bind_address",
        WORD,
        "Local address the remote connection is made from.",
        None,
    ),
    _opt("bridge_cafile", TEXT, "CA certificates (PEM) for a TLS bridge.", None),
    _opt("bridge_capath", TEXT, "Directory of CA certificates for a TLS bridge.", None),
    _opt("bridge_certfile", TEXT, "Client certificate (PEM) for a TLS bridge.", None),
    _opt("bridge_keyfile", TEXT, "Client key (PEM) for a TLS bridge.", None),
    _opt(
        "bridge_insecure",
        BOOL,
        "Do not check the remote certificate's host name (testing only).",
        False,
    ),
    _opt(
        "bridge_tls_version",
        WORD,
        "Lowest TLS version: tlsv1.3, tlsv1.2 or tlsv1.1.",
        None,
        check=choice("tlsv1.3", "tlsv1.2", "tlsv1.1"),
    ),
    _opt("bridge_alpn", WORD, "ALPN protocol offered to the remote.", None),
)


def finish(config: Config, given: Given) -> None:
    """Mosquitto's config__check for bridges, and the defaults that depend on other values."""
    host = socket.gethostname()
    seen: dict[str, str] = {}
    for bridge in config.bridges:
        path, line = bridge.where.get("connection", (config.source, None))
        if not bridge.addresses:
            raise ConfigError(
                f"bridge '{bridge.name}' has no remote address: add 'address HOST[:PORT]'",
                path,
                line,
            )
        if not bridge.topics:
            raise ConfigError(
                f"bridge '{bridge.name}' has no topics: add 'topic PATTERN [in|out|both]'",
                path,
                line,
            )
        if bridge.remote_clientid is None:
            bridge.remote_clientid = f"{host}.{bridge.name}"
        if bridge.local_clientid is None:
            bridge.local_clientid = f"local.{bridge.remote_clientid}"
        if bridge.notification_topic is None:
            bridge.notification_topic = f"$SYS/broker/connection/{bridge.remote_clientid}/state"
        if (bridge.bridge_certfile is None) != (bridge.bridge_keyfile is None):
            raise ConfigError(
                f"bridge '{bridge.name}': bridge_certfile and bridge_keyfile go together",
                path,
                line,
            )
        other = seen.get(bridge.local_clientid)
        if other is not None:
            raise ConfigError(
                f"bridge local_clientid '{bridge.local_clientid}' is not unique (bridges "
                f"'{other}' and '{bridge.name}'); set local_clientid for one of them",
                path,
                line,
            )
        seen[bridge.local_clientid] = bridge.name


GROUP = OptionGroup("bridges", OPTIONS, finish=finish, finish_last=True)
