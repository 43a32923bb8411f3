"""Build the frame contract (docs/architecture.md) from the store.

Every auxiliary series is joined by its availability time onto the bar **close**, backward
only (docs/methods.md §0.2): a bar ``[t, t+tf)`` sees funding settled in ``(t, t+tf]``, the last
open-interest snapshot taken at or before ``t+tf``, and liquidation events in ``[t, t+tf)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bot.errors import DataError, UserError
from bot.store import DatasetKey, Store
from bot.timeframes import timeframe_to_timedelta
from bot.validation import frame_problems, require_valid

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "backtests" / "sample_data"


def stores_for(data_dir: Path | str, use_sample: bool = True) -> list[Store]:
    """The user's store first, then (optionally) the bundled read-only sample."""
    stores = [Store(data_dir)]
    if use_sample and SAMPLE_DIR.is_dir() and Path(data_dir).resolve() != SAMPLE_DIR:
        stores.append(Store(SAMPLE_DIR, source="sample"))
    return stores


def _read_first(stores: list[Store], key: DatasetKey) -> pd.DataFrame | None:
    """The first store's copy of ``key``, validated (:mod:`bot.validation`): a bad row is exit 2."""
    for store in stores:
        frame = store.read(key)
        if frame is not None:
            require_valid(frame, key.kind, key.timeframe, key.exchange, str(store.path(key)),
                          "run 'cascade data-info --repair' to drop/clip such rows, or delete it and re-import")
            return frame
    return None


def check_data_dir(data_dir: Path | str, explicit: bool) -> Path:
    """``data_dir`` if usable for reading; an explicit (``--data-dir``) one must be a non-empty folder.

    Only the *default* data directory may be missing or empty (the bundled sample is the
    fallback then); a ``--data-dir`` that is missing, empty or a file is a :class:`UserError`.
    """
    path = Path(data_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"data directory {path} is a file; pass a folder to --data-dir")
    if explicit:
        if not path.is_dir():
            raise UserError(f"data directory {path} does not exist; fix --data-dir or run 'cascade download'")
        if not any(path.glob("*/*/*.parquet")):
            raise UserError(f"data directory {path} holds no datasets; fix --data-dir or run 'cascade download' "
                            "/ 'cascade import-data' into it")
    return path


def _base(symbol: str) -> str:
    return symbol.split("/")[0]


def _find_related(stores: list[Store], kind: str, base: str, exchanges: list[str]) -> list[DatasetKey]:
    """Keys of ``kind`` for the same base currency, preferring the order of ``exchanges``."""
    found: dict[tuple[str, str, str], DatasetKey] = {}
    for store in stores:
        for key in store.keys():
            if key.kind == kind and _base(key.symbol) == base and key.exchange in exchanges:
                found.setdefault((key.exchange, key.symbol, key.timeframe), key)
    return sorted(found.values(), key=lambda k: exchanges.index(k.exchange))


def join_funding(frame: pd.DataFrame, funding: pd.DataFrame, timeframe: str) -> pd.Series:
    """Funding rate settled at each bar's close (NaN elsewhere).

    A settlement at τ (floored to the second: Binance stamps a few ms late) belongs to the bar
    with ``open < τ <= close``; several settlements inside one bar are summed.
    """
    step = timeframe_to_timedelta(timeframe)
    opens = frame.index.as_unit("ns").asi8
    closes = opens + step.value
    tau = funding.index.floor("s").as_unit("ns").asi8
    pos = np.searchsorted(closes, tau, side="left")
    inside = pos < len(frame)
    inside[inside] &= opens[pos[inside]] < tau[inside]
    out = pd.Series(np.nan, index=frame.index, name="funding_rate")
    rates = funding["funding_rate"].to_numpy(dtype=float)[inside]
    if rates.size:
        summed = pd.Series(rates).groupby(pos[inside]).sum()
        out.iloc[summed.index.to_numpy()] = summed.to_numpy()
    return out


def join_asof_close(frame: pd.DataFrame, series: pd.DataFrame, columns: list[str], timeframe: str,
                    tolerance: pd.Timedelta) -> pd.DataFrame:
    """Backward as-of join of ``series`` (indexed by availability time) onto the bar closes."""
    step = timeframe_to_timedelta(timeframe)
    left = pd.DataFrame({"close_time": (frame.index + step).as_unit("ns")})
    right = series[columns].copy()
    right.index = right.index.as_unit("ns")
    right = right.rename_axis("available_at").reset_index()
    joined = pd.merge_asof(left, right, left_on="close_time", right_on="available_at",
                           direction="backward", tolerance=tolerance)
    joined.index = frame.index
    return joined[columns]


