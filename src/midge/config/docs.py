"""docs/configuration.md, rendered from the option table: ``python -m midge.config.docs``
(``make docs``) prints it, and ``tests/unit/test_config_docs.py`` fails when the committed page
differs from what the table gives.

The hand-written parts (the two formats, the listener rules, the TOML example, the command line)
are the templates below; every option row comes from its :class:`~midge.config.options.Option`.
"""

# The templates are Markdown, whose lines are as long as the page has them.
# ruff: noqa: E501

from __future__ import annotations

import sys
from dataclasses import dataclass

from midge.config.options import (
    BOOL,
    GLOBAL,
    INT,
    LISTENER,
    PER_LISTENER,
    SECONDS,
    UNSUPPORTED,
    Option,
    all_options,
)

HEADER = r"""# Configuration reference

<!-- Generated from the option table (src/midge/config/table.py and the backends'
     *_options.py) by `make docs`; edit those, not this page. -->

midge reads two formats, and both produce the same typed `Config` (`src/midge/config/`):

- **`mosquitto.conf`**: Mosquitto 2.0's own format, read with Mosquitto's semantics, so an existing
  file can be brought across unchanged (minus the options midge does not support yet, which it
  refuses by name; see [Not supported yet](#mosquitto-options-not-supported-yet)).
- **TOML**: midge's own layout, with the same option names and meanings, top-level keys for global
  options and `[[listener]]` tables for listeners.

`midge broker -c FILE` picks the reader from the file name: a name ending in `.toml` is TOML, any
other name is `mosquitto.conf`. Without `-c`, midge runs with the defaults below, which are
Mosquitto 2's: one listener on `127.0.0.1:1883`; and, unlike Mosquitto, it is durable by default:
its state is kept in SQLite in `./data` (see [Persistence](#persistence-global) and
[durability.md](durability.md)). The same holds with a TOML file. A `mosquitto.conf` means what it
means to Mosquitto: persistence is off unless it says `persistence true`.

Nothing in a configuration file is silently ignored. Every problem stops the broker with a message
that names the file, the line, the option and the fix, for example:

```
/etc/midge/conf.d/10-limits.conf:3: max_qos: 3 is out of range: expected 0..2
midge.conf:12: unknown option 'max_queued_mesages'; did you mean 'max_queued_messages'?
midge.conf:4: 'connection' is not supported yet by midge (it comes with bridges support); remove the line or comment it out
midge.toml:9: 'max_queued_messages' is a global option, not a listener option; move it above the first [[listener]] table
```

Valid options that Mosquitto itself comments on (the deprecated `port` and `bind_address`,
`message_size_limit`, `-p` ignored because the file defines listeners) are kept in `Config.notices`,
which the broker logs at startup.

## The mosquitto.conf format

- One option per line: the option name, a space (or tab), then the value. Option names are
  case-sensitive.
- Blank lines are skipped; a line whose first non-blank character is `#` is a comment. Leading and
  trailing whitespace (and `\r` line ends) is removed.
- Booleans are `true` or `false` (Mosquitto also accepts `1` and `0`, and so does midge).
- Numbers are whole decimal numbers. One-word values (numbers, booleans, keywords such as `ipv4`) may
  be followed by a `# comment`; any other extra text is an error.
- Strings (`auto_id_prefix`, `pid_file`, `log_timestamp_format`, `log_dest file PATH`,
  `include_dir`) run to the end of the line, trimmed, so they may contain spaces and `#`.
- `listener PORT [ADDRESS]` starts a listener block: the listener options after it (until the next
  `listener`) apply to that listener. Global options may appear anywhere.
- A string option given twice in the same scope (`pid_file`, `log_timestamp_format`,
  `auto_id_prefix`, `bind_address`) is an error, as in Mosquitto ("Duplicate ... value").
- `include_dir DIR` reads `DIR/*.conf` at that point, in Mosquitto's order (alphabetical, ignoring
  case, with the upper-case letter first when two names differ only in case: `00.conf`, `01.conf`,
  `A.conf`, `a.conf`, `B.conf`, `b.conf`). The included files continue the main file: a listener
  block open when `include_dir` is read continues into them. Errors name the included file and its
  line. As in Mosquitto, `include_dir` is only allowed in the main file, the directory must not
  contain the main file, and relative paths are relative to the current directory.

### Listeners in mosquitto.conf

These follow Mosquitto 2.0 exactly:

- **No listener at all** (no `listener`, `port`, `bind_address`, nor any listener option before the
  first `listener`): "local only mode", one listener on `127.0.0.1:1883` (`Config.local_only` is
  true). Mosquitto also opens `::1`; midge listens on `127.0.0.1` only.
- **`listener 1883`** with no address listens on every address; **`listener 1883 192.0.2.1`** on that
  address (or host name) only.
- **`listener 0 PATH`**: a Unix socket listener at PATH, as in Mosquitto, when PATH contains a `/`
  (`listener 0 /run/mosquitto/mqtt.sock`, `listener 0 ./mqtt.sock`). The socket file is made with
  mode 0770 (an old socket there is replaced) and removed when midge stops; the listener options
  below it (limits, TLS, per-listener security) apply as to a TCP listener.
- **Port 0** without a path (midge only): any free port, which the broker reports once bound
  (`listener 0`, `listener 0 127.0.0.1`).
- **The default listener.** Listener options that appear *before* the first `listener` line, and the
  deprecated `port` and `bind_address`, configure Mosquitto's "default listener" (port 1883 unless
  `port` says otherwise, every address unless `bind_address` says otherwise). Mosquitto starts it, in
  addition to the `listener` blocks and after them, when `port` or `bind_address` is given or one of
  `max_connections`, `max_qos`, `protocol`, `socket_domain`, `bind_interface`, a TLS option (or, with
  `per_listener_settings true`, `allow_zero_length_clientid false`) differs from its default; midge
  does the same. Where
  Mosquitto would then quietly drop a setting (`max_topic_alias`, or a per-listener
  `auto_id_prefix`, given before any `listener` when the default listener is not started), midge
  reports an error instead. If the default listener would clash with a `listener` on the same port
  and address, midge reports that at load time rather than failing to bind.
- Two `listener` lines with the same port and address are an error (port 0 may repeat).

## The TOML format

Top-level keys are the global options; each `[[listener]]` table is one listener. Everything uses
the Mosquitto names below. A complete example:

```toml
# midge.toml
per_listener_settings = false
allow_zero_length_clientid = true
auto_id_prefix = "auto-"

max_inflight_messages = 20
max_inflight_bytes = 0
max_queued_messages = 1000
max_queued_bytes = 0
queue_qos0_messages = false
persistent_client_expiration = "14d"   # or a number of seconds
max_keepalive = 65535
connect_timeout = 10

max_packet_size = 1048576
message_size_limit = 0
retain_available = true
upgrade_outgoing_qos = false
set_tcp_nodelay = true
max_qos = 2             # default for listeners that do not set it
max_topic_alias = 10    # default for listeners that do not set it

log_dest = ["stderr", "file /var/log/midge/midge.log"]
log_type = ["error", "warning", "notice", "information"]
log_timestamp = true
log_timestamp_format = "%Y-%m-%dT%H:%M:%S"
connection_messages = true
pid_file = "/run/midge/midge.pid"

[[listener]]            # every address, port 1883
port = 1883

[[listener]]
port = 1884
address = "127.0.0.1"   # "host" is accepted as the same key
max_connections = 100
max_qos = 1
max_topic_alias = 0
socket_domain = "ipv4"
protocol = "mqtt"
```

Rules:

- Keys written after a `[[listener]]` header belong to that listener (a TOML rule): put global
  options above the first `[[listener]]`. A global option inside a listener table, or a
  listener-only option (`max_connections`, `protocol`, `socket_domain`, `port`, `address`) at the
  top level, is an error that says where it goes.
- Each `[[listener]]` needs `port` (0..65535, 0 = any free port). Without `address`/`host` it
  listens on every address. With no `[[listener]]` at all, midge runs in local only mode
  (`127.0.0.1:1883`), as with an empty `mosquitto.conf`.
- `max_qos` and `max_topic_alias` at the top level are defaults inherited by listeners that do not
  set them (a midge convenience: in `mosquitto.conf` they are listener options only).
- `allow_zero_length_clientid` and `auto_id_prefix` go at the top level; inside a `[[listener]]`
  they need `per_listener_settings = true`, and then the top-level values are the defaults that
  listeners without their own value inherit.
- `log_dest` and `log_type` take a string or an array of strings; the `file` destination is written
  `"file PATH"`, as in `mosquitto.conf`.
- Types are checked: a quoted number, a number where a boolean belongs, an empty string are errors.
  The deprecated `port`/`bind_address` and `include_dir` are `mosquitto.conf` only.
- Syntax errors report tomllib's line; other errors report the line of the offending key.

## Options

"Scope" is where the option applies: **global**, **listener** (the current `listener` block in
`mosquitto.conf`, a `[[listener]]` table in TOML), or **per listener if `per_listener_settings`**.
All options below exist in both formats unless marked. Defaults are Mosquitto 2.0's."""


