"""Fixtures for the fuzz tests: a :class:`~tests.fuzz.harness.Rig` around the broker core in
memory (tests/memory.py), and ``broker`` in memory too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from midge.config import Config
from tests.fuzz.harness import Rig, capture_errors
from tests.memory import MemoryBroker


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    """``make_rig(**config_overrides)``: a broker with a sentinel and an error log."""
    rigs: list[Rig] = []
    with capture_errors() as errors:

        def start(**overrides: Any) -> Rig:
            rig = Rig(MemoryBroker(Config(**overrides)), errors)
            rigs.append(rig)
            return rig

        yield start
        for rig in rigs:
            rig.close()
            rig.running.stop()
        problems = errors.take()
    assert not problems, "the broker logged an error:\n" + "\n".join(problems)


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    """A default broker with a sentinel and an error log."""
    return make_rig()


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    """A default broker, in memory."""
    running = MemoryBroker(Config())
    yield running
    running.stop()
