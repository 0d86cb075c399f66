"""funcgrad compare: grid planning, results table, resumable cells."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from funcgrad.cli.main import main
from funcgrad.cli.compare import plan, read_test_outcomes
from funcgrad.cli.compare_page import compare_page, write_compare_report
from funcgrad.cli.config import parse_config
from funcgrad.core.errors import ConfigError
from funcgrad.engines.stub import StubServer
from compare_fixtures import RLO_LABEL, load, write_grid
from train_fixtures import grid_config, respond_body, results_without_wall

TESTS = Path(__file__).parent


def test_plan_expands_the_grid_and_names_bad_keys(tmp_path):
    grid = {"tasks": ["object_counting"], "strategies": ["backprop", "whole_trace"], "seeds": [3, 4]}
    cells, root, executor = plan({"grid": grid, "run": {"dir": "out"}}, tmp_path)
    assert [(c.strategy, c.seed, c.config["train"]["seed"]) for c in cells] == [
        ("backprop", 3, 3), ("backprop", 4, 4), ("whole_trace", 3, 3), ("whole_trace", 4, 4)]
    assert cells[0].config["run"]["dir"] == str(tmp_path / "out" / "cells" / "object_counting--backprop--seed3")
    assert executor.kind == "serial" and root == tmp_path / "out"
    tracked, _, _ = plan({"grid": grid, "run": {"dir": "out"}, "tracking": {"dir": "store"}}, tmp_path)
    configs = [parse_config(c.config, base_dir=tmp_path) for c in tracked]
    assert {c.tracking.uri for c in configs} == {f"sqlite:///{tmp_path}/store/mlflow.db"}  # one store, a run per cell
    bad = [
        ({**grid, "seed": [1]}, {}, r"\[grid\] has unknown key 'seed'"),
        ({**grid, "seeds": []}, {}, r"\[grid\] seeds must be a non-empty list"),
        ({**grid, "seeds": [1, 1]}, {}, r"\[grid\] seeds = \[1, 1\] repeats a seed"),
        ({**grid, "strategies": ["backprop", "nope"]}, {}, r"\[grid\] strategies: 'nope': unknown strategy 'nope'"),
        ({**grid, "tasks": ["no_such_task"]}, {}, r"\[grid\] tasks: 'no_such_task'"),
        (grid, {"executor": {"kind": "dask"}}, r"\[executor\] kind = 'dask' is not a known executor; use one of: serial, ray"),
        (grid, {"executor": {"kind": "ray", "address": "127.0.0.1:9"}}, r"\[executor\] address = '127.0.0.1:9': no Ray cluster"),
        (grid, {"executor": {"kind": "ray", "address": "nonsense"}}, r"\[executor\] address = 'nonsense': expected"),
        (grid, {"executor": {"kind": "serial", "address": "auto"}}, r"\[executor\] address is set but kind is \"serial\""),
    ]
    for g, extra, message in bad:
        with pytest.raises(ConfigError, match=message):
            plan({"grid": g, **extra}, tmp_path)


def test_bad_grid_input_is_one_error_before_any_model_call(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as stub:
        for strategies, extra, message in [
            (("hint", "missing_strategy"), "", "[grid] strategies: 'missing_strategy': unknown strategy"),
            (("hint",), '[executor]\nkind = "ray"\naddress = "127.0.0.1:9"', "[executor] address = '127.0.0.1:9'"),
        ]:
            cfg = grid_config(tmp_path, stub.base_url, strategies=strategies, extra=extra)
            assert main(["compare", str(cfg), "--quiet"]) == 2
            err = capsys.readouterr().err
            assert err.startswith("funcgrad: error: ") and message in err and err.count("\n") == 1
        assert len(stub.requests) == 0 and not (tmp_path / "grid").exists()


def test_read_test_outcomes_takes_the_first_and_last_test_blocks(tmp_path):
    def line(step, phase, example, score):
        loss = None if score is None else {"type": "Loss", "score": score, "feedback": ""}
        return orjson.dumps({"step": step, "phase": phase, "result": {"example": {"id": example}, "loss": loss}})

    path = tmp_path / "traces.jsonl"
    rows = [line(0, "val", "v", 1.0), line(0, "test", "a", 0.0), line(0, "test", "b", 1.0),
            line(0, "test", "a", 1.0), line(0, "test", "b", None)]  # no step ran: the final test follows at once
    path.write_bytes(b"\n".join(rows) + b"\n")
    assert read_test_outcomes(path, 2) == ({"a": 0.0, "b": 1.0}, {"a": 1.0, "b": None})
    path.write_bytes(b"\n".join(rows[:3]) + b"\n")
    assert read_test_outcomes(path, 2) == ({"a": 0.0, "b": 1.0}, None)


def test_compare_writes_table_and_skips_finished_cells(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as stub:
        cfg = grid_config(tmp_path, stub.base_url)
        assert main(["compare", str(cfg), "--quiet"]) == 0
        out = capsys.readouterr().out
        assert "| no optimization | 4 cells | 0.0 (0.0, 0.0, 0.0, 0.0) | 0.0 (0.0, 0.0, 0.0, 0.0) |" in out
        # 4 test examples, all won on both seeds: +100 points, but 4 one-sided examples are not significant
        assert "| hint | 2 | 0.0 (0.0, 0.0) | 100.0 (100.0, 100.0) | +100.0 [+100.0, +100.0] | 0.125 / 0.375 | 4/0/0 | n/a |" in out
        assert "| hint vs hint_bad_first | +0.0 [+0.0, +0.0] | 1 / 1 | 0/4/0 | n/a |" in out
        seen = len(stub.requests)
        assert main(["compare", str(cfg), "--quiet"]) == 0
        assert len(stub.requests) == seen  # every cell finished: nothing rerun
    data = orjson.loads((tmp_path / "grid" / "results.json").read_bytes())
    assert [r["strategy"] for r in data["tiny"]["rows"]] == ["hint", "hint_bad_first"]
    hint = data["tiny"]["comparisons"][0]
    assert (hint["a"], hint["b"], hint["paired"]["n_examples"], hint["paired"]["n_seeds"]) == ("hint", "no optimization", 4, 2)
    assert data["tiny"]["rows"][0]["answers"]["evaluation"] == 8  # initial + final test, outside the budget
    assert (tmp_path / "grid" / "results.png").stat().st_size > 0
    assert data["tiny"]["rows"][0]["val_curves"] == [[[0, 0.0], [1, 1.0], [2, 1.0]]] * 2  # per seed: step, val
    page = (tmp_path / "grid" / "compare.html").read_text()
    assert '<tr class="baseline"><td><bdi>no optimization</bdi></td><td class="num">4 cells</td>' in page
    assert '<td class="num delta">+100.0</td><td class="num">[+100.0, +100.0]</td><td class="num">0.125</td><td class="num">0.375</td>' in page
    assert page.count('<a href="cells/') == 4  # every cell's own report


def test_a_long_cell_shows_its_progress_under_its_own_name(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as stub:
        cfg = grid_config(tmp_path, stub.base_url)
        assert main(["compare", str(cfg)]) == 0
        err = capsys.readouterr().err.splitlines()
        (tmp_path / "grid").rename(tmp_path / "first")
        assert main(["compare", str(cfg), "--quiet"]) == 0
        assert capsys.readouterr().err == ""
    for name in ("tiny / hint / seed 0", "tiny / hint_bad_first / seed 1"):
        lines = [line for line in err if line.startswith(f"[{name}] ")]
        assert any(" step 1/" in line for line in lines) and any("done at step" in line for line in lines), err


def test_tables_do_not_depend_on_cell_order_or_a_warm_cache(tmp_path, monkeypatch):
    """The budget binds mid-step; cached answers are charged, so every cell stops at the same point."""
    monkeypatch.syspath_prepend(str(TESTS))
    budget = "[budget]\nmax_calls = 9"
    with StubServer(respond_body) as stub:
        first = grid_config(tmp_path, stub.base_url, seeds=[1], run_dir="a", extra=budget, name="a.toml")
        swapped = grid_config(tmp_path, stub.base_url, strategies=("hint_bad_first", "hint"), seeds=[1], run_dir="b", extra=budget,
                          name="b.toml")
        again = grid_config(tmp_path, stub.base_url, seeds=[1], run_dir="c", extra=budget, name="c.toml")
        for cfg in (first, swapped, again):  # the second and third run with the cache the first one filled
            assert main(["compare", str(cfg), "--quiet"]) == 0
    a, b, c = (results_without_wall(tmp_path / d / "results.json") for d in "abc")
    assert a == c
    assert {r["strategy"]: r for r in a["tiny"]["rows"]} == {r["strategy"]: r for r in b["tiny"]["rows"]}
    stopped = {s for r in a["tiny"]["rows"] for s in r["stopped"]}
    assert all(s.startswith("budget") for s in stopped), stopped  # the budget did bind
    assert all(r["answers"]["evaluation"] == 8 and r["after"] == [0.0] for r in a["tiny"]["rows"])


def test_interrupted_grid_continues_without_rerunning_finished_cells(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with StubServer(respond_body, latency=0.03) as stub:
        cfg = grid_config(tmp_path, stub.base_url)
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
    with StubServer(respond_body) as stub:  # the same grid uninterrupted (warm cache): the same table
        assert main(["compare", str(grid_config(tmp_path, stub.base_url, run_dir="whole", name="whole.toml")), "--quiet"]) == 0
    assert results_without_wall(tmp_path / "grid" / "results.json") == results_without_wall(tmp_path / "whole" / "results.json")


def test_engine_urls_spread_the_cells_over_servers(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as one, StubServer(respond_body) as two:
        servers = [one.base_url, two.base_url]
        urls = f'[executor]\nengine_urls = ["{servers[0]}", "{servers[1]}"]'
        cfg = grid_config(tmp_path, "http://127.0.0.1:9/v1", strategies=("hint",), extra=urls)  # [engine] base_url is replaced
        assert main(["compare", str(cfg), "--quiet"]) == 0
        assert len(one.requests) > 0 and len(two.requests) > 0
    cells = sorted(p.name for p in (tmp_path / "grid" / "cells").iterdir())
    used = [orjson.loads((tmp_path / "grid" / "cells" / c / "config.json").read_bytes())["config"]["engine"]["base_url"] for c in cells]
    assert used == servers


def test_compare_page_names_columns_formats_numbers_and_marks_significance(tmp_path):
    root = write_grid(tmp_path / "grid")
    data = load(root)
    backprop = next(c for c in data["object_counting"]["comparisons"] if c["a"] == "backprop" and c["b"] == "no optimization")
    assert backprop["paired"]["p"] < 0.001 and backprop["p_holm"] < 0.05  # the fixture's strong arm
    page = write_compare_report(root).read_text()
    for header in ("Strategy", "Test before (%)", "Test after (%)", "Δ vs none (points)", "95 % interval", "p", "p, Holm",
                   "Wins / ties / losses", "Detectable effect (points)", "Δ A − B (points)", "Wall time (s)"):
        assert f"<th>{header}</th>" in page
    for raw in ("<th>diff</th>", "<th>low</th>", "<th>p_holm</th>", "e-0"):
        assert raw not in page
    row = page[page.index("<td><bdi>backprop</bdi></td><td class=\"num\">3</td>"):]
    row = row[: row.index("</tr>")]
    assert '<td class="num">&lt; 0.001</td>' in row and "<span class=\"sig\"" in row
    assert f'<td class="num delta">+{100 * backprop["paired"]["diff"]:.1f}</td>' in row
    weak = page[page.index(f"<td><bdi>{RLO_LABEL}</bdi></td>"):]
    assert "<span class=\"sig\"" not in weak[: weak.index("</tr>")]  # not significant: no mark
    assert page.index('<tr class="baseline"><td><bdi>no optimization</bdi></td><td class="num">9 cells</td>') < page.index("<bdi>backprop</bdi>")


def test_compare_page_figures_have_titles_intervals_and_every_cells_curve(tmp_path):
    page = write_compare_report(write_grid(tmp_path / "grid")).read_text()
    assert page.count('role="img"') == 2 and page.count("<title>object_counting: ") == 2
    delta = page[page.index("<title>object_counting: paired test difference"):]
    assert "backprop: +" in delta[: delta.index("</desc>")] and "points, 95 % interval [" in delta
    curves = page[page.index("<title>object_counting: validation accuracy"):]
    desc = curves[: curves.index("</desc>")]
    assert desc.count("after step 4") == 9  # 3 strategies x 3 seeds, each curve described


def test_compare_page_escapes_and_isolates_config_text(tmp_path):
    page = write_compare_report(write_grid(tmp_path / "grid")).read_text()
    assert "<script>" not in page and "&lt;script&gt;document.title=" in page
    html = re.sub(r"<svg.*?</svg>", "", page, flags=re.S)  # an SVG text element isolates its own text
    assert html.count(RLO_LABEL) == html.count(f"<bdi>{RLO_LABEL}</bdi>") == 4  # arms, 2 pairs, cost


def test_compare_page_reads_an_older_or_missing_results_file(tmp_path):
    older = {"t": [{"strategy": "a", "before": [0.25, 0.5], "after": [0.5, None], "wall_s": 3.0}]}  # rows only, no curves
    page = compare_page(older)
    assert '<td class="num">37.5 <span class="muted seeds">(25.0, 50.0)</span></td>' in page  # mean over seeds, per seed
    assert '<td class="num">50.0 <span class="muted seeds">(50.0, n/a)</span> <span class="missing">1 of 2 missing</span></td>' in page
    assert page.count('role="img"') == 1  # the differences; no curves in an older file
    assert "results.json could not be read: FileNotFoundError" in write_compare_report(tmp_path).read_text()