@dataclass(frozen=True, slots=True)
class Section:
    """One ``###`` section of the Options chapter: the options whose ``section`` is ``key``."""

    key: str
    title: str
    intro: str = ""
    footer: str = ""
    scope_column: bool = False
    mosquitto_column: bool = True


SECTIONS = (
    Section("listeners", "Listeners", scope_column=True),
    Section(
        "tls",
        "TLS (listener)",
        intro=r"""Always per listener, whatever `per_listener_settings` says (as in Mosquitto); given before the
first `listener` line they configure the default listener. TOML: the same keys in a
`[[listener]]` table. Details, errors and an example: [docs/security.md](security.md#tls).""",
        footer=r"""A TLS option on a listener without `certfile` and `keyfile` is an error (Mosquitto ignores it).""",
    ),
    Section("clientid", "Client identifiers (`per_listener_settings`)", scope_column=True),
    Section(
        "security",
        "Authentication and access control ([security.md](security.md))",
        scope_column=True,
    ),
    Section("sessions", "Sessions, queues and limits (global)"),
    Section("packets", "Packets and messages (global)"),
    Section(
        "limits",
        "Limits (global, midge only)",
        intro=r"""Each limit is answered with the reason code the specification has for it and counted in the
broker's stats; [security.md](security.md#limits) has the details. 0 (or -1 where shown) means no
limit, the default.""",
        mosquitto_column=False,
    ),
    Section("backends", "Authentication backends (global, midge only)", mosquitto_column=False),
    Section(
        "persistence",
        "Persistence (global)",
        intro=r"""See [durability.md](durability.md) for what is kept, the guarantee and the failure modes.""",
        footer=r"""With no file or a TOML file, `midge broker` is durable: it keeps its state in `./data/midge.db`
unless told otherwise. Under a `mosquitto.conf` it follows Mosquitto's defaults: nothing survives
a restart (no session, no retained message) unless the file says `persistence true` (or sets
midge's own `durability fsync` or `os`); then the database is `persistence_location` (default: the
current directory) / `persistence_file` (default: `mosquitto.db`). The file is midge's own SQLite
format, not Mosquitto's: midge refuses to start on a file Mosquitto wrote rather than touch it, so
point `persistence_file` or `persistence_location` elsewhere when migrating. `autosave_interval`
and `autosave_on_changes` are accepted with a notice: midge writes every change before it
acknowledges it, which is stronger than either.

A `Config()` built in code (the in-process brokers of the tests) has no `data_dir` and keeps
everything in memory. With `workers` above 1 each worker has a database of its own next to
`persistence_file`: worker 0 that file, worker N `NAME-wN.EXT` (`midge-w1.db`...); see
docs/workers.md. A cluster node (`cluster_redis`) keeps its persistent sessions in the cluster's
Redis instead ([cluster.md](cluster.md)), unless `durability` is "none"; a `data_dir` or
`persistence_file` with `cluster_redis` is an error.""",
    ),
    Section("logging", "Logging (global)"),
    Section("sys", "`$SYS` broker status (global)"),
    Section(
        "admin",
        "Admin API (global, midge only)",
        intro=r"""On the `protocol http` listeners: Prometheus `/metrics` and the admin API; see
[operations.md](operations.md).""",
        mosquitto_column=False,
    ),
    Section("processes", "Processes (global)"),
    Section("files", "Files (global)"),
    Section(
        "bridges",
        "Bridges ([bridges.md](bridges.md))",
        intro=r"""Each `connection NAME` line starts a bridge; the bridge options after it, up to the next
`connection`, configure that bridge (a bridge option before any `connection` is an error). In TOML
each bridge is a `[[bridge]]` table with `connection = "NAME"` and the same keys (`topic` and
`address` take arrays).""",
        footer=r"""`bridge_psk`, `bridge_identity` and `bridge_require_ocsp` are refused (see below).""",
    ),
)

