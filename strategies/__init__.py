"""Built-in credit-assignment strategies: each factory returns a :class:`funcgrad.Strategy`.

They are drop-in replacements for one another; swapping is one line::

    strategy = backprop()                         # per-node textual gradients
    strategy = whole_trace()                      # one OptoPrime-style call per step
    strategy = sampled_momentum(backprop(), k=5)  # TSGD-M around any strategy
    strategy = bootstrap_demos(k=3)               # the model's own correct traces as demos
    strategy = gepa(pool_size=8)                  # reflective evolution, Pareto parent selection
    strategy = search(proposals=2)                # instruction x format x demos, successive halving
    strategy = chain_steps((whole_trace(), 2), bootstrap_demos())  # phases, one trainer and budget

Each ``update`` is an effect program (sans-I/O): it yields the critic/optimizer calls
and validation runs it needs and never touches an engine. They use only funcgrad's
core (``funcgrad.core``), exactly like a user's own strategy would (docs/writing-a-strategy.md).
Shared parts, by job: :mod:`~funcgrad.strategies.text` (bounded prompt text),
:mod:`~funcgrad.strategies.replies` (reading replies), :mod:`~funcgrad.strategies.guards`
(the guards), :mod:`~funcgrad.strategies.context` (history and rejected proposals),
:mod:`~funcgrad.strategies.knobs` (knob validators), :mod:`~funcgrad.strategies.optimizer`
(the optimizer request), :mod:`~funcgrad.strategies.sampling` (n candidates, the best on
the minibatch); prompt texts in :mod:`~funcgrad.strategies.prompts`.
"""

from funcgrad.strategies.backprop import BackpropKnobs, backprop, backward
from funcgrad.strategies.combine import alternate, chain_steps, demos_then
from funcgrad.strategies.demos import DemosKnobs, bootstrap_demos, render_demos
from funcgrad.strategies.gepa import GepaKnobs, gepa, pareto_front
from funcgrad.strategies.momentum import SampledMomentumKnobs, gumbel_top_k, sampled_momentum
from funcgrad.core.strategy_state import rejection_counts
from funcgrad.strategies.guards import GUARDS, Evidence, Guard, check_value
from funcgrad.strategies.replies import extract_fenced
from funcgrad.strategies.search import SearchKnobs, search
from funcgrad.strategies.text import fence
from funcgrad.strategies.whole_trace import WholeTraceKnobs, code_line, whole_trace

__all__ = [
    "DemosKnobs", "GepaKnobs", "alternate", "bootstrap_demos", "chain_steps", "demos_then", "gepa", "pareto_front",
    "render_demos",
    "GUARDS", "BackpropKnobs", "Evidence", "Guard", "SampledMomentumKnobs", "WholeTraceKnobs", "backprop", "backward", "check_value",
    "code_line", "extract_fenced", "fence", "gumbel_top_k", "rejection_counts", "sampled_momentum", "whole_trace",
    "SearchKnobs", "search",
]
