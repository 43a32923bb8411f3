"""Overfitting statistics and gates (docs/methods.md §E.2, §E.3, §E.5).

Conventions (fixed here; the formulas follow docs/methods.md §E.3 literally):

* Sharpe ratios fed to PSR/DSR/MinTRL are **non-annualised**, at the sampling frequency of the
  returns (daily here); skewness and kurtosis are the bias-corrected sample moments (pandas'
  ``skew``/``kurt``), kurtosis **raw** (normal = 3).
* ``expected_max_sharpe(N, V)`` is the expected maximum Sharpe of N zero-skill trials whose
  Sharpe ratios have cross-sectional variance V; N = 1 gives 0 (no selection).
* PBO is computed by CSCV over all ``C(S, S/2)`` splits of the rows of the trial matrix into S
  contiguous blocks, with the T mod S leading rows dropped, ranks ascending (average ranks for
  ties) divided by N + 1 as in pypbo.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

EULER_GAMMA = 0.5772156649015329


def sharpe(returns: np.ndarray) -> float:
    """Non-annualised Sharpe (mean / std, ddof 1); 0 for a flat series, NaN with < 2 values."""
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return math.nan
    sd = r.std(ddof=1)
    if sd == 0.0:
        return 0.0
    return float(r.mean() / sd)


def moments(returns: np.ndarray) -> tuple[float, float]:
    """(skewness, raw kurtosis) of ``returns``, bias-corrected like pandas; (0, 3) when undefined."""
    s = pd.Series(np.asarray(returns, dtype=float)).dropna()
    if len(s) < 4 or s.std() == 0.0:
        return 0.0, 3.0
    return float(s.skew()), float(s.kurt()) + 3.0


def psr(sr: float, sr_star: float, t: int, skew: float, kurt: float) -> float:
    """Probabilistic Sharpe ratio ``PSR(SR*)`` (§E.3); ``sr`` non-annualised over ``t`` returns."""
    if not (math.isfinite(sr) and t > 1):
        return math.nan
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if denom <= 0.0:
        return math.nan
    return float(norm.cdf((sr - sr_star) * math.sqrt(t - 1) / math.sqrt(denom)))


def expected_max_sharpe(n_trials: float, variance: float) -> float:
    """``SR0``: expected maximum Sharpe of ``n_trials`` zero-skill trials (§E.3)."""
    if n_trials <= 1 or not math.isfinite(variance) or variance <= 0.0:
        return 0.0
    z1 = norm.ppf(1.0 - 1.0 / n_trials)
    z2 = norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def dsr(returns: np.ndarray, n_trials: float, sr_variance: float) -> float:
    """Deflated Sharpe ratio of ``returns`` after ``n_trials`` trials with Sharpe variance ``sr_variance``."""
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    sk, ku = moments(r)
    return psr(sharpe(r), expected_max_sharpe(n_trials, sr_variance), r.size, sk, ku)


def min_trl(sr: float, sr_star: float, skew: float, kurt: float, alpha: float = 0.05) -> float:
    """Minimum track-record length (observations) for ``PSR(SR*) ≥ 1 − alpha`` (§E.3)."""
    if not math.isfinite(sr) or sr <= sr_star:
        return math.inf
    z = norm.ppf(1.0 - alpha)
    return float(1.0 + (1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr) * (z / (sr - sr_star)) ** 2)


def min_btl(n_trials: float, max_sharpe: float = 1.0) -> float:
    """MinBTL in years: backtest length so that the expected best annualised Sharpe of
    ``n_trials`` zero-skill trials does not exceed ``max_sharpe`` (§E.3)."""
    if n_trials <= 1:
        return 0.0
    z1 = norm.ppf(1.0 - 1.0 / n_trials)
    z2 = norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float((((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2) / max_sharpe) ** 2)


def max_trials_for(years: float, max_sharpe: float = 1.0, cap: int = 100_000) -> int:
    """The largest N whose MinBTL fits in ``years`` (1 when none does): the trial budget the data affords."""
    n = 1
    while n < cap and min_btl(n + 1, max_sharpe) <= years:
        n += 1
    return n


def effective_trials(matrix: np.ndarray) -> tuple[float, float]:
    """(N_eff, mean pairwise correlation ρ̄) of the columns of ``matrix``: ``N(1 − ρ̄) + ρ̄`` (§E.3)."""
    m = np.asarray(matrix, dtype=float)
    n = m.shape[1] if m.ndim == 2 else 0
    if n < 2:
        return float(n), math.nan
    keep = np.nanstd(m, axis=0) > 0
    if keep.sum() < 2:
        return float(n), math.nan
    c = np.corrcoef(np.nan_to_num(m[:, keep]), rowvar=False)
    k = c.shape[0]
    rho = float((c.sum() - k) / (k * (k - 1)))
    return float(n * (1.0 - rho) + rho), rho


@dataclass(frozen=True)
class PBOResult:
    """CSCV outcome: ``pbo`` and the per-split logits and IS/OOS Sharpe of the IS-best column."""

    pbo: float
    logits: np.ndarray
    is_best: np.ndarray
    oos_of_best: np.ndarray
    n_splits: int

    @property
    def degradation_slope(self) -> float:
        """OLS slope of OOS on IS Sharpe of the selected column (negative: overfitting)."""
        if self.n_splits < 2 or np.std(self.is_best) == 0:
            return math.nan
        return float(np.polyfit(self.is_best, self.oos_of_best, 1)[0])

    @property
    def prob_oos_loss(self) -> float:
        """``P[R̄_{n*} < 0]``."""
        return float(np.mean(self.oos_of_best < 0)) if self.n_splits else math.nan


def _block_sharpe(sums: np.ndarray, sq: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sharpe of each (split, column) from block-aggregated sums (ddof 1); flat → 0."""
    mean = sums / counts
    var = (sq - counts * mean * mean) / (counts - 1.0)
    var = np.where(var < 1e-30, 0.0, var)  # round-off on flat columns
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(var > 0, mean / np.sqrt(var), 0.0)
    return out


