"""The in-memory store: state lives as long as the process (``durability = "none"``)."""

from __future__ import annotations

from midge.broker.message import Message


class MemoryStore:
    """Keeps nothing the broker does not already hold: a restart starts empty."""

    def retained_changed(self, message: Message) -> None:
        pass

    def retained(self) -> list[Message]:
        return []

    def close(self) -> None:
        pass
