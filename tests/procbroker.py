"""``midge broker`` as a real process, for tests of the command line and of process behaviour.

:class:`ProcBroker` starts ``python -m midge broker ARGS`` (or the ``midge`` console script), reads
its stdout and stderr in threads (so a chatty ``-v`` broker never blocks on a full pipe), waits
boundedly for its ``midge: listening on HOST:PORT (mqtt)`` lines and parses where it listens (with
``--port 0`` the line shows the port the system chose). :meth:`ProcBroker.stop` sends a signal and
waits for the exit status; :meth:`ProcBroker.close` kills whatever is still running. The process
runs in a session of its own, so signals sent to the test runner's terminal never reach it.

``midge broker`` keeps its state in ``./data`` by default (durable by default), so a broker started
here without ``cwd`` runs in a fresh temporary directory of its own (removed at :meth:`close`):
tests never write into the source tree, and parallel tests never share a data directory.

Nothing here sets ``PYTHONUNBUFFERED``: a supervisor reading the listener line from a pipe must get
it without help, so the tests must too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

#: The line ``midge broker`` prints once per listener when it accepts connections. An IPv6
#: address is shown in brackets.
LISTENING = re.compile(
    r"^midge: listening on (?P<host>\[[^\]]*\]|[^\s:]*):(?P<port>\d+) \((?P<protocol>[^)]+)\)$"
)

#: Wildcard addresses a client cannot connect to as such; tests reach them through loopback.
_WILDCARDS = {"", "*", "0.0.0.0", "::", "[::]"}

STARTUP_TIMEOUT = 15.0
EXIT_TIMEOUT = 10.0


def module_command() -> list[str]:
    """``python -m midge`` with the interpreter running the tests."""
    return [sys.executable, "-m", "midge"]


def script_command() -> list[str]:
    """The ``midge`` console script installed next to that interpreter (the venv's bin)."""
    script = Path(sys.executable).parent / "midge"
    assert script.exists(), f"no console script at {script}: is midge installed in this venv?"
    return [str(script)]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for configuration files that need a number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_midge(
    args: Sequence[str], command: Sequence[str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``midge ARGS`` to completion (``--help``, a bad configuration); killed at ``timeout``.

    It runs in a temporary directory, so a broker that starts writes no ./data here."""
    with tempfile.TemporaryDirectory(prefix="midge-run-") as cwd:
        return subprocess.run(
            [*(command or module_command()), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )


class Listener:
    """One parsed listener line."""

    def __init__(self, host: str, port: int, protocol: str) -> None:
        self.host = host
        self.port = port
        self.protocol = protocol

    @property
    def connect_host(self) -> str:
        """Where a local client connects: the address itself, or loopback for a wildcard."""
        if self.host in _WILDCARDS:
            return "127.0.0.1"
        return self.host.strip("[]")

    def __repr__(self) -> str:
        return f"Listener({self.host!r}, {self.port}, {self.protocol!r})"


class ProcBroker:
    """``midge broker ARGS`` in a subprocess; ``listeners`` is how many listener lines to await."""

    def __init__(
        self,
        args: Sequence[str] = ("--host", "127.0.0.1", "--port", "0"),
        *,
        command: Sequence[str] | None = None,
        listeners: int = 1,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        broker_subcommand: bool = True,
    ) -> None:
        self.argv = [*(command or module_command()), *(["broker"] if broker_subcommand else [])]
        self.argv += list(args)
        self.expected_listeners = listeners
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.listeners: list[Listener] = []
        self._cond = threading.Condition()
        #: The temporary working directory made when no ``cwd`` was given (removed at close).
        self.tmp_cwd: str | None = None
        if cwd is None:
            cwd = self.tmp_cwd = tempfile.mkdtemp(prefix="midge-proc-")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    # -- output ------------------------------------------------------------------------------

    def _read(self, pipe: IO[str], is_stdout: bool) -> None:
        for raw in pipe:
            line = raw.rstrip("\n")
            with self._cond:
                if is_stdout:
                    self.stdout_lines.append(line)
                    match = LISTENING.match(line)
                    if match:
                        self.listeners.append(
                            Listener(match["host"], int(match["port"]), match["protocol"])
                        )
                else:
                    self.stderr_lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def stdout(self) -> str:
        with self._cond:
            return "\n".join(self.stdout_lines)

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.stderr_lines)

    def describe(self) -> str:
        """Command, status and output, for assertion messages."""
        return (
            f"{' '.join(self.argv)} (exit status {self.proc.poll()})\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )

    def wait_output(self, text: str, timeout: float = 5.0) -> bool:
        """Wait until ``text`` appears in stdout or stderr; False at timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if any(text in line for line in self.stdout_lines + self.stderr_lines):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))

    # -- lifecycle ---------------------------------------------------------------------------

    def wait_listening(self, timeout: float = STARTUP_TIMEOUT) -> list[Listener]:
        """Wait for the expected number of listener lines; fails (and kills) if the process exits
        or the time runs out first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.listeners) < self.expected_listeners:
                if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.1))
            ready = len(self.listeners) >= self.expected_listeners
        if not ready:
            self.close()
            raise AssertionError(
                f"expected {self.expected_listeners} listener line(s) within {timeout}s:\n"
                + self.describe()
            )
        return list(self.listeners)

    @property
    def host(self) -> str:
        return self.listeners[0].connect_host

    @property
    def port(self) -> int:
        return self.listeners[0].port

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = EXIT_TIMEOUT) -> int:
        """Send ``sig`` and return the exit status; fails (and kills) if it does not exit."""
        self.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(
                f"still running {timeout}s after signal {sig}:\n{self.describe()}"
            ) from None
        for reader in self._readers:
            reader.join(5)
        return code

    def close(self) -> None:
        """Kill it if it still runs (its whole session), reap it, close the pipes."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        for reader in self._readers:
            reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        if self.tmp_cwd is not None:
            shutil.rmtree(self.tmp_cwd, ignore_errors=True)
            self.tmp_cwd = None

    def __enter__(self) -> ProcBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
