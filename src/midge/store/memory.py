"""The in-memory store: state lives as long as the process (``durability = "none"``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from midge.store.base import StoreState

if TYPE_CHECKING:
    from midge.broker.model import Delivery, Message, SubOptions


class MemoryStore:
    """Keeps nothing the broker does not already hold: a restart starts empty.

    ``durable`` is False, so the core does not report session changes to it at all.
    """

    durable = False

    @property
    def pending(self) -> bool:
        return False

    def load(self, now: float) -> StoreState:
        return StoreState()

    def commit(self, callback: Callable[[], None]) -> None:
        callback()

    def close(self) -> None:
        pass

    def session_saved(
        self, client_id: str, version: int, expiry_interval: int, username: str | None = None
    ) -> None:
        pass

    def session_detached(self, client_id: str, expiry_interval: int, at: float) -> None:
        pass

    def session_deleted(self, client_id: str, messages: Iterable[Message]) -> None:
        pass

    def subscription_added(self, client_id: str, topic_filter: str, options: SubOptions) -> None:
        pass

    def subscription_removed(self, client_id: str, topic_filter: str) -> None:
        pass

    def delivery_added(self, client_id: str, delivery: Delivery, pid: int) -> None:
        pass

    def delivery_sent(self, client_id: str, pid: int) -> None:
        pass

    def delivery_removed(self, client_id: str, message: Message) -> None:
        pass

    def deliveries_expired(self, client_id: str, messages: list[Message]) -> None:
        pass

    def delivery_released(self, client_id: str, pid: int) -> None:
        pass

    def delivery_done(self, client_id: str, pid: int, message: Message) -> None:
        pass

    def inbound_added(self, client_id: str, pid: int) -> None:
        pass

    def inbound_removed(self, client_id: str, pid: int) -> None:
        pass

    def retained_changed(self, message: Message) -> None:
        pass

    def will_saved(self, client_id: str, message: Message, due_at: float) -> None:
        pass

    def will_cleared(self, client_id: str) -> None:
        pass
