"""Position sizing: risk per trade, fixed fraction, volatility target, capped Kelly.

Every size is a quantity in base units (BTC, ETH) for an order decided at a bar close, with the close
as the expected entry price. Whatever the method, the notional is then capped by ``max_leverage ×
equity`` and by the leverage bracket of the notional (docs/methods.md §D.2, §D.3.7), and scaled by the
signal's magnitude ``|target|``.

* **risk per trade** — the loss if the stop is hit, including a taker fee on both fills and
  adverse slippage on both, equals ``risk × equity``::

      qty = risk · equity / (s·(E' − S') + fee·(E' + S')),  E' = E·(1 + s·slip), S' = S·(1 − s·slip)

  This is ``risk × equity / |entry − stop|`` with the costs added to the distance, so the budget
  holds after costs (a gap through the stop can of course lose more). Without a valid stop it falls
  back to fixed fraction.
* **fixed fraction** — ``notional = fixed_fraction × equity``.
* **volatility target** — ``notional = equity × vol_target / σ``, with ``σ`` the annualised realised
  volatility of close-to-close log returns over ``atr_period`` bars; fixed fraction until ``σ`` exists.
* **Kelly** — from the closed trades' returns on equity ``r_i``: win rate ``p``, payoff
  ``b = mean(r | r > 0) / mean(−r | r < 0)``, ``f* = p − (1 − p)/b``; the equity fraction *at risk* is
  ``min(kelly_fraction × f*, kelly_cap)`` (sized like risk per trade, or as notional without a stop).
  Risk-per-trade sizing is used until ``kelly_min_trades`` trades have closed; ``f* ≤ 0`` means no trade.

>>> round(risk_size(10_000.0, 100.0, 98.0, 1, 0.01, 0.0, 0.0), 6)
50.0
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from bot.risk.params import (
    SIZING_FIXED_FRACTION,
    SIZING_KELLY,
    SIZING_RISK_PER_TRADE,
    SIZING_VOLATILITY_TARGET,
    RiskParams,
)
from bot.risk.tiers import max_notional


@nb.njit(cache=True)
def loss_per_unit(entry: float, stop: float, side: int, fee: float, slip: float) -> float:
    """Return the loss of one unit entered at ``entry`` and stopped at ``stop``, fees and slippage included."""
    e = entry * (1.0 + side * slip)
    s = stop * (1.0 - side * slip)
    return side * (e - s) + fee * (e + s)


@nb.njit(cache=True)
def risk_size(equity: float, entry: float, stop: float, side: int, risk: float, fee: float, slip: float) -> float:
    """Return the quantity that loses ``risk × equity`` at ``stop`` (0 if the stop is on the wrong side)."""
    if not (equity > 0.0 and entry > 0.0) or not side * (entry - stop) > 0.0:
        return 0.0
    per_unit = loss_per_unit(entry, stop, side, fee, slip)
    if not per_unit > 0.0:
        return 0.0
    return risk * equity / per_unit


@nb.njit(cache=True)
def fixed_fraction_size(equity: float, entry: float, fraction: float) -> float:
    """Return the quantity whose notional is ``fraction × equity``."""
    if not (equity > 0.0 and entry > 0.0):
        return 0.0
    return fraction * equity / entry


@nb.njit(cache=True)
def volatility_target_size(equity: float, entry: float, vol_target: float, annual_vol: float) -> float:
    """Return the quantity whose notional is ``equity × vol_target / annual_vol``."""
    if not (equity > 0.0 and entry > 0.0 and annual_vol > 0.0):
        return 0.0
    return vol_target / annual_vol * equity / entry


@nb.njit(cache=True)
def kelly_fraction(n_win: int, sum_win: float, n_loss: int, sum_loss: float, fraction: float,
                   cap: float, min_trades: int) -> float:
    """Return the capped fractional Kelly bet, or −1 while fewer than ``min_trades`` trades closed.

    ``sum_win`` is the sum of winning returns, ``sum_loss`` the sum of the magnitudes of losing ones.
    """
    n = n_win + n_loss
    if n < min_trades or n == 0:
        return -1.0
    if n_win == 0:
        return 0.0
    p = n_win / n
    if n_loss == 0 or sum_loss <= 0.0:
        full = 1.0
    else:
        b = (sum_win / n_win) / (sum_loss / n_loss)
        full = p - (1.0 - p) / b
    return min(max(fraction * full, 0.0), cap)


@nb.njit(cache=True)
def cap_quantity(qty: float, entry: float, equity: float, max_leverage: float, floor: np.ndarray,
                 cap: np.ndarray, bracket_leverage: np.ndarray) -> float:
    """Return ``qty`` capped by ``max_leverage × equity`` and by the bracket leverage cap."""
    limit = max_notional(equity, max_leverage, floor, cap, bracket_leverage)
    if qty * entry > limit:
        qty = limit / entry
        # round-off may leave qty·entry a hair above a tier cap, i.e. in the next tier
        while qty * entry > limit:
            qty = np.nextafter(qty, 0.0)
    return qty


@nb.njit(cache=True)
def entry_quantity(p: RiskParams, side: int, magnitude: float, equity: float, entry: float, stop: float,
                   annual_vol: float, n_win: int, sum_win: float, n_loss: int, sum_loss: float,
                   floor: np.ndarray, cap: np.ndarray, bracket_leverage: np.ndarray) -> float:
    """Return the order quantity for a new position (0 = no order) under the sizing of ``p``.

    ``stop`` is the protective stop price relative to ``entry`` (NaN = none); ``magnitude`` is
    ``|target|``, clipped to 1.
    """
    if not (equity > 0.0 and entry > 0.0 and magnitude > 0.0) or side == 0:
        return 0.0
    fee = p.taker_fee
    slip = p.slippage
    has_stop = math.isfinite(stop) and side * (entry - stop) > 0.0
    method = p.sizing
    qty = 0.0
    if method == SIZING_KELLY:
        f = kelly_fraction(n_win, sum_win, n_loss, sum_loss, p.kelly_fraction, p.kelly_cap, p.kelly_min_trades)
        if f < 0.0:
            method = SIZING_RISK_PER_TRADE
        elif f == 0.0:
            return 0.0
        elif has_stop:
            qty = risk_size(equity, entry, stop, side, f, fee, slip)
        else:
            qty = fixed_fraction_size(equity, entry, f)
    if method == SIZING_RISK_PER_TRADE:
        if has_stop:
            qty = risk_size(equity, entry, stop, side, p.risk_per_trade, fee, slip)
        else:
            qty = fixed_fraction_size(equity, entry, p.fixed_fraction)
    elif method == SIZING_FIXED_FRACTION:
        qty = fixed_fraction_size(equity, entry, p.fixed_fraction)
    elif method == SIZING_VOLATILITY_TARGET:
        if annual_vol > 0.0:
            qty = volatility_target_size(equity, entry, p.vol_target, annual_vol)
        else:
            qty = fixed_fraction_size(equity, entry, p.fixed_fraction)
    qty *= min(magnitude, 1.0)
    qty = cap_quantity(qty, entry, equity, p.max_leverage, floor, cap, bracket_leverage)
    if not (qty > 0.0 and math.isfinite(qty)):
        return 0.0
    return qty


@nb.njit(cache=True)
def realized_volatility(close: np.ndarray, window: int, periods_per_year: float) -> np.ndarray:
    """Return the annualised std (ddof 1) of the last ``window`` log returns at each bar (NaN before)."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    if window < 2:
        window = 2
    if n <= window:
        return out
    r = np.empty(n)
    r[0] = 0.0
    for k in range(1, n):
        r[k] = math.log(close[k] / close[k - 1])
    for k in range(window, n):
        # two passes over the window: exact enough and O(n·window) only in cheap adds
        mean = 0.0
        for j in range(k - window + 1, k + 1):
            mean += r[j]
        mean /= window
        var = 0.0
        for j in range(k - window + 1, k + 1):
            d = r[j] - mean
            var += d * d
        out[k] = math.sqrt(var / (window - 1) * periods_per_year)
    return out
