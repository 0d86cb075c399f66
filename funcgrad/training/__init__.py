"""The training loop and the run directory.

:mod:`~funcgrad.training.fit` optimizes a task's prompts with any strategy (minibatches,
two-stage validation, checkpoints); :mod:`~funcgrad.training.rundir` keeps a run's files;
:mod:`~funcgrad.training.report` writes its report; :mod:`~funcgrad.training.tracking` logs
it to MLflow. Imports the core and the engines.
"""
