"""midge's TOML reader, driven by the option table: top-level keys are the global options,
each ``[[listener]]`` table is one listener, every key keeps its Mosquitto name and meaning.

The table says where a key may go (``scope``, ``toml_global``), how its value is typed
(``kind``), its check and the field it sets; options with a behaviour of their own
(``Option.apply``) are the ``_apply_*`` methods below.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from midge.config import checks
from midge.config.errors import BadValue, ConfigError
from midge.config.model import Config, ListenerConfig, tls_notices, tls_problem
from midge.config.mosquitto import closest, real_option, unsupported_message
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
    SECONDS,
    STRINGS,
    TEXT,
    TOML,
    UNSUPPORTED,
    WORD,
    Given,
    Option,
    all_options,
    groups,
    named,
    names,
)


def bridge_table(index: int) -> int:
    """The table number of the ``index``-th ``[[bridge]]`` in :meth:`TomlReader.error` (listeners
    count from 0, -1 is the top level, -2 any other table)."""
    return -100 - index


def _toml_option(name: str, in_listener: bool) -> Option | None:
    """The TOML entry for ``name`` (its alias resolved) at the top level or in a
    ``[[listener]]`` table, None if the key does not belong there."""
    for opt in named(name):
        if TOML not in opt.formats or opt.kind == UNSUPPORTED:
            continue
        if opt.prefix and opt.kind != COLLECT:
            continue
        on_listener = opt.scope in (LISTENER, PER_LISTENER) and opt.apply != "listener"
        on_top = opt.scope in (GLOBAL, PER_LISTENER) or opt.toml_global
        if in_listener and on_listener:
            return real_option(opt)
        if not in_listener and (on_top or opt.apply == "listener"):
            return real_option(opt)
    return None


def _refused(name: str) -> Option | None:
    """The entry refusing ``name`` (a Mosquitto option midge does not have yet)."""
    for opt in named(name):
        if opt.kind == UNSUPPORTED or opt.apply == "c_plugin_option":
            return opt
    return None


def _known(name: str) -> bool:
    return name in names(CONF) or name in names(TOML)


class TomlReader:
    """midge's TOML layout; every key keeps its Mosquitto name and meaning."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.lines = self._locate(text)

    @staticmethod
    def _locate(text: str) -> dict[tuple[int, str], int]:
        """(listener index, -1 for top level, or :func:`bridge_table` of a bridge index; key)
        -> line, found by scanning the text."""
        where: dict[tuple[int, str], int] = {}
        table = -1
        listeners = bridges = 0
        in_other_table = False
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if re.match(r"\[\[\s*listener\s*\]\]", line):
                table = listeners
                listeners += 1
                in_other_table = False
                where.setdefault((table, "[[listener]]"), lineno)
                continue
            if re.match(r"\[\[\s*bridge\s*\]\]", line):
                table = bridge_table(bridges)
                bridges += 1
                in_other_table = False
                where.setdefault((table, "[[bridge]]"), lineno)
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
        if line is None and table <= bridge_table(0):
            line = self.lines.get((table, "[[bridge]]"))
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
        self.finish_groups(cfg, data, last=False)
        if not cfg.listeners:
            cfg.listeners = [ListenerConfig()]
        else:
            cfg.local_only = False
        self.finish_groups(cfg, data, last=True)
        return cfg

    def finish_groups(self, cfg: Config, data: dict[str, Any], last: bool) -> None:
        """Each option group's checks over the whole file (OAuth, LDAP, ...)."""
        for group in groups():
            if group.finish is None or group.finish_last != last:
                continue
            group.finish(
                cfg,
                Given(
                    [o.name for o in group.options if o.name in data],
                    lambda name: (self.path, self.lines.get((-1, name))),
                    lambda name: f"{self.path}: ",
                ),
            )

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

    def value(self, opt: Option, value: Any, table: int, key: str) -> Any:
        """``value`` typed as ``opt.kind`` says, then checked (a check's problem is reported as
        "key: problem" at the key's line)."""
        kind = opt.kind
        parsed: Any = value
        if opt.toml_raw:
            pass
        elif kind == BOOL:
            parsed = self.boolean(value, table, key)
        elif kind == INT:
            parsed = int(self.typed(value, int, table, key, "a whole number"))
        elif kind == SECONDS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.error(
                    f"'{key}' must be a number of seconds, not {self.describe(value)}", table, key
                )
            parsed = float(value)
        elif kind in (WORD, TEXT):
            parsed = self.string(value, table, key)
        elif kind == STRINGS:
            parsed = self.strings(value, table, key)
        elif kind == DURATION:
            if isinstance(value, int) and not isinstance(value, bool):
                parsed = self.checked(checks.int_range(1, None), value, table, key)
            else:
                text = self.string(value, table, key)
                seconds = checks.parse_duration(text)
                if seconds is None:
                    raise self.error(
                        f"{key}: invalid duration '{text}': expected a positive whole number "
                        'followed by h, d, w, m or y, e.g. "14d" (or a number of seconds)',
                        table,
                        key,
                    )
                parsed = seconds
        if opt.check is None:
            return parsed
        return self.checked(opt.check, parsed, table, key)

    def checked(self, check: Any, value: Any, table: int, key: str) -> Any:
        try:
            return check(value)
        except BadValue as exc:
            raise self.error(f"{key}: {exc}", table, key) from None

    def scope_error(self, key: str, table: int) -> ConfigError | None:
        opt = _refused(key)
        if opt is None:
            return None
        if opt.kind == UNSUPPORTED:
            return self.error(unsupported_message(opt), table, key)
        return self.error(
            f"'{key}' is not supported yet by midge (plugin options come with security "
            "support); remove it",
            table,
            key,
        )

    # -- top level

    def global_key(self, cfg: Config, key: str, value: Any) -> None:
        t = -1
        err = self.scope_error(key, t)
        if err is not None:
            raise err
        opt = _toml_option(key, in_listener=False)
        if opt is not None:
            if opt.kind == COLLECT:
                self.collect(cfg, opt, key, value)
                return
            if opt.apply in ("listener", "python_options", "bridge"):
                getattr(self, f"_apply_{opt.apply}")(cfg, key, value)
                return
            parsed = self.value(opt, value, t, key)
            if opt.apply is not None:
                getattr(self, f"_apply_{opt.apply}")(cfg, key, parsed)
                return
            target: Any = getattr(cfg, opt.target) if opt.target else cfg
            assert opt.attr is not None
            setattr(target, opt.attr, parsed)
            return
        if key in ("port", "bind_address"):
            raise self.error(
                f"'{key}' (Mosquitto's deprecated default-listener option) is not used in TOML; "
                "configure a [[listener]] table with port = ... and address = ...",
                t,
                key,
            )
        if _toml_option(key, in_listener=True) is not None:
            raise self.error(
                f"'{key}' is a listener option; put it in a [[listener]] table", t, key
            )
        if key == "include_dir":
            raise self.error(
                "'include_dir' is a mosquitto.conf option; TOML files do not include others",
                t,
                key,
            )
        if isinstance(value, dict):
            raise self.error(
                f"unknown table [{key}]{closest(key, ['listener'])}; midge's TOML has "
                "top-level options and [[listener]] tables",
                -2,
                key,
            )
        raise self.error(f"unknown option '{key}'{closest(key, names(TOML))}", t, key)

    def collect(self, cfg: Config, opt: Option, key: str, value: Any) -> None:
        """An option its group checks once the file is read (``auth_ldap_*``): each value as
        (option, text, file, line)."""
        assert opt.attr is not None
        collected = getattr(cfg, opt.attr)
        t = -1
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
            collected.append((key, str(item), self.path, line))

    def _apply_python_options(self, cfg: Config, key: str, value: Any) -> None:
        if not isinstance(value, dict) or not all(
            isinstance(v, str | int | float | bool) for v in value.values()
        ):
            raise self.error(f"'{key}' must be a table of NAME = value", -1, key)
        cfg.auth_python_options = {str(k): str(v) for k, v in value.items()}

    def _apply_per_listener_settings(self, cfg: Config, key: str, flag: bool) -> None:
        cfg.per_listener_settings = flag

    def _apply_message_size_limit(self, cfg: Config, key: str, value: int) -> None:
        cfg.message_size_limit = value

    def _apply_persistence(self, cfg: Config, key: str, on: bool) -> None:
        if not on:
            cfg.durability = "none"
        elif cfg.durability == "none":
            cfg.durability = "fsync"

    def _apply_durability(self, cfg: Config, key: str, value: str) -> None:
        cfg.durability = value

    def _apply_ignored(self, cfg: Config, key: str, value: Any) -> None:
        cfg.notices.append(checks.ignored_notice(f"{self.path}: ", named(key)[0]))

    def _apply_deprecated(self, cfg: Config, key: str, value: Any) -> None:
        opt = named(key)[0]
        assert opt.attr is not None
        setattr(cfg, opt.attr, value)
        cfg.notices.append(checks.deprecated_notice(f"{self.path}: ", opt.name))

    def _apply_autosave(self, cfg: Config, key: str, value: Any) -> None:
        if key == "autosave_interval":  # (mosquitto.conf takes any whole number here)
            self.checked(checks.int_range(0, None), value, -1, key)
        cfg.notices.append(checks.autosave_notice(f"{self.path}: ", key))

    def _apply_log_type(self, cfg: Config, key: str, values: list[str]) -> None:
        cfg.log_type = self.checked(checks.log_types, values, -1, key)

    def _apply_log_dest(self, cfg: Config, key: str, values: list[str]) -> None:
        dests: list[str] = []
        log_file: str | None = None
        for item in values:
            kind, _, rest = item.strip().partition(" ")
            try:
                if kind == "none":
                    if rest.strip():
                        raise BadValue(f"unexpected text '{rest.strip()}' after 'none'")
                    dests, log_file = [], None
                elif kind in ("stderr", "stdout", "syslog", "topic"):
                    if rest.strip():
                        raise BadValue(f"unexpected text '{rest.strip()}' after '{kind}'")
                    if kind not in dests:
                        dests.append(kind)
                elif kind == "file":
                    if not rest.strip():
                        raise BadValue("'file' needs a path: \"file /var/log/midge.log\"")
                    if log_file is not None:
                        raise BadValue("only one 'file' destination may be configured")
                    log_file = rest.strip()
                    dests.append("file")
                elif kind == "dlt":
                    raise BadValue(checks.DLT_REFUSED)
                else:
                    raise BadValue(
                        f"invalid destination '{item}': expected stderr, stdout, "
                        '"file PATH", syslog, topic or none'
                    )
            except BadValue as exc:
                raise self.error(f"log_dest: {exc}", -1, "log_dest") from None
        cfg.log_dest = dests
        cfg.log_file = log_file

    # -- [[bridge]]

    def _apply_bridge(self, cfg: Config, key: str, value: Any) -> None:
        from midge.bridge.options import BridgeConfig

        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise self.error("'bridge' must be [[bridge]] tables", -1, key)
        for index, table in enumerate(value):
            at = bridge_table(index)  # the lines of this table's keys
            name = table.get("connection")
            if not isinstance(name, str) or not name:
                raise self.error(
                    '[[bridge]] needs a name: connection = "NAME" (mosquitto.conf\'s '
                    "'connection NAME')",
                    at,
                    "connection",
                )
            if any(b.name == name for b in cfg.bridges):
                raise self.error(f"duplicate bridge name '{name}'", at, "connection")
            bridge = BridgeConfig(name=name)
            line = self.lines.get((at, "connection"), self.lines.get((at, "[[bridge]]")))
            bridge.where["connection"] = (self.path, line)
            for k, v in table.items():
                if k == "connection":
                    continue
                opt = next((o for o in named(k) if o.scope == BRIDGE and TOML in o.formats), None)
                if opt is None:
                    keys = [o.name for o in all_options() if o.scope == BRIDGE]
                    raise self.error(
                        f"unknown bridge option '{k}' in [[bridge]] '{name}'{closest(k, keys)}",
                        at,
                        k,
                    )
                real = real_option(opt)
                parsed = self.value(real, v, at, k)
                assert real.attr is not None
                setattr(bridge, real.attr, parsed)
            cfg.bridges.append(bridge)

    # -- [[listener]]

    def _apply_listener(self, cfg: Config, key: str, value: Any) -> None:
        if isinstance(value, dict):
            raise self.error(
                "'listener' must be an array of tables: write [[listener]], not [listener]",
                -2,
                "listener",
            )
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error("'listener' must be [[listener]] tables", -1, key)
        for index, table in enumerate(value):
            cfg.listeners.append(self.listener(cfg, index, table))

    def listener(self, cfg: Config, index: int, table: dict[str, Any]) -> ListenerConfig:
        t = index
        if "port" not in table and "unix_socket_path" not in table:
            raise self.error(
                "[[listener]] needs a port, e.g. port = 1883 (or unix_socket_path = PATH)",
                t,
                None,
            )
        port = self.value(_listener_option("port"), table.get("port", 0), t, "port")
        if "unix_socket_path" in table:
            for key in ("address", "host"):
                if key in table:
                    raise self.error(f"a Unix socket listener has no '{key}'; remove it", t, key)
            if port != 0:
                raise self.error(
                    "a Unix socket listener has no port: write port = 0 or leave it out",
                    t,
                    "port",
                )
        lst = ListenerConfig(port=port, host=None)
        if "address" in table and "host" in table:
            raise self.error(
                "give either 'address' or 'host' (the same thing), not both", t, "host"
            )
        for key, value in table.items():
            opt = _toml_option(key, in_listener=True)
            err = None if opt is not None else self.scope_error(key, t)
            if err is not None:
                raise err
            if opt is None:
                if _known(key):
                    raise self.error(
                        f"'{key}' is a global option, not a listener option; move it above the "
                        "first [[listener]] table",
                        t,
                        key,
                    )
                raise self.error(
                    f"unknown listener option '{key}'{closest(key, _listener_keys())}", t, key
                )
            if key == "port":
                continue
            if opt.scope == PER_LISTENER and not cfg.per_listener_settings:
                raise self.error(
                    f"'{key}' in a [[listener]] table needs per_listener_settings = true "
                    "at the top of the file (otherwise it is a global option: move it above "
                    "the first [[listener]])",
                    t,
                    key,
                )
            assert opt.attr is not None
            setattr(lst, opt.attr, self.value(opt, value, t, key))
            if opt.scope == LISTENER:
                lst.where[opt.name] = (self.path, self.lines.get((t, key)))
        for other in cfg.listeners:
            if lst.unix_socket_path is not None:
                if other.unix_socket_path == lst.unix_socket_path:
                    raise self.error(
                        f"a listener on the Unix socket {lst.unix_socket_path} is defined twice",
                        t,
                        "unix_socket_path",
                    )
            elif lst.port != 0 and other.port == lst.port and other.host == lst.host:
                raise self.error(
                    f"a listener on port {lst.port} with the same address is defined twice",
                    t,
                    "port",
                )
        problem = tls_problem(lst)
        if problem is not None:
            raise self.error(problem[1], t, problem[0])
        for name, notice in tls_notices(lst):
            cfg.notices.append(f"{self.path}:{self.lines.get((t, name))}: {notice}")
        return lst


def _listener_option(name: str) -> Option:
    opt = _toml_option(name, in_listener=True)
    assert opt is not None, name
    return opt


def _listener_keys() -> list[str]:
    return [
        o.name
        for o in all_options()
        if TOML in o.formats and o.scope in (LISTENER, PER_LISTENER) and not o.prefix
        and o.name != "listener"
    ]  # fmt: skip


def parse_toml(text: str, path: str = "<string>") -> Config:
    """Parse midge's TOML layout: top-level keys for global options, ``[[listener]]`` tables."""
    return TomlReader(text, path).read()
