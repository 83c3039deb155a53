"""The broker's log: Mosquitto's text lines or JSON lines, to stderr, stdout, a file, syslog or
``$SYS/broker/log/...`` topics (docs/operations.md, "Logs").

Every midge module logs through :mod:`logging` under ``midge.<component>`` (``connection``,
``subscribe``, ``broker``, ``auth``, ``store``, ``transport``, ``server``, ``workers``). Records
carry a Python level; Mosquitto's log *types* (``log_type``) are read off them: ``ERROR`` and
above is ``error``, ``WARNING`` ``warning``, :data:`NOTICE` (25, between INFO and WARNING)
``notice``, ``INFO`` ``information``, ``DEBUG`` ``debug``, and the ``midge.subscribe`` logger's
records are ``subscribe`` or ``unsubscribe``. Unlike a Python threshold, ``log_type`` is a set, as
in Mosquitto: ``log_type error`` + ``log_type debug`` shows those two only. ``log_level
COMPONENT=LEVEL`` (midge only) replaces that set by a threshold for one component.

Connection events (connect, disconnect, refusal, take-over) carry an ``event`` name and
``fields`` (client id, address, port, listener, protocol, username, reason) on the record:
the text format prints Mosquitto's sentence for them, the JSON format adds the fields. Nothing
logs a password or a payload.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
import sys
import threading
import time
from typing import Any

from midge.broker.model import Message
from midge.config import Config
from midge.config.checks import LOG_COMPONENTS

#: Mosquitto's "notice": connections, disconnections and refusals are logged at this level.
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

#: The components ``log_level`` names: ``midge.<component>`` loggers.
COMPONENTS = LOG_COMPONENTS
#: ``log_level``'s level words.
LEVELS = {
    "debug": logging.DEBUG,
    "information": logging.INFO,
    "info": logging.INFO,
    "notice": NOTICE,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 1,
}
#: ``log_timestamp_format``'s special value: ISO 8601 with milliseconds and the UTC offset.
ISO8601 = "iso8601"
#: Mosquitto's syslog facilities: ``log_facility N`` is LOG_LOCALN; the default is LOG_DAEMON.
DEFAULT_FACILITY = logging.handlers.SysLogHandler.LOG_DAEMON
#: Where ``log_dest topic`` publishes each type (Mosquitto's logging.c); debug lines never go.
TOPICS = {
    "error": "$SYS/broker/log/E",
    "warning": "$SYS/broker/log/W",
    "notice": "$SYS/broker/log/N",
    "information": "$SYS/broker/log/I",
    "subscribe": "$SYS/broker/log/M/subscribe",
    "unsubscribe": "$SYS/broker/log/M/unsubscribe",
}
#: Mosquitto's log messages on topics expire after 20 s (Message Expiry Interval).
TOPIC_EXPIRY = 20


def log_type(record: logging.LogRecord) -> str:
    """The Mosquitto log type of ``record``."""
    if record.name == "midge.subscribe":
        return str(getattr(record, "mtype", "subscribe"))
    level = record.levelno
    if record.name.startswith("midge.websockets") and level < logging.WARNING:
        return "websockets"  # Mosquitto's MOSQ_LOG_WEBSOCKETS: the WebSocket layer's own lines
    if level >= logging.ERROR:
        return "error"
    if level >= logging.WARNING:
        return "warning"
    if level >= NOTICE:
        return "notice"
    if level >= logging.INFO:
        return "information"
    return "debug"


def component(record: logging.LogRecord) -> str:
    """``midge.auth.ldap`` -> ``auth``; the ``midge`` logger itself is ``server``."""
    name = record.name
    if name.startswith("midge."):
        return name[6:].partition(".")[0]
    return "server"


class TypeFilter(logging.Filter):
    """Lets through the records whose Mosquitto type ``log_type`` names, or, for a component
    ``log_level`` names, those at or above its level."""

    def __init__(self, types: set[str], levels: dict[str, int]) -> None:
        super().__init__()
        self.types = types
        self.levels = levels

    def filter(self, record: logging.LogRecord) -> bool:
        threshold = self.levels.get(component(record))
        if threshold is not None:
            return record.levelno >= threshold
        return log_type(record) in self.types


def _stamp(created: float, fmt: str | None) -> str:
    if fmt is None:
        return str(int(created))
    if fmt == ISO8601:
        moment = datetime.datetime.fromtimestamp(created).astimezone()
        return moment.isoformat(timespec="milliseconds")
    return time.strftime(fmt, time.localtime(created))


class MosquittoFormatter(logging.Formatter):
    """``1700000000: message``, as Mosquitto logs, or with ``log_timestamp_format``."""

    def __init__(self, timestamp: bool, fmt: str | None) -> None:
        super().__init__()
        self.timestamp = timestamp
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if not self.timestamp:
            return message
        return f"{_stamp(record.created, self.fmt)}: {message}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO 8601, or ``log_timestamp_format``), ``level`` (the
    Mosquitto type), ``component``, ``message`` (Mosquitto's text), and for connection events
    ``event`` and its fields (``client_id``, ``address``, ``port``, ``listener``, ``protocol``,
    ``username``, ``reason``)."""

    def __init__(self, fmt: str | None) -> None:
        super().__init__()
        self.fmt = fmt or ISO8601

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _stamp(record.created, self.fmt),
            "level": log_type(record),
            "component": component(record),
        }
        event = getattr(record, "event", None)
        if event is not None:
            line["event"] = event
            line.update(getattr(record, "fields", {}))
        line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class SyslogHandler(logging.handlers.SysLogHandler):
    """Python's syslog handler with Mosquitto's priorities (notice included) and its ident,
    ``midge[PID]: ``. Like openlog(3), it starts when the socket is not there yet."""

    def __init__(self, address: str, facility: int) -> None:
        super().__init__(address, facility)
        self.priority_map = {**self.priority_map, "NOTICE": "notice"}  # type: ignore[misc]
        self.ident = f"midge[{os.getpid()}]: "

    def emit(self, record: logging.LogRecord) -> None:
        """As syslog(3): a daemon not (yet) listening loses the line, silently; the socket is
        tried again for the next one."""
        if not self._ready():
            self.createSocket()  # ignores a socket that is not there
            if not self._ready():
                return
        super().emit(record)

    def _ready(self) -> bool:
        sock = getattr(self, "socket", None)  # a closed one when connecting failed
        return sock is not None and sock.fileno() >= 0


