"""Fault injection over real HTTP on 127.0.0.1: every case of docs/faults.md.

A failure (a model call that retries could not fix, a bug in the user's code) must
stop the run with one line on stderr and exit status 3, never be scored as a wrong
answer; the checkpoint stays at the last complete step and ``--resume`` redoes
exactly the lost work. Bad input gets one message and exit status 2 with nothing
half-written.
"""

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given, strategies as st

from funcgrad.cli.main import main
from funcgrad.engines.stub import StubServer
from funcgrad.training.counts import Counts, change, figure
from funcgrad.training.rundir import RunDir
from fault_fixtures import DiskFault
from train_fixtures import respond_body

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _fixtures_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def _config(tmp_path, base_url, *, task='name = "train_fixtures:tiny_task"', steps=3, engine="", run="run", cache="cache"):
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[task]
{task}
[strategy]
name = "train_fixtures:hint_strategy"
[engine]
base_url = "{base_url}"
model = "stub"
concurrency = 2
timeout = 5
retries = 1
{engine}
[train]
steps = {steps}
batch_size = 1
proposals_per_step = 2
seed = 1
[run]
dir = "{run}"
cache = "{cache}"
"""
    )
    return path


def _checkpoint(run: Path) -> dict:
    return orjson.loads((run / "checkpoint.json").read_bytes())["fit"]


def _clean_run(tmp_path) -> dict:
    """The final checkpoint of an undisturbed run (its own run dir and cache)."""
    (tmp_path / "clean").mkdir()
    with StubServer(respond_body) as stub:
        assert main(["optimize", str(_config(tmp_path / "clean", stub.base_url)), "--quiet"]) == 0
    return _checkpoint(tmp_path / "clean" / "run")


class Switch:
    """A stub fault schedule: ``fault`` on every call once ``when()`` holds, while ``on``."""

    def __init__(self, fault, when):
        self.fault, self.when, self.on = fault, when, True

    def __call__(self, index, body):
        return self.fault if self.on and self.when() else None


def _after_step(run: Path, step: int):
    def reached():
        try:
            return _checkpoint(run)["step"] >= step
        except (OSError, orjson.JSONDecodeError):
            return False

    return reached


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("funcgrad: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- 1. server failures are failures


@pytest.mark.parametrize("fault, cause", [("500", "HTTP 500"), ("429", "HTTP 429"), ("reset", "connection error")])
def test_a_server_failing_mid_run_stops_it_and_resume_redoes_only_the_lost_work(tmp_path, capsys, fault, cause):
    clean = _clean_run(tmp_path)
    run = tmp_path / "run"
    switch = Switch(fault, when=_after_step(run, 1))  # the server breaks once step 1 is checkpointed
    with StubServer(respond_body, faults=switch) as stub:
        cfg = _config(tmp_path, stub.base_url)
        assert main(["optimize", str(cfg), "--quiet"]) == 3
        line = _one_error_line(capsys.readouterr().err)
        assert cause in line and "with its checkpoint at step 1 (rerun with --resume" in line
        if fault != "reset":  # an example failed (the others may be fine); a dead connection stops everything at once
            assert "failed instead of being answered" in line and "engine failure in node 'answer'" in line
            failures = [orjson.loads(x) for x in (run / "failures.jsonl").read_bytes().splitlines()]
            assert failures and all(f["result"]["failure"]["kind"] == "engine" and f["result"]["loss"] is None for f in failures)
        stopped_at = _checkpoint(run)
        assert (stopped_at["step"], stopped_at["stopped"]) == (1, "")  # the last complete step, not "done"
        assert not (run / "report.md").exists()
        switch.on = False  # the server recovers
        assert main(["optimize", str(cfg), "--quiet", "--resume"]) == 0, capsys.readouterr().err
    final = _checkpoint(run)
    assert final["stopped"] == "done"
    assert (final["step"], final["state"], final["final_test"], final["initial_test"], final["log"]) == (
        clean["step"], clean["state"], clean["final_test"], clean["initial_test"], clean["log"]
    )
    assert final["final_test"] == 1.0  # never the laundered 0.0 of a broken server
    def phases(path):
        return [(d["step"], d["phase"], d["result"]["example"]["id"]) for d in map(orjson.loads, path.read_bytes().splitlines())]

    # the trace log holds each example run once, exactly as the undisturbed run's: nothing lost, nothing doubled
    assert sorted(phases(run / "traces.jsonl")) == sorted(phases(tmp_path / "clean" / "run" / "traces.jsonl"))


def test_a_rejected_key_stops_at_once_and_nothing_is_scored(tmp_path, capsys):
    with StubServer(respond_body, faults=lambda i, body: "401") as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 3
        calls = len(stub.requests)
    line = _one_error_line(capsys.readouterr().err)
    assert "HTTP 401" in line and "API key" in line and "before its first checkpoint" in line
    assert calls <= 2  # the first 401 stops the run: no worker starts another example (2 may be in flight), nothing is retried
    assert not (tmp_path / "run" / "checkpoint.json").exists()


def test_a_request_over_the_context_window_names_the_example(tmp_path, capsys):
    def faults(index, body):
        return "context" if body["messages"][-1]["content"] == "q5" else None

    with StubServer(respond_body, faults=faults) as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 3
        asked = [r.body["messages"][-1]["content"] for r in stub.requests]
    line = _one_error_line(capsys.readouterr().err)
    assert "example 'e5': engine failure in node 'answer'" in line and "maximum context length" in line
    assert asked.count("q5") == 1  # a 400 is not retried


@pytest.mark.parametrize("rate, status", [(0.25, 0), (0.2, 3)])
def test_a_failure_rate_threshold_from_the_config(tmp_path, capsys, rate, status):
    def faults(index, body):  # one of the 4 test examples always fails
        return "500" if body["messages"][-1]["content"] == "q9" else None

    with StubServer(respond_body, faults=faults) as stub:
        cfg = _config(tmp_path, stub.base_url)
        cfg.write_text(cfg.read_text().replace("seed = 1\n", f"seed = 1\nmax_failure_rate = {rate}\n"))
        assert main(["optimize", str(cfg), "--quiet"]) == status
    captured = capsys.readouterr()
    if status:
        assert "1 of 4 examples failed instead of being answered (no failure is allowed)" in _one_error_line(captured.err)
        return
    fs = _checkpoint(tmp_path / "run")
    assert fs["initial_test"] == 0.0 and fs["final_test"] == 1.0  # the means of the 3 answered examples
    logged = [orjson.loads(x)["result"] for x in (tmp_path / "run" / "traces.jsonl").read_bytes().splitlines()]
    failed = [r for r in logged if r["failure"] is not None]
    assert failed and {r["example"]["id"] for r in failed} == {"e9"} and all(r["loss"] is None for r in failed)


@pytest.mark.parametrize("fault", ["500", "400"])
def test_a_failing_critic_call_stops_the_run_not_no_update(tmp_path, capsys, fault):
    def faults(index, body):
        return fault if "[optimizer]" in body["messages"][-1]["content"] else None

    with StubServer(respond_body, faults=faults) as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 3
    line = _one_error_line(capsys.readouterr().err)
    assert f"HTTP {fault}" in line and "during 'step 1: proposing' with its checkpoint at step 0" in line
    assert _checkpoint(tmp_path / "run")["step"] == 0 and _checkpoint(tmp_path / "run")["log"] == []


def test_evaluate_against_a_dead_server_fails_instead_of_reporting_zero(tmp_path, capsys):
    with StubServer() as stub:
        dead = stub.base_url
    assert main(["evaluate", str(_config(tmp_path, dead)), "--quiet"]) == 3
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert "connection error" in line and "accuracy" not in captured.out


def test_evaluate_with_a_failing_example_fails(tmp_path, capsys):
    with StubServer(respond_body, faults=lambda i, body: "500") as stub:
        assert main(["evaluate", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 3
    assert "HTTP 500" in _one_error_line(capsys.readouterr().err)


def test_retries_from_the_config_are_used(tmp_path, capsys):
    with StubServer(respond_body, faults=lambda i, body: "500") as stub:
        cfg = _config(tmp_path, stub.base_url, engine="concurrency = 1")
        cfg.write_text(cfg.read_text().replace("retries = 1", "retries = 0").replace("concurrency = 2\n", ""))
        assert main(["evaluate", str(cfg), "--quiet"]) == 3
        assert len(stub.requests) == 1  # no retry, and the first failure stops the batch
    assert "failed after 1 attempts" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bug, says",
    [
        ("fn", "pipeline failure in node 'parse': node 'parse' failed: ValueError: cannot parse"),
        ("template", "needs input 'question'"),
        ("param", "'instructions'"),
        ("loss", "loss failure"),
    ],
)
def test_a_bug_in_the_users_code_stops_the_run_and_is_named(tmp_path, capsys, bug, says):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, task=f'name = "fault_fixtures:buggy_task"\nbug = "{bug}"')
        assert main(["optimize", str(cfg), "--quiet"]) == 3
        calls = len(stub.requests)
    line = _one_error_line(capsys.readouterr().err)
    assert says in line
    if bug in ("template", "param"):
        assert calls == 0  # found while rendering: no model call was paid for
    failures = (tmp_path / "run" / "failures.jsonl").read_bytes().splitlines()
    assert failures and all(orjson.loads(f)["result"]["loss"] is None for f in failures)


# ---------------------------------------------------------------- 2. locked run directories


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url)
        rd = RunDir(tmp_path / "run")
        with rd.locked():  # another writer holds the directory
            assert main(["optimize", str(cfg), "--quiet"]) == 2
            line = _one_error_line(capsys.readouterr().err)
            assert f"being written by process {os.getpid()}" in line
            assert main(["optimize", str(cfg), "--quiet", "--resume"]) == 2
            capsys.readouterr()
        assert not (tmp_path / "run" / "traces.jsonl").exists()
        assert main(["optimize", str(cfg), "--quiet"]) == 0  # free again


def test_a_second_process_is_refused_while_a_run_is_live(tmp_path):
    with StubServer(respond_body, latency=0.4) as stub:  # the first run lasts several seconds
        cfg = _config(tmp_path, stub.base_url, steps=4)
        env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        cmd = [sys.executable, "-m", "funcgrad.cli.main", "optimize", str(cfg), "--quiet"]
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lock = tmp_path / "run" / ".lock"
        for _ in range(400):
            if lock.exists() and lock.read_bytes():
                break
            threading.Event().wait(0.025)
        second = subprocess.run([*cmd[:-1], "--resume", "--quiet"], env=env, capture_output=True, timeout=60)
        assert first.wait(timeout=120) == 0
    assert second.returncode == 2
    assert f"being written by process {first.pid}" in second.stderr.decode()
    lines = (tmp_path / "run" / "traces.jsonl").read_bytes().splitlines()
    assert len(lines) == len(set(lines))  # nothing written twice


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_bytes(orjson.dumps({"pid": dead.pid, "host": "here"}))
    with StubServer(respond_body) as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 0


# ---------------------------------------------------------------- 3. stages after the last checkpoint


def test_resume_rewrites_the_files_a_kill_after_the_final_checkpoint_lost(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url)
        assert main(["optimize", str(cfg), "--quiet"]) == 0
        run = tmp_path / "run"
        report = (run / "report.md").read_text()
        for name in ("report.md", "learning_curve.png", "history.tsv", "report.html"):
            (run / name).unlink()
        calls = len(stub.requests)
        assert main(["optimize", str(cfg), "--quiet", "--resume"]) == 0
        assert len(stub.requests) == calls  # nothing re-asked
    assert (run / "report.md").read_text().split("## Usage")[0] == report.split("## Usage")[0]
    assert (run / "learning_curve.png").stat().st_size > 0 and (run / "history.tsv").exists() and (run / "report.html").exists()


def test_a_fresh_start_never_appends_to_a_previous_starts_files(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "traces.jsonl").write_bytes(b'{"stale": "line of a start killed in its initial evaluation"}\n')
    (run / "failures.jsonl").write_bytes(b'{"stale": 1}\n')
    with StubServer(respond_body) as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 0
    assert b"stale" not in (run / "traces.jsonl").read_bytes()
    assert not (run / "failures.jsonl").exists()


def test_every_run_file_is_private(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        with StubServer(respond_body) as stub:
            assert main(["optimize", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert {"traces.jsonl", "learning_curve.png", "report.md", "checkpoint.json", ".lock"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}


# ---------------------------------------------------------------- 4. bad input: one message, exit 2, nothing paid


def test_a_lone_surrogate_in_the_data_is_refused_before_any_call(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, task='name = "fault_fixtures:surrogate_task"')
        assert main(["optimize", str(cfg), "--quiet"]) == 2
        assert stub.requests == ()
    assert "not valid Unicode" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_a_lone_surrogate_in_a_prompt_fails_before_any_call(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, task='name = "fault_fixtures:surrogate_task"\nwhere = "prompt"')
        assert main(["optimize", str(cfg), "--quiet"]) == 3
        assert stub.requests == ()
    line = _one_error_line(capsys.readouterr().err)
    assert "LLM node 'answer': the system prompt contains '\\udc80'" in line


def test_bad_paths_give_one_message(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    cfg = _config(tmp_path, "http://127.0.0.1:9/v1", run=str(tmp_path / "afile"))
    assert main(["optimize", str(cfg), "--quiet"]) == 2
    assert "is a file" in _one_error_line(capsys.readouterr().err)
    cfg = _config(tmp_path, "http://127.0.0.1:9/v1", run="/proc/funcgrad-cannot-be-here")
    assert main(["optimize", str(cfg), "--quiet"]) == 2
    assert "cannot create run directory" in _one_error_line(capsys.readouterr().err)
    assert main(["optimize", str(tmp_path), "--quiet"]) == 2
    assert "is a directory" in _one_error_line(capsys.readouterr().err)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(_config(tmp_path, "http://127.0.0.1:9/v1").read_bytes() + "# caf\xe9\n".encode("latin-1"))
    assert main(["optimize", str(latin1), "--quiet"]) == 2
    assert "not UTF-8" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "field, value, says",
    [("step", "abc", "fit.step = 'abc' must be a whole number"), ("val_score", 7, "fit.val_score = 7 must be a number in [0, 1]"),
     ("stopped", None, "fit.stopped = None must be a string"), ("traces_bytes", -1, "traces_bytes = -1")],
)
def test_a_hand_edited_checkpoint_is_refused_naming_the_field(tmp_path, capsys, field, value, says):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, steps=1)
        assert main(["optimize", str(cfg), "--quiet"]) == 0
        path = tmp_path / "run" / "checkpoint.json"
        doc = orjson.loads(path.read_bytes())
        doc["fit"]["stopped"] = ""
        (doc if field == "traces_bytes" else doc["fit"])[field] = value
        path.write_bytes(orjson.dumps(doc))
        calls = len(stub.requests)
        assert main(["optimize", str(cfg), "--quiet", "--resume"]) == 2
        assert len(stub.requests) == calls
    assert says in _one_error_line(capsys.readouterr().err)


def test_show_piped_into_head_ends_quietly(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 0
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    shell = f"{sys.executable} -m funcgrad.cli.main show {tmp_path / 'run'} --limit 1000 | head -n 2"
    done = subprocess.run(shell, shell=True, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2
    assert done.stderr == b""


def test_show_prints_a_failure_as_a_failure(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, task='name = "fault_fixtures:buggy_task"\nbug = "fn"')
        assert main(["optimize", str(cfg), "--quiet"]) == 3
    capsys.readouterr()
    assert main(["show", str(tmp_path / "run" / "failures.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "FAILED (pipeline in node 'parse'): node 'parse' failed: ValueError" in out and "score" not in out


# ---------------------------------------------------------------- 5. the cache knows which server answered


def test_two_servers_with_the_same_model_name_do_not_share_answers(tmp_path, capsys):
    with StubServer(respond_body) as a, StubServer(lambda body: "from B") as b:
        cfg_a = _config(tmp_path, a.base_url, cache=str(tmp_path / "shared"))
        assert main(["evaluate", str(cfg_a), "--quiet"]) == 0
        assert "accuracy 0.0%" in capsys.readouterr().out  # the initial prompt is wrong on purpose
        cfg_b = _config(tmp_path, b.base_url, cache=str(tmp_path / "shared"))
        assert main(["evaluate", str(cfg_b), "--quiet"]) == 0
        capsys.readouterr()
        assert len(b.requests) == 4  # B was asked every test question itself


# ---------------------------------------------------------------- the embedded model behind injected faults


@pytest.mark.real_model
@pytest.mark.smoke
def test_the_embedded_model_behind_faults_answers_every_example_once(local_engine, tmp_path):
    """A fault-injecting proxy in front of the real model: every example still gets the model's own answer."""
    import funcgrad as fg
    from funcgrad.core.calls import Request
    from funcgrad.engines.cache import CachedEngine
    from funcgrad.engines.local import model_identity
    from funcgrad.engines.openai import OpenAIEngine, RetryPolicy

    assert local_engine.identity == model_identity("qwen2.5-coder-0.5b")  # the file's sha256, not the random port
    seen = {}

    def proxy(body):
        request = Request(messages=[(m["role"], m["content"]) for m in body["messages"]], max_tokens=body["max_tokens"])
        return local_engine.complete(request).text

    def first_attempt_fails(index, body):
        key = body["messages"][-1]["content"]
        seen[key] = seen.get(key, 0) + 1
        return ("500", "reset", "429")[len(seen) % 3] if seen[key] == 1 else None

    node = fg.LLM("answer", system=("sys",), user="{q}", max_tokens=6)
    state = fg.PromptState.of(sys=fg.Param("Reply with the number only."))
    examples = [fg.Example(f"e{a}", f"What is {a} + {a}?", str(2 * a)) for a in (1, 2, 3)]
    with StubServer(proxy, faults=first_attempt_fails) as stub:
        fast = RetryPolicy(base_delay=0.01, max_delay=0.05)
        with OpenAIEngine("proxied", base_url=stub.base_url, api_key="", timeout=600, concurrency=2, retry=fast) as engine:
            results = fg.run_batch(lambda p, x: node(p, q=x), state, examples, engine=CachedEngine(engine, tmp_path), loss=fg.exact_match)
    assert [r.failed for r in results] == [False] * 3
    assert sorted(seen.values()) == [2, 2, 2]  # each question: one injected fault, then the model's answer
    assert all(r.trace.records[1].output.strip() and r.trace.records[1].error is None for r in results)


