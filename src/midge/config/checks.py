"""Value checkers the option table names (``Option.check``).

A checker takes the value as read (a whole number, a word, ...) and returns it, possibly
normalized, or raises :class:`~midge.config.errors.BadValue` with the problem and its fix; the
reader adds the file, the line and the option name.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from midge.config.errors import BadValue

if TYPE_CHECKING:
    from midge.config.options import Option

MAX_PAYLOAD = 268_435_455  # the largest Remaining Length, hence the largest possible payload

#: Mosquitto's log types, in the order midge keeps them in ``Config.log_type``.
LOG_TYPES = ("debug", "error", "warning", "notice", "information", "subscribe", "unsubscribe")
#: Mosquitto's default ``log_type`` set.
DEFAULT_LOG_TYPES = ("error", "warning", "notice", "information")
#: Why ``log_dest dlt`` is refused (both readers say it).
DLT_REFUSED = (
    "'dlt' (the GENIVI Diagnostic Log and Trace daemon) is not supported by midge: it needs "
    "the C libdlt; use syslog, a file, stderr, stdout or topic"
)
#: ``log_format``'s values.
LOG_FORMATS = ("text", "json")
DURABILITIES = ("fsync", "os", "none")
#: Mosquitto's tls_version values that midge accepts: the minimum is always TLS 1.2.
TLS_VERSIONS = ("tlsv1.2", "tlsv1.3")


def int_range(lo: int, hi: int | None, what: str = "") -> Callable[[int], int]:
    """``lo..hi`` (``hi`` None: no upper bound); ``what`` is added to the message."""

    def check(value: int) -> int:
        if value < lo or (hi is not None and value > hi):
            rng = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
            raise BadValue(f"{value} is out of range: expected {rng}{what}")
        return value

    return check


def negative_is(to: int) -> Callable[[int], int]:
    """Mosquitto treats a negative count as 'no limit' (0 or -1); so does midge."""

    def check(value: int) -> int:
        return to if value < 0 else value

    return check


def inflight(value: int) -> int:
    """Mosquitto: negative or 65535 means no maximum (0); above 65535 is an error."""
    if value < 0 or value == 65535:
        return 0
    if value > 65535:
        raise BadValue(f"{value} is out of range: expected 0..65535 (0 = no maximum)")
    return value


PORT = int_range(0, 65535, " (0 = any free port)")


def positive_seconds(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise BadValue(f"{value} is out of range: expected a number of seconds greater than 0")
    return value


def seconds_or_zero(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise BadValue(f"{value} is out of range: expected a number of seconds, 0 or more")
    return value


def http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise BadValue(f"invalid URL '{value}': expected http://... or https://...")
    return value


def durability(value: str) -> str:
    if value not in DURABILITIES:
        raise BadValue(
            f"invalid value '{value}': expected fsync (committed and fsynced before an ack), "
            "os (committed, not fsynced) or none (memory only)"
        )
    return value


def log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise BadValue(
            f"invalid log_format '{value}': expected text (Mosquitto's lines) or json (JSON lines)"
        )
    return value


#: ``log_level``'s components and levels (midge.logs reads the same names).
LOG_COMPONENTS = (
    "server",
    "connection",
    "subscribe",
    "broker",
    "auth",
    "store",
    "transport",
    "websockets",
    "workers",
    "cluster",
)
LOG_LEVELS = ("debug", "information", "info", "notice", "warning", "error", "none")


def log_levels(text: str) -> dict[str, str]:
    """``broker=debug auth=info`` (spaces or commas between) -> {"broker": "debug", ...}."""
    levels: dict[str, str] = {}
    for word in text.replace(",", " ").split():
        if word.startswith("#"):
            break  # a trailing comment
        name, eq, level = word.partition("=")
        if not eq or name not in LOG_COMPONENTS or level not in LOG_LEVELS:
            raise BadValue(
                f"invalid log_level '{word}': expected COMPONENT=LEVEL, COMPONENT one of "
                f"{', '.join(LOG_COMPONENTS)}, LEVEL one of {', '.join(LOG_LEVELS)}"
            )
        levels[name] = level
    if not levels:
        raise BadValue("log_level needs COMPONENT=LEVEL pairs, e.g. log_level broker=debug")
    return levels


#: The longest ``batch_window`` (seconds): beyond it, keep-alive and the processes' answers to
#: each other would wait too long (midge.transport.pacer).
MAX_BATCH_WINDOW = 0.1


def batch_window(value: float) -> float:
    if not 0 <= value <= MAX_BATCH_WINDOW:
        raise BadValue(
            f"{value:g} is out of range: expected 0..{MAX_BATCH_WINDOW:g} seconds (0: no window)"
        )
    return value


def parse_duration(text: str) -> int | None:
    """Mosquitto's ``<n>h|d|w|m|y`` (month = 30 days, year = 365 days) in seconds, or None."""
    m = re.fullmatch(r"([0-9]+)([hdwmy])", text)
    if m is None or int(m.group(1)) <= 0:
        return None
    mult = {"h": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}
    return int(m.group(1)) * mult[m.group(2)]


def protocol(value: str) -> str:
    if value in ("mqtt", "websockets", "http"):
        return value
    raise BadValue(f"invalid protocol '{value}': expected mqtt, websockets or http")


def password_hash(value: str) -> str:
    """A password file's hash (``$7$...`` / ``$6$...``); midge.auth.passwd reads it whole when
    the listener starts."""
    if not (value.startswith("$7$") or value.startswith("$6$")):
        raise BadValue(
            "invalid password hash: expected $7$... or $6$..., the part after 'NAME:' of a "
            "`midge passwd` line"
        )
    return value


