"""The import graph of src/vireid: no circles, serve/ never reaches engine/, every module imports on its own.

The graph is read from the source (every import statement, also those inside functions, so a deferred
import cannot hide a circle; imports under `if TYPE_CHECKING:` never run and are not edges). An import
of `vireid.a.b` also imports the package `vireid.a` (its `__init__` runs first), so that edge is
counted too, unless the importer lives inside `vireid.a`. The one exception is the package face
`vireid/__init__.py`, whose `__getattr__` re-exports `FeatureExtractor` lazily by design: its
function-level imports are not edges. `python tests/test_architecture.py` prints the graph's cycles.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "vireid"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def _resolve(current: str, is_package: bool, level: int, target: str | None) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    if level:
        base = base[: len(base) - (level - 1)]
    else:
        base = []
    return ".".join([*base, *(target.split(".") if target else [])])


def import_graph() -> dict[str, set[str]]:
    """module -> the vireid modules it imports (with the parent packages each import runs)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        skipped: set[int] = set()
        for node in ast.walk(tree):
            # the package face's lazy re-exports are the designed exception; typing-only imports never run
            lazy_face = name == ROOT and isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
            typing_only = isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                                   "typing.TYPE_CHECKING")
            if lazy_face or typing_only:
                skipped |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                targets = [base]
                targets += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
            for t in targets:
                if t != ROOT and not t.startswith(ROOT + "."):
                    continue
                parts = t.split(".")
                for i in range(2, len(parts) + 1):  # the module and every package above it but the root
                    dep = ".".join(parts[:i])
                    # a package that holds the importer is already being imported: no edge
                    if dep in mods and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read_from_every_module():
    graph = import_graph()
    assert len(graph) > 80 and "vireid.inference.embed" in graph
    # sanity: a known edge and a known package edge are seen
    assert "vireid.methods.base" in graph["vireid.inference.embed"]
    assert "vireid.runs" in graph["vireid.inference.model"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_serve_does_not_import_engine():
    graph = import_graph()
    bad = {m: sorted(d for d in deps if d.startswith("vireid.engine")) for m, deps in graph.items()
           if m.startswith("vireid.serve")}
    assert not any(bad.values()), bad


def test_registries_and_config_stay_leaves():
    graph = import_graph()
    assert graph["vireid.registry"] <= {"vireid.core"}
    assert graph["vireid.config"] <= {"vireid.core", "vireid.registry"}


def test_the_command_line_parser_imports_no_torch():
    """`vireid --help` stays fast: every sub-command registers without importing torch."""
    import subprocess

    code = ("import sys\nfrom vireid.cli import build_parser\nbuild_parser()\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('vireid'))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _import_alone(name: str) -> str | None:
    import importlib
    import traceback

    try:
        importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - report anything
        return traceback.format_exc(limit=3)
    return None


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter():
    """Each module in its own forked child of an interpreter that has imported no vireid module, so an import
    that only works after another module was imported first is caught. Third-party packages are imported
    once in the parent (they are not what is tested)."""
    names = [m for m in modules() if m != "vireid.__main__"]
    code = ("import sys, multiprocessing as mp, numpy, PIL.Image, yaml, torch, torchvision\n"
            "assert not [m for m in sys.modules if m == 'vireid' or m.startswith('vireid.')]\n"
            "from tests.test_architecture import _import_alone\n"
            "names = sys.argv[1:]\n"
            "with mp.get_context('fork').Pool(2, maxtasksperchild=1) as pool:\n"
            "    for name, err in zip(names, pool.map(_import_alone, names, chunksize=1)):\n"
            "        if err: print('FAILED', name, err, sep='\\n')\n")
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600,
                          cwd=str(SRC.parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FAILED" not in proc.stdout, proc.stdout[-5000:]


if __name__ == "__main__":
    graph = import_graph()
    found = cycles(graph)
    print(f"{len(graph)} modules, {sum(len(v) for v in graph.values())} import edges, {len(found)} cycle(s)")
    for c in found:
        print("  " + " <-> ".join(c))
