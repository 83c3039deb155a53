"""Mosquitto password files: read them, check passwords against them, and write them.

The format is Mosquitto 2.0's (``src/password_mosq.c``, ``apps/mosquitto_passwd``): one
``USERNAME:HASH`` line per user, where HASH is

- ``$7$ITERATIONS$SALT$DIGEST``: PBKDF2-HMAC-SHA512 with ITERATIONS rounds (mosquitto_passwd's
  default is 101), a 12-byte SALT and a 64-byte DIGEST, both in standard base64 with padding;
- ``$6$SALT$DIGEST``: SHA-512 of the password followed by the salt (Mosquitto 1.6 and earlier).

midge writes ``$7$`` with 101 iterations, so ``mosquitto`` reads what ``midge passwd`` writes and
midge reads what ``mosquitto_passwd`` writes. Where Mosquitto skips a bad line with a log message
(and so silently locks a user out), midge refuses the file with ``FILE:LINE`` and the fix.
Passwords are compared in constant time (:func:`hmac.compare_digest`) and never logged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass

from midge.config import ConfigError, read_text_file

SALT_LEN = 12
DIGEST_LEN = 64
#: mosquitto_passwd's PW_DEFAULT_ITERATIONS.
DEFAULT_ITERATIONS = 101
MAX_FIELD = 65535


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """One user's hash: ``kind`` 7 (PBKDF2-SHA512) or 6 (salted SHA-512)."""

    kind: int
    iterations: int
    salt: bytes
    digest: bytes

    def verify(self, password: bytes) -> bool:
        """Whether ``password`` hashes to this digest (constant-time comparison)."""
        if self.kind == 6:
            candidate = hashlib.sha512(password + self.salt).digest()
        else:
            candidate = hashlib.pbkdf2_hmac(
                "sha512", password, self.salt, self.iterations, DIGEST_LEN
            )
        return hmac.compare_digest(candidate, self.digest)

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        if self.kind == 6:
            return f"$6${salt}${digest}"
        return f"$7${self.iterations}${salt}${digest}"


def hash_password(
    password: bytes, iterations: int = DEFAULT_ITERATIONS, kind: int = 7
) -> PasswordHash:
    """A new hash of ``password`` with a random salt, as mosquitto_passwd makes it."""
    salt = secrets.token_bytes(SALT_LEN)
    if kind == 6:
        return PasswordHash(6, 0, salt, hashlib.sha512(password + salt).digest())
    digest = hashlib.pbkdf2_hmac("sha512", password, salt, iterations, DIGEST_LEN)
    return PasswordHash(7, iterations, salt, digest)


class _BadHash(Exception):
    pass


def _b64(text: str, what: str, length: int) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _BadHash(f"the {what} is not valid base64") from None
    if len(data) != length:
        raise _BadHash(f"the {what} is {len(data)} bytes, expected {length}")
    return data


def parse_hash(text: str) -> PasswordHash:
    """Parse ``$7$...`` or ``$6$...``; raises ValueError with what is wrong."""
    try:
        return _parse_hash(text)
    except _BadHash as exc:
        raise ValueError(str(exc)) from None


def _parse_hash(text: str) -> PasswordHash:
    if not text.startswith("$"):
        raise _BadHash("plain")
    parts = text.split("$")
    # "$7$101$salt$hash" -> ["", "7", "101", "salt", "hash"]
    if parts[1] == "7":
        if len(parts) != 5:
            raise _BadHash("a $7$ hash has the form $7$ITERATIONS$SALT$HASH")
        if not parts[2].isdigit() or int(parts[2]) < 1:
            raise _BadHash(f"invalid iteration count '{parts[2]}': expected a number of 1 or more")
        iterations = int(parts[2])
        salt = _b64(parts[3], "salt", SALT_LEN)
        digest = _b64(parts[4], "hash", DIGEST_LEN)
        return PasswordHash(7, iterations, salt, digest)
    if parts[1] == "6":
        if len(parts) != 4:
            raise _BadHash("a $6$ hash has the form $6$SALT$HASH")
        return PasswordHash(6, 0, _b64(parts[2], "salt", SALT_LEN), _b64(parts[3], "hash", 64))
    raise _BadHash(
        f"unknown hash type '${parts[1]}$': expected $7$ (PBKDF2-SHA512) or $6$ (SHA-512)"
    )


@dataclass(slots=True)
class PasswordFile:
    """A parsed password file: username -> hash, and the line each came from."""

    path: str
    users: dict[str, PasswordHash]
    lines: dict[str, int]

    def check(self, username: str, password: bytes | None) -> bool:
        """Mosquitto's rule: the user must be in the file and the password must match; a
        zero-length password never does."""
        entry = self.users.get(username)
        if entry is None or not password:
            return False
        return entry.verify(password)


