"""The fuzz rig itself: it must notice a broken broker, or a green fuzz run proves nothing.

Each test breaks the running broker on purpose (a method patched to raise, or to do nothing) and
checks that :meth:`tests.fuzz.harness.Rig.example` fails and names the problem.
"""

from __future__ import annotations

import pytest

import midge.broker.connection
from midge.broker.connection import Connection
from midge.codec.packets import Publish
from tests.fuzz.harness import Rig, read_to_eof

# The planted bugs patch broker methods, which a mypyc-compiled build does not allow; the
# pure-Python run of the suite (make test-pure) checks the rig.
pytestmark = pytest.mark.skipif(
    not midge.broker.connection.__file__.endswith(".py"),
    reason="patches the pure-Python broker; the compiled build's classes are native",
)


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("planted bug")


def test_an_internal_error_fails_the_example(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Connection's ``log.exception("internal error ...")`` is caught by the error log."""
    with (
        pytest.raises(AssertionError, match=r"internal error(.|\n)*planted bug"),
        rig.example(),
    ):
        client, _ = rig.connected(4)
        monkeypatch.setattr(Connection, "_on_publish", _boom)
        client.send(Publish("t", b"x"))
        read_to_eof(client)  # the broker closes the connection it could not serve
        monkeypatch.undo()
    rig.check_healthy()


def test_an_error_escaping_to_the_event_loop_fails_the_example(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception raised to asyncio (here from the protocol's ``eof_received``) is logged by
    the event loop ("Fatal error: protocol.eof_received() call failed"): caught too."""
    with pytest.raises(AssertionError, match="planted bug"), rig.example():
        client, _ = rig.connected(4)
        monkeypatch.setattr(Connection, "eof_received", _boom)
        client.shutdown_write()
        read_to_eof(client)  # asyncio closes the transport after the fatal error
        monkeypatch.undo()
    rig.check_healthy()


def test_a_broker_that_stops_routing_fails_the_example(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No exception at all, but messages go nowhere: the sentinel check fails."""
    core = rig.core
    with pytest.raises(AssertionError, match="sentinel got no PUBLISH"), rig.example():
        monkeypatch.setattr(type(core), "route", lambda self, message: False)
    monkeypatch.undo()
