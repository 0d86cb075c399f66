"""Where the cells of a comparison grid run: one after another, or in parallel on Ray.

A cell is a JSON document (bytes) in and a JSON document out, so the executor only
moves bytes: nothing is pickled but the reference to the cell function. Each cell
opens its own engine where it runs (a local model started on that node, or the
OpenAI-compatible server of its config), so a Ray worker never shares a model
server with the driver. The ``[executor]`` table of a compare config::

    [executor]
    kind = "ray"            # "serial" (default) or "ray"
    address = "auto"        # an existing cluster ("auto", "HOST:PORT", "ray://HOST:10001"); omit to start a local one
    cpus_per_cell = 2       # Ray CPUs each cell reserves (e.g. a local model's threads): bounds cells per node
    engine_urls = ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]   # optional: cell i uses engine_urls[i % 2]

>>> parse_executor({}).kind, parse_executor({"kind": "ray", "cpus_per_cell": 2}).cpus_per_cell
('serial', 2)
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import attrs

from funcgrad.core.errors import ConfigError

KINDS = ("serial", "ray")
_KEYS = {"kind": str, "address": str, "cpus_per_cell": (int, float), "engine_urls": list}
_WANT = {"kind": "string", "address": "string", "cpus_per_cell": "number", "engine_urls": "list of URLs"}

CellFn = Callable[[bytes], bytes]


@attrs.frozen
class ExecutorConfig:
    """How a grid's cells run: ``kind`` serial or ray; ``address`` of an existing Ray
    cluster (None: start a local instance for the grid and stop it afterwards);
    ``cpus_per_cell``: Ray CPUs reserved per cell; ``engine_urls``: OpenAI-compatible
    servers the cells are spread over (cell i uses ``engine_urls[i % n]`` as its
    ``[engine] base_url``; empty: every cell uses ``[engine]`` as configured)."""

    kind: str = "serial"
    address: str | None = None
    cpus_per_cell: float = 1
    engine_urls: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def engine_url(self, index: int) -> str | None:
        """The base URL of cell ``index``'s engine (None: the config's own)."""
        return self.engine_urls[index % len(self.engine_urls)] if self.engine_urls else None


def parse_executor(table: Mapping) -> ExecutorConfig:
    """The ``[executor]`` table as an ExecutorConfig; one ConfigError naming a bad key or value."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"[executor] must be a table, got {type(table).__name__}")
    for key, value in table.items():
        want = _KEYS.get(key)
        if want is None:
            raise ConfigError(f"[executor] has unknown key {key!r}; allowed keys: {', '.join(sorted(_KEYS))}")
        if isinstance(value, bool) or not isinstance(value, want):
            raise ConfigError(f"[executor] {key} = {value!r}: must be a {_WANT[key]}")
    kind = table.get("kind", "serial")
    if kind not in KINDS:
        raise ConfigError(f"[executor] kind = {kind!r} is not a known executor; use one of: {', '.join(KINDS)}")
    if kind == "serial" and "address" in table:
        raise ConfigError("[executor] address is set but kind is \"serial\"; set kind = \"ray\" or drop address")
    cpus = table.get("cpus_per_cell", 1)
    if cpus <= 0:
        raise ConfigError(f"[executor] cpus_per_cell = {cpus!r}: must be > 0")
    urls = table.get("engine_urls", [])
    if not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
        raise ConfigError(f"[executor] engine_urls = {urls!r}: must be a list of http(s) URLs of OpenAI-compatible servers")
    return ExecutorConfig(kind, table.get("address"), cpus, urls)


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "[executor] kind = \"ray\" needs Ray: pip install 'funcgrad[ray]' (or set kind = \"serial\")"
        ) from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConfigError unless a TCP connection to ``address`` (HOST:PORT or ray://HOST:PORT) opens."""
    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ConfigError(f"[executor] address = {address!r}: expected \"auto\", HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"[executor] address = {address!r}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start one (ray start --head) or fix the address"
        ) from None


def check_executor(cfg: ExecutorConfig) -> None:
    """Fail early, before any model call: Ray importable and its cluster address reachable."""
    if cfg.kind == "ray":
        _ray()
        if cfg.address is not None:
            _check_reachable(cfg.address)


def _serial(fn: CellFn, cells: Sequence[bytes]) -> Iterator[tuple[int, bytes]]:
    for i, cell in enumerate(cells):
        yield i, fn(cell)


def _on_ray(fn: CellFn, cells: Sequence[bytes], cfg: ExecutorConfig) -> Iterator[tuple[int, bytes]]:
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=cfg.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"[executor] address = {cfg.address!r}: cannot connect to Ray ({exc})") from None
    try:
        remote = ray.remote(num_cpus=cfg.cpus_per_cell, max_retries=0)(fn)
        pending = {remote.remote(cell): i for i, cell in enumerate(cells)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def run_cells(fn: CellFn, cells: Sequence[bytes], cfg: ExecutorConfig, *, on_done: Callable[[int], None] | None = None) -> list[bytes]:
    """``[fn(cell) for cell in cells]``, run as ``cfg`` says; results in the order of ``cells``.

    ``on_done(i)`` is called as cell ``i`` finishes (in completion order). ``fn`` should
    report its failures in the bytes it returns: an exception inside a Ray worker
    comes back wrapped with the worker's traceback.

    >>> run_cells(lambda b: b.upper(), [b"a", b"b"], ExecutorConfig())
    [b'A', b'B']
    """
    out: list[bytes | None] = [None] * len(cells)
    results = _serial(fn, cells) if cfg.kind == "serial" else _on_ray(fn, cells, cfg)
    for i, value in results:
        out[i] = value
        if on_done is not None:
            on_done(i)
    return out  # type: ignore[return-value]


def describe(cfg: ExecutorConfig) -> str:
    """A short label for progress lines, e.g. ``ray (local instance)``."""
    if cfg.kind == "serial":
        return "serial"
    return f"ray ({cfg.address or 'local instance'}, {cfg.cpus_per_cell:g} CPU per cell)"

