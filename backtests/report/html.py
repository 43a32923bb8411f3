"""A self-contained HTML report of one backtest (plotly.js inlined: the file opens offline).

Top to bottom: candles with support/resistance zones, the estimated liquidation heatmap as an
underlay, entries/exits/stop levels; the strategy's target exposure; equity; drawdown;
cumulative funding PnL and fees; then the stats table and the trades table.

File size is kept sane by display-only downsampling: candles are resampled to at most
``max_candles`` bars (5m over a year becomes 4h bars), equity/drawdown lines follow the same
bins (drawdown keeps each bin's worst value), and the heatmap keeps at most
``max_heatmap_columns`` time columns. Trade markers always sit at their exact times and prices.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backtests.metrics import drawdown

if TYPE_CHECKING:
    from backtests.engines import BacktestResult

DISPLAY_STEPS = ("5min", "15min", "30min", "1h", "2h", "4h", "8h", "12h", "1D", "3D", "1W")
"""Candidate display bar lengths, finest first; the first that fits ``max_candles`` is used."""

EXIT_STYLE = {  # exit_reason -> (marker colour, label)
    "signal": ("#455a64", "signal exit"),
    "stop": ("#e53935", "stop"),
    "take_profit": ("#43a047", "take profit"),
    "liquidation": ("#000000", "LIQUIDATION"),
    "end": ("#9e9e9e", "end of test"),
    "protection": ("#fb8c00", "protection"),
}


# -- Display helpers -----------------------------------------------------------------------


def _naive(index: pd.Index) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(index)
    return idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx


def _ms(index: pd.Index | pd.Series | np.ndarray) -> np.ndarray:
    """Milliseconds since the epoch (UTC) as float64: plotly's date axes read them directly, and
    numeric arrays are embedded as compact base64 (dates as strings are three times larger)."""
    idx = pd.DatetimeIndex(pd.to_datetime(index, utc=True))
    return (idx.as_unit("ns").asi8 // 1_000_000).astype(np.float64)


def _bar_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    if len(index) < 2:
        return pd.Timedelta(hours=1)
    return pd.Timedelta(int(np.median(np.diff(index[:1000].as_unit("ns").asi8))), "ns")


def display_rule(step: pd.Timedelta, span: pd.Timedelta, max_candles: int) -> pd.Timedelta:
    """The finest display bar length, not finer than ``step``, that keeps ``span`` within ``max_candles``."""
    for rule in DISPLAY_STEPS:
        td = pd.Timedelta(rule)
        if td >= step and span / td <= max_candles:
            return td
    return max(step, pd.Timedelta(DISPLAY_STEPS[-1]))


def resample_ohlc(frame: pd.DataFrame, rule: pd.Timedelta) -> pd.DataFrame:
    """OHLC candles at ``rule`` (labels are bin open times, UTC-aligned)."""
    agg = {"open": "first", "high": "max", "low": "min", "close": "last"}
    return frame[list(agg)].resample(rule).agg(agg).dropna(subset=["open"])


def _fmt_value(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return html.escape(str(value))
    pct_keys = ("return", "cagr", "drawdown", "win_rate", "exposure")
    if any(k in key for k in pct_keys) and "days" not in key:
        return f"{value * 100:,.2f} %"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    return f"{value:,.2f}" if abs(value) >= 100 else f"{value:,.4g}"


# -- Traces --------------------------------------------------------------------------------


def _zone_frame(zones: Any) -> pd.DataFrame | None:
    """Rectangles from a DataFrame, or from `strategies.features.levels.Zone`-like objects."""
    if zones is None or isinstance(zones, pd.DataFrame):
        return zones
    rows = [{"lower": z.lo, "upper": z.hi, "kind": getattr(z, "role", "level"),
             "start": getattr(z, "start", None), "end": getattr(z, "end", None)} for z in zones]
    return pd.DataFrame(rows) if rows else None


def zone_traces(zones: pd.DataFrame | None, frame_start: float, frame_end: float,
                max_zones: int = 400) -> list[go.Scatter]:
    """Support/resistance zones as shaded rectangles (one filled scatter per kind, cheap to draw).

    ``zones`` rows need ``lower``/``upper`` prices (or ``lo``/``hi``); optional ``start``/``end``
    times (default: the whole chart, ``frame_start``/``frame_end`` in epoch ms) and ``kind`` (``support``/``resistance``; also read from ``role``).
    """
    if zones is None or len(zones) == 0:
        return []
    z = zones.rename(columns={"low": "lower", "high": "upper", "lo": "lower", "hi": "upper", "role": "kind"})
    z = z.tail(max_zones)
    starts = _ms(z["start"]) if "start" in z else None
    ends = _ms(z["end"]) if "end" in z else None
    kinds = z["kind"].astype(str).to_numpy() if "kind" in z else np.full(len(z), "level")
    styles = {"support": "rgba(38,166,154,0.16)", "resistance": "rgba(239,83,80,0.16)",
              "level": "rgba(121,134,203,0.16)"}
    traces = []
    for kind, fill in styles.items():
        xs: list[Any] = []
        ys: list[Any] = []
        for i in np.flatnonzero(kinds == kind):
            x0 = starts[i] if starts is not None and np.isfinite(starts[i]) else frame_start
            x1 = ends[i] if ends is not None and np.isfinite(ends[i]) else frame_end
            lo, hi = float(z["lower"].iloc[i]), float(z["upper"].iloc[i])
            xs += [x0, x1, x1, x0, x0, np.nan]
            ys += [lo, lo, hi, hi, lo, np.nan]
        if xs:
            traces.append(go.Scatter(x=np.asarray(xs), y=np.asarray(ys), mode="lines", fill="toself", fillcolor=fill,
                                     line={"width": 0.5, "color": fill.replace("0.16", "0.5")},
                                     name=f"{kind} zones", hoverinfo="skip", legendgroup="zones"))
    return traces


def level_band_traces(levels: pd.DataFrame, rule: pd.Timedelta, step: pd.Timedelta) -> list[go.Scatter]:
    """The strategy-time support/resistance zones as shaded bands that evolve bar by bar.

    ``levels`` is `strategies.features.levels.level_features` output (``level_{up,dn}_{i}_{lo,hi}``):
    at each bar, the zones above (resistance, red) and below (support, green) the close that were
    known at that close. Each display bin shows the zone as of its last bar, drawn as a rectangle
    over the bin.
    """
    traces: list[go.Scatter] = []
    for side, kind, rgb in (("up", "resistance", "239,83,80"), ("dn", "support", "38,166,154")):
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        for slot in (1, 2, 3):
            lo_col, hi_col = f"level_{side}_{slot}_lo", f"level_{side}_{slot}_hi"
            if lo_col not in levels or hi_col not in levels:
                continue
            band = levels[[lo_col, hi_col]].astype(float)
            if rule != step:
                band = band.resample(rule).last()
            t0 = _ms(band.index)
            t1 = t0 + rule / pd.Timedelta(milliseconds=1)
            lo, hi = band[lo_col].to_numpy(), band[hi_col].to_numpy()
            ok = np.isfinite(lo) & np.isfinite(hi)
            # one polygon per run of bins holding the same zone (lower edge forward, upper edge back);
            # a run ends where the slot has no zone or jumps to a zone not overlapping the previous one
            jump = np.zeros(len(lo), dtype=bool)
            jump[1:] = (lo[1:] > hi[:-1]) | (hi[1:] < lo[:-1])
            starts = np.flatnonzero(ok & (jump | ~np.concatenate([[False], ok[:-1]])))
            ends = np.append(starts[1:], len(lo))
            for a, end in zip(starts, ends, strict=True):
                b = a + 1
                while b < end and ok[b]:
                    b += 1
                fx = np.column_stack([t0[a:b], t1[a:b]]).ravel()
                xs.append(np.concatenate([fx, fx[::-1], [fx[0], np.nan]]))
                ys.append(np.concatenate([np.repeat(lo[a:b], 2), np.repeat(hi[a:b], 2)[::-1], [lo[a], np.nan]]))
        if xs:
            traces.append(go.Scatter(x=np.concatenate(xs), y=np.concatenate(ys).astype(np.float32), mode="lines",
                                     fill="toself", fillcolor=f"rgba({rgb},0.24)", line={"width": 0},
                                     name=f"{kind} zones (as known then)", hoverinfo="skip", legendgroup="zones"))
    return traces


def _heatmap_part(heatmap: Any, name: str) -> Any:
    return heatmap[name] if isinstance(heatmap, Mapping) else getattr(heatmap, name)


def heatmap_trace(heatmap: Any, max_columns: int = 400, step: pd.Timedelta | None = None,
                  price_range: tuple[float, float] | None = None, max_rows: int = 300) -> go.Heatmap | None:
    """The estimated liquidation map (long + short USD) as a semi-transparent underlay.

    ``heatmap`` has ``prices`` (bin centres), ``times`` (column times) and ``long_usd``/``short_usd``
    arrays of shape (times, prices) or (prices, times). Colour follows the square root of the USD in
    a cell, clipped at the 99th percentile. A column
    is the map after the close of its bar (``times`` + ``step``) and is drawn until the next one.
    Bins outside ``price_range`` (the chart's visible range) are dropped to keep the file small.
    """
    if heatmap is None:
        return None
    prices = np.asarray(_heatmap_part(heatmap, "prices"), dtype=float)
    times = _ms(_heatmap_part(heatmap, "times"))
    total = (np.asarray(_heatmap_part(heatmap, "long_usd"), dtype=float)
             + np.asarray(_heatmap_part(heatmap, "short_usd"), dtype=float))
    if total.size == 0 or len(times) == 0:
        return None
    if total.shape == (len(times), len(prices)):
        total = total.T
    if total.shape != (len(prices), len(times)):
        raise ValueError(f"heatmap arrays have shape {total.shape}, expected ({len(prices)}, {len(times)})")
    if len(times) > max_columns:
        keep = np.linspace(0, len(times) - 1, max_columns).round().astype(int)
        total, times = total[:, keep], times[keep]
    if step is not None:
        times = times + step / pd.Timedelta(milliseconds=1)
    # cell edges: each column holds until the next snapshot; bins from the snapshot's edges if given
    spacing = times[-1] - times[-2] if len(times) > 1 else 3_600_000.0
    x_edges = np.append(times, times[-1] + spacing)
    y_edges = getattr(heatmap, "edges", None) if not isinstance(heatmap, Mapping) else heatmap.get("edges")
    if y_edges is None or len(y_edges) != len(prices) + 1:
        mid = (prices[1:] + prices[:-1]) / 2 if len(prices) > 1 else prices
        y_edges = np.concatenate([[2 * prices[0] - mid[0]], mid, [2 * prices[-1] - mid[-1]]]) \
            if len(prices) > 1 else np.array([prices[0] * 0.999, prices[0] * 1.001])
    y_edges = np.asarray(y_edges, dtype=float)
    if price_range is not None:
        rows = np.flatnonzero((y_edges[1:] >= price_range[0]) & (y_edges[:-1] <= price_range[1]))
        if rows.size == 0:
            return None
        total, y_edges = total[rows[0]:rows[-1] + 1], y_edges[rows[0]:rows[-1] + 2]
    # merge adjacent price bins so that the chart's ~700 px hold at most max_rows rows
    if total.shape[0] > max_rows:
        k = math.ceil(total.shape[0] / max_rows)
        pad = (-total.shape[0]) % k
        total = np.pad(total, ((0, pad), (0, 0))).reshape(-1, k, total.shape[1]).sum(axis=1)
        y_edges = np.append(y_edges[:-1][::k], y_edges[-1])  # the padded bins are empty
    z = np.clip(total, 0.0, None)
    top = float(np.nanpercentile(z[z > 0], 99)) if np.any(z > 0) else 1.0
    z = np.where(z > 0, np.minimum(z, top), np.nan).astype(np.float32)
    return go.Heatmap(x=x_edges, y=y_edges, z=z, zmin=0.0, zmax=top, colorscale=_HEAT_SCALE,
                      showscale=False, hoverongaps=False, name="liquidation map",
                      hovertemplate="%{y:,.0f}<br>%{z:,.0f} USD<extra>liq map</extra>")


# the colour of a cell follows sqrt(USD / max): stops are placed at squared positions, so a few huge
# clusters do not wash out the rest
_HEAT_PALETTE = ((255, 235, 59, 0.0), (255, 193, 7, 0.22), (255, 87, 34, 0.4), (183, 28, 28, 0.6))


def _heat_scale(n: int = 12) -> list[list[Any]]:
    stops = []
    for f in np.linspace(0.0, 1.0, n):
        pos = f * (len(_HEAT_PALETTE) - 1)
        i = min(int(pos), len(_HEAT_PALETTE) - 2)
        w = pos - i
        c = [a + (b - a) * w for a, b in zip(_HEAT_PALETTE[i], _HEAT_PALETTE[i + 1], strict=True)]
        stops.append([float(f * f), f"rgba({c[0]:.0f},{c[1]:.0f},{c[2]:.0f},{c[3]:.3f})"])
    return stops


_HEAT_SCALE = _heat_scale()


def trade_traces(trades: pd.DataFrame, marker_size: int = 11) -> list[go.Scatter]:
    """Entry triangles (up = long, down = short), exit markers by reason and stop-level segments."""
    if trades is None or len(trades) == 0:
        return []
    t = trades.reset_index(drop=True)
    entry_x, exit_x = _ms(t["entry_time"]), _ms(t["exit_time"])
    side = t["side"].to_numpy(dtype=float)
    hover = [f"#{i} {'long' if s > 0 else 'short'} {q:.6g}<br>pnl {p:,.2f}<br>{r}"
             for i, (s, q, p, r) in enumerate(zip(side, t["qty"], t["pnl"], t["exit_reason"], strict=True))]
    hover_arr = np.asarray(hover, dtype=object)
    traces: list[go.Scatter] = []
    for sign, symbol, color, label in ((1, "triangle-up", "#00897b", "long entry"),
                                       (-1, "triangle-down", "#d81b60", "short entry")):
        m = side == sign
        if m.any():
            traces.append(go.Scatter(
                x=entry_x[m], y=t["entry_price"].to_numpy(dtype=float)[m], mode="markers", name=label,
                marker={"symbol": symbol, "size": marker_size, "color": color, "line": {"width": 1, "color": "white"}},
                text=hover_arr[m], hovertemplate="%{text}<br>entry %{y:,.2f}<extra></extra>"))
    reasons = t["exit_reason"].astype(str).to_numpy()
    for reason in pd.unique(reasons):
        color, label = EXIT_STYLE.get(reason, ("#6d4c41", reason))
        m = reasons == reason
        traces.append(go.Scatter(
            x=exit_x[m], y=t["exit_price"].to_numpy(dtype=float)[m], mode="markers", name=label,
            marker={"symbol": "x-thin" if reason != "liquidation" else "x", "size": marker_size - 1, "color": color,
                    "line": {"width": 2.5, "color": color}},
            text=hover_arr[m], hovertemplate="%{text}<br>exit %{y:,.2f}<extra></extra>"))
    stops = t["stop"].to_numpy(dtype=float)
    has = np.isfinite(stops)
    xs = np.column_stack([entry_x[has], exit_x[has], np.full(has.sum(), np.nan)]).ravel()
    ys = np.column_stack([stops[has], stops[has], np.full(has.sum(), np.nan)]).ravel()
    if xs.size:
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", name="stop level",
                                 line={"color": "#e53935", "width": 1.5, "dash": "dot"},
                                 hovertemplate="stop %{y:,.2f}<extra></extra>"))
    return traces


# -- The figure ----------------------------------------------------------------------------


def build_figure(frame: pd.DataFrame, signals: pd.DataFrame | None, result: BacktestResult,
                 zones: Any = None, heatmap: Any = None, *, max_candles: int = 4000,
                 max_heatmap_columns: int = 400, max_zone_bins: int = 1000, title: str = "") -> go.Figure:
    """The five-panel figure: price, exposure, equity, drawdown, funding and fees."""
    step = _bar_step(pd.DatetimeIndex(frame.index))
    span = frame.index[-1] - frame.index[0] + step if len(frame) else step
    rule = display_rule(step, span, max_candles)
    candles = frame if rule == step else resample_ohlc(frame, rule)
    step_ms = step / pd.Timedelta(milliseconds=1)
    cx = _ms(candles.index)
    fig = make_subplots(rows=5, cols=1, shared_xaxes=True, vertical_spacing=0.018,
                        row_heights=[0.5, 0.07, 0.17, 0.13, 0.13],
                        subplot_titles=("", "target exposure", "equity", "drawdown", "funding PnL & fees"))
    lo = float(candles["low"].min()) if len(candles) else 0.0
    hi = float(candles["high"].max()) if len(candles) else 1.0
    pad = (hi - lo) * 0.04
    price_range = (lo - pad, hi + pad)

    hm = heatmap_trace(heatmap, max_heatmap_columns, step, price_range) if heatmap is not None else None
    if hm is not None:
        fig.add_trace(hm, row=1, col=1)
    if isinstance(zones, pd.DataFrame) and "level_up_1_lo" in zones:
        zone_list = level_band_traces(zones, display_rule(step, span, max_zone_bins), step)
    else:
        x_end = cx[-1] + rule / pd.Timedelta(milliseconds=1) if len(cx) else np.nan
        zone_list = zone_traces(_zone_frame(zones), cx[0] if len(cx) else np.nan, x_end)
    for trace in zone_list:
        fig.add_trace(trace, row=1, col=1)
    candle_name = "price" if rule == step else f"price ({_fmt_rule(rule)} bars for display)"
    fig.add_trace(go.Candlestick(
        x=cx, open=candles["open"].to_numpy(), high=candles["high"].to_numpy(), low=candles["low"].to_numpy(),
        close=candles["close"].to_numpy(), name=candle_name, increasing={"line": {"color": "#26a69a", "width": 1}},
        decreasing={"line": {"color": "#ef5350", "width": 1}}), row=1, col=1)
    for trace in trade_traces(result.trades, marker_size=11 if len(result.trades) <= 300 else 7):
        fig.add_trace(trace, row=1, col=1)

    if signals is not None and "target" in signals and len(signals):
        target = signals["target"].astype(float)
        tgt = target.resample(rule).last() if rule != step else target
        fig.add_trace(go.Scatter(x=_ms(tgt.index), y=tgt.to_numpy(np.float32), mode="lines",
                                 line={"shape": "hv", "width": 1, "color": "#5c6bc0"}, name="target",
                                 fill="tozeroy", fillcolor="rgba(92,107,192,0.2)"), row=2, col=1)

    eq = result.equity
    if "risk_state" in eq:
        # shade the bars where protections blocked new exposure (REDUCING / HALTED)
        state = eq["risk_state"].astype(str)
        blocked = (state != "ACTIVE").astype(np.float32)
        if rule != step:
            blocked = blocked.resample(rule).max()
        if blocked.any():
            fig.add_trace(go.Scatter(x=_ms(blocked.index), y=blocked.to_numpy(np.float32), mode="lines",
                                     line={"shape": "hv", "width": 0}, fill="tozeroy",
                                     fillcolor="rgba(120,120,120,0.35)", name="protection active",
                                     hoverinfo="skip"), row=2, col=1)
    equity = eq["equity"].astype(float)
    dd = drawdown(equity, float(result.initial_cash))
    if rule != step:
        equity = equity.resample(rule).last().dropna()
        dd = dd.resample(rule).max().dropna()
    # equity is marked at the bar close: plot it there
    fig.add_trace(go.Scatter(x=_ms(equity.index) + step_ms, y=equity.to_numpy(), mode="lines", name="equity",
                             line={"color": "#1e88e5", "width": 1.3}), row=3, col=1)
    fig.add_hline(y=float(result.initial_cash), line={"color": "#9e9e9e", "width": 1, "dash": "dot"},
                  row=3, col=1)
    fig.add_trace(go.Scatter(x=_ms(dd.index) + step_ms, y=-dd.to_numpy() * 100, mode="lines", name="drawdown %",
                             line={"color": "#e53935", "width": 1}, fill="tozeroy",
                             fillcolor="rgba(229,57,53,0.25)"), row=4, col=1)
    for col, color, label in (("funding_pnl", "#8e24aa", "funding PnL"), ("fees", "#fb8c00", "fees paid")):
        if col in eq:
            series = eq[col].astype(float)
            series = series.resample(rule).last().dropna() if rule != step else series
            sign = -1.0 if col == "fees" else 1.0
            fig.add_trace(go.Scatter(x=_ms(series.index) + step_ms, y=sign * series.to_numpy(), mode="lines",
                                     name=label + (" (negative)" if sign < 0 else ""),
                                     line={"color": color, "width": 1.2}), row=5, col=1)

    fig.update_layout(
        title={"text": html.escape(title), "x": 0.01}, height=1500, template="plotly_white",
        hovermode="closest", margin={"l": 60, "r": 20, "t": 90, "b": 30},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "left", "x": 0},
        xaxis_rangeslider_visible=False,
    )
    fig.update_xaxes(type="date", showspikes=True, spikemode="across", spikethickness=1)
    fig.update_yaxes(title_text="price (UTC times)", range=list(price_range), row=1, col=1)
    fig.update_yaxes(range=[-1.05, 1.05], row=2, col=1)
    fig.update_yaxes(ticksuffix=" %", row=4, col=1)
    return fig


def _fmt_rule(rule: pd.Timedelta) -> str:
    minutes = int(rule / pd.Timedelta(minutes=1))
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


# -- Tables and page -----------------------------------------------------------------------


def stats_table(stats: Mapping[str, Any]) -> str:
    """Stats as a two-column HTML table (percentages for fractions, thousands separators)."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt_value(str(k), v)}</td></tr>"
                   for k, v in stats.items())
    return f'<table class="stats">{rows}</table>'


