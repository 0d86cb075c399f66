"""The pure core: immutable values and pure functions, no effects; its public API.

Prompt state (:mod:`~funcgrad.core.state`), nodes and runs (:mod:`~funcgrad.core.nodes`,
:mod:`~funcgrad.core.run`), traces (:mod:`~funcgrad.core.trace`), the values of a model
call and the engine protocol (:mod:`~funcgrad.core.calls`), effect programs
(:mod:`~funcgrad.core.effects`), the strategy interface (:mod:`~funcgrad.core.strategy`) and its typed state values
(:mod:`~funcgrad.core.strategy_state`)
and the backward trace (:mod:`~funcgrad.core.backward`), serialization, graph
transformations and HTML views of the values (:mod:`~funcgrad.core.html`, for notebooks). It imports nothing else of funcgrad (no engine, no training loop), so
a strategy written against ``funcgrad.core`` alone runs anywhere:

>>> from funcgrad.core import Note, Update, run_program
>>> def idle(results, state, s, context):
...     return Update(notes=[Note("", "no_update", "nothing to do")]), s
...     yield
>>> run_program(idle((), None, 0, None), respond=None)[0].notes[0].status
'no_update'

``funcgrad`` (the top-level facade) re-exports all of it, plus the scripted engine and
the training loop.
"""

from funcgrad.core.backward import (
    CallLog, Candidate, EdgeKind, EffectKind, EffectLog, Gradient, GradientSource, StepTrace, Verdict, check_step_trace, format_step_trace,
)
from funcgrad.core.calls import Engine, Message, MessageRole, Request, Response, Role, Usage
from funcgrad.core.effects import Call, Rerun, Validate, ask, gather, numbered, run_program, trampoline
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
from funcgrad.core.printing import format_changes, format_record, format_state, format_trace
from funcgrad.core.run import (
    Example, Failure, Loss, Result, exact_match, mean_score, raise_on_failures, run, run_batch, run_example, with_loss,
)
from funcgrad.core.seeds import derive_seed
from funcgrad.core.serialize import dumps, from_data, loads, to_data
from funcgrad.core.state import PARAM_KINDS, Param, PromptState, apply_updates
from funcgrad.core.strategy import Attempt, Note, NoteStatus, StepContext, Strategy, Update, make_knobs
from funcgrad.core.strategy_state import (
    Demo, DemoPool, History, HistoryEntry, Pick, Pool, PoolEntry, Stats, freeze_state, read_state, rejection_counts,
)
from funcgrad.core.task import Task
from funcgrad.core.trace import (
    Record,
    RecordKind,
    Trace,
    ancestors,
    check_trace,
    consumers,
    control_cone,
    control_reads,
    trailing_reads,
    descendants,
    params_read,
    readers,
    reverse_topological,
)
from funcgrad.core.transforms import add_peer, add_skip, freeze_params, prune, rename_param, split_param, subgraph, unfreeze_params

__all__ = [
    "LLM", "MessageRole", "PARAM_KINDS", "Role", "Attempt", "BudgetExceeded", "CacheMiss", "Call", "CallLog", "Candidate", "CheckpointError",
    "ConfigError", "EdgeKind", "EffectKind", "EffectLog", "Engine", "EngineError", "EngineUnavailable", "Example", "Failure", "Fn",
    "FuncgradError", "Gradient", "GradientSource", "Judge", "JudgeError", "Loss", "Message", "Note", "NoteStatus",
    "Param", "PipelineError", "PromptState", "Record", "RecordKind", "Request", "Rerun", "Response", "Result",
    "RunFailed", "SerializationError", "StateError", "StepContext", "StepTrace", "Strategy", "StrategyError", "Task",
    "Trace", "TraceError", "Update", "Usage", "Validate", "Var", "Verdict", "add_peer", "add_skip", "ancestors", "apply_updates",
    "as_text", "ask", "check_step_trace", "check_trace", "consumers", "control_cone", "control_reads", "derive_seed", "descendants", "dumps",
    "exact_match", "fn", "format_changes", "format_record", "format_state", "format_step_trace", "format_trace", "freeze_params",
    "from_data", "gather", "loads", "make_knobs", "mean_score", "numbered", "params_read", "prune",
    "raise_on_failures", "readers", "rename_param", "retriever", "reverse_topological", "run", "run_batch",
    "run_example", "run_program", "skip_connection", "split_param", "subgraph", "to_data", "trailing_reads", "trampoline",
    "unfreeze_params", "with_loss",
    "Demo", "DemoPool", "History", "HistoryEntry", "Pick", "Pool", "PoolEntry", "Stats", "freeze_state", "read_state",
    "rejection_counts",
]