class TopicHandler(logging.Handler):
    """``log_dest topic``: each line (debug lines excepted, as in Mosquitto) is published to
    ``$SYS/broker/log/<E|W|N|I|M/...>`` at QoS 2, not retained, expiring after 20 s.

    The publish goes through the broker core on a later turn of its Scheduler, never inside the
    ``log`` call: the code that logged (routing, a connection closing) is not re-entered. Lines
    logged while a log line is being published are not published (they still reach the other
    destinations), so a log line can never cause another. Lines logged on other threads (the
    store's writer) are handed to the loop's thread."""

    def __init__(self) -> None:
        super().__init__()
        self.broker: Any = None
        self._loop: Any = None
        self._thread = 0
        self._busy = False

    def attach(self, broker: Any, loop: Any = None) -> None:
        """Publish into ``broker`` from now on (``loop``: an asyncio loop for other threads)."""
        self.broker = broker
        self._loop = loop
        self._thread = threading.get_ident()

    def detach(self) -> None:
        self.broker = None
        self._loop = None

    def emit(self, record: logging.LogRecord) -> None:
        broker = self.broker
        if broker is None or self._busy:
            return
        topic = TOPICS.get(log_type(record))
        if topic is None:
            return
        try:
            line = self.format(record).encode("utf-8")
        except Exception:  # pragma: no cover - logging's own convention
            self.handleError(record)
            return
        if threading.get_ident() == self._thread:
            broker.scheduler.call_soon(self._publish, topic, line)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._publish, topic, line)

    def _publish(self, topic: str, line: bytes) -> None:
        broker = self.broker
        if broker is None:
            return
        self._busy = True
        try:
            expires = broker.scheduler.wall() + TOPIC_EXPIRY
            broker.publish(Message(topic, line, 2, False, None, expires))
        finally:
            self._busy = False