def trades_table(trades: pd.DataFrame, max_rows: int = 2000) -> str:
    """The trades as an HTML table; long lists keep their first and last ``max_rows / 2`` rows."""
    if trades is None or len(trades) == 0:
        return "<p>No trades.</p>"
    t = trades.reset_index(drop=True)
    note = ""
    if len(t) > max_rows:
        half = max_rows // 2
        note = f"<p>{len(t):,} trades: showing the first and last {half:,}; all are in trades.csv.</p>"
        t = pd.concat([t.head(half), t.tail(half)])
    cols = [c for c in ("entry_time", "exit_time", "side", "qty", "entry_price", "exit_price", "stop",
                        "exit_reason", "pnl", "fees", "funding") if c in t]
    head = "<th>#</th>" + "".join(f"<th>{c}</th>" for c in cols)
    body: list[str] = []
    for i, row in t[cols].iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if c.endswith("_time"):
                text = pd.Timestamp(v).strftime("%Y-%m-%d %H:%M")
            elif c == "side":
                text = "long" if float(v) > 0 else "short"
            elif isinstance(v, float | np.floating):
                text = "–" if not np.isfinite(v) else (f"{v:,.2f}" if abs(v) >= 100 or c in ("pnl", "fees", "funding")
                                                       else f"{v:.6g}")
            else:
                text = html.escape(str(v))
            cls = ' class="neg"' if c == "pnl" and float(v) < 0 else (' class="pos"' if c == "pnl" else "")
            cells.append(f"<td{cls}>{text}</td>")
        body.append(f"<tr><td>{i}</td>{''.join(cells)}</tr>")
    return f'{note}<table class="trades"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0 16px;color:#222}
