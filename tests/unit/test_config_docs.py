"""docs/configuration.md is rendered from the option table: the committed page must match it."""

from __future__ import annotations

from pathlib import Path

import pytest

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


# -- issue 11: every directive of Mosquitto 2's mosquitto.conf(5) has a row

MAN_PAGE = Path("/usr/share/man/man5/mosquitto.conf.5.gz")


def mosquitto_directives() -> list[str]:
    """The directive names mosquitto.conf(5) documents: each entry of the page is a line
    ``\\fBname\\fR [value]`` right before its indented description (``.RS 4``)."""
    import gzip
    import itertools
    import re

    lines = gzip.decompress(MAN_PAGE.read_bytes()).decode("utf-8", "replace").splitlines()
    found: list[str] = []
    for previous, line in itertools.pairwise(lines):
        if line.strip() != ".RS 4":
            continue
        match = re.match(r"\\fB([^\\]+(?:\\&\.[^\\]+)*)\\fR", previous)
        if match is None:
            continue
        name = match.group(1).replace("\\&.", ".").replace("\\-", "-")
        if name not in found:
            found.append(name)
    return found


@pytest.mark.skipif(not MAN_PAGE.exists(), reason="mosquitto's man pages are not installed")
def test_every_mosquitto_directive_is_in_the_table_and_on_the_page() -> None:
    """Each directive of the installed mosquitto.conf(5) is an option of the table (supported,
    accepted and ignored with a notice, or refused with its reason) and has its row on
    docs/configuration.md."""
    from midge.config.mosquitto import conf_option

    directives = mosquitto_directives()
    assert len(directives) > 100, directives  # the page was read
    page = DOC.read_text(encoding="utf-8")
    missing: list[str] = []
    for directive in directives:
        name = directive.removesuffix("*")
        probe = name + "x" if directive.endswith("*") else name
        opt = conf_option(probe)
        if opt is None:
            missing.append(f"{directive}: not in the option table")
            continue
        if opt.kind == UNSUPPORTED and not (opt.note or opt.unsupported):
            missing.append(f"{directive}: refused without a reason")
        shown = f"`{name}*`" if directive.endswith("*") else f"`{name}"
        if shown not in page:
            missing.append(f"{directive}: no row on docs/configuration.md")
    assert not missing, "\n".join(missing)
