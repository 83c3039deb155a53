"""``user``: a broker started as root runs as another user once its listeners are bound.

Mosquitto 2.0's ``drop_privileges`` (``src/mosquitto.c``): only when the effective user is root
and ``user`` names someone other than ``root``; an unknown user is an error, except Mosquitto's
own default ``mosquitto``, for which it falls back to ``nobody`` with a warning; then
``initgroups``, ``setgid``, ``setuid``, in that order (the groups and the group can only be
changed while still root). Still running as root afterwards gets a warning.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pwd

from midge.config import Config, ConfigError

log = logging.getLogger("midge.server")


#: Modules Python imports on first use that a running broker may still need (the pid file's
#: ascii codec, idna for host names): imported before the change, since the interpreter's own
#: files may not be readable by the new user (a Python installed under /root, for instance).
# Modules imported after start-up (on first use, or once the listeners are serving): imported
# while still root, since the interpreter's and the virtualenv's files may be out of the new
# user's reach (a pyenv under /root, say).
_LATE_IMPORTS = (
    "encodings.ascii",
    "encodings.idna",
    "encodings.latin_1",
    "sqlite3",
    "midge.bridge.bridge",
    "midge.client.websocket",
    "midge.transport.websocket",
    "midge.transport.interfaces",
    "midge.store.sqlite",
)
# Optional backends, imported only when installed.
_OPTIONAL_LATE_IMPORTS = ("ldap3", "ldap3.core.exceptions", "httpx", "jwt")


def _import_while_root() -> None:
    for module in _LATE_IMPORTS:
        importlib.import_module(module)
    for module in _OPTIONAL_LATE_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def drop_privileges(config: Config) -> str | None:
    """Become ``config.user`` when running as root; the name of the user now run as, or None
    when nothing changed. A ConfigError when the user does not exist or a call fails."""
    name = config.user
    if os.geteuid() != 0:
        if name:
            log.info("user %s: not started as root, nothing to change", name)
        return None
    if not name:
        return None
    if name == "root":
        log.warning("user root: midge keeps running as root (as Mosquitto, not recommended)")
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if name != "mosquitto":
            raise ConfigError(
                f"user: cannot run as '{name}': no such user; create it or name an existing one",
                config.source,
            ) from None
        log.warning("user mosquitto does not exist; running as 'nobody' instead (as Mosquitto)")
        try:
            entry = pwd.getpwnam("nobody")
        except KeyError:
            raise ConfigError(
                "user: neither 'mosquitto' nor 'nobody' exists", config.source
            ) from None
    _import_while_root()
    try:
        os.initgroups(entry.pw_name, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as exc:
        raise ConfigError(
            f"user: cannot run as '{entry.pw_name}': {exc.strerror or exc}", config.source
        ) from None
    log.info("running as user %s (uid %d, gid %d)", entry.pw_name, entry.pw_uid, entry.pw_gid)
    return entry.pw_name
