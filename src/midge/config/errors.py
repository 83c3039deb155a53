"""The one exception of configuration reading, and the value problem the readers turn into it."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem, with the file and line it comes from and how to fix it."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.message = message
        self.path = path
        self.line = line


def read_text_file(path: str, what: str) -> str:
    """The text of the file that ``what`` names ("password file", ...), read as UTF-8; a
    missing, unreadable or non-UTF-8 file is a :class:`ConfigError` naming it and the fix."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except IsADirectoryError:
        raise ConfigError(f"cannot read {what}: it is a directory", path) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what}: {exc.strerror or exc}; check the path and its permissions", path
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} is not valid UTF-8 (byte {exc.start}); save it as UTF-8", path
        ) from None


class BadValue(Exception):
    """A value problem found by a checker; the reader adds the file, line and option name."""
