"""The LDAP backend's options (midge.auth.ldap): its part of the configuration table.

Every ``auth_ldap_*`` line is collected as read (option, value, file, line) into
``Config.auth_ldap_options``; once the file is read, :func:`finish` has
:func:`midge.auth.ldap.parse_settings` check them all together into ``Config.auth_ldap``.
Declared here, apart from the backend, so that reading a configuration file imports the backend
only when the file has ``auth_ldap_*`` options (see :mod:`midge.config.options`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from midge.config.options import COLLECT, GLOBAL, Given, Option, OptionGroup

if TYPE_CHECKING:
    from midge.config.model import Config


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
        from midge.auth.ldap import parse_settings  # the backend, only when it is configured

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
