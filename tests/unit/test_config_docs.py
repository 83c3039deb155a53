"""docs/configuration.md is rendered from the option table: the committed page must match it."""

from __future__ import annotations

from pathlib import Path

from midge.config.docs import render
from midge.config.options import UNSUPPORTED, all_options

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_page_matches_the_table() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is out of date with the option table: run `make docs`"
    )


def test_every_option_is_on_the_page() -> None:
    page = render()
    for opt in all_options():
        shown = f"`{opt.name}*`" if opt.prefix and opt.kind == UNSUPPORTED else opt.name
        assert shown.strip("`") in page, opt.name
