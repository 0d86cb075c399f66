"""funcgrad compare on a local Ray instance: each cell in a Ray worker, results identical to a serial run."""

import os
from pathlib import Path

import orjson
import pytest

from funcgrad.cli.executors import ExecutorConfig, run_cells
from funcgrad.cli.main import main
from funcgrad.engines.stub import StubServer
from train_fixtures import grid_config, respond_body, results_without_wall

ray = pytest.importorskip("ray")
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for this module (about 7 s to start); its workers find the test fixtures."""
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def test_ray_runs_cells_in_workers_and_matches_a_serial_run(local_ray, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    with StubServer(respond_body) as stub:
        budget = "[budget]\nmax_calls = 9\n"
        serial = grid_config(tmp_path, stub.base_url, seeds=(0,), run_dir="serial", cache="cache-serial",
                             extra=budget, name="serial.toml")
        parallel = grid_config(tmp_path, stub.base_url, seeds=(0,), run_dir="ray", cache="cache-ray",
                               extra=budget + '[executor]\nkind = "ray"\ncpus_per_cell = 1', name="ray.toml")
        assert main(["compare", str(serial), "--quiet"]) == 0
        assert main(["compare", str(parallel)]) == 0  # separate cold cache: nothing shared with the serial run
    assert "2 cells on ray (local instance, 1 CPU per cell)" in capsys.readouterr().err
    assert results_without_wall(tmp_path / "ray" / "results.json") == results_without_wall(tmp_path / "serial" / "results.json")
    assert ray.is_initialized()  # an instance the grid did not start is left running


def test_run_cells_on_ray_keeps_the_order_of_the_cells(local_ray):
    out = run_cells(_worker_pid_and_echo, [b"0", b"1", b"2"], ExecutorConfig("ray", cpus_per_cell=0.5))
    docs = [orjson.loads(o) for o in out]
    assert [d["echo"] for d in docs] == ["0", "1", "2"]
    assert all(d["pid"] != os.getpid() for d in docs)  # each cell ran in a worker process


def _worker_pid_and_echo(payload: bytes) -> bytes:
    return orjson.dumps({"echo": payload.decode(), "pid": os.getpid()})
