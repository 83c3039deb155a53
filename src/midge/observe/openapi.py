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
        },
    },
    "ClientPage": {
        "type": "object",
        "required": ["total", "offset", "items"],
        "properties": {
            "total": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "items": {"type": "array", "items": _ref("ClientSummary")},
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
            "/api/reload": {
                "post": {
                    "summary": "Reload as SIGHUP does: certificates, password, ACL and SCRAM "
                    "files.",
                    "responses": {"200": _json(_ref("Reloaded"), "Done."), **_AUTH_ERRORS},
                }
            },
            "/api/cluster": {
                "get": {
                    "summary": "This cluster node (its id, whether its Redis answers) and the "
                    "live nodes, itself included; nulls and no nodes outside a cluster.",
                    "responses": {"200": _json(_ref("Cluster"), "The cluster."), **_AUTH_ERRORS},
                }
            },
        },
    }
