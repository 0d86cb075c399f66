"""Every Python block of README.md and docs/*.md runs, so a doc example cannot break silently.

The blocks of one page run in order in one namespace (a reader goes top to bottom),
in a temporary working directory. A marker comment on the line before a block's
opening fence changes what happens to it:

* ``<!-- file: NAME -->``: the block is (part of) the file NAME; it is written there
  (blocks with the same NAME are joined) instead of being run, and later blocks of
  the page can import it. The tutorial's ``kbqa.py`` and ``kbqa.toml`` are built this way.
* ``<!-- excerpt: PATH -->``: an abridged copy of a tested file; every line of the
  block (comments and lines with ``...`` aside) must appear in PATH.
* ``<!-- not-run: REASON -->``: not run, with the reason. Keep these few: the list is
  pinned in ``NOT_RUN`` below, so adding one is a visible decision.

The knob lists of docs/strategies.md (the ``**Knobs.**`` paragraph of each
strategy) must name exactly the fields of the strategy's knobs class, with their
defaults (:func:`test_the_knob_lists_in_docs_strategies_match_the_knob_classes`).

The real-model part of docs/tutorial-pipeline.md runs the page's kbqa.py and
kbqa.toml through ``funcgrad optimize`` on the embedded 0.5B model
(:func:`test_tutorial_optimizes_on_the_embedded_model`).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(file|excerpt|not-run):\s*(.*?)\s*-->\s*$")

# Blocks not run, by (page, first line of the block). A page that cannot carry a
# marker (owned by another change) is listed here with its reason too.
NOT_RUN = {
    ("docs/engines.md", "from funcgrad.engines.local import serve"): "marked: starts the 1.5B model",
    ("docs/tasks.md", 'task = load_task("object_counting", seed=0)'): "marked: a 77 s measurement on the 1.5B model",
}


@attrs.frozen
class Block:
    page: str
    line: int
    lang: str
    code: str
    marker: str = ""
    arg: str = ""

    @property
    def first(self) -> str:
        return self.code.strip().splitlines()[0] if self.code.strip() else ""

    @property
    def label(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` with the marker on the line before each (if any)."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARKER.search(before)
        out.append(Block(
            str(page.relative_to(ROOT)), text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2),
            mark.group(1) if mark else "", mark.group(2) if mark else "",
        ))
    return out


def python_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page) if b.lang == "python" or (b.marker == "file" and b.arg.endswith(".py"))]


def _skip_reason(b: Block) -> str | None:
    if b.marker == "not-run":
        return b.arg
    return NOT_RUN.get((b.page, b.first))


def write_files(page: Path, folder: Path) -> dict[str, Path]:
    """Write the page's ``file:`` blocks into ``folder``; returns name -> path."""
    parts: dict[str, list[str]] = {}
    for b in blocks(page):
        if b.marker == "file":
            parts.setdefault(b.arg, []).append(b.code)
    written = {}
    for name, codes in parts.items():
        path = folder / name
        path.write_text("\n\n".join(codes), encoding="utf-8")
        written[name] = path
    return written


