"""The admin API's OpenAPI 3 document, served at ``/api/openapi.json`` (midge.observe.http).

It is the contract the tests hold the API to: schemathesis (tests/observe) generates requests
from it and checks every response against it.
"""

from __future__ import annotations

from typing import Any

from midge import __version__
from midge.codec.packets import PacketType
from midge.codec.reasons import REASONS_BY_PACKET

#: A topic name: no wildcards (and, to publish, not one of the broker's own ``$`` topics).
_TOPIC_NAME = "^[^+#]+$"
_PUBLISH_TOPIC = "^[^+#$][^+#]*$"
#: A topic filter: levels that are text or +, and # only as the last level.
_LEVEL = "(?:[^+#/]*|\\+)"
_FILTER = f"^(?:#|{_LEVEL}(?:/{_LEVEL})*(?:/#)?)$"
_BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
#: The largest paging offset.
MAX_OFFSET = 1 << 62
#: The longest a dashboard stream may be asked to last (without ``seconds``: until it closes).
MAX_STREAM_SECONDS = 86_400
#: What an operator may disconnect a client with (v5 DISCONNECT reason codes, 0x80 and above).
DISCONNECT_REASONS = sorted(c for c in REASONS_BY_PACKET[PacketType.DISCONNECT] if c >= 0x80)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("Error"), "What is wrong.")
_UNAUTHORIZED = _json(_ref("Error"), "No or wrong admin credentials (HTTP Basic).")
_FORBIDDEN = _json(_ref("Error"), "No admin_user is configured: the API is closed.")
_AUTH_ERRORS = {"401": _UNAUTHORIZED, "403": _FORBIDDEN}

