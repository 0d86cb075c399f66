"""The funcgrad command: config validation, a full optimize run, SIGKILL + resume, show, evaluate."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from funcgrad.cli.main import main
from funcgrad.cli.config import DEFAULT_DEADLINE, load_config, parse_config
from funcgrad.core.errors import ConfigError
from funcgrad.engines.stub import StubServer
from train_fixtures import respond_body

TESTS = Path(__file__).parent

BASE = {"task": {"name": "train_fixtures:tiny_task"}, "strategy": {"name": "train_fixtures:hint_strategy"}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tran": {}}, "unknown section [tran]"),
        ({"train": {"batchsize": 3}}, "[train] has unknown key 'batchsize'"),
        ({"train": {"batch_size": 0}}, "[train] batch_size = 0: must be > 0"),
        ({"train": {"steps": "many"}}, "[train] steps = 'many': must be a int"),
        ({"train": {"seed": -1}}, "[train] seed = -1"),
        ({"engine": {"base_url": "http://x"}}, "model = \"...\" (the server's model name) is required"),
        ({"engine": {"concurrency": True}}, "[engine] concurrency = True"),
        ({"budget": {"max_calls": 1.5}}, "[budget] max_calls = 1.5"),
        ({"strategy": {}}, "[strategy] needs name"),
        ({"task": {"name": 3}}, "[task] needs name"),
        ({"run": {"directory": "x"}}, "[run] has unknown key 'directory'"),
        ({"engine": {"retries": -1}}, "[engine] retries = -1: must be >= 0 (0 = no retries)"),
        ({"engine": {"retries": 1.5}}, "[engine] retries = 1.5: must be a int"),
        ({"engine": {"deadline": 0}}, "[engine] deadline = 0: must be > 0"),
    ],
)
def test_each_bad_config_key_or_value_gives_one_clear_message(change, message):
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, **change})
    assert message in str(info.value)


def test_retries_and_deadline_are_engine_settings():
    cfg = parse_config({**BASE, "engine": {"retries": 0, "deadline": 90}})
    assert (cfg.engine.retries, cfg.engine.deadline) == (0, 90)
    assert (parse_config(BASE).engine.retries, parse_config(BASE).engine.deadline) == (None, DEFAULT_DEADLINE) == (None, 600.0)


def test_missing_and_invalid_toml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[task\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_unknown_strategy_option_is_named(tmp_path, capsys):
    cfg = _config(tmp_path, "http://127.0.0.1:9/v1", strategy_extra='first_try_bda = true\n')
    assert main(["optimize", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not accept an argument 'first_try_bda'" in err and "first_try_bad" in err


def _config(tmp_path, base_url, *, steps=3, strategy_extra="", run="run"):
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[task]
name = "train_fixtures:tiny_task"
n = 12
[strategy]
name = "train_fixtures:hint_strategy"
{strategy_extra}
[engine]
base_url = "{base_url}"
model = "stub"
concurrency = 2
timeout = 10
[train]
steps = {steps}
batch_size = 1
proposals_per_step = 2
seed = 1
[run]
dir = "{run}"
cache = "cache"
"""
    )
    return path