def join_liquidations(frame: pd.DataFrame, events: list[pd.DataFrame], timeframe: str) -> pd.DataFrame:
    """Per-bar realised liquidation sums (USD) by liquidated side; NaN outside the recorded span.

    Each venue's events are summed per bar (by position in ``frame``; events in bars the frame does
    not hold are dropped), zero on the bars its recording spans without an event, and the venues
    are added where at least one covers the bar.
    """
    step = timeframe_to_timedelta(timeframe).value
    opens = frame.index.as_unit("ns").asi8
    out = {"liq_long_usd": np.full(len(frame), np.nan), "liq_short_usd": np.full(len(frame), np.nan)}
    for ev in events:
        if ev.empty:
            continue
        bar = ev.index.as_unit("ns").asi8 // step * step
        covered = (opens >= bar[0]) & (opens <= bar[-1])
        pos = np.searchsorted(opens, bar).clip(max=max(len(opens) - 1, 0))
        inside = (len(opens) > 0) & (opens[pos] == bar)
        for side, col in (("long", "liq_long_usd"), ("short", "liq_short_usd")):
            values = ev["value"].where(ev["side"] == side, 0.0)[inside]
            sums = values.groupby(pos[inside]).sum()  # pandas' own summation, as per bar before
            add = np.zeros(len(frame))
            add[sums.index.to_numpy()] = sums.to_numpy()
            add[~covered] = np.nan
            have = out[col]
            out[col] = np.where(np.isnan(have), add, np.where(np.isnan(add), have, have + add))
    return pd.DataFrame(out, index=frame.index)


def load_frame(
    data_dir: Path | str,
    exchange: str,
    symbol: str,
    timeframe: str,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    use_sample: bool = True,
    open_interest_source: str | None = "hyperliquid",
) -> pd.DataFrame:
    """The frame contract for (exchange, symbol, timeframe), bars with ``start <= open < end``.

    Open interest comes from the same exchange when stored, else from ``open_interest_source``
    for the same base currency (converted to contracts at import). Realised liquidations are the
    sum over every stored venue for the base currency. Every stored series is validated
    (:func:`bot.validation.require_valid`); ``frame.attrs["data_problems"]`` lists what the frame
    lacks (:func:`bot.validation.frame_problems`: missing funding, mark prices, open interest).
    """
    step = timeframe_to_timedelta(timeframe)
    stores = stores_for(data_dir, use_sample)
    ohlcv = _read_first(stores, DatasetKey(exchange, symbol, "ohlcv", timeframe))
    if ohlcv is None:
        raise DataError(f"no {timeframe} candles stored for {exchange} {symbol} in {data_dir}; "
                        f"run 'cascade download --exchange {exchange} --symbols {symbol} --timeframe {timeframe}' "
                        "or 'cascade import-data PATH'")
    frame = ohlcv.copy()
    if start is not None:
        frame = frame[frame.index >= start]
    if end is not None:
        frame = frame[frame.index < end]
    if frame.empty:
        raise DataError(f"no {timeframe} candles for {exchange} {symbol} between {start} and {end} "
                        f"(stored: {ohlcv.index[0]} to {ohlcv.index[-1]}); change --from/--to")

    mark = _read_first(stores, DatasetKey(exchange, symbol, "mark", timeframe))
    if mark is not None:
        mark = mark.reindex(frame.index)
        for col in ("open", "high", "low", "close"):
            frame[f"mark_{col}"] = mark[col]

    funding = _read_first(stores, DatasetKey(exchange, symbol, "funding_rate"))
    if funding is not None and not funding.empty:
        frame["funding_rate"] = join_funding(frame, funding, timeframe)

    oi_exchanges = [exchange] + ([open_interest_source] if open_interest_source else [])
    oi_keys = _find_related(stores, "open_interest", _base(symbol), oi_exchanges)
    if oi_keys:
        key = min(oi_keys, key=lambda k: (oi_exchanges.index(k.exchange), k.timeframe != timeframe))
        oi = _read_first(stores, key)
        if oi is not None and not oi.empty:
            tolerance = 2 * max(step, timeframe_to_timedelta(key.timeframe))
            frame["open_interest"] = join_asof_close(frame, oi, ["open_interest"], timeframe, tolerance)[
                "open_interest"]

    exchanges_all = sorted({k.exchange for s in stores for k in s.keys()})
    liq_keys = _find_related(stores, "liquidations", _base(symbol), exchanges_all)
    if liq_keys:
        events = [e for k in liq_keys if (e := _read_first(stores, k)) is not None]
        frame[["liq_long_usd", "liq_short_usd"]] = join_liquidations(frame, events, timeframe)
    # what this frame lacks (no funding = funding not charged, ...): the runner prints these
    frame.attrs["data_problems"] = frame_problems(frame, timeframe)
    return frame
