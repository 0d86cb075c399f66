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
    EngineUnavailable,
    FuncgradError,
    PipelineError,
    RunFailed,
    SerializationError,
    StateError,
    StrategyError,
    TraceError,
)
from funcgrad.core.judge import Judge, JudgeError
from funcgrad.core.nodes import LLM, Fn, Var, as_text, fn, retriever, skip_connection
from funcgrad.core.printing import format_record, format_state, format_trace
from funcgrad.core.run import (
    Example, Failure, Loss, Result, exact_match, mean_score, raise_on_failures, run, run_batch, run_example, with_loss,
)
from funcgrad.core.seeds import derive_seed
from funcgrad.core.serialize import dumps, from_data, loads, to_data
from funcgrad.core.state import PARAM_KINDS, Param, PromptState, apply_updates
from funcgrad.core.task import Task
from funcgrad.core.backward import CallLog, Candidate, EffectLog, Gradient, StepTrace, Verdict, check_step_trace, format_step_trace
from funcgrad.core.effects import Call, Rerun, Validate, ask, gather, numbered, run_program
from funcgrad.core.strategy import Attempt, Note, StepContext, Strategy, Update, make_knobs
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
from funcgrad.core.transforms import add_peer, add_skip, freeze_params, prune, rename_param, split_param, subgraph, unfreeze_params
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.training.fit import FitSettings, FitState, fit

__all__ = [
    "LLM", "PARAM_KINDS", "Attempt", "BudgetExceeded", "CacheMiss", "CheckpointError", "ConfigError",
    "Call", "CallLog", "Candidate", "EffectLog", "Engine", "EngineError", "EngineUnavailable", "Example", "Failure", "FitSettings", "FitState", "Fn", "FuncgradError", "Judge", "JudgeError", "Loss", "Message", "Note",
    "Param", "PipelineError", "PromptState", "Record", "Request", "Response", "Result", "RunFailed",
    "ScriptedEngine", "Gradient", "Rerun", "SerializationError", "StateError", "StepContext", "StepTrace", "Strategy", "StrategyError", "Validate", "Verdict", "Task", "Trace", "TraceError", "Update",
    "Usage", "Var", "add_peer", "add_skip", "ancestors", "apply_updates", "as_text", "ask", "check_step_trace", "check_trace", "consumers",
    "derive_seed", "descendants", "dumps", "exact_match", "fit", "fn", "format_record", "format_state", "format_trace",
    "format_step_trace", "freeze_params", "from_data", "gather", "loads", "make_knobs", "numbered", "mean_score", "params_read", "prune", "raise_on_failures", "readers",
    "rename_param", "retriever", "reverse_topological", "run", "run_batch", "run_example", "run_program",
    "skip_connection", "split_param", "subgraph", "to_data", "unfreeze_params", "with_loss",
]
