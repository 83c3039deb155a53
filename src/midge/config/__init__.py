"""One typed configuration for the broker, read from one option table.

Both readers (midge's TOML, :func:`parse_toml`, and Mosquitto's ``mosquitto.conf``,
:func:`parse_mosquitto_conf`) produce a :class:`Config`. Option names follow Mosquitto 2.0
wherever Mosquitto has the option, with the same meaning, scope and defaults, so an operator can
bring a ``mosquitto.conf`` across unchanged. Every problem is a :class:`ConfigError` naming the
file, the line, the option and the fix: nothing in a configuration file is ever silently
ignored, and an option Mosquitto has but midge does not implement yet is refused by name rather
than skipped.

The package:

- :mod:`~midge.config.options`: :class:`Option` (name, scope, kind, check, default, field,
  Mosquitto's meaning, doc) and the registry of option groups;
- :mod:`~midge.config.table`: the broker's own options, and the Mosquitto options refused;
- :mod:`~midge.config.checks`: the value checkers the table names;
- :mod:`~midge.config.model`: :class:`Config` and :class:`ListenerConfig` (dataclasses whose
  fields the tests check against the table), :func:`resolve_listener`,
  :func:`apply_cli_overrides`, :func:`tls_problem`;
- :mod:`~midge.config.mosquitto` and :mod:`~midge.config.toml`: the two readers, driven by the
  table; :mod:`~midge.config.docs`: docs/configuration.md, rendered from the table
  (``make docs``; a test fails when the committed page differs);
- :mod:`~midge.config.errors`: :class:`ConfigError`.

**Backends declare their own options.** The authentication backends' options live next to them,
in small declaration modules (``midge.auth.http_options``, ``midge.auth.ldap_options``,
``midge.auth.oauth_options``, which also holds ``OAuthConfig``) that import
``midge.config.options``; this package only knows their module names
(:data:`midge.config.options.OPTION_MODULES`) and imports them the first time the table is
needed. So ``midge.config`` imports no backend at module level, the backends import
``midge.config`` freely, and there is no import cycle (``tests/unit/test_import_cycles.py``).
A backend that needs the whole file (LDAP's settings, OAuth's cross-checks) gives its group a
``finish`` hook; one that keeps a settings object of its own (OAuth) gives ``settings`` and its
options ``target``.

**Adding an option** is one entry in the table of its part (plus its behaviour where it is
used), e.g. a global whole-number option in :mod:`midge.config.table`::

    Option(
        "sys_interval",                     # the name, Mosquitto's when Mosquitto has it
        GLOBAL,                             # scope
        INT,                                # how the value is written
        "Seconds between $SYS updates; 0 = none.",  # the docs' Meaning
        "sys",                              # the docs section (midge.config.docs.SECTIONS)
        default=10,                         # = the Config field's default (a test checks it)
        check=checks.int_range(0, 65535),
    ),

with the field ``sys_interval: int = 10`` on :class:`Config` (the test fails until both agree).
Both readers then accept it (``sys_interval 10`` / ``sys_interval = 10``) with the same checks
and messages, and ``make docs`` lists it; remove its "refused" entry if it had one.
"""

from __future__ import annotations

from midge.codec.packets import UNLIMITED_PACKET_SIZE as UNLIMITED_PACKET_SIZE
from midge.config.checks import (
    DEFAULT_LOG_TYPES,
    DURABILITIES,
    LOG_TYPES,
    MAX_PAYLOAD,
    TLS_VERSIONS,
)
from midge.config.errors import ConfigError, read_text_file
from midge.config.model import (
    DEFAULT_DATA_DIR,
    DEFAULT_DB_NAME,
    MOSQUITTO_DATA_DIR,
    MOSQUITTO_DB_NAME,
    Config,
    ListenerConfig,
    apply_cli_overrides,
    resolve_listener,
    tls_notices,
    tls_problem,
)
from midge.config.mosquitto import parse_mosquitto_conf
from midge.config.options import UNSUPPORTED, Option, OptionGroup
from midge.config.table import OPTIONS, TLS_OPTIONS
from midge.config.toml import parse_toml

#: Mosquitto option name -> the later work that brings it to midge.
UNSUPPORTED_OPTIONS: dict[str, str] = {
    o.name: o.unsupported for o in OPTIONS if o.kind == UNSUPPORTED
}


def load_config(path: str) -> Config:
    """Read ``path``: ``*.toml`` is midge's TOML, any other name is ``mosquitto.conf``."""
    text = read_text_file(path, "configuration file")
    if path.endswith(".toml"):
        return parse_toml(text, path)
    return parse_mosquitto_conf(text, path)


__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_DB_NAME",
    "DEFAULT_LOG_TYPES",
    "DURABILITIES",
    "LOG_TYPES",
    "MAX_PAYLOAD",
    "MOSQUITTO_DATA_DIR",
    "MOSQUITTO_DB_NAME",
    "TLS_OPTIONS",
    "TLS_VERSIONS",
    "UNLIMITED_PACKET_SIZE",
    "UNSUPPORTED_OPTIONS",
    "Config",
    "ConfigError",
    "ListenerConfig",
    "Option",
    "OptionGroup",
    "apply_cli_overrides",
    "load_config",
    "parse_mosquitto_conf",
    "parse_toml",
    "read_text_file",
    "resolve_listener",
    "tls_notices",
    "tls_problem",
]
