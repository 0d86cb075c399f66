"""funcgrad compare: grid planning, results table, resumable cells."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from funcgrad.cli.main import main
from funcgrad.cli.compare import mean_ci, plan
from funcgrad.core.errors import ConfigError
from funcgrad.engines.stub import StubServer
from train_fixtures import respond_body

TESTS = Path(__file__).parent


def _config(tmp_path, base_url):
    path = tmp_path / "compare.toml"
    path.write_text(
        f"""
[grid]
tasks = ["tiny"]
strategies = ["hint", "hint_bad_first"]
seeds = [0, 1]
[tasks.tiny]
name = "train_fixtures:tiny_task"
[strategies.hint]
name = "train_fixtures:hint_strategy"
[strategies.hint_bad_first]
name = "train_fixtures:hint_strategy"
first_try_bad = true
[engine]
base_url = "{base_url}"
model = "stub"
timeout = 10
[train]
steps = 2
batch_size = 2
[run]
dir = "grid"
cache = "cache"
"""
    )
    return path


def test_mean_ci_matches_a_hand_computed_t_interval():
    m, half = mean_ci([0.2, 0.4, 0.6])
    assert m == pytest.approx(0.4) and half == pytest.approx(4.303 * 0.2 / 3**0.5, rel=1e-4)
    assert mean_ci([0.5]) == (0.5, None)


def test_plan_expands_the_grid_and_names_bad_keys(tmp_path):
    cells, root = plan(
        {"grid": {"tasks": ["a"], "strategies": ["s1", "s2"], "seeds": [3, 4]}, "run": {"dir": "out"}}, tmp_path
    )
    assert [(c["strategy"], c["seed"], c["config"].train.seed) for c in cells] == [("s1", 3, 3), ("s1", 4, 4), ("s2", 3, 3), ("s2", 4, 4)]
    assert cells[0]["config"].run_dir == str(tmp_path / "out" / "cells" / "a--s1--seed3")
    with pytest.raises(ConfigError, match=r"\[grid\] has unknown key 'seed'"):
        plan({"grid": {"tasks": ["a"], "strategies": ["s"], "seed": [1]}}, tmp_path)
    with pytest.raises(ConfigError, match="seeds must be a non-empty list"):
        plan({"grid": {"tasks": ["a"], "strategies": ["s"], "seeds": []}}, tmp_path)


def test_compare_writes_table_and_skips_finished_cells(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url)
        assert main(["compare", str(cfg), "--quiet"]) == 0
        out = capsys.readouterr().out
        assert "| no optimization | 2 | 0.0 ± 0.0 | 0.0 ± 0.0 |" in out
        assert "| hint | 2 | 0.0 ± 0.0 | 100.0 ± 0.0 | +100.0 |" in out
        seen = len(stub.requests)
        assert main(["compare", str(cfg), "--quiet"]) == 0
        assert len(stub.requests) == seen  # every cell finished: nothing rerun
    data = orjson.loads((tmp_path / "grid" / "results.json").read_bytes())
    assert [r["strategy"] for r in data["tiny"]] == ["hint", "hint_bad_first"]
    assert (tmp_path / "grid" / "results.png").stat().st_size > 0


def test_interrupted_grid_continues_without_rerunning_finished_cells(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with StubServer(respond_body, latency=0.03) as stub:
        cfg = _config(tmp_path, stub.base_url)
        proc = subprocess.Popen([sys.executable, "-m", "funcgrad.cli.main", "compare", str(cfg), "--quiet"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = tmp_path / "grid" / "cells" / "tiny--hint--seed0" / "checkpoint.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if first.exists() and orjson.loads(first.read_bytes())["fit"]["stopped"] == "done":
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stamp = first.stat().st_mtime_ns
        done = subprocess.run([sys.executable, "-m", "funcgrad.cli.main", "compare", str(cfg), "--quiet"], env=env,
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
    assert first.stat().st_mtime_ns == stamp  # the finished cell was read back, not rerun
    assert "| hint | 2 |" in done.stdout.decode()
