"""Statistics for comparing two models on the same samples.

- accuracy with a Wilson score 95% interval (good coverage for small n and p near 0 or 1);
- the paired difference B - A with a percentile bootstrap 95% interval over samples
  (seeded, so a report is reproducible);
- an exact McNemar test: under "no difference", the discordant pairs split 50/50, so the
  p-value is a two-sided binomial test on them;
- relative improvement (acc_B - acc_A) / acc_A;
- power: the smallest difference the exact McNemar test would detect at 80% power, given
  the number of pairs and the observed discordance (see `min_detectable_difference`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import binom, binomtest, norm

LEVEL = 0.95


@dataclass(frozen=True)
class Proportion:
    k: int
    n: int
    p: float
    lo: float
    hi: float


@dataclass(frozen=True)
class McNemar:
    a_only: int  # A right, B wrong
    b_only: int  # A wrong, B right
    p_value: float


@dataclass(frozen=True)
class Paired:
    n: int
    a: Proportion
    b: Proportion
    diff: float
    diff_lo: float
    diff_hi: float
    mcnemar: McNemar
    relative: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def wilson(k: int, n: int, level: float = LEVEL) -> Proportion:
    if n == 0:
        return Proportion(0, 0, float("nan"), 0.0, 1.0)
    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Proportion(k, n, p, max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_diff(
    a: Sequence[bool],
    b: Sequence[bool],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """Mean of b - a with a percentile bootstrap interval, resampling paired samples."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError("paired samples must have the same length")
    n = len(xa)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    d = xb - xa
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # bound memory for large n
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(d.mean()), float(lo), float(hi)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(binomtest(b_only, discordant, 0.5).pvalue)
    return McNemar(a_only, b_only, p)


def relative_improvement(acc_a: float, acc_b: float) -> float | None:
    return None if not acc_a else (acc_b - acc_a) / acc_a


def paired(a: Sequence[bool], b: Sequence[bool], *, seed: int = 0, n_boot: int = 10_000) -> Paired:
    pa, pb = wilson(sum(a), len(a)), wilson(sum(b), len(b))
    diff, lo, hi = bootstrap_diff(a, b, seed=seed, n_boot=n_boot)
    return Paired(
        n=len(a),
        a=pa,
        b=pb,
        diff=diff,
        diff_lo=lo,
        diff_hi=hi,
        mcnemar=mcnemar_exact(a, b),
        relative=relative_improvement(pa.p, pb.p) if len(a) else None,
    )


def paired_by_category(
    rows: Sequence[tuple[str, bool, bool]], *, seed: int = 0, n_boot: int = 10_000
) -> dict[str, Paired]:
    """`rows` are (category, a_correct, b_correct); categories in first-seen order."""
    groups: dict[str, tuple[list[bool], list[bool]]] = defaultdict(lambda: ([], []))
    for category, x, y in rows:
        groups[category][0].append(x)
        groups[category][1].append(y)
    return {c: paired(xs, ys, seed=seed, n_boot=n_boot) for c, (xs, ys) in groups.items()}


# ---------------------------------------------------------------- power

POWER = 0.8
ALPHA = 0.05


@lru_cache(maxsize=4096)
def _mcnemar_rejects(d: int, alpha: float) -> int:
    """The largest k with the exact two-sided test on (k, d - k) discordant pairs rejecting
    (p < alpha); -1 when no split of d pairs can reject. Symmetric: k <= c or k >= d - c."""
    if d == 0:
        return -1
    ks = np.arange(d // 2 + 1)
    p = np.minimum(1.0, 2 * binom.cdf(ks, d, 0.5))
    hits = ks[p < alpha]
    return int(hits[-1]) if len(hits) else -1


def mcnemar_power(n: int, discordance: float, diff: float, alpha: float = ALPHA) -> float:
    """Power of the exact McNemar test (two-sided, level `alpha`) on `n` pairs when a pair is
    discordant with probability `discordance` and B - A accuracy is `diff`.

    Exact and unconditional: the number of discordant pairs D ~ Binomial(n, discordance);
    given D, the pairs only B got right ~ Binomial(D, (1 + diff / discordance) / 2); the
    test rejects on the same rule as `mcnemar_exact`. Power sums P(D = d) * P(reject | d).
    """
    psi, delta = discordance, abs(diff)
    if n <= 0 or psi <= 0:
        return 0.0
    if delta > psi + 1e-12:
        raise ValueError("|diff| cannot exceed the discordance")
    pi = min(1.0, (1 + delta / psi) / 2)
    ds = np.arange(1, n + 1)
    cs = np.array([_mcnemar_rejects(int(d), alpha) for d in ds])
    ok = cs >= 0
    ds, cs = ds[ok], cs[ok]
    reject = binom.cdf(cs, ds, pi) + binom.sf(ds - cs - 1, ds, pi)
    return float(np.sum(binom.pmf(ds, n, psi) * reject))


def mcnemar_power_normal(n: float, discordance: float, diff: float, alpha: float = ALPHA) -> float:
    """Normal approximation to the same power (Connor 1987):
    z_beta = (|diff| sqrt(n) - z_{alpha/2} sqrt(psi)) / sqrt(psi - diff^2)."""
    psi, delta = discordance, abs(diff)
    if n <= 0 or psi <= 0 or delta <= 0:
        return 0.0
    z_a = float(norm.ppf(1 - alpha / 2))
    spread = max(psi - delta * delta, 1e-12)
    return float(norm.cdf((delta * np.sqrt(n) - z_a * np.sqrt(psi)) / np.sqrt(spread)))


def min_detectable_difference(
    n: int,
    discordance: float,
    *,
    power: float = POWER,
    alpha: float = ALPHA,
    method: str = "exact",
) -> float | None:
    """The smallest |B - A| the paired test detects with `power` on `n` pairs.

    The discordance (share of pairs where exactly one model is right) is held at the observed
    value, but never below the difference itself (a difference of delta needs at least delta
    of the pairs discordant), so with no observed discordance the figure is the optimistic
    case where every discordant pair favours one model. `method` is "exact" (`mcnemar_power`)
    or "normal" (`mcnemar_power_normal`). Found by bisection, to 1e-4; None when even a
    difference of 100% would be detected with less than `power` (n too small).
    """
    fn = mcnemar_power if method == "exact" else mcnemar_power_normal
    if method not in ("exact", "normal"):
        raise ValueError(f"unknown method {method!r}")

    def power_at(delta: float) -> float:
        return fn(n, max(discordance, delta), delta, alpha)

    if n <= 0 or power_at(1.0) < power:
        return None
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if power_at(mid) >= power else (mid, hi)
    return hi
