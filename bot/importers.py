"""`cascade import-data PATH`: bring files from other tools into the store.

Accepted inputs (a file or a directory, searched recursively):

* **freqtrade data directories** — ``{BASE}_{QUOTE}_{SETTLE}-{tf}-{candle}.feather|.parquet`` with
  columns ``date, open, high, low, close, volume``; candle ``futures`` → ohlcv, ``mark`` → mark,
  ``funding_rate`` → funding_rate (the rate is in column ``open``; ``date`` is the settlement).
  Exchange: ``--exchange`` or inferred from the path (``binance`` → ``binanceusdm``).
* **long-format parquet** with ``timestamp, venue, coin`` and one of
  ``oi_usd`` (open interest in USD at that time → contracts by dividing by the last close known
  at that time, taken from stored candles of the same coin), ``funding_rate`` (per-interval
  funding rate at ``timestamp``), or ``side, size_usd, price`` (liquidation events; OKX
  ``sell`` / Hyperliquid ``S`` = a long was liquidated, ``buy`` / ``B`` = a short).
  Symbols become ccxt unified swap symbols: Hyperliquid ``BTC/USDC:USDC``, others
  ``BTC/USDT:USDT``.
* **Binance public bulk archives** (``.zip`` or ``.csv``, with or without header):
  ``{SYMBOL}-{tf}-….csv`` klines (``open_time, open, high, low, close, volume, close_time,
  quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore``; mark-price klines when
  the path contains ``markPriceKlines``), ``{SYMBOL}-metrics-….csv`` (``create_time, symbol,
  sum_open_interest, sum_open_interest_value, …`` → 5m open interest),
  ``{SYMBOL}-liquidationSnapshot-….csv`` (``time, side, order_type, time_in_force,
  original_quantity, price, average_price, order_status, last_fill_quantity,
  accumulated_fill_quantity``; ``SELL`` = a long was liquidated) and
  ``{SYMBOL}-fundingRate-….csv`` (``calc_time, funding_interval_hours, last_funding_rate``).
  Millisecond and microsecond timestamps are both accepted.

Candles are imported before open interest so that the USD → contracts conversion can use them.

**Availability times.** Auxiliary series are stored at the time their value became known, not
the time it describes (:data:`AVAILABILITY_LAGS`, README "Availability times"): long-format open
interest (the Hyperliquid hourly history) describes the interval starting at ``timestamp`` and is
stamped at its end (``timestamp`` + one row spacing), converted with the last close known then;
funding is stamped at its settlement time, liquidations at their event time, Binance ``metrics``
open interest at its snapshot time (``create_time``). Candles keep their open time (a bar is
known at its close by the frame contract).

Every dataset is validated (:mod:`bot.validation`) before anything is written, and written once
per import under the store's lock: a bad or unparsable file is one line and exit 2 with the store
untouched, or with ``--repair`` the bad rows are dropped/clipped and each change is reported.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bot.atomic import os_error
from bot.errors import DataError, UserError
from bot.store import DatasetInfo, DatasetKey, Store
from bot.timeframes import timeframe_to_timedelta
from bot.validation import check, far_outside_mask, repair, require_valid

_FREQTRADE = re.compile(r"^(?P<pair>[A-Z0-9]+_[A-Z0-9]+(?:_[A-Z0-9]+)?)-(?P<tf>\d+[mhdw])(?:-(?P<candle>[a-z_]+))?$")
_BULK = re.compile(r"^(?P<sym>[A-Z0-9]+)-(?P<what>\d+[mhdw]|metrics|liquidationSnapshot|fundingRate)-")
_KLINE_COLUMNS = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                  "taker_buy_volume", "taker_buy_quote_volume", "ignore"]
_QUOTES = ("USDT", "USDC", "BUSD", "USD")
# Side of the *liquidated position* from a source's side label. OKX reports the liquidation
# order's side (a sell closes a long); the Hyperliquid rows carry the position side ("S" = short:
# their size tracks rallies, correlation +0.9 with the hourly return on the sample's BTC days).
_LIQUIDATED_SIDE = {"sell": "long", "buy": "short", "s": "short", "l": "long", "short": "short", "long": "long"}

# Availability lag per (source format, kind): how long after a row's stamp the value was known.
# The store keeps *availability* times for auxiliary series (docs/architecture.md, the frame
# contract), so importers add this lag. ``None`` = one row spacing (the row describes the interval
# that starts at its stamp, known at that interval's end). See README "Availability times".
AVAILABILITY_LAGS: dict[tuple[str, str], pd.Timedelta | None] = {
    ("long_parquet", "open_interest"): None,          # Hyperliquid hourly OI: end of its hour
    ("long_parquet", "funding_rate"): pd.Timedelta(0),  # settlement time = when the rate is paid
    ("long_parquet", "liquidations"): pd.Timedelta(0),  # event time
    ("freqtrade", "funding_rate"): pd.Timedelta(0),     # settlement time
    ("binance_bulk", "open_interest"): pd.Timedelta(0),  # metrics create_time: snapshot taken then
    ("binance_bulk", "funding_rate"): pd.Timedelta(0),   # calc_time: settlement time
    ("binance_bulk", "liquidations"): pd.Timedelta(0),   # event time
}


def availability_lag(source: str, kind: str, spacing: pd.Timedelta) -> pd.Timedelta:
    """The lag added to a ``source`` row's stamp for ``kind`` (:data:`AVAILABILITY_LAGS`)."""
    lag = AVAILABILITY_LAGS[(source, kind)]
    return spacing if lag is None else lag