COMMAND_LINE = r"""## Command-line overrides

`midge broker` takes Mosquitto's flags, with Mosquitto 2's meaning (`apply_cli_overrides`):

- `-p PORT` (repeatable): listen on PORT on the loopback (`127.0.0.1`) only. As in Mosquitto 2,
  when the configuration file defines any listener (`listener`, `port`, `bind_address`, or a
  listener option that starts the default listener; any `[[listener]]` in TOML), the `-p` ports are
  **ignored**; midge logs a notice saying so.
- `-v`: log every type, overriding `log_type` from the file.
- midge's `--workers N` sets the `workers` option (N broker processes; see [workers.md](workers.md)).
- midge's own address option (`midge broker --host ADDRESS`) chooses the address the
  `-p` listeners (or the local only listener) bind to instead of `127.0.0.1`; it too only applies in
  local only mode."""

UNSUPPORTED_INTRO = r"""## Mosquitto options not supported yet

midge knows every Mosquitto 2.0 option. Those below are refused with
"'NAME' is not supported yet by midge (...)", so that a file never runs with a setting quietly
missing. Remove or comment them out for now; the work named brings them. Where the reason is
something Python's ssl module or midge cannot offer (TLS-PSK, OpenSSL engines, Mosquitto's C
plugins), the message says what to use instead."""