def load_password_file(path: str) -> PasswordFile:
    """Read a password file; any bad line is a :class:`ConfigError` naming ``path:line``."""
    return parse_password_file(read_text_file(path, "password file"), path)


def parse_password_file(text: str, path: str = "<string>") -> PasswordFile:
    users: dict[str, PasswordHash] = {}
    lines: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, rest = line.partition(":")
        username = username.strip()
        rest = rest.strip()
        if not sep:
            raise ConfigError(
                "expected USERNAME:HASH (no ':' on this line); create entries with "
                "'midge passwd FILE USERNAME' or mosquitto_passwd",
                path,
                lineno,
            )
        if not username:
            raise ConfigError("empty username before ':'", path, lineno)
        if len(username) > MAX_FIELD:
            raise ConfigError("username longer than 65535 characters", path, lineno)
        if not rest:
            raise ConfigError(
                f"no password hash for user '{username}'; set one with "
                f"'midge passwd {path} {username}'",
                path,
                lineno,
            )
        try:
            entry = _parse_hash(rest)
        except _BadHash as exc:
            if str(exc) == "plain":
                raise ConfigError(
                    f"the password of user '{username}' is not hashed; hash the file with "
                    f"'midge passwd -U {path}' (or mosquitto_passwd -U)",
                    path,
                    lineno,
                ) from None
            raise ConfigError(
                f"invalid password hash for user '{username}': {exc}; set the password again "
                f"with 'midge passwd {path} {username}'",
                path,
                lineno,
            ) from None
        if username in users:
            raise ConfigError(
                f"user '{username}' is defined twice (first at line {lines[username]}); "
                "keep only one line",
                path,
                lineno,
            )
        users[username] = entry
        lines[username] = lineno
    return PasswordFile(path, users, lines)


# ---------------------------------------------------------------------------------------------
# Writing (``midge passwd``)


def format_line(username: str, entry: PasswordHash) -> str:
    return f"{username}:{entry.encode()}\n"


def check_username(username: str) -> str | None:
    """mosquitto_passwd's rules for a username; the error message, or None if valid."""
    if len(username) > MAX_FIELD:
        return "Username must be less than 65536 characters long."
    if any(ord(c) < 32 or ord(c) == 127 for c in username):
        return "Username must not contain control characters."
    if ":" in username:
        return "Username must not contain the ':' character."
    return None


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename: a reader (a broker reloading on SIGHUP)
    sees the old file or the new one, never half of one. An existing file keeps its mode; a new
    one gets the umask's, as mosquitto_passwd creates it (a broker started as root reads it as
    the ``mosquitto`` user, so 0600 would lock it out)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=".midge-passwd-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _data_lines(text: str) -> list[tuple[str | None, str]]:
    """(username or None for comments/blank lines, the line with its newline)."""
    out: list[tuple[str | None, str]] = []
    for raw in text.splitlines(keepends=True):
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            out.append((None, raw if raw.endswith("\n") else raw + "\n"))
            continue
        out.append((line.partition(":")[0].strip(), raw if raw.endswith("\n") else raw + "\n"))
    return out


def set_user(text: str, username: str, entry: PasswordHash) -> str:
    """``text`` with ``username``'s line replaced (or appended)."""
    out: list[str] = []
    found = False
    for user, line in _data_lines(text):
        if user == username:
            if not found:
                out.append(format_line(username, entry))
            found = True
        else:
            out.append(line)
    if not found:
        out.append(format_line(username, entry))
    return "".join(out)


def delete_user(text: str, username: str) -> tuple[str, bool]:
    out: list[str] = []
    found = False
    for user, line in _data_lines(text):
        if user == username:
            found = True
        else:
            out.append(line)
    return "".join(out), found


def hash_plain_file(text: str, path: str, iterations: int, kind: int) -> str:
    """mosquitto_passwd -U: every ``user:password`` line gets its password hashed.

    Like mosquitto_passwd, every line is taken as plain text (running -U twice hashes the
    hashes); a line that is already a hash is refused instead, to save the operator that
    mistake."""
    out: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            out.append(raw + "\n")
            continue
        username, sep, password = line.partition(":")
        username, password = username.strip(), password.strip()
        if not sep or not username or not password:
            raise ConfigError("corrupt password file: expected USERNAME:PASSWORD", path, lineno)
        with contextlib.suppress(_BadHash):
            _parse_hash(password)
            raise ConfigError(
                f"the password of user '{username}' is already hashed; -U is for files of "
                "plain-text passwords",
                path,
                lineno,
            )
        out.append(format_line(username, hash_password(password.encode(), iterations, kind)))
    return "".join(out)
