"""Effects: what a sans-I/O strategy asks for instead of doing it.

A strategy's ``update`` is a *program*: a generator that yields batches (tuples) of
effect values and receives, for each batch, a tuple of answers in the same order.
Its return value (``StopIteration.value``) is the result. Everything in a batch is
independent, so a driver may perform it concurrently:

============  =====================================  ============================
effect        asks the driver to ...                 answer
============  =====================================  ============================
:class:`Call`      send ``request`` to the critic engine  :class:`~funcgrad.core.calls.Response`
:class:`Validate`  score ``state`` on a validation        tuple of :class:`~funcgrad.core.run.Result`
                   minibatch drawn with ``seed``
:class:`Rerun`     run the current training minibatch     tuple of :class:`~funcgrad.core.run.Result`
                   (or named training examples, maybe
                   sampled) under ``state``
============  =====================================  ============================

A program never touches an engine, so it is a deterministic function of its inputs
and the answers it receives: tests feed answers directly with :func:`run_program`,
and the training loop's driver (``funcgrad.training.driver``) performs each batch
through the metered, cached engine and records every request and answer.

>>> from funcgrad.core.calls import Request, Response
>>> def ask_twice():
...     a, b = yield (Call(Request(messages=(("user", "x"),))), Call(Request(messages=(("user", "y"),))))
...     return a.text + b.text
>>> run_program(ask_twice(), lambda effect: Response(effect.request.messages[0].content.upper()))
'XY'
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

import attrs

from funcgrad.core.calls import Request
from funcgrad.core.errors import StrategyError
from funcgrad.core.state import PromptState

R = TypeVar("R")

Program = Generator[tuple[Any, ...], tuple[Any, ...], R]


@attrs.frozen
class Call:
    """Ask the critic/optimizer engine ``request``; the answer is its ``Response``.

    >>> Call(Request(messages=(("user", "hi"),), role="backward")).request.role
    'backward'
    """

    request: Request = attrs.field(validator=attrs.validators.instance_of(Request))


def _size(instance, attribute, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise StrategyError(f"{type(instance).__name__}.{attribute.name}={value!r} must be a positive int or None")


def _non_negative(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise StrategyError(f"{type(instance).__name__}.{attribute.name}={value!r} must be a number >= 0")


@attrs.frozen
class Validate:
    """Score ``state`` on a validation minibatch drawn with ``seed``; the answer is its Results.

    The same seed draws the same examples, so candidates scored with one seed are
    compared on the same minibatch (paired). ``size`` is the minibatch's size (None:
    the loop's ``val_batch``); with one seed, a smaller size draws a prefix of a larger
    one, so a search can score survivors on growing, nested minibatches.

    >>> Validate(PromptState.of(), seed=3, size=8).size
    8
    """

    state: PromptState = attrs.field(validator=attrs.validators.instance_of(PromptState))
    seed: int = attrs.field(default=0, validator=attrs.validators.instance_of(int))
    size: int | None = attrs.field(default=None, validator=_size)


@attrs.frozen
class Rerun:
    """Run training examples under ``state``; the answer is their Results, in the order asked.

    ``examples``: training example ids (from ``StepContext.train_ids``); empty means
    the step's minibatch. ``sample`` > 0 asks every model call of these runs for its
    sample number ``sample`` at ``temperature`` (a fresh draw per sample index, with
    its own seed, so the cache does not return the greedy answer again); ``sample``
    0 runs the nodes as they are.

    >>> Rerun(PromptState.of(), examples=("e1",), sample=2, temperature=1.0).sample
    2
    """

    state: PromptState = attrs.field(validator=attrs.validators.instance_of(PromptState))
    examples: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    sample: int = attrs.field(default=0, validator=_non_negative)
    temperature: float = attrs.field(default=0.0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.sample and not self.temperature:
            raise StrategyError(f"Rerun(sample={self.sample}) needs a temperature > 0: a greedy call gives the same "
                                "answer for every sample")


EFFECTS = (Call, Validate, Rerun)
Effect = Call | Validate | Rerun


def check_batch(batch: Any, strategy: str) -> tuple[Effect, ...]:
    """``batch`` if it is a non-empty tuple of effects, else a StrategyError naming ``strategy``.

    >>> check_batch("ask", "mine")
    Traceback (most recent call last):
    ...
    funcgrad.core.errors.StrategyError: strategy 'mine' yielded 'ask'; a program must yield a non-empty tuple of Call, Validate or Rerun effects
    """
    ok = isinstance(batch, tuple) and batch and all(isinstance(e, EFFECTS) for e in batch)
    if not ok:
        shown = repr(batch) if len(repr(batch)) <= 120 else repr(batch)[:117] + "..."
        raise StrategyError(
            f"strategy {strategy!r} yielded {shown}; a program must yield a non-empty tuple of "
            "Call, Validate or Rerun effects"
        )
    return batch


def run_program(program: Program[R], respond: Callable[[Effect], Any], *, strategy: str = "program") -> R:
    """Run ``program`` to its end, answering every effect with ``respond(effect)``, one at a time.

    The pure way to run a strategy: tests pass a function (or a dict lookup) that
    returns the answers. See the module docstring for an example.
    """
    try:
        batch = next(program)
        while True:
            answers = tuple(respond(e) for e in check_batch(batch, strategy))
            batch = program.send(answers)
    except StopIteration as stop:
        return stop.value


def gather(programs: Iterable[Program[Any]]) -> Program[tuple[Any, ...]]:
    """One program running ``programs`` in lockstep: each round's pending batches form one batch.

    Returns the tuple of their results in order. Independent sub-programs (e.g. the
    backward pass of each example of a minibatch) thus put their calls in flight
    together.

    >>> def one(n):
    ...     (r,) = yield (Call(Request(messages=(("user", str(n)),))),)
    ...     return int(r.text) * 10
    >>> from funcgrad.core.calls import Response
    >>> seen = []
    >>> def respond(e):
    ...     seen.append(e.request.messages[0].content)
    ...     return Response(e.request.messages[0].content)
    >>> run_program(gather([one(1), one(2)]), respond), seen
    ((10, 20), ['1', '2'])
    """
    programs = list(programs)
    results: list[Any] = [None] * len(programs)
    pending: dict[int, tuple[Effect, ...]] = {}
    for i, prog in enumerate(programs):
        try:
            pending[i] = next(prog)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        order = list(pending)
        batch = tuple(e for i in order for e in pending[i])
        answers = yield batch
        if not isinstance(answers, tuple) or len(answers) != len(batch):
            raise StrategyError(f"gather expected {len(batch)} answers, got {answers!r:.120}")
        pos, nxt = 0, {}
        for i in order:
            n = len(pending[i])
            try:
                nxt[i] = programs[i].send(answers[pos:pos + n])
            except StopIteration as stop:
                results[i] = stop.value
            pos += n
        pending = nxt
    return tuple(results)


def numbered(program: Program[R]) -> Program[tuple[R, tuple[Request, ...]]]:
    """``program``, returning ``(its result, the requests of its Call effects in the order asked)``.

    A strategy uses it to say which call produced which gradient: call ``i`` of the
    list is the ``i``-th call of the update (when nothing was asked before it), the
    number the driver gives it in the step trace.

    >>> from funcgrad.core.calls import Response
    >>> value, asked = run_program(numbered(ask(Request(messages=(("user", "x"),)))), lambda e: Response("ok"))
    >>> value.text, [r.messages[0].content for r in asked]
    ('ok', ['x'])
    """
    asked: list[Request] = []
    try:
        batch = next(program)
        while True:
            asked.extend(e.request for e in batch if isinstance(e, Call))
            answers = yield batch
            batch = program.send(answers)
    except StopIteration as stop:
        return stop.value, tuple(asked)


def ask(request: Request) -> Program[Any]:
    """The program of a single call: ``response = yield from ask(request)``.

    >>> from funcgrad.core.calls import Response
    >>> run_program(ask(Request(messages=(("user", "x"),))), lambda e: Response("ok")).text
    'ok'
    """
    (response,) = yield (Call(request),)
    return response