@dataclass
class ImportReport:
    """What an import wrote (and skipped), per dataset."""

    written: dict[DatasetKey, DatasetInfo] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)  # exactly what --repair changed


def exchange_from_path(path: Path) -> str | None:
    """Guess the ccxt exchange id from a freqtrade path (``…/binance/futures/…`` → binanceusdm)."""
    text = str(path).lower()
    for needle, exchange in (("binance", "binanceusdm"), ("bybit", "bybit"), ("okx", "okx"),
                             ("hyperliquid", "hyperliquid")):
        if needle in text:
            return exchange
    return None


def unified_swap_symbol(coin: str, venue: str) -> str:
    """A perpetual's unified ccxt symbol for a bare coin name on a venue."""
    quote = "USDC" if venue == "hyperliquid" else "USDT"
    return f"{coin.upper()}/{quote}:{quote}"


def binance_symbol_to_unified(raw: str) -> str:
    """``BTCUSDT`` -> ``BTC/USDT:USDT``."""
    for quote in _QUOTES:
        if raw.endswith(quote) and len(raw) > len(quote):
            return f"{raw[: -len(quote)]}/{quote}:{quote}"
    raise UserError(f"cannot tell the quote currency of Binance symbol '{raw}'; expected …USDT or …USDC")


def _to_utc(values: pd.Series | np.ndarray) -> pd.DatetimeIndex:
    """Epoch numbers (ms or µs, detected by size) or datetimes -> UTC index named time."""
    s = pd.Series(values)
    if pd.api.types.is_numeric_dtype(s):
        arr = s.to_numpy(dtype="int64")
        unit = "us" if arr.size and np.nanmax(np.abs(arr)) > 10**14 else "ms"
        idx = pd.to_datetime(arr, unit=unit, utc=True)
    else:
        idx = pd.to_datetime(s, utc=True)
    return pd.DatetimeIndex(idx).as_unit("ms").rename("time")


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".feather":
            return pd.read_feather(path)
        return pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - any reader failure is a corrupt input file
        raise DataError(f"{path} cannot be read ({type(err).__name__}: {err}); check the file") from None


