"""The HTML report of one backtest: native-timeframe candles at any zoom, opening offline.

Charting: TradingView's open-source Lightweight Charts (Apache-2.0, vendored in ``vendor/``). It
draws only the visible bars on a canvas and conflates bars when zoomed out, so a year of 5m bars
(105 120 candles) pans smoothly and every 5m candle is there when zoomed into a day or a week. The
library (≈200 KB) is copied once into the results folder (``<results>/_assets/``) and every
report references it relatively, so a run's ``report.html`` holds only its data (compressed
binary arrays) and still opens from disk without a network.

Page, top to bottom: the price chart (candles, the estimated liquidation heatmap underneath with
a labelled two-colour scale — long liquidations orange, short liquidations blue — support zones
green and resistance zones purple, entry arrows, exit dots by reason, stop and take-profit
segments), then one chart of synchronised panes (target exposure with the risk state, equity
against buy-and-hold, underwater drawdown, cumulative funding and fees), then the tables:
statistics, long/short split, risk states, monthly returns, and the trades with duration,
return %, R-multiple and MAE/MFE (:mod:`backtests.report.trades`).

A URL fragment opens a window directly: ``report.html#from=2025-06-01&to=2025-06-08`` or
``report.html#trade=12``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from backtests.report.trades import enrich_trades, monthly_returns, risk_state_summary, side_split

if TYPE_CHECKING:
    from backtests.engines import BacktestResult

VENDOR_DIR = Path(__file__).parent / "vendor"
CHART_JS = "lightweight-charts-5.2.1.standalone.production.js"
ASSETS_DIRNAME = "_assets"
_JS_FILE = Path(__file__).parent / "report.js"

EXIT_STYLE = {  # exit_reason -> (marker colour, label)
    "signal": ("#455a64", "signal exit"),
    "stop": ("#e53935", "stop"),
    "take_profit": ("#2e7d32", "take profit"),
    "liquidation": ("#000000", "LIQUIDATION"),
    "end": ("#9e9e9e", "end of test"),
    "protection": ("#fb8c00", "protection"),
}
RISK_CODES = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}


# -- Assets --------------------------------------------------------------------------------


def install_assets(assets_dir: Path | str) -> Path:
    """Copy the chart library (with its licence and notice) into ``assets_dir`` unless it is there;
    return the library's path. Reports of every run in a results folder share this one copy."""
    assets = Path(assets_dir)
    target = assets / CHART_JS
    if not target.exists() or target.stat().st_size != (VENDOR_DIR / CHART_JS).stat().st_size:
        assets.mkdir(parents=True, exist_ok=True)
        for name in (CHART_JS, "LICENSE-lightweight-charts.txt", "NOTICE"):
            tmp = assets / f".{name}.{os.getpid()}.tmp"
            shutil.copyfile(VENDOR_DIR / name, tmp)
            os.replace(tmp, assets / name)  # atomic: a concurrent run never sees half a file
    return target


# -- Binary packing ------------------------------------------------------------------------


