"""midge: an MQTT 3.1, 3.1.1 and 5.0 broker, client library and tools.

``midge.Broker`` and ``midge.run_broker_in_thread`` (:mod:`midge.embed`) embed a broker; they
are imported on first use, so that ``import midge`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from midge.embed import Broker, ThreadedBroker, run_broker_in_thread

__all__ = ["Broker", "ThreadedBroker", "__version__", "run_broker_in_thread"]


def __getattr__(name: str) -> Any:
    if name in ("Broker", "ThreadedBroker", "run_broker_in_thread"):
        from midge import embed

        return getattr(embed, name)
    raise AttributeError(f"module 'midge' has no attribute {name!r}")
