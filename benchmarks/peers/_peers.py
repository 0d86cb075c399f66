"""Shared plumbing of the peer benchmarks (runs in funcgrad's own Python).

- ``ensure_venv(peer)``: a private virtualenv per peer library under
  ``$FUNCGRAD_BENCH_DIR`` (default ``/tmp/funcgrad-peers``), created with
  ``python -m venv`` + ``pip install <peer>==<pinned version>`` on first use. Peers are
  never dependencies of funcgrad and never imported here: their code runs only in
  worker subprocesses (``workers/*.py``) started with the venv's interpreter.
- ``stub(latency)``: ``stub.py`` (a funcgrad StubServer) in its own process, with a
  request counter the benchmark reads after each run.
- ``run_worker(...)``: start a worker with an isolated, empty HOME (so no peer finds
  a warm cache from an earlier run) and return the one JSON line it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORKERS = HERE / "workers"
RESULTS = HERE / "results"

# Versions measured in docs/benchmarks-peers.md; override with FUNCGRAD_PEER_<NAME>=<pip spec>.
PINNED = {"textgrad": "textgrad==0.1.8", "dspy": "dspy==3.4.1", "adalflow": "adalflow[openai]==1.1.3"}


def bench_dir() -> Path:
    path = Path(os.environ.get("FUNCGRAD_BENCH_DIR", "/tmp/funcgrad-peers"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_venv(peer: str) -> Path:
    """The python of ``peer``'s private venv (created and installed on first use)."""
    spec = os.environ.get(f"FUNCGRAD_PEER_{peer.upper()}", PINNED[peer])
    venv = bench_dir() / peer
    python = venv / "bin" / "python"
    stamp = venv / ".funcgrad-installed"
    if python.exists() and stamp.exists() and stamp.read_text() == spec:
        return python
    print(f"[peers] creating {venv} and installing {spec} (one-time)", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", spec], check=True)
    stamp.write_text(spec)
    return python


def version(python: Path | str, dist: str) -> str:
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


CL100K = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"  # tiktoken's cache name: sha1 of the cl100k_base URL


def tiktoken_cache() -> str:
    """A TIKTOKEN_CACHE_DIR holding cl100k_base, for AdalFlow (it builds a tiktoken tokenizer at import).

    Nothing but PyPI is reachable, and tiktoken downloads its BPE files from a blob store.
    litellm (a dependency of DSPy and TextGrad) ships that file inside its wheel; tiktoken
    checks its sha256 when it loads it. The DSPy venv is created if needed.
    """
    for peer in ("dspy", "textgrad"):
        venv = bench_dir() / peer
        found = sorted(venv.glob(f"lib/python3*/site-packages/litellm/litellm_core_utils/tokenizers/{CL100K}"))
        if found:
            return str(found[0].parent)
    python = ensure_venv("dspy")
    return tiktoken_cache() if python.exists() else ""


def python_for(lib: str) -> Path:
    return Path(sys.executable) if lib == "funcgrad" else ensure_venv(lib)


class Stub:
    """A running ``stub.py`` child: ``base_url``, and ``take()`` -> requests seen since the last take."""

    def __init__(self, process: subprocess.Popen, base_url: str):
        self.process, self.base_url = process, base_url

    def take(self) -> dict:
        self.process.stdin.write("take\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())


@contextmanager
def stub(latency: float):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, str(HERE / "stub.py"), "--latency", str(latency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        yield Stub(process, json.loads(process.stdout.readline())["base_url"])
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_worker(lib: str, script: str, args: list[str], *, timeout: float = 900.0, extra_env: dict | None = None) -> dict:
    """Run ``workers/<script>`` with ``lib``'s interpreter in a fresh empty HOME (also its working
    directory); return its JSON result."""
    python = python_for(lib)
    with tempfile.TemporaryDirectory(prefix=f"fg-peer-{lib}-home-") as home:
        env = {
            **os.environ,
            "HOME": home,                          # ~/.dspy_cache, ~/.adalflow, ~/.cache/textgrad start empty
            "XDG_CACHE_HOME": str(Path(home) / ".cache"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm (dspy, textgrad deps) must not fetch its price list
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OPENAI_API_KEY": "sk-local-unused",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        if lib == "adalflow":
            env.setdefault("TIKTOKEN_CACHE_DIR", tiktoken_cache())
        if lib == "funcgrad":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        else:
            env.pop("PYTHONPATH", None)  # the peer venv must not see funcgrad
        out = subprocess.run(
            [str(python), str(WORKERS / script), *args], capture_output=True, text=True, env=env, timeout=timeout,
            cwd=home,  # TextGrad writes ./logs/ into its working directory
        )
    if out.returncode != 0:
        raise RuntimeError(f"{lib} worker {script} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{lib} worker {script} printed no result; stderr ends:\n{out.stderr[-4000:]}")
    result = json.loads(lines[-1])
    result["stderr_tail"] = out.stderr[-1500:]
    return result