class _Packer:
    """Arrays into one deflate-compressed buffer (base64) plus a JSON header the page decodes.

    Prices are stored as delta-encoded int32 at a fixed number of decimals (exact to 10^-d, and
    they compress several times better than floats); display-only series as float32."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.header: dict[str, Any] = {}
        self.offset = 0

    def _add(self, name: str, data: bytes, **info: Any) -> None:
        pad = (-self.offset) % 8
        if pad:
            self.parts.append(b"\0" * pad)
            self.offset += pad
        self.header[name] = {"offset": self.offset, **info}
        self.parts.append(data)
        self.offset += len(data)

    def _int32(self, name: str, ints: np.ndarray, **info: Any) -> None:
        # byte planes (all low bytes, then the next ...): small integers then deflate several times better
        planes = np.ascontiguousarray(ints.astype("<i4").view(np.uint8).reshape(-1, 4).T)
        self._add(name, planes.tobytes(), type="i32p", n=len(ints), **info)

    def prices(self, name: str, values: np.ndarray, decimals: int) -> None:
        """A price series, exact to ``10**-decimals``, delta-encoded; NaN (no value) kept in a mask."""
        v = pd.Series(np.asarray(values, dtype=float))
        missing = v.isna().to_numpy()
        ints = np.round(v.ffill().fillna(0.0).to_numpy() * 10.0 ** decimals).astype(np.int64)
        if missing.any():
            self.bytes_(name + "_missing", missing)
        self._int32(name, np.diff(ints, prepend=0), delta=True, scale=10.0 ** -decimals,
                    missing=bool(missing.any()))

    def ohlc(self, prefix: str, ohlc: np.ndarray, decimals: int) -> None:
        """Candles as gap from the previous close, body, upper and lower wick (all small integers)."""
        o, h, lo, c = (np.round(ohlc[:, j] * 10.0 ** decimals).astype(np.int64) for j in range(4))
        prev_close = np.concatenate([[0], c[:-1]])
        top, bottom = np.maximum(o, c), np.minimum(o, c)
        for part, ints in (("gap", o - prev_close), ("body", c - o), ("upper", h - top), ("lower", bottom - lo)):
            self._int32(f"{prefix}_{part}", ints, delta=False, scale=10.0 ** -decimals)

    def ints(self, name: str, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.int64)
        self._int32(name, np.diff(v, prepend=0), delta=True, scale=1)

    def floats(self, name: str, values: np.ndarray) -> None:
        v = np.asarray(values, dtype="<f4")
        self._add(name, v.tobytes(), type="f32", n=len(v))

    def bytes_(self, name: str, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.uint8)
        self._add(name, v.tobytes(), type="u8", n=len(v))

    def encode(self) -> str:
        # level 3: within 10 % of level 6 in size at a third of its time (a year of 5m: 0.2 s, not 0.6 s)
        return base64.b64encode(zlib.compress(b"".join(self.parts), 3)).decode("ascii")


def price_decimals(values: np.ndarray) -> int:
    """Decimals kept for prices: the fewest that hold every value exactly (exchange ticks: BTC's
    0.1 needs 1), else the most (≤ 8) for which the largest price still fits an int32."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    top = float(np.max(np.abs(v))) if v.size else 1.0
    for d in range(9):
        if top * 10.0 ** d >= 2 ** 30:
            return max(d - 1, 0)
        scaled = v * 10.0 ** d
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6):
            return d
    return 8


def display_decimals(values: np.ndarray) -> int:
    """Decimals shown on the price axis: about 5–6 significant digits."""
    med = float(np.nanmedian(np.abs(values))) if len(values) else 1.0
    return int(min(8, max(0, 4 - math.floor(math.log10(med))))) if med > 0 else 2


# -- Data for the page ---------------------------------------------------------------------


def _seconds(index: Any) -> np.ndarray:
    idx = pd.DatetimeIndex(pd.to_datetime(index, utc=True))
    return idx.as_unit("s").asi8


def _bar_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    if len(index) < 2:
        return pd.Timedelta(hours=1)
    return pd.Timedelta(int(np.median(np.diff(index[:1000].as_unit("ns").asi8))), "ns")


