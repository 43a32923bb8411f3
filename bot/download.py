"""Downloading market data through ccxt into the store, resumably.

One dataset per (symbol, kind): candles (``fetch_ohlcv``), mark-price candles
(``fetch_mark_ohlcv``), funding history (``fetch_funding_rate_history``) and open-interest
history (``fetch_open_interest_history``, stored as contracts plus USD value).

How it pages and why:

* We page ourselves from ``since`` with an explicit ``until`` on every request
  (``[cursor, cursor + limit × step)``), never with ccxt's ``paginate`` (it anchors on the wall
  clock, docs/binance-usdm.md §0.8). A window holding at most ``limit`` rows gives the same
  answer whether an endpoint returns the oldest or the newest rows of a range; an empty window
  (an outage, or the years before a listing) is stepped over, in one 1-row probe where the
  endpoint is documented to return the oldest rows first (Binance klines and funding).
* Each page is validated (:mod:`bot.validation`: bad rows dropped or clipped, each change
  reported) and written to the store as it arrives (atomic, merged, de-duplicated), so an
  interrupted run loses at most one page. Ranges a page found empty are recorded beside the
  dataset (``.<file>.empty.json``): a re-run fetches only what is neither proven by stored rows
  nor known to be empty, so an interior gap (rows lost, or never fetched) is refilled, a gap the
  exchange really has is asked once and then reported, and known-empty history (years before a
  listing, open interest older than the exchange keeps) costs no request. Emptiness within the
  last hour of the exchange's clock is not remembered (statistics are published late), so a
  re-run with nothing new makes at most one data request per kind.
* Funding is paged by rows on endpoints that return the oldest rows first (Binance): one request
  for ``limit`` settlements, not a window of ``limit`` hours.
* Only what is final is stored: candles that have closed by the exchange's clock
  (``fetch_time``), funding that has settled, snapshots that were taken. Stamps are availability
  times with no lag added: funding at its settlement time, open interest at its snapshot time
  (Binance ``openInterestHist`` is a snapshot at ``timestamp``).
* Transient failures are retried with exponential backoff up to ``max_retries``:
  ``ccxt.OperationFailed``, i.e. every ``NetworkError`` (429 → DDoSProtection/RateLimitExceeded,
  5xx → ExchangeNotAvailable, timeouts, dropped connections) plus Binance's
  "internal error, try again" replies. ``Retry-After`` is honoured when it is longer.
* Every page is merged under the dataset's lock (:meth:`bot.store.Store.write`), so any number of
  downloads, imports and readers may share a store; temporaries of killed writers are swept there.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ccxt
import numpy as np
import pandas as pd

from bot.atomic import atomic_write_text
from bot.errors import UserError
from bot.record.venues import open_interest_frame
from bot.risk.brackets import DOWNLOADED_FILE
from bot.store import EVENT_KINDS, DatasetInfo, DatasetKey, Store, subtract_ranges, validate_series
from bot.timeframes import timeframe_ms
from bot.validation import repair

# kind -> the ccxt capability (``exchange.has``) it needs
KIND_METHODS: dict[str, str] = {
    "ohlcv": "fetchOHLCV",
    "mark": "fetchMarkOHLCV",
    "funding_rate": "fetchFundingRateHistory",
    "open_interest": "fetchOpenInterestHistory",
}
DOWNLOADABLE_KINDS: tuple[str, ...] = tuple(KIND_METHODS)
_KNOWN_KINDS = (*DOWNLOADABLE_KINDS, "liquidations")

# Rows per request, by exchange and kind (the endpoints' maxima as ccxt passes them).
PAGE_LIMITS: dict[str, dict[str, int]] = {
    "binanceusdm": {"ohlcv": 1000, "mark": 1000, "funding_rate": 1000, "open_interest": 500},
    "bybit": {"ohlcv": 1000, "mark": 1000, "funding_rate": 200, "open_interest": 200},
    "okx": {"ohlcv": 100, "mark": 100, "funding_rate": 100, "open_interest": 100},
}
DEFAULT_PAGE_LIMIT = 100
_OLDEST_FIRST_EXCHANGES = frozenset({"binanceusdm", "binance", "binancecoinm"})
_MIN_FUNDING_INTERVAL_MS = 3_600_000  # no exchange settles funding more often than hourly
_MAX_BACKOFF_SECONDS = 300.0
_SETTLE_MARGIN_MS = 3_600_000  # empty answers younger than this (by the exchange's clock) are not remembered
_PROBLEMS = {
    "duplicates": "rows the exchange sent twice (stored once)",
    "out_of_order": "rows the exchange sent out of order (stored sorted)",
    "gaps": "gaps: bars missing in the stored range (the exchange has none there)",
    "misaligned": "times off the timeframe grid",
}


class ProgressSink(Protocol):
    """Where progress goes (a rich progress bar in the CLI; nothing by default)."""

    def begin(self, label: str, total: int) -> Any: ...

    def update(self, task: Any, completed: int, rows: int) -> None: ...

    def end(self, task: Any) -> None: ...


class _NoProgress:
    def begin(self, label: str, total: int) -> Any:
        return None

    def update(self, task: Any, completed: int, rows: int) -> None:
        pass

    def end(self, task: Any) -> None:
        pass


@dataclass
class DatasetResult:
    """What happened to one (symbol, kind)."""

    key: DatasetKey
    rows_fetched: int = 0
    requests: int = 0
    skipped: str | None = None              # why nothing was fetched (unsupported, rejected)
    issues: dict[str, int] = field(default_factory=dict)  # duplicates/out_of_order fetched, gaps stored
    repairs: list[str] = field(default_factory=list)      # rows dropped/clipped by validation
    info: DatasetInfo | None = None         # the stored dataset afterwards


@dataclass
class DownloadReport:
    results: list[DatasetResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def written(self) -> list[DatasetInfo]:
        return [r.info for r in self.results if r.info is not None and r.skipped is None]


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def _is_supported(exchange: ccxt.Exchange, method: str) -> bool:
    return bool(exchange.has.get(method))


def covered_by_rows(times: np.ndarray, kind: str, step: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ms ranges that rows at ``times`` (ms) prove complete: runs without a gap.

    Bars and snapshots: consecutive rows one ``step`` apart. Funding: consecutive settlements at
    most 1.5 typical intervals apart. A gap between runs is fetched again by the next download
    unless a download recorded it as known-empty (then it is reported as a gap the exchange has).
    """
    t = np.unique(np.asarray(times, dtype=np.int64))
    if not len(t):
        return []
    if kind == "funding_rate":
        spacing = int(np.median(np.diff(t))) if len(t) > 1 else 8 * 3_600_000
        joined, end_pad = np.diff(t) <= 1.5 * spacing, 1
    else:
        joined, end_pad = np.diff(t) == step, step
    starts = np.r_[0, np.flatnonzero(~joined) + 1]
    ends = np.r_[np.flatnonzero(~joined), len(t) - 1]
    return [(int(t[a]), int(t[b]) + end_pad) for a, b in zip(starts, ends, strict=True)]


