"""Effects: what a sans-I/O strategy asks for instead of doing it.

A strategy's ``update`` is a *program*: a generator that yields batches (tuples) of
effect values and receives, for each batch, a tuple of answers in the same order.
Its return value (``StopIteration.value``) is the result. Everything in a batch is
independent, so a driver may perform it concurrently:

============  =====================================  ============================
effect        asks the driver to ...                 answer
============  =====================================  ============================
:class:`Call`      send ``request`` to the critic engine  :class:`~funcgrad.core.backward.CallLog`: the call's id
                                                         (given by the driver), request and Response
:class:`Validate`  score ``state`` on a validation        tuple of :class:`~funcgrad.core.run.Result`
                   minibatch drawn with ``seed``
:class:`Rerun`     run the current training minibatch     tuple of :class:`~funcgrad.core.run.Result`
                   (or named training examples, maybe
                   sampled) under ``state``
============  =====================================  ============================

A program never touches an engine, so it is a deterministic function of its inputs
and the answers it receives: tests feed answers directly with :func:`run_program`,
and the training loop's driver (``funcgrad.training.driver``) performs each batch
through the metered, cached engine and records every request and answer. Both run
the program with :func:`trampoline`, which numbers the calls (call ``i`` is the
``i``-th Call asked), so the ids a program reads off its CallLogs are the ids of
the step trace.

>>> from funcgrad.core.calls import Request, Response
>>> def ask_twice():
...     a, b = yield (Call(Request(messages=(("user", "x"),))), Call(Request(messages=(("user", "y"),))))
...     return a.response.text + b.response.text, (a.id, b.id)
>>> run_program(ask_twice(), lambda effect: Response(effect.request.messages[0].content.upper()))
('XY', (0, 1))
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, TypeVar

import attrs

from funcgrad.core.backward import CallLog
from funcgrad.core.calls import Request, Response
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


@attrs.frozen
class Ran:
    """What :func:`trampoline` returns: the program's ``value`` and its ``rounds``.

    ``rounds[i]`` holds the ``(effect, answer)`` pairs of the ``i``-th batch, in the
    order yielded; the answer to a Call is its :class:`~funcgrad.core.backward.CallLog`.
    """

    value: Any
    rounds: tuple[tuple[tuple[Effect, Any], ...], ...] = ()

    @property
    def calls(self) -> tuple[CallLog, ...]:
        """Every call performed, in id order."""
        return tuple(answer for pairs in self.rounds for effect, answer in pairs if isinstance(effect, Call))


def _resume(program: Program[Any], answers: tuple[Any, ...] | None) -> tuple[bool, Any]:
    """Start (``answers`` None) or resume ``program``: ``(True, its result)`` or ``(False, its next batch)``."""
    try:
        return False, next(program) if answers is None else program.send(answers)
    except StopIteration as stop:
        return True, stop.value


def trampoline(
    program: Program[R], perform: Callable[[tuple[Effect, ...]], Sequence[Any]], *, strategy: str = "program"
) -> Ran:
    """Run ``program`` to its end: ``perform(batch)`` answers each batch, in order.

    The one loop that runs an effect program (:func:`run_program` and the training
    driver both use it). It checks every batch (:func:`check_batch`) and numbers the
    calls: call ``i`` is the ``i``-th Call the program asked, counting batches in
    order and effects in batch order. ``perform`` answers a Call with a
    :class:`~funcgrad.core.calls.Response`; the program receives the
    :class:`~funcgrad.core.backward.CallLog` holding that id, the request and the
    response, so a strategy names the calls behind its gradients by ``log.id``,
    never by counting.

    >>> from funcgrad.core.calls import Response
    >>> def program():
    ...     a, b = yield (Call(Request(messages=(("user", "x"),))), Call(Request(messages=(("user", "y"),))))
    ...     (c,) = yield (Call(Request(messages=(("user", "z"),))),)
    ...     return [a.id, b.id, c.id], c.response.text
    >>> ran = trampoline(program(), lambda batch: [Response(e.request.messages[0].content) for e in batch])
    >>> ran.value, len(ran.rounds), [c.request.messages[0].content for c in ran.calls]
    (([0, 1, 2], 'z'), 2, ['x', 'y', 'z'])
    """
    rounds: list[tuple[tuple[Effect, Any], ...]] = []
    n_calls = 0
    done, out = _resume(program, None)
    while not done:
        batch = check_batch(out, strategy)
        performed = tuple(perform(batch))
        if len(performed) != len(batch):
            raise StrategyError(f"{len(batch)} effects of strategy {strategy!r} got {len(performed)} answers")
        answers = []
        for effect, answer in zip(batch, performed):
            if isinstance(effect, Call):
                if not isinstance(answer, Response):
                    raise StrategyError(f"a Call of strategy {strategy!r} was answered with a {type(answer).__name__}, not a Response")
                answer = CallLog(n_calls, effect.request, answer)
                n_calls += 1
            answers.append(answer)
        rounds.append(tuple(zip(batch, answers)))
        done, out = _resume(program, tuple(answers))
    return Ran(out, tuple(rounds))


def run_program(program: Program[R], respond: Callable[[Effect], Any], *, strategy: str = "program") -> R:
    """Run ``program`` to its end, answering every effect with ``respond(effect)``, one at a time.

    The pure way to run a strategy: tests pass a function (or a dict lookup) that
    returns the answers (a Response for a Call: the program receives it as a
    :class:`~funcgrad.core.backward.CallLog`, see :func:`trampoline`). See the
    module docstring for an example.
    """
    return trampoline(program, lambda batch: [respond(e) for e in batch], strategy=strategy).value


def gather(programs: Iterable[Program[Any]]) -> Program[tuple[Any, ...]]:
    """One program running ``programs`` in lockstep: each round's pending batches form one batch.

    Returns the tuple of their results in order. Independent sub-programs (e.g. the
    backward pass of each example of a minibatch) thus put their calls in flight
    together.

    >>> def one(n):
    ...     (r,) = yield (Call(Request(messages=(("user", str(n)),))),)
    ...     return int(r.response.text) * 10, r.id
    >>> from funcgrad.core.calls import Response
    >>> seen = []
    >>> def respond(e):
    ...     seen.append(e.request.messages[0].content)
    ...     return Response(e.request.messages[0].content)
    >>> run_program(gather([one(1), one(2)]), respond), seen
    (((10, 0), (20, 1)), ['1', '2'])
    """
    programs = list(programs)
    results: list[Any] = [None] * len(programs)
    pending: dict[int, tuple[Effect, ...]] = {}
    for i, prog in enumerate(programs):
        done, out = _resume(prog, None)
        if done:
            results[i] = out
        else:
            pending[i] = out
    while pending:
        order = list(pending)
        batch = tuple(e for i in order for e in pending[i])
        answers = yield batch
        if not isinstance(answers, tuple) or len(answers) != len(batch):
            raise StrategyError(f"gather expected {len(batch)} answers, got {answers!r:.120}")
        pos, nxt = 0, {}
        for i in order:
            n = len(pending[i])
            done, out = _resume(programs[i], answers[pos:pos + n])
            if done:
                results[i] = out
            else:
                nxt[i] = out
            pos += n
        pending = nxt
    return tuple(results)


def numbered(program: Program[R]) -> Program[tuple[R, tuple[CallLog, ...]]]:
    """``program``, returning ``(its result, the CallLogs of its calls in the order asked)``.

    The ids are the driver's (the step trace's), however many calls were asked before.

    >>> from funcgrad.core.calls import Response
    >>> def two_asks():
    ...     yield from ask(Request(messages=(("user", "before"),)))
    ...     return (yield from numbered(ask(Request(messages=(("user", "x"),)))))
    >>> log, asked = run_program(two_asks(), lambda e: Response("ok"))
    >>> log.response.text, [(c.id, c.request.messages[0].content) for c in asked]
    ('ok', [(1, 'x')])
    """
    asked: list[CallLog] = []
    done, out = _resume(program, None)
    while not done:
        answers = yield out
        asked.extend(a for a in answers if isinstance(a, CallLog))
        done, out = _resume(program, answers)
    return out, tuple(asked)


def ask(request: Request) -> Program[CallLog]:
    """The program of a single call: ``log = yield from ask(request)``; ``log.response`` is the answer, ``log.id`` the call's id.

    >>> from funcgrad.core.calls import Response
    >>> log = run_program(ask(Request(messages=(("user", "x"),))), lambda e: Response("ok"))
    >>> log.id, log.response.text
    (0, 'ok')
    """
    (log,) = yield (Call(request),)
    return log