def pbo_cscv(matrix: np.ndarray, n_blocks: int = 16) -> PBOResult:
    """Probability of backtest overfitting of the columns (trials) of ``matrix`` (T × N), §E.2.

    Raises:
        ValueError: odd ``n_blocks``, fewer than 2 columns, or fewer than 2 rows per block.
    """
    m = np.nan_to_num(np.asarray(matrix, dtype=float))
    if n_blocks % 2 or n_blocks < 2:
        raise ValueError(f"n_blocks must be even and >= 2, got {n_blocks}")
    t, n = m.shape
    if n < 2:
        raise ValueError("PBO needs at least 2 trials")
    size = t // n_blocks
    if size < 2:
        raise ValueError(f"PBO with S={n_blocks} needs at least {2 * n_blocks} rows, got {t}")
    m = m[t - size * n_blocks:]
    blocks = m.reshape(n_blocks, size, n)
    b_sum, b_sq = blocks.sum(axis=1), (blocks * blocks).sum(axis=1)
    combos = np.array(list(itertools.combinations(range(n_blocks), n_blocks // 2)))
    mask = np.zeros((len(combos), n_blocks))
    mask[np.arange(len(combos))[:, None], combos] = 1.0
    cnt = float(size * n_blocks // 2)
    r_is = _block_sharpe(mask @ b_sum, mask @ b_sq, cnt)
    r_oos = _block_sharpe((1 - mask) @ b_sum, (1 - mask) @ b_sq, cnt)
    best = np.argmax(r_is, axis=1)
    rows = np.arange(len(combos))
    # average ranks (1..N, ascending) of the IS-best column among the OOS values
    oos_best = r_oos[rows, best]
    below = (r_oos < oos_best[:, None]).sum(axis=1)
    equal = (r_oos == oos_best[:, None]).sum(axis=1)
    rank = below + (equal + 1) / 2.0
    omega = rank / (n + 1.0)
    logits = np.log(omega / (1.0 - omega))
    return PBOResult(float(np.mean(logits <= 0)), logits, r_is[rows, best], oos_best, len(combos))


@dataclass(frozen=True)
class Gate:
    """One pass/fail check: ``value op threshold``; ``passed`` is None when it cannot be evaluated."""

    name: str
    value: float | None
    op: str
    threshold: float
    description: str

    @property
    def passed(self) -> bool | None:
        if self.value is None or not math.isfinite(self.value):
            return None if self.value is None else False
        return {">=": self.value >= self.threshold, ">": self.value > self.threshold,
                "<=": self.value <= self.threshold, "<": self.value < self.threshold}[self.op]

    def as_dict(self) -> dict[str, Any]:
        v = self.value if self.value is None or math.isfinite(self.value) else None
        return {"value": v, "op": self.op, "threshold": self.threshold, "pass": self.passed,
                "description": self.description}

    def line(self) -> str:
        """``PASS  dsr 0.97 >= 0.95  (deflated Sharpe ...)``."""
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[self.passed]
        shown = "–" if self.value is None else f"{self.value:.4g}"
        return f"{verdict}  {self.name:<16} {shown:>10} {self.op} {self.threshold:g}   {self.description}"
