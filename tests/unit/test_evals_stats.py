"""Statistics against values computed by hand or from their definitions."""

from __future__ import annotations

import math

import pytest

from wardround.evals import stats


def test_wilson_known_values():
    # k=0, n=10: upper bound z^2 / (n + z^2) = 3.8415 / 13.8415
    p = stats.wilson(0, 10)
    assert p.lo == 0.0
    assert p.hi == pytest.approx(0.27753, abs=1e-4)
    # k=5, n=10: symmetric around 0.5
    p = stats.wilson(5, 10)
    assert (p.lo, p.hi) == (pytest.approx(0.23659, abs=1e-4), pytest.approx(0.76341, abs=1e-4))
    # k=81, n=263 (a textbook example): 0.2553 .. 0.3662
    p = stats.wilson(81, 263)
    assert (p.lo, p.hi) == (pytest.approx(0.2553, abs=5e-4), pytest.approx(0.3662, abs=5e-4))
    assert math.isnan(stats.wilson(0, 0).p)


def test_mcnemar_exact_is_a_binomial_test_on_discordant_pairs():
    # 2 pairs only A right, 8 only B right: p = 2 * P(X <= 2 | n=10, 1/2) = 2 * 56 / 1024
    a = [True] * 2 + [False] * 8 + [True] * 5 + [False] * 5
    b = [False] * 2 + [True] * 8 + [True] * 5 + [False] * 5
    result = stats.mcnemar_exact(a, b)
    assert (result.a_only, result.b_only) == (2, 8)
    assert result.p_value == pytest.approx(112 / 1024)
    # 0 vs 6: p = 2 / 64
    assert stats.mcnemar_exact([False] * 6, [True] * 6).p_value == pytest.approx(2 / 64)
    assert stats.mcnemar_exact([True, False], [True, False]).p_value == 1.0


def test_bootstrap_is_seeded_and_brackets_the_difference():
    a = [i % 3 == 0 for i in range(90)]  # 30/90
    b = [i % 3 != 2 for i in range(90)]  # 60/90
    diff, lo, hi = stats.bootstrap_diff(a, b, seed=7, n_boot=4000)
    assert diff == pytest.approx(1 / 3)
    assert lo < diff < hi
    assert (lo, hi) == stats.bootstrap_diff(a, b, seed=7, n_boot=4000)[1:]
    # d = b - a is 1 on a third of the samples: normal approximation 1/3 +- 1.96 * 0.0497
    assert lo == pytest.approx(1 / 3 - 0.0974, abs=0.025)
    assert hi == pytest.approx(1 / 3 + 0.0974, abs=0.025)
    # identical runs: no spread at all
    assert stats.bootstrap_diff(a, a, n_boot=500) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        stats.bootstrap_diff([True], [True, False])


def test_paired_summary_and_relative_improvement():
    a = [True] * 40 + [False] * 60
    b = [True] * 50 + [False] * 50
    result = stats.paired(a, b, n_boot=2000)
    assert result.a.p == 0.4 and result.b.p == 0.5
    assert result.diff == pytest.approx(0.1)
    assert result.relative == pytest.approx(0.25)
    assert result.mcnemar.b_only == 10 and result.mcnemar.a_only == 0
    assert stats.relative_improvement(0.0, 0.5) is None


def test_per_category_groups_in_first_seen_order():
    rows = [("x", True, True), ("y", False, True), ("x", False, False), ("y", False, True)]
    groups = stats.paired_by_category(rows, n_boot=200)
    assert list(groups) == ["x", "y"]
    assert groups["y"].b.k == 2 and groups["y"].a.k == 0 and groups["x"].n == 2


def test_power_with_every_discordant_pair_one_way_is_computed_by_hand():
    # n = 6 with no observed discordance: a difference delta needs delta of the pairs
    # discordant, all for B. Only 6 of 6 discordant rejects (p = 2/64; 5 of 5 gives 2/32),
    # so power = delta^6, and 80% power needs delta = 0.8 ** (1/6) = 0.96349.
    assert stats.mcnemar_power(6, 0.5, 0.5) == pytest.approx(0.5**6)
    mdd = stats.min_detectable_difference(6, 0.0)
    assert mdd == pytest.approx(0.8 ** (1 / 6), abs=2e-4)
    assert stats.min_detectable_difference(5, 0.0) is None  # 5 pairs can never reject


def test_power_normal_approximation_matches_the_textbook_formula():
    # Connor (1987): n = (z_.975 sqrt(psi) + z_.8 sqrt(psi - d^2))^2 / d^2; psi = 0.3,
    # d = 0.1: (1.95996 * 0.547723 + 0.841621 * 0.538516)^2 / 0.01 = 233.09 pairs.
    n = (1.959964 * math.sqrt(0.3) + 0.841621 * math.sqrt(0.29)) ** 2 / 0.01
    assert n == pytest.approx(233.09, abs=0.01)
    assert stats.mcnemar_power_normal(n, 0.3, 0.1) == pytest.approx(0.8, abs=1e-4)
    assert stats.min_detectable_difference(234, 0.3, method="normal") == pytest.approx(
        0.1, abs=5e-4
    )


def test_exact_power_is_close_to_normal_for_many_pairs_and_grows_with_n():
    exact = stats.min_detectable_difference(234, 0.3)
    assert exact == pytest.approx(0.1, abs=0.01)
    assert (
        stats.min_detectable_difference(100, 0.3)
        > exact
        > stats.min_detectable_difference(500, 0.3)
    )
    assert stats.mcnemar_power(100, 0.3, 0.0) < 0.05  # at no difference: at most alpha
    with pytest.raises(ValueError):
        stats.mcnemar_power(10, 0.1, 0.2)
