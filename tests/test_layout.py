"""Package layout: the layers import only downward, and the core never imports strategies/.

The layers, bottom up (docs/design.md, "Layout"):

- ``funcgrad.core``: pure values (state, traces, call values, the strategy interface);
  ``funcgrad.core`` itself is the public core API;
- ``funcgrad.engines``: every effect (HTTP, the local model, cache, meter, files, threads);
- ``funcgrad.tasks``: built-in tasks, written against the core only;
- ``funcgrad.training``: the training loop, the effect driver and the run directory;
- ``funcgrad.cli``: configs, jobs, comparisons and the command line: may import everything.

``strategies/`` (``funcgrad.strategies``) is a plug-in of the core: it may import only
``funcgrad.core`` and ``funcgrad.strategies``, exactly as a third-party strategy.

The check follows imports **transitively**: a module may not reach a forbidden layer
through another module (importing the facade ``funcgrad`` reaches the training loop).
A module's imports are the modules it names (``import a.b`` names ``a.b``; ``from a
import b`` names ``a`` and, if it is a module, ``a.b``), in its code and in the
examples of its docstrings (they run as doctests); the parent packages Python
initialises on the way are not counted, or the facade would make every import upward.
"""

import ast
import doctest
import importlib
import pathlib
import subprocess
import sys

import pytest

import funcgrad

PKG = pathlib.Path(funcgrad.__file__).parent
STRATEGIES = PKG.parent / "strategies"

# layer -> the funcgrad modules it may reach (prefixes); the facade `funcgrad` is judged by what it reaches
ALLOWED = {
    "core": ("funcgrad.core",),
    "engines": ("funcgrad.core", "funcgrad.engines"),
    "tasks": ("funcgrad.core", "funcgrad.tasks"),
    "training": ("funcgrad.core", "funcgrad.engines", "funcgrad.training"),
    "testing": ("funcgrad.core", "funcgrad.engines", "funcgrad.testing"),
    "facade": ("funcgrad.core", "funcgrad.engines", "funcgrad.training"),
    "cli": ("funcgrad.core", "funcgrad.engines", "funcgrad.training", "funcgrad.tasks", "funcgrad.cli"),
    "strategies": ("funcgrad.core", "funcgrad.strategies"),
}


