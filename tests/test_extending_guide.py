"""docs/extending.md runs as written: its Python blocks are executed in order, in an empty directory."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from vireid.registry import DATASETS, METHODS, PROTOCOLS

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def python_blocks(text: str) -> list[str]:
    """The fenced ```python blocks of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_guide_has_code_for_all_three_kinds():
    code = "\n".join(python_blocks(GUIDE.read_text()))
    assert "@register_method(" in code and "@register_dataset(" in code and "@register_protocol(" in code


def test_the_extending_guide_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("extending_guide")  # the reader's session: one module, blocks run in order
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    try:
        for i, block in enumerate(python_blocks(GUIDE.read_text())):
            code = compile(block, f"{GUIDE.name}[block {i + 1}]", "exec", dont_inherit=True)
            exec(code, namespace)  # noqa: S102
        results = namespace["results"].to_json()
        (entry,) = results["protocols"].values()
        assert len(entry["features"]["bn"]["trials"]) == 2  # the guide's two gallery draws
        assert (tmp_path / "runs" / "two_stem" / "results.json").is_file()
        assert "csv_list/ir2vis" in capsys.readouterr().out
    finally:  # the guide's names must not leak into other tests' registries
        for registry, name in ((METHODS, "two_stem"), (DATASETS, "csv_list"), (PROTOCOLS, "csv_list")):
            if name in registry:
                registry.unregister(name)
