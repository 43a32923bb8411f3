"""Isolated-margin liquidation and bankruptcy prices of the bot's own position (docs/methods.md §D.1, §D.3).

One-way mode, isolated margin, size ``Q > 0``, entry ``EP``, side ``s`` (+1 long, −1 short), isolated
wallet balance ``WB`` and the bracket's maintenance rate ``m`` and amount ``cum``:

    LP = (WB + cum − s·Q·EP) / (Q·(m − s))

i.e. the price where the margin balance ``WB + s·Q·(LP − EP)`` equals the maintenance margin
``Q·LP·m − cum``. The bracket is picked by notional ``Q·EP``; if the notional *at the liquidation
price* falls in another bracket, that bracket's ``(m, cum)`` is substituted and LP recomputed (at most
three times, as Binance's FAQ prescribes).

The engines open every position in isolated mode with the leverage setting
``L = min(risk.max_leverage, maxLeverage(bracket(notional)))`` (§D.3.7), so its isolated margin is
``WB = notional / L`` (`isolated_margin`); funding payments are taken from, or added to, ``WB``
and LP is recomputed after each (§D.3.5).

The bankruptcy price is where the isolated margin is fully gone: ``BP = EP − s·WB/Q``. A liquidated
position loses its whole isolated margin (§D.3.3), which is the same as closing it at ``BP`` with no
exit fee; the engines book liquidations that way.

>>> b = load_brackets("BTCUSDT")
>>> round(liquidation_price(1, 0.1, 100_000.0, 1_000.0, b.cap, b.mmr, b.cum), 2)
90361.45
>>> round(liquidation_price(-1, 0.1, 100_000.0, 1_000.0, b.cap, b.mmr, b.cum), 2)
109561.75
"""

from __future__ import annotations

import numba as nb
import numpy as np

from bot.risk.brackets import brackets_for, load_brackets
from bot.risk.tiers import bracket_index

__all__ = [
    "bankruptcy_price",
    "isolated_liquidation_price",
    "isolated_margin",
    "liquidation_price",
    "liquidation_price_at",
    "load_brackets",
    "position_leverage",
]


@nb.njit(cache=True)
def liquidation_price_at(side: int, qty: float, entry: float, wallet: float, mmr: float, cum: float) -> float:
    """Return the §D.1 liquidation price for one given bracket ``(mmr, cum)``."""
    return (wallet + cum - side * qty * entry) / (qty * (mmr - side))


@nb.njit(cache=True)
def liquidation_price(side: int, qty: float, entry: float, wallet: float, cap: np.ndarray,
                      mmr: np.ndarray, cum: np.ndarray) -> float:
    """Return the liquidation price with bracket re-selection at the liquidation price (≤ 3 passes).

    A long whose margin covers the whole notional (1x) gets a price ≤ 0: it cannot be liquidated.
    ``qty ≤ 0`` returns NaN.
    """
    if not qty > 0.0:
        return np.nan
    i = bracket_index(qty * entry, cap)
    lp = liquidation_price_at(side, qty, entry, wallet, mmr[i], cum[i])
    for _ in range(3):
        j = bracket_index(qty * abs(lp), cap)
        if j == i:
            break
        i = j
        lp = liquidation_price_at(side, qty, entry, wallet, mmr[i], cum[i])
    return lp


@nb.njit(cache=True)
def bankruptcy_price(side: int, qty: float, entry: float, wallet: float) -> float:
    """Return the price at which the isolated margin ``wallet`` is fully lost (§D.1)."""
    return entry - side * wallet / qty


def isolated_liquidation_price(side: int, qty: float, entry: float, wallet: float,
                               symbol: str | None = "BTC/USDT:USDT") -> float:
    """Return ``symbol``'s liquidation price for a position, looking its brackets up.

    >>> round(isolated_liquidation_price(1, 1.0, 100_000.0, 10_000.0), 2)  # tier 2
    90402.01
    """
    b = brackets_for(symbol)
    return float(liquidation_price(int(side), float(qty), float(entry), float(wallet), b.cap, b.mmr, b.cum))


@nb.njit(cache=True)
def position_leverage(notional: float, max_leverage: float, cap: np.ndarray, bracket_leverage: np.ndarray) -> float:
    """Return the leverage setting of a new position: ``max_leverage`` capped by its bracket (§D.3.7)."""
    return min(max_leverage, bracket_leverage[bracket_index(notional, cap)])


@nb.njit(cache=True)
def isolated_margin(notional: float, max_leverage: float, cap: np.ndarray, bracket_leverage: np.ndarray) -> float:
    """Return the isolated margin posted for a new position: ``notional / leverage``."""
    return notional / position_leverage(notional, max_leverage, cap, bracket_leverage)
