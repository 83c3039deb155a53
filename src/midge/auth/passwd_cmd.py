"""``midge passwd``: mosquitto_passwd's command line, writing files both brokers read.

Usage (the same as mosquitto_passwd 2.0)::

    midge passwd [-H sha512 | -H sha512-pbkdf2] [-I ITERATIONS] [-c | -D] FILE USERNAME
    midge passwd [-H sha512 | -H sha512-pbkdf2] [-I ITERATIONS] [-c] -b FILE USERNAME PASSWORD
    midge passwd -U FILE

Without ``-b`` the password is read twice from the terminal (getpass), never from arguments that
``ps`` would show. The file is rewritten in one rename, so a broker reloading it on SIGHUP never
reads half a file.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence

from midge.auth.passwd import (
    DEFAULT_ITERATIONS,
    MAX_FIELD,
    check_username,
    delete_user,
    hash_password,
    hash_plain_file,
    set_user,
    write_atomically,
)
from midge.config import ConfigError

USAGE = """\
midge passwd manages password files for midge and mosquitto (the same format).

Usage: midge passwd [-H sha512 | -H sha512-pbkdf2] [-c | -D] passwordfile username
       midge passwd [-H sha512 | -H sha512-pbkdf2] [-c] -b passwordfile username password
       midge passwd -U passwordfile
 -b : run in batch mode to allow passing passwords on the command line.
 -c : create a new password file. This will overwrite existing files.
 -D : delete the username rather than adding/updating its password.
 -H : specify the hashing algorithm. Defaults to sha512-pbkdf2, which is recommended.
 -I : number of PBKDF2 iterations (default 101, as mosquitto_passwd).
 -U : update a plain text password file to use hashed passwords.
"""


def _err(message: str) -> int:
    print(f"Error: {message}", file=sys.stderr)
    return 1


def _ask() -> str | None:
    try:
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Reenter password: ")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return None
    if first != second:
        print("Error: Passwords do not match.", file=sys.stderr)
        return None
    if not first:
        print("Error: Empty password.", file=sys.stderr)
        return None
    return first


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 1
    kind = 7
    iterations = DEFAULT_ITERATIONS
    batch = create = delete = update = False
    idx = 0
    while idx < len(args):
        a = args[idx]
        if a == "-H":
            if idx + 1 == len(args):
                return _err("-H argument given but not enough other arguments.")
            if args[idx + 1] == "sha512":
                kind = 6
            elif args[idx + 1] == "sha512-pbkdf2":
                kind = 7
            else:
                return _err(f"Unknown hash type '{args[idx + 1]}'")
            idx += 2
            continue
        if a == "-I":
            if idx + 1 == len(args):
                return _err("-I argument given but not enough other arguments.")
            value = args[idx + 1]
            if not value.isdigit() or int(value) < 1:
                return _err("Number of iterations must be > 0.")
            iterations = int(value)
            idx += 2
            continue
        if a == "-b":
            batch = True
        elif a == "-c":
            create = True
        elif a == "-D":
            delete = True
        elif a == "-U":
            update = True
        else:
            break
        idx += 1
    rest = args[idx:]
    if create and delete:
        return _err("-c and -D cannot be used together.")
    if create and update:
        return _err("-c and -U cannot be used together.")
    if delete and update:
        return _err("-D and -U cannot be used together.")
    if delete and batch:
        return _err("-b and -D cannot be used together.")
    password: str | None = None
    username: str | None = None
    if update:
        if len(rest) != 1:
            return _err("-U argument given but password file missing.")
        path = rest[0]
    elif batch:
        if len(rest) != 3:
            if create:
                return _err("-c argument given but password file, username, or password missing.")
            print(USAGE, end="", file=sys.stderr)
            return 1
        path, username, password = rest
    else:
        if len(rest) != 2:
            if create:
                return _err("-c argument given but password file or username missing.")
            if delete:
                return _err("-D argument given but password file or username missing.")
            print(USAGE, end="", file=sys.stderr)
            return 1
        path, username = rest
    if username is not None:
        problem = check_username(username)
        if problem:
            return _err(problem)
    if password is not None and len(password) > MAX_FIELD:
        return _err("Password must be less than 65536 characters long.")
    try:
        return _run(path, username, password, create, delete, update, iterations, kind)
    except ConfigError as exc:
        return _err(str(exc))
    except OSError as exc:
        return _err(f"Unable to write password file {path}. {exc.strerror or exc}.")


def _run(
    path: str,
    username: str | None,
    password: str | None,
    create: bool,
    delete: bool,
    update: bool,
    iterations: int,
    kind: int,
) -> int:
    if create:
        assert username is not None
        if password is None:
            password = _ask()
            if password is None:
                return 1
        entry = hash_password(password.encode("utf-8"), iterations, kind)
        write_atomically(path, set_user("", username, entry))
        return 0
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        return _err(f"Unable to open password file {path}. {exc.strerror}.")
    except UnicodeDecodeError:
        return _err(f"Password file {path} is not valid UTF-8.")
    if update:
        write_atomically(path, hash_plain_file(text, path, iterations, kind))
        return 0
    assert username is not None
    if delete:
        new, found = delete_user(text, username)
        if not found:
            print(f"Warning: User {username} not found in password file.", file=sys.stderr)
            return 1
        write_atomically(path, new)
        return 0
    if password is None:
        password = _ask()
        if password is None:
            return 1
    entry = hash_password(password.encode("utf-8"), iterations, kind)
    write_atomically(path, set_user(text, username, entry))
    return 0
