"""One real mosquitto per configuration, shared by every differential scenario of the session."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.differential.harness import mosquitto

#: The users of the password file ``{files}/passwd``: name -> password.
USERS = {"alice": "secret", "bob": "hunter2"}

#: ``{files}/acl``: anonymous clients, then alice (``+`` is a scenario's prefix).
ACL = """\
topic readwrite +/open/#
topic read +/ro/#
topic write +/wo/#

user alice
topic readwrite +/open/#
topic readwrite +/alice/#
topic read +/ro/#
"""


def conf_lines(conf: tuple[str, ...], files: Path) -> tuple[list[str], list[str]]:
    """(global lines before ``listener``, lines after it) with ``{files}`` filled in."""
    lines = [line.replace("{files}", str(files)) for line in conf]
    first = [line for line in lines if line.startswith("per_listener_settings")]
    return first, [line for line in lines if line not in first]


class Pool:
    """Starts the real mosquitto once per configuration, on first use."""

    def __init__(self, stack: contextlib.ExitStack, files: Path) -> None:
        self.stack = stack
        self.files = files
        self.ports: dict[tuple[str, ...], int] = {}

    def port(self, conf: tuple[str, ...]) -> int:
        if conf not in self.ports:
            first, rest = conf_lines(conf, self.files)
            self.ports[conf] = self.stack.enter_context(mosquitto(rest, before=first))
        return self.ports[conf]

    def text(self, conf: tuple[str, ...], port: int) -> str:
        """The mosquitto.conf both brokers read."""
        first, rest = conf_lines(conf, self.files)
        return "\n".join([*first, f"listener {port} 127.0.0.1", *rest]) + "\n"


@pytest.fixture(scope="session")
def mosquitto_pool() -> Iterator[Pool]:
    files = Path(tempfile.mkdtemp(prefix="midge-diff-files-"))
    os.chmod(files, 0o755)
    try:
        passwd = files / "passwd"
        passwd.touch()
        for user, password in USERS.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
        (files / "acl").write_text(ACL)
        for name in ("passwd", "acl"):
            os.chmod(files / name, 0o644)
        with contextlib.ExitStack() as stack:
            yield Pool(stack, files)
    finally:
        shutil.rmtree(files, ignore_errors=True)
