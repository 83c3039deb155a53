"""benchmarks/embed_startup.py --write: its section of docs/performance.md is put above the
part benchmarks/run.py rewrites, then replaced in place, leaving the rest of the page alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "embed_startup", ROOT / "benchmarks" / "embed_startup.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_places_then_replaces_the_section(tmp_path: Path) -> None:
    m = _module()
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n\nintro\n\n{m.GENERATED}\n\n## Results\nrows\n")
    first = m.section(3, (0.25, 0.3), [(0.001, 0.002), (0.002, 0.004), (0.003, 0.006)])
    m.write(first, page)
    text = page.read_text()
    assert text.index("intro") < text.index(m.BEGIN) < text.index(m.END) < text.index(m.GENERATED)
    assert "| start until listening | 2.0 ms |" in text and "250 ms until listening" in text
    second = m.section(3, (0.5, 0.6), [(0.004, 0.005)] * 3)
    m.write(second, page)
    again = page.read_text()
    assert again.count(m.BEGIN) == 1 and "| start until listening | 4.0 ms |" in again
    assert again.endswith("## Results\nrows\n") and again.startswith("# Performance\n\nintro\n")


def test_the_page_has_the_section_with_figures() -> None:
    text = (ROOT / "docs" / "performance.md").read_text()
    m = _module()
    section = text.split(m.BEGIN, 1)[1].split(m.END, 1)[0]
    assert "## Embedded broker start-up" in section and "| start until listening |" in section
    assert text.index(m.END) < text.index(m.GENERATED)
