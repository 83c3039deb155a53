"""One typed configuration for the broker.

Both readers (midge's TOML and Mosquitto's ``mosquitto.conf``) produce a :class:`Config`. Option
names follow Mosquitto wherever Mosquitto has the option, with the same meaning and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UNLIMITED_PACKET_SIZE = 268_435_460  # 1 + 4 + 268,435,455: the largest packet MQTT can express


class ConfigError(Exception):
    """A configuration problem, with the file and line it comes from and how to fix it."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


@dataclass(slots=True)
class ListenerConfig:
    """One listening socket. ``host`` None or "" means every address (Mosquitto's default)."""

    port: int = 1883
    host: str | None = "127.0.0.1"
    protocol: str = "mqtt"  # "mqtt" only for now; "websockets" comes with its issue
    max_connections: int = -1  # -1: unlimited (Mosquitto's meaning)


@dataclass(slots=True)
class Config:
    """Everything the broker needs to start. Defaults match Mosquitto 2's where it has the option."""

    listeners: list[ListenerConfig] = field(default_factory=lambda: [ListenerConfig()])

    # Sessions and queues
    max_inflight_messages: int = 20  # outgoing QoS 1/2 in flight per client; 0 = unlimited
    max_queued_messages: int = 1000  # per offline/slow session; 0 = unlimited
    max_queued_bytes: int = 0  # 0 = unlimited
    persistent_client_expiration: int | None = None  # seconds; None = never expire (v3 sessions)
    max_keepalive: int = 65535
    connect_timeout: float = 10.0  # midge: close a connection that sends no CONNECT in time

    # Packets and messages
    max_packet_size: int = 0  # 0 = unlimited (UNLIMITED_PACKET_SIZE)
    message_size_limit: int = 0  # maximum PUBLISH payload; 0 = unlimited
    max_qos: int = 2
    retain_available: bool = True
    max_topic_alias: int = 10  # Topic Alias Maximum we accept from v5 clients
    upgrade_outgoing_qos: bool = False

    # Client identifiers
    allow_zero_length_clientid: bool = True
    auto_id_prefix: str = "auto-"

    # Listener-scoped options apply per listener when True (security options in a later issue)
    per_listener_settings: bool = False

    # Logging
    verbose: bool = False  # -v / log_type all
    log_dest: list[str] = field(default_factory=lambda: ["stderr"])
    log_timestamp: bool = True
    connection_messages: bool = True

    # Files
    pid_file: str | None = None
    source: str | None = None  # the file this was read from, for messages

    @property
    def effective_max_packet_size(self) -> int:
        return self.max_packet_size or UNLIMITED_PACKET_SIZE
