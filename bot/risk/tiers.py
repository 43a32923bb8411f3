"""Tier lookups over leverage brackets (docs/methods.md §D.2), as numba functions the core composes.

A notional ``N`` belongs to the first tier whose cap is ``≥ N`` (caps inclusive, Binance's
``notionalFloor < N ≤ notionalCap``); notionals above the last cap use the last tier. The tiers
themselves are loaded by `bot.risk.brackets`.

>>> import numpy as np
>>> cap = np.array([50_000.0, 500_000.0, 1e9])
>>> int(bracket_index(50_000.0, cap)), int(bracket_index(50_000.01, cap)), int(bracket_index(2e9, cap))
(0, 1, 2)
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def bracket_index(notional: float, cap: np.ndarray) -> int:
    """Return the 0-based tier index of ``notional`` (first tier with ``notional ≤ cap``)."""
    n = len(cap)
    for i in range(n):
        if notional <= cap[i]:
            return i
    return n - 1


@nb.njit(cache=True)
def max_notional(equity: float, leverage: float, floor: np.ndarray, cap: np.ndarray,
                 max_leverage: np.ndarray) -> float:
    """Return the largest notional ``N`` with ``N ≤ leverage·equity`` and ``N ≤ maxLev(bracket(N))·equity``.

    docs/methods.md §D.3.7: the leverage of a position may not exceed its bracket's maximum. Since the
    maximum falls as the notional grows, the answer is the best over tiers of
    ``min(cap_i, maxLev_i·equity, leverage·equity)`` among candidates that land in tier ``i``.
    """
    if not equity > 0.0:
        return 0.0
    best = 0.0
    limit = leverage * equity
    for i in range(len(cap)):
        cand = min(cap[i], max_leverage[i] * equity, limit)
        if (i == 0 or cand > floor[i]) and cand > best:
            best = cand
    return best