# ---------------------------------------------------------------- 6. issue 23: keys, statistics, input, resume, storage


def _critic(url: str, key_env: str | None = None) -> str:
    named = f'api_key_env = "{key_env}"\n' if key_env else ""
    return f'\n[critic]\nbase_url = "{url}"\nmodel = "stub"\nretries = 1\n{named}'


@pytest.mark.parametrize("section", ["engine", "critic"])
def test_a_named_key_variable_that_is_not_set_never_falls_back_to_openai_api_key(tmp_path, capsys, monkeypatch, section):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-users-openai-key")
    monkeypatch.delenv("FUNCGRAD_TEST_OTHER_KEY", raising=False)
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, engine='api_key_env = "FUNCGRAD_TEST_OTHER_KEY"' if section == "engine" else "")
        if section == "critic":
            cfg.write_text(cfg.read_text() + _critic(stub.base_url, "FUNCGRAD_TEST_OTHER_KEY"))
        assert main(["optimize", str(cfg), "--quiet"]) == 2
        assert main(["evaluate", str(cfg), "--quiet"]) == 2
        assert stub.requests == ()  # nothing was sent, least of all the OpenAI key
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(f"[{section}] api_key_env = 'FUNCGRAD_TEST_OTHER_KEY': FUNCGRAD_TEST_OTHER_KEY is not set" in e for e in err)
    assert not (tmp_path / "run").exists()


