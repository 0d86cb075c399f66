"""Run configuration: a TOML file naming the task, strategy, engines, training knobs and budget.

Every key is checked; a bad key or value raises one ConfigError naming it, e.g.
``[train] batch_size = 0: must be a whole number >= 1``. See examples/*.toml and
docs/cli.md for the full list of keys.

>>> cfg = parse_config({"task": {"name": "object_counting"}, "strategy": {"name": "backprop"}})
>>> cfg.engine.model, cfg.train.batch_size
('qwen2.5-coder-1.5b', 3)
"""

from __future__ import annotations

import codecs
import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from funcgrad.core.errors import ConfigError
from funcgrad.core.judge import Judge
from funcgrad.training.fit import FitSettings
from funcgrad.training.tracking import TrackingConfig, local_store, uri_store
from funcgrad.core.values import FrozenDict, freeze

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
DEFAULT_KEY_VARIABLE = "OPENAI_API_KEY"
DEFAULT_DEADLINE = 600.0  # seconds per call, retries included: a silently hung server stops a call after 10 minutes


@attrs.frozen
class EngineConfig:
    """Where model calls go: a local GGUF model served by funcgrad (``model`` = known
    name or .gguf path), or any OpenAI-compatible server (``base_url`` + ``model``,
    key read from the environment variable ``api_key_env``; the key itself never goes
    in a config file; None: ``OPENAI_API_KEY``, see :func:`api_key`). ``timeout`` bounds
    each read of an answer, ``deadline`` (seconds) a whole call with its retries
    (default :data:`DEFAULT_DEADLINE`, so a silently hung server stops a run within
    minutes); ``retries`` is how often a transient failure is retried (None: 4 for a
    server, 2 for the embedded model)."""

    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key_env: str | None = None
    concurrency: int = 2
    n_ctx: int = 4096
    threads: int = 2
    timeout: float = 600.0
    deadline: float = DEFAULT_DEADLINE
    retries: int | None = None

    @property
    def local(self) -> bool:
        return self.base_url is None


@attrs.frozen
class RunConfig:
    """A whole run: ``task`` and ``strategy`` are a name plus keyword arguments.

    ``config_dir`` is the config file's folder (None for a config built in code):
    ``module:factory`` names are imported from there first (funcgrad.cli.plugins).
    """

    task: str
    task_args: FrozenDict
    strategy: str
    strategy_args: FrozenDict
    engine: EngineConfig
    critic: EngineConfig | None
    train: FitSettings
    max_calls: int | None
    max_tokens: int | None
    run_dir: str
    cache_dir: str | None
    source: FrozenDict = attrs.field(factory=FrozenDict)
    judge: Judge | None = None
    config_dir: str | None = None
    tracking: TrackingConfig | None = None


_SECTIONS = ("task", "strategy", "engine", "critic", "train", "budget", "run", "loss", "tracking")
_ENGINE_TYPES = {
    "model": str, "base_url": str, "api_key_env": str, "concurrency": int, "n_ctx": int, "threads": int,
    "timeout": (int, float), "deadline": (int, float), "retries": int,
}
_TRAIN_TYPES = {f.name: int for f in attrs.fields(FitSettings)} | {"accept": str, "alpha": float, "max_failure_rate": (int, float)}
_BUDGET_TYPES = {"max_calls": int, "max_tokens": int}
_ZERO_OK = {"retries": "0 = no retries", "max_failure_rate": "0 = the first failed example stops the run"}
_RUN_TYPES = {"dir": str, "cache": str}
_LOSS_TYPES = {"rubric": str, "scale": list, "model": str, "max_tokens": int, "output_key": str, "json_schema": bool}


def _table(data: Mapping, name: str) -> Mapping:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] must be a table (a [{name}] section), got {type(value).__name__}")
    return value


def _typed(section: str, table: Mapping, types: Mapping[str, Any]) -> dict:
    out = {}
    for key, value in table.items():
        if key not in types:
            raise ConfigError(f"[{section}] has unknown key {key!r}; allowed keys: {', '.join(sorted(types))}")
        want = types[key]
        if isinstance(value, bool) or not isinstance(value, want):
            names = want.__name__ if isinstance(want, type) else " or ".join(t.__name__ for t in want)
            raise ConfigError(f"[{section}] {key} = {value!r}: must be a {names}")
        if key in _ZERO_OK and value < 0:
            raise ConfigError(f"[{section}] {key} = {value!r}: must be >= 0 ({_ZERO_OK[key]})")
        if isinstance(value, (int, float)) and value <= 0 and key not in _ZERO_OK:
            raise ConfigError(f"[{section}] {key} = {value!r}: must be > 0")
        out[key] = value
    return out


