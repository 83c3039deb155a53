"""Mosquitto 2.0's ``mosquitto.conf`` reader, driven by the option table, with errors instead
of warnings.

Each line names an option; the table (:func:`midge.config.options.named`) says its scope, how
its value is written (``kind``), its check and the field it sets. Options with a behaviour of
their own (``Option.apply``: ``listener``, ``include_dir``, ``log_dest``, ...) are the ``_apply_*``
methods below.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any

from midge.config import checks
from midge.config.errors import BadValue, ConfigError, read_text_file
from midge.config.model import Config, ListenerConfig, tls_notices, tls_problem
from midge.config.options import (
    BOOL,
    BRIDGE,
    COLLECT,
    CONF,
    DURATION,
    GLOBAL,
    INT,
    LISTENER,
    PER_LISTENER,
    RAW,
    SECONDS,
    STRINGS,
    TEXT,
    UNSUPPORTED,
    WORD,
    Given,
    Option,
    groups,
    named,
    names,
)
from midge.config.table import TLS_OPTIONS


def closest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.7)
    return f"; did you mean '{match[0]}'?" if match else ""


def unsupported_message(opt: Option) -> str:
    """ "'NAME' is not supported yet by midge (why); remove the line or comment it out"."""
    if opt.unsupported == "other":
        detail = opt.note or "not planned yet"
    elif opt.note:
        detail = opt.note
    elif opt.unsupported == "listener options":
        detail = "the broker does not implement it yet"
    else:
        detail = f"it comes with {opt.unsupported} support"
    return (
        f"'{opt.name}' is not supported yet by midge ({detail}); remove the line or comment it out"
    )


def _sort_key_mosquitto(name: str) -> list[tuple[str, str]]:
    """Mosquitto's include_dir order: case-insensitive, upper case first within the same letter."""
    return [(c.upper(), c) for c in name]


def _include_files(directory: str) -> list[str]:
    names = [n for n in os.listdir(directory) if len(n) > 5 and n.endswith(".conf")]
    names.sort(key=_sort_key_mosquitto)
    return [os.path.join(directory, n) for n in names]


def conf_option(name: str) -> Option | None:
    """The table's entry for ``name`` in mosquitto.conf (None: unknown)."""
    for opt in named(name):
        if opt.prefix and name == opt.name and opt.apply == "python_opt":
            return None  # auth_python_opt_ alone names no plugin option
        if CONF in opt.formats or opt.kind == UNSUPPORTED:
            return opt
    return None


def real_option(opt: Option) -> Option:
    """The option ``opt`` is another name for (itself if none)."""
    if opt.alias_of is None:
        return opt
    for other in named(opt.alias_of):
        if other.alias_of is None and other.scope == opt.scope:
            return other
    raise AssertionError(opt.alias_of)  # pragma: no cover - the table tests check aliases