def test_each_server_gets_the_key_its_section_names(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("FUNCGRAD_TEST_OTHER_KEY", "sk-other")
    with StubServer(respond_body) as task_server, StubServer(respond_body) as critic_server:
        cfg = _config(tmp_path, task_server.base_url, engine='api_key_env = "FUNCGRAD_TEST_OTHER_KEY"', steps=1)
        cfg.write_text(cfg.read_text() + _critic(critic_server.base_url))  # names no variable: OPENAI_API_KEY
        assert main(["optimize", str(cfg), "--quiet"]) == 0
        task_keys = {r.headers.get("authorization") for r in task_server.requests}
        critic_keys = {r.headers.get("authorization") for r in critic_server.requests}
    assert task_keys == {"Bearer sk-other"} and critic_keys == {"Bearer sk-openai"}
    run_files = b"".join(p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file())
    assert b"sk-other" not in run_files and b"sk-openai" not in run_files


def test_a_task_without_validation_examples_is_refused_before_anything(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url, task='name = "fault_fixtures:no_val_task"')), "--quiet"]) == 2
        assert stub.requests == ()
    assert "has no validation examples (e.g. [task] n_val = 0)" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_failed_validation_examples_are_counted_logged_and_never_averaged_in(tmp_path, capsys):
    def faults(index, body):  # two of the four validation examples (e4..e7) always fail
        return "500" if body["messages"][-1]["content"] in ("q5", "q6") else None

    with StubServer(respond_body, faults=faults) as stub:
        cfg = _config(tmp_path, stub.base_url)
        cfg.write_text(cfg.read_text().replace("seed = 1\n", "seed = 1\nmax_failure_rate = 0.5\n"))
        assert main(["optimize", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy 0.0% -> 100.0% (both over 4 examples, none failed)" in out
    assert "validation 0.0% -> 100.0% (both over 2 of 4 examples, 2 failed)" in out
    run = tmp_path / "run"
    failed = [orjson.loads(x) for x in (run / "failures.jsonl").read_bytes().splitlines()]
    assert {(f["step"], f["phase"], f["result"]["example"]["id"]) for f in failed} >= {(0, "val", "e5"), (0, "val", "e6")}
    assert all(f["result"]["loss"] is None for f in failed)
    header, *rows = [line.split("\t") for line in (run / "history.tsv").read_text().splitlines()]
    assert header[-4:] == ["train_n", "train_failed", "val_n", "val_failed"]
    assert [row[-2:] for row in rows] == [["4", "2"]] * len(rows) and rows
    report = (run / "report.md").read_text()
    assert "- validation accuracy: 0.000 (over 2 of 4 examples, 2 failed) -> 1.000 (over 2 of 4 examples, 2 failed)" in report


def test_a_failure_rate_that_lets_a_whole_batch_fail_is_refused(tmp_path, capsys):
    cfg = _config(tmp_path, "http://127.0.0.1:9/v1")
    cfg.write_text(cfg.read_text().replace("seed = 1\n", "seed = 1\nmax_failure_rate = 1\n"))
    assert main(["optimize", str(cfg), "--quiet"]) == 2
    assert "max_failure_rate=1 must be a number in [0, 1): at 1 every example of a batch could fail" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_a_misspelt_param_in_an_evaluated_state_is_refused(tmp_path, capsys):
    import funcgrad as fg

    state = tmp_path / "st.json"
    state.write_bytes(fg.dumps(fg.PromptState.of(instructoin=fg.Param("Answer the question."))))
    with StubServer(respond_body) as stub:
        assert main(["evaluate", str(_config(tmp_path, stub.base_url)), "--state", str(state), "--quiet"]) == 2
        assert stub.requests == ()
    captured = capsys.readouterr()
    assert "has param 'instructoin', which task 'tiny' does not have; the task's params are: instruction" in _one_error_line(captured.err)
    assert "accuracy" not in captured.out


@pytest.mark.parametrize(
    "args, says",
    [(["--step", "99"], "--step 99: this run has no such step (its logged steps: 0 to 3)"),
     (["--step", "-1"], "--step -1: this run has no such step"),
     (["--phase", "bogus"], "--phase 'bogus' is not a phase; choose one of train, rerun, minibatch"),
     (["--limit", "-1"], "--limit -1: must be a whole number >= 0"), (["--limit", "-5"], "--limit -5: must be")],
)
def test_show_refuses_a_selection_that_cannot_match(tmp_path, capsys, args, says):
    with StubServer(respond_body) as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["show", str(tmp_path / "run"), *args]) == 2
    captured = capsys.readouterr()
    assert says in _one_error_line(captured.err) and captured.out == ""


def test_a_checkpoint_step_beyond_the_runs_steps_is_refused(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url)
        assert main(["optimize", str(cfg), "--quiet"]) == 0
        path = tmp_path / "run" / "checkpoint.json"
        doc = orjson.loads(path.read_bytes())
        doc["fit"]["step"] = 99
        path.write_bytes(orjson.dumps(doc))
        calls = len(stub.requests)
        assert main(["optimize", str(cfg), "--quiet", "--resume"]) == 2
        assert len(stub.requests) == calls
    captured = capsys.readouterr()
    assert "field fit.step = 99 is beyond the run's 3 steps" in _one_error_line(captured.err) and "99 steps" not in captured.out


def test_report_on_a_folder_without_a_run_writes_nothing(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a run directory" in _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_resume_after_a_failure_before_the_first_checkpoint_redoes_the_work(tmp_path, capsys):
    clean = _clean_run(tmp_path)
    switch = Switch("500", when=lambda: True)
    with StubServer(respond_body, faults=switch) as stub:
        cfg = _config(tmp_path, stub.base_url)
        assert main(["optimize", str(cfg), "--quiet"]) == 3
        assert "before its first checkpoint (a rerun, with or without --resume, starts over)" in _one_error_line(capsys.readouterr().err)
        failures = (tmp_path / "run" / "failures.jsonl").read_bytes()
        switch.on = False  # the cause is fixed
        assert main(["optimize", str(cfg), "--quiet", "--resume"]) == 0, capsys.readouterr().err
    final = _checkpoint(tmp_path / "run")
    assert (final["step"], final["state"], final["final_test"], final["log"]) == (clean["step"], clean["state"], clean["final_test"], clean["log"])
    assert failures and (tmp_path / "run" / "failures.jsonl").read_bytes() == failures  # the record of what went wrong is kept


def _lines_parse(path: Path) -> int:
    return len([orjson.loads(line) for line in path.read_bytes().splitlines()])


def test_a_full_disk_under_the_run_directory_is_one_line_and_resume_finishes(tmp_path, capsys, monkeypatch):
    clean = _clean_run(tmp_path)
    run = tmp_path / "run"
    disk = DiskFault(monkeypatch, run, when=_after_step(run, 1))  # the disk fills once step 1 is checkpointed
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url)
        assert main(["optimize", str(cfg), "--quiet"]) == 3
        line = _one_error_line(capsys.readouterr().err)
        assert f"cannot write '{run}" in line and "[Errno 28] No space left on device (ENOSPC)" in line
        assert "with its checkpoint at step 1 (rerun with --resume" in line and disk.hits
        checkpoint_before = (run / "checkpoint.json").read_bytes()
        assert _checkpoint(run)["step"] == 1 and _lines_parse(run / "traces.jsonl") > 0  # intact: no half line
        assert not [p for p in run.iterdir() if p.name.startswith(".tmp-")]
        disk.on = False  # space freed
        assert checkpoint_before == (run / "checkpoint.json").read_bytes()
        assert main(["optimize", str(cfg), "--quiet", "--resume"]) == 0, capsys.readouterr().err
    final = _checkpoint(run)
    assert (final["step"], final["state"], final["final_test"], final["log"]) == (clean["step"], clean["state"], clean["final_test"], clean["log"])


def test_a_full_disk_under_the_cache_is_not_blamed_on_the_users_node(tmp_path, capsys, monkeypatch):
    DiskFault(monkeypatch, tmp_path / "cache")
    with StubServer(respond_body) as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 3
        assert len(stub.requests) <= 2  # the first unstorable answer stops the run (2 workers may be in flight)
    line = _one_error_line(capsys.readouterr().err)
    assert "the answer cache cannot store the answer to" in line and f"cannot write '{tmp_path / 'cache'}" in line
    assert "[Errno 28]" in line and "that answer was paid for but is not kept" in line
    assert "pipeline failure" not in line and "node" not in line.split("[the run stopped")[0]


def test_a_report_that_cannot_be_written_is_one_line_and_keeps_the_old_page(tmp_path, capsys, monkeypatch):
    with StubServer(respond_body) as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url)), "--quiet"]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    before = (run / "report.html").read_bytes()
    DiskFault(monkeypatch, run, error=13)  # a read-only run directory (EACCES)
    assert main(["report", str(run)]) == 3
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot write '{run / 'report.html'}': [Errno 13] Permission denied (EACCES); free space or fix" in line
    assert (run / "report.html").read_bytes() == before


