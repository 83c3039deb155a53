"""``midge scram``: add, update and delete users in a scram_file (see :mod:`midge.auth.scram`).

Modelled on ``mosquitto_passwd``::

    midge scram [-c] [-m MECH]... [-I N] FILE USER        # password asked twice on the terminal
    midge scram -b [-c] [-m MECH]... [-I N] FILE USER PASSWORD
    midge scram -D [-m MECH]... FILE USER

By default a user gets one line per mechanism (SCRAM-SHA-256 and SCRAM-SHA-512), so clients can
use either. The file keeps its other lines (and comments) in order; it is replaced atomically and
created with mode 0600. Without a terminal the password is the first line of standard input.

:func:`add_parser` and :func:`run` are what ``midge``'s command line calls; :func:`set_user` and
:func:`delete_user` are the same operations for other code.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
import tempfile

from midge.auth.scram import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    MECHANISMS,
    check_username,
    make_credential,
    parse_scram_file,
)
from midge.config import ConfigError

#: RFC 7677 5: the iteration count SHOULD be at least 4096.
MIN_ITERATIONS = 4096


class ScramFileError(Exception):
    """A problem to report to the operator (the message says what to do)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "scram",
        help="manage SCRAM users (scram_file) for MQTT 5 enhanced authentication",
        description="Add, update or delete a user in a scram_file (SCRAM-SHA-256/-512 "
        "credentials for MQTT 5 enhanced authentication). Options as in mosquitto_passwd.",
    )
    p.add_argument("-c", dest="create", action="store_true", help="create (or overwrite) FILE")
    p.add_argument("-D", dest="delete", action="store_true", help="delete USER from FILE")
    p.add_argument(
        "-b", dest="batch", action="store_true", help="take PASSWORD from the command line"
    )
    p.add_argument(
        "-m",
        "--mechanism",
        dest="mechanisms",
        action="append",
        choices=list(MECHANISMS),
        metavar="MECH",
        help="SCRAM-SHA-256 or SCRAM-SHA-512 (repeatable; default both)",
    )
    p.add_argument(
        "-I",
        "--iterations",
        dest="iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        metavar="N",
        help=f"PBKDF2 iteration count (default {DEFAULT_ITERATIONS}, at least {MIN_ITERATIONS})",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("username", metavar="USER")
    p.add_argument("password", metavar="PASSWORD", nargs="?")


def run(args: argparse.Namespace) -> int:
    """Run ``midge scram`` with parsed ``args``: 0 on success, 1 with a message on stderr."""
    try:
        mechanisms = list(dict.fromkeys(args.mechanisms or MECHANISMS))
        if args.delete:
            if args.create or args.batch or args.password is not None:
                raise ScramFileError("-D takes only FILE and USER (and -m)")
            delete_user(args.file, args.username, mechanisms)
            return 0
        if args.password is not None and not args.batch:
            raise ScramFileError("a PASSWORD argument needs -b")
        if args.batch and args.password is None:
            raise ScramFileError("-b needs a PASSWORD argument")
        password = args.password if args.batch else _read_password()
        set_user(args.file, args.username, password, mechanisms, args.iterations, args.create)
    except ScramFileError as exc:
        print(f"midge scram: error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"midge scram: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _read_password() -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    try:
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Reenter password: ")
    except (EOFError, KeyboardInterrupt):
        raise ScramFileError("no password given") from None
    if first != second:
        raise ScramFileError("passwords do not match")
    return first


def _read_lines(path: str) -> list[str]:
    """The file's lines, after checking that it parses (its errors name file and line)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ScramFileError(f"{path} does not exist (use -c to create it)") from None
    except OSError as exc:
        raise ScramFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ScramFileError(f"{path} is not valid UTF-8") from None
    parse_scram_file(text, path)
    return text.splitlines()


def _line_user_mech(line: str) -> tuple[str, str] | None:
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    user, _, verifier = line.partition(":")
    return user, verifier.strip().split("$", 1)[0]


def _write_lines(path: str, lines: list[str]) -> None:
    """Replace ``path`` atomically; a new file is private (0600), an existing one keeps its mode."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    try:
        fd, tmp = tempfile.mkstemp(prefix=".scram-", dir=directory)
    except OSError as exc:
        raise ScramFileError(f"cannot write in {directory}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ScramFileError(f"cannot write {path}: {exc.strerror or exc}") from None


def set_user(
    path: str,
    username: str,
    password: str,
    mechanisms: list[str] | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    create: bool = False,
) -> None:
    """Add or update ``username`` in the scram_file at ``path`` (``create``: start a new file)."""
    why = check_username(username)
    if why is not None:
        raise ScramFileError(why)
    if not password:
        raise ScramFileError("empty password")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ScramFileError(
            f"iteration count {iterations} out of range {MIN_ITERATIONS}..{MAX_ITERATIONS}"
        )
    mechanisms = mechanisms or list(MECHANISMS)
    lines = [] if create else _read_lines(path)
    new = {
        mech: f"{username}:{make_credential(mech, password, iterations).encode()}"
        for mech in mechanisms
    }
    out: list[str] = []
    for line in lines:
        key = _line_user_mech(line)
        if key is not None and key[0] == username and key[1] in new:
            out.append(new.pop(key[1]))  # updated in place
        else:
            out.append(line)
    out.extend(new.values())
    _write_lines(path, out)


def delete_user(path: str, username: str, mechanisms: list[str] | None = None) -> None:
    """Remove ``username``'s lines (for ``mechanisms``, default all) from the scram_file."""
    mechanisms = mechanisms or list(MECHANISMS)
    lines = _read_lines(path)
    out = []
    for line in lines:
        key = _line_user_mech(line)
        if key is not None and key[0] == username and key[1] in mechanisms:
            continue
        out.append(line)
    if len(out) == len(lines):
        raise ScramFileError(f"user '{username}' not found in {path}")
    _write_lines(path, out)
