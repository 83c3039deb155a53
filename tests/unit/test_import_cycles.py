"""Import cycles in src/midge: the cycles there are must be exactly the documented ones.

The graph holds the imports a module runs when it is imported: module-level ``import`` and
``from ... import`` statements (also inside a module-level ``try``/``if``/class body), but not
those under ``if TYPE_CHECKING:`` nor inside functions (deferred on purpose). Importing
``a.b.c`` also runs the packages ``a`` and ``a.b``, except those the importer is itself inside.
A cycle is reported as the sorted modules of one strongly connected component.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

#: The cycles of module-level imports there are, each with why it is left. None today (nor
#: before issue 10: the config <-> auth.ldap cycle was closed by an import inside a function,
#: see ALLOWED_DEFERRED).
ALLOWED: list[list[str]] = []

#: The cycles closed only by an import run later (inside a function, or the option registry's
#: importlib): Python runs those once both sides are fully imported, so they are safe, but each
#: is listed here so that a new one is a decision. (Issue 10 removed midge.config <->
#: midge.auth.ldap: config called the backend's parse_settings; LDAP's options and their check
#: now live in midge.auth.ldap_options.)
ALLOWED_DEFERRED: list[list[str]] = [
    # The option registry (midge.config.options.groups) imports the modules that declare option
    # groups by name on first use of the table, and they import midge.config (Option, checks,
    # ConfigError). No backend is in it: midge.auth.ldap / oauth / http import midge.config, and
    # midge.config never imports them. midge.bridge.options (the bridge options and BridgeConfig)
    # is such a declaration module too; the readers import it inside their bridge hooks.
    [
        "midge.auth.http_options",
        "midge.auth.ldap_options",
        "midge.auth.oauth_options",
        "midge.bridge.options",
        "midge.config",
        "midge.config.model",
        "midge.config.mosquitto",
        "midge.config.options",
        "midge.config.table",
        "midge.config.toml",
    ],
    # The cluster (issue 15): midge.cluster.redis_router reuses the plain-data forms of messages
    # and sessions of midge.cluster.workers, which imports midge.server when a worker process
    # starts; midge.server imports the router when it starts a cluster node, and the cluster's
    # figures (midge.cluster.cluster_view, which uses the router's channel names and TTL).
    [
        "midge.cluster.cluster_view",
        "midge.cluster.redis_router",
        "midge.cluster.workers",
        "midge.server",
    ],
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "midge").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], deferred: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """The import statements run at import time (no TYPE_CHECKING blocks; with ``deferred``,
    also those inside functions, run later)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                found += _imports(node.body, deferred)
            found += _imports(node.orelse, deferred)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                found += _imports(block, deferred)
            for handler in node.handlers:
                found += _imports(handler.body, deferred)
        elif isinstance(node, ast.With | ast.ClassDef | ast.For | ast.While) or (
            deferred and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ):
            found += _imports(node.body, deferred)
    return found


def graph(deferred: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        own_package = name if is_package else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets: list[str] = []
        for node in _imports(tree.body, deferred):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
                continue
            base = node.module or ""
            if node.level:
                parts = own_package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            targets.append(base)
            targets += [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                module = ".".join(parts[:i])
                if module not in modules or module == name:
                    continue
                if name.startswith(module + "."):
                    continue  # a package the importer is inside: already being imported
                edges[name].add(module)
    if deferred:
        # The option registry imports the modules declaring option groups by name.
        from midge.config.options import OPTION_MODULES

        edges.setdefault("midge.config.options", set()).update(OPTION_MODULES)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_import_cycles_are_the_documented_ones() -> None:
    assert cycles(graph()) == sorted(sorted(c) for c in ALLOWED)


def test_the_deferred_import_cycles_are_the_documented_ones() -> None:
    assert cycles(graph(deferred=True)) == sorted(sorted(c) for c in ALLOWED_DEFERRED)


def test_nothing_midge_config_imports_imports_it_back() -> None:
    """No module midge.config imports at module level (transitively) imports midge.config."""
    edges = graph()
    config = {m for m in edges if m == "midge.config" or m.startswith("midge.config.")}
    for start in config:
        seen: set[str] = set()
        todo = [m for m in edges[start] if m not in config]
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            assert not edges[module] & config, f"{start} -> ... -> {module} -> midge.config"
            todo.extend(edges[module])


def test_no_backend_is_in_a_cycle_with_config() -> None:
    backends = {"midge.auth.ldap", "midge.auth.oauth", "midge.auth.http", "midge.auth.plugin"}
    for component in cycles(graph(deferred=True)):
        assert not backends & set(component), component


def test_the_graph_sees_a_cycle() -> None:
    """The detector itself: a made-up cycle a -> b -> a, and a TYPE_CHECKING import ignored."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
        "def f():\n    import y\ntry:\n    import z\nexcept ImportError:\n    pass\n"
    )
    assert [a.name for n in _imports(tree.body) if isinstance(n, ast.Import) for a in n.names] == [
        "z"
    ]
