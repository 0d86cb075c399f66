"""Package layout: the public modules import, and the core never imports strategies/."""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import funcgrad

CORE = pathlib.Path(funcgrad.__file__).parent
FORBIDDEN = ("strategies", "funcgrad.strategies")


def _forbidden_imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            mods = [base] + [f"{base}.{a.name}".lstrip(".") if node.module else a.name for a in node.names]
            if node.level and (node.module or "").split(".")[0] == "strategies":
                mods.append("strategies")
            if node.level == 1 and not node.module:
                mods += [a.name for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            mods = [node.args[0].value]
        else:
            continue
        for m in mods:
            if any(m == f or m.startswith(f + ".") for f in FORBIDDEN):
                found.append(f"{path.name}:{node.lineno}: {m}")
    return found


def test_public_modules_import():
    code = "import funcgrad, funcgrad.strategies, funcgrad.testing; print(funcgrad.testing.pipelines.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORE.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pipelines"
    assert importlib.import_module("funcgrad.strategies").__name__ == "funcgrad.strategies"


def test_core_never_imports_strategies():
    files = sorted(CORE.rglob("*.py"))
    assert CORE / "run.py" in files and CORE / "testing.py" in files
    offenders = [hit for f in files for hit in _forbidden_imports(f)]
    assert offenders == []


@pytest.mark.parametrize(
    "source",
    ["import strategies", "from funcgrad.strategies import backprop", "import funcgrad.strategies.backprop as b",
     "from funcgrad import strategies", "importlib.import_module('funcgrad.strategies')"],
)
def test_the_scanner_catches_forbidden_imports(tmp_path, source):
    f = tmp_path / "bad.py"
    f.write_text(source + "\n")
    assert _forbidden_imports(f) != []


def test_the_scanner_allows_the_entry_point_group_name(tmp_path):
    f = tmp_path / "ok.py"
    f.write_text('GROUP = "funcgrad.strategies"\nfrom funcgrad.strategy import Strategy\n')
    assert _forbidden_imports(f) == []


def test_every_public_name_has_a_docstring_with_an_example():
    import funcgrad.testing as t

    assert "property-test" in t.__doc__
    for name in t.__all__:
        doc = getattr(t, name).__doc__ or ""
        assert ">>>" in doc, name