class Importer:
    """Parses recognised files, validates them (:mod:`bot.validation`) and writes them to one store.

    Two phases: every file is parsed and validated first, then each dataset is written once
    (one locked read-merge-write per dataset), so a bad file anywhere leaves the store untouched.
    ``repair=True`` fixes what breaks a rule (drops or clips) and lists each change in
    ``report.repairs`` instead of refusing the import.
    """

    def __init__(self, store: Store, exchange: str | None = None, repair: bool = False) -> None:
        self.store = store
        self.exchange = exchange
        self.repair = repair
        self.report = ImportReport()
        self._pending: dict[DatasetKey, list[pd.DataFrame]] = {}

    # -- public ---------------------------------------------------------------------------------
    def import_path(self, path: Path) -> ImportReport:
        """Import a file or every file under a folder; raises :class:`UserError` on any bad input."""
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path} does not exist; pass a file or directory to import")
        try:
            files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path])
                           if p.is_file() and not (path.is_dir() and p.name.startswith(".")))  # no locks/temps
        except OSError as err:
            raise os_error(err, path, "listing") from None
        # candles first: open interest in USD needs prices to become contracts
        files.sort(key=lambda p: (0 if ("futures" in p.name or _BULK.match(p.name)) else 1, str(p)))
        self._pending = {}
        for file in files:
            self._import_file(file)
        for key in list(self._pending):
            self._check_against_stored(key, path)
        for key, parts in self._pending.items():
            self.store.write(key, pd.concat(parts) if len(parts) > 1 else parts[0])
            self.report.written[key] = self.store.info(key)
        self._pending = {}
        if not self.report.written:
            raise UserError(f"nothing importable found in {path}; see 'cascade import-data --help' for formats")
        return self.report

    # -- dispatch -------------------------------------------------------------------------------
    def _import_file(self, file: Path) -> None:
        stem = file.name.split(".")[0]
        suffix = file.suffix.lower()
        try:
            if suffix in (".feather", ".parquet") and _FREQTRADE.match(stem):
                self._freqtrade(file, _FREQTRADE.match(stem))
            elif suffix == ".parquet":
                self._long_parquet(file)
            elif suffix in (".zip", ".csv") and _BULK.match(file.name):
                self._bulk(file, _BULK.match(file.name))
            else:
                self.report.skipped.append(f"{file.name}: format not recognised")
        except KeyError as err:
            raise DataError(f"{file}: column {err} is missing; expected {_expected_columns(file)}") from None
        except (ValueError, TypeError, OverflowError) as err:
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise DataError(f"{file}: cannot parse its values ({reason}); expected {_expected_columns(file)} "
                            "with numbers and times") from None

    def _write(self, key: DatasetKey, rows: pd.DataFrame, origin: Path) -> None:
        """Validate ``rows`` from ``origin`` and queue them for ``key`` (written by import_path)."""
        if rows.empty:
            self.report.skipped.append(f"{origin.name}: no rows")
            return
        if self.repair:
            rows, changes = repair(rows, key.kind, key.timeframe, key.exchange)
            label = f"{origin.name} {key.symbol} {key.kind}{' ' + key.timeframe if key.timeframe else ''}"
            self.report.repairs.extend(f"{label}: {c}" for c in changes)
            if rows.empty:
                self.report.skipped.append(f"{origin.name}: no rows left after repair")
                return
        else:
            require_valid(rows, key.kind, key.timeframe, key.exchange, f"{origin} ({key.symbol} {key.kind})",
                          "fix the file or re-run with --repair to drop/clip such rows")
        self._pending.setdefault(key, []).append(rows)

    def _check_against_stored(self, key: DatasetKey, origin: Path) -> None:
        """Refuse (or with ``repair`` drop) new rows far outside the dataset they join."""
        merged = self._read_merged(key)
        if merged is None:
            return
        far = [p for p in check(merged, key.kind, key.timeframe, key.exchange) if p.rule == "far_outside"]
        if not far:
            return
        new = pd.concat(self._pending[key])
        bad = far_outside_mask(merged, key.kind, key.timeframe)
        bad_times = merged.index[bad].intersection(new.index)
        if bad_times.empty:
            return  # the stray rows are already stored: data-info reports them
        if not self.repair:
            raise DataError(f"{origin} ({key.symbol} {key.kind}) {far[0].describe()} next to the stored "
                            f"{key.kind} rows; fix the file or re-run with --repair to drop such rows")
        self._pending[key] = [part[~part.index.isin(bad_times)] for part in self._pending[key]]
        self.report.repairs.append(f"{origin.name} {key.symbol} {key.kind}: far outside the stored range: dropped "
                                   f"{len(bad_times)} rows ({', '.join(t.isoformat() for t in bad_times[:3])})")

    def _read_merged(self, key: DatasetKey) -> pd.DataFrame | None:
        """Stored rows of ``key`` plus those queued by this import."""
        parts = ([s] if (s := self.store.read(key)) is not None else []) + self._pending.get(key, [])
        if not parts:
            return None
        merged = pd.concat(parts)
        return merged[~merged.index.duplicated(keep="last")].sort_index()

    # -- freqtrade ------------------------------------------------------------------------------
    def _freqtrade(self, file: Path, match: re.Match[str]) -> None:
        candle = match.group("candle") or "spot"
        kind = {"futures": "ohlcv", "mark": "mark", "funding_rate": "funding_rate"}.get(candle)
        if kind is None:
            self.report.skipped.append(f"{file.name}: freqtrade candle type '{candle}' is not imported")
            return
        exchange = self.exchange or exchange_from_path(file)
        if exchange is None:
            raise UserError(f"cannot tell the exchange of {file}; pass --exchange (e.g. binanceusdm)")
        parts = match.group("pair").split("_")
        symbol = f"{parts[0]}/{parts[1]}" + (f":{parts[2]}" if len(parts) == 3 else "")
        raw = _read_table(file)
        if "date" not in raw.columns:
            raise DataError(f"{file} has no 'date' column; expected freqtrade's date, open, high, low, close, volume")
        raw.index = _to_utc(raw["date"])
        if kind == "funding_rate":
            rows = pd.DataFrame({"funding_rate": raw["open"].astype(float)},
                                index=raw.index + availability_lag("freqtrade", kind, pd.Timedelta(0)))
        else:
            cols = ["open", "high", "low", "close"] + (["volume"] if kind == "ohlcv" else [])
            rows = raw[cols].astype(float)
        self._write(DatasetKey(exchange, symbol, kind, match.group("tf")), rows, file)

    # -- long-format parquet --------------------------------------------------------------------
    def _long_parquet(self, file: Path) -> None:
        raw = _read_table(file)
        if not {"timestamp", "venue", "coin"} <= set(raw.columns):
            if {"timestamp", "coin", "total_usd"} <= set(raw.columns):
                self.report.skipped.append(f"{file.name}: daily liquidation totals are aggregates, not events")
            else:
                self.report.skipped.append(f"{file.name}: parquet without timestamp/venue/coin columns")
            return
        for (venue, coin), part in raw.groupby(["venue", "coin"], sort=True):
            venue, coin = str(venue).lower(), str(coin)
            symbol = unified_swap_symbol(coin, venue)
            part = part.set_axis(_to_utc(part["timestamp"]), axis=0)
            if "oi_usd" in part.columns:
                self._open_interest_usd(file, venue, symbol, part["oi_usd"].astype(float))
            elif "funding_rate" in part.columns:
                rows = pd.DataFrame({"funding_rate": part["funding_rate"].astype(float)})
                rows.index = rows.index + availability_lag("long_parquet", "funding_rate", pd.Timedelta(0))
                self._write(DatasetKey(venue, symbol, "funding_rate"), rows, file)
            elif {"side", "size_usd", "price"} <= set(part.columns):
                side = part["side"].astype(str).str.lower().map(_LIQUIDATED_SIDE)
                value = part["size_usd"].astype(float)
                rows = pd.DataFrame({"side": side.astype(object), "price": part["price"].astype(float),
                                     "amount": value / part["price"].astype(float), "value": value})
                rows.index = rows.index + availability_lag("long_parquet", "liquidations", pd.Timedelta(0))
                self._write(DatasetKey(venue, symbol, "liquidations"), rows.dropna(subset=["side"]), file)
            else:
                self.report.skipped.append(f"{file.name}: no oi_usd, funding_rate or liquidation columns")
                return

    def _open_interest_usd(self, file: Path, venue: str, symbol: str, oi_usd: pd.Series) -> None:
        """Stamp USD open interest at its availability time and convert it to contracts there.

        A long-format row at ``timestamp`` describes the interval that *starts* there (for the
        Hyperliquid hourly history: the hour ``[t, t+1h)``; its log changes load on the price path
        up to ``t+30 min``, see ``tests/bot/test_leaks.py``), so it is known only at the end of
        that interval: the stamp becomes ``timestamp + spacing`` (:data:`AVAILABILITY_LAGS`).
        The USD value is divided by the last candle close known at that availability time.
        """
        spacing = pd.Series(oi_usd.index).diff().mode().min()  # the usual spacing; gaps do not change it
        spacing = spacing if pd.notna(spacing) and spacing > pd.Timedelta(0) else pd.Timedelta(hours=1)
        lag = availability_lag("long_parquet", "open_interest", spacing)
        available = (oi_usd.index + lag).rename("time")
        base = symbol.split("/")[0]
        known = dict.fromkeys([*self.store.keys(), *self._pending])
        candles = [k for k in known if k.kind == "ohlcv" and k.symbol.split("/")[0] == base]
        if not candles:
            raise UserError(f"{file.name}: open interest in USD needs {base} candles to convert to contracts; "
                            f"import or download {base} candles first")
        key = min(candles, key=lambda k: (k.exchange != venue, timeframe_to_timedelta(k.timeframe)))
        ohlcv = self._read_merged(key)
        assert ohlcv is not None
        step = timeframe_to_timedelta(key.timeframe)
        # a bar [o, o+step) is known at its close o+step: the price known at time T is the close
        # of the last bar with o + step <= T
        closes = pd.DataFrame({"price": ohlcv["close"].to_numpy()}, index=(ohlcv.index + step).as_unit("ns"))
        left = pd.DataFrame({"t": available.as_unit("ns")})
        joined = pd.merge_asof(left, closes.rename_axis("t").reset_index(), on="t", direction="backward",
                               tolerance=4 * step)
        price = joined["price"].to_numpy()
        rows = pd.DataFrame({"open_interest": oi_usd.to_numpy() / price, "open_interest_value": oi_usd.to_numpy()},
                            index=available).dropna()
        dropped = len(oi_usd) - len(rows)
        if dropped:
            self.report.problems.append(f"{file.name}: {dropped} {symbol} open-interest rows had no price to "
                                        "convert with and were not imported")
        self._write(DatasetKey(venue, symbol, "open_interest", _timedelta_to_timeframe(spacing)), rows, file)

    # -- Binance bulk archives -------------------------------------------------------------------
    def _bulk(self, file: Path, match: re.Match[str]) -> None:
        symbol = binance_symbol_to_unified(match.group("sym"))
        exchange = self.exchange or "binanceusdm"
        what = match.group("what")
        for name, text in _csv_members(file):
            if not text.strip():
                self.report.skipped.append(f"{file.name}: {name} is empty")
                continue
            if what == "metrics":
                raw = _csv(text, None)
                rows = pd.DataFrame({"open_interest": raw["sum_open_interest"].astype(float),
                                     "open_interest_value": raw["sum_open_interest_value"].astype(float)})
                rows.index = _to_utc(raw["create_time"]) + availability_lag("binance_bulk", "open_interest",
                                                                            pd.Timedelta(0))
                self._write(DatasetKey(exchange, symbol, "open_interest", "5m"), rows, file)
            elif what == "liquidationSnapshot":
                raw = _csv(text, None)
                price = raw["average_price"].astype(float).where(raw["average_price"].astype(float) > 0,
                                                                  raw["price"].astype(float))
                qty = raw["accumulated_fill_quantity"].astype(float)
                rows = pd.DataFrame({"side": raw["side"].str.upper().map({"SELL": "long", "BUY": "short"}),
                                     "price": price, "amount": qty, "value": qty * price})
                rows.index = _to_utc(raw["time"]) + availability_lag("binance_bulk", "liquidations", pd.Timedelta(0))
                self._write(DatasetKey(exchange, symbol, "liquidations"), rows, file)
            elif what == "fundingRate":
                raw = _csv(text, None)
                rows = pd.DataFrame({"funding_rate": raw["last_funding_rate"].astype(float)})
                rows.index = _to_utc(raw["calc_time"]) + availability_lag("binance_bulk", "funding_rate",
                                                                          pd.Timedelta(0))
                self._write(DatasetKey(exchange, symbol, "funding_rate"), rows, file)
            else:
                raw = _csv(text, _KLINE_COLUMNS)
                kind = "mark" if "markprice" in str(file).lower() else "ohlcv"
                cols = ["open", "high", "low", "close"] + (["volume", "taker_buy_volume"] if kind == "ohlcv" else [])
                rows = raw[cols].astype(float)
                rows.index = _to_utc(raw["open_time"].astype("int64"))
                self._write(DatasetKey(exchange, symbol, kind, what), rows, file)
            del name


