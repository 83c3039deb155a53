"""The option type and the registry: every option midge reads is one :class:`Option`.

The table is split into groups (:class:`OptionGroup`): the broker's own options
(:mod:`midge.config.table`) and one group per authentication backend, declared next to that
backend (:mod:`midge.auth.http_options`, :mod:`midge.auth.oauth_options`,
:mod:`midge.auth.ldap_options`). :data:`OPTION_MODULES` lists the modules that declare a group;
:func:`groups` imports them the first time the table is needed, so ``midge.config`` never imports
a backend at module level (and a backend's declaration module may import ``midge.config``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from midge.config.model import Config

# -- scopes: where an option applies
GLOBAL = "global"
LISTENER = "listener"  # the current ``listener`` block / a ``[[listener]]`` table
PER_LISTENER = "per_listener"  # global, or per listener when per_listener_settings is true
BRIDGE = "bridge"  # the current ``connection`` block / a ``[[bridge]]`` table

# -- kinds: how a value is written (each reader turns its own syntax into the Python value)
BOOL = "bool"  # true/false (mosquitto.conf also takes 1/0)
INT = "int"  # a whole number
SECONDS = "seconds"  # a number of seconds, may be fractional
WORD = "word"  # one word (mosquitto.conf: a trailing # comment is allowed)
TEXT = "text"  # the rest of the line (mosquitto.conf), a string (TOML)
DURATION = "duration"  # Mosquitto's 14d / 2w ... (TOML also a number of seconds)
STRINGS = "strings"  # repeatable word lines / a TOML string or array of strings
TABLE = "table"  # a TOML table of NAME = value
COLLECT = "collect"  # collected as (option, text, file, line) for the group's finish to check
RAW = "raw"  # handed to the option's behaviour as read
UNSUPPORTED = "unsupported"  # a Mosquitto option midge refuses by name

# -- formats
CONF = "conf"
TOML = "toml"
BOTH = (CONF, TOML)

#: ``Option.mosquitto`` for an option Mosquitto does not have.
MIDGE_ONLY = "Mosquitto has no such option."
#: ``Option.mosquitto`` for an option with Mosquitto's exact meaning.
SAME = "Same."


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration option: everything the readers, the model check and the docs need.

    ``field`` is the attribute set on the model (``""``: the option's name; None: the option has
    a behaviour of its own and no attribute of that name); ``target`` names the attribute of
    :class:`~midge.config.model.Config` holding a backend's settings object (``"auth_oauth"``), ""
    for Config (or the listener) itself. ``check`` validates and normalizes the value once its
    kind is read; ``apply`` names a behaviour the readers implement (a hook of that name in
    each reader: ``listener``, ``include_dir``, ``log_dest``, ...) instead of setting ``field``.
    """

    name: str
    scope: str
    kind: str
    doc: str  # what the option means (the docs' Meaning column)
    section: str  # the docs section it is listed in (see midge.config.docs)
    default: Any = None  # the model's default (checked against the dataclass by the tests)
    default_doc: str = ""  # the docs' Default column ("" : the default, written as is)
    mosquitto: str = SAME  # Mosquitto's meaning: SAME, MIDGE_ONLY, or the difference
    syntax: str = ""  # the docs' Option column ("": `name VALUE` from the kind)
    check: Callable[[Any], Any] | None = None
    field: str | None = ""
    target: str = ""
    formats: tuple[str, ...] = BOTH
    once: bool = False  # mosquitto.conf refuses it twice in one scope ("Duplicate ... value")
    alias_of: str | None = None  # another name for that option (same behaviour)
    toml_global: bool = False  # a listener option TOML also takes at the top level, as a default
    toml_raw: bool = False  # TOML hands ``check`` the value as parsed (any type)
    apply: str | None = None  # the readers' behaviour for it (see above)
    #: SIGHUP re-reads the configuration file and applies the new value (Mosquitto's
    #: "Reloaded on reload signal"); see midge.reload.
    reload: bool = False
    prefix: bool = False  # ``name`` is a prefix: every option starting with it
    unsupported: str = ""  # UNSUPPORTED: the support it comes with (a group of the docs)
    note: str = ""  # UNSUPPORTED: why, when more specific than the group
    row_of: str | None = None  # docs: listed in the row of that option
    suggest: bool = True  # offered by "did you mean ...?" for a misspelt name

    @property
    def attr(self) -> str | None:
        """The model attribute the option sets (None: its behaviour decides)."""
        if self.field is None:
            return None
        return self.field or self.name


#: What a group's ``finish`` is told: the options given (in table order), where each was given
#: ((file, line or None)), and the prefix a notice about it starts with.
@dataclass(frozen=True, slots=True)
class Given:
    names: list[str]
    where: Callable[[str], tuple[str | None, int | None]]
    notice_prefix: Callable[[str], str]


@dataclass(frozen=True, slots=True)
class OptionGroup:
    """The options of one part of midge, with the checks that need the whole file.

    ``finish(config, given)`` runs once the file is read (cross-option checks, building a
    backend's settings); ``settings`` makes the default of ``Config.<name>`` when the group
    keeps its values in a settings object of its own (``target``).
    """

    name: str
    options: tuple[Option, ...]
    finish: Callable[[Config, Given], None] | None = None
    settings: Callable[[], Any] | None = None
    finish_last: bool = False  # finish after the file's own checks (listeners, TLS), not before


#: The modules declaring an option group (each has a module-level ``GROUP``), in table order.
OPTION_MODULES = (
    "midge.config.table",
    "midge.auth.http_options",
    "midge.auth.oauth_options",
    "midge.auth.ldap_options",
    "midge.bridge.options",
)

_groups: tuple[OptionGroup, ...] | None = None
_by_name: dict[str, list[Option]] = {}


def groups() -> tuple[OptionGroup, ...]:
    """Every option group, importing the declaring modules on first use."""
    global _groups
    if _groups is None:
        found = tuple(importlib.import_module(m).GROUP for m in OPTION_MODULES)
        by_name: dict[str, list[Option]] = {}
        for group in found:
            for opt in group.options:
                by_name.setdefault(opt.name, []).append(opt)
        _by_name.clear()
        _by_name.update(by_name)
        _groups = found
    return _groups


def all_options() -> Iterator[Option]:
    for group in groups():
        yield from group.options


def named(name: str) -> list[Option]:
    """The entries called ``name`` (one, or two when the formats give it two meanings), else
    the prefix entries ``name`` starts with."""
    groups()
    exact = _by_name.get(name)
    if exact is not None:
        return exact
    return [o for o in all_options() if o.prefix and name.startswith(o.name) and name != o.name]


def group_settings(name: str) -> Any:
    """A fresh default settings object of the group called ``name`` (``Config.<name>``)."""
    for group in groups():
        if group.name == name and group.settings is not None:
            return group.settings()
    raise KeyError(name)


def names(fmt: str) -> list[str]:
    """Every supported option name of format ``fmt`` (for "did you mean"), then the unsupported."""
    supported = [
        o.name
        for o in all_options()
        if fmt in o.formats and o.kind != UNSUPPORTED and not o.prefix and o.suggest
    ]
    refused = [o.name for o in all_options() if o.kind == UNSUPPORTED and not o.prefix]
    return [*supported, *refused]
