"""The options of the Python-plugin and HTTP backends (midge.auth.plugin, midge.auth.http),
and the decision cache they share: their part of the configuration table.

Declared here, apart from the backends, so that reading a configuration file never imports a
backend (see :mod:`midge.config.options`).
"""

from __future__ import annotations

from midge.config import checks
from midge.config.options import CONF, GLOBAL, RAW, SECONDS, TABLE, TOML, WORD, Option, OptionGroup

GROUP = OptionGroup(
    "auth_http",
    (
        Option(
            "auth_python",
            GLOBAL,
            WORD,
            "A Python plugin deciding authentication and authorization "
            "([security.md](security.md#plugins-authentication-and-authorization-in-python)).",
            "backends",
            once=True,
            syntax="`auth_python MODULE:FACTORY` (or an entry point name of group `midge.auth`)",
            default_doc="none",
        ),
        Option(
            "auth_python_opt_",
            GLOBAL,
            RAW,
            "Options given to the plugin's factory.",
            "backends",
            field="auth_python_options",
            default={},
            formats=(CONF,),
            prefix=True,
            syntax="`auth_python_opt_NAME VALUE` (TOML: `[auth_python_options]` table)",
            default_doc="none",
            apply="python_opt",
        ),
        Option(
            "auth_python_options",
            GLOBAL,
            TABLE,
            "",
            "backends",
            default={},
            formats=(TOML,),
            row_of="auth_python_opt_",
            apply="python_options",
        ),
        Option(
            "auth_http_url",
            GLOBAL,
            WORD,
            "The HTTP backend: POST to `URL/auth` and `URL/acl` "
            "([security.md](security.md#http-backend)).",
            "backends",
            once=True,
            check=checks.http_url,
            syntax="`auth_http_url URL`",
            default_doc="none",
        ),
        Option(
            "auth_http_timeout",
            GLOBAL,
            SECONDS,
            "How long a plugin or the HTTP service may take to answer; then the client is refused.",
            "backends",
            default=5.0,
            default_doc="5",
            check=checks.positive_seconds,
        ),
        Option(
            "auth_cache_ttl",
            GLOBAL,
            SECONDS,
            "How long authorization answers are kept (0 or more); for LDAP also how long a "
            "user's groups are kept, for OAuth introspection how long its answers are kept.",
            "backends",
            default=60.0,
            default_doc="60",
            check=checks.seconds_or_zero,
        ),
    ),
)