h1{font-size:20px;margin:14px 0 4px} h2{font-size:16px;margin:18px 0 6px}
.meta{color:#666;font-size:13px}
.grid{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
table{border-collapse:collapse;font-size:12px}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
table.stats th{text-align:left;color:#555;font-weight:500}
table.trades thead th{position:sticky;top:0;background:#fafafa}
.tradewrap{max-height:600px;overflow:auto;border:1px solid #eee}
td.neg{color:#c62828} td.pos{color:#2e7d32}
"""


def render_page(fig: go.Figure, stats: Mapping[str, Any], trades: pd.DataFrame, title: str,
                meta: Iterable[str] = ()) -> str:
    """The whole HTML document (plotly.js inlined)."""
    plot = fig.to_html(full_html=False, include_plotlyjs=True, config={"scrollZoom": True, "displaylogo": False})
    meta_html = "".join(f"<div class='meta'>{html.escape(m)}</div>" for m in meta)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{meta_html}{plot}"
            f"<div class='grid'><div><h2>Statistics</h2>{stats_table(stats)}</div>"
            f"<div style='flex:1;min-width:600px'><h2>Trades</h2><div class='tradewrap'>"
            f"{trades_table(trades)}</div></div></div></body></html>")


def render_report(frame: pd.DataFrame, signals: pd.DataFrame | None, result: BacktestResult,
                  stats: Mapping[str, Any], path: Path | str, title: str = "cascade backtest", *,
                  zones: Any = None, heatmap: Any = None, meta: Iterable[str] = (),
                  max_candles: int = 4000, max_heatmap_columns: int = 400) -> Path:
    """Write the report for one run to ``path`` and return it.

    Args:
        frame: the traded frame (frame contract; only OHLC is drawn).
        signals: the strategy's signal frame (``target`` drawn as the exposure panel), or None.
        result: the engine's `BacktestResult`.
        stats: `backtests.metrics.compute_stats` output.
        path: where to write the ``.html`` file.
        title: page title.
        zones: support/resistance zones: `level_features` output (bands as known at each bar),
            a list of `Zone` (from `zones_at`), or a DataFrame of rectangles (see `zone_traces`).
        heatmap: a liquidation-map snapshot with ``prices``, ``times``, ``long_usd``, ``short_usd``.
        meta: extra one-line captions under the title (strategy, params, data).
        max_candles: display candles at most (coarser bars are used above).
        max_heatmap_columns: heatmap time columns at most.
    """
    fig = build_figure(frame, signals, result, zones, heatmap, max_candles=max_candles,
                       max_heatmap_columns=max_heatmap_columns)
    out = Path(path)
    out.write_text(render_page(fig, stats, result.trades, title, meta), encoding="utf-8")
    return out
