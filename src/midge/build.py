"""Which build of midge is running: the mypyc-compiled hot modules, or pure Python.

A normal install (``pip install .``, a wheel from ``make dist``) compiles the hot modules listed in
setup.py with mypyc; ``MIDGE_PURE=1``, an editable install or a machine without a C compiler gives
the pure-Python build, which behaves the same and costs about twice the CPU per message
(docs/performance.md). ``midge --version`` and the broker's start-up log line say which one runs.
"""

from __future__ import annotations

import importlib
from importlib.machinery import EXTENSION_SUFFIXES

#: Modules that a compiled build always compiles (a subset of setup.py's HOT_MODULES that every
#: build keeps): if they are extension modules, the build is the compiled one.
_PROBES = ("midge.codec.decode", "midge.broker.connection", "midge.broker.broker")


def _compiled(module_name: str) -> bool:
    path = getattr(importlib.import_module(module_name), "__file__", None) or ""
    return path.endswith(tuple(EXTENSION_SUFFIXES))


def build_kind() -> str:
    """``"compiled"`` (mypyc), ``"pure"`` (pure Python), or ``"mixed"`` (some hot modules
    compiled and others not: a stale build directory; reinstall)."""
    compiled = [_compiled(name) for name in _PROBES]
    if all(compiled):
        return "compiled"
    return "mixed" if any(compiled) else "pure"


def describe() -> str:
    """``midge 0.1.0 (compiled with mypyc)`` or ``midge 0.1.0 (pure Python)``."""
    from midge import __version__

    kind = build_kind()
    what = {
        "compiled": "compiled with mypyc",
        "pure": "pure Python",
        "mixed": "partly compiled: reinstall midge",
    }[kind]
    return f"midge {__version__} ({what})"
