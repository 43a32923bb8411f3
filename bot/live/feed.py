"""The window the runner decides on, fetched through the gateway (ccxt) and joined like the store's frame.

Candles, mark-price candles, funding settlements and open interest (the exchange's own history, when
it serves one for the timeframe) are fetched from an anchor (the run's first
traded bar minus the strategy's warm-up, the history a backtest of the same range loads) up to
*now*, incrementally: each wake asks only for what is newer than the last row held. Only closed
bars are kept (``open + timeframe <= now``; Binance also serves the forming one). The frame is
joined with `bot.data.join_funding`, the same join the backtest's store frame uses, so the signals
of bar ``k`` see exactly what a backtest sees at bar ``k``. ``max_bars`` (``[live] max_window_bars``)
bounds the window for runs of months: the signals are then those of a backtest whose data starts
``max_bars`` bars back (identical for strategies whose warm-up fits, up to their forgetting).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from bot.data import join_asof_close, join_funding
from bot.gateway import Gateway
from bot.timeframes import timeframe_to_timedelta

_PAGE = 1000


def _frame(rows: list[list], prefix: str = "") -> pd.DataFrame:
    cols = ["open", "high", "low", "close", "volume"]
    df = pd.DataFrame([r[1:6] for r in rows], columns=cols, dtype=float)
    df.index = pd.to_datetime([int(r[0]) for r in rows], unit="ms", utc=True).as_unit("ms").rename("time")
    df = df[~df.index.duplicated(keep="last")].sort_index()
    if prefix:
        df = df[["open", "high", "low", "close"]].add_prefix(prefix)
    return df


class Feed:
    """Closed bars of one symbol/timeframe from ``anchor_ms`` on, topped up at each wake."""

    def __init__(self, gateway: Gateway, symbol: str, timeframe: str, anchor_ms: int, with_mark: bool = True,
                 with_funding: bool = True, with_open_interest: bool = True,
                 stored_open_interest: Callable[[pd.DataFrame], pd.Series | None] | None = None,
                 max_bars: int = 0) -> None:
        self.gw = gateway
        self.symbol = symbol
        self.timeframe = timeframe
        self.step_ms = int(timeframe_to_timedelta(timeframe).total_seconds() * 1000)
        self.anchor_ms = int(anchor_ms)
        self.with_mark = with_mark
        self.with_funding = with_funding
        self._rows: dict[str, list[list]] = {"last": [], "mark": []}
        self._funding: list[dict[str, Any]] = []
        self.with_open_interest = with_open_interest
        self._oi: list[dict[str, Any]] = []
        self.stored_open_interest = stored_open_interest
        self.max_bars = int(max_bars)

    def _top_up(self, kind: str, now_ms: int) -> None:
        rows = self._rows[kind]
        params = {"price": "mark"} if kind == "mark" else {}
        since = rows[-1][0] + self.step_ms if rows else self.anchor_ms
        for _ in range(10_000):  # bounded: 10k pages
            if since + self.step_ms > now_ms:
                break
            page = self.gw.ohlcv(self.symbol, self.timeframe, since, _PAGE, dict(params))
            page = [r for r in page if int(r[0]) >= since and int(r[0]) + self.step_ms <= now_ms]
            if not page:
                break
            rows.extend(page)
            since = int(page[-1][0]) + self.step_ms
            if len(page) < _PAGE // 2:
                break

    def _top_up_funding(self, now_ms: int) -> None:
        ex = self.gw.exchange
        since = int(self._funding[-1]["timestamp"]) + 1 if self._funding else self.anchor_ms
        for _ in range(10_000):
            page = self.gw.call("fetch funding history", ex.fetch_funding_rate_history, self.symbol, since, 1000)
            page = [f for f in page if f.get("timestamp") is not None and since <= int(f["timestamp"]) <= now_ms]
            if not page:
                break
            self._funding.extend(page)
            since = int(page[-1]["timestamp"]) + 1
            if len(page) < 500:
                break

    def _top_up_open_interest(self, now_ms: int) -> None:
        ex = self.gw.exchange
        if not ex.has.get("fetchOpenInterestHistory"):
            self.with_open_interest = False
            return
        since = int(self._oi[-1]["timestamp"]) + 1 if self._oi else self.anchor_ms
        from bot.gateway import GatewayError

        for _ in range(10_000):
            try:
                page = self.gw.call("fetch open interest", ex.fetch_open_interest_history, self.symbol,
                                    self.timeframe, since, 500)
            except GatewayError:  # no history for this timeframe: trade without it, as a backtest would
                self.with_open_interest = False
                return
            page = [x for x in page if x.get("timestamp") is not None and since <= int(x["timestamp"]) <= now_ms]
            if not page:
                if not self._oi:  # the exchange keeps no history for this market: the store's, if any
                    self.with_open_interest = False
                break
            self._oi.extend(page)
            since = int(page[-1]["timestamp"]) + 1
            if len(page) < 250:
                break

    def frame(self, now_ms: int) -> pd.DataFrame:
        """The frame contract of the closed bars up to ``now_ms`` (empty when none)."""
        self._top_up("last", now_ms)
        if not self._rows["last"]:
            return pd.DataFrame(columns=["open", "high", "low", "close", "volume"])
        self._trim()
        frame = _frame(self._rows["last"])
        if self.max_bars:
            frame = frame.iloc[-self.max_bars:]
        if self.with_mark:
            self._top_up("mark", now_ms)
            if self._rows["mark"]:
                frame = frame.join(_frame(self._rows["mark"], "mark_").reindex(frame.index))
        if self.with_funding:
            self._top_up_funding(now_ms)
            if self._funding:
                frame["funding_rate"] = self._funding_rates(frame)
        if self.with_open_interest:
            self._top_up_open_interest(now_ms)
            if self._oi:
                frame["open_interest"] = self._open_interest(frame)
        if "open_interest" not in frame.columns and self.stored_open_interest is not None:
            oi = self.stored_open_interest(frame)
            if oi is not None:
                frame["open_interest"] = oi
        frame.attrs["symbol"] = self.symbol
        return frame

    def _trim(self) -> None:
        """Bounded memory on long runs: keep the last ``max_bars`` rows once twice that many are held."""
        if self.max_bars and len(self._rows["last"]) > 2 * self.max_bars:
            for kind in ("last", "mark"):
                self._rows[kind] = self._rows[kind][-self.max_bars:]

    def _funding_rates(self, frame: pd.DataFrame) -> pd.Series:
        """The fetched funding history joined to ``frame``'s bar closes (as `bot.data.load_frame` does)."""
        f = pd.DataFrame({"funding_rate": [float(x["fundingRate"]) for x in self._funding]},
                         index=pd.to_datetime([int(x["timestamp"]) for x in self._funding], unit="ms", utc=True))
        return join_funding(frame, f[~f.index.duplicated()], self.timeframe)

    def _open_interest(self, frame: pd.DataFrame) -> pd.Series:
        """The fetched open interest as of each bar close (backward only, within two bars)."""
        oi = pd.DataFrame({"open_interest": [float(x.get("openInterestAmount") or math.nan) for x in self._oi]},
                          index=pd.to_datetime([int(x["timestamp"]) for x in self._oi], unit="ms", utc=True))
        oi = oi[~oi.index.duplicated(keep="last")]
        step = timeframe_to_timedelta(self.timeframe)
        return join_asof_close(frame, oi, ["open_interest"], self.timeframe, 2 * step)["open_interest"]


