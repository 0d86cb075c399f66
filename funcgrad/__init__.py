"""funcgrad: auto-differentiate LLM pipelines with text.

Pipelines are plain functions over an immutable :class:`PromptState`; :func:`run`
records every node call into an immutable :class:`Trace`; a credit-assignment
:class:`Strategy` turns traces and losses into new prompt text, applied only through
:func:`apply_updates`. :func:`fit` is the training loop.

The package is layered (docs/design.md): ``funcgrad.core`` (pure values, and the
public core API: everything below except the scripted engine and the training loop),
``funcgrad.engines`` (every effect), ``funcgrad.training`` (the loop and the run
directory), ``funcgrad.cli`` (configs and the command line); ``funcgrad.strategies``
holds the built-in credit-assignment strategies, written against ``funcgrad.core``
only. This facade re-exports ``funcgrad.core`` for users.
"""

from funcgrad import core
from funcgrad.core import *  # noqa: F403  (the public core API: core.__all__)
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.training.fit import FitSettings, FitState, fit

__all__ = [*core.__all__, "FitSettings", "FitState", "ScriptedEngine", "fit"]