def _timedelta_to_timeframe(step: pd.Timedelta) -> str:
    minutes = int(step / pd.Timedelta(1, "min"))
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def _csv_members(file: Path) -> Iterable[tuple[str, str]]:
    try:
        if file.suffix.lower() == ".zip":
            with zipfile.ZipFile(file) as zf:
                for name in zf.namelist():
                    if name.endswith(".csv"):
                        yield name, zf.read(name).decode("utf-8")
        else:
            yield file.name, file.read_text(encoding="utf-8")
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as err:
        raise DataError(f"{file} cannot be read ({type(err).__name__}); re-download the archive") from None


def _csv(text: str, columns: list[str] | None) -> pd.DataFrame:
    """Read a Binance CSV; ``columns`` names a header-less layout (a header row is detected)."""
    first = text.split("\n", 1)[0]
    has_header = not first.split(",")[0].strip().isdigit()
    if columns is None:
        return pd.read_csv(io.StringIO(text))
    frame = pd.read_csv(io.StringIO(text), header=0 if has_header else None)
    frame = frame.iloc[:, : len(columns)]
    frame.columns = columns[: frame.shape[1]]
    return frame


def _expected_columns(file: Path) -> str:
    """The columns a file of this name must have (for parse-error messages)."""
    name = file.name
    if _FREQTRADE.match(name.split(".")[0]):
        return "freqtrade columns date, open, high, low, close, volume"
    match = _BULK.match(name)
    if match:
        what = match.group("what")
        return {"metrics": "Binance metrics columns create_time, symbol, sum_open_interest, sum_open_interest_value",
                "liquidationSnapshot": "Binance liquidationSnapshot columns time, side, order_type, time_in_force, "
                                       "original_quantity, price, average_price, order_status, last_fill_quantity, "
                                       "accumulated_fill_quantity",
                "fundingRate": "Binance fundingRate columns calc_time, funding_interval_hours, last_funding_rate",
                }.get(what, "Binance kline columns " + ", ".join(_KLINE_COLUMNS))
    return "long-format columns timestamp, venue, coin and oi_usd | funding_rate | side, size_usd, price"