def stored_open_interest(cfg: Any) -> Callable[[pd.DataFrame], pd.Series | None]:
    """Open interest from the local store for a live frame, selected and joined as `bot.data.load_frame`
    does (``[data] exchange`` first, then ``open_interest_source``, same base currency; as-of the bar
    close, backward only): what a backtest of the same bars reads, as far as the store reaches."""
    from bot.data import stores_for

    data = cfg.data
    base = data.symbol.split("/")[0]
    order = [data.exchange] + ([data.open_interest_source] if data.open_interest_source else [])
    step = timeframe_to_timedelta(data.timeframe)
    cache: dict[str, Any] = {}

    def load() -> tuple[pd.DataFrame, pd.Timedelta] | None:
        keys = [(s, k) for s in stores_for(data.dir, data.use_sample) for k in s.keys()
                if k.kind == "open_interest" and k.symbol.split("/")[0] == base and k.exchange in order]
        if not keys:
            return None
        store, key = min(keys, key=lambda sk: (order.index(sk[1].exchange), sk[1].timeframe != data.timeframe))
        oi = store.read(key)
        if oi is None or oi.empty:
            return None
        return oi, 2 * max(step, timeframe_to_timedelta(key.timeframe))

    def join(frame: pd.DataFrame) -> pd.Series | None:
        if "oi" not in cache:
            cache["oi"] = load()
        if cache["oi"] is None:
            return None
        oi, tolerance = cache["oi"]
        return join_asof_close(frame, oi, ["open_interest"], data.timeframe, tolerance)["open_interest"]

    return join
