"""``midge ctl``: the admin API (midge.observe.http) from the command line.

``midge ctl [--url URL] [--user NAME] COMMAND ...``; the password comes from ``--password`` or,
better (it stays out of ``ps``), the ``MIDGE_ADMIN_PASSWORD`` environment variable; the URL and
user from ``MIDGE_ADMIN_URL`` and ``MIDGE_ADMIN_USER``. Plain ``urllib``: no dependency.
Exit status 0 on success, 1 when the API refused (its message on stderr), 2 when unreachable.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:9100"


class CtlError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ctl",
        help="the admin API: clients, kick, sessions, retained, publish, reload",
        description="Talk to a running broker's admin API (a `protocol http` listener).",
    )
    p.add_argument(
        "--url",
        default=os.environ.get("MIDGE_ADMIN_URL", DEFAULT_URL),
        help=f"the http listener (default $MIDGE_ADMIN_URL or {DEFAULT_URL})",
    )
    p.add_argument("--user", default=os.environ.get("MIDGE_ADMIN_USER"), help="admin_user")
    p.add_argument(
        "--password",
        default=os.environ.get("MIDGE_ADMIN_PASSWORD"),
        help="its password (better: $MIDGE_ADMIN_PASSWORD)",
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    cmd = p.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)
    c = cmd.add_parser("clients", help="list clients and sessions")
    c.add_argument("--search", default="", help="client ids or usernames containing this")
    c.add_argument("--state", choices=["all", "connected", "disconnected"], default="all")
    c.add_argument("--offset", type=int, default=0)
    c.add_argument("--limit", type=int, default=100)
    c.add_argument(
        "--cluster",
        action="store_true",
        help="a cluster node: the clients of every node, each with its node (docs/cluster.md)",
    )
    c = cmd.add_parser("client", help="one client: subscriptions, queue, in flight")
    c.add_argument("client_id")
    c = cmd.add_parser("kick", help="disconnect a client (v5: DISCONNECT with a reason)")
    c.add_argument("client_id")
    c.add_argument(
        "--reason", type=lambda v: int(v, 0), default=0x98, help="reason code (default 0x98)"
    )
    c = cmd.add_parser("delete-session", help="delete a session no client is connected to")
    c.add_argument("client_id")
    c = cmd.add_parser("retained", help="list retained messages (or get / delete one)")
    c.add_argument("--filter", default="#", help="topic filter to list (default #)")
    c.add_argument("--get", metavar="TOPIC", help="show the retained message of TOPIC")
    c.add_argument("--delete", metavar="TOPIC", help="clear the retained message of TOPIC")
    c.add_argument("--offset", type=int, default=0)
    c.add_argument("--limit", type=int, default=100)
    c = cmd.add_parser("publish", help="publish a message as the broker")
    c.add_argument("topic")
    c.add_argument("message", nargs="?", default="")
    c.add_argument("-q", "--qos", type=int, choices=[0, 1, 2], default=0)
    c.add_argument("-r", "--retain", action="store_true")
    cmd.add_parser("reload", help="reload as SIGHUP does")
    cmd.add_parser("health", help="liveness")
    cmd.add_parser("ready", help="readiness")
    cmd.add_parser("metrics", help="print /metrics")
    cmd.add_parser("cluster", help="this cluster node and the live nodes (docs/cluster.md)")


def request(
    args: argparse.Namespace,
    method: str,
    path: str,
    query: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, bytes]:
    """One API call: (status, body); a refusal raises :class:`CtlError` with the API's error."""
    url = args.url.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if args.user is not None:
        token = base64.b64encode(f"{args.user}:{args.password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = json.loads(raw)["error"]
        except (ValueError, KeyError, TypeError):
            message = raw.decode("utf-8", "replace") or exc.reason
        raise CtlError(f"{exc.code}: {message}", exc.code) from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except CtlError as exc:
        print(f"midge ctl: {exc}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"midge ctl: cannot reach {args.url}: {reason}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    command = args.ctl_command
    if command == "clients":
        query: dict[str, Any] = {"state": args.state, "offset": args.offset, "limit": args.limit}
        if args.search:
            query["search"] = args.search
        if args.cluster:
            query["scope"] = "cluster"
        page = json.loads(request(args, "GET", "/api/clients", query)[1])
        if args.json:
            _print_json(page)
            return 0
        for c in page["items"]:
            state = "connected" if c["connected"] else "offline"
            node = f"node={c['node']}\t" if "node" in c else ""
            print(
                f"{c['client_id']}\t{node}{state}\tv{c['protocol_version']}\t"
                f"{c['username'] or '-'}\t{c['address'] or '-'}\tsubs={c['subscriptions']}\t"
                f"queued={c['queued']}\tinflight={c['inflight']}"
            )
        shown = len(page["items"])
        print(f"({shown} of {page['total']})", file=sys.stderr)
        if page.get("missing"):
            print(f"(no answer from {', '.join(page['missing'])})", file=sys.stderr)
        return 0
    if command == "client":
        path = "/api/clients/" + urllib.parse.quote(args.client_id, safe="")
        _print_json(json.loads(request(args, "GET", path)[1]))
        return 0
    if command == "kick":
        path = "/api/clients/" + urllib.parse.quote(args.client_id, safe="") + "/disconnect"
        request(args, "POST", path, body={"reason_code": args.reason})
        print(f"disconnected {args.client_id}")
        return 0
    if command == "delete-session":
        path = "/api/sessions/" + urllib.parse.quote(args.client_id, safe="")
        request(args, "DELETE", path)
        print(f"deleted the session of {args.client_id}")
        return 0
    if command == "retained":
        if args.delete is not None:
            request(args, "DELETE", "/api/retained/message", {"topic": args.delete})
            print(f"cleared the retained message of {args.delete}")
            return 0
        if args.get is not None:
            found = json.loads(
                request(args, "GET", "/api/retained/message", {"topic": args.get})[1]
            )
            _print_json(found)
            return 0
        listing = {"filter": args.filter, "offset": args.offset, "limit": args.limit}
        page = json.loads(request(args, "GET", "/api/retained", listing)[1])
        if args.json:
            _print_json(page)
            return 0
        for m in page["items"]:
            text = m["payload"] if m["payload"] is not None else f"<{m['size']} bytes>"
            print(f"{m['topic']}\tqos={m['qos']}\t{text}")
        print(f"({len(page['items'])} of {page['total']})", file=sys.stderr)
        return 0
    if command == "publish":
        body = {"topic": args.topic, "payload": args.message, "qos": args.qos}
        body["retain"] = args.retain
        result = json.loads(request(args, "POST", "/api/publish", body=body)[1])
        print("delivered" if result["matched"] else "no subscriber matched")
        return 0
    if command == "reload":
        result = json.loads(request(args, "POST", "/api/reload")[1])
        print(
            "reloaded"
            if result["reloaded"]
            else "not reloaded: no file to reload, or one failed (see the broker's log)"
        )
        return 0 if result["reloaded"] else 1
    if command in ("health", "ready"):
        try:
            status = json.loads(request(args, "GET", f"/api/{command}")[1])["status"]
        except CtlError as exc:
            if exc.status == 503:
                print("unavailable")
                return 1
            raise
        print(status)
        return 0
    if command == "metrics":
        sys.stdout.write(request(args, "GET", "/metrics")[1].decode())
        return 0
    if command == "cluster":
        info = json.loads(request(args, "GET", "/api/cluster")[1])
        if info["node"] is None:
            print("not a cluster node")
            return 0
        if args.json:
            _print_json(info)
            return 0
        print(f"node {info['node']}, Redis {info['redis']}")
        for node in info["nodes"]:
            print(f"  {node}{' (this node)' if node == info['node'] else ''}")
        if "totals" in info:
            _print_cluster_figures(info)
        return 0
    raise AssertionError(command)  # pragma: no cover - argparse allows no other


#: The columns of ``midge ctl cluster``'s table: heading and key in GET /api/cluster's figures.
CLUSTER_COLUMNS = (
    ("connected", "clients_connected"),
    ("sessions", "sessions"),
    ("subscriptions", "subscriptions"),
    ("received", "publish_received"),
    ("sent", "publish_sent"),
    ("queued", "queued"),
    ("inflight", "inflight"),
    ("RSS MiB", "memory"),
)


def _print_cluster_figures(info: dict[str, Any]) -> None:
    """Each node's figures and the cluster's totals, as a table."""
    rows: list[list[str]] = [["", *(head for head, _ in CLUSTER_COLUMNS), "uptime s"]]

    def cells(figures: dict[str, Any]) -> list[str]:
        out = []
        for _, key in CLUSTER_COLUMNS:
            value = figures[key]
            out.append(f"{value / 1048576:.0f}" if key == "memory" else str(value))
        return out

    for node, figures in info["by_node"].items():
        rows.append([node, *cells(figures), str(figures["uptime"])])
    rows.append(["total", *cells(info["totals"]), ""])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        print("  ".join([first, *rest]).rstrip())
    if info["missing"]:
        print(f"no recent figures from: {', '.join(info['missing'])}")
