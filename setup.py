"""Optional mypyc compilation of the hot modules (``MIDGE_MYPYC=1 pip install .``).

Everything else about the package is in pyproject.toml. The modules listed here stay plain typed
Python: a normal (or editable) install runs them as such, and the test suite runs against both
builds (``make test`` checks the compiled one too).
"""

import os

from setuptools import setup

HOT_MODULES = [
    "src/midge/codec/packets.py",
    "src/midge/codec/utf8.py",
    "src/midge/codec/decode.py",
    "src/midge/codec/encode.py",
    "src/midge/broker/model.py",
    "src/midge/broker/outgoing.py",
    "src/midge/transport/writer.py",
    "src/midge/broker/topictree.py",
    "src/midge/broker/session.py",
    "src/midge/broker/broker.py",
    "src/midge/broker/connection.py",
    "src/midge/cluster/workers.py",
    "src/midge/store/sqlite.py",
]

ext_modules = []
if os.environ.get("MIDGE_MYPYC") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(HOT_MODULES, opt_level="3")

setup(ext_modules=ext_modules)
