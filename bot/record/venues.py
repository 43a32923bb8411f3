"""Several venues: open-interest history from Bybit and OKX, and per-venue frames for the summed map.

**Open-interest history** (:func:`fetch_open_interest_history`) pages ccxt's
``fetch_open_interest_history`` forward over ``[since, until)``:

* Bybit ``GET /v5/market/open-interest`` (``category=linear, intervalTime, startTime, endTime,
  limit`` ≤ 200): the endpoint walks *backwards* from ``endTime``, so each page asks for the
  window ``[t, t + limit·step)`` explicitly. The value is in the base currency for linear
  contracts (ccxt ``openInterestAmount``).
* OKX ``GET /api/v5/rubik/stat/contracts/open-interest-history`` (``instId, period, begin,
  end, limit`` ≤ 100; bounds exclusive, newest first): ccxt's window handling is used as is.
  The row is ``[ts, contracts, base, usd]``; the store gets ``contracts × contractSize``
  (base currency, like Binance's) and the USD value.

OKX serves a limited look-back per period, so download it regularly. Rows come back as the store's ``open_interest``
kind (``open_interest`` in base units, ``open_interest_value`` in USD), indexed by snapshot time.

**Venue frames** (:func:`venue_frames`): for the map over several venues, each venue needs its
own open interest and candles. A venue with its own candles at the timeframe uses them; one
without (Hyperliquid, or a venue only recorded) is run on the reference venue's candles (the
perpetuals' prices track each other within basis points), with its own open interest joined by
availability time. A venue without open interest of its own is skipped, with a note: the
estimator would fall back to volume inference and add relative magnitudes to USD ones.

Summing assumes every venue's open interest counts each contract once (one side), as Binance,
Bybit and OKX report it. Some Hyperliquid data providers document Hyperliquid's figure as
two-sided (longs + shorts); if a stored series is, halve it before summing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bot.data import join_asof_close, load_frame, stores_for
from bot.errors import UserError
from bot.store import DatasetKey, Store
from bot.timeframes import timeframe_ms, timeframe_to_timedelta

PAGE_LIMITS: dict[str, int] = {"bybit": 200, "okx": 100, "binanceusdm": 500}
OI_TIMEFRAMES: dict[str, tuple[str, ...]] = {
    "bybit": ("5m", "15m", "30m", "1h", "4h", "1d"),
    "okx": ("5m", "1h", "1d"),
    "binanceusdm": ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"),
}


def open_interest_frame(exchange: Any, symbol: str, items: Sequence[dict]) -> pd.DataFrame:
    """ccxt open-interest structures -> store rows indexed by integer ms (the exchange's order).

    ``open_interest`` is in the base currency: ccxt's ``openInterestAmount`` is in *contracts*,
    so it is multiplied by the market's contract size (0.01 BTC for OKX's BTC-USDT-SWAP, 1 for
    Binance and Bybit linear perpetuals). ``open_interest_value`` is ccxt's USD value (NaN when the
    venue does not send one, as Bybit's history).
    """
    size = float(exchange.market(symbol).get("contractSize") or 1.0)
    times, amounts, values = [], [], []
    for it in items:
        if it.get("timestamp") is None:
            continue
        amount, value = it.get("openInterestAmount"), it.get("openInterestValue")
        times.append(int(it["timestamp"]))
        amounts.append(float(amount) * size if amount is not None else np.nan)
        values.append(float(value) if value is not None else np.nan)
    return pd.DataFrame({"open_interest": amounts, "open_interest_value": values},
                        index=pd.Index(times, dtype="int64"), dtype=float)


def fetch_open_interest_history(exchange: Any, symbol: str, timeframe: str, since_ms: int, until_ms: int,
                                limit: int | None = None, max_requests: int = 100_000) -> pd.DataFrame:
    """Open-interest snapshots of ``symbol`` with ``since <= time < until`` (store columns).

    ``exchange`` is a loaded sync ccxt client (``bybit``, ``okx``, ``binanceusdm``). Pages move
    forward one window of ``limit`` periods at a time; an empty window (a hole in the venue's
    history) is stepped over, so a listing gap does not end the download early.
    """
    allowed = OI_TIMEFRAMES.get(exchange.id)
    if allowed is not None and timeframe not in allowed:
        raise UserError(f"{exchange.id} serves open-interest history at {', '.join(allowed)}, not {timeframe}")
    if not exchange.has.get("fetchOpenInterestHistory"):
        raise UserError(f"ccxt's {exchange.id} has no fetch_open_interest_history; record open interest instead")
    step = timeframe_ms(timeframe)
    limit = limit or PAGE_LIMITS.get(exchange.id, 100)
    found: dict[int, tuple[float, float]] = {}
    t = since_ms
    requests = 0
    while t < until_ms and requests < max_requests:
        window_end = min(until_ms - 1, t + limit * step - 1)
        batch = exchange.fetch_open_interest_history(symbol, timeframe, since=t, limit=limit,
                                                     params={"until": window_end})
        requests += 1
        page = open_interest_frame(exchange, symbol, batch)
        for ts, a, v in zip(page.index.tolist(), page["open_interest"], page["open_interest_value"], strict=True):
            if since_ms <= ts < until_ms:
                found[ts] = (a, v)
        t = window_end + 1
    times = sorted(found)
    frame = pd.DataFrame({"open_interest": [found[x][0] for x in times],
                          "open_interest_value": [found[x][1] for x in times]},
                         index=pd.DatetimeIndex(pd.to_datetime(times, unit="ms", utc=True), name="time"))
    return frame


def download_open_interest_history(exchange: Any, store: Store, symbol: str, timeframe: str,
                                   since: pd.Timestamp, until: pd.Timestamp) -> DatasetKey:
    """Fetch and merge into ``store`` (resuming after the last stored snapshot)."""
    key = DatasetKey(exchange.id, symbol, "open_interest", timeframe)
    last = store.last_time(key)
    start = since if last is None else max(since, last + timeframe_to_timedelta(timeframe))
    if start < until:
        frame = fetch_open_interest_history(exchange, symbol, timeframe, int(start.value // 1_000_000),
                                            int(until.value // 1_000_000))
        if len(frame):
            store.write(key, frame)
    return key


# ----------------------------------------------------------------------------- venue frames


def _keys(stores: Sequence[Store], kind: str, base: str, venue: str) -> list[DatasetKey]:
    """Stored keys of ``kind`` for ``venue`` and the base currency (first store wins)."""
    found: dict[tuple[str, str], DatasetKey] = {}
    for store in stores:
        if store.root.is_dir():
            for key in store.keys():
                if key.kind == kind and key.exchange == venue and key.symbol.split("/")[0] == base:
                    found.setdefault((key.symbol, key.timeframe), key)
    return list(found.values())


def _read(stores: Sequence[Store], key: DatasetKey) -> pd.DataFrame | None:
    for store in stores:
        frame = store.read(key)
        if frame is not None:
            return frame
    return None


def venue_frames(data_dir: Path | str, venues: Sequence[str], reference: pd.DataFrame, symbol: str, timeframe: str,
                 use_sample: bool = True, note: Callable[[str], None] = lambda s: None) -> dict[str, pd.DataFrame]:
    """Per-venue frames on ``reference``'s bars (see module docstring); venues without their own
    open interest are skipped with a ``note``."""
    stores = stores_for(data_dir, use_sample)
    base = symbol.split("/")[0]
    step = timeframe_to_timedelta(timeframe)
    start, end = reference.index[0], reference.index[-1] + step
    frames: dict[str, pd.DataFrame] = {}
    for venue in venues:
        oi_keys = _keys(stores, "open_interest", base, venue)
        if not oi_keys:
            note(f"{venue}: no open interest stored for {base}; skipped (download or record it first)")
            continue
        candles = _keys(stores, "ohlcv", base, venue)
        own = [k for k in candles if k.timeframe == timeframe]
        if own:
            frame = load_frame(data_dir, venue, own[0].symbol, timeframe, start, end, use_sample=use_sample,
                               open_interest_source=None)
        else:
            frame = reference[["open", "high", "low", "close", "volume"]
                              + [c for c in reference.columns if c.startswith("mark_") or c in
                                 ("taker_buy_volume", "funding_rate")]].copy()
            key = min(oi_keys, key=lambda k: k.timeframe != timeframe)
            oi = _read(stores, key)
            tolerance = 2 * max(step, timeframe_to_timedelta(key.timeframe))
            frame["open_interest"] = join_asof_close(frame, oi, ["open_interest"], timeframe, tolerance)["open_interest"]
            note(f"{venue}: its open interest on the reference candles (no {timeframe} candles of its own)")
        if "open_interest" not in frame.columns or not frame["open_interest"].notna().any():
            note(f"{venue}: no open interest in this range; skipped")
            continue
        frames[venue] = frame
    if not frames:
        raise UserError(f"none of {', '.join(venues)} has open interest for {base} in this range; "
                        "download it (bybit, okx: cascade download --kinds open_interest) or record it")
    return frames


def venue_liquidation_map(data_dir: Path | str, venues: Sequence[str], reference: pd.DataFrame, symbol: str,
                          timeframe: str, params: Any, positions: Sequence[int], use_sample: bool = True,
                          at: int = -1, note: Callable[[str], None] = lambda s: None
                          ) -> tuple[pd.DataFrame, Any, pd.DataFrame]:
    """``(summed features, summed snapshot, per-venue breakdown at bar position `at`)`` for
    ``cascade liqmap --venues`` (the reference frame's bars; see :mod:`strategies.features.venues`)."""
    from strategies.features.venues import multi_venue_liquidation_map

    frames = venue_frames(data_dir, venues, reference, symbol, timeframe, use_sample, note)
    maps = multi_venue_liquidation_map(frames, params, positions, reference_frame=reference)
    return maps.features, maps.snapshot, maps.breakdown(at)
