"""A Python auth plugin for the tests (loaded by ``auth_python tests.authplugin:create``).

Users and their topic prefix come from the options: ``auth_python_opt_users alice:secret,bob:pw``
and ``auth_python_opt_prefix rooms/``: a user may publish and subscribe under ``PREFIX<user>/``
only. Every answer takes ``delay`` seconds, so the broker really waits for it."""

from __future__ import annotations

import asyncio
from typing import Any


class Plugin:
    def __init__(self, options: dict[str, str]) -> None:
        self.users = dict(
            pair.split(":", 1) for pair in options.get("users", "").split(",") if pair
        )
        self.prefix = options.get("prefix", "")
        self.delay = float(options.get("delay", "0.05"))
        self.asked: list[tuple[str, ...]] = []

    async def authenticate(self, client: Any) -> bool:
        await asyncio.sleep(self.delay)
        self.asked.append(("authenticate", client.username or ""))
        password = (client.password or b"").decode()
        return client.username in self.users and self.users[client.username] == password

    async def authorize(self, client: Any, action: str, topic: str) -> bool:
        await asyncio.sleep(self.delay)
        self.asked.append((action, topic))
        return topic.startswith(f"{self.prefix}{client.username}/")


def create(options: dict[str, str]) -> Plugin:
    return Plugin(options)
