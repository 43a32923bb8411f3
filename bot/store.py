"""The data store: one Parquet file per (exchange, symbol, kind, timeframe).

Layout under the data directory::

    <dir>/<exchange>/<BTC_USDT_USDT>/<kind>-<timeframe>.parquet   (ohlcv, mark, open_interest)
    <dir>/<exchange>/<BTC_USDT_USDT>/<kind>.parquet               (funding_rate, liquidations)

Each file holds a UTC ``time`` index plus the kind's columns; the unified symbol, kind and
timeframe are kept in the Parquet schema metadata so listings need no parsing of file names.
Writes are atomic (temp file in the same folder, then ``os.replace``, :mod:`bot.atomic`) and
incremental: new rows are merged with what is stored and de-duplicated on time (on the whole row
for event kinds). Every read-merge-write holds the dataset's ``fcntl.flock`` lock
(``.<file>.lock`` beside it), so any number of downloads, imports, backtests and a recorder may
run on one store at once; readers open a file once and call it corrupt only after a re-read
under the lock. Stale temporaries of killed writers are swept under the lock.

Stored columns by kind (``time`` means):

* ``ohlcv``          bar open time: open, high, low, close, volume [, taker_buy_volume]
* ``mark``           bar open time: open, high, low, close
* ``funding_rate``   settlement time: funding_rate [, mark_price]
* ``open_interest``  availability time (when the value was known; importers add each source's lag,
                     :data:`bot.importers.AVAILABILITY_LAGS`): open_interest (contracts), open_interest_value (USD)
* ``liquidations``   event time: side ("long"/"short" = the liquidated position), price, amount, value (USD)
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bot.atomic import atomic_path, atomic_write_text, os_error, sweep_stale, user_errors
from bot.errors import DataError
from bot.timeframes import timeframe_to_timedelta
from bot.validation import check

KINDS: tuple[str, ...] = ("ohlcv", "mark", "funding_rate", "open_interest", "liquidations")
EVENT_KINDS = frozenset({"funding_rate", "liquidations"})  # no timeframe in the key
COLUMNS: dict[str, tuple[str, ...]] = {
    "ohlcv": ("open", "high", "low", "close", "volume"),
    "mark": ("open", "high", "low", "close"),
    "funding_rate": ("funding_rate",),
    "open_interest": ("open_interest",),
    "liquidations": ("side", "price", "amount", "value"),
}
_META_KEY = b"cascade"


@dataclass(frozen=True)
class DatasetKey:
    """Identifies one stored series. ``timeframe`` is ``""`` for event kinds."""

    exchange: str
    symbol: str
    kind: str
    timeframe: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"unknown data kind '{self.kind}'; use one of {', '.join(KINDS)}")
        if self.kind in EVENT_KINDS:
            object.__setattr__(self, "timeframe", "")
        elif not self.timeframe:
            raise DataError(f"kind '{self.kind}' needs a timeframe")

    @property
    def filename(self) -> str:
        return f"{self.kind}.parquet" if not self.timeframe else f"{self.kind}-{self.timeframe}.parquet"


@dataclass(frozen=True)
class DatasetInfo:
    """Summary of one stored dataset, as shown by ``cascade data-info``."""

    exchange: str
    symbol: str
    kind: str
    timeframe: str | None
    start: str | None
    end: str | None
    rows: int
    gaps: int
    source: str = "data"
    problems: list[str] = field(default_factory=list)  # rules broken (bot.validation), one line each

    def to_json(self) -> dict:
        return asdict(self)


def symbol_to_dirname(symbol: str) -> str:
    """``BTC/USDT:USDT`` -> ``BTC_USDT_USDT`` (freqtrade's convention)."""
    return symbol.replace("/", "_").replace(":", "_")


def count_gaps(index: pd.DatetimeIndex, timeframe: str) -> int:
    """Number of missing bars between the first and last timestamp of a regular series."""
    if not timeframe or len(index) < 2:
        return 0
    step = timeframe_to_timedelta(timeframe)
    expected = int((index[-1] - index[0]) / step) + 1
    return max(0, expected - len(index))


def validate_series(frame: pd.DataFrame, timeframe: str) -> dict[str, int]:
    """Report duplicates, out-of-order rows and gaps of a time-indexed frame (before cleaning)."""
    idx = frame.index
    out_of_order = int((np.diff(idx.asi8) < 0).sum()) if len(idx) > 1 else 0
    dupes = int(idx.duplicated().sum())
    clean = idx.unique().sort_values()
    misaligned = 0
    if timeframe:
        step = timeframe_to_timedelta(timeframe)
        misaligned = int((clean.as_unit("ns").asi8 % int(step / pd.Timedelta(1, "ns")) != 0).sum())
    return {"duplicates": dupes, "out_of_order": out_of_order, "gaps": count_gaps(clean, timeframe),
            "misaligned": misaligned}


class Store:
    """Parquet files under one root directory (see module docstring)."""

    def __init__(self, root: Path | str, source: str = "data") -> None:
        self.root = Path(root)
        self.source = source

    def path(self, key: DatasetKey) -> Path:
        return self.root / key.exchange / symbol_to_dirname(key.symbol) / key.filename

    def exists(self, key: DatasetKey) -> bool:
        return self.path(key).is_file()

    def lock_path(self, key: DatasetKey) -> Path:
        """The dataset's lock file (``.<file name>.lock`` beside it; never deleted)."""
        path = self.path(key)
        return path.parent / f".{path.name}.lock"

    @contextmanager
    def lock(self, key: DatasetKey, shared: bool = False) -> Iterator[None]:
        """Hold the dataset's ``fcntl.flock`` lock (exclusive for writers, shared for a re-read).

        Every read-merge-write of a dataset runs under its exclusive lock, so any number of
        downloads, imports, recorders and readers may share one store. Readers do not need the
        lock (files are replaced atomically); they take it only to confirm a suspected corruption.
        """
        lock_file = self.lock_path(key)
        with user_errors(lock_file.parent, "creating"):
            lock_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if not shared:
                raise os_error(err, lock_file) from None
            yield  # a read-only store (the bundled sample installed read-only): nothing writes there
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def read(self, key: DatasetKey) -> pd.DataFrame | None:
        """The stored frame (``time`` index, UTC) or ``None`` when nothing is stored.

        The file is read into memory with one ``open`` (an atomic replace by a writer cannot tear
        it); if it still fails to parse, it is re-read under the dataset's lock before it is
        called corrupt.
        """
        try:
            return self._read_once(key)
        except DataError:
            with self.lock(key, shared=True):
                return self._read_once(key)

    def _read_once(self, key: DatasetKey) -> pd.DataFrame | None:
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise os_error(err, path, "reading") from None
        return self._parse(key, path, data)

    def _parse(self, key: DatasetKey, path: Path, data: bytes) -> pd.DataFrame:
        try:
            # ParquetFile, not read_table: the latter imports pyarrow.dataset (~25 ms) for one file
            frame = pq.ParquetFile(pa.BufferReader(data)).read().to_pandas()
        except (pa.ArrowException, OSError, ValueError) as err:
            raise DataError(
                f"{path} is corrupt or unreadable ({type(err).__name__}); delete it and re-import or re-download"
            ) from None
        missing = [c for c in COLUMNS[key.kind] if c not in frame.columns]
        if frame.index.name != "time" or missing:
            raise DataError(f"{path} does not hold {key.kind} data (missing {missing or 'time index'}); "
                            "delete it and re-import or re-download")
        if not isinstance(frame.index, pd.DatetimeIndex):
            raise DataError(f"{path}: the time index is not a timestamp column; delete it and re-import")
        frame.index = frame.index.tz_convert("UTC") if frame.index.tz else frame.index.tz_localize("UTC")
        return frame

    def last_time(self, key: DatasetKey) -> pd.Timestamp | None:
        frame = self.read(key)
        return None if frame is None or frame.empty else frame.index[-1]

    def write(self, key: DatasetKey, rows: pd.DataFrame) -> pd.DataFrame:
        """Merge ``rows`` (``time`` index) into the stored file atomically; return the merged frame.

        Under the dataset's exclusive lock: sweep stale temporaries, read, merge, write, rename.
        """
        if rows.index.name != "time":
            raise ValueError("rows must be indexed by 'time'")
        rows = rows.copy()
        rows.index = _utc_index(rows.index)
        with self.lock(key):
            sweep_stale(self.path(key).parent)
            existing = self._read_once(key)  # under the lock: a parse failure is real corruption
            merged = rows if existing is None else pd.concat([existing, rows])
            merged = _deduplicate(merged, key.kind)
            self._atomic_write(key, merged)
        return merged

    def rewrite(self, key: DatasetKey,
                fix: Callable[[pd.DataFrame], tuple[pd.DataFrame, list[str]]]) -> list[str]:
        """Under the lock, replace the stored frame by ``fix(frame)[0]`` when ``fix`` reports changes."""
        with self.lock(key):
            sweep_stale(self.path(key).parent)
            frame = self._read_once(key)
            if frame is None:
                return []
            fixed, changes = fix(frame)
            if changes:
                self._atomic_write(key, fixed)
            return changes

    def _atomic_write(self, key: DatasetKey, frame: pd.DataFrame) -> None:
        path = self.path(key)
        table = pa.Table.from_pandas(frame, preserve_index=True)
        meta = dict(table.schema.metadata or {})
        meta[_META_KEY] = json.dumps({"exchange": key.exchange, "symbol": key.symbol, "kind": key.kind,
                                      "timeframe": key.timeframe}).encode()
        table = table.replace_schema_metadata(meta)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd", compression_level=9)

    # -- known-empty ranges: fetched, and the exchange had no rows there -------------------------

    def known_empty_path(self, key: DatasetKey) -> Path:
        path = self.path(key)
        return path.parent / f".{path.name}.empty.json"

    def known_empty(self, key: DatasetKey) -> list[tuple[int, int]]:
        """``[lo, hi)`` ms ranges a download found empty for ``key`` (not asked again)."""
        path = self.known_empty_path(key)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return [(int(lo), int(hi)) for lo, hi in doc["covered"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError):
            return []  # unreadable record: forget it, the next download re-checks (costs requests only)

    def add_known_empty(self, key: DatasetKey, ranges: list[tuple[int, int]]) -> None:
        """Merge ``ranges`` into the known-empty record (under the dataset's lock, atomically)."""
        ranges = [(lo, hi) for lo, hi in ranges if lo < hi]
        if not ranges:
            return
        with self.lock(key):
            merged = merge_ranges(self.known_empty(key) + ranges)
            atomic_write_text(self.known_empty_path(key), json.dumps({"covered": merged}))

    def keys(self) -> list[DatasetKey]:
        """Every dataset stored under the root (leftover temp files are ignored)."""
        keys = []
        for path in sorted(self.root.glob("*/*/*.parquet")):
            try:
                meta = pq.read_schema(path).metadata or {}
                info = json.loads(meta[_META_KEY])
            except (pa.ArrowException, OSError, KeyError, ValueError) as err:
                raise DataError(f"{path} is corrupt or not a cascade dataset ({type(err).__name__}); "
                                "delete it and re-import or re-download") from None
            keys.append(DatasetKey(info["exchange"], info["symbol"], info["kind"], info["timeframe"]))
        return keys

    def info(self, key: DatasetKey) -> DatasetInfo:
        """Range, rows, gaps and rule violations (:mod:`bot.validation`) of a stored dataset.

        The range is the true first and last time even when the file is unsorted or repeats times;
        an unreadable file is reported as a problem instead of raising.
        """
        try:
            frame = self.read(key)
        except DataError as err:
            return DatasetInfo(exchange=key.exchange, symbol=key.symbol, kind=key.kind,
                               timeframe=key.timeframe or None, start=None, end=None, rows=0, gaps=0,
                               source=self.source, problems=[str(err)])
        assert frame is not None
        empty = frame.empty
        clean = frame.index.unique().sort_values()
        problems = [p.describe() for p in check(frame, key.kind, key.timeframe, key.exchange)]
        return DatasetInfo(
            exchange=key.exchange, symbol=key.symbol, kind=key.kind, timeframe=key.timeframe or None,
            start=None if empty else clean[0].isoformat(), end=None if empty else clean[-1].isoformat(),
            rows=len(frame), gaps=0 if key.kind in EVENT_KINDS else count_gaps(clean, key.timeframe),
            source=self.source, problems=problems,
        )


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of half-open ``[lo, hi)`` ranges, sorted, touching ranges joined."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def subtract_ranges(want: tuple[int, int], have: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of ``[want)`` not covered by the (merged) ranges ``have``."""
    lo, hi = want
    out = []
    for a, b in merge_ranges(have):
        if b <= lo or a >= hi:
            continue
        if a > lo:
            out.append((lo, a))
        lo = max(lo, b)
    if lo < hi:
        out.append((lo, hi))
    return out


def _utc_index(index: pd.Index) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return idx.as_unit("ms").rename("time")


def _deduplicate(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Sort by time; drop repeated times (keep the newest row) or repeated events."""
    if kind == "liquidations":
        frame = frame.reset_index().drop_duplicates().set_index("time")
    else:
        frame = frame[~frame.index.duplicated(keep="last")]
    return frame.sort_index(kind="stable")