class ConfParser:
    """Mosquitto 2.0's reader, option by option, with errors instead of warnings."""

    def __init__(self, path: str) -> None:
        self.main_path = path
        self.config = Config(source=path, mosquitto_conf=True)
        # Persistence is off unless the file turns it on (Mosquitto's default): set once the file
        # says ``persistence`` (either way) or midge's ``durability``.
        self.persistence_chosen = False
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
        self.given: dict[str, tuple[str, int]] = {}  # global option -> where first given
        self.bridge: Any = None  # the current ``connection`` section (a BridgeConfig)

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

    def option(self, name: str, value: str, path: str, line: int, level: int) -> None:
        try:
            self._option(name, value, path, line, level)
        except BadValue as exc:
            raise ConfigError(f"{name}: {exc}", path, line) from None

    def _option(self, name: str, value: str, path: str, line: int, level: int) -> None:
        opt = conf_option(name)
        if opt is None:
            raise ConfigError(f"unknown option '{name}'{closest(name, names(CONF))}", path, line)
        if opt.kind == UNSUPPORTED:
            raise ConfigError(unsupported_message(opt), path, line)
        real = real_option(opt)  # maximum_qos -> max_qos, persistence_location -> data_dir, ...
        # Taken as written, even empty: a prefix option (auth_python_opt_NAME, ...), a collected
        # one (auth_ldap_*, checked by its group), include_dir.
        if opt.prefix or real.kind == COLLECT:
            self._hook(real, name, value, path, line)
            return
        if real.apply == "include_dir":
            self._apply_include_dir(value, path, line, level)
            return
        if not value:
            raise ConfigError(f"missing value for '{name}'", path, line)
        if real.scope == BRIDGE:
            self.bridge_scoped(real, name, value, path, line)
            return
        if real.scope == GLOBAL:
            self.given.setdefault(real.name, (path, line))
            if real.once:
                self.once(0, real.name, path, line)
        if real.scope in (LISTENER, PER_LISTENER) and real.apply is None:
            self.listener_scoped(real, name, value, path, line)
            return
        parsed = self.value(real, name, value)
        if real.apply is not None:
            self._hook(real, name, parsed, path, line)
        else:
            self.store(self.config, real, parsed)

    def _hook(self, opt: Option, name: str, value: Any, path: str, line: int) -> None:
        """The option's own behaviour: ``_apply_<opt.apply>``, or collecting it."""
        if opt.kind == COLLECT:  # (option, text, file, line), for the group's finish
            assert opt.attr is not None
            getattr(self.config, opt.attr).append((name, value, path, line))
            return
        getattr(self, f"_apply_{opt.apply}")(opt, name, value, path, line)

    @staticmethod
    def store(obj: Any, opt: Option, value: Any) -> None:
        if opt.target:
            obj = getattr(obj, opt.target)
        assert opt.attr is not None
        setattr(obj, opt.attr, value)

    # -- values

    def value(self, opt: Option, name: str, value: str) -> Any:
        """``value`` read as ``opt.kind`` says, then checked."""
        kind = opt.kind
        parsed: Any
        if kind == BOOL:
            parsed = self.bool_value(name, value)
        elif kind == INT:
            parsed = self.int_value(name, value)
        elif kind == SECONDS:
            word = self.word(name, value)
            try:
                parsed = float(word)
            except ValueError:
                raise BadValue(f"invalid value '{word}': expected a number of seconds") from None
        elif kind == WORD:
            parsed = self.word(name, value)
        elif kind == DURATION:
            word = self.word(name, value)
            seconds = checks.parse_duration(word)
            if seconds is None:
                raise BadValue(
                    f"invalid duration '{word}': expected a positive whole number followed by "
                    "h, d, w, m or y (hours, days, weeks, months, years), e.g. 14d"
                )
            parsed = seconds
        else:
            assert kind in (TEXT, RAW, STRINGS), kind  # STRINGS: each behaviour reads its line
            parsed = value
        return opt.check(parsed) if opt.check is not None else parsed

    @staticmethod
    def word(name: str, value: str) -> str:
        """One-word values; a trailing ``# comment`` is allowed, anything else is an error."""
        parts = value.split(None, 1)
        first = parts[0] if parts else ""
        extra = parts[1].strip() if len(parts) > 1 else ""
        if extra and not extra.startswith("#"):
            raise BadValue(f"unexpected text '{extra}' after the value '{first}'")
        return first

    def int_value(self, name: str, value: str) -> int:
        word = self.word(name, value)
        if not re.fullmatch(r"[+-]?[0-9]+", word):
            raise BadValue(f"invalid value '{word}': expected a whole number")
        return int(word)

    def bool_value(self, name: str, value: str) -> bool:
        word = self.word(name, value)
        if word in ("true", "1"):
            return True
        if word in ("false", "0"):
            return False
        raise BadValue(f"invalid value '{word}': expected true or false")

    def once(self, scope: int, name: str, path: str, line: int) -> None:
        """Mosquitto refuses a string option given twice in one scope ("Duplicate ... value")."""
        where = self.seen.get((scope, name))
        if where is not None:
            raise BadValue(f"given twice (first at {where[0]}:{where[1]}); keep only one")
        self.seen[(scope, name)] = (path, line)

    # -- behaviours of global options

    def _apply_message_size_limit(
        self, opt: Option, name: str, value: int, path: str, line: int
    ) -> None:
        self.store(self.config, opt, value)
        self.config.notices.append(
            f"{path}:{line}: it is recommended to replace 'message_size_limit' with "
            "'max_packet_size' (as Mosquitto says)"
        )

    def _apply_python_opt(self, opt: Option, name: str, value: str, path: str, line: int) -> None:
        self.config.auth_python_options[name[len(opt.name) :]] = value

    def _apply_c_plugin_option(
        self, opt: Option, name: str, value: str, path: str, line: int
    ) -> None:
        raise ConfigError(
            f"'{name}' is not supported by midge (options of Mosquitto's C plugins); "
            "midge's Python plugins take auth_python_opt_NAME; remove the line",
            path,
            line,
        )

    def _apply_per_listener_settings(
        self, opt: Option, name: str, flag: bool, path: str, line: int
    ) -> None:
        if flag and self.security_set:
            raise BadValue(
                "must be set before any per-listener security option (allow_anonymous, "
                "password_file, acl_file, allow_zero_length_clientid, auto_id_prefix); move "
                "it to the top of the file"
            )
        self.config.per_listener_settings = flag

    def _apply_persistence(self, opt: Option, name: str, on: bool, path: str, line: int) -> None:
        # retained_persistence is Mosquitto's old name for persistence.
        cfg = self.config
        self.persistence_chosen = True
        if not on:
            cfg.durability = "none"
        elif cfg.durability == "none":
            cfg.durability = "fsync"

    def _apply_durability(self, opt: Option, name: str, value: str, path: str, line: int) -> None:
        self.persistence_chosen = True
        self.config.durability = value

    def _apply_ignored(self, opt: Option, name: str, value: Any, path: str, line: int) -> None:
        self.config.notices.append(checks.ignored_notice(f"{path}:{line}: ", opt))

    def _apply_deprecated(self, opt: Option, name: str, value: Any, path: str, line: int) -> None:
        self.store(self.config, opt, value)
        self.config.notices.append(checks.deprecated_notice(f"{path}:{line}: ", opt.name))

    def _apply_autosave(self, opt: Option, name: str, value: Any, path: str, line: int) -> None:
        self.config.notices.append(checks.autosave_notice(f"{path}:{line}: ", name))

    def _apply_log_dest(self, opt: Option, name: str, value: str, path: str, line: int) -> None:
        self.log_dest_option(value)

    def _apply_log_type(self, opt: Option, name: str, value: str, path: str, line: int) -> None:
        words = self.log_types or []
        words.append(self.word(name, value))
        self.log_types = words
        checks.log_types(words)  # validate now, so the error names this line

    # -- listeners

    def _apply_listener(self, opt: Option, name: str, value: str, path: str, line: int) -> None:
        words = value.split()
        for i, word in enumerate(words[1:], start=1):
            if word.startswith("#"):  # a trailing comment, as Mosquitto allows here
                del words[i:]
                break
        port_word = words[0]
        if not re.fullmatch(r"[0-9]+", port_word):
            raise BadValue(
                f"invalid port '{port_word}': expected a number 0..65535 (0 = any free port)"
            )
        port = checks.PORT(int(port_word))
        host: str | None = None
        unix: str | None = None
        if len(words) >= 3:
            raise BadValue(
                f"unexpected text '{' '.join(words[2:])}': expected 'listener PORT [ADDRESS]' "
                "or 'listener 0 PATH'"
            )
        if len(words) == 2:
            if port == 0 and "/" in words[1]:
                # Mosquitto's Unix socket listener. Port 0 with an address (no "/") stays
                # midge's "any free port" on that address.
                unix = checks.unix_socket_path(words[1])
            else:
                host = checks.host(words[1])
        for other in self.config.listeners:
            same = (
                other.unix_socket_path == unix
                if unix is not None
                else port != 0 and other.port == port and other.host == host
            )
            if same:
                first = self.current_line[id(other)]
                what = (
                    f"on the Unix socket {unix}"
                    if unix is not None
                    else f"on port {port}" + (f" address {host}" if host else "")
                )
                raise BadValue(f"a listener {what} is already defined at {first[0]}:{first[1]}")
        new = ListenerConfig(port=port, host=host, unix_socket_path=unix)
        self.config.listeners.append(new)
        self.current_line[id(new)] = (path, line)
        self.current = new
        self.config.local_only = False

    def _apply_port(self, opt: Option, name: str, port: int, path: str, line: int) -> None:
        cfg = self.config
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

    def _apply_bind_address(self, opt: Option, name: str, value: str, path: str, line: int) -> None:
        self.once(-1, name, path, line)
        self.default.host = value
        self.default_host_set = True
        self.default_where = self.default_where or (path, line, name)
        self.config.notices.append(
            f"{path}:{line}: 'bind_address' is deprecated (as in Mosquitto); "
            f"use 'listener PORT {value}'"
        )

    def listener_scoped(self, opt: Option, name: str, value: str, path: str, line: int) -> None:
        """A listener option, or a security option that is per listener if
        per_listener_settings: on the current listener (or the default listener before any
        ``listener`` line), else on the whole configuration."""
        if opt.name == "mount_point" and self.current is None:
            raise ConfigError(
                "'mount_point' must follow a 'listener' line (as in Mosquitto): it applies to "
                "that listener; add 'listener PORT' before it",
                path,
                line,
            )
        target = self.current if self.current is not None else self.default
        per_listener = opt.scope == PER_LISTENER
        on_listener = not per_listener or self.config.per_listener_settings
        if on_listener and self.current is None:
            self.default_where = self.default_where or (path, line, name)
            self.default_set.setdefault(opt.name, (path, line))
        scope = id(target)
        where: ListenerConfig | Config = target
        if per_listener:
            self.security_set = True
            if not self.config.per_listener_settings:
                where, scope = self.config, 0
        if opt.once:
            # A string option is refused when given twice for one listener (TLS options are
            # always per listener in Mosquitto 2.0, whatever per_listener_settings says).
            self.once(scope, opt.name, path, line)
        self.store(where, opt, self.value(opt, name, value))
        if where is target and not per_listener:
            target.where[opt.name] = (path, line)

    # -- bridges

    def _apply_connection(self, opt: Option, name: str, value: str, path: str, line: int) -> None:
        from midge.bridge.options import BridgeConfig

        for other in self.config.bridges:
            if other.name == value:
                first = other.where["connection"]
                raise BadValue(f"duplicate bridge name '{value}' (first at {first[0]}:{first[1]})")
        self.bridge = BridgeConfig(name=value)
        self.bridge.where["connection"] = (path, line)
        self.config.bridges.append(self.bridge)

    def bridge_scoped(self, opt: Option, name: str, value: str, path: str, line: int) -> None:
        """A bridge option: on the current ``connection`` section (Mosquitto: "Invalid bridge
        configuration" without one)."""
        bridge = self.bridge
        if bridge is None:
            raise ConfigError(
                f"'{name}' is a bridge option: it must follow a 'connection NAME' line",
                path,
                line,
            )
        assert opt.attr is not None
        if opt.kind == STRINGS:  # topic: one more per line
            getattr(bridge, opt.attr).extend(self.value(opt, name, value))
        else:
            if opt.name == "address" and bridge.addresses:
                raise BadValue("the bridge's addresses are already given; list them on one line")
            setattr(bridge, opt.attr, self.value(opt, name, value))
        bridge.where.setdefault(opt.name, (path, line))

    # -- logging

    def log_dest_option(self, value: str) -> None:
        kind, _, rest = value.replace("\t", " ").partition(" ")
        dests = self.log_dest if self.log_dest is not None else []
        if kind == "none":
            self.word("log_dest", value)
            dests = []
            self.config.log_file = None
        elif kind in ("stderr", "stdout", "syslog", "topic"):
            self.word("log_dest", value)
            if kind not in dests:
                dests.append(kind)
        elif kind == "file":
            target = rest.strip()
            if not target:
                raise BadValue("'log_dest file' needs a path: log_dest file /var/log/midge.log")
            if self.config.log_file is not None:
                raise BadValue("only one 'log_dest file' may be configured (as in Mosquitto)")
            self.config.log_file = target
            dests.append("file")
        elif kind == "dlt":
            raise BadValue(checks.DLT_REFUSED)
        else:
            raise BadValue(
                f"invalid log_dest '{kind}': expected stderr, stdout, file PATH, syslog, topic "
                "or none"
            )
        self.log_dest = dests

    # -- include_dir

    def _apply_include_dir(self, value: str, path: str, line: int, level: int) -> None:
        if level > 0:
            raise ConfigError(
                "include_dir is only allowed in the main configuration file (as in Mosquitto); "
                "move it there",
                path,
                line,
            )
        if not value:
            raise ConfigError("missing value for 'include_dir'", path, line)
        try:
            files = _include_files(value)
        except OSError as exc:
            raise ConfigError(
                f"include_dir: cannot read directory '{value}': {exc.strerror}", path, line
            ) from None
        main = os.path.realpath(self.main_path)
        for file in files:
            if os.path.realpath(file) == main:
                raise ConfigError(
                    f"include_dir: '{value}' contains the main configuration file; "
                    "move one of them",
                    path,
                    line,
                )
        for file in files:
            self.parse_text(read_text_file(file, "included file"), file, level + 1)

    # -- result

    def _finish_groups(self, last: bool) -> None:
        """Each option group's checks over the whole file (OAuth, LDAP, ...)."""
        cfg = self.config
        for group in groups():
            if group.finish is None or group.finish_last != last:
                continue
            given = [o.name for o in group.options if o.name in self.given]

            def where(name: str) -> tuple[str | None, int | None]:
                found = self.given.get(name)
                return found if found is not None else (self.main_path, None)

            def prefix(name: str) -> str:
                path, line = where(name)
                return f"{path}:{line}: "

            group.finish(cfg, Given(given, where, prefix))

    def finish(self) -> Config:
        cfg = self.config
        self._finish_groups(last=False)
        d = self.default
        # Mosquitto creates the default listener if any of its options differs from the default.
        if (
            self.default_port_set
            or self.default_host_set
            or d.max_connections != -1
            or (d.max_qos is not None and d.max_qos != 2)
            or d.protocol != "mqtt"
            or d.socket_domain is not None
            or d.bind_interface is not None
            or d.allow_zero_length_clientid is False
            or d.use_username_as_clientid
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
            for name, notice in tls_notices(lst):
                at = lst.where.get(name) or self.current_line.get(id(lst))
                path, line = at or (self.main_path, None)
                cfg.notices.append(f"{path}:{line}: {notice}")
        if not cfg.listeners:
            cfg.listeners = [ListenerConfig()]
        if self.log_dest is not None:
            cfg.log_dest = self.log_dest
        if self.log_types is not None:
            cfg.log_type = checks.log_types(self.log_types)
        self._finish_persistence()
        self._finish_groups(last=True)
        return cfg

    def _finish_persistence(self) -> None:
        """As Mosquitto: without ``persistence true`` nothing is kept across a restart; say so
        when the file names a location that then has no effect."""
        cfg = self.config
        if self.persistence_chosen:
            return
        cfg.durability = "none"
        for name in ("data_dir", "persistence_file"):
            found = self.given.get(name)
            if found is not None:
                shown = "persistence_location" if name == "data_dir" else name
                cfg.notices.append(
                    f"{found[0]}:{found[1]}: '{shown}' has no effect: persistence is off, as in "
                    "Mosquitto, unless the file says 'persistence true'"
                )


def parse_mosquitto_conf(text: str, path: str = "<string>") -> Config:
    """Parse Mosquitto 2.0 ``mosquitto.conf`` text (``include_dir`` files are read from disk)."""
    parser = ConfParser(path)
    parser.parse_text(text, path, level=0)
    return parser.finish()
