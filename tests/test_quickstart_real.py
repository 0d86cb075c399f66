"""The README's quickstart runs as written on the embedded model."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_model


def test_quickstart_runs_and_prints_its_trace_and_result():
    script = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("trace (no id): 3 records, output %2")
    assert "llm count#0(question=%0) reads [instruction]" in done.stdout
    assert any(line.startswith("test accuracy ") for line in lines)
    assert any(line.startswith("instruction [instruction]: ") for line in lines)
