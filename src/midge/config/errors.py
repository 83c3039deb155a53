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


class BadValue(Exception):
    """A value problem found by a checker; the reader adds the file, line and option name."""