@contextlib.contextmanager
def page_environment(folder: Path, modules: list[str]):
    saved_path = list(sys.path)
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in modules:
            sys.modules.pop(name, None)


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.lang == "python" or b.marker for b in blocks(p))], ids=lambda p: p.name)
def test_the_python_blocks_of_the_page_run_in_order(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = write_files(page, tmp_path)
    namespace: dict = {"__name__": f"doc_{page.stem.replace('-', '_')}"}
    ran, skipped = [], []
    with page_environment(tmp_path, [Path(n).stem for n in files if n.endswith(".py")]):
        for b in blocks(page):
            if b.marker in ("file", "excerpt"):
                ran.append(f"{b.label} ({b.marker} {b.arg})")
                continue
            if b.lang != "python":
                continue
            reason = _skip_reason(b)
            if reason is not None:
                skipped.append(f"{b.label} ({reason})")
                continue
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    exec(compile(b.code, f"{b.label}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"the block at {b.label} failed: {type(exc).__name__}: {exc}\n{out.getvalue()[-2000:]}") from exc
            ran.append(b.label)
    print(f"{page.name}: ran or checked {ran}; not run: {skipped}")


def test_excerpts_match_the_tested_files_they_abridge():
    excerpts = [b for b in python_blocks() if b.marker == "excerpt"]
    assert excerpts, "README's tour is an excerpt of examples/quickstart.py"
    for b in excerpts:
        source = {line.split("  #")[0].strip() for line in (ROOT / b.arg).read_text().splitlines()}
        for line in b.code.splitlines():
            code = line.split("  #")[0].strip()
            if code and not code.startswith("#") and "..." not in code:
                assert code in source, f"{b.label}: {code!r} is not in {b.arg}"


def test_every_python_block_is_run_written_to_a_file_checked_or_listed_as_not_run():
    stale = {key for key in NOT_RUN if not any((b.page, b.first) == key for b in python_blocks())}
    assert not stale, f"NOT_RUN lists blocks that no longer exist: {stale}"
    not_run = sorted(f"{b.label}" for b in python_blocks() if _skip_reason(b) is not None)
    print("not run:", not_run)
    assert len(not_run) == len(NOT_RUN) == 2, "a new not-run block: is there really no way to run it?"


@pytest.mark.real_model
@pytest.mark.smoke
def test_tutorial_optimizes_on_the_embedded_model(local_engine, tmp_path, monkeypatch, capsys):
    """The tutorial's kbqa.py + kbqa.toml through `funcgrad optimize`, on the session's 0.5B server."""
    from funcgrad.cli.main import main

    page = ROOT / "docs" / "tutorial-pipeline.md"
    files = write_files(page, tmp_path)
    config = files["kbqa.toml"]
    text = config.read_text()
    assert 'model = "qwen2.5-coder-0.5b"' in text
    config.write_text(text.replace('model = "qwen2.5-coder-0.5b"', f'model = "qwen2.5-coder-0.5b"\nbase_url = "{local_engine.base_url}"', 1))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)                      # kbqa is found next to the config, not via the working directory
    with page_environment(elsewhere, ["kbqa"]):
        assert main(["optimize", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert "kbqa / whole_trace: test accuracy" in out
    report = (tmp_path / "run" / "report.md").read_text()
    assert "### Step 1, attempt 1: " in report and "## Calls and tokens" in report
    assert "step 1/1 forward" in err and "step 1/1 optimizer" in err
    print(report)


KNOBS = re.compile(r"`(\w+)=([^`]*)`")


def documented_knobs() -> dict[str, dict[str, str]]:
    """strategy name -> {knob: documented default} from the **Knobs.** paragraph of each docs/strategies.md section."""
    out, name = {}, None
    for para in (ROOT / "docs" / "strategies.md").read_text(encoding="utf-8").split("\n\n"):
        head = re.match(r"## `(\w+)\(", para.strip())
        if head:
            name = head.group(1)
        elif para.strip().startswith("**Knobs.**") and name:
            out[name] = dict(KNOBS.findall(para))
    return out


def test_the_knob_lists_in_docs_strategies_match_the_knob_classes():
    import ast
    import inspect
    from importlib.metadata import entry_points

    documented = documented_knobs()
    factories = {ep.name: ep.load() for ep in entry_points(group="funcgrad.strategies") if ep.name in documented}
    assert set(factories) == set(documented) == {"backprop", "whole_trace", "sampled_momentum", "bootstrap_demos", "gepa", "search"}
    for name, factory in factories.items():
        module = inspect.getmodule(factory)
        (cls,) = [c for n, c in vars(module).items() if n.endswith("Knobs") and attrs.has(c) and c.__module__ == module.__name__]
        fields = {f.name: f.default for f in attrs.fields(cls)}
        assert set(documented[name]) == set(fields), (
            f"docs/strategies.md {name}: missing {sorted(set(fields) - set(documented[name]))}, "
            f"not knobs {sorted(set(documented[name]) - set(fields))}"
        )
        for knob, text in documented[name].items():
            assert ast.literal_eval(text) == fields[knob], f"docs/strategies.md says {name} {knob}={text}, the default is {fields[knob]!r}"
