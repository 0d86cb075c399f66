"""The knobs of the training loop (:class:`FitSettings`) and the fingerprint a checkpoint keeps of them.

>>> FitSettings(steps=4).steps, FitSettings().accept
(4, 'mean')
>>> len(settings_hash(FitSettings()))
16
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import orjson

from funcgrad.core.errors import ConfigError

ACCEPT_RULES = ("mean", "sign", "margin")


def _positive(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{attribute.name}={value!r} must be a whole number >= 1")


def _failure_rate(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"max_failure_rate={value!r} must be a number in [0, 1] (0: the first failed example stops the run)")


def _accept_rule(value) -> None:
    if value not in ACCEPT_RULES:
        raise ConfigError(f"accept={value!r} must be one of {', '.join(ACCEPT_RULES)}")


def _alpha(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"alpha={value!r} must be a number strictly between 0 and 1")


@attrs.frozen
class FitSettings:
    """Knobs of :func:`~funcgrad.training.fit.fit`.

    ``steps``: optimization steps at most; ``epochs``: passes over the training set
    at most (the run stops at whichever comes first); ``batch_size``: training
    minibatch; ``proposals_per_step``: attempts per step before giving up;
    ``val_batch``: size of the validation minibatches strategies ask for with a
    ``Validate`` effect; ``patience``: stop after this many steps without an accepted
    proposal (None = never); ``concurrency``: examples (and effects of one batch) in
    flight (None = the engine's); ``seed``: the run's seed, from which every random
    stream derives (minibatch order, validation minibatches, strategy sampling and
    the sample index of non-greedy calls). ``accept``: the validation rule of stage 2
    (:data:`ACCEPT_RULES`): ``mean`` — the mean must beat the current one; ``sign``
    — paired per-example wins and losses against the current state, accepted when
    wins > losses and a one-sided exact sign test gives p <= ``alpha``; ``margin`` —
    wins - losses >= ``margin`` (docs/cli.md, the trade-off). ``halving``: successive
    halving — score a proposal on this many validation examples first (a fixed seeded
    subset) and on the rest only when it beats the current state there (None = off).
    ``max_failure_rate``: the
    share of a batch's examples that may fail (a model call, the pipeline or the loss
    did not work) before the run stops with RunFailed (default 0: the first failure);
    failed examples within it are logged but left out of every score and update.
    """

    steps: int = attrs.field(default=8, validator=_positive)
    epochs: int = attrs.field(default=1, validator=_positive)
    batch_size: int = attrs.field(default=3, validator=_positive)
    proposals_per_step: int = attrs.field(default=2, validator=_positive)
    val_batch: int = attrs.field(default=5, validator=_positive)
    patience: int | None = attrs.field(default=None, validator=_positive)
    concurrency: int | None = attrs.field(default=None, validator=_positive)
    seed: int = 0
    accept: str = attrs.field(default="mean", validator=lambda i, a, v: _accept_rule(v))
    alpha: float = attrs.field(default=0.1, validator=lambda i, a, v: _alpha(v))
    margin: int = attrs.field(default=2, validator=_positive)
    halving: int | None = attrs.field(default=None, validator=_positive)
    max_failure_rate: float = attrs.field(default=0.0, validator=lambda i, a, v: _failure_rate(v))


def settings_hash(settings: FitSettings, extra: Any = None) -> str:
    """A short fingerprint of the settings (and any extra JSON config) a checkpoint belongs to.

    >>> settings_hash(FitSettings(seed=1)) == settings_hash(FitSettings(seed=1)) != settings_hash(FitSettings(seed=2))
    True
    """
    blob = orjson.dumps([attrs.asdict(settings), extra], option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()[:16]