def _named(section: str, table: Mapping) -> tuple[str, FrozenDict]:
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"[{section}] needs name = \"...\" (a string), got {name!r}")
    args = {k: v for k, v in table.items() if k != "name"}
    return name, freeze(args, where=f"[{section}]")


def _engine(section: str, table: Mapping) -> EngineConfig:
    fields = _typed(section, table, _ENGINE_TYPES)
    if "base_url" in fields and "model" not in fields:
        raise ConfigError(f"[{section}] base_url is set, so model = \"...\" (the server's model name) is required too")
    url = fields.get("base_url")
    if url is not None and not _http_url(url):
        raise ConfigError(
            f"[{section}] base_url = {url!r}: must be an http:// or https:// URL with a host (and a port in 1-65535, "
            "no blanks), e.g. \"http://127.0.0.1:8080/v1\""
        )
    if not fields.get("api_key_env", "x").isidentifier():
        raise ConfigError(f"[{section}] api_key_env = {fields['api_key_env']!r}: must be the name of an environment variable, e.g. \"MY_KEY\"")
    return EngineConfig(**fields)


def _http_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host (and a valid port, no blanks), as OpenAIEngine takes it.

    >>> _http_url("http://127.0.0.1:8080/v1"), _http_url("htp://127.0.0.1/v1"), _http_url("https:///v1")
    (True, False, False)
    >>> _http_url("HTTP://h/v1"), _http_url("http://h:99999/v1"), _http_url("http://[::1/v1"), _http_url("http://h /v1")
    (False, False, False, False)
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises ValueError for a port out of range or not a number
    except ValueError:
        return False
    return url.startswith(("http://", "https://")) and bool(parts.hostname) and not any(c.isspace() for c in url)


def api_key(cfg: EngineConfig, section: str = "engine", environ: Mapping[str, str] = os.environ) -> str:
    """The API key sent to ``cfg``'s server: from the variable ``api_key_env`` names, or from
    ``OPENAI_API_KEY`` only when it names none ("" when that is unset: no key is sent).

    A variable that is named but not set is a ConfigError, never a fall-back to
    another key: a key goes only to a server the config chose it for.

    >>> api_key(EngineConfig(base_url="http://h/v1", model="m", api_key_env="MY_KEY"), environ={"MY_KEY": "k1"})
    'k1'
    >>> api_key(EngineConfig(base_url="http://h/v1", model="m"), environ={"OPENAI_API_KEY": "k2"})
    'k2'
    >>> api_key(EngineConfig(base_url="http://h/v1", model="m", api_key_env="MY_KEY"), environ={"OPENAI_API_KEY": "k2"})
    Traceback (most recent call last):
    funcgrad.core.errors.ConfigError: [engine] api_key_env = 'MY_KEY': MY_KEY is not set; export it (the key of http://h/v1), or drop api_key_env (then OPENAI_API_KEY is sent if it is set, else no key)
    """
    if cfg.api_key_env is None:
        return environ.get(DEFAULT_KEY_VARIABLE, "")
    key = environ.get(cfg.api_key_env)
    if key is None:
        raise ConfigError(
            f"[{section}] api_key_env = {cfg.api_key_env!r}: {cfg.api_key_env} is not set; export it (the key of "
            f"{cfg.base_url}), or drop api_key_env (then {DEFAULT_KEY_VARIABLE} is sent if it is set, else no key)"
        )
    return key


def check_api_keys(config: RunConfig) -> None:
    """ConfigError if a server engine of ``config`` names a key variable that is not set (before any request).

    >>> base = {"task": {"name": "object_counting"}, "strategy": {"name": "backprop"}}
    >>> check_api_keys(parse_config(base | {"critic": {"base_url": "http://h/v1", "model": "m", "api_key_env": "NO_SUCH_VAR_23"}}))
    Traceback (most recent call last):
    funcgrad.core.errors.ConfigError: [critic] api_key_env = 'NO_SUCH_VAR_23': NO_SUCH_VAR_23 is not set; export it (the key of http://h/v1), or drop api_key_env (then OPENAI_API_KEY is sent if it is set, else no key)
    """
    for section, cfg in (("engine", config.engine), ("critic", config.critic)):
        if cfg is not None and not cfg.local:
            api_key(cfg, section)


