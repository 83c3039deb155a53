"""The ``protocol http`` listener: Prometheus ``/metrics`` and the admin API (JSON).

Served by aiohttp's server (:class:`aiohttp.web.AppRunner` and a :class:`~aiohttp.web.SockSite`)
on the broker's own asyncio loop (uvloop when it runs), so a handler reads the broker's state
directly, between two MQTT events, with no lock and no thread. The socket is bound with the MQTT
listeners (before ``user`` drops privileges) and serves once the broker exists.

- ``/metrics``: :class:`midge.observe.metrics.BrokerCollector`, open to anyone who reaches the
  listener (as Prometheus exporters usually are; it listens on 127.0.0.1 unless given an address).
- ``/api/health`` and ``/api/ready``: Kubernetes probes, open.
- ``/api/openapi.json``: the API's description (:mod:`midge.observe.openapi`), open.
- every other ``/api/...``, and the web dashboard under ``/dashboard/`` (static files shipped in
  the package, ``midge/observe/dashboard/``): HTTP Basic with ``admin_user`` /
  ``admin_password_hash``; without them configured the API answers 403. The browser asks for the
  credentials once, on the dashboard's page, and sends them with the page's own requests (its
  ``fetch`` calls and its ``EventSource``). A request that changes something (not GET) and comes
  from another site's page (its ``Origin`` is not this listener) is refused, so cached
  credentials cannot be used by a form elsewhere.
- ``/api/stream``: the dashboard's server-sent events (:mod:`midge.observe.live`).

The application is :func:`make_app`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from midge.auth.passwd import PasswordHash, parse_hash
from midge.broker.model import Message
from midge.broker.systree import MemoryProbe
from midge.codec.packets import PacketType
from midge.codec.reasons import REASONS_BY_PACKET
from midge.codec.topics import validate_topic_filter, validate_topic_name
from midge.config import ConfigError, ListenerConfig
from midge.observe.live import Live
from midge.observe.metrics import BrokerCollector, listener_name
from midge.observe.openapi import MAX_OFFSET, MAX_STREAM_SECONDS, document

if TYPE_CHECKING:
    from midge.broker.session import Session
    from midge.cluster.cluster_view import ClusterView
    from midge.server import Server

log = logging.getLogger("midge.http")

#: Paths open without credentials.
OPEN = frozenset({"/metrics", "/api/health", "/api/ready", "/api/openapi.json"})
#: The most messages of a queue or of the in-flight window a client's details list.
DETAIL_LIMIT = 100
#: The largest request body read (a PUBLISH's payload, base64).
MAX_BODY = 1 << 20

_SURROGATES = re.compile("[\ud800-\udfff]")

SERVER_KEY = web.AppKey("server", object)
LIVE_KEY = web.AppKey("live", Live)
#: The dashboard's static files, in the package (a wheel carries them: pyproject.toml).
DASHBOARD = Path(str(files("midge.observe") / "dashboard"))
#: Configuration fields never shown (secrets, or settings that may hold one), and those shown
#: as a summary of their own.
_HIDDEN = re.compile(r"password|secret|token|_options$|^auth_ldap$|^auth_oauth$|^notices$")
_NOT_SHOWN = frozenset({"listeners", "bridges", "source"})
_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]*@")


class BadRequest(Exception):
    """Answered 400 with its message."""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class AdminAuth:
    """HTTP Basic against the configured admin user (the password file's hash format)."""

    #: Authorization headers remembered as checked (a dashboard or a script sends the same one
    #: with every request: the hash, PBKDF2, is computed once, not per request). Only those
    #: that passed; a failed one is checked again each time, at the hash's full cost.
    REMEMBERED = 16

    def __init__(self, user: str | None, password_hash: str | None) -> None:
        self.user = user
        self.hash: PasswordHash | None = parse_hash(password_hash) if password_hash else None
        self._passed: set[str] = set()

    @property
    def configured(self) -> bool:
        return self.user is not None and self.hash is not None

    def check(self, header: str | None) -> bool:
        if header is None or not header.startswith("Basic ") or self.hash is None:
            return False
        if header in self._passed:
            return True
        if not self._check(header):
            return False
        if len(self._passed) >= self.REMEMBERED:
            self._passed.clear()
        self._passed.add(header)
        return True

    def _check(self, header: str) -> bool:
        assert self.hash is not None
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep or self.user is None:
            return False
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        return self.hash.verify(password.encode()) and user_ok


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _same_origin(request: web.Request) -> bool:
    """No ``Origin`` (not a browser's cross-site request), or this listener's own."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.host


def _plain(value: Any) -> Any:
    """A configuration value as JSON: scalars as they are (a URL's credentials hidden), lists
    and dicts of them too."""
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(r"\1***@", value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _summary(session: Session) -> dict[str, Any]:
    conn = session.connection
    queue = session.queue
    return {
        "client_id": session.client_id,
        "connected": conn is not None,
        "protocol_version": conn.version if conn is not None else session.version,
        "username": conn.username if conn is not None else None,
        "address": conn.peer if conn is not None else None,
        "subscriptions": len(session.subscriptions),
        "queued": (len(queue) if queue else 0) + (len(session.backlog) if session.backlog else 0),
        "inflight": len(session.inflight),
    }


def session_details(session: Session) -> dict[str, Any]:
    """A session as ``GET /api/clients/{client_id}`` shows it (with ``--workers``, asked of the
    worker that holds it)."""
    details = _summary(session)
    conn = session.connection
    queue = list(session.queue or ())[:DETAIL_LIMIT]
    details.update(
        {
            "listener": conn.listener.port if conn is not None else None,
            "keepalive": conn.keepalive if conn is not None else None,
            "session_expiry_interval": session.expiry_interval,
            "queued_bytes": session.queued_bytes + session.backlog_bytes,
            "inflight_bytes": session.inflight_bytes,
            "dropped": session.dropped,
            "subscription_list": [
                {
                    "filter": flt,
                    "qos": o.qos,
                    "no_local": o.no_local,
                    "retain_as_published": o.retain_as_published,
                    "retain_handling": o.retain_handling,
                    "subscription_id": o.subscription_id,
                }
                for flt, o in sorted(session.subscriptions.items())
            ],
            "queue": [{"topic": d[0].topic, "qos": d[1], "size": len(d[0].payload)} for d in queue],
            "inflight_messages": [
                {
                    "packet_id": pid,
                    "topic": entry.delivery[0].topic,
                    "qos": entry.delivery[1],
                    "size": len(entry.delivery[0].payload),
                    "released": entry.released,
                }
                for pid, entry in list(session.inflight.items())[:DETAIL_LIMIT]
            ],
        }
    )
    return details


def _retained(message: Message) -> dict[str, Any]:
    payload = message.payload
    try:
        text: str | None = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "topic": message.topic,
        "qos": message.qos,
        "size": len(payload),
        "payload": text,
        "payload_base64": base64.b64encode(payload).decode("ascii"),
    }


async def _json_body(request: web.Request, required: bool) -> dict[str, Any]:
    if not request.can_read_body:
        if required:
            raise BadRequest("a JSON body is required")
        return {}
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BadRequest(f"the body is over {MAX_BODY} bytes")
    if not raw.strip() and not required:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _whole(value: Any) -> Any:
    """A JSON number that is whole (``1.0`` is an integer in JSON Schema) as an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _utf8(text: str) -> str:
    """``text`` with its lone surrogates (JSON allows them, UTF-8 cannot carry them) as U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def disconnect_client(broker: Any, client_id: str, reason: int) -> bool:
    """Disconnect ``client_id`` if it is connected here (DISCONNECT ``reason``)."""
    session = broker.sessions.get(client_id)
    conn = session.connection if session is not None else None
    if conn is None:
        return False
    log.info("admin API: disconnecting %s (0x%02x)", conn.client_id, reason)
    conn.kick(reason, "disconnected by the admin API")
    return True


def delete_session(broker: Any, client_id: str) -> int:
    """Delete the session ``client_id`` here: 204 done, 409 its client is connected, 404 none."""
    if client_id not in broker.sessions:
        return 404
    if not broker.delete_session(client_id):
        return 409
    log.info("admin API: session %s deleted", client_id)
    return 204


def select_clients(
    summaries: list[dict[str, Any]], search: str, state: str
) -> list[dict[str, Any]]:
    """The client summaries ``GET /api/clients`` lists, sorted by client id: those in ``state``
    (all, connected, disconnected) whose client id or username contains ``search``."""
    chosen = []
    for summary in sorted(summaries, key=lambda item: item["client_id"]):
        if state != "all" and summary["connected"] != (state == "connected"):
            continue
        if search:
            username = summary["username"]
            if search not in summary["client_id"] and (username is None or search not in username):
                continue
        chosen.append(summary)
    return chosen


def answer(broker: Any, op: str, arg: Any) -> Any:
    """A worker's answer to the admin API of worker 0 (``--workers``), or a cluster node's to
    another node's (midge.cluster.cluster_view), as plain data."""
    if op == "sessions":
        summaries = [_summary(s) for s in broker.sessions.values()]
        if arg is None:
            return summaries
        # (search, state, first): how many match, and the first ``first`` of them (a page of
        # the whole cluster's list needs no more from any node).
        search, state, first = arg
        chosen = select_clients(summaries, search, state)
        return len(chosen), chosen[:first]
    if op == "client":
        session = broker.sessions.get(arg)
        return session_details(session) if session is not None else None
    if op == "disconnect":
        return disconnect_client(broker, arg[0], arg[1])
    if op == "delete":
        return delete_session(broker, arg)
    if op == "unretain":
        return broker.delete_retained(arg)
    raise ValueError(f"unknown admin operation {op!r}")


class AdminApi:
    """The handlers, over one :class:`~midge.server.Server`."""

    def __init__(self, server: Server, memory: MemoryProbe | None = None) -> None:
        self.server = server
        self.live = Live(server)
        config = server.config
        self.auth = AdminAuth(config.admin_user, config.admin_password_hash)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(server, memory))
        self.document = document()

    @web.middleware
    async def guard(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Credentials for the API, and BadRequest as 400."""
        path = request.path
        if request.method not in ("GET", "HEAD") and not _same_origin(request):
            return _error(403, "a request from another site's page")
        if path not in OPEN and path.startswith(("/api/", "/dashboard/")):
            if not self.auth.configured:
                return _error(403, "the admin API is closed: configure admin_user")
            if not self.auth.check(request.headers.get("Authorization")):
                return _error(
                    401, "admin credentials required", {"WWW-Authenticate": 'Basic realm="midge"'}
                )
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(400, str(exc))

    async def _ask(self, op: str, arg: Any) -> list[Any]:
        """With ``--workers``: the answers of the other workers to ``op`` (see
        :func:`answer`); none otherwise."""
        ask = getattr(self.server.router, "ask", None)
        return [] if ask is None else list(await ask(op, arg))

    async def _ask_all(self, op: str, arg: Any) -> list[tuple[str | None, Any]]:
        """The answers to ``op`` of every other process of the broker: with ``--workers`` the
        other workers' (node None), on a cluster node the other live nodes' that answered in
        time, by node name."""
        answers: list[tuple[str | None, Any]] = [(None, a) for a in await self._ask(op, arg)]
        view = self.server.cluster_view
        if view is not None:
            theirs, _missing = await view.ask(op, arg)
            answers.extend(sorted(theirs.items()))
        return answers

    def _node(self) -> dict[str, str]:
        """``{"node": NAME}`` on a cluster node (where a client was found), else nothing."""
        cluster = self.server.cluster
        return {"node": cluster.me} if cluster is not None else {}

    def broker(self) -> Any:
        broker = self.server.broker
        if broker is None:
            raise web.HTTPServiceUnavailable()
        return broker

    # -- open ------------------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(self, request: web.Request) -> web.Response:
        broker = self.server.broker
        if broker is None or broker.shutting_down:
            return web.json_response({"status": "unavailable"}, status=503)
        return web.json_response({"status": "ready"})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self.document)

    # -- clients and sessions --------------------------------------------------------------------

    async def clients(self, request: web.Request) -> web.Response:
        broker = self.broker()
        search = request.query.get("search", "")
        state = request.query.get("state", "all")
        if state not in ("all", "connected", "disconnected"):
            raise BadRequest("state must be all, connected or disconnected")
        offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
        limit = _int_param(request, "limit", 100, 1, 1000)
        scope = request.query.get("scope", "node")
        if scope not in ("node", "cluster"):
            raise BadRequest("scope must be node or cluster")
        view = self.server.cluster_view
        if scope == "cluster" and view is not None:
            return await self._cluster_clients(view, search, state, offset, limit)
        # With --workers: every worker's sessions (the others' asked over the mesh).
        summaries = [_summary(s) for s in broker.sessions.values()]
        for theirs in await self._ask("sessions", None):
            summaries.extend(theirs or ())  # None: that worker failed (and logged why)
        chosen = select_clients(summaries, search, state)
        items = chosen[offset : offset + limit]
        return web.json_response({"total": len(chosen), "offset": offset, "items": items})

    async def _cluster_clients(
        self, view: ClusterView, search: str, state: str, offset: int, limit: int
    ) -> web.Response:
        """``?scope=cluster`` on a cluster node: every live node's clients, each with its
        ``node``; the nodes that did not answer in time are listed in ``missing``."""
        broker = self.broker()
        first = min(offset + limit, MAX_OFFSET)
        answers, missing = await view.ask("sessions", (search, state, first))
        mine = select_clients([_summary(s) for s in broker.sessions.values()], search, state)
        pages = {view.router.me: (len(mine), mine[:first])}
        for node, result in answers.items():
            if result is None:
                missing.append(node)
            else:
                pages[node] = result
        total = 0
        summaries: list[dict[str, Any]] = []
        for node, (count, items) in pages.items():
            total += count
            summaries.extend({**item, "node": node} for item in items)
        summaries.sort(key=lambda item: (item["client_id"], item["node"]))
        return web.json_response(
            {
                "total": total,
                "offset": offset,
                "items": summaries[offset : offset + limit],
                "nodes": sorted(pages),
                "missing": sorted(missing),
            }
        )

    async def client(self, request: web.Request) -> web.Response:
        """One session, wherever it is held: this process, another worker, or (a cluster
        node) another node, named in ``node``."""
        client_id = request.match_info["client_id"]
        session = self.broker().sessions.get(client_id)
        if session is not None:
            return web.json_response({**session_details(session), **self._node()})
        for node, details in await self._ask_all("client", client_id):
            if details is not None:
                return web.json_response({**details, **({"node": node} if node else {})})
        return _error(404, "no such session")

    async def disconnect(self, request: web.Request) -> web.Response:
        broker = self.broker()
        body = await _json_body(request, required=False)
        reason = _whole(body.get("reason_code", 0x98))
        allowed = REASONS_BY_PACKET[PacketType.DISCONNECT]
        if type(reason) is not int or reason < 0x80 or reason not in allowed:
            raise BadRequest("reason_code must be a DISCONNECT reason code of 0x80 or more")
        client_id = request.match_info["client_id"]
        if not disconnect_client(broker, client_id, reason) and not any(
            done for _, done in await self._ask_all("disconnect", (client_id, reason))
        ):
            return _error(404, "no such client connected")
        return web.Response(status=204)

    async def delete_session(self, request: web.Request) -> web.Response:
        broker = self.broker()
        client_id = request.match_info["client_id"]
        results = [delete_session(broker, client_id)]
        results += [result for _, result in await self._ask_all("delete", client_id)]
        if 204 in results:
            return web.Response(status=204)
        if 409 in results:
            return _error(409, "a client is connected: disconnect it first")
        return _error(404, "no such session")

    # -- retained messages -----------------------------------------------------------------------

    async def retained_list(self, request: web.Request) -> web.Response:
        broker = self.broker()
        flt = request.query.get("filter", "#")
        try:
            validate_topic_filter(flt)
        except Exception as exc:  # MalformedPacket / TopicFilterInvalid
            raise BadRequest(f"invalid filter: {exc}") from None
        offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
        limit = _int_param(request, "limit", 100, 1, 1000)
        found = sorted(broker.retained.match(flt), key=lambda m: m.topic)
        items = [_retained(m) for m in found[offset : offset + limit]]
        return web.json_response({"total": len(found), "offset": offset, "items": items})

    def _topic(self, request: web.Request, name: str = "topic") -> str:
        topic = request.query.get(name)
        if topic is None:
            raise BadRequest(f"{name} is required")
        try:
            validate_topic_name(topic)
        except Exception as exc:  # TopicNameInvalid
            raise BadRequest(f"invalid topic: {exc}") from None
        return topic

    async def retained_get(self, request: web.Request) -> web.Response:
        message = self.broker().retained.get(self._topic(request))
        if message is None:
            return _error(404, "no retained message on that topic")
        return web.json_response(_retained(message))

    async def retained_delete(self, request: web.Request) -> web.Response:
        topic = self._topic(request)
        # With --workers every worker keeps the retained set: each clears its copy. On a
        # cluster node the clear goes to Redis and every node, as a retained clear would.
        deleted = self.broker().delete_retained(topic)
        cluster = self.server.cluster
        if deleted and cluster is not None:
            cluster.clear_retained(topic)
        if not any(await self._ask("unretain", topic)) and not deleted:
            return _error(404, "no retained message on that topic")
        log.info("admin API: retained message of %s deleted", topic)
        return web.Response(status=204)

    # -- publish and reload ----------------------------------------------------------------------

    async def publish(self, request: web.Request) -> web.Response:
        broker = self.broker()
        body = await _json_body(request, required=True)
        topic = body.get("topic")
        if not isinstance(topic, str):
            raise BadRequest("topic must be a string")
        try:
            validate_topic_name(topic)
        except Exception as exc:
            raise BadRequest(f"invalid topic: {exc}") from None
        if topic.startswith("$"):
            raise BadRequest("topics starting with $ are the broker's own")
        qos = _whole(body.get("qos", 0))
        retain = body.get("retain", False)
        if type(qos) is not int or qos not in (0, 1, 2):
            raise BadRequest("qos must be 0, 1 or 2")
        if not isinstance(retain, bool):
            raise BadRequest("retain must be true or false")
        if "payload_base64" in body:
            encoded = body["payload_base64"]
            if not isinstance(encoded, str):
                raise BadRequest("payload_base64 must be a string")
            try:
                payload = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("payload_base64 is not base64") from None
        else:
            text = body.get("payload", "")
            if not isinstance(text, str):
                raise BadRequest("payload must be a string")
            payload = _utf8(text).encode("utf-8")
        topic = _utf8(topic)
        matched = broker.publish(Message(topic, payload, qos, retain))
        return web.json_response({"matched": bool(matched)})

    async def cluster(self, request: web.Request) -> web.Response:
        """This node and the live nodes of its cluster (docs/cluster.md); a broker that is no
        cluster node answers with nulls and no nodes."""
        cluster = self.server.cluster
        if cluster is None:
            return web.json_response({"node": None, "redis": None, "nodes": []})
        info: dict[str, Any] = {
            "node": cluster.me,
            "redis": "up" if cluster.healthy else "down",
            "nodes": sorted({cluster.me, *cluster.nodes}),
        }
        view = self.server.cluster_view
        if view is not None:
            info.update(view.view())  # totals, by_node, missing (midge.cluster.cluster_view)
        return web.json_response(info)

    async def reload(self, request: web.Request) -> web.Response:
        """As SIGHUP: with ``--workers``, every worker reloads (each its own files and
        settings); "reloaded" is true only if every one did."""
        log.info("admin API: reload")
        reloaded = self.server.reload()
        for answer in await self._ask("reload", None):
            reloaded = reloaded and answer is True
        return web.json_response({"reloaded": reloaded})

    # -- listeners and configuration (read-only) -------------------------------------------------

    async def listeners(self, request: web.Request) -> web.Response:
        server = self.server
        items: list[dict[str, Any]] = []
        for state in server.listeners:
            config = state.config
            items.append(
                {
                    "name": listener_name(state),
                    "protocol": config.protocol,
                    "address": config.host or None,
                    "port": int(listener_name(state)) if not config.unix_socket_path else None,
                    "unix_socket_path": config.unix_socket_path,
                    "tls": config.tls,
                    "mount_point": config.mount_point,
                    "max_connections": config.max_connections,
                    "connections": state.active,
                    "accepted": state.accepted,
                }
            )
        bound = [a for a, p in zip(server.addresses, server.protocols, strict=True) if p == "http"]
        configs = [c for c in server.config.listeners if c.protocol == "http"]
        for address, config in zip(bound, configs, strict=False):
            items.append(
                {
                    "name": str(address[1]),
                    "protocol": "http",
                    "address": str(address[0]),
                    "port": int(address[1]),
                    "unix_socket_path": None,
                    "tls": config.tls,
                    "mount_point": None,
                    "max_connections": -1,
                    "connections": None,
                    "accepted": None,
                }
            )
        return web.json_response({"items": items})

    async def config(self, request: web.Request) -> web.Response:
        config = self.server.config
        options: dict[str, Any] = {}
        for name in sorted(config.__dataclass_fields__):
            if name in _NOT_SHOWN:
                continue
            value = getattr(config, name)
            if name == "auth_oauth":
                options[name] = {"mode": config.auth_oauth.mode}  # its secrets stay hidden
            elif _HIDDEN.search(name):
                options[name] = "(set)" if value else None
            else:
                options[name] = _plain(value)
        bridges = [
            {"name": b.name, "addresses": [f"{h}:{p}" for h, p in b.addresses]}
            for b in config.bridges
        ]
        return web.json_response({"source": config.source, "options": options, "bridges": bridges})

    # -- the dashboard ---------------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``stats`` and ``topics`` once a second, and ``history`` of the
        topic ``explore`` names when it changed (midge.observe.live)."""
        broker = self.broker()
        seconds = _int_param(request, "seconds", 0, 1, MAX_STREAM_SECONDS)
        explore = self._topic(request, "explore") if "explore" in request.query else None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        live = self.live
        # Open before the headers go out: a page that sees this stream open may close its
        # previous one (to explore another topic) without the table being dropped in between.
        queue = live.open(broker, explore)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds if seconds else None
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n" + live.hello(explore))
            while True:
                timeout = None if deadline is None else deadline - loop.time()
                if timeout is not None and timeout <= 0:
                    break
                try:
                    chunk = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    break
                if chunk is None:
                    break
                await response.write(chunk)
        except ConnectionError:
            pass  # the page went away
        finally:
            live.close(queue)
        return response

    async def history(self, request: web.Request) -> web.Response:
        topic = self._topic(request)
        return web.json_response(self.live.history(topic))

    async def dashboard_redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/dashboard/")

    async def dashboard_index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(DASHBOARD / "index.html", headers={"Cache-Control": "no-cache"})


def make_app(server: Server, memory: MemoryProbe | None = None) -> web.Application:
    """The HTTP application of ``server``'s ``protocol http`` listeners; ``memory``: the
    process's (current, peak) resident memory, for /metrics."""
    api = AdminApi(server, memory)
    app = web.Application(middlewares=[api.guard], client_max_size=MAX_BODY)
    app[SERVER_KEY] = server
    app[LIVE_KEY] = api.live
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/api/health", api.health)
    app.router.add_get("/api/ready", api.ready)
    app.router.add_get("/api/openapi.json", api.openapi)
    app.router.add_get("/api/clients", api.clients)
    app.router.add_get("/api/clients/{client_id}", api.client)
    app.router.add_post("/api/clients/{client_id}/disconnect", api.disconnect)
    app.router.add_delete("/api/sessions/{client_id}", api.delete_session)
    app.router.add_get("/api/retained", api.retained_list)
    app.router.add_get("/api/retained/message", api.retained_get)
    app.router.add_delete("/api/retained/message", api.retained_delete)
    app.router.add_post("/api/publish", api.publish)
    app.router.add_post("/api/reload", api.reload)
    app.router.add_get("/api/cluster", api.cluster)
    app.router.add_get("/api/listeners", api.listeners)
    app.router.add_get("/api/config", api.config)
    app.router.add_get("/api/stream", api.stream)
    app.router.add_get("/api/topics/history", api.history)
    app.router.add_get("/", api.dashboard_redirect)
    app.router.add_get("/dashboard", api.dashboard_redirect)
    app.router.add_get("/dashboard/", api.dashboard_index)
    app.router.add_static("/dashboard/", DASHBOARD)
    return app


def bind(listener: ListenerConfig) -> socket.socket:
    """The listening socket of a ``protocol http`` listener: its address, or 127.0.0.1."""
    if listener.unix_socket_path:
        raise ConfigError(
            "a protocol http listener cannot be a Unix socket (yet): give it a port",
            None,
        )
    host = listener.host or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, listener.port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


class HttpListeners:
    """The running ``protocol http`` listeners of one server (one aiohttp runner for all)."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.sockets: list[tuple[socket.socket, Any]] = []

    def add(self, sock: socket.socket, ssl_context: Any) -> None:
        self.sockets.append((sock, ssl_context))

    async def start(self, server: Server, memory: MemoryProbe | None = None) -> None:
        if not self.sockets:
            return
        app = self.app = make_app(server, memory)
        runner = self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        for sock, ssl_context in self.sockets:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()

    async def stop(self) -> None:
        runner = self.runner
        self.runner = None
        if self.app is not None:
            self.app[LIVE_KEY].shutdown()  # the dashboard's streams end, not wait for a timeout
            self.app = None
        if runner is not None:
            await runner.cleanup()
        for sock, _ in self.sockets:
            sock.close()
        self.sockets = []
