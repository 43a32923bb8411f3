"""Validation at the edge: one set of rules for every import, download and load.

A stored dataset must satisfy, per kind (columns: :mod:`bot.store`):

========================  ====================================================  =====================
rule                      holds when                                            ``--repair``
========================  ====================================================  =====================
``empty``                 the file has rows                                     (cannot repair)
``non_numeric``           number columns hold numbers                           unparsable → dropped
``duplicate_time``        times are unique (events: rows are unique)            newest row kept
``unsorted``              times increase                                        sorted
``off_grid``              candle times sit on the timeframe's grid              dropped
``far_outside``           not in the future, not before 2009, not an isolated   dropped
                          row far from the rest of the series
``price``                 prices finite and > 0                                 dropped
``low_above``             ``low ≤ min(open, close)`` (and ``low ≤ high``)       low clipped
``high_below``            ``high ≥ max(open, close)``                           high clipped
``price_spike``           close within ×5 of the median of its 11 neighbours    dropped
``volume``                volume finite and ≥ 0                                 dropped
``open_interest``         open interest (and its USD value) finite and ≥ 0      dropped
``funding``               funding rate finite                                   dropped
``funding_cap``           ``|rate| ≤`` the exchange's cap for the interval      dropped (never charged)
``liquidation``           side long/short, price > 0, amount and value ≥ 0      dropped
========================  ====================================================  =====================

:func:`check` lists the problems, :func:`repair` fixes them and says exactly what changed,
:func:`require_valid` raises a one-line :class:`DataError` (file, first bad row's time, rule,
fix). :func:`frame_problems` is the loaded frame's coverage report (missing funding, mark, open
interest), which :func:`bot.data.load_frame` puts in ``frame.attrs["data_problems"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bot.errors import DataError
from bot.timeframes import timeframe_to_timedelta

EARLIEST = pd.Timestamp("2009-01-03", tz="UTC")  # the first bitcoin block: no market data before it
FUTURE_SLACK = pd.Timedelta(days=1)
ISOLATED_STEPS = 1000            # a row this many typical spacings away from its neighbour ...
ISOLATED_MIN = pd.Timedelta(days=30)  # ... and at least this far is a stray row, not history
SPIKE_FACTOR = 5.0
SPIKE_WINDOW = 11

# Largest |funding rate| per settlement the exchange applies to any symbol, by interval (hours).
# Binance USDⓈ-M: the largest ``adjustedFundingRateCap`` it lists is 3 % (most symbols are capped
# much tighter, e.g. 0.75 × first-tier maintenance margin); Hyperliquid caps funding at 4 %/hour.
# A rate beyond these cannot have been charged on that exchange: it is flagged, never charged.
FUNDING_CAPS: dict[str, dict[int, float]] = {
    "binanceusdm": {1: 0.03, 2: 0.03, 4: 0.03, 8: 0.03},
    "hyperliquid": {1: 0.04},
}
DEFAULT_FUNDING_CAP = 0.03  # exchanges not listed

PRICE_COLUMNS = {"ohlcv": ("open", "high", "low", "close"), "mark": ("open", "high", "low", "close"),
                 "funding_rate": ("mark_price",), "liquidations": ("price",), "open_interest": ()}
NUMBER_COLUMNS = {"ohlcv": ("open", "high", "low", "close", "volume", "taker_buy_volume"),
                  "mark": ("open", "high", "low", "close"), "funding_rate": ("funding_rate", "mark_price"),
                  "open_interest": ("open_interest", "open_interest_value"),
                  "liquidations": ("price", "amount", "value")}
CANDLE_KINDS = frozenset({"ohlcv", "mark"})  # open interest: snapshots at availability times, any time

_TEXT = {
    "empty": ("has no rows", "re-import or re-download it"),
    "non_numeric": ("holds a value that is not a number", "fix the source file"),
    "duplicate_time": ("has a repeated time", "keep one row per time"),
    "unsorted": ("has times out of order", "sort the rows by time"),
    "off_grid": ("has a time off the timeframe's grid", "fix the timestamps or the timeframe"),
    "far_outside": ("has a row far outside the dataset's range (future, before 2009 or isolated)",
                    "remove the stray row"),
    "price": ("has a price that is not finite and > 0", "remove or correct the row"),
    "low_above": ("has low > min(open, close)", "correct the low"),
    "high_below": ("has high < max(open, close)", "correct the high"),
    "price_spike": ("has a close more than 5x away from its neighbours", "remove or correct the row"),
    "volume": ("has a volume that is negative or not finite", "remove or correct the row"),
    "open_interest": ("has open interest that is negative or not finite", "remove or correct the row"),
    "funding": ("has a funding rate that is not finite", "remove or correct the row"),
    "funding_cap": ("has a funding rate beyond the exchange's cap for its interval",
                    "correct the rate (it is not charged)"),
    "liquidation": ("has a liquidation with an unknown side or a bad price/amount", "remove the row"),
}
RULES: tuple[str, ...] = tuple(_TEXT)


@dataclass(frozen=True)
class Problem:
    """One rule broken by ``count`` rows; ``time`` is the first offending row's time."""

    rule: str
    count: int
    time: pd.Timestamp | None = None
    detail: str = ""

    def describe(self) -> str:
        when = f" at {self.time.isoformat()}" if self.time is not None else ""
        extra = f", {self.detail}" if self.detail else ""
        return f"{_TEXT[self.rule][0]}{when} ({self.count} row{'s' if self.count != 1 else ''}{extra})"


