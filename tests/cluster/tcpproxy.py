"""A TCP proxy the test controls, between a node and Redis: :meth:`TcpProxy.cut` breaks every
connection through it and refuses new ones (a partition), :meth:`TcpProxy.heal` lets them in
again. With ``delay``, what Redis answers reaches the node that many seconds late (a slower
link: the node's writes take that long to be known durable). Threads, loopback only;
:meth:`close` stops everything it started."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self._cut = threading.Event()
        self._dropping = threading.Event()
        self._drop_after: bytes | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst, delay, answers in (
                (client, upstream, 0.0, False),
                (upstream, client, self.delay, True),
            ):
                thread = threading.Thread(
                    target=self._pump, args=(src, dst, delay, answers), daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float, answers: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self._cut.is_set():
                    break
                if answers and self._dropping.is_set():
                    continue
                after = self._drop_after
                if not answers and after is not None and after in data:
                    self._dropping.set()  # before it reaches the server: its answer is dropped
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Break every connection through the proxy; refuse new ones until :meth:`heal`."""
        self._cut.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def drop_answers(self, after: bytes | None = None) -> None:
        """Pass on what clients send, but not what the server answers, until :meth:`heal`: a
        command runs, and the client does not know it did (as when a connection breaks after
        the server ran it). With ``after``, from the first request that holds those bytes."""
        if after is None:
            self._dropping.set()
        else:
            self._drop_after = after

    def heal(self) -> None:
        self._cut.clear()
        self._dropping.clear()
        self._drop_after = None

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()
        self._accepter.join(2)
        for thread in self._threads:
            thread.join(2)