def _names(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """Absolute names of the modules ``tree`` imports (relative imports resolved against ``package``)."""
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


def _doctest_source(tree: ast.AST) -> str:
    """The code of every docstring example in ``tree``, one example after another."""
    parser = doctest.DocTestParser()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc and ">>>" in doc:
                out += [example.source for example in parser.get_examples(doc)]
    return "".join(out)


def _imports(path: pathlib.Path, package: str) -> list[tuple[int, str]]:
    """What ``path`` imports, in its code and (line 0) in its doctests."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    doctests = ast.parse(_doctest_source(tree), filename=f"{path} (doctests)")
    return _names(tree, package) + [(0, name) for _, name in _names(doctests, package)]


def _module(path: pathlib.Path) -> str:
    if path.is_relative_to(STRATEGIES):
        parts = ("funcgrad", "strategies") + path.relative_to(STRATEGIES).with_suffix("").parts
    else:
        parts = ("funcgrad",) + path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(path: pathlib.Path) -> tuple[str, str]:
    """(layer, package name) of a source file."""
    if path.is_relative_to(STRATEGIES):
        return "strategies", "funcgrad.strategies"
    rel = path.relative_to(PKG)
    if len(rel.parts) == 1:
        return ("facade" if rel.name == "__init__.py" else "testing"), "funcgrad"
    return rel.parts[0], "funcgrad." + rel.parts[0]


def _sources():
    return sorted(PKG.rglob("*.py")) + sorted(STRATEGIES.rglob("*.py"))


def _modules() -> dict[str, pathlib.Path]:
    return {_module(f): f for f in _sources()}


def _edges(names, modules) -> list[tuple[int, str]]:
    """The funcgrad modules among ``names`` (``from a import attr`` counts as ``a``)."""
    out = []
    for lineno, name in names:
        if name in modules:
            out.append((lineno, name))
        elif name.rpartition(".")[0] in modules and name.startswith("funcgrad"):
            out.append((lineno, name.rpartition(".")[0]))
        elif name == "strategies" or name.startswith("strategies."):
            out.append((lineno, name))  # the folder's own name: never importable, always wrong
    return out


def _allowed(layer: str, name: str) -> bool:
    return name == "funcgrad" or any(name == p or name.startswith(p + ".") for p in ALLOWED[layer])


def _violations(path: pathlib.Path, layer: str, package: str, modules: dict | None = None) -> list[str]:
    """Every forbidden module ``path`` reaches, as the chain of imports that reaches it."""
    modules = _modules() if modules is None else modules
    code_imports: dict[str, list[tuple[int, str]]] = {}

    def code_edges(name):  # a reached module's code imports (its doctests do not run on import)
        if name not in code_imports:
            tree = ast.parse(modules[name].read_text(encoding="utf-8"))
            pkg = name if modules[name].name == "__init__.py" else name.rpartition(".")[0]
            code_imports[name] = _edges(_names(tree, pkg), modules)
        return code_imports[name]

    bad, seen = [], set()
    stack = [(f"{path.name}:{lineno}", name) for lineno, name in _edges(_imports(path, package), modules)]
    while stack:
        chain, name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if not _allowed(layer, name):
            bad.append(f"{chain}: {name}")
            continue
        if name in modules:
            stack += [(f"{chain} -> {name}", nxt) for _, nxt in code_edges(name)]
    return sorted(bad)


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
    g.write_text("from funcgrad.core import Note, Update\nfrom funcgrad.core.values import freeze\n")
    assert _violations(g, "strategies", "funcgrad.strategies") == []
    h = tmp_path / "loop.py"
    h.write_text("from funcgrad import fit\n")  # the facade reaches only core, engines and training
    assert _violations(h, "training", "funcgrad.training") == []


def test_the_scanner_follows_imports_through_other_modules(tmp_path):
    helper = tmp_path / "helper.py"
    helper.write_text("from funcgrad.core.values import freeze\nfrom funcgrad.engines.cache import CachedEngine\n")
    user = tmp_path / "user.py"
    user.write_text("from funcgrad.core.helper import freeze\n")
    modules = {**_modules(), "funcgrad.core.helper": helper}
    assert _violations(user, "core", "funcgrad.core", modules) == [
        "user.py:1 -> funcgrad.core.helper: funcgrad.engines.cache"
    ]
    task = tmp_path / "task.py"
    task.write_text("from funcgrad import Example\n")  # the facade reaches the training loop
    assert any("-> funcgrad: funcgrad.training" in v for v in _violations(task, "tasks", "funcgrad.tasks"))


def test_the_scanner_reads_doctests(tmp_path):
    f = tmp_path / "doc.py"
    f.write_text('def f():\n    """Doc.\n\n    >>> from funcgrad.engines.scripted import ScriptedEngine\n    """\n')
    assert _violations(f, "core", "funcgrad.core") == ["doc.py:0: funcgrad.engines.scripted"]


def test_the_core_facade_exports_the_core_api_and_the_top_level_facade_reexports_it():
    import funcgrad.core

    assert set(funcgrad.core.__all__) <= set(funcgrad.__all__)
    assert set(funcgrad.__all__) - set(funcgrad.core.__all__) == {"FitSettings", "FitState", "ScriptedEngine", "fit"}
    assert all(getattr(funcgrad, n) is getattr(funcgrad.core, n) for n in funcgrad.core.__all__)


def test_every_public_name_has_a_docstring_with_an_example():
    import funcgrad.testing as t

    assert "property-test" in t.__doc__
    for name in t.__all__:
        doc = getattr(t, name).__doc__ or ""
        assert ">>>" in doc, name
