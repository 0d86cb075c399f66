"""The README's quickstart: its splits are disjoint, and it runs as written on the embedded model."""

import runpy
import subprocess
import sys
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
def test_quickstart_runs_and_prints_its_trace_and_result():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("trace (no id): 3 records, output %2")
    assert "llm count#0(question=%0) reads [instruction]" in done.stdout
    assert any(line.startswith("test accuracy ") for line in lines)
    assert any(line.startswith("instruction [instruction]: ") for line in lines)
