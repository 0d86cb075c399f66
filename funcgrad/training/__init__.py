"""The training loop and the run directory.

:mod:`~funcgrad.training.fit` optimizes a task's prompts with any strategy (minibatches,
two-stage validation, checkpoints), with its acceptance gate in
:mod:`~funcgrad.training.gate`, its records (the checkpointed :class:`FitState`) in
:mod:`~funcgrad.training.records`, its knobs in :mod:`~funcgrad.training.settings` and
its progress events in :mod:`~funcgrad.training.events`;
:mod:`~funcgrad.training.driver` performs a strategy's effects;
:mod:`~funcgrad.training.rundir` keeps a run's files; :mod:`~funcgrad.training.report`
writes its report. Imports the core and the engines.
"""