def _cli(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return [sys.executable, "-m", "funcgrad.cli.main", *args], env


def test_optimize_writes_run_dir_report_and_traces(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, strategy_extra="first_try_bad = true\n")
        assert main(["optimize", str(cfg), "--quiet"]) == 0
        out = capsys.readouterr().out
        assert "test accuracy 0.0% -> 100.0%" in out
        assert out.endswith("prompts changed by the run (final text):\ninstruction:\n  Answer the question. Think carefully.\n")
        run = tmp_path / "run"
        for name in ("config.json", "checkpoint.json", "traces.jsonl", "history.tsv", "report.md", "learning_curve.png", "final_state.json"):
            assert (run / name).stat().st_size > 0, name
        report = (run / "report.md").read_text()
        assert "+Answer the question. Think carefully." in report and "| forward | stub |" in report
        assert main(["optimize", str(cfg), "--quiet"]) == 2  # refuses to overwrite a run
        assert "pass --resume" in capsys.readouterr().err
        assert main(["show", str(run), "--limit", "1", "--phase", "test"]) == 0
        shown = capsys.readouterr().out
        assert "answer#0(input=%0)" in shown and "final prompts:" in shown
        state = run / "final_state.json"
        assert main(["evaluate", str(cfg), "--state", str(state), "--quiet"]) == 0
        assert "test: accuracy 100.0% on 4 examples" in capsys.readouterr().out


def test_sigkill_mid_run_then_resume_ends_with_the_same_steps(tmp_path):
    with StubServer(respond_body, latency=0.05) as stub:
        (tmp_path / "a").mkdir()
        full = _config(tmp_path / "a", stub.base_url, steps=4)
        cmd, env = _cli("optimize", str(full), "--quiet")
        assert subprocess.run(cmd, env=env, capture_output=True, timeout=120).returncode == 0
        expected = orjson.loads((tmp_path / "a" / "run" / "checkpoint.json").read_bytes())["fit"]

        (tmp_path / "b").mkdir()
        cut = _config(tmp_path / "b", stub.base_url, steps=4)
        cmd, env = _cli("optimize", str(cut), "--quiet")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        checkpoint = tmp_path / "b" / "run" / "checkpoint.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if checkpoint.exists() and orjson.loads(checkpoint.read_bytes())["fit"]["step"] >= 1:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = orjson.loads(checkpoint.read_bytes())["fit"]
        assert killed_at["stopped"] == "" and killed_at["step"] < 4
        cmd, env = _cli("optimize", str(cut), "--resume", "--quiet")
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        resumed = orjson.loads(checkpoint.read_bytes())["fit"]
    assert resumed["step"] == expected["step"] == 4
    assert resumed["state"] == expected["state"] and resumed["log"] == expected["log"]
    assert resumed["final_test"] == expected["final_test"]


def test_task_model_and_critic_can_be_different_servers(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as task_server, StubServer(respond_body) as critic_server:
        cfg = _config(tmp_path, task_server.base_url)
        cfg.write_text(cfg.read_text() + f'[critic]\nbase_url = "{critic_server.base_url}"\nmodel = "critic"\n')
        assert main(["optimize", str(cfg), "--quiet"]) == 0
        task_users = {r.body["messages"][-1]["content"] for r in task_server.requests}
        critic_users = {r.body["messages"][-1]["content"] for r in critic_server.requests}
    assert critic_users == {"[optimizer] improve"}
    assert task_users and "[optimizer] improve" not in task_users
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| optimizer | critic | 1 |" in report and "| forward | stub |" in report


def test_replay_reproduces_a_finished_run_without_a_server(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, strategy_extra="first_try_bad = true\n")
        assert main(["optimize", str(cfg), "--quiet"]) == 0
        recorded_url = stub.base_url  # answers are cached under the server that gave them
    capsys.readouterr()
    # the server is gone; the replayed run must reproduce every step from the cache alone
    assert main(["optimize", str(cfg), "--quiet", "--replay", "--run-dir", str(tmp_path / "again")]) == 0
    first = orjson.loads((tmp_path / "run" / "checkpoint.json").read_bytes())["fit"]
    again = orjson.loads((tmp_path / "again" / "checkpoint.json").read_bytes())["fit"]
    assert again == first
    assert "test accuracy 0.0% -> 100.0%" in capsys.readouterr().out
    # a request the cache never saw (a larger task: new questions) is named, not answered
    (tmp_path / "other").mkdir()
    other = _config(tmp_path / "other", recorded_url)
    other.write_text(other.read_text().replace("n = 12", "n = 15").replace('cache = "cache"', f'cache = "{tmp_path / "cache"}"'))
    assert main(["optimize", str(other), "--quiet", "--replay"]) == 3  # a run failure, not bad input
    err = capsys.readouterr().err
    assert "replay" in err.lower() and any(q in err for q in ("q12", "q13", "q14"))  # a question never asked
