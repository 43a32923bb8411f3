"""Overfitting statistics against hand-worked cases, the docs/methods.md §E.3 illustration, Monte Carlo and an
independent (loop-over-splits, pandas/scipy) implementation of CSCV."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from backtests.optimize import gates as G


def test_pbo_hand_worked_overfit_and_dominant():
    # S = 2 blocks of 2 rows. A wins block 1 and loses block 2; B is steady: whichever column is best
    # in-sample is the worst out-of-sample in both splits -> PBO = 1, logit = ln((1/3)/(2/3)) = ln 0.5.
    a = [1.0, 3.0, -1.0, -3.0]
    b = [0.0, 1.0, 0.0, 1.0]
    res = G.pbo_cscv(np.column_stack([a, b]), n_blocks=2)
    assert res.n_splits == 2
    assert res.pbo == 1.0
    assert np.allclose(res.logits, math.log(0.5))
    # A beats B in both blocks: the IS winner is the OOS winner, rank 2 of 2 -> omega 2/3 -> PBO = 0
    a2 = [1.0, 3.0, 1.0, 3.0]
    res2 = G.pbo_cscv(np.column_stack([a2, b]), n_blocks=2)
    assert res2.pbo == 0.0
    assert np.allclose(res2.logits, math.log(2.0))


def _pbo_independent(m: np.ndarray, s: int) -> float:
    """CSCV written out split by split with pandas Sharpe and scipy ranks (pypbo's recipe)."""
    t, n = m.shape
    size = t // s
    m = m[t - size * s:]
    blocks = [m[i * size:(i + 1) * size] for i in range(s)]
    lam = []
    for combo in itertools.combinations(range(s), s // 2):
        is_rows = pd.DataFrame(np.vstack([blocks[i] for i in combo]))
        oos_rows = pd.DataFrame(np.vstack([blocks[i] for i in range(s) if i not in combo]))
        r_is = (is_rows.mean() / is_rows.std()).to_numpy()
        r_oos = (oos_rows.mean() / oos_rows.std()).to_numpy()
        best = int(np.argmax(r_is))
        w = stats.rankdata(r_oos)[best] / (n + 1)
        lam.append(math.log(w / (1 - w)))
    return float(np.mean(np.array(lam) <= 0))


@pytest.mark.parametrize("seed,skill", [(1, 0.0), (2, 0.05), (3, 0.2)])
def test_pbo_matches_independent_implementation(seed, skill):
    rng = np.random.default_rng(seed)
    t, n = 123, 9  # 123 mod 8 = 3 leading rows dropped
    m = rng.normal(0, 0.01, (t, n))
    m[:, 0] += skill * 0.01  # one column with real skill lowers PBO
    for s in (4, 8):
        assert G.pbo_cscv(m, s).pbo == pytest.approx(_pbo_independent(m, s), abs=1e-12)


def test_pbo_of_noise_is_high_and_of_skill_low():
    # one noise matrix's PBO scatters widely; over many it centres near 1/2 (Bailey et al. 2017)
    rng = np.random.default_rng(7)
    noise = [rng.normal(0, 0.01, (320, 40)) for _ in range(12)]
    assert 0.35 < np.mean([G.pbo_cscv(m, 16).pbo for m in noise]) < 0.65
    skilled = noise[0].copy()
    skilled[:, :5] += 0.004
    assert G.pbo_cscv(skilled, 16).pbo < 0.2


def test_psr_dsr_reproduce_the_methods_illustration():
    # docs/methods.md §E.3: 2 years of daily returns, annual SR 2.0, skew -0.5, kurtosis 6.
    sr = 2.0 / math.sqrt(365)
    assert G.psr(sr, 0.0, 730, -0.5, 6.0) == pytest.approx(0.997, abs=0.0015)
    sr0 = G.expected_max_sharpe(100, (1.0 / math.sqrt(365)) ** 2)
    assert sr0 * math.sqrt(365) == pytest.approx(2.53, abs=0.01)
    assert G.psr(sr, sr0, 730, -0.5, 6.0) == pytest.approx(0.23, abs=0.01)
    sr0_1000 = G.expected_max_sharpe(1000, 1.0 / 365)
    assert G.psr(sr, sr0_1000, 730, -0.5, 6.0) == pytest.approx(0.04, abs=0.01)


def test_expected_max_and_minbtl_against_monte_carlo():
    rng = np.random.default_rng(0)
    for n in (10, 200):
        mc = rng.standard_normal((4000, n)).max(axis=1).mean()
        assert G.expected_max_sharpe(n, 1.0) == pytest.approx(mc, rel=0.03)
        assert math.sqrt(G.min_btl(n, 1.0)) == pytest.approx(mc, rel=0.03)
    # docs/methods.md §E.3 example: N = 200, E[max] = 1 -> MinBTL < 2 ln N = 10.6 years
    assert G.min_btl(200, 1.0) < 2 * math.log(200) < 10.6
    assert G.min_btl(1) == 0.0
    years = 0.49
    n = G.max_trials_for(years)
    assert G.min_btl(n) <= years < G.min_btl(n + 1)


def test_dsr_matches_independent_formula_on_a_series():
    rng = np.random.default_rng(5)
    r = rng.standard_t(5, 400) * 0.01 + 0.001
    sr = r.mean() / r.std(ddof=1)
    skew = stats.skew(r, bias=False)
    kurt = stats.kurtosis(r, fisher=False, bias=False)
    v, n = 0.003, 50
    e = 0.5772156649015329
    sr0 = math.sqrt(v) * ((1 - e) * stats.norm.ppf(1 - 1 / n) + e * stats.norm.ppf(1 - 1 / (n * math.e)))
    z = (sr - sr0) * math.sqrt(len(r) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr * sr)
    assert G.dsr(r, n, v) == pytest.approx(stats.norm.cdf(z), abs=1e-12)
    assert G.dsr(r, 1, v) == pytest.approx(G.psr(sr, 0.0, len(r), skew, kurt), abs=1e-12)
    # more trials can only deflate
    assert G.dsr(r, 1000, v) < G.dsr(r, 50, v) < G.dsr(r, 1, v)


def test_effective_trials():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 1))
    same = np.hstack([x, x, x])
    assert G.effective_trials(same)[0] == pytest.approx(1.0)
    indep = rng.normal(size=(5000, 4))
    n_eff, rho = G.effective_trials(indep)
    assert abs(rho) < 0.05 and n_eff == pytest.approx(4.0, abs=0.2)
    c = np.corrcoef(np.hstack([x, x + rng.normal(size=(200, 1))]), rowvar=False)[0, 1]
    assert G.effective_trials(np.hstack([x, x + rng.normal(size=(200, 1)) * 0]))[1] == pytest.approx(1.0)
    assert -1 <= c <= 1


def test_gate_verdicts():
    assert G.Gate("dsr", 0.97, ">=", 0.95, "").passed is True
    assert G.Gate("pbo", 0.5, "<=", 0.2, "").passed is False
    assert G.Gate("wfe", None, ">=", 0.5, "").passed is None
    assert G.Gate("wfe", math.nan, ">=", 0.5, "").passed is False
    assert "FAIL" in G.Gate("pbo", 0.5, "<=", 0.2, "x").line()
