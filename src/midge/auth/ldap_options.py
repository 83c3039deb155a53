"""The LDAP backend's options (midge.auth.ldap): its part of the configuration table.

Every ``auth_ldap_*`` line is collected as read (option, value, file, line) into
``Config.auth_ldap_options``; once the file is read, :func:`finish` has :func:`parse_settings`
check them all together into ``Config.auth_ldap`` (:class:`LdapSettings`, which the backend
uses). Declared here, apart from the backend, so that reading a configuration file never imports
the backend (see :mod:`midge.config.options`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from midge.config.errors import ConfigError
from midge.config.options import COLLECT, GLOBAL, Given, Option, OptionGroup

if TYPE_CHECKING:
    from midge.config.model import Config

#: Access words of ``auth_ldap_group_rule``, as in Mosquitto's ACL files.
ACCESS = {"read": 1, "write": 2, "readwrite": 3, "deny": 0}
READ, WRITE = 1, 2
DEFAULT_GROUP_FILTER = "(|(member=%d)(uniqueMember=%d)(memberUid=%u))"
#: (option, value, file, line) as the configuration readers collect them.
RawOption = tuple[str, str, str | None, int | None]


@dataclass(slots=True)
class GroupRule:
    group: str  # normalized: a lower-case name, a normalized DN, or "*"
    access: int  # READ | WRITE bits; 0 = deny
    topic: str  # a topic filter, maybe with %u / %c
    pattern: bool  # has %u or %c


@dataclass(slots=True)
class LdapSettings:
    """The ``auth_ldap_*`` options, checked."""

    urls: list[str] = field(default_factory=list)
    bind_dn: str | None = None
    search_base: str | None = None
    search_filter: str = "(uid=%u)"
    service_dn: str | None = None
    service_password: str | None = field(default=None, repr=False)  # never in logs
    group_base: str | None = None
    group_filter: str = DEFAULT_GROUP_FILTER
    group_attribute: str = "cn"
    rules: list[GroupRule] = field(default_factory=list)
    start_tls: bool = False
    ca_file: str | None = None
    timeout: float = 5.0
    pool_size: int = 4


def normalize_dn(dn: str) -> str:
    """A DN in a form for comparing: lower case, no spaces around ``,`` ``=`` and ``+``."""
    parts = []
    for rdn in dn.split(","):
        parts.append(
            "+".join("=".join(s.strip() for s in av.split("=", 1)) for av in rdn.split("+"))
        )
    return ",".join(parts).lower()


def _rule(value: str) -> GroupRule:
    """``GROUP ACCESS FILTER`` (GROUP may be double-quoted when it has spaces)."""
    text = value.strip()
    if text.startswith('"'):
        end = text.find('"', 1)
        if end < 0:
            raise ValueError('the group name has no closing "')
        group, rest = text[1:end], text[end + 1 :].strip()
    else:
        group, _, rest = text.partition(" ")
        rest = rest.strip()
    access_word, _, topic = rest.partition(" ")
    topic = topic.strip()
    if not group or not access_word or not topic:
        raise ValueError(
            "expected GROUP ACCESS FILTER, e.g. 'sensors readwrite sensors/%u/#' "
            "(GROUP: a group name, a group DN or *)"
        )
    if access_word not in ACCESS:
        raise ValueError(f"invalid access '{access_word}': expected read, write, readwrite or deny")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or (
            "#" in level and (level != "#" or i < len(levels) - 1)
        ):
            raise ValueError(
                f"invalid topic filter '{topic}': + and # must fill a whole level, # only the last"
            )
    name = "*" if group == "*" else normalize_dn(group) if "=" in group else group.lower()
    return GroupRule(name, ACCESS[access_word], topic, "%u" in topic or "%c" in topic)


def parse_settings(raw: list[RawOption]) -> LdapSettings:
    """Check the ``auth_ldap_*`` options; a :class:`ConfigError` names the file, line and fix."""
    settings = LdapSettings()
    seen: dict[str, tuple[str | None, int | None]] = {}
    first: tuple[str | None, int | None] = (raw[0][2], raw[0][3]) if raw else (None, None)
    for name, value, path, line in raw:

        def bad(
            message: str, name: str = name, path: str | None = path, line: int | None = line
        ) -> ConfigError:
            return ConfigError(f"{name}: {message}", path, line)

        if name not in NAMES:
            raise ConfigError(
                f"unknown option '{name}' (LDAP options: {', '.join(NAMES)})", path, line
            )
        value = value.strip()
        if not value:
            raise bad("missing value")
        if name in seen and name not in REPEATABLE:
            where = seen[name]
            raise bad(f"given twice (first at {where[0]}:{where[1]}); keep one")
        seen[name] = (path, line)
        if name == "auth_ldap_url":
            for url in value.split():
                if not url.startswith(("ldap://", "ldaps://")):
                    raise bad(f"invalid URL '{url}': expected ldap://HOST[:PORT] or ldaps://...")
                settings.urls.append(url)
        elif name == "auth_ldap_group_rule":
            try:
                settings.rules.append(_rule(value))
            except ValueError as exc:
                raise bad(str(exc)) from None
        elif name == "auth_ldap_start_tls":
            if value not in ("true", "false"):
                raise bad(f"invalid value '{value}': expected true or false")
            settings.start_tls = value == "true"
        elif name == "auth_ldap_timeout":
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not 0 < number < 3600:
                raise bad(f"invalid value '{value}': expected a number of seconds above 0")
            settings.timeout = number
        elif name == "auth_ldap_pool_size":
            if not value.isdigit() or not 1 <= int(value) <= 100:
                raise bad(f"invalid value '{value}': expected a whole number 1..100")
            settings.pool_size = int(value)
        elif name == "auth_ldap_ca_file":
            if not os.path.isfile(value) or not os.access(value, os.R_OK):
                raise bad(f"cannot read CA file '{value}'; give the path of a PEM file")
            settings.ca_file = value
        elif name in ("auth_ldap_search_filter", "auth_ldap_group_filter"):
            if not (value.startswith("(") and value.endswith(")")):
                raise bad(f"invalid filter '{value}': an LDAP filter is in parentheses")
            setattr(settings, name[len("auth_ldap_") :], value)
        else:
            setattr(settings, name[len("auth_ldap_") :], value)

    if not raw:
        return settings
    if not settings.urls:
        raise ConfigError(
            "the auth_ldap_* options need auth_ldap_url ldap://HOST (or ldaps://HOST)", *first
        )
    where = seen.get("auth_ldap_bind_dn") or seen.get("auth_ldap_search_base") or first
    if settings.bind_dn and settings.search_base:
        raise ConfigError(
            "auth_ldap_bind_dn and auth_ldap_search_base: give one (direct bind as a DN "
            "template, or search then bind)",
            *where,
        )
    if not settings.bind_dn and not settings.search_base:
        raise ConfigError(
            "LDAP needs auth_ldap_bind_dn (e.g. uid=%u,ou=people,dc=example,dc=org) or "
            "auth_ldap_search_base (search then bind)",
            *first,
        )
    if settings.bind_dn and "%u" not in settings.bind_dn:
        raise ConfigError(
            "auth_ldap_bind_dn: the DN template must contain %u (the user name)",
            *seen["auth_ldap_bind_dn"],
        )
    if settings.search_base and "%u" not in settings.search_filter:
        raise ConfigError(
            "auth_ldap_search_filter: the filter must contain %u (the user name)",
            *seen.get("auth_ldap_search_filter", where),
        )
    if (settings.service_dn is None) != (settings.service_password is None):
        raise ConfigError(
            "auth_ldap_service_dn and auth_ldap_service_password go together; give both",
            *(seen.get("auth_ldap_service_dn") or seen["auth_ldap_service_password"]),
        )
    if settings.rules and not settings.group_base:
        raise ConfigError(
            "auth_ldap_group_rule needs auth_ldap_group_base (where the groups are)",
            *seen["auth_ldap_group_rule"],
        )
    if settings.start_tls and any(u.startswith("ldaps://") for u in settings.urls):
        raise ConfigError(
            "auth_ldap_start_tls true with an ldaps:// URL: use one or the other",
            *seen["auth_ldap_start_tls"],
        )
    return settings


def _ldap(
    name: str, syntax: str, doc: str, default: str = "none", row_of: str | None = None
) -> Option:
    return Option(
        name,
        GLOBAL,
        COLLECT,
        doc,
        "backends",
        field="auth_ldap_options",
        default=[],
        syntax=syntax,
        default_doc=default,
        row_of=row_of,
    )


OPTIONS = (
    _ldap(
        "auth_ldap_url",
        "`auth_ldap_url URL [URL...]` (repeatable; TOML: a string or an array)",
        "The LDAP backend: `ldap://HOST[:PORT]` or `ldaps://...`, tried in order "
        "([security.md](security.md#ldap-backend)).",
    ),
    _ldap(
        "auth_ldap_bind_dn",
        "`auth_ldap_bind_dn TEMPLATE`",
        "Direct bind: the user's DN, `%u` the user name (e.g. "
        "`uid=%u,ou=people,dc=example,dc=org`).",
    ),
    _ldap(
        "auth_ldap_search_base",
        "`auth_ldap_search_base DN`",
        "Search then bind: where users are searched (instead of `auth_ldap_bind_dn`).",
    ),
    _ldap(
        "auth_ldap_search_filter",
        "`auth_ldap_search_filter FILTER`",
        "The search for the user's entry.",
        "`(uid=%u)`",
    ),
    _ldap(
        "auth_ldap_service_dn",
        "`auth_ldap_service_dn DN`, `auth_ldap_service_password PASSWORD`",
        "The account that searches (users and groups).",
        "none (anonymous)",
    ),
    _ldap("auth_ldap_service_password", "", "", row_of="auth_ldap_service_dn"),
    _ldap(
        "auth_ldap_group_base",
        "`auth_ldap_group_base DN`",
        "Where groups are searched (needed by group rules).",
    ),
    _ldap(
        "auth_ldap_group_filter",
        "`auth_ldap_group_filter FILTER`",
        "The groups of a user: `%d` the user's DN, `%u` the user name.",
        "`(\\|(member=%d)(uniqueMember=%d)(memberUid=%u))`",
    ),
    _ldap(
        "auth_ldap_group_attribute",
        "`auth_ldap_group_attribute ATTR`",
        "The attribute that names a group in rules.",
        "`cn`",
    ),
    _ldap(
        "auth_ldap_group_rule",
        "`auth_ldap_group_rule GROUP ACCESS FILTER` (repeatable; TOML: an array)",
        "`read`, `write`, `readwrite` or `deny` on a topic filter (`%u`, `%c`) for a group name, "
        "a group DN or `*`.",
    ),
    _ldap(
        "auth_ldap_start_tls",
        "`auth_ldap_start_tls true\\|false`",
        "StartTLS on `ldap://` URLs.",
        "false",
    ),
    _ldap(
        "auth_ldap_ca_file",
        "`auth_ldap_ca_file PATH`",
        "The CA certificates (PEM) that the directory's certificate is checked against.",
        "the system's CAs",
    ),
    _ldap(
        "auth_ldap_timeout",
        "`auth_ldap_timeout SECONDS`",
        "Connect and read timeout for each LDAP call.",
        "5",
    ),
    _ldap(
        "auth_ldap_pool_size",
        "`auth_ldap_pool_size N`",
        "Connections kept open, and LDAP calls at once (1..100).",
        "4",
    ),
)

#: The ``auth_ldap_*`` option names, in table order.
NAMES: tuple[str, ...] = tuple(o.name for o in OPTIONS)
#: Options that may be given more than once.
REPEATABLE = ("auth_ldap_url", "auth_ldap_group_rule")


def finish(config: Config, given: Given) -> None:
    """Check the ``auth_ldap_*`` lines together (midge.auth.ldap) once the file is read."""
    if config.auth_ldap_options:
        config.auth_ldap = parse_settings(config.auth_ldap_options)


GROUP = OptionGroup(
    "auth_ldap",
    (
        *OPTIONS,
        # Any other auth_ldap_* name is collected too, so that parse_settings refuses it with the
        # list of the LDAP options.
        Option(
            "auth_ldap_",
            GLOBAL,
            COLLECT,
            "",
            "backends",
            field="auth_ldap_options",
            default=[],
            prefix=True,
            row_of="auth_ldap_url",
        ),
    ),
    finish=finish,
    finish_last=True,
)