#: The handler of ``log_dest topic`` once :func:`setup` made it (the server attaches its broker).
topic_handler: TopicHandler | None = None


def _types(config: Config) -> set[str]:
    if config.verbose:
        return {"debug", "error", "warning", "notice", "information", "subscribe", "unsubscribe"}
    return set(config.log_type)


def type_filter(config: Config) -> TypeFilter:
    """The filter every destination applies: ``log_type``, and ``log_level`` per component."""
    levels = {name: LEVELS[word] for name, word in config.log_level.items()}
    return TypeFilter(_types(config), levels)


def formatter(config: Config) -> logging.Formatter:
    """``log_format``'s formatter, with ``log_timestamp`` and ``log_timestamp_format``."""
    if config.log_format == "json":
        return JsonFormatter(config.log_timestamp_format)
    return MosquittoFormatter(config.log_timestamp, config.log_timestamp_format)


def setup(config: Config) -> None:
    """Configure the ``midge`` loggers from ``config`` (replacing what a previous call set up):
    the loggers' levels, so that nothing below what some destination shows is formatted, and
    one handler per ``log_dest``, each with :func:`formatter` and :func:`type_filter`.

    Raises OSError when the syslog socket or the file cannot be opened."""
    global topic_handler
    types = _types(config)
    levels = {name: LEVELS[word] for name, word in config.log_level.items()}
    by_type = {
        "debug": logging.DEBUG,
        "information": logging.INFO,
        "subscribe": logging.INFO,
        "unsubscribe": logging.INFO,
        "notice": NOTICE,
        "warning": logging.WARNING,
        "error": logging.ERROR,
    }
    floor = min([by_type[t] for t in types if t in by_type] + [logging.CRITICAL + 1])
    root = logging.getLogger("midge")
    root.setLevel(min([floor, *levels.values()]))
    root.propagate = False
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for name in COMPONENTS:
        if name != "server":
            logging.getLogger(f"midge.{name}").setLevel(levels.get(name, logging.NOTSET))
    if "subscribe" not in levels and not types & {"subscribe", "unsubscribe"}:
        logging.getLogger("midge.subscribe").setLevel(logging.WARNING)  # formats nothing
    if "websockets" not in levels:
        # The WebSocket layer's debug lines (log type "websockets") only with log_type
        # websockets and a non-zero websockets_log_level, as Mosquitto.
        wanted = "websockets" in types and config.websockets_log_level != 0
        level = logging.DEBUG if wanted else logging.WARNING
        logging.getLogger("midge.websockets").setLevel(level)
    if not config.connection_messages and "connection" not in levels:
        # Connections, disconnections and refusals are notices: without connection_messages
        # only the connection's warnings and errors remain.
        logging.getLogger("midge.connection").setLevel(logging.WARNING)
    shared_formatter = formatter(config)
    shared_filter = TypeFilter(types, levels)
    topic_handler = None
    for dest in config.log_dest:
        handler: logging.Handler
        if dest == "stderr":
            handler = logging.StreamHandler(sys.stderr)
        elif dest == "stdout":
            handler = logging.StreamHandler(sys.stdout)
        elif dest == "file" and config.log_file:
            handler = logging.FileHandler(config.log_file, encoding="utf-8")
        elif dest == "syslog":
            facility = DEFAULT_FACILITY
            if config.log_facility is not None:
                facility = logging.handlers.SysLogHandler.LOG_LOCAL0 + config.log_facility
            handler = SyslogHandler(config.log_syslog_socket, facility)
        elif dest == "topic":
            handler = topic_handler = TopicHandler()
        else:
            continue
        handler.setFormatter(shared_formatter)
        handler.addFilter(shared_filter)
        root.addHandler(handler)


def reset() -> None:
    """Undo :func:`setup` (tests, an embedded broker): no handlers, levels unset, records
    propagate to the root logger again."""
    global topic_handler
    topic_handler = None
    root = logging.getLogger("midge")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.setLevel(logging.NOTSET)
    root.propagate = True
    for name in COMPONENTS:
        logging.getLogger(f"midge.{name}").setLevel(logging.NOTSET)
