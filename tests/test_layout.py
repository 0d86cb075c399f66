"""Package layout: the layers import only downward, and the core never imports strategies/.

The layers, bottom up (docs/design.md, "Layout"):

- ``funcgrad.core``: pure values (state, traces, call values, the strategy interface);
- ``funcgrad.engines``: every effect (HTTP, the local model, cache, meter, files);
- ``funcgrad.tasks``: built-in tasks, written against the core only;
- ``funcgrad.training``: the training loop, the effect driver and the run directory;
- ``funcgrad.cli``: configs, jobs, comparisons and the command line: may import everything.

``strategies/`` (``funcgrad.strategies``) is a plug-in of the core: it may import only
the public facade ``funcgrad`` and ``funcgrad.core``, exactly as a third-party strategy.
"""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import funcgrad

PKG = pathlib.Path(funcgrad.__file__).parent
STRATEGIES = PKG.parent / "strategies"

# layer -> the funcgrad modules it may import (prefixes); everything else under funcgrad is forbidden
ALLOWED = {
    "core": ("funcgrad.core",),
    "engines": ("funcgrad.core", "funcgrad.engines"),
    "tasks": ("funcgrad.core", "funcgrad.tasks"),
    "training": ("funcgrad.core", "funcgrad.engines", "funcgrad.training"),
    "testing": ("funcgrad.core", "funcgrad.engines"),
    "facade": ("funcgrad.core", "funcgrad.engines", "funcgrad.training"),
    "cli": ("funcgrad.core", "funcgrad.engines", "funcgrad.training", "funcgrad.tasks", "funcgrad.cli"),
    "strategies": ("funcgrad.core", "funcgrad.strategies", "funcgrad"),
}


def _imports(path: pathlib.Path, package: str) -> list[tuple[int, str]]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against ``package``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _layer(path: pathlib.Path) -> tuple[str, str]:
    """(layer, package name) of a source file."""
    if path.is_relative_to(STRATEGIES):
        return "strategies", "funcgrad.strategies"
    rel = path.relative_to(PKG)
    if len(rel.parts) == 1:
        return ("facade" if rel.name == "__init__.py" else "testing"), "funcgrad"
    return rel.parts[0], "funcgrad." + rel.parts[0]


def _violations(path: pathlib.Path, layer: str, package: str) -> list[str]:
    allowed = ALLOWED[layer]
    bad = []
    for lineno, mod in _imports(path, package):
        if mod == "strategies" or mod.startswith("strategies."):
            bad.append(f"{path.name}:{lineno}: {mod}")
            continue
        if not (mod == "funcgrad" or mod.startswith("funcgrad.")):
            continue
        if layer != "strategies" and (mod == "funcgrad.strategies" or mod.startswith("funcgrad.strategies.")):
            bad.append(f"{path.name}:{lineno}: {mod}")
            continue
        if mod == "funcgrad":
            ok = layer == "strategies"
        else:
            ok = any(mod == p or mod.startswith(p + ".") for p in allowed if p != "funcgrad")
            # `from funcgrad import X` yields "funcgrad.X": public names of the facade are fine for strategies
            ok = ok or (layer == "strategies" and mod.count(".") == 1 and hasattr(funcgrad, mod.split(".")[1]))
        if not ok:
            bad.append(f"{path.name}:{lineno}: {mod}")
    return bad


def _sources():
    return sorted(PKG.rglob("*.py")) + sorted(STRATEGIES.rglob("*.py"))


def test_public_modules_import():
    code = "import funcgrad, funcgrad.strategies, funcgrad.testing; print(funcgrad.testing.pipelines.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pipelines"
    assert importlib.import_module("funcgrad.strategies").__name__ == "funcgrad.strategies"


def test_the_tree_shows_the_layers():
    subpackages = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").exists())
    assert subpackages == ["cli", "core", "engines", "tasks", "training"]
    loose = sorted(p.name for p in PKG.glob("*.py"))
    assert loose == ["__init__.py", "testing.py"]


def test_every_layer_imports_only_downward():
    files = _sources()
    assert PKG / "core" / "run.py" in files and STRATEGIES / "backprop.py" in files
    offenders = [hit for f in files for hit in _violations(f, *_layer(f))]
    assert offenders == []


def test_the_trace_does_not_import_engines():
    mods = [m for _, m in _imports(PKG / "core" / "trace.py", "funcgrad.core")]
    assert not [m for m in mods if m.startswith("funcgrad.engines")]


@pytest.mark.parametrize(
    "layer, source",
    [("core", "import strategies"), ("core", "from funcgrad.strategies import backprop"),
     ("core", "import funcgrad.strategies.backprop as b"), ("core", "from funcgrad import strategies"),
     ("core", "importlib.import_module('funcgrad.strategies')"), ("core", "from funcgrad.engines.cache import CachedEngine"),
     ("engines", "from funcgrad.training.fit import fit"), ("training", "from funcgrad.cli.job import optimize"),
     ("strategies", "from funcgrad.engines.openai import OpenAIEngine"), ("strategies", "from funcgrad.training import fit"),
     ("core", "from ..engines import cache")],
)
def test_the_scanner_catches_upward_imports(tmp_path, layer, source):
    f = tmp_path / "bad.py"
    f.write_text(source + "\n")
    assert _violations(f, layer, "funcgrad." + layer) != []


def test_the_scanner_allows_downward_imports(tmp_path):
    f = tmp_path / "ok.py"
    f.write_text('GROUP = "funcgrad.strategies"\nfrom funcgrad.core.strategy import Strategy\nfrom . import values\n')
    assert _violations(f, "core", "funcgrad.core") == []
    g = tmp_path / "strategy.py"
    g.write_text("from funcgrad import Note, Update\nfrom funcgrad.core.values import freeze\n")
    assert _violations(g, "strategies", "funcgrad.strategies") == []


def test_every_public_name_has_a_docstring_with_an_example():
    import funcgrad.testing as t

    assert "property-test" in t.__doc__
    for name in t.__all__:
        doc = getattr(t, name).__doc__ or ""
        assert ">>>" in doc, name
