"""Stored series as the replay exchange serves them: availability, Binance windows, aggregation.

A dataset is served only under the exchange it was stored under (``DatasetKey.exchange``): the
replay exchange for ``binanceusdm`` never serves another venue's open interest, even where a
backtest's frame loader borrows it (``[data] open_interest_source``). A symbol without stored
open interest answers ``openInterestHist`` with ``[]``, as Binance does outside its 30-day window.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bot.store import DatasetKey, Store
from bot.timeframes import timeframe_ms

EXCHANGE_ID = "binanceusdm"
_DAY_MS = 86_400_000
_WEEK_OFFSET_MS = 4 * _DAY_MS  # Binance weeks open on Monday; 1970-01-01 was a Thursday


@dataclass
class _Series:
    """Rows of one served series: open/event times, availability times, float columns."""

    times: np.ndarray        # int64 ms, increasing
    available: np.ndarray    # int64 ms: bar close (open + tf) or the event time itself
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.times)

    def window(self, now_ms: int, start: int | None, end: int | None, limit: int) -> slice:
        """Binance row selection (see module docstring) over the rows available at ``now_ms``."""
        hi = int(np.searchsorted(self.available, now_ms, side="right"))
        if end is not None:
            hi = min(hi, int(np.searchsorted(self.times, end, side="right")))
        if start is not None:
            lo = int(np.searchsorted(self.times, start, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        return slice(lo, max(lo, hi))

    def last_before(self, now_ms: int) -> int | None:
        """Index of the last row available at ``now_ms``."""
        i = int(np.searchsorted(self.available, now_ms, side="right")) - 1
        return i if i >= 0 else None


def _interval_ms(interval: str) -> int | None:
    """Fixed length of a Binance interval; ``None`` for calendar months."""
    return None if interval == "1M" else timeframe_ms(interval)


def _buckets(times: np.ndarray, interval: str) -> tuple[np.ndarray, np.ndarray]:
    """(bucket open, bucket close) per time for Binance's interval alignment."""
    if interval == "1M":
        idx = pd.to_datetime(times, unit="ms", utc=True)
        month = idx.tz_localize(None).to_period("M")
        opens = month.start_time.as_unit("ms").asi8
        closes = (month + 1).start_time.as_unit("ms").asi8
        return opens, closes
    step = timeframe_ms(interval)
    offset = _WEEK_OFFSET_MS if interval.endswith("w") else 0
    opens = (times - offset) // step * step + offset
    return opens, opens + step


def _aggregate(series: _Series, interval: str) -> _Series:
    """OHLC(V) bars of a finer series grouped into ``interval`` bars."""
    opens, closes = _buckets(series.times, interval)
    starts = np.flatnonzero(np.r_[True, opens[1:] != opens[:-1]])
    ends = np.r_[starts[1:], len(opens)] - 1
    cols: dict[str, np.ndarray] = {}
    for name, values in series.columns.items():
        if name == "open":
            cols[name] = values[starts]
        elif name == "close":
            cols[name] = values[ends]
        elif name == "high":
            cols[name] = np.maximum.reduceat(values, starts)
        elif name == "low":
            cols[name] = np.minimum.reduceat(values, starts)
        else:  # volumes
            cols[name] = np.add.reduceat(values, starts)
    return _Series(opens[starts], closes[starts], cols)


def _decimals(values: np.ndarray, limit: int = 8) -> int:
    """Fewest decimals that represent every value (to infer tick and step sizes)."""
    sample = values[np.isfinite(values)][-500:]
    for d in range(limit + 1):
        scaled = sample * 10**d
        if np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-6):
            return d
    return limit


@dataclass
class MarketSpec:
    """One served USDⓈ-M perpetual."""

    symbol: str      # unified, BTC/USDT:USDT
    id: str          # BTCUSDT
    base: str
    quote: str
    settle: str


def _market_spec(symbol: str) -> MarketSpec | None:
    """Linear perpetuals only: ``BASE/QUOTE:SETTLE`` without an expiry suffix."""
    m = re.fullmatch(r"([A-Z0-9]+)/([A-Z0-9]+):([A-Z0-9]+)", symbol)
    if not m:
        return None
    base, quote, settle = m.groups()
    return MarketSpec(symbol, f"{base}{quote}", base, quote, settle)


class MarketData:
    """Series of one exchange read from one or more stores (the first holding a dataset wins)."""

    def __init__(self, stores: Sequence[Store], exchange: str = EXCHANGE_ID) -> None:
        self.stores = list(stores)
        self.exchange = exchange
        self._keys: dict[DatasetKey, Store] = {}
        for store in self.stores:
            if store.root.is_dir():
                for key in store.keys():
                    if key.exchange == exchange:
                        self._keys.setdefault(key, store)
        self.markets: dict[str, MarketSpec] = {}
        for key in self._keys:
            spec = _market_spec(key.symbol)
            if spec is not None:
                self.markets[spec.id] = spec
        self._cache: dict[tuple[str, str, str], _Series | None] = {}
        self._lock = threading.Lock()

    def timeframes(self, symbol: str, kind: str) -> list[str]:
        return sorted((k.timeframe for k in self._keys if k.symbol == symbol and k.kind == kind),
                      key=timeframe_ms)

    def first_time_ms(self) -> int | None:
        firsts = []
        for key in self._keys:
            if key.kind in ("ohlcv", "mark"):
                s = self.series(key.symbol, key.kind, key.timeframe)
                if s is not None and len(s):
                    firsts.append(int(s.times[0]))
        return min(firsts) if firsts else None

    def _load(self, key: DatasetKey) -> _Series | None:
        store = self._keys.get(key)
        frame = store.read(key) if store is not None else None
        if frame is None:
            return None
        times = frame.index.as_unit("ms").asi8.astype(np.int64)
        step = timeframe_ms(key.timeframe) if key.kind in ("ohlcv", "mark") else 0
        cols = {c: frame[c].to_numpy(dtype=float) for c in frame.columns if c != "side"}
        return _Series(times, times + step, cols)

    def series(self, symbol: str, kind: str, timeframe: str = "") -> _Series | None:
        """The series for (symbol, kind, interval): stored, or derived from a finer stored one."""
        cache_key = (symbol, kind, timeframe)
        with self._lock:
            if cache_key in self._cache:
                return self._cache[cache_key]
        result = self._build(symbol, kind, timeframe)
        with self._lock:
            self._cache[cache_key] = result
        return result

    def _build(self, symbol: str, kind: str, timeframe: str) -> _Series | None:
        key = DatasetKey(self.exchange, symbol, kind, timeframe if kind != "funding_rate" else "")
        if key in self._keys:
            return self._load(key)
        if kind == "funding_rate":
            return None
        target = _interval_ms(timeframe) or _DAY_MS
        finer = [tf for tf in self.timeframes(symbol, kind) if target % timeframe_ms(tf) == 0 and tf != timeframe]
        if not finer:
            return None
        source = self._load(DatasetKey(self.exchange, symbol, kind, finer[-1]))
        if source is None or not len(source):
            return source
        if kind == "open_interest":  # snapshots at the coarser period's boundaries
            mask = source.times % target == 0
            return _Series(source.times[mask], source.available[mask],
                           {c: v[mask] for c, v in source.columns.items()})
        return _aggregate(source, timeframe)

    def finest(self, symbol: str, kind: str) -> _Series | None:
        tfs = self.timeframes(symbol, kind) if kind != "funding_rate" else [""]
        return self.series(symbol, kind, tfs[0]) if tfs else None

