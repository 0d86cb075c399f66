"""Paired statistics for comparing optimization arms scored on the same test examples.

Every arm of a comparison grid (a strategy, or no optimization) is scored on the
same test examples under the same seeds, so the comparison is *paired*: the
difference of two arms is taken per (seed, example) before anything is averaged,
which removes the example-to-example difficulty from the noise. :func:`paired`
returns the mean difference with a two-way bootstrap interval (seeds and examples
resampled), the per-example win/tie/loss counts, an exact sign test (the exact
McNemar test when outcomes are 0/1 and there is one seed), and the minimum effect
the test set could detect; :func:`holm` corrects the p-values of several comparisons.

>>> a = [[1, 1, 0, 1, 1, 1, 1, 1, 0, 1]]           # one seed, ten examples
>>> b = [[0, 1, 0, 0, 1, 0, 0, 1, 0, 0]]
>>> c = paired(a, b)
>>> c.diff, (c.wins, c.ties, c.losses), round(c.p, 4)
(0.5, (5, 5, 0), 0.0625)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np
from scipy import stats

from funcgrad.core.errors import FuncgradError

Outcomes = Sequence[Sequence[float | None]]  # [seed][example] scores in [0, 1]; None = missing


@attrs.frozen
class Paired:
    """Arm A against arm B on the same examples and seeds (differences are A - B).

    ``diff``: mean difference over the seeds and examples used; ``low``/``high``: its
    bootstrap interval (``level``, default 95 %); ``wins``/``ties``/``losses``: examples
    whose difference, averaged over seeds, is > 0, = 0, < 0; ``p``: two-sided exact
    sign test over those examples (ties dropped); ``mde``: the smallest true
    difference the test set detects with 80 % power at the 5 % level (see
    :func:`min_detectable_effect`); ``n_examples``/``n_seeds``: what was used after
    dropping missing outcomes.
    """

    diff: float
    low: float
    high: float
    wins: int
    ties: int
    losses: int
    p: float
    mde: float
    n_examples: int
    n_seeds: int
    level: float = 0.95

    def to_data(self) -> dict:
        """A plain JSON dict of the fields."""
        return attrs.asdict(self)


def _matrix(a: Outcomes, b: Outcomes) -> np.ndarray:
    """A - B as a (seeds, examples) float array, without seeds or examples that have a missing outcome."""
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)) or len({len(x) for x in a}) > 1:
        raise FuncgradError(
            f"paired outcomes need the same shape (seeds x examples) in both arms, got {[len(x) for x in a]} and {[len(y) for y in b]}"
        )
    nan = float("nan")
    d = np.array([[nan if x is None or y is None else float(x) - float(y) for x, y in zip(ra, rb)] for ra, rb in zip(a, b)])
    if d.size == 0:
        return d.reshape(len(a), 0)
    d = d[~np.all(np.isnan(d), axis=1)]  # a seed with no outcomes at all (e.g. its test never ran)
    if not len(d):
        return d.reshape(0, 0)
    return d[:, ~np.any(np.isnan(d), axis=0)]


def bootstrap_interval(d: np.ndarray, *, level: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of ``d`` (seeds x examples), resampling seeds and examples.

    ``d`` is split into its mean, seed effects, example effects and residual (a
    two-way decomposition). Each resample draws seeds and examples with replacement,
    independently, and adds the mean of the drawn seed effects, of the drawn example
    effects and of the residual over the drawn grid. The effects are first shrunk to
    their estimated variance components (the residual noise left in a row or column
    mean is taken out) and every part is rescaled for its degrees of freedom, so the
    bootstrap variance estimates ``var(seed)/S + var(example)/E + var(residual)/(S E)``,
    the variance of the mean over new seeds and new examples, instead of counting the
    residual three times as a plain two-way resampling does. With one seed only
    examples are resampled (the plain paired bootstrap), with one example only seeds.

    >>> bootstrap_interval(np.zeros((3, 5)))
    (0.0, 0.0)
    """
    n_seeds, n_examples = d.shape
    rng = np.random.default_rng(seed)
    mean = d.mean()
    if n_seeds == 1 or n_examples == 1:
        values = d.ravel()
        n = len(values)
        counts = rng.multinomial(n, np.full(n, 1 / n), size=resamples)
        means = mean + counts @ ((values - mean) * math.sqrt(n / max(n - 1, 1))) / n
    else:
        row, col = d.mean(axis=1) - mean, d.mean(axis=0) - mean
        resid = d - mean - row[:, None] - col[None, :]
        var_resid = float((resid**2).sum()) / ((n_seeds - 1) * (n_examples - 1))

        def shrunk(effect: np.ndarray, noise: float) -> np.ndarray:
            var = float((effect**2).sum()) / (len(effect) - 1)
            keep = max(0.0, var - noise) / var if var > 0 else 0.0
            return effect * math.sqrt(keep * len(effect) / (len(effect) - 1))

        rows = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=resamples)
        cols = rng.multinomial(n_examples, np.full(n_examples, 1 / n_examples), size=resamples)
        r, c = shrunk(row, var_resid / n_examples), shrunk(col, var_resid / n_seeds)
        e = resid * math.sqrt(n_seeds * n_examples / ((n_seeds - 1) * (n_examples - 1)))
        means = mean + rows @ r / n_seeds + cols @ c / n_examples + np.einsum("bs,se,be->b", rows, e, cols) / (n_seeds * n_examples)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value (scipy's binomial test); 1.0 when nothing differs.

    >>> sign_test(0, 0), round(sign_test(6, 0), 4)
    (1.0, 0.0312)
    """
    if wins + losses == 0:
        return 1.0
    return float(stats.binomtest(wins, wins + losses, 0.5).pvalue)


def one_sided_sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test p-value: the chance of at least ``wins`` wins in ``wins + losses`` fair coin flips.

    Computed from exact binomial counts (one rounding), so the same counts always give
    the same float; 1.0 when nothing differs.

    >>> one_sided_sign_test(2, 0), one_sided_sign_test(0, 0), one_sided_sign_test(3, 1)
    (0.25, 1.0, 0.3125)
    """
    n = wins + losses
    return 0.5**n * sum(math.comb(n, j) for j in range(wins, n + 1))


def min_detectable_effect(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest mean difference ``n`` paired examples detect with ``power`` at level ``alpha``.

    The larger of two bounds: the normal approximation ``(z(1-alpha/2) + z(power)) * sd / sqrt(n)``
    (``sd``: standard deviation of the per-example differences), and the floor of the
    exact sign test, which needs at least k one-sided examples to reach ``alpha`` (6
    at 5 %), i.e. a difference of k / n.

    >>> round(min_detectable_effect(0.45, 150), 3), min_detectable_effect(0.0, 20)
    (0.103, 0.3)
    """
    if n < 1:
        return float("nan")
    k = next((k for k in range(1, n + 1) if sign_test(k, 0) < alpha), None)
    floor = k / n if k is not None else float("inf")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(max(floor, z * sd / math.sqrt(n)))


def examples_needed(effect: float, discordant: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Test examples a paired 0/1 comparison needs to detect ``effect`` (McNemar sample size).

    ``discordant`` is the expected fraction of examples on which the two arms differ
    (it must exceed ``effect``). Connor's formula,
    ``n = (z(1-alpha/2) sqrt(p) + z(power) sqrt(p - effect^2))^2 / effect^2``.

    >>> examples_needed(0.10, 0.20), examples_needed(0.10, 0.30)
    (155, 234)
    """
    if not 0 < effect < discordant <= 1:
        raise FuncgradError(f"examples_needed needs 0 < effect < discordant <= 1, got effect={effect}, discordant={discordant}")
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    return math.ceil((za * math.sqrt(discordant) + zb * math.sqrt(discordant - effect**2)) ** 2 / effect**2)


def paired(a: Outcomes, b: Outcomes, *, level: float = 0.95, resamples: int = 4000, seed: int = 0) -> Paired:
    """Compare arm ``a`` with arm ``b``: both ``[seed][example]`` scores on the same examples.

    Seeds (rows) and examples (columns) with a missing outcome (None) in either arm are
    left out, and ``n_seeds``/``n_examples`` say what remained; with nothing left every
    figure is NaN and ``p`` is 1. The interval is :func:`bootstrap_interval`; ``p`` is
    :func:`sign_test` over the per-example differences averaged over seeds.
    """
    d = _matrix(a, b)
    n_seeds, n_examples = d.shape
    if n_examples == 0:
        nan = float("nan")
        return Paired(nan, nan, nan, 0, 0, 0, 1.0, nan, 0, n_seeds, level)
    per_example = d.mean(axis=0)
    wins, losses = int(np.sum(per_example > 1e-12)), int(np.sum(per_example < -1e-12))
    low, high = bootstrap_interval(d, level=level, resamples=resamples, seed=seed)
    sd = float(per_example.std(ddof=1)) if n_examples > 1 else 0.0
    return Paired(
        diff=float(d.mean()), low=low, high=high, wins=wins, ties=n_examples - wins - losses, losses=losses,
        p=sign_test(wins, losses), mde=min_detectable_effect(sd, n_examples), n_examples=n_examples, n_seeds=n_seeds,
        level=level,
    )


def holm(pvalues: Sequence[float]) -> tuple[float, ...]:
    """Holm-Bonferroni adjusted p-values, in the order given (step-down, monotone, capped at 1).

    >>> holm([0.01, 0.04, 0.03])
    (0.03, 0.06, 0.06)
    """
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = round(running, 12)
    return tuple(adjusted)
