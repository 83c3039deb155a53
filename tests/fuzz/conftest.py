"""Fixtures for the fuzz tests: a :class:`~tests.fuzz.harness.Rig` around a real broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import RunningBroker
from tests.fuzz.harness import Rig, capture_errors


@pytest.fixture
def make_rig(make_broker: Callable[..., RunningBroker]) -> Iterator[Callable[..., Rig]]:
    """``make_rig(**config_overrides)``: a broker with a sentinel and an error log."""
    rigs: list[Rig] = []
    with capture_errors() as errors:

        def start(**overrides: Any) -> Rig:
            rig = Rig(make_broker(**overrides), errors)
            rigs.append(rig)
            return rig

        yield start
        for rig in rigs:
            rig.close()
        problems = errors.take()
    assert not problems, "the broker logged an error:\n" + "\n".join(problems)


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    """A default broker with a sentinel and an error log."""
    return make_rig()