_CLIENT_ID = {
    "name": "client_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The MQTT client identifier.",
}
_PAGING = [
    {
        "name": "offset",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        "description": "How many items to skip.",
    },
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        "description": "How many items at most.",
    },
]
_TOPIC = {
    "name": "topic",
    "in": "query",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "pattern": _TOPIC_NAME},
    "description": "A topic name (no wildcards).",
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
    "Cluster": {
        "type": "object",
        "required": ["node", "redis", "nodes"],
        "properties": {
            "node": {"type": ["string", "null"]},
            "redis": {"type": ["string", "null"], "enum": ["up", "down", None]},
            "nodes": {"type": "array", "items": {"type": "string"}},
            "totals": {
                "description": "A cluster node: the figures summed over the nodes of by_node "
                "(midge.cluster.cluster_view.FIGURES).",
                "type": "object",
                "additionalProperties": {"type": "integer"},
            },
            "by_node": {
                "description": "Each node's figures (from its latest snapshot in Redis, at most "
                "about a second old; this node's now), with its uptime in seconds and version.",
                "type": "object",
                "additionalProperties": {"type": "object"},
            },
            "missing": {
                "description": "Live nodes without a recent snapshot, left out of the totals.",
                "type": "array",
                "items": {"type": "string"},
            },
        },
    },
    "ClientSummary": {
        "type": "object",
        "required": [
            "client_id",
            "connected",
            "protocol_version",
            "username",
            "address",
            "subscriptions",
            "queued",
            "inflight",
        ],
        "properties": {
            "client_id": {"type": "string"},
            "connected": {"type": "boolean"},
            "protocol_version": {"type": "integer", "enum": [3, 4, 5]},
            "username": {"type": ["string", "null"]},
            "address": {"type": ["string", "null"]},
            "subscriptions": {"type": "integer", "minimum": 0},
            "queued": {"type": "integer", "minimum": 0},
            "inflight": {"type": "integer", "minimum": 0},
            "node": {
                "type": "string",
                "description": "On a cluster node (scope=cluster; one client): its node.",
            },
        },
    },
    "ClientPage": {
        "type": "object",
        "required": ["total", "offset", "items"],
        "properties": {
            "total": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "items": {"type": "array", "items": _ref("ClientSummary")},
            "nodes": {
                "description": "scope=cluster: the nodes whose clients are listed.",
                "type": "array",
                "items": {"type": "string"},
            },
            "missing": {
                "description": "scope=cluster: live nodes that did not answer in time.",
                "type": "array",
                "items": {"type": "string"},
            },
        },
    },
    "Subscription": {
        "type": "object",
        "required": ["filter", "qos", "no_local", "retain_as_published", "retain_handling"],
        "properties": {
            "filter": {"type": "string"},
            "qos": {"type": "integer", "minimum": 0, "maximum": 2},
            "no_local": {"type": "boolean"},
            "retain_as_published": {"type": "boolean"},
            "retain_handling": {"type": "integer", "minimum": 0, "maximum": 2},
            "subscription_id": {"type": ["integer", "null"]},
        },
    },
    "HeldMessage": {
        "type": "object",
        "required": ["topic", "qos", "size"],
        "properties": {
            "topic": {"type": "string"},
            "qos": {"type": "integer", "minimum": 0, "maximum": 2},
            "size": {"type": "integer", "minimum": 0},
            "packet_id": {"type": "integer"},
            "released": {"type": "boolean"},
        },
    },
    "ClientDetails": {
        "allOf": [
            _ref("ClientSummary"),
            {
                "type": "object",
                "required": [
                    "listener",
                    "keepalive",
                    "session_expiry_interval",
                    "queued_bytes",
                    "inflight_bytes",
                    "dropped",
                    "subscription_list",
                    "queue",
                    "inflight_messages",
                ],
                "properties": {
                    "listener": {"type": ["integer", "string", "null"]},
                    "keepalive": {"type": ["integer", "null"]},
                    "session_expiry_interval": {"type": "integer"},
                    "queued_bytes": {"type": "integer", "minimum": 0},
                    "inflight_bytes": {"type": "integer", "minimum": 0},
                    "dropped": {"type": "integer", "minimum": 0},
                    "subscription_list": {"type": "array", "items": _ref("Subscription")},
                    "queue": {"type": "array", "items": _ref("HeldMessage")},
                    "inflight_messages": {"type": "array", "items": _ref("HeldMessage")},
                },
            },
        ]
    },
    "Disconnect": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "reason_code": {
                "type": "integer",
                "enum": DISCONNECT_REASONS,
                "description": "The MQTT 5 DISCONNECT reason (0x80 or above); default 0x98 "
                "Administrative action. v3 clients are just closed.",
                "default": 152,
            }
        },
    },
    "RetainedMessage": {
        "type": "object",
        "required": ["topic", "qos", "size", "payload", "payload_base64"],
        "properties": {
            "topic": {"type": "string"},
            "qos": {"type": "integer", "minimum": 0, "maximum": 2},
            "size": {"type": "integer", "minimum": 0},
            "payload": {
                "type": ["string", "null"],
                "description": "The payload as UTF-8 text; null when it is not.",
            },
            "payload_base64": {"type": "string"},
        },
    },
    "RetainedPage": {
        "type": "object",
        "required": ["total", "offset", "items"],
        "properties": {
            "total": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "items": {"type": "array", "items": _ref("RetainedMessage")},
        },
    },
    "Publish": {
        "type": "object",
        "required": ["topic"],
        "additionalProperties": False,
        "properties": {
            "topic": {
                "type": "string",
                "minLength": 1,
                "pattern": _PUBLISH_TOPIC,
                "description": "A topic name (lone surrogates, which JSON allows and UTF-8 "
                "cannot carry, become U+FFFD).",
            },
            "payload": {
                "type": "string",
                "description": "UTF-8 text (lone surrogates become U+FFFD).",
                "default": "",
            },
            "payload_base64": {
                "type": "string",
                "pattern": _BASE64,
                "description": "Binary payload, base64; instead of payload.",
            },
            "qos": {"type": "integer", "minimum": 0, "maximum": 2, "default": 0},
            "retain": {"type": "boolean", "default": False},
        },
    },
    "Published": {
        "type": "object",
        "required": ["matched"],
        "properties": {
            "matched": {"type": "boolean", "description": "Whether a subscription matched."}
        },
    },
    "Listener": {
        "type": "object",
        "required": ["name", "protocol", "address", "port", "tls", "connections"],
        "properties": {
            "name": {"type": "string", "description": "Its label in /metrics."},
            "protocol": {"type": "string", "enum": ["mqtt", "websockets", "http"]},
            "address": {"type": ["string", "null"], "description": "null: every address."},
            "port": {"type": ["integer", "null"]},
            "unix_socket_path": {"type": ["string", "null"]},
            "tls": {"type": "boolean"},
            "mount_point": {"type": ["string", "null"]},
            "max_connections": {"type": "integer"},
            "connections": {"type": ["integer", "null"], "description": "Open now (MQTT)."},
            "accepted": {"type": ["integer", "null"], "description": "Since the start (MQTT)."},
        },
    },
    "Listeners": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref("Listener")}},
    },
    "Configuration": {
        "type": "object",
        "required": ["source", "options", "bridges"],
        "properties": {
            "source": {"type": ["string", "null"], "description": "The file read."},
            "options": {
                "type": "object",
                "description": "The broker's settings by name; a secret (a password hash, a "
                'backend\'s options) shows only as "(set)" or null.',
            },
            "bridges": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "addresses"],
                    "properties": {
                        "name": {"type": "string"},
                        "addresses": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "HeldValue": {
        "type": "object",
        "required": ["time", "qos", "retain", "size", "payload_base64"],
        "properties": {
            "time": {"type": "integer", "description": "When (ms since the epoch, to 1 s)."},
            "qos": {"type": "integer", "minimum": 0, "maximum": 2},
            "retain": {"type": "boolean"},
            "size": {"type": "integer", "minimum": 0},
            "payload_base64": {
                "type": "string",
                "description": "The payload's first 4096 bytes, base64.",
            },
        },
    },
    "TopicHistory": {
        "type": "object",
        "required": ["topic", "tracking", "count", "items"],
        "properties": {
            "topic": {"type": "string"},
            "tracking": {
                "type": "boolean",
                "description": "Whether a dashboard stream is open (values are kept only then).",
            },
            "count": {"type": "integer", "minimum": 0},
            "items": {"type": "array", "items": _ref("HeldValue")},
        },
    },
    "StreamEvent": {
        "type": "object",
        "description": "One server-sent event of /api/stream.",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": ["stats", "topics", "history"]},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "description": "stats: the broker's counters (totals: received, sent, routed, "
                "dropped, no_subscribers) and gauges (connections, sessions, subscriptions, "
                "retained), with the time in ms. topics: {time, full, topics: [{topic, "
                "count, rate, last}], tracked, untracked}; full is true in a stream's first "
                "one (every topic known), then each lists the topics published in the last "
                "second; last is a HeldValue whose payload is cut at 256 bytes. history (a stream "
                "opened with explore): the explored topic's TopicHistory, in the first chunk "
                "and in each update in which it changed.",
            },
        },
    },
    "Reloaded": {
        "type": "object",
        "required": ["reloaded"],
        "properties": {
            "reloaded": {
                "type": "boolean",
                "description": "Whether every file that reloads did (see the broker's log).",
            }
        },
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the admin API."""
    no_content = {"description": "Done."}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "midge admin API",
            "version": __version__,
            "description": "The broker's clients, sessions and retained messages; publish; "
            "reload. HTTP Basic with admin_user / admin_password_hash (docs/operations.md).",
        },
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": _SCHEMAS,
        },
        "security": [{"basic": []}],
        "paths": {
            "/api/health": {
                "get": {
                    "summary": "Liveness: the process answers.",
                    "security": [],
                    "responses": {"200": _json(_ref("Status"), "Alive.")},
                }
            },
            "/api/ready": {
                "get": {
                    "summary": "Readiness: the broker accepts MQTT connections.",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Status"), "Ready."),
                        "503": _json(_ref("Status"), "Starting or stopping."),
                    },
                }
            },
            "/api/clients": {
                "get": {
                    "summary": "Clients and sessions, sorted by client id, a page at a time.",
                    "parameters": [
                        {
                            "name": "search",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "Only client ids or usernames containing this.",
                        },
                        {
                            "name": "state",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": ["all", "connected", "disconnected"],
                                "default": "all",
                            },
                        },
                        {
                            "name": "scope",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": ["node", "cluster"],
                                "default": "node",
                            },
                            "description": "On a cluster node, cluster lists every live node's "
                            "clients (each with its node); elsewhere both mean the whole broker.",
                        },
                        *_PAGING,
                    ],
                    "responses": {
                        "200": _json(_ref("ClientPage"), "A page of clients."),
                        "400": _ERROR,
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/clients/{client_id}": {
                "get": {
                    "summary": "One client's session: subscriptions, queue and in flight.",
                    "parameters": [_CLIENT_ID],
                    "responses": {
                        "200": _json(_ref("ClientDetails"), "The client."),
                        "404": _json(_ref("Error"), "No such session."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/clients/{client_id}/disconnect": {
                "post": {
                    "summary": "Disconnect a client (its will is published); the session "
                    "stays as its expiry says.",
                    "parameters": [_CLIENT_ID],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("Disconnect")}},
                    },
                    "responses": {
                        "204": no_content,
                        "400": _ERROR,
                        "404": _json(_ref("Error"), "No such client connected."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/sessions/{client_id}": {
                "delete": {
                    "summary": "Delete a session no client is connected to (its delayed will "
                    "is dropped).",
                    "parameters": [_CLIENT_ID],
                    "responses": {
                        "204": no_content,
                        "404": _json(_ref("Error"), "No such session."),
                        "409": _json(_ref("Error"), "A client is connected: disconnect it first."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/retained": {
                "get": {
                    "summary": "Retained messages matching a filter, sorted by topic.",
                    "parameters": [
                        {
                            "name": "filter",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "default": "#",
                                "minLength": 1,
                                "pattern": _FILTER,
                            },
                            "description": "A topic filter (default #: all but $SYS).",
                        },
                        *_PAGING,
                    ],
                    "responses": {
                        "200": _json(_ref("RetainedPage"), "A page of retained messages."),
                        "400": _ERROR,
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/retained/message": {
                "get": {
                    "summary": "The retained message of one topic.",
                    "parameters": [_TOPIC],
                    "responses": {
                        "200": _json(_ref("RetainedMessage"), "The message."),
                        "400": _ERROR,
                        "404": _json(_ref("Error"), "None retained there."),
                        **_AUTH_ERRORS,
                    },
                },
                "delete": {
                    "summary": "Clear the retained message of one topic (nothing is routed).",
                    "parameters": [_TOPIC],
                    "responses": {
                        "204": no_content,
                        "400": _ERROR,
                        "404": _json(_ref("Error"), "None retained there."),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/api/publish": {
                "post": {
                    "summary": "Publish a message as the broker (no client id, no ACL check).",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Publish")}},
                    },
                    "responses": {
                        "200": _json(_ref("Published"), "Routed."),
                        "400": _ERROR,
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/listeners": {
                "get": {
                    "summary": "The listeners (read-only).",
                    "responses": {
                        "200": _json(_ref("Listeners"), "The listeners."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/config": {
                "get": {
                    "summary": "The configuration in force (read-only, secrets hidden).",
                    "responses": {
                        "200": _json(_ref("Configuration"), "The settings."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/stream": {
                "get": {
                    "summary": "The web dashboard's live updates, as server-sent events: "
                    "`stats` (the broker's counters) and `topics` (the topics published in the "
                    "last second: count, rate, last value) once a second. While one is open "
                    "the broker keeps a table of topics; docs/operations.md.",
                    "parameters": [
                        {
                            "name": "seconds",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_STREAM_SECONDS,
                            },
                            "description": "End the stream after this long (default: never).",
                        },
                        {
                            "name": "explore",
                            "in": "query",
                            "schema": {"type": "string", "minLength": 1, "pattern": _TOPIC_NAME},
                            "description": "A topic (not a filter) whose history the stream "
                            "sends each second it changed (the page's topic explorer), as "
                            "/api/topics/history gives it.",
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The events (text/event-stream).",
                            "content": {"text/event-stream": {"schema": _ref("StreamEvent")}},
                        },
                        "400": _ERROR,
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/topics/history": {
                "get": {
                    "summary": "The last values of a topic the dashboard's table holds "
                    "(only while a dashboard stream is open), newest first.",
                    "parameters": [_TOPIC],
                    "responses": {
                        "200": _json(_ref("TopicHistory"), "Its values."),
                        "400": _ERROR,
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/reload": {
                "post": {
                    "summary": "Reload as SIGHUP does: certificates, password, ACL and SCRAM "
                    "files.",
                    "responses": {"200": _json(_ref("Reloaded"), "Done."), **_AUTH_ERRORS},
                }
            },
            "/api/cluster": {
                "get": {
                    "summary": "This cluster node (its id, whether its Redis answers), the "
                    "live nodes, itself included, and the cluster's figures (totals and by "
                    "node); nulls and no nodes outside a cluster.",
                    "responses": {"200": _json(_ref("Cluster"), "The cluster."), **_AUTH_ERRORS},
                }
            },
        },
    }
