"""SIGHUP re-reads the configuration file, as Mosquitto's reload signal does.

The options midge reloads are the ones Mosquitto 2.0.11 really takes on SIGHUP (its
``config__copy``), marked ``Option.reload`` in the table. (``mosquitto.conf(5)`` also says
"Reloaded on reload signal" of ``max_keepalive``, ``max_packet_size``, ``max_inflight_*``,
``max_queued_*``, ``memory_limit``, ``retain_available`` and ``set_tcp_nodelay``, but 2.0.11
keeps their old values, and so does midge: docs/mosquitto.md, tests/test_reload.py.)

On SIGHUP the server reads its file again; a file that does not parse changes nothing (the
error is logged with file and line). Otherwise each reloadable option whose global value changed
takes its new value, one log line each:

- rules read when a client connects or publishes (``allow_zero_length_clientid``,
  ``auto_id_prefix``, ``clientid_prefixes``, ``message_size_limit``,
  ``persistent_client_expiration``, ``upgrade_outgoing_qos``, ``allow_duplicate_messages``,
  ``connection_messages``) apply to what comes next; ``queue_qos0_messages`` to every session;
- ``sys_interval``: the next ``$SYS`` update comes that long after the reload (0 stops them);
- ``allow_anonymous``, ``password_file`` and ``acl_file`` are taken by the password/ACL layer
  (its files are read again anyway); connected clients the new settings refuse are
  disconnected (v5: DISCONNECT 0x87), anonymous ones included, as Mosquitto does.

- ``batch_window`` (midge's): each broker process's pacer takes the new window
  (midge.transport.pacer), 0 included.

- the logging options (``log_dest``, ``log_type``, ``log_timestamp``, ``log_timestamp_format``,
  ``log_facility``, ``connection_messages``, and midge's ``log_format`` and ``log_level``) set
  the logging up again; ``-v`` keeps every log type, as in Mosquitto.

An option the command line overrides keeps the command line's value. Per-listener values and
everything else (listeners, limits, TLS settings, persistence, the authentication backends) are
read at start; a change to them in the file is logged as needing a restart.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from midge.config import ConfigError, load_config
from midge.config.options import Option, all_options

if TYPE_CHECKING:
    from midge.auth.base import Authenticator
    from midge.auth.files import FileAuthenticator
    from midge.config import Config
    from midge.server import Server

log = logging.getLogger("midge.server")

#: Reloadable global options that a listener inherits unless it sets its own.
INHERITED = frozenset({"allow_zero_length_clientid", "auto_id_prefix"})

#: The options that set the logging up (midge.logs.setup runs again when one changes).
LOGGING = frozenset(
    {
        "log_dest",
        "log_type",
        "log_timestamp",
        "log_timestamp_format",
        "log_facility",
        "log_format",
        "log_level",
        "websockets_log_level",
        "connection_messages",
    }
)

#: The options the password/ACL layer takes (FileAuthenticator.reconfigure).
SECURITY = frozenset({"allow_anonymous", "password_file", "acl_file"})


@dataclass(frozen=True, slots=True)
class Change:
    name: str
    attr: str
    old: Any
    new: Any


def _model_options(reload: bool) -> Iterator[tuple[Option, str]]:
    """The options that set an attribute of Config itself (not a backend's settings), one per
    attribute, in table order: those SIGHUP reloads, or (``reload`` False) the others."""
    seen: set[str] = set()
    for option in all_options():
        attr = option.attr
        if option.reload != reload or option.target or attr is None or attr in seen:
            continue
        seen.add(attr)
        yield option, attr


def changes(live: Config, before: Config, new: Config) -> list[Change]:
    """The reloadable options whose (global) value the file changed (``before``: what it said
    when last read; ``new``: what it says now), in table order, one per model attribute. An
    option the command line set (``-v``'s log types) keeps that value: ``live`` differs from
    what the file said."""
    out: list[Change] = []
    for option, attr in _model_options(reload=True):
        old, value = getattr(live, attr), getattr(new, attr)
        if old != value and old == getattr(before, attr):
            out.append(Change(option.name, attr, old, value))
    return out


def _file_layer(layer: Authenticator) -> FileAuthenticator | None:
    from midge.auth.base import AuthChain
    from midge.auth.files import FileAuthenticator

    if isinstance(layer, FileAuthenticator):
        return layer
    if isinstance(layer, AuthChain):
        for inner in layer.layers:
            found = _file_layer(inner)
            if found is not None:
                return found
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value)
    return str(value)


def reload_file(server: Server) -> bool:
    """Read the server's configuration file again and apply what changed (see the module).
    True when the file parsed and every change it made was applied (or there is no file)."""
    live = server.config
    path = live.source
    if path is None or not os.path.isfile(path):
        return True
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("reload: %s; the configuration stays as it was", exc)
        return False
    found = changes(live, server.file_config or live, new)
    ok = True
    security = [c for c in found if c.name in SECURITY]
    if security:
        layer = _file_layer(server.auth)
        named = ", ".join(c.name for c in security)
        why: str | None = "the broker started without password or ACL files"
        if layer is not None:
            try:
                why = layer.reconfigure(new)
            except ConfigError as exc:
                why = str(exc)
        if why is not None:
            log.warning("reload: %s not changed (%s); restart midge to apply it", named, why)
            found = [c for c in found if c.name not in SECURITY]
            ok = False
    attrs = {c.attr for c in found}
    if attrs & LOGGING:
        ok = _reload_logging(server, new, [c for c in found if c.attr in LOGGING]) and ok
        found = [c for c in found if c.attr not in LOGGING]
    for change in found:
        setattr(live, change.attr, change.new)
        log.info("reload: %s %s (was %s)", change.name, _shown(change.new), _shown(change.old))
    # The listeners serve resolved copies (midge.config.resolve_listener): a listener that
    # inherits a reloaded global value takes the new one.
    served = [lst for lst in live.listeners if lst.protocol != "http"]
    for raw, state in zip(served, server.listeners, strict=False):
        for attr in INHERITED & attrs:
            if getattr(raw, attr) is None:
                setattr(state.config, attr, getattr(live, attr))
    broker = server.broker
    if broker is not None and "queue_qos0_messages" in attrs:
        for session in broker.sessions.values():
            session.queue_qos0 = live.queue_qos0_messages
    if "batch_window" in attrs and server.pacer is not None:
        server.pacer.window = live.batch_window
    if "sys_interval" in attrs:
        server.set_sys_interval(live.sys_interval)
    if server.file_config is not None:
        _restart_notice(server.file_config, new)
    server.file_config = new
    return ok


def _reload_logging(server: Server, new: Config, found: list[Change]) -> bool:
    """Set the logging up again with the new log options (midge.logs.setup); a destination
    that cannot be opened keeps the old ones (logged)."""
    import asyncio

    from midge import logs

    live = server.config
    before = {attr: getattr(live, attr) for attr in (*LOGGING, "log_file")}
    for change in found:
        setattr(live, change.attr, change.new)
    if "log_dest" in {c.attr for c in found}:
        live.log_file = new.log_file
    try:
        logs.setup(live)
    except OSError as exc:
        for attr, value in before.items():
            setattr(live, attr, value)
        logs.setup(live)
        log.error("reload: cannot open the new log destination (%s); logging is unchanged", exc)
        return False
    finally:
        if logs.topic_handler is not None and server.broker is not None:  # log_dest topic
            logs.topic_handler.attach(server.broker, asyncio.get_running_loop())
    for change in found:
        log.info("reload: %s %s (was %s)", change.name, _shown(change.new), _shown(change.old))
    return True


def _restart_notice(before: Config, new: Config) -> None:
    """Log the options that changed in the file (since it was last read) but are read at
    start only."""
    changed: list[str] = []
    for option, attr in _model_options(reload=False):
        if attr == "source" or not hasattr(before, attr):
            continue
        if getattr(before, attr) != getattr(new, attr):
            changed.append(option.name)
    if before.listeners != new.listeners:
        changed.append("listener settings")
    if changed:
        log.warning(
            "reload: %s changed in the file but %s read at start only; restart midge to apply %s",
            ", ".join(changed),
            "is" if len(changed) == 1 else "are",
            "it" if len(changed) == 1 else "them",
        )