def socket_domain(value: str) -> str:
    if value not in ("ipv4", "ipv6"):
        raise BadValue(f"invalid socket_domain '{value}': expected ipv4 or ipv6")
    return value


def host(value: str) -> str:
    if "/" in value:
        raise BadValue(
            f"'{value}' is not an address: a Unix socket listener is 'listener 0 {value}' "
            "(mosquitto.conf) or unix_socket_path (TOML)"
        )
    return value


#: The longest Unix socket path (sockaddr_un's sun_path holds 108 bytes with the final NUL).
UNIX_PATH_MAX = 107


def unix_socket_path(value: str) -> str:
    """A Unix socket listener's path (Mosquitto: "Path to unix socket is too long")."""
    if not value:
        raise BadValue("the Unix socket path is empty")
    if len(os.fsencode(value)) > UNIX_PATH_MAX:
        raise BadValue(
            f"the Unix socket path '{value}' is too long ({len(os.fsencode(value))} bytes, at "
            f"most {UNIX_PATH_MAX}); choose a shorter path"
        )
    return value


def interface_name(value: str) -> str:
    """``bind_interface``: one interface name, as ``ip link`` shows it (at most 15 bytes)."""
    if len(value.split()) != 1 or len(value.encode()) > 15 or "/" in value:
        raise BadValue(
            f"invalid interface name '{value}': expected one name such as eth0 or lo "
            "(see 'ip link')"
        )
    return value


def tls_version(value: str) -> str:
    if value in TLS_VERSIONS:
        return value
    if value in ("tlsv1.1", "tlsv1", "tlsv1.0", "sslv3"):
        raise BadValue(
            f"'{value}' is not allowed: midge always requires TLS 1.2 or later; use tlsv1.2 "
            "(the default) or tlsv1.3"
        )
    raise BadValue(f"invalid value '{value}': expected tlsv1.2 or tlsv1.3")


def log_types(values: list[str]) -> list[str]:
    """Turn Mosquitto ``log_type`` words (accumulated in order) into midge's canonical list."""
    chosen: set[str] = set()
    for value in values:
        if value == "none":
            chosen = set()
        elif value == "all":
            chosen = {*LOG_TYPES, "websockets"}  # Mosquitto's MOSQ_LOG_ALL has it too
        elif value in LOG_TYPES:
            chosen.add(value)
        elif value == "websockets":
            chosen.add(value)  # accepted; midge's WebSocket transport logs as midge.websockets
        else:
            raise BadValue(
                f"invalid log_type '{value}': expected one of {', '.join(LOG_TYPES)}, websockets, "
                "all, none"
            )
    return [t for t in (*LOG_TYPES, "websockets") if t in chosen]


def ignored_notice(where: str, option: Option) -> str:
    """The notice for an option midge accepts and ignores (its doc says why)."""
    return f"{where}{option.name} is accepted and has no effect: {option.doc}"


def deprecated_notice(where: str, name: str) -> str:
    """Mosquitto's notice for an option it still reads but will remove."""
    return (
        f"{where}the '{name}' option is deprecated and will be removed in a future version "
        "(as in Mosquitto)"
    )


def autosave_notice(where: str, name: str) -> str:
    return (
        f"{where}'{name}' ignored: midge writes every change as it happens (group commit), "
        "with no snapshot interval"
    )


def mount_point(value: str) -> str:
    """A topic prefix: a valid topic name, no wildcard (Mosquitto refuses those too)."""
    if "+" in value or "#" in value:
        raise BadValue(
            f"invalid mount_point '{value}': it contains a wildcard ('+' or '#'); "
            "a mount point is a plain topic prefix such as 'tenant1/'"
        )
    if "\0" in value:
        raise BadValue("invalid mount_point: it contains a NUL character")
    return value


#: ``redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``: the master that
#: these Sentinels name for SERVICE (redis-py's Sentinel client follows a failover).
SENTINEL_SCHEME = "redis+sentinel://"


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """(sentinels, service, db, password) of a ``redis+sentinel://`` URL."""
    rest = url[len(SENTINEL_SCHEME) :]
    hosts, _, path = rest.partition("/")
    password: str | None = None
    if "@" in hosts:
        credentials, _, hosts = hosts.rpartition("@")
        password = credentials.partition(":")[2] or None
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        sentinels.append((host.strip("[]"), int(port)))
    service, _, db = path.partition("/")
    if not service:
        raise ValueError("no service name")
    return sentinels, service, int(db or 0), password


def redis_url(value: str) -> str:
    """``cluster_redis``: a URL redis-py's ``from_url`` takes."""
    if value.startswith(SENTINEL_SCHEME):
        try:
            parse_sentinel_url(value)
        except ValueError:
            raise BadValue(
                f"invalid cluster_redis '{value}': expected "
                "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"
            ) from None
        return value
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise BadValue(
            f"invalid cluster_redis '{value}': expected redis://HOST:PORT/DB, "
            "rediss://HOST:PORT/DB, unix://PATH or redis+sentinel://HOST:PORT,.../SERVICE/DB"
        )
    return value


def node_id(value: str) -> str:
    """``cluster_node_id``: a name that fits in a Redis key and a log line."""
    if not value or len(value) > 64 or not all(c.isalnum() or c in "._-" for c in value):
        raise BadValue(
            f"invalid cluster_node_id '{value}': expected 1 to 64 letters, digits, '.', '_' or '-'"
        )
    return value