def _judge(table: Mapping, engine: EngineConfig) -> Judge:
    """The [loss] table as a Judge; its calls go through the [engine] server."""
    for key, value in table.items():
        want = _LOSS_TYPES.get(key)
        if want is None:
            raise ConfigError(f"[loss] has unknown key {key!r}; allowed keys: {', '.join(sorted(_LOSS_TYPES))}")
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"[loss] {key} = {value!r}: must be a {want.__name__}")
    if "rubric" not in table:
        raise ConfigError("[loss] needs rubric = \"...\" (what a good answer is) and scale = [lowest, highest]")
    if "scale" not in table:
        raise ConfigError("[loss] rubric is set but scale is missing; add scale = [1, 5] (the lowest and highest score)")
    args = dict(table, scale=tuple(table["scale"]))
    model = args.pop("model", engine.model)
    if model != engine.model and engine.local:
        raise ConfigError(
            f"[loss] model = {model!r} is not configured: judge calls go through the [engine] server, which serves only "
            f"{engine.model!r}; drop model, set it to {engine.model!r}, or use an [engine] base_url server that serves {model!r}"
        )
    try:
        return Judge(**args, model="" if model == engine.model else model)
    except ConfigError as exc:
        raise ConfigError(f"[loss] {exc}") from None


def parse_config(data: Mapping, *, base_dir: Path | None = None) -> RunConfig:
    """Validate a config dict (as parsed from TOML) into a RunConfig."""
    for key in data:
        if key not in _SECTIONS:
            raise ConfigError(f"unknown section [{key}]; allowed sections: {', '.join(_SECTIONS)}")
    if "task" not in data:
        raise ConfigError("the config needs a [task] section with name = \"...\" (e.g. object_counting)")
    if "strategy" not in data:
        raise ConfigError("the config needs a [strategy] section with name = \"...\" (backprop, whole_trace or sampled_momentum)")
    task, task_args = _named("task", _table(data, "task"))
    strategy, strategy_args = _named("strategy", _table(data, "strategy"))
    train_table = dict(_table(data, "train"))
    seed = train_table.pop("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"[train] seed = {seed!r}: must be a whole number >= 0")
    try:
        train = FitSettings(**_typed("train", train_table, _TRAIN_TYPES), seed=seed)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith("[train]") else f"[train] {message}") from None
    budget = _typed("budget", _table(data, "budget"), _BUDGET_TYPES)
    run = _typed("run", _table(data, "run"), _RUN_TYPES)
    base = base_dir or Path.cwd()
    run_dir = str((base / run["dir"]).resolve()) if "dir" in run else str((base / "runs" / f"{task}-{strategy}-seed{seed}").resolve())
    cache = str((base / Path(run["cache"]).expanduser()).resolve()) if "cache" in run else None
    engine = _engine("engine", _table(data, "engine"))
    return RunConfig(
        task=task, task_args=task_args, strategy=strategy, strategy_args=strategy_args,
        engine=engine,
        critic=_engine("critic", _table(data, "critic")) if "critic" in data else None,
        train=train, max_calls=budget.get("max_calls"), max_tokens=budget.get("max_tokens"),
        run_dir=run_dir, cache_dir=cache, source=freeze(data),
        config_dir=str(base_dir.resolve()) if base_dir is not None else None,
        judge=_judge(_table(data, "loss"), engine) if "loss" in data else None,
        tracking=parse_tracking(_table(data, "tracking"), base) if "tracking" in data else None,
    )


_TRACKING_TYPES = {"uri": str, "dir": str, "experiment": str, "run_name": str}


def parse_tracking(table: Mapping, base_dir: Path) -> TrackingConfig:
    """The ``[tracking]`` table (MLflow, funcgrad.training.tracking): ``uri`` (any tracking URI) or ``dir`` (a local
    folder holding mlflow.db and artifacts/, relative to the config file; default ``mlruns``), ``experiment``, ``run_name``.

    >>> parse_tracking({"dir": "store", "experiment": "counting"}, Path("/cfg")).uri
    'sqlite:////cfg/store/mlflow.db'
    """
    fields = _typed("tracking", table, _TRACKING_TYPES)
    if "uri" in fields and "dir" in fields:
        raise ConfigError("[tracking] sets both uri and dir; keep uri (a tracking server or database) or dir (a local folder)")
    if any(fields.get(k) == "" for k in _TRACKING_TYPES):
        raise ConfigError(f"[tracking] {next(k for k in _TRACKING_TYPES if fields.get(k) == '')} is empty; drop it or name a value")
    names = {k: fields[k] for k in ("experiment", "run_name") if k in fields}
    if "uri" in fields:
        return uri_store(fields["uri"], **names)
    return local_store(base_dir / Path(fields.get("dir", "mlruns")).expanduser(), **names)


def read_toml(path: str | Path) -> dict:
    """The parsed TOML file at ``path``; ConfigError if it is missing or not valid TOML."""
    path = Path(path)
    bom = 0
    try:
        data = path.read_bytes()
        bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # e.g. saved by Notepad: accepted
        return tomllib.loads(data[bom:].decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a directory; pass the path of a .toml file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (bad byte at offset {exc.start + bom}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML config file; relative paths in it are relative to the file."""
    return parse_config(read_toml(path), base_dir=Path(path).resolve().parent)
