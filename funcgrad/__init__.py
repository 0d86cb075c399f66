"""funcgrad: auto-differentiate LLM pipelines with text.

Pipelines are plain functions over an immutable :class:`PromptState`; :func:`run`
records every node call into an immutable :class:`Trace`; a credit-assignment
:class:`Strategy` turns traces and losses into new prompt text, applied only through
:func:`apply_updates`. :func:`fit` is the training loop.

The package is layered (docs/design.md): ``funcgrad.core`` (pure values),
``funcgrad.engines`` (every effect), ``funcgrad.training`` (the loop and the run
directory), ``funcgrad.cli`` (configs and the command line); ``funcgrad.strategies``
holds the built-in credit-assignment strategies, written against this facade only.
"""

from funcgrad.core.calls import Engine, Message, Request, Response, Usage
from funcgrad.core.errors import (
    BudgetExceeded,
    CacheMiss,
    CheckpointError,
    ConfigError,
    EngineError,
    FuncgradError,
    PipelineError,
    SerializationError,
    StateError,
    TraceError,
)
from funcgrad.core.nodes import LLM, Fn, Var, as_text, fn, retriever, skip_connection
from funcgrad.core.printing import format_record, format_state, format_trace
from funcgrad.core.run import Example, Loss, Result, exact_match, mean_score, run, run_batch, run_example, with_loss
from funcgrad.core.serialize import dumps, from_data, loads, to_data
from funcgrad.core.state import PARAM_KINDS, Param, PromptState, apply_updates
from funcgrad.core.task import Task
from funcgrad.core.strategy import Attempt, Evaluate, Note, StepContext, Strategy, Update
from funcgrad.core.trace import (
    Record,
    Trace,
    ancestors,
    check_trace,
    consumers,
    descendants,
    params_read,
    readers,
    reverse_topological,
)
from funcgrad.core.transforms import add_skip, freeze_params, prune, rename_param, split_param, subgraph, unfreeze_params
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.training.fit import FitSettings, FitState, fit

__all__ = [
    "LLM", "PARAM_KINDS", "Attempt", "BudgetExceeded", "CacheMiss", "CheckpointError", "ConfigError",
    "Engine", "EngineError", "Evaluate", "Example", "FitSettings", "FitState", "Fn", "FuncgradError", "Loss", "Message", "Note",
    "Param", "PipelineError", "PromptState", "Record", "Request", "Response", "Result",
    "ScriptedEngine", "SerializationError", "StateError", "StepContext", "Strategy", "Task", "Trace", "TraceError", "Update",
    "Usage", "Var", "add_skip", "ancestors", "apply_updates", "as_text", "check_trace", "consumers",
    "descendants", "dumps", "exact_match", "fit", "fn", "format_record", "format_state", "format_trace",
    "freeze_params", "from_data", "loads", "mean_score", "params_read", "prune", "readers",
    "rename_param", "retriever", "reverse_topological", "run", "run_batch", "run_example",
    "skip_connection", "split_param", "subgraph", "to_data", "unfreeze_params", "with_loss",
]
