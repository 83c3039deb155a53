"""The HTTP backend: a plugin (midge.auth.plugin) that asks a web service.

``auth_http_url URL`` turns it on. At CONNECT it POSTs JSON to ``URL/auth``::

    {"clientid": "...", "username": "...", "password": "...", "peer": "127.0.0.1:50000",
     "protocol": 4}

and for each topic a client publishes on or subscribes to (cached, see ``auth_cache_ttl``) it
POSTs to ``URL/acl``::

    {"clientid": "...", "username": "...", "action": "publish" | "subscribe", "topic": "..."}

An answer of status 200 with ``{"result": "allow"}`` allows; ``{"result": "deny"}``, any other
status, a body that is not such JSON, no answer within ``auth_http_timeout`` seconds or a
connection failure refuse (fail closed). At CONNECT a deny is "bad user name or password"
(v5 0x86, v3.1.1 return code 4) and a failure "not authorized" (0x87, return code 5). The
password is sent as text (UTF-8, or base64 with ``"password_encoding": "base64"`` when it is not
valid UTF-8); use an https:// URL anywhere but on localhost. Connections are pooled (httpx).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from midge.auth.plugin import Client, PluginError
from midge.codec.reasons import Reason

log = logging.getLogger("midge.auth.http")


class HttpAuth:
    """The plugin: ``authenticate`` and ``authorize`` over HTTP POST."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        try:
            import httpx
        except ImportError:
            raise PluginError(
                "auth_http_url needs the httpx package: pip install 'midge[auth]'"
            ) from None
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def authenticate(self, client: Client) -> bool | int:
        body: dict[str, Any] = {
            "clientid": client.client_id,
            "username": client.username,
            "peer": client.peer,
            "protocol": client.version,
        }
        if client.password is not None:
            try:
                body["password"] = client.password.decode("utf-8")
            except UnicodeDecodeError:
                body["password"] = base64.b64encode(client.password).decode("ascii")
                body["password_encoding"] = "base64"
        else:
            body["password"] = None
        answer = await self._post("/auth", body)
        if answer is None:
            return Reason.NOT_AUTHORIZED
        return answer

    async def authorize(self, client: Client, action: str, topic: str) -> bool:
        body = {
            "clientid": client.client_id,
            "username": client.username,
            "action": action,
            "topic": topic,
        }
        return await self._post("/acl", body) is True

    async def _post(self, path: str, body: dict[str, Any]) -> bool | None:
        """True (allow), False (deny), or None (no usable answer: the caller fails closed)."""
        import httpx

        try:
            response = await self._client.post(self.url + path, json=body)
        except httpx.HTTPError as exc:
            log.warning("auth http: POST %s%s failed: %s", self.url, path, exc)
            return None
        if response.status_code != 200:
            log.warning("auth http: POST %s%s: status %d", self.url, path, response.status_code)
            return False
        try:
            result = json.loads(response.content).get("result")
        except (ValueError, AttributeError):
            log.warning(
                "auth http: POST %s%s: the answer is not JSON with a result", self.url, path
            )
            return None
        if result == "allow":
            return True
        if result != "deny":
            log.warning("auth http: POST %s%s: unknown result %r", self.url, path, result)
        return False

    async def close(self) -> None:
        await self._client.aclose()
