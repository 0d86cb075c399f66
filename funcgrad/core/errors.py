"""The exceptions funcgrad raises.

Every funcgrad error derives from :class:`FuncgradError`, and every message says
what was wrong and how to fix it, e.g. ``catch FuncgradError`` around a whole run.
"""


class FuncgradError(Exception):
    """Base class of all funcgrad errors."""


class StateError(FuncgradError):
    """A prompt state or a parameter update is invalid (unknown name, frozen param, bad type)."""


class TraceError(FuncgradError):
    """A trace is malformed, or a node was used outside :func:`funcgrad.core.run`."""


class PipelineError(FuncgradError):
    """A pipeline raised while running; ``.trace`` holds the records made so far."""

    def __init__(self, message: str, trace=None):
        super().__init__(message)
        self.trace = trace


class EngineError(FuncgradError):
    """A model call failed for good (after retries), or its answer was unusable."""


class EngineUnavailable(EngineError):
    """The model server cannot answer any call (key rejected, model or URL unknown, server gone
    after retries). Unlike other engine errors it stops a whole run at once, not one example."""


class BudgetExceeded(EngineError):
    """A call or token budget ran out; everything saved so far stays intact."""


class CacheMiss(EngineError):
    """Replay mode found no cached answer for a request."""


class SerializationError(FuncgradError):
    """A JSON document is not a valid funcgrad value (wrong format, version or field)."""


class ConfigError(FuncgradError):
    """A configuration file or argument has a bad key or value."""


class CheckpointError(FuncgradError):
    """A checkpoint is missing, corrupt, or belongs to another run."""


class RunFailed(FuncgradError):
    """Examples failed (a model call, the pipeline or the loss raised) instead of being answered.

    ``.results`` holds the results finished so far, failures included, so their traces
    (with the cause recorded) can be written out; nothing of a failure was scored.
    """

    def __init__(self, message: str, results=()):
        super().__init__(message)
        self.results = tuple(results)


class StrategyError(FuncgradError):
    """A strategy yielded something that is not an effect, or returned a malformed update."""


class StorageError(FuncgradError):
    """A file could not be written (disk full, no permission, a directory in its place).

    The message names the path and the errno; the file that was there before is left intact.
    """
