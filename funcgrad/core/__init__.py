"""The pure core: immutable values and pure functions, no effects.

Prompt state (:mod:`~funcgrad.core.state`), nodes and runs (:mod:`~funcgrad.core.nodes`,
:mod:`~funcgrad.core.run`), traces (:mod:`~funcgrad.core.trace`), the values of a model
call and the engine protocol (:mod:`~funcgrad.core.calls`), the strategy interface
(:mod:`~funcgrad.core.strategy`), serialization, graph transformations and HTML views of
the values (:mod:`~funcgrad.core.html`, for notebooks). It imports nothing else of funcgrad.
"""