def funding_cap(exchange: str, interval: pd.Timedelta) -> float:
    """The largest |rate| per settlement ``exchange`` can charge at funding ``interval``."""
    hours = max(1, round(interval / pd.Timedelta(hours=1)))
    caps = FUNDING_CAPS.get(exchange)
    if caps:
        return caps.get(hours, max(caps.values()))
    return DEFAULT_FUNDING_CAP


def _typical_spacing(index: pd.DatetimeIndex, timeframe: str) -> pd.Timedelta:
    if timeframe:
        return timeframe_to_timedelta(timeframe)
    diffs = np.diff(np.sort(index.as_unit("ns").asi8))
    diffs = diffs[diffs > 0]
    return pd.Timedelta(int(np.median(diffs)), "ns") if diffs.size else pd.Timedelta(hours=8)


def _numbers(frame: pd.DataFrame, kind: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The numeric columns of ``kind`` as floats, and which rows hold text that is not a number."""
    num: dict[str, np.ndarray] = {}
    bad_number = np.zeros(len(frame), bool)
    for col in NUMBER_COLUMNS.get(kind, ()):
        if col in frame.columns:
            raw = frame[col]
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
            if not pd.api.types.is_numeric_dtype(raw):
                bad_number |= np.isnan(values) & raw.notna().to_numpy()
            num[col] = values
    return num, bad_number


def _far_outside(idx: pd.DatetimeIndex, timeframe: str, now: pd.Timestamp) -> np.ndarray:
    """Rows stamped in the far future or past, or isolated far from every other row."""
    ns = idx.as_unit("ns").asi8
    far = (ns > (now + FUTURE_SLACK).value) | (ns < EARLIEST.value)
    if len(ns) >= 3:
        order = np.argsort(ns, kind="stable")
        s = ns[order]
        gap_prev = np.r_[np.iinfo(np.int64).max, np.diff(s)]
        gap_next = np.r_[np.diff(s), np.iinfo(np.int64).max]
        limit = max(ISOLATED_STEPS * _typical_spacing(idx, timeframe), ISOLATED_MIN).value
        iso = np.zeros(len(ns), bool)
        iso[order] = np.minimum(gap_prev, gap_next) > limit
        far |= iso
    return far


def _price_spikes(c: np.ndarray) -> np.ndarray:
    """Closes more than :data:`SPIKE_FACTOR` away from the median of their centred window.

    The rolling median is the slow part (~17 ms on a year of 5m bars), and clean data has no
    candidate: with every close positive, the median lies between the window's minimum and maximum,
    so only a close above ``SPIKE_FACTOR ×`` the minimum or below the maximum ``/ SPIKE_FACTOR``
    can be a spike. The median is computed only when such a close exists (or a close is not positive).
    """
    def window() -> Any:
        return pd.Series(c).rolling(SPIKE_WINDOW, center=True, min_periods=3)

    with np.errstate(invalid="ignore"):
        if len(c) and np.all(c > 0):
            slack = 1 + 1e-9  # the candidate test must not lose a spike to rounding
            low, high = window().min().to_numpy(), window().max().to_numpy()
            if not np.any((c * slack > SPIKE_FACTOR * low) | (c < slack * high / SPIKE_FACTOR)):
                return np.zeros(len(c), bool)
        ratio = c / window().median().to_numpy()
        return (ratio > SPIKE_FACTOR) | (ratio < 1 / SPIKE_FACTOR)


def _candle_masks(num: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OHLC consistency and price spikes (a close 5x away from its neighbours' median)."""
    o, h, lo, c = num["open"], num["high"], num["low"], num["close"]
    with np.errstate(invalid="ignore"):
        return {"low_above": (lo > np.minimum(o, c)) | (lo > h), "high_below": h < np.maximum(o, c),
                "price_spike": _price_spikes(c)}


def _nonnegative(num: dict[str, np.ndarray], required: tuple[str, ...], optional: tuple[str, ...], n: int,
                 positive: tuple[str, ...] = ()) -> np.ndarray:
    """Rows where a ``required`` column is missing/negative, an ``optional`` one negative, or a
    ``positive`` one not > 0 (NaN in an optional column = not recorded by that source)."""
    bad = np.zeros(n, bool)
    for col in required:
        if col in num:
            bad |= ~(np.isfinite(num[col]) & (num[col] >= 0))
    for col in optional:
        if col in num:
            bad |= np.isfinite(num[col]) & (num[col] < 0)
    for col in positive:
        if col in num:
            bad |= ~(np.isfinite(num[col]) & (num[col] > 0))
    return bad


def _masks(frame: pd.DataFrame, kind: str, timeframe: str, exchange: str,
           now: pd.Timestamp) -> dict[str, np.ndarray]:
    """Per-row boolean masks of the value rules (True = the row breaks the rule)."""
    n = len(frame)
    idx = pd.DatetimeIndex(frame.index)
    num, bad_number = _numbers(frame, kind)
    out: dict[str, np.ndarray] = {"non_numeric": bad_number, "far_outside": _far_outside(idx, timeframe, now)}
    if kind in CANDLE_KINDS and timeframe:
        out["off_grid"] = idx.as_unit("ns").asi8 % timeframe_to_timedelta(timeframe).value != 0
    prices = [num[c] for c in PRICE_COLUMNS.get(kind, ()) if c in num]
    if prices:
        bad = np.zeros(n, bool)
        for p in prices:
            bad |= ~(np.isfinite(p) & (p > 0)) if kind != "funding_rate" else (np.isfinite(p) & (p <= 0))
        out["price"] = bad & ~bad_number
    if kind in ("ohlcv", "mark") and all(c in num for c in ("open", "high", "low", "close")):
        out.update(_candle_masks(num))
    if kind == "ohlcv":
        out["volume"] = _nonnegative(num, ("volume",), ("taker_buy_volume",), n) & ~bad_number
    if kind == "open_interest":
        out["open_interest"] = _nonnegative(num, ("open_interest",), ("open_interest_value",), n) & ~bad_number
    if kind == "funding_rate" and "funding_rate" in num:
        r = num["funding_rate"]
        out["funding"] = ~np.isfinite(r) & ~bad_number
        cap = funding_cap(exchange, _typical_spacing(idx, ""))
        with np.errstate(invalid="ignore"):
            out["funding_cap"] = np.abs(r) > cap + 1e-12
    if kind == "liquidations":
        side_ok = frame["side"].isin(["long", "short"]).to_numpy() if "side" in frame else np.zeros(n, bool)
        out["liquidation"] = (~side_ok | _nonnegative(num, ("amount", "value"), (), n, ("price",))) & ~bad_number
    return out


def far_outside_mask(frame: pd.DataFrame, kind: str, timeframe: str = "",
                     now: pd.Timestamp | None = None) -> np.ndarray:
    """Rows in the future, before 2009, or isolated far from the rest (rule ``far_outside``)."""
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    return _masks(frame, kind, timeframe, "", now)["far_outside"]


def _structure(frame: pd.DataFrame, kind: str) -> tuple[np.ndarray, int]:
    """(duplicate mask, number of out-of-order steps)."""
    idx = pd.DatetimeIndex(frame.index)
    if kind == "liquidations":
        dup = frame.reset_index().duplicated().to_numpy()
    else:
        dup = idx.duplicated(keep="last")
    ns = idx.as_unit("ns").asi8
    unsorted = int((np.diff(ns) < 0).sum()) if len(ns) > 1 else 0
    return dup, unsorted


def check(frame: pd.DataFrame, kind: str, timeframe: str = "", exchange: str = "",
          now: pd.Timestamp | None = None) -> list[Problem]:
    """Every rule ``frame`` (``time`` index, a store kind's columns) breaks, in table order."""
    if frame.empty:
        return [Problem("empty", 0)]
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    idx = pd.DatetimeIndex(frame.index)
    problems: list[Problem] = []
    dup, unsorted = _structure(frame, kind)
    masks = _masks(frame, kind, timeframe, exchange, now)
    for rule in ("non_numeric", "far_outside"):  # first: they explain the structural problems below
        mask = masks.pop(rule)
        if mask.any():
            problems.append(_problem(rule, mask, idx, frame))
    if dup.any():
        problems.append(_problem("duplicate_time", dup, idx, frame))
    if unsorted:
        at = int(np.flatnonzero(np.diff(idx.as_unit("ns").asi8) < 0)[0]) + 1
        problems.append(Problem("unsorted", unsorted, idx[at]))
    for rule in RULES:
        mask = masks.get(rule)
        if mask is not None and mask.any():
            problems.append(_problem(rule, mask, idx, frame))
    return problems


def _problem(rule: str, mask: np.ndarray, idx: pd.DatetimeIndex, frame: pd.DataFrame) -> Problem:
    first = int(np.flatnonzero(mask)[0])
    row = frame.iloc[first]
    shown = ", ".join(f"{k}={row[k]}" for k in frame.columns[:6] if k not in ("side",))
    return Problem(rule, int(mask.sum()), idx[first], f"first row: {shown}" if shown else "")


def repair(frame: pd.DataFrame, kind: str, timeframe: str = "", exchange: str = "",
           now: pd.Timestamp | None = None) -> tuple[pd.DataFrame, list[str]]:
    """``frame`` with every problem fixed (see the module table) and one line per change made."""
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    report: list[str] = []
    out = frame.copy()
    for col in NUMBER_COLUMNS.get(kind, ()):
        if col in out.columns and not pd.api.types.is_numeric_dtype(out[col]):
            values = pd.to_numeric(out[col], errors="coerce")
            bad = values.isna() & out[col].notna()
            if bad.any():
                report.append(_dropped("non_numeric", out.index[bad.to_numpy()]))
            out = out[~bad.to_numpy()]
            out[col] = values[~bad].astype(float)
    far = _masks(out, kind, timeframe, exchange, now)["far_outside"]
    if far.any():
        report.append(_dropped("far_outside", out.index[far]))
        out = out[~far]
    dup, unsorted = _structure(out, kind)
    if dup.any():
        report.append(f"{_what('duplicate_time')}: kept the newest of each, dropped {int(dup.sum())} rows "
                      f"(first {out.index[dup][0].isoformat()})")
        out = out[~dup]
    if unsorted:
        report.append(f"{_what('unsorted')}: sorted {len(out)} rows by time")
        out = out.sort_index(kind="stable")
    for rule in ("off_grid", "price", "price_spike", "volume", "open_interest", "funding",
                 "funding_cap", "liquidation"):
        mask = _masks(out, kind, timeframe, exchange, now).get(rule)
        if mask is not None and mask.any():
            report.append(_dropped(rule, out.index[mask]))
            out = out[~mask]
    if kind in ("ohlcv", "mark") and len(out):
        body_lo = np.minimum(out["open"], out["close"])
        body_hi = np.maximum(out["open"], out["close"])
        high_bad = out["high"] < body_hi
        if high_bad.any():
            report.append(_clipped("high_below", out.index[high_bad.to_numpy()], "high raised to max(open, close)"))
            out.loc[high_bad, "high"] = body_hi[high_bad]
        low_bad = (out["low"] > body_lo) | (out["low"] > out["high"])
        if low_bad.any():
            report.append(_clipped("low_above", out.index[low_bad.to_numpy()], "low lowered to min(open, close)"))
            out.loc[low_bad, "low"] = np.minimum(body_lo[low_bad], out["high"][low_bad])
    return out, report


def _times(times: pd.DatetimeIndex) -> str:
    shown = ", ".join(t.isoformat() for t in times[:3])
    return shown + (f" and {len(times) - 3} more" if len(times) > 3 else "")


def _what(rule: str) -> str:
    text = _TEXT[rule][0].removeprefix("has ")
    return text.removeprefix("a ").removeprefix("an ")


def _dropped(rule: str, times: pd.DatetimeIndex) -> str:
    return f"{_what(rule)}: dropped {len(times)} rows ({_times(times)})"


def _clipped(rule: str, times: pd.DatetimeIndex, what: str) -> str:
    return f"{_what(rule)}: {what} on {len(times)} rows ({_times(times)})"


def error_line(origin: str, problem: Problem, fix: str | None = None) -> str:
    """``<origin> <rule> at <time> (...); <fix>`` — the one line a user sees."""
    return f"{origin} {problem.describe()}; {fix or _TEXT[problem.rule][1]}"


def require_valid(frame: pd.DataFrame, kind: str, timeframe: str, exchange: str, origin: str,
                  fix: str) -> None:
    """Raise :class:`DataError` naming ``origin``, the first problem and ``fix`` (``""`` = the rule's)."""
    problems = check(frame, kind, timeframe, exchange)
    if problems:
        p = problems[0]
        more = f" (and {len(problems) - 1} more rule{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise DataError(f"{origin} {p.describe()}{more}; {fix or _TEXT[p.rule][1]}")


def frame_problems(frame: pd.DataFrame, timeframe: str) -> list[str]:
    """Coverage warnings for a loaded frame: funding, mark prices, open interest (one line each).

    Funding is "always charged" only where funding data exists: a frame without ``funding_rate``,
    or whose funding stops before its last bar or starts after its first, gets a warning naming the
    uncharged span.
    """
    out: list[str] = []
    if frame.empty:
        return out
    step = timeframe_to_timedelta(timeframe)
    first, last = frame.index[0], frame.index[-1] + step
    if "funding_rate" not in frame.columns or not frame["funding_rate"].notna().any():
        out.append(f"no funding data from {first.isoformat()} to {last.isoformat()}: funding is NOT charged")
    else:
        settled = frame.index[frame["funding_rate"].notna().to_numpy()]
        spacing = pd.Series(settled).diff().median() if len(settled) > 1 else pd.Timedelta(hours=8)
        if settled[0] - first > 2 * spacing:
            out.append(f"no funding data from {first.isoformat()} to {settled[0].isoformat()}: "
                       "funding is NOT charged there")
        if last - (settled[-1] + step) > 2 * spacing:
            out.append(f"no funding data from {(settled[-1] + step).isoformat()} to {last.isoformat()}: "
                       "funding is NOT charged there")
        gaps = np.diff(settled.as_unit("ns").asi8)
        n_gaps = int((gaps > 2 * spacing.value).sum())
        if n_gaps:
            out.append(f"funding data has {n_gaps} gap(s) longer than two intervals: funding is NOT charged there")
    if "mark_close" not in frame.columns:
        out.append("no mark prices: own liquidation is checked on last prices")
    elif frame["mark_close"].isna().any():
        out.append(f"mark prices missing on {int(frame['mark_close'].isna().sum())} bars: "
                   "own liquidation uses last prices there")
    if "open_interest" not in frame.columns:
        out.append("no open interest: liquidation-map features are empty")
    else:
        missing = float(frame["open_interest"].isna().mean())
        if missing > 0:
            out.append(f"open interest missing on {missing:.0%} of bars")
    return out