#: The rows of the "not supported yet" table: (title, the ``Option.unsupported`` group listed,
#: what comes before its options, what comes after) -- values, not options, are written here.
UNSUPPORTED_ROWS: tuple[tuple[str, str, str, str], ...] = (
    (
        "Security (authentication, access control, TLS)",
        "security (authentication, access control, TLS)",
        "",
        "",
    ),
    ("Bridges", "bridges", "", ""),
    (
        "Logging destinations not built yet",
        "",
        "`log_dest syslog`, `log_dest topic`, `log_dest dlt`",
        "",
    ),
)

UNSUPPORTED_OUTRO = r"""When a later issue adds one of these, it moves from this table into the option tables above, with
the same name and meaning in both formats."""

_PLACEHOLDERS = {BOOL: "true\\|false", INT: "N", SECONDS: "SECONDS"}


def _syntax(opt: Option) -> str:
    if opt.syntax:
        return opt.syntax
    return f"`{opt.name} {_PLACEHOLDERS.get(opt.kind, 'VALUE')}`"


def _default(opt: Option) -> str:
    if opt.default_doc:
        return opt.default_doc
    value = opt.default
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _scope(opt: Option) -> str:
    if opt.apply == "listener":
        return "—"
    if opt.apply in ("port", "bind_address"):
        return "default listener"
    if opt.scope == PER_LISTENER:
        return "per listener if `per_listener_settings`"
    if opt.scope == LISTENER:
        return "listener (TOML: also global default)" if opt.toml_global else "listener"
    assert opt.scope == GLOBAL or opt.scope, opt.name
    return opt.scope


def _table(section: Section, options: list[Option]) -> list[str]:
    columns = ["Option", "Default", "Meaning"]
    if section.scope_column:
        columns.insert(1, "Scope")
    if section.mosquitto_column:
        columns.append("Mosquitto difference")
    rows = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for opt in options:
        doc = f"{opt.doc} Reloaded on SIGHUP." if opt.reload else opt.doc
        cells = [_syntax(opt), _default(opt), doc]
        if section.scope_column:
            cells.insert(1, _scope(opt))
        if section.mosquitto_column:
            cells.append(opt.mosquitto)
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _refused_name(opt: Option) -> str:
    name = f"`{opt.name}*`" if opt.prefix else f"`{opt.name}`"
    return f"{name} ({opt.note})" if opt.note else name


def render() -> str:
    """The whole of docs/configuration.md."""
    options = [o for o in all_options() if o.row_of is None]
    known = {s.key for s in SECTIONS} | {"unsupported"}
    stray = [o.name for o in options if o.section not in known]
    if stray:
        raise ValueError(f"options in no docs section: {', '.join(stray)}")
    out = [HEADER]
    for section in SECTIONS:
        out += ["", f"### {section.title}", ""]
        if section.intro:
            out += [section.intro, ""]
        out += _table(section, [o for o in options if o.section == section.key])
        if section.footer:
            out += ["", section.footer]
    out += [
        "",
        COMMAND_LINE,
        "",
        UNSUPPORTED_INTRO,
        "",
        "| Comes with | Options |",
        "| --- | --- |",
    ]
    refused = [o for o in all_options() if o.kind == UNSUPPORTED or o.apply == "c_plugin_option"]
    listed: set[str] = set()
    for title, group, before, after in UNSUPPORTED_ROWS:
        names = [_refused_name(o) for o in refused if group and o.unsupported == group]
        listed.update(o.name for o in refused if group and o.unsupported == group)
        cell = ", ".join(part for part in (before, *names, after) if part)
        out.append(f"| {title} | {cell} |")
    missing = [o.name for o in refused if o.name not in listed]
    if missing:
        raise ValueError(f"refused options in no row of the docs: {', '.join(missing)}")
    out += ["", UNSUPPORTED_OUTRO, ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
