"""Run a runnable example of docs/*.md as written: its configuration files (ports replaced by
free ones) and its shell block, line by line. ``midge broker ... &`` starts a :class:`ProcBroker`,
other ``... &`` lines start a background process whose output is collected, and the ``#   ``
comment lines after a command are output that must then appear (from any background process).
Each wait is bounded; everything started is stopped."""

from __future__ import annotations

import queue
import re
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.procbroker import ProcBroker

DOCS = Path(__file__).resolve().parents[1] / "docs"


def blocks(doc: str, section: str) -> list[str]:
    """The fenced blocks of ``## SECTION`` in docs/DOC (their info string, if any, kept)."""
    text = (DOCS / doc).read_text()
    part = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return part.split("```")[1::2]


def renumber(text: str, ports: dict[int, int]) -> str:
    """``text`` with each of the example's ports replaced by a free one."""
    for old, new in ports.items():
        text = re.sub(rf"(?<![\d.]){old}(?!\d)", str(new), text)
    return text


class Background:
    """A process started by a ``... &`` line; its stdout lines go to a shared queue."""

    def __init__(self, argv: list[str], cwd: Path, lines: queue.Queue[str]) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.thread = threading.Thread(target=self._read, args=(lines,), daemon=True)
        self.thread.start()

    def _read(self, lines: queue.Queue[str]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            lines.put(line.rstrip("\n"))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.thread.join(5)


class Shell:
    """What :func:`run_shell_block` ran: the brokers, and every output line seen."""

    def __init__(self) -> None:
        self.brokers: list[ProcBroker] = []
        self.seen: list[str] = []


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Wait (bounded) until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


@contextmanager
def run_shell_block(
    block: str,
    cwd: Path,
    ready: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
    timeout: float = 15.0,
) -> Iterator[Shell]:
    """Run ``block`` (see the module docstring). ``ready`` maps a background command's first
    word to a line its output shows once it is ready (a subscriber that has subscribed),
    ``ports`` to a port it listens on once ready: waited for before the next command."""
    ready = ready or {}
    ports = ports or {}
    shell = Shell()
    seen = shell.seen
    lines: queue.Queue[str] = queue.Queue()
    with ExitStack() as stack:
        commands = [line for line in block.splitlines() if line.strip()]
        for n, line in enumerate(commands):
            if line.startswith("#"):
                continue
            background = line.rstrip().endswith("&")
            argv = shlex.split(line.rstrip().rstrip("&"))
            if argv[:2] == ["midge", "broker"]:
                broker = ProcBroker(argv[2:], cwd=cwd)
                stack.callback(broker.close)
                broker.wait_listening()
                shell.brokers.append(broker)
            elif background:
                name = argv[0]
                marker = ready.get(name)
                if marker is not None and name.startswith("mosquitto_"):
                    # Its debug lines say when it has subscribed; line-buffered, to be seen
                    # at once through the pipe.
                    argv = ["stdbuf", "-oL", argv[0], "-d", *argv[1:]]
                bg = Background(argv, cwd, lines)
                stack.callback(bg.close)
                if marker is not None:
                    _expect(lines, seen, [marker], timeout, substring=True)
                if name in ports:
                    wait_port(ports[name], timeout)
            else:
                done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=30)
                assert done.returncode == 0, f"{line}: {done.stdout}{done.stderr}"
            expected = []
            for after in commands[n + 1 :]:
                if not after.startswith("#   "):
                    break
                expected.append(after[4:].strip())
            if expected and not background and argv[0] == "mosquitto_pub":
                # A publish that found no subscriber yet (a bridge still subscribing on the
                # other broker: the docs say to give it a moment) is published again, as its
                # reader would, until what it shows is printed (bounded by ``timeout``).
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        _expect(lines, seen, expected, min(2.0, deadline - time.monotonic()))
                        break
                    except AssertionError:
                        if time.monotonic() >= deadline:
                            raise
                    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=30)
                    assert done.returncode == 0, f"{line}: {done.stdout}{done.stderr}"
            elif expected:
                _expect(lines, seen, expected, timeout)
        yield shell


def _expect(
    lines: queue.Queue[str],
    seen: list[str],
    wanted: list[str],
    timeout: float,
    substring: bool = False,
) -> None:
    """Wait (bounded) until each of ``wanted`` is among the output lines."""
    deadline = time.monotonic() + timeout
    missing = list(wanted)

    def found(want: str) -> bool:
        return any((want in line) if substring else line == want for line in seen)

    missing = [w for w in missing if not found(w)]
    while missing:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never printed {missing}; printed {seen}"
        try:
            seen.append(lines.get(timeout=remaining))
        except queue.Empty:
            continue
        missing = [w for w in missing if not found(w)]