def _snap(frame_s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Positions of the bars holding times ``t`` (the last bar at or before each)."""
    return np.clip(np.searchsorted(frame_s, t, side="right") - 1, 0, max(len(frame_s) - 1, 0))


def _heatmap_part(heatmap: Any, name: str) -> Any:
    return heatmap[name] if isinstance(heatmap, Mapping) else getattr(heatmap, name)


def heatmap_grid(heatmap: Any, frame: pd.DataFrame, rows: int = 360, max_columns: int = 400,
                 margin: float = 0.08) -> dict[str, Any] | None:
    """The liquidation map resampled to a uniform price grid for drawing.

    Returns ``positions`` (traded-frame bar of each column: the map after that bar's close, drawn
    from the next bar until the next column), ``lo``/``hi`` (grid edges), ``rows``, ``top`` (the
    99th percentile of non-empty cells, the colour scale's end) and ``long``/``short`` as uint8
    intensities ``round(255·sqrt(min(usd/top, 1)))`` of shape (columns, rows), row 0 at ``hi``.
    Each grid row sums the USD of the estimator's (log-spaced) bins whose centre falls in it.
    """
    if heatmap is None or len(frame) == 0:
        return None
    prices = np.asarray(_heatmap_part(heatmap, "prices"), dtype=float)
    times = pd.DatetimeIndex(_heatmap_part(heatmap, "times"))
    long_ = np.asarray(_heatmap_part(heatmap, "long_usd"), dtype=float)
    short = np.asarray(_heatmap_part(heatmap, "short_usd"), dtype=float)
    if len(times) == 0 or prices.size == 0:
        return None
    if long_.shape != (len(times), len(prices)):
        long_, short = long_.T, short.T
    if long_.shape != (len(times), len(prices)):
        raise ValueError(f"heatmap arrays have shape {long_.shape}, expected ({len(times)}, {len(prices)})")
    frame_s = _seconds(frame.index)
    inside = _seconds(times) >= frame_s[0]
    long_, short, times = long_[inside], short[inside], times[inside]
    if len(times) > max_columns:
        keep = np.linspace(0, len(times) - 1, max_columns).round().astype(int)
        long_, short, times = long_[keep], short[keep], times[keep]
    if len(times) == 0:
        return None
    lo = float(frame["low"].min()) * (1 - margin)
    hi = float(frame["high"].max()) * (1 + margin)
    row = np.floor((hi - prices) / (hi - lo) * rows).astype(int)  # row 0 at the top
    ok = (row >= 0) & (row < rows)
    grid_l = np.zeros((len(times), rows))
    grid_s = np.zeros((len(times), rows))
    for grid, src in ((grid_l, long_), (grid_s, short)):
        for r in np.unique(row[ok]):
            grid[:, r] = src[:, ok & (row == r)].sum(axis=1)
    total = grid_l + grid_s
    top = float(np.nanpercentile(total[total > 0], 99)) if np.any(total > 0) else 1.0

    def level(v: np.ndarray) -> np.ndarray:
        return np.round(255 * np.sqrt(np.clip(v / top, 0.0, 1.0))).astype(np.uint8)

    return {"positions": _snap(frame_s, _seconds(times)), "lo": lo, "hi": hi, "rows": rows, "top": top,
            "long": level(grid_l), "short": level(grid_s)}


ZONE_SLOTS = tuple((side, kind, slot) for side, kind in (("up", "resistance"), ("dn", "support")) for slot in (1, 2, 3))


def zone_bands(zones: Any, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-bar zone bounds for drawing, from `strategies.features.levels.level_features` output.

    The zones known at the close of bar ``i`` are drawn on bar ``i + 1`` (when they can be acted
    on), so every column is shifted by one bar. Returns ``{"up1_lo": array, ...}`` (NaN: no zone).
    Zone bounds move with the data almost every bar, so they travel as arrays, not rectangles.
    """
    if not isinstance(zones, pd.DataFrame) or not any(c.startswith("level_") for c in zones.columns):
        return {}
    z = zones.reindex(frame.index)
    out: dict[str, np.ndarray] = {}
    for side, _, slot in ZONE_SLOTS:
        for edge in ("lo", "hi"):
            col = f"level_{side}_{slot}_{edge}"
            if col in z:
                out[f"{side}{slot}_{edge}"] = np.concatenate([[np.nan], z[col].to_numpy(dtype=float)[:-1]])
    return out


def zone_rects(zones: Any, frame: pd.DataFrame) -> list[list[Any]]:
    """Fixed zones as rectangles ``[first bar, last bar, lower, upper, kind]``: a DataFrame with
    ``lower``/``upper`` (or ``lo``/``hi``), optional ``start``/``end`` times and ``kind``/``role``,
    or `Zone`-like objects. (`level_features` output goes through :func:`zone_bands` instead.)"""
    if zones is None or len(zones) == 0 or len(frame) == 0 or zone_bands(zones, frame):
        return []
    z = zones if isinstance(zones, pd.DataFrame) else pd.DataFrame(
        [{"lower": x.lo, "upper": x.hi, "kind": getattr(x, "role", "level")} for x in zones])
    z = z.rename(columns={"lo": "lower", "hi": "upper", "low": "lower", "high": "upper", "role": "kind"})
    frame_s = _seconds(frame.index)
    rects: list[list[Any]] = []
    for _, r in z.iterrows():
        a = int(_snap(frame_s, _seconds([r["start"]]))[0]) if "start" in z and pd.notna(r["start"]) else 0
        b = int(_snap(frame_s, _seconds([r["end"]]))[0]) if "end" in z and pd.notna(r["end"]) else len(frame) - 1
        rects.append([a, b, float(r["lower"]), float(r["upper"]), str(r.get("kind", "level"))])
    return rects


def _trade_rows(trades: pd.DataFrame, frame_s: np.ndarray) -> list[dict[str, Any]]:
    """Trades for the page: bar positions of entry and exit plus the figures shown on hover."""
    if len(trades) == 0:
        return []
    first = _snap(frame_s, _seconds(trades["entry_time"]))
    last = _snap(frame_s, _seconds(trades["exit_time"]))

    def col(name: str) -> list[float | None]:
        if name not in trades:
            return [None] * len(trades)
        v = trades[name].to_numpy(dtype=float)
        return [None if not np.isfinite(x) else round(float(x), 10) for x in v]

    cols = {key: col(name) for key, name in (("entry", "entry_price"), ("exit", "exit_price"), ("stop", "stop"),
                                              ("tp", "take_profit"), ("qty", "qty"), ("pnl", "pnl"),
                                              ("ret", "return_pct"), ("r", "r_multiple"))}
    entry_t = pd.DatetimeIndex(pd.to_datetime(trades["entry_time"], utc=True)).strftime("%Y-%m-%d %H:%M")
    exit_t = pd.DatetimeIndex(pd.to_datetime(trades["exit_time"], utc=True)).strftime("%Y-%m-%d %H:%M")
    sides, reasons = trades["side"].astype(str).tolist(), trades["exit_reason"].astype(str).tolist()
    return [{"i": i, "side": sides[i], "a": int(first[i]), "b": int(last[i]),
             **{k: v[i] for k, v in cols.items()}, "reason": reasons[i], "entry_time": entry_t[i],
             "exit_time": exit_t[i]} for i in range(len(trades))]


def page_data(frame: pd.DataFrame, signals: pd.DataFrame | None, result: BacktestResult,
              trades: pd.DataFrame, zones: Any = None, heatmap: Any = None,
              max_heatmap_columns: int = 400) -> tuple[dict[str, Any], str]:
    """(JSON header, base64 payload) with everything the page draws."""
    index = pd.DatetimeIndex(frame.index)
    frame_s = _seconds(index)
    ohlc = frame[["open", "high", "low", "close"]].to_numpy(dtype=float)
    dec = price_decimals(ohlc.ravel())
    pack = _Packer()
    pack.ints("time", frame_s)
    pack.ohlc("bar", ohlc, dec)
    dec_show = display_decimals(ohlc[:, 3])
    eq = result.equity.reindex(index)
    pack.floats("equity", eq["equity"].to_numpy(dtype=float))
    for col in ("funding_pnl", "fees"):
        if col in eq:
            pack.floats(col, eq[col].to_numpy(dtype=float))
    if "risk_state" in eq:
        pack.bytes_("risk", eq["risk_state"].astype(str).map(RISK_CODES).fillna(0).to_numpy())
    if signals is not None and "target" in signals:
        pack.floats("target", signals["target"].reindex(index).to_numpy(dtype=float))
    bands = zone_bands(zones, frame)
    for name, values in bands.items():
        # zone bounds are computed prices: kept to a tenth of the axis' display precision
        pack.prices("zone_" + name, values, min(dec_show + 1, dec))
    grid = heatmap_grid(heatmap, frame, max_columns=max_heatmap_columns)
    heat = None
    if grid is not None:
        pack.bytes_("heat_long", grid["long"].ravel())
        pack.bytes_("heat_short", grid["short"].ravel())
        heat = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in grid.items()
                if k not in ("long", "short")}
    step = _bar_step(index)
    meta = {
        "arrays": pack.header, "n": len(frame), "step_s": int(step.total_seconds()),
        "price_precision": dec_show, "initial_cash": float(result.initial_cash),
        "heat": heat, "zones": zone_rects(zones, frame),
        "bands": [f"{side}{slot}" for side, _, slot in ZONE_SLOTS if f"{side}{slot}_lo" in bands], "trades": _trade_rows(trades, frame_s),
        "exit_style": EXIT_STYLE,
    }
    return meta, pack.encode()


# -- Tables ----------------------------------------------------------------------------------


def _fmt_value(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return html.escape(str(value))
    pct_keys = ("return", "cagr", "drawdown", "win_rate", "exposure")
    if any(k in key for k in pct_keys) and "days" not in key and "duration" not in key:
        return f"{value * 100:,.2f} %"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    return f"{value:,.2f}" if abs(value) >= 100 else f"{value:,.4g}"


def stats_table(stats: Mapping[str, Any]) -> str:
    """Stats as a two-column HTML table (percentages for fractions, thousands separators)."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt_value(str(k), v)}</td></tr>"
                   for k, v in stats.items())
    return f'<table class="stats">{rows}</table>'


def split_table(trades: pd.DataFrame) -> str:
    """Long / short / all summary (:func:`side_split`)."""
    t = side_split(trades)
    head = ("<tr><th></th><th>trades</th><th>win rate</th><th>net PnL</th><th>avg return</th>"
            "<th>avg R</th><th>avg hours</th><th>fees</th><th>funding</th></tr>")
    body = []
    for name, r in t.iterrows():
        pnl_cls = "neg" if r["net_pnl"] < 0 else "pos"
        body.append(f"<tr><th>{name}</th><td>{int(r['trades']):,}</td><td>{_pct(r['win_rate'] * 100)}</td>"
                    f"<td class='{pnl_cls}'>{_num(r['net_pnl'])}</td><td>{_pct(r['avg_return_pct'])}</td>"
                    f"<td>{_num(r['avg_r'])}</td><td>{_num(r['avg_hours'], 1)}</td><td>{_num(r['fees'])}</td>"
                    f"<td>{_num(r['funding'])}</td></tr>")
    return f"<table class='split'>{head}{''.join(body)}</table>"


def _num(v: float, digits: int = 2) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:,.{digits}f}"


def _pct(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:,.2f} %"


def monthly_table(equity: pd.Series, initial_cash: float) -> str:
    """Monthly returns as a year × month table, cells coloured by sign and size."""
    m = monthly_returns(equity, initial_cash)
    if m.empty:
        return "<p>No equity.</p>"
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    scale = float(np.nanmax(np.abs(m[list(range(1, 13))].to_numpy()))) or 1.0
    head = "<tr><th></th>" + "".join(f"<th>{x}</th>" for x in months) + "<th>year</th></tr>"
    body = []
    for year, row in m.iterrows():
        cells = []
        for col in [*range(1, 13), "year"]:
            v = row[col]
            if not np.isfinite(v):
                cells.append("<td></td>")
                continue
            a = min(abs(v) / scale, 1.0) * 0.75 + 0.08
            rgb = "38,166,154" if v >= 0 else "229,57,53"
            cells.append(f"<td style='background:rgba({rgb},{a:.2f})'>{v * 100:+.2f} %</td>")
        body.append(f"<tr><th>{year}</th>{''.join(cells)}</tr>")
    return f"<table class='monthly'>{head}{''.join(body)}</table>"


def risk_table(equity: pd.DataFrame, step: pd.Timedelta) -> str:
    """Time in each risk state, with the last episode ("HALTED since …" when the run ends in it)."""
    if "risk_state" not in equity:
        return "<p>No risk states recorded.</p>"
    rows = risk_state_summary(equity["risk_state"], step)
    body = []
    for r in rows:
        hours = r["bars"] * step.total_seconds() / 3600
        start = f"{r['last_start']:%Y-%m-%d %H:%M}"
        last = f"since {start} (until the end)" if r["ongoing"] else f"{start} → {r['last_end']:%Y-%m-%d %H:%M}"
        body.append(f"<tr><th>{html.escape(r['state'])}</th><td>{r['share'] * 100:.1f} %</td><td>{hours:,.0f} h</td>"
                    f"<td>{r['episodes']:,}</td><td>{last}</td></tr>")
    note = ""
    final = rows[-1] if rows else None
    ongoing = [r for r in rows if r["ongoing"] and r["state"] != "ACTIVE"]
    if ongoing and final is not None:
        note = (f"<p class='warn'>{html.escape(ongoing[0]['state'])} since "
                f"{ongoing[0]['last_start']:%Y-%m-%d %H:%M} UTC: no new exposure until the end of the test.</p>")
    return (f"{note}<table class='risk'><tr><th>state</th><th>share of time</th><th>time</th><th>episodes</th>"
            f"<th>last episode (UTC)</th></tr>{''.join(body)}</table>")


TRADE_TABLE_COLUMNS = ("entry_time", "exit_time", "side", "qty", "entry_price", "exit_price", "stop",
                       "exit_reason", "pnl", "return_pct", "r_multiple", "mae_pct", "mfe_pct", "duration_hours",
                       "fees", "funding")


def trades_table(trades: pd.DataFrame, max_rows: int = 2000) -> str:
    """The trades (:func:`enrich_trades` output) as an HTML table; a click on a row zooms the chart
    to the trade. Long lists keep their first and last ``max_rows / 2`` rows."""
    if trades is None or len(trades) == 0:
        return "<p>No trades.</p>"
    t = trades.reset_index(drop=True)
    note = ""
    if len(t) > max_rows:
        half = max_rows // 2
        note = f"<p>{len(t):,} trades: showing the first and last {half:,}; all are in trades.csv.</p>"
        t = pd.concat([t.head(half), t.tail(half)])
    cols = [c for c in TRADE_TABLE_COLUMNS if c in t]
    labels = {"return_pct": "return %", "r_multiple": "R", "mae_pct": "MAE %", "mfe_pct": "MFE %",
              "duration_hours": "hours"}
    head = "<th>#</th>" + "".join(f"<th>{labels.get(c, c)}</th>" for c in cols)
    body: list[str] = []
    for i, row in t[cols].iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if c.endswith("_time"):
                text = pd.Timestamp(v).strftime("%Y-%m-%d %H:%M")
            elif isinstance(v, float | np.floating):
                if not np.isfinite(v):
                    text = "–"
                elif c in ("pnl", "fees", "funding", "return_pct", "r_multiple", "mae_pct", "mfe_pct",
                           "duration_hours") or abs(v) >= 100:
                    text = f"{v:,.2f}"
                else:
                    text = f"{v:.6g}"
            else:
                text = html.escape(str(v))
            cls = ""
            if c in ("pnl", "return_pct", "r_multiple") and isinstance(v, float | np.floating) and np.isfinite(v):
                cls = ' class="neg"' if v < 0 else ' class="pos"'
            cells.append(f"<td{cls}>{text}</td>")
        body.append(f"<tr data-trade='{i}'><td>{i}</td>{''.join(cells)}</tr>")
    return f'{note}<table class="trades"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0 16px 24px;color:#222}
h1{font-size:20px;margin:14px 0 4px} h2{font-size:16px;margin:20px 0 6px}
.meta{color:#666;font-size:13px}
.bar{display:flex;gap:6px;align-items:center;margin:8px 0;font-size:13px;flex-wrap:wrap}
.bar button{font-size:12px;padding:2px 8px;border:1px solid #bbb;background:#fafafa;border-radius:3px;cursor:pointer}
.bar button:hover{background:#eee}
#info{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;color:#333;min-height:34px;white-space:pre-wrap}
.chartbox{position:relative;border:1px solid #e4e4e4}
.paneltitle{position:absolute;left:8px;z-index:5;font-size:12px;color:#444;background:rgba(255,255,255,.85);
  padding:1px 5px;pointer-events:none}
.legend{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start;font-size:12px;margin:6px 0 2px}
.legend .item{display:flex;align-items:center;gap:5px}
.sw{display:inline-block;width:14px;height:10px;border:1px solid rgba(0,0,0,.2)}
.scale{display:flex;flex-direction:column;gap:2px}
.scale .grad{width:260px;height:12px;border:1px solid #ccc}
.scale .ticks{position:relative;width:260px;height:14px;font-size:11px;color:#444}
.scale .ticks span{position:absolute;transform:translateX(-50%);white-space:nowrap}
.grid{display:flex;gap:28px;align-items:flex-start;flex-wrap:wrap}
table{border-collapse:collapse;font-size:12px}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
table.stats th,table.split th,table.risk th,table.monthly th{text-align:left;color:#555;font-weight:500}
table.trades thead th{position:sticky;top:0;background:#fafafa}
table.trades tbody tr{cursor:pointer} table.trades tbody tr:hover{background:#f3f7ff}
.tradewrap{max-height:600px;overflow:auto;border:1px solid #eee}
td.neg{color:#c62828} td.pos{color:#2e7d32} .warn{color:#b71c1c;font-weight:600}
#error{color:#b71c1c;font-weight:600}
footer{margin-top:24px;font-size:11px;color:#777}
"""


def render_page(meta_json: dict[str, Any], payload: str, stats: Mapping[str, Any], trades: pd.DataFrame,
                result: BacktestResult, title: str, chart_js_src: str, step: pd.Timedelta,
                meta: Iterable[str] = ()) -> str:
    """The whole HTML document. ``chart_js_src`` is the relative URL of the chart library."""
    meta_html = "".join(f"<div class='meta'>{html.escape(m)}</div>" for m in meta)
    script = _JS_FILE.read_text(encoding="utf-8")
    data_json = json.dumps(meta_json, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    eq = result.equity
    return f"""<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>{meta_html}
<div id="error"></div>
<div class="bar"><span>window:</span>
<button data-span="43200">12h</button><button data-span="86400">1D</button><button data-span="604800">1W</button>
<button data-span="2592000">1M</button><button data-span="7776000">3M</button><button data-span="0">all</button>
<span style="margin-left:12px">trade:</span><button id="prevTrade">◀ prev</button><button id="nextTrade">next ▶</button>
<span style="margin-left:12px;color:#666">drag to pan, wheel to zoom, click a trade row below to jump to it (times UTC)</span></div>
<div id="info"></div>
<div class="chartbox" id="pricebox"><div class="paneltitle" style="top:4px">price (candles at the data's own timeframe)</div>
<div id="price"></div></div>
<div class="legend" id="legend"></div>
<div class="chartbox" id="panelbox" style="margin-top:8px"><div id="panels"></div></div>
<div class="grid">
<div><h2>Statistics</h2>{stats_table(stats)}</div>
<div><h2>Long / short</h2>{split_table(trades)}
<h2>Risk states</h2>{risk_table(eq, step)}
<h2>Monthly returns</h2>{monthly_table(eq["equity"], float(result.initial_cash))}</div>
</div>
<h2>Trades</h2><div class="tradewrap">{trades_table(trades)}</div>
<footer>Charts: <a href="https://www.tradingview.com/">TradingView</a> Lightweight Charts™ (Apache-2.0), loaded
from {html.escape(chart_js_src)}.</footer>
<script src="{html.escape(chart_js_src)}"></script>
<script id="cascade-meta" type="application/json">{data_json}</script>
<script id="cascade-data" type="application/octet-stream">{payload}</script>
<script>{script}</script>
</body></html>"""


def render_report(frame: pd.DataFrame, signals: pd.DataFrame | None, result: BacktestResult,
                  stats: Mapping[str, Any], path: Path | str, title: str = "cascade backtest", *,
                  zones: Any = None, heatmap: Any = None, meta: Iterable[str] = (),
                  max_heatmap_columns: int = 400, assets_dir: Path | str | None = None) -> Path:
    """Write the report for one run to ``path`` and return it.

    Args:
        frame: the traded frame (frame contract; OHLC drawn at its own timeframe).
        signals: the strategy's signal frame (``target`` drawn as the exposure pane), or None.
        result: the engine's `BacktestResult` (trades, per-bar equity with ``risk_state``).
        stats: `backtests.metrics.compute_stats` output.
        path: where to write the ``.html`` file (normally ``<results>/<run>/report.html``).
        title: page title.
        zones: support/resistance zones: `level_features` output (zones as known at each bar),
            or rectangles (see :func:`zone_rects`).
        heatmap: a liquidation-map snapshot with ``prices``, ``times``, ``long_usd``, ``short_usd``
            (e.g. `LiqMapSnapshot`).
        meta: extra one-line captions under the title (strategy, params, data).
        max_heatmap_columns: heatmap time columns at most.
        assets_dir: the folder holding the results' shared chart library; default
            ``path``'s grandparent (the results folder) ``/_assets``.
    """
    out = Path(path)
    assets = Path(assets_dir) if assets_dir is not None else out.resolve().parent.parent / ASSETS_DIRNAME
    js = install_assets(assets)
    src = Path(os.path.relpath(js, out.resolve().parent)).as_posix()
    trades = enrich_trades(result.trades, frame)
    meta_json, payload = page_data(frame, signals, result, trades, zones, heatmap, max_heatmap_columns)
    step = _bar_step(pd.DatetimeIndex(frame.index))
    out.write_text(render_page(meta_json, payload, stats, trades, result, title, src, step, meta), encoding="utf-8")
    return out
