"""[tracking]: a scripted run logged to a temporary MLflow store and read back; failures are one warning line."""

import sys
from pathlib import Path

import orjson
import pytest

from funcgrad.cli.config import parse_config, parse_tracking
from funcgrad.cli.main import main
from funcgrad.core.errors import ConfigError
from funcgrad.engines.stub import StubServer
from funcgrad.training.tracking import Tracker, local_store
from funcgrad.training.events import StepDone
from funcgrad.training.records import StepLog
from train_fixtures import respond_body

TESTS = Path(__file__).parent
BASE = {"task": {"name": "train_fixtures:tiny_task"}, "strategy": {"name": "train_fixtures:hint_strategy"}}


def _config(tmp_path: Path, base_url: str, tracking: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[task]
name = "train_fixtures:tiny_task"
[strategy]
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
dir = "run"
cache = "cache"
[tracking]
{tracking}
""")
    return path


@pytest.mark.parametrize("table, message", [
    ({"uri": "sqlite:///a.db", "dir": "b"}, "[tracking] sets both uri and dir"),
    ({"folder": "x"}, "[tracking] has unknown key 'folder'; allowed keys: dir, experiment, run_name, uri"),
    ({"experiment": 3}, "[tracking] experiment = 3: must be a str"),
    ({"run_name": ""}, "[tracking] run_name is empty"),
])
def test_bad_tracking_tables_name_the_key(table, message):
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "tracking": table})
    assert message in str(info.value)


def test_tracking_defaults_to_a_local_folder_beside_the_config(tmp_path):
    assert parse_config(BASE).tracking is None  # no [tracking]: nothing is tracked
    store = parse_config({**BASE, "tracking": {}}, base_dir=tmp_path).tracking
    assert store.uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db" and store.artifacts == (tmp_path / "mlruns" / "artifacts").as_uri()
    named = parse_tracking({"uri": "http://127.0.0.1:5000", "experiment": "counting", "run_name": "r1"}, tmp_path)
    assert (named.uri, named.artifacts, named.experiment, named.run_name) == ("http://127.0.0.1:5000", None, "counting", "r1")


@pytest.fixture(scope="module")
def mlflow_client():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # a test sends nothing anywhere
        pytest.importorskip("mlflow", reason="mlflow is not installed: pip install 'funcgrad[mlflow]' (the test extra has it)")
        from mlflow.tracking import MlflowClient

        yield MlflowClient


def test_a_scripted_run_is_logged_and_reads_back(tmp_path, monkeypatch, capsys, mlflow_client):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, 'dir = "store"\nexperiment = "tiny"')
        assert main(["optimize", str(cfg), "--quiet"]) == 0
    assert "funcgrad: warning" not in capsys.readouterr().err
    store = tmp_path / "store"
    client = mlflow_client(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.info.run_id == orjson.loads((tmp_path / "run" / "tracking.json").read_bytes())["run_id"]
    params = run.data.params
    assert (params["task.name"], params["strategy.first_try_bad"], params["train.steps"]) == ("train_fixtures:tiny_task", "true", "2")
    val = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val")]
    assert sorted(val) == [(0, 0.0), (1, 1.0), (2, 1.0)]  # step 0, then the kept state after each step
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "proposals")] == [(1, 2.0), (2, 1.0)]
    assert (run.data.metrics["test_initial"], run.data.metrics["test_final"], run.data.metrics["answers.evaluation"]) == (0.0, 1.0, 8.0)
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "report.md", "history.tsv", "final_state.json", "config.json", "learning_curve.png", "prompts"} <= files
    accepted = client.download_artifacts(run.info.run_id, "prompts/step-001.json", str(tmp_path / "down"))
    assert orjson.loads(Path(accepted).read_bytes()) == {"instruction": "Answer the question. Think carefully."}
    assert Path(client.download_artifacts(run.info.run_id, "report.md", str(tmp_path / "down"))).read_bytes() == \
        (tmp_path / "run" / "report.md").read_bytes()
    assert (store / "artifacts").is_dir() and not (tmp_path / "mlruns").exists()  # artifacts beside the database


def test_a_store_that_cannot_be_opened_is_one_warning_and_the_run_completes(tmp_path, monkeypatch, capsys, mlflow_client):
    monkeypatch.syspath_prepend(str(TESTS))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, so no folder can be made here")
    with StubServer(respond_body) as stub:
        cfg = _config(tmp_path, stub.base_url, f'uri = "sqlite:///{blocked}/sub/mlflow.db"')
        assert main(["optimize", str(cfg), "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("funcgrad: warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("funcgrad: warning: tracking stopped: ") and "the run goes on" in warnings[0]
    assert not any("Traceback" in line for line in err)
    assert (tmp_path / "run" / "report.html").exists() and not (tmp_path / "run" / "tracking.json").exists()


@pytest.fixture(scope="module")
def store(tmp_path_factory, mlflow_client):
    """One local store for the tests of the Tracker itself (a new SQLite store takes seconds to set up)."""
    return local_store(tmp_path_factory.mktemp("tracking") / "store")


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, store, mlflow_client):
    (tmp_path / "run").mkdir()
    said = []
    first = Tracker(store, tmp_path / "run", warn=said.append)
    with pytest.raises(RuntimeError), first:
        raise RuntimeError("killed")  # the job stopped: its MLflow run is marked FAILED
    client = mlflow_client(tracking_uri=store.uri)
    assert client.get_run(first.run_id).info.status == "FAILED"
    again = Tracker(store, tmp_path / "run", resume=True, warn=said.append)
    assert again.run_id == first.run_id and client.get_run(first.run_id).info.status == "RUNNING"
    fresh = Tracker(store, tmp_path / "run", warn=said.append)  # a new start in the same directory: a new MLflow run
    assert fresh.run_id != first.run_id and said == []


def test_a_failure_mid_run_is_one_warning_then_silence(tmp_path, store):
    said = []
    (tmp_path / "run").mkdir()
    tracker = Tracker(store, tmp_path / "run", {"task": {"name": "t"}}, warn=said.append)
    assert said == [] and tracker.run_id

    def broken(*args, **kwargs):
        raise OSError("disk full\nsecond line")

    tracker._client.log_batch = broken
    log = StepLog(1, ("e1",), 0.5, (), False, 0.5)
    tracker.event(StepDone(1, 2, log))
    tracker.event(StepDone(2, 2, log))
    tracker.finish(type("Fit", (), {"initial_val": 0.0, "initial_test": 0.0, "final_test": 1.0, "step": 2, "stopped": "done"})())
    assert said == ["tracking stopped: OSError: disk full; the run goes on"]


def test_without_mlflow_tracking_is_off_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    said = []
    with Tracker(local_store(tmp_path / "store"), tmp_path / "run", warn=said.append) as tracker:
        tracker.event(StepDone(1, 1, StepLog(1, (), 0.0, (), False, 0.0)))
    assert said == ["tracking is off: mlflow is not installed (pip install 'funcgrad[mlflow]'); the run goes on"]
    assert not (tmp_path / "store").exists()