def close_symbols(symbol: str, markets: Iterable[str], n: int = 5) -> list[str]:
    """Market symbols resembling ``symbol`` (``BTC/USDT`` -> ``BTC/USDT:USDT`` first)."""
    names = list(markets)
    upper = symbol.upper()
    exact_prefix = [m for m in names if m.split(":")[0] == upper.split(":")[0]]
    by_ratio = difflib.get_close_matches(upper, names, n=n, cutoff=0.6)
    return list(dict.fromkeys(exact_prefix + by_ratio))[:n]


class Downloader:
    """Pages ccxt's history endpoints into a :class:`Store` (see the module docstring)."""

    def __init__(
        self,
        exchange: ccxt.Exchange,
        store: Store,
        *,
        max_retries: int = 6,
        backoff_seconds: float = 1.0,
        page_limit: int | None = None,
        progress: ProgressSink | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.exchange = exchange
        self.store = store
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.page_limit = page_limit
        self.progress = progress or _NoProgress()
        self.sleep = sleep
        self.requests = 0

    # -- plumbing

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with retries on transient failures (exponential backoff)."""
        for attempt in range(self.max_retries + 1):
            self.requests += 1
            try:
                return fn(*args, **kwargs)
            except ccxt.OperationFailed as err:
                if attempt >= self.max_retries:
                    raise UserError(
                        f"{self.exchange.id} {what} still failing after {self.max_retries} retries "
                        f"({type(err).__name__}: {str(err)[:160]}); re-run to resume, stored pages are kept"
                    ) from None
                delay = min(self.backoff_seconds * 2**attempt, _MAX_BACKOFF_SECONDS)
                if isinstance(err, ccxt.DDoSProtection):
                    headers = getattr(self.exchange, "last_response_headers", None) or {}
                    try:
                        delay = max(delay, min(float(headers.get("Retry-After", 0)), _MAX_BACKOFF_SECONDS))
                    except (TypeError, ValueError):
                        pass
                self.sleep(delay)
        raise AssertionError("unreachable")

    def page_size(self, kind: str) -> int:
        if self.page_limit:
            return self.page_limit
        return PAGE_LIMITS.get(self.exchange.id, {}).get(kind, DEFAULT_PAGE_LIMIT)

    def _server_now_ms(self) -> int:
        """The exchange's clock (the replay clock against the replay server), else the wall clock."""
        if _is_supported(self.exchange, "fetchTime"):
            try:
                value = self._call("fetch_time", self.exchange.fetch_time)
                if value:
                    return int(value)
            except ccxt.NotSupported:
                pass
        return self.exchange.milliseconds()

    # -- checks

    def check_symbols(self, symbols: Sequence[str]) -> None:
        markets = self.exchange.markets or {}
        for symbol in symbols:
            if symbol not in markets:
                close = close_symbols(symbol, markets)
                hint = f"; did you mean {', '.join(close)}?" if close else "; use ccxt unified symbols like BTC/USDT:USDT"
                raise UserError(f"unknown symbol '{symbol}' on {self.exchange.id}{hint}")

    def supported_kinds(self, kinds: Sequence[str], warnings: list[str]) -> list[str]:
        unknown = [k for k in kinds if k not in _KNOWN_KINDS]
        if unknown:
            raise UserError(f"unknown data kind(s) {', '.join(unknown)}; use some of {', '.join(DOWNLOADABLE_KINDS)}")
        ok = []
        for kind in dict.fromkeys(kinds):
            if kind == "liquidations":
                warnings.append("skipping liquidations: no exchange serves their history over REST; "
                                "use cascade record or import-data")
            elif not _is_supported(self.exchange, KIND_METHODS[kind]):
                warnings.append(f"skipping {kind}: {self.exchange.id} does not support {KIND_METHODS[kind]}")
            else:
                ok.append(kind)
        return ok

    # -- the run

    def run(self, symbols: Sequence[str], timeframe: str, kinds: Sequence[str], since: pd.Timestamp,
            until: pd.Timestamp | None = None) -> DownloadReport:
        """Fetch what is missing of every (symbol, kind) in ``[since, until)``; ``until=None`` = now."""
        report = DownloadReport()
        if until is not None and since >= until:
            raise UserError(f"--since {since.isoformat()} is not before --until {until.isoformat()}")
        kinds_ok = self.supported_kinds(kinds, report.warnings)
        if not kinds_ok:
            raise UserError(f"nothing to download: {'; '.join(report.warnings)}")
        step = timeframe_ms(timeframe)
        timeframes = getattr(self.exchange, "timeframes", None) or {}
        if timeframes and timeframe not in timeframes:
            raise UserError(f"{self.exchange.id} has no '{timeframe}' timeframe; use one of {', '.join(timeframes)}")
        try:
            self._call("load_markets", self.exchange.load_markets)
        except ccxt.BaseError as err:
            raise UserError(f"cannot load {self.exchange.id} markets ({type(err).__name__}: {str(err)[:200]})") from None
        self.check_symbols(symbols)
        now = self._server_now_ms()
        since_ms = _ms(since)
        until_ms = _ms(until) if until is not None else now + 1
        for symbol in symbols:
            for kind in kinds_ok:
                key = DatasetKey(self.exchange.id, symbol, kind, "" if kind in EVENT_KINDS else timeframe)
                result = DatasetResult(key)
                report.results.append(result)
                try:
                    self._download(result, step, since_ms, until_ms, now)
                except (ccxt.NotSupported, ccxt.ExchangeError) as err:
                    # a rejected request for this dataset only (e.g. a period the endpoint lacks)
                    result.skipped = f"{type(err).__name__}: {str(err)[:200]}"
                    report.warnings.append(f"skipping {symbol} {kind}: {result.skipped}")
                if result.repairs:
                    report.warnings.extend(f"{symbol} {kind}: {line}" for line in result.repairs)
                if self.store.exists(key):
                    result.info = self.store.info(key)
                    self._validate(result, report.warnings)
                elif result.skipped is None:
                    end = until.isoformat() if until is not None else "now"
                    report.warnings.append(f"{symbol} {kind}: {self.exchange.id} returned no rows from "
                                           f"{since.isoformat()} to {end}")
        if all(r.skipped for r in report.results):
            raise UserError(f"nothing could be downloaded: {'; '.join(report.warnings)}")
        return report

    def _validate(self, result: DatasetResult, warnings: list[str]) -> None:
        """Gaps/misalignment of the stored series (duplicates/out-of-order were counted while fetching)."""
        stored = self.store.read(result.key)
        assert stored is not None
        checks = validate_series(stored, result.key.timeframe)
        result.issues.update({k: checks[k] for k in ("gaps", "misaligned")})
        problems = [f"{v} {_PROBLEMS[k]}" for k, v in result.issues.items() if v]
        if problems:
            k = result.key
            warnings.append(f"{k.symbol} {k.kind}{' ' + k.timeframe if k.timeframe else ''}: {'; '.join(problems)}")

    def _download(self, result: DatasetResult, step: int, since_ms: int, until_ms: int, now: int) -> None:
        key = result.key
        bars = key.kind in ("ohlcv", "mark")
        # rows must be final by the exchange's clock: closed bars, past events
        hi = min(until_ms, now - step + 1) if bars else min(until_ms, now + 1)
        stored = self.store.read(key)
        # what is known: runs of stored rows, and ranges an earlier download found empty
        rows_ms = stored.index.as_unit("ms").asi8 if stored is not None else np.empty(0, np.int64)
        covered = self.store.known_empty(key) + covered_by_rows(rows_ms, key.kind, step)
        ranges = subtract_ranges((since_ms, hi), covered) if since_ms < hi else []
        # an exchange may publish the last rows late (open-interest statistics, a settlement):
        # emptiness this close to its clock is not remembered, so the next run asks again
        settled = now - max(2 * step, _SETTLE_MARGIN_MS)
        label = f"{key.symbol} {key.kind}{' ' + key.timeframe if key.timeframe else ''}"
        total = sum(h - lo for lo, h in ranges)
        task = self.progress.begin(label, max(total, 1))
        fetched_times: list[np.ndarray] = []
        done = 0
        try:
            for lo, h in ranges:
                page_lo = lo
                for cursor, times in self._pages(key, step, lo, h, result):
                    fetched_times.append(times)
                    result.rows_fetched += len(times)
                    # the page's range minus its rows: the exchange has nothing there
                    seen = (page_lo, min(cursor, h, settled))
                    self.store.add_known_empty(key, subtract_ranges(seen, covered_by_rows(times, key.kind, step)))
                    page_lo = max(page_lo, min(cursor, h))
                    self.progress.update(task, done + min(cursor, h) - lo, result.rows_fetched)
                done += h - lo
                self.progress.update(task, done, result.rows_fetched)
        finally:
            self.progress.end(task)
        if fetched_times:
            raw = pd.DataFrame(index=pd.to_datetime(np.concatenate(fetched_times), unit="ms", utc=True))
            checks = validate_series(raw, key.timeframe)
            result.issues.update({k: checks[k] for k in ("duplicates", "out_of_order")})

    def _pages(self, key: DatasetKey, step: int, lo: int, hi: int,
               result: DatasetResult | None = None) -> Iterable[tuple[int, np.ndarray]]:
        """Fetch and store ``[lo, hi)`` page by page; yields (next cursor, fetched times) per page.

        Funding on an oldest-first endpoint is paged by rows (``[cursor, hi)`` with ``limit`` rows;
        fewer rows than asked = the range is done); everything else in windows of ``limit`` steps.
        Each page is validated (:func:`bot.validation.repair`) before it is stored; what the repair
        dropped or clipped is recorded in ``result.repairs``.
        """
        limit = self.page_size(key.kind)
        by_rows = key.kind == "funding_rate" and self._oldest_first(key.kind)
        span = limit * (_MIN_FUNDING_INTERVAL_MS if key.kind == "funding_rate" else step)
        increment = 1 if key.kind == "funding_rate" else step
        cursor = lo
        while cursor < hi:
            window_end = hi - 1 if by_rows else min(cursor + span - 1, hi - 1)
            frame = self._fetch(key, cursor, limit, window_end)
            returned = len(frame)
            times = frame.index.to_numpy(dtype=np.int64)
            frame = frame[(times >= lo) & (times < hi)]
            raw_times = frame.index.to_numpy(dtype=np.int64)
            if len(frame):
                frame.index = pd.to_datetime(frame.index, unit="ms", utc=True).rename("time")
                frame, changes = repair(frame, key.kind, key.timeframe, key.exchange)
                if changes and result is not None:
                    result.repairs.extend(changes)
                if len(frame):
                    self.store.write(key, frame)
                nxt = int(raw_times.max()) + increment
                if by_rows and returned < limit:
                    nxt = hi  # fewer rows than asked for: nothing more in [cursor, hi)
            elif by_rows:
                nxt = hi
            elif window_end + 1 < hi and self._oldest_first(key.kind):
                found = self._first_time_in(key, window_end + 1, hi - 1)
                if found is None:  # nothing left in the range
                    yield hi, raw_times
                    return
                nxt = max(found, window_end + 1)
            else:
                nxt = window_end + 1
            cursor = nxt if nxt > cursor else window_end + 1
            yield cursor, raw_times

    def _oldest_first(self, kind: str) -> bool:
        """Endpoints documented to return the oldest rows of a range (Binance klines and funding)."""
        return self.exchange.id in _OLDEST_FIRST_EXCHANGES and kind in ("ohlcv", "mark", "funding_rate")

    def _first_time_in(self, key: DatasetKey, start: int, end: int) -> int | None:
        """Time of the first row in ``[start, end]`` (one 1-row request): jumps a gap in one step,
        e.g. years before a listing, instead of walking it window by window."""
        probe = self._fetch(key, start, 1, end)
        times = probe.index.to_numpy(dtype=np.int64)
        times = times[(times >= start) & (times <= end)]
        return int(times.min()) if len(times) else None

    def _fetch(self, key: DatasetKey, cursor: int, limit: int, window_end: int) -> pd.DataFrame:
        """One request; a frame indexed by integer ms (in the exchange's order)."""
        ex, symbol, params = self.exchange, key.symbol, {"until": window_end}
        what = f"{key.kind} {symbol}"
        if key.kind in ("ohlcv", "mark"):
            fn = ex.fetch_ohlcv if key.kind == "ohlcv" else ex.fetch_mark_ohlcv
            rows = self._call(what, fn, symbol, key.timeframe, cursor, limit, params)
            cols = ["open", "high", "low", "close", "volume"] if key.kind == "ohlcv" else ["open", "high", "low", "close"]
            data = [[float("nan") if v is None else v for v in r[1:1 + len(cols)]] for r in rows]
            return pd.DataFrame(data, index=pd.Index([int(r[0]) for r in rows], dtype="int64"), columns=cols,
                                dtype=float)
        if key.kind == "funding_rate":
            rows = self._call(what, ex.fetch_funding_rate_history, symbol, cursor, limit, params)
            frame = pd.DataFrame({"funding_rate": [r.get("fundingRate") for r in rows]},
                                 index=pd.Index([int(r["timestamp"]) for r in rows], dtype="int64"), dtype=float)
            marks = [(r.get("info") or {}).get("markPrice") for r in rows]
            if any(m not in (None, "") for m in marks):
                frame["mark_price"] = [float(m) if m not in (None, "") else float("nan") for m in marks]
            return frame
        rows = self._call(what, ex.fetch_open_interest_history, symbol, key.timeframe, cursor, limit, params)
        # in base units: OKX counts contracts of 0.01 BTC, Binance and Bybit of one coin
        return open_interest_frame(ex, symbol, rows)


# -- leverage brackets -------------------------------------------------------------------------

LEVERAGE_TIERS_FILE = DOWNLOADED_FILE


def leverage_tiers_path(store: Store, exchange_id: str) -> Path:
    """Where ``download`` stores ``exchange_id``'s brackets: ``<data>/<exchange>/leverage_tiers.json``.

    Same format as ``bot/risk/brackets_binance.json``, so
    ``bot.risk.brackets.load_brackets(symbol, path=str(leverage_tiers_path(store, ex)))`` reads it.
    """
    return store.root / exchange_id / LEVERAGE_TIERS_FILE


def leverage_tiers_to_brackets(tiers: dict[str, list[dict[str, Any]]], exchange_id: str,
                               as_of: pd.Timestamp) -> dict[str, Any]:
    """ccxt's ``fetch_leverage_tiers`` result -> the project's bracket document (per exchange id)."""
    symbols: dict[str, list[dict[str, float | int]]] = {}
    for unified, rows in sorted(tiers.items()):
        ordered = sorted(rows, key=lambda r: float(r["minNotional"] or 0))
        symbols[unified.split(":")[0].replace("/", "").upper()] = [
            {"tier": i + 1, "floor": float(r["minNotional"] or 0), "cap": float(r["maxNotional"]),
             "mmr": float(r["maintenanceMarginRate"]), "max_leverage": float(r["maxLeverage"])}
            for i, r in enumerate(ordered)]
    return {"exchange": exchange_id, "as_of": as_of.strftime("%Y-%m-%d"),
            "note": "fetched with ccxt fetch_leverage_tiers by cascade download (current brackets; no history)",
            "sources": {s: f"{exchange_id} fetch_leverage_tiers" for s in symbols}, "symbols": symbols}


def download_leverage_tiers(exchange: ccxt.Exchange, store: Store, symbols: Sequence[str]) -> Path:
    """Fetch the symbols' leverage brackets (ccxt ``fetch_leverage_tiers``) into the store.

    Binance serves them only to signed requests: without an API key this raises a
    :class:`UserError` saying so (``download`` prints it as a warning and backtests keep the
    bundled brackets).
    """
    if not _is_supported(exchange, "fetchLeverageTiers"):
        raise UserError(f"{exchange.id} does not serve leverage tiers (fetchLeverageTiers)")
    try:
        tiers = exchange.fetch_leverage_tiers(list(symbols))
    except ccxt.AuthenticationError:
        raise UserError("leverage tiers need an API key (set the variables named in [exchange] "
                        "api_key_env/secret_env); the bundled brackets stay in use") from None
    except ccxt.BaseError as err:
        raise UserError(f"cannot fetch leverage tiers ({type(err).__name__}: {str(err)[:160]})") from None
    wanted = {s: tiers[s] for s in symbols if s in tiers}
    if not wanted:
        raise UserError(f"{exchange.id} returned no leverage tiers for {', '.join(symbols)}")
    path = leverage_tiers_path(store, exchange.id)
    doc = leverage_tiers_to_brackets(wanted, exchange.id, pd.Timestamp.now(tz="UTC"))
    if path.is_file():  # keep other symbols fetched earlier
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            doc["symbols"] = {**old.get("symbols", {}), **doc["symbols"]}
            doc["sources"] = {**old.get("sources", {}), **doc["sources"]}
        except (OSError, ValueError):
            pass
    atomic_write_text(path, json.dumps(doc, indent=1))
    return path
