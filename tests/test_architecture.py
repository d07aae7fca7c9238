"""The layers of docs/architecture.md hold: no import runs to a higher layer, no package cycle,
no task test outside the task module, no SQL outside the workspace."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "mmal"


def _layers() -> dict[str, int]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("<!-- layers -->", 1)[1].split("<!-- /layers -->", 1)[0]
    out = {}
    for line in block.strip().splitlines():
        m = re.match(r"\s*(\d+)\.\s+(.*?)\s+—", line)
        assert m, f"unparsed layer line: {line!r}"
        for name in re.findall(r"`([a-z_]+)`", m.group(2)):
            out[name] = int(m.group(1))
    return out


def _unit(module: str) -> str:
    """``mmal.x.y`` -> ``x`` (the top-level package or module under mmal)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mmal"


def _imports():
    """(importing unit, imported unit, file, line) for every absolute mmal import, at any depth."""
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        src = _unit(".".join(rel.parts))
        if src == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmal") and not node.level:
                targets = [node.module] if node.module != "mmal" else [f"mmal.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("mmal.")]
            for t in targets:
                yield src, _unit(t), path.relative_to(ROOT), node.lineno


def test_every_package_has_a_layer():
    layers = _layers()
    units = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units - set(layers) == set(), f"packages without a layer in docs/architecture.md: {units - set(layers)}"


def test_no_import_runs_to_a_higher_layer():
    layers = _layers()
    bad = [f"{f}:{line}: {a} (layer {layers[a]}) imports {b} (layer {layers[b]})"
           for a, b, f, line in _imports() if a != b and b in layers and a in layers and layers[b] > layers[a]]
    assert not bad, "\n".join(bad)


def test_no_package_cycle():
    graph: dict[str, set] = {}
    for a, b, _, _ in _imports():
        if a != b:
            graph.setdefault(a, set()).add(b)
    # a cycle would need an edge to a higher-or-equal layer; check it directly too (Tarjan-free DFS)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in graph.get(v, ()):
            if state.get(w) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(w):] + [w]))
            if w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in list(graph):
        if v not in state:
            visit(v)


def _source_lines(exclude: tuple[str, ...]):
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] in exclude:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            yield rel, i, code


def test_no_task_branch_outside_the_task_module():
    """Nothing outside mmal.tasks compares a task name or asks whether a workspace is relevance."""
    pat = re.compile(r"""(task|\.name)\s*(==|!=|in)\s*\(?["'](binary|multiclass|relevance|classify)["']|is_relevance""")
    hits = [f"{rel}:{i}: {code.strip()}" for rel, i, code in _source_lines(("tasks",)) if pat.search(code)]
    assert not hits, "\n".join(hits)


def test_no_sql_outside_the_workspace():
    pat = re.compile(r"""\.execute(many|script)?\(|\b(SELECT|INSERT|UPDATE|DELETE)\s+[A-Z*(]""")
    hits = [f"{rel}:{i}: {code.strip()}" for rel, i, code in _source_lines(("workspace",)) if pat.search(code)]
    assert not hits, "\n".join(hits)


def test_no_test_hook_in_shipped_code():
    hits = [f"{rel}:{i}" for rel, i, code in _source_lines(()) if "MMAL_TEST" in code]
    assert not hits, "\n".join(hits)


def test_every_test_named_in_docs_methods_exists():
    """docs/methods.md maps methods to tests; each `tests/FILE::name` (and each bare name
    after it in the same cell) must be a test function of that file."""
    text = (ROOT / "docs" / "methods.md").read_text()
    missing = []
    for cell in re.findall(r"`tests/[^|]+", text):
        file = None
        for new_file, name in re.findall(r"`(?:(tests/[\w/]+\.py)::)?(test_\w+)`", cell):
            file = new_file or file
            if not re.search(rf"^def {name}\(", (ROOT / file).read_text(), re.M):
                missing.append(f"{file}::{name}")
    assert not missing, missing
