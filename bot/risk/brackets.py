"""Binance USDⓈ-M leverage brackets (docs/methods.md §D.2): tier lookup, maintenance amounts, leverage caps.

The brackets live in ``brackets_binance.json`` next to this module: a dated copy of the *current*
brackets (Binance publishes no history), so every backtest declares that it uses today's tiers for
its whole period. The file stores each tier's notional floor and cap, maintenance margin rate
(MMR) and maximum leverage; the maintenance amount ``cum`` is derived by the recursion of
docs/methods.md §D.1, ``cum_n = cum_{n-1} + floor_n · (mmr_n − mmr_{n-1})`` with ``cum_1 = 0``.

A notional ``N`` belongs to the first tier whose cap is ``≥ N`` (caps inclusive, Binance's
``notionalFloor < N ≤ notionalCap``); notionals above the last cap use the last tier.

The tier lookups the core composes (`bracket_index`, `max_notional`) are ``numba.njit`` functions in
`bot.risk.tiers`; this module only loads tiers and imports no numba, so a process that runs the
precompiled fast kernel (`backtests.engines.compiled`) never loads numba.

>>> b = load_brackets("BTC/USDT:USDT")
>>> int(b.tier(100_000.0)), float(b.cum[1]), float(b.max_leverage_at(100_000.0))
(2, 50.0, 100.0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

BRACKETS_FILE = Path(__file__).with_name("brackets_binance.json")
BRACKETS_FILES = (BRACKETS_FILE, Path(__file__).with_name("brackets_binance_top.json"))
"""Bundled bracket files, searched in order: the dated BTC/ETH copy first, then an older snapshot of
other large markets (BNB, DOGE, DOT, SOL; its ``as_of`` says how old)."""
DEFAULT_SYMBOL = "BTCUSDT"
DOWNLOADED_FILE = "leverage_tiers.json"
"""``cascade download`` writes an exchange's current tiers to ``<data>/<exchange>/leverage_tiers.json``
(same format as the bundled files)."""


def exchange_symbol(symbol: str) -> str:
    """Map a ccxt unified symbol (``"BTC/USDT:USDT"``) to Binance's id (``"BTCUSDT"``)."""
    return symbol.split(":")[0].replace("/", "").upper()


def maintenance_amounts(floor: np.ndarray, mmr: np.ndarray) -> np.ndarray:
    """Return the maintenance amounts ``cum`` of each tier by the §D.1 recursion.

    >>> maintenance_amounts(np.array([0.0, 50_000.0, 600_000.0]), np.array([0.004, 0.005, 0.0065])).tolist()
    [0.0, 50.0, 950.0]
    """
    floor = np.asarray(floor, dtype=np.float64)
    mmr = np.asarray(mmr, dtype=np.float64)
    cum = np.zeros(len(floor))
    for i in range(1, len(floor)):
        cum[i] = cum[i - 1] + floor[i] * (mmr[i] - mmr[i - 1])
    # Binance's amounts are exact decimals; drop the binary round-off of the rates
    return np.round(cum, 6)


class BracketTable(NamedTuple):
    """One symbol's tiers as tuples of floats, the form `bot.core` passes around.

    Tuples, not arrays: numba keeps them in registers, while every call that passes a tuple of arrays
    pays reference-count updates on each array (measured: ~20x slower per bar in the fast kernel).
    The scalar functions below accept either form.
    """

    floor: tuple[float, ...]
    cap: tuple[float, ...]
    mmr: tuple[float, ...]
    cum: tuple[float, ...]
    max_leverage: tuple[float, ...]


@dataclass(frozen=True)
class Brackets:
    """One symbol's tiers as parallel float arrays (the form the numba functions take)."""

    symbol: str
    as_of: str
    floor: np.ndarray
    cap: np.ndarray
    mmr: np.ndarray
    max_leverage: np.ndarray
    cum: np.ndarray

    @property
    def table(self) -> BracketTable:
        """Return the tiers as a `BracketTable` (what `bot.core` takes)."""
        return BracketTable(*(tuple(float(x) for x in a) for a in (self.floor, self.cap, self.mmr, self.cum,
                                                                   self.max_leverage)))

    def tier(self, notional: float) -> int:
        """Return the 1-based tier number of ``notional``."""
        from bot.risk.tiers import bracket_index

        return bracket_index(float(notional), self.cap) + 1

    def max_leverage_at(self, notional: float) -> float:
        """Return the maximum leverage allowed for a position of ``notional``."""
        from bot.risk.tiers import bracket_index

        return float(self.max_leverage[bracket_index(float(notional), self.cap)])

    def max_notional(self, equity: float, leverage: float) -> float:
        """Return the largest notional ``N ≤ leverage·equity`` that also respects its bracket's cap."""
        from bot.risk.tiers import max_notional

        return float(max_notional(float(equity), float(leverage), self.floor, self.cap, self.max_leverage))


@lru_cache(maxsize=8)
def load_brackets(symbol: str = DEFAULT_SYMBOL, path: str | None = None) -> Brackets:
    """Return the stored brackets of ``symbol`` (unified or exchange id) from ``path``, or from the
    first bundled file (:data:`BRACKETS_FILES`) that has them.

    Raises ``KeyError`` naming the stored symbols when ``symbol`` has none.
    """
    key = exchange_symbol(symbol)
    docs = [json.loads(Path(f).read_text(encoding="utf-8")) for f in ([path] if path else BRACKETS_FILES)]
    doc = next((d for d in docs if key in d["symbols"]), None)
    if doc is None:
        stored = ", ".join(k for d in docs for k in d["symbols"])
        raise KeyError(f"no leverage brackets stored for {symbol!r}; stored: {stored}")
    tiers = sorted(doc["symbols"][key], key=lambda t: t["tier"])
    floor = np.array([t["floor"] for t in tiers], dtype=np.float64)
    mmr = np.array([t["mmr"] for t in tiers], dtype=np.float64)
    arrays = {
        "floor": floor,
        "cap": np.array([t["cap"] for t in tiers], dtype=np.float64),
        "mmr": mmr,
        "max_leverage": np.array([t["max_leverage"] for t in tiers], dtype=np.float64),
        "cum": maintenance_amounts(floor, mmr),
    }
    for a in arrays.values():
        a.setflags(write=False)
    return Brackets(symbol=key, as_of=str(doc["as_of"]), **arrays)


def brackets_for(symbol: str | None, downloaded: Path | str | None = None) -> Brackets:
    """Return ``symbol``'s brackets — from ``downloaded`` (the tiers ``cascade download`` fetched
    with ccxt's ``fetch_leverage_tiers``, current) when it has them, else the bundled files — or
    BTCUSDT's when ``symbol`` is None or has none stored.

    BTCUSDT and ETHUSDT share tiers 1–4 (notional up to 12M USDT), which covers any account the
    sample backtests can reach.
    """
    if symbol is None:
        return load_brackets(DEFAULT_SYMBOL)
    if downloaded is not None and Path(downloaded).is_file():
        try:
            return load_brackets(symbol, path=str(downloaded))
        except KeyError:
            pass
    try:
        return load_brackets(symbol)
    except KeyError:
        return load_brackets(DEFAULT_SYMBOL)
