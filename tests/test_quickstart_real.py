"""The README's quickstart: its splits are disjoint, and it runs as written on the embedded model."""

import contextlib
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_splits_do_not_overlap():
    task = runpy.run_path(str(SCRIPT))["task"]  # not __main__: defines the task, starts no model
    train, val, test = ({e.id for e in split} for split in (task.train, task.val, task.test))
    assert len(test) >= 3 and len(val) >= 2 and len(train) >= 3
    assert test.isdisjoint(val) and test.isdisjoint(train) and val.isdisjoint(train)
    assert {e.x for e in task.test}.isdisjoint({e.x for e in task.val + task.train})


@pytest.mark.real_model
@pytest.mark.smoke
def test_quickstart_runs_and_prints_its_trace_and_result(local_engine, capsys):
    """The script's main() as written, its serve() answered by the session's 0.5B server (no second server)."""
    served = []

    @contextlib.contextmanager
    def serve(model, **settings):
        served.append((model, settings))
        yield local_engine

    main = runpy.run_path(str(SCRIPT))["main"]
    main.__globals__["serve"] = serve
    main()
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert served == [("qwen2.5-coder-0.5b", {})]
    assert lines[0].startswith("trace (no id): 3 records, output %2")
    assert "llm count#0(question=%0) reads [instruction]" in out
    assert any(line.startswith("test accuracy ") for line in lines)
    assert any(line.startswith("instruction [instruction]: ") for line in lines)