def test_a_task_factory_that_raises_is_one_line(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        assert main(["optimize", str(_config(tmp_path, stub.base_url, task='name = "fault_fixtures:raising_factory"')), "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "[task] task factory 'fault_fixtures:raising_factory' raised RuntimeError: the dataset file was not found (at fault_fixtures.py:" in line
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_replaced_by_a_directory_is_named(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, steps=1)
        assert main(["optimize", str(cfg), "--quiet"]) == 0
        (tmp_path / "run" / "checkpoint.json").unlink()
        (tmp_path / "run" / "checkpoint.json").mkdir()
        assert main(["optimize", str(cfg), "--quiet", "--resume"]) == 2
    assert "checkpoint.json' is a directory, not a file" in _one_error_line(capsys.readouterr().err)


def test_resume_with_a_changed_setting_names_it(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, steps=1)
        assert main(["optimize", str(cfg), "--quiet"]) == 0
        cfg.write_text(cfg.read_text().replace("steps = 1", "steps = 5"))
        assert main(["optimize", str(cfg), "--quiet", "--resume"]) == 2
    assert "belongs to a different configuration (changed: [train] steps: 1 -> 5)" in _one_error_line(capsys.readouterr().err)


def test_a_config_with_a_utf8_byte_order_mark_is_read(tmp_path, capsys):
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url)
        cfg.write_bytes(b"\xef\xbb\xbf" + cfg.read_bytes())
        assert main(["evaluate", str(cfg), "--quiet"]) == 0
    assert "tiny test: accuracy 0.0% on 4 examples, none failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "url", ["htp://127.0.0.1:9/v1", "HTTP://127.0.0.1:9/v1", "http:///v1", "http://127.0.0.1:99999/v1", "http://[::1/v1", "http://h st/v1"]
)
def test_a_base_url_that_is_not_http_is_bad_input_and_writes_nothing(tmp_path, capsys, url):
    assert main(["optimize", str(_config(tmp_path, url)), "--quiet"]) == 2
    assert f"[engine] base_url = {url!r}: must be an http:// or https:// URL with a host" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_silently_hung_server_is_cut_by_the_deadline(tmp_path, capsys):
    with StubServer(respond_body, faults=lambda i, body: "hang") as stub:
        cfg = _config(tmp_path, stub.base_url, engine="deadline = 1")
        started = time.monotonic()
        assert main(["evaluate", str(cfg), "--quiet"]) == 3
        took = time.monotonic() - started
    assert "no complete answer within deadline=1s" in _one_error_line(capsys.readouterr().err)
    assert took < 4.5  # the 5 s read timeout never fired


def test_a_replay_miss_names_the_command_line_flag(tmp_path, capsys):
    assert main(["optimize", str(_config(tmp_path, "http://127.0.0.1:9/v1")), "--quiet", "--replay"]) == 3
    line = _one_error_line(capsys.readouterr().err)
    assert "record it by running once without --replay" in line and "replay=True" not in line


# ---------------------------------------------------------------- 7. statistics honesty, as properties

_counts = st.integers(0, 50).flatmap(lambda n: st.builds(Counts, st.just(n), st.integers(0, n)))
_scores = st.one_of(st.none(), st.floats(0, 1))


@given(_scores, _counts)
def test_a_figure_is_printed_only_over_answered_examples_and_names_them(score, counts):
    text = figure(score, counts)
    assert ("%" in text) == (score is not None and counts.answered > 0)
    if "%" in text:
        assert f" {counts.n} example" in text and (f"{counts.failed} failed" in text if counts.failed else "none failed" in text)
    assert Counts.from_data(counts.to_data()) == counts


@given(_scores, _counts, _scores, _counts)
def test_a_change_line_never_hides_a_count(before, before_counts, after, after_counts):
    text = change(before, before_counts, after, after_counts)
    for score, counts in ((before, before_counts), (after, after_counts)):
        if score is not None and counts.answered:
            assert str(counts.n) in text and (str(counts.failed) if counts.failed else "none failed") in text
    assert text.count("%") == (before is not None and before_counts.answered > 0) + (after is not None and after_counts.answered > 0)


def test_step_counts_survive_the_checkpoint_and_old_checkpoints_still_load():
    from funcgrad.training.records import FitState, StepLog, fit_state_from_data, fit_state_to_data
    import funcgrad as fg

    state = fg.PromptState.of(a=fg.Param("x"))
    fs = FitState(1, state, {}, 0.5, 0.5, None, log=(StepLog(1, ("e0",), 1.0, (), False, 0.5, Counts(1, 0), Counts(4, 2)),))
    data = orjson.loads(orjson.dumps(fit_state_to_data(fs)))
    assert fit_state_from_data(data).log == fs.log
    for entry in data["log"]:  # a checkpoint written before the counts existed
        del entry["train_counts"], entry["val_counts"]
    assert fit_state_from_data(data).log[0].val_counts is None


def test_an_append_that_fills_the_disk_half_way_is_cut_back(tmp_path, monkeypatch):
    import errno

    import funcgrad as fg
    from funcgrad.core.errors import StorageError
    from funcgrad.core.run import Loss, Result

    rd = RunDir(tmp_path)
    result = Result(fg.Example("e", "q"), "a", fg.Trace(), Loss(1.0))
    rd.log_results(0, "val", [result])
    before = rd.traces_path.read_bytes()
    real_write, calls = os.write, []

    def half_then_full(fd, data):  # the kernel takes half the bytes, then the disk is full
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(StorageError, match=r"cannot write '.*traces.jsonl': \[Errno 28\] No space left on device \(ENOSPC\)"):
        rd.log_results(1, "val", [result])
    monkeypatch.undo()
    assert len(calls) == 2 and rd.traces_path.read_bytes() == before  # whole lines only


def test_a_cache_that_cannot_store_an_answer_stops_the_run_and_says_it_was_paid_for(tmp_path, monkeypatch):
    from funcgrad.core.calls import Request
    from funcgrad.core.errors import EngineUnavailable
    from funcgrad.engines.cache import CachedEngine
    from funcgrad.engines.scripted import ScriptedEngine

    asked = []
    engine = CachedEngine(ScriptedEngine(lambda r: asked.append(r) or "4"), tmp_path)
    DiskFault(monkeypatch, tmp_path)
    with pytest.raises(EngineUnavailable, match=r"cannot write '.*\.json': \[Errno 28\] .*that answer was paid for but is not kept"):
        engine.complete(Request(messages=(("user", "2+2?"),)))
    assert len(asked) == 1 and not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob(".tmp-*"))


def test_the_mean_gate_compares_two_states_on_the_examples_both_answered():
    """The current prompt's call fails on v2, which the candidate gets right: on the examples both
    answered they tie, so there is no evidence of a gain (the old rule compared 0.500 over 4 with
    0.333 over 3 and accepted)."""
    import funcgrad as fg
    from funcgrad.core.errors import EngineError
    from funcgrad.engines.scripted import ScriptedEngine
    from funcgrad.training.fit import FitSettings, fit

    node = fg.LLM("answer", system=("sys",), user="{input}")
    right = {"A": {"v0", "t0"}, "B": {"v0", "v2", "t0"}}

    def respond(request):
        system, question = request.messages[0].content, request.messages[-1].content
        if system == "A" and question == "v2":
            raise EngineError("HTTP 500: injected")
        return "yes" if question in right[system] else "no"

    def data(ids):
        return tuple(fg.Example(i, i, "yes") for i in ids)

    def to_b(results, state, s, context):
        return fg.Update({"sys": "B"}), s
        yield

    task = fg.Task("gate", lambda p, x: node(p, input=x), fg.PromptState.of(sys=fg.Param("A")), fg.exact_match,
                   data(["t0"]), data(["v0", "v1", "v2", "v3"]), ())
    out = fit(task, fg.Strategy("to_b", lambda state: None, to_b), engine=ScriptedEngine(respond),
              settings=FitSettings(steps=1, batch_size=1, proposals_per_step=1, max_failure_rate=0.25))
    proposal = out.log[0].proposals[0]
    assert (proposal.verdict.value, proposal.val) == ("no_val_gain", 0.5)
    assert proposal.reason == "did not beat the validation score (0.333 <= 0.333 on the 3 of 4 examples both answered)"
    assert out.log[0].val_counts == Counts(4, 1) and out.state["sys"].value == "A"
