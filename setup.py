"""The build of midge's hot modules: compiled with mypyc by default, pure Python as a fallback.

Everything else about the package is in pyproject.toml. A normal install (``pip install .``, or a
wheel from ``make dist``) compiles the modules in HOT_MODULES with mypyc, as black and mypy ship
theirs. They stay plain typed Python, so the same code runs uncompiled:

- ``MIDGE_PURE=1 pip install .`` forces the pure-Python build;
- an editable install (``pip install -e .``, the developer's ``make install``) stays pure, so an
  edited module is never shadowed by a stale compiled one;
- without a working C compiler (or without mypyc) the install falls back to pure Python and says
  so in one line.

``midge --version`` says which build runs. The test suite runs against both (``make test``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HOT_MODULES = [
    "src/midge/codec/packets.py",
    "src/midge/codec/utf8.py",
    "src/midge/codec/decode.py",
    "src/midge/codec/encode.py",
    "src/midge/broker/model.py",
    "src/midge/broker/outgoing.py",
    "src/midge/transport/writer.py",
    "src/midge/broker/tap.py",
    "src/midge/broker/topictree.py",
    "src/midge/broker/session.py",
    "src/midge/broker/broker.py",
    "src/midge/broker/connection.py",
    "src/midge/cluster/workers.py",
    "src/midge/cluster/targets.py",
    "src/midge/store/sqlite.py",
]

#: Commands that make an editable install (PEP 660, and the legacy ``setup.py develop``).
_EDITABLE_COMMANDS = {"editable_wheel", "develop"}


#: Why this build is pure Python, said once while the build runs (setup.py itself is run more
#: than once by pip: once to ask for build requirements, once to build).
_pure_because: list[str] = []


def _say(message: str) -> None:
    print(f"midge: {message}", file=sys.stderr, flush=True)


class _BuildPy(build_py):
    def run(self) -> None:
        for reason in _pure_because:
            _say(f"{reason}: installing the pure-Python build")
        super().run()


def _short(exc: BaseException) -> str:
    """The first line of an error, cut short: compiler errors quote the whole command line."""
    text = (str(exc).splitlines() or [""])[0] or type(exc).__name__
    return text if len(text) <= 100 else text[:97] + "..."


class _BuildExtOrPure(build_ext):
    """Compile the mypyc extensions; if the C compiler is missing or fails, ship pure Python.

    The pure modules are in the wheel either way (setuptools packages the ``.py`` files too), so
    dropping the extensions leaves a complete, working install.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CCompilerError, DistutilsExecError, PlatformError, OSError
            self._fall_back(exc)

    def _fall_back(self, exc: BaseException) -> None:
        _say(f"no working C compiler ({_short(exc)}): installing the pure-Python build")
        # Half a build must not be shipped: the compiled modules share one runtime library.
        for output in self.get_outputs():
            if os.path.exists(output):
                os.remove(output)
        self.extensions = []
        self.distribution.ext_modules = []


def _ext_modules() -> list[Any]:
    if os.environ.get("MIDGE_PURE") == "1":
        _pure_because.append("MIDGE_PURE=1")
        return []
    if _EDITABLE_COMMANDS & set(sys.argv):
        return []  # the developer's editable install stays pure (see above)
    try:
        from mypyc.build import mypycify

        # The build environment has midge's dependencies but not its extras (httpx, ldap3, jwt,
        # ...), which only modules outside HOT_MODULES import: their types do not matter here.
        flags = ["--ignore-missing-imports", "--follow-imports=silent"]
        return list(mypycify([*flags, *HOT_MODULES], opt_level="3"))
    except (Exception, SystemExit) as exc:  # no mypyc, or it refused: the pure build works
        _pure_because.append(f"mypyc unavailable ({_short(exc)})")
        return []


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": _BuildExtOrPure, "build_py": _BuildPy})
