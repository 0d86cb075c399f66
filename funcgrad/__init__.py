"""funcgrad: auto-differentiate LLM pipelines with text.

Pipelines are plain functions over an immutable :class:`PromptState`; :func:`run`
records every node call into an immutable :class:`Trace`; a credit-assignment
:class:`Strategy` turns traces and losses into new prompt text, applied only through
:func:`apply_updates`.
"""

from funcgrad.engine import Engine, Message, Request, Response, Usage
from funcgrad.errors import (
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
from funcgrad.nodes import LLM, Fn, Var, as_text, fn, retriever, skip_connection
from funcgrad.printing import format_record, format_state, format_trace
from funcgrad.run import Example, Loss, Result, exact_match, mean_score, run, run_batch, run_example, with_loss
from funcgrad.serialize import dumps, from_data, loads, to_data
from funcgrad.state import PARAM_KINDS, Param, PromptState, apply_updates
from funcgrad.task import Task
from funcgrad.strategy import Attempt, Evaluate, Note, StepContext, Strategy, Update
from funcgrad.trace import (
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
from funcgrad.transforms import add_skip, freeze_params, prune, rename_param, split_param, subgraph, unfreeze_params

__all__ = [
    "LLM", "PARAM_KINDS", "Attempt", "BudgetExceeded", "CacheMiss", "CheckpointError", "ConfigError",
    "Engine", "EngineError", "Evaluate", "Example", "Fn", "FuncgradError", "Loss", "Message", "Note",
    "Param", "PipelineError", "PromptState", "Record", "Request", "Response", "Result",
    "SerializationError", "StateError", "StepContext", "Strategy", "Task", "Trace", "TraceError", "Update",
    "Usage", "Var", "add_skip", "ancestors", "apply_updates", "as_text", "check_trace", "consumers",
    "descendants", "dumps", "exact_match", "fn", "format_record", "format_state", "format_trace",
    "freeze_params", "from_data", "loads", "mean_score", "params_read", "prune", "readers",
    "rename_param", "retriever", "reverse_topological", "run", "run_batch", "run_example",
    "skip_connection", "split_param", "subgraph", "to_data", "unfreeze_params", "with_loss",
]
