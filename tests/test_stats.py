"""Paired statistics: invariants (Hypothesis) and calibration on simulated data with a known effect."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from funcgrad.core.errors import FuncgradError
from funcgrad.core.stats import examples_needed, holm, min_detectable_effect, paired, sign_test

scores = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1), st.none())


@st.composite
def outcome_grids(draw, cell=scores):
    n_seeds, n_examples = draw(st.integers(1, 4)), draw(st.integers(0, 12))
    return [[draw(cell) for _ in range(n_examples)] for _ in range(n_seeds)]


@settings(deadline=None, max_examples=60)
@given(outcome_grids())
def test_identical_arms_differ_by_nothing(a):
    c = paired(a, a, resamples=200)
    if c.n_examples:
        assert (c.diff, c.low, c.high, c.wins, c.losses, c.p) == (0.0, 0.0, 0.0, 0, 0, 1.0)
        assert c.ties == c.n_examples
    else:
        assert math.isnan(c.diff) and c.p == 1.0


@settings(deadline=None, max_examples=60)
@given(st.data())
def test_swapping_the_arms_negates_the_difference(data):
    a = data.draw(outcome_grids(cell=st.sampled_from([0.0, 1.0])))
    b = [[data.draw(st.sampled_from([0.0, 1.0])) for _ in row] for row in a]
    ab, ba = paired(a, b, resamples=300), paired(b, a, resamples=300)
    if not ab.n_examples:
        return
    assert ab.diff == pytest.approx(-ba.diff)
    assert (ab.wins, ab.ties, ab.losses, ab.p) == (ba.losses, ba.ties, ba.wins, ba.p)
    assert ab.low <= ab.diff + 1e-9 and ab.diff - 1e-9 <= ab.high


def test_one_seed_of_zero_one_outcomes_is_the_exact_mcnemar_test():
    rng = np.random.default_rng(3)
    a, b = (rng.random(40) < 0.6).astype(int), (rng.random(40) < 0.4).astype(int)
    c = paired([a.tolist()], [b.tolist()])
    up, down = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    assert (c.wins, c.losses, c.ties) == (up, down, 40 - up - down)
    assert c.p == pytest.approx(scipy_stats.binomtest(up, up + down, 0.5).pvalue)
    assert c.diff == pytest.approx((up - down) / 40)


def test_missing_outcomes_leave_out_their_example_or_seed():
    a = [[1, 1, None, 0], [None, None, None, None]]
    b = [[0, 1, 1, 0], [1, 1, 1, 1]]
    c = paired(a, b)
    assert (c.n_seeds, c.n_examples, c.wins, c.ties, c.losses) == (1, 3, 1, 2, 0)
    assert c.diff == pytest.approx(1 / 3)
    with pytest.raises(FuncgradError, match="same shape"):
        paired([[1, 0]], [[1]])


def _simulate(rng, n_seeds, n_examples, effect, seed_sd):
    """Outcomes of two arms: example difficulty shared, arm A better by ``effect`` on average over seeds."""
    base = rng.uniform(0.2, 0.8, n_examples)
    shift = effect + rng.normal(0, seed_sd, n_seeds)
    a = (rng.random((n_seeds, n_examples)) < base[None, :] + shift[:, None]).astype(float)
    b = (rng.random((n_seeds, n_examples)) < base[None, :]).astype(float)
    return a.tolist(), b.tolist()


@pytest.mark.parametrize("n_seeds, n_examples, seed_sd", [(1, 100, 0.0), (3, 100, 0.03), (5, 60, 0.03)])
def test_the_interval_covers_a_known_effect_at_about_the_nominal_rate(n_seeds, n_examples, seed_sd):
    rng = np.random.default_rng(n_seeds)
    runs = 150
    covered = sum(
        c.low <= 0.1 <= c.high
        for c in (paired(*_simulate(rng, n_seeds, n_examples, 0.1, seed_sd), resamples=600, seed=i) for i in range(runs))
    )
    assert 0.89 <= covered / runs <= 0.995, covered / runs


def test_a_large_effect_is_significant_and_its_interval_excludes_zero():
    c = paired(*_simulate(np.random.default_rng(0), 3, 150, 0.3, 0.0))
    assert c.p < 1e-6 and 0 < c.low < 0.3 < c.high and c.wins > 5 * c.losses
    assert c.mde < 0.3


def test_sign_test_and_detectable_effect_floors():
    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    assert sign_test(5, 0) > 0.05 > sign_test(6, 0)
    assert min_detectable_effect(0.0, 20) == pytest.approx(6 / 20)  # the exact test needs 6 one-sided examples
    assert min_detectable_effect(0.5, 100) == pytest.approx((1.959964 + 0.841621) * 0.05, rel=1e-5)


def test_examples_needed_gives_the_promised_power():
    """At the sample size for (effect 0.10, 30 % discordant), the sign test rejects ~80 % of the time."""
    n = examples_needed(0.10, 0.30)
    rng = np.random.default_rng(7)
    runs, hits = 400, 0
    for _ in range(runs):
        d = rng.choice([1, -1, 0], size=n, p=[0.20, 0.10, 0.70])
        hits += sign_test(int(np.sum(d == 1)), int(np.sum(d == -1))) < 0.05
    assert 0.72 <= hits / runs <= 0.88
    with pytest.raises(FuncgradError, match="0 < effect < discordant"):
        examples_needed(0.3, 0.2)


@given(st.lists(st.floats(0, 1), max_size=8))
def test_holm_is_monotone_bounded_and_at_least_the_raw_p(ps):
    adjusted = holm(ps)
    assert len(adjusted) == len(ps)
    assert all(p - 1e-12 <= q <= 1.0 for p, q in zip(ps, adjusted))
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    assert all(adjusted[i] <= adjusted[j] + 1e-12 for i, j in zip(order, order[1:]))
    if ps:
        assert min(adjusted) == pytest.approx(min(1.0, len(ps) * min(ps)))
