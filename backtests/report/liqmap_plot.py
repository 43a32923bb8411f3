"""Liquidation heatmap figures: interactive plotly (HTML) and static matplotlib (PNG).

The layout is the one traders know from Coinglass and Hyblock. Time runs along x and price along
y. Colour is the estimated liquidation notional per price bin, summed over longs and shorts, on
a log scale so that clusters stand out from the background. The close is drawn on top. At the
right sits the map at one bar as a side profile: long liquidation levels below price, short
levels above, in two colours. The estimator is :mod:`strategies.features.liquidation_map`
(docs/methods.md §A.3).

Only the display is downsampled. Prices are summed into at most ``max_rows`` rows, and the
close line is thinned to at most ``max_points`` points, keeping each group's high and low.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from strategies.features.liquidation_map import LiqMapSnapshot

LONG_COLOUR = "#ff6b35"  # long liquidations (below price): sell-side fuel
SHORT_COLOUR = "#2ec4f1"  # short liquidations (above price): buy-side fuel
PRICE_COLOUR = "#ffffff"
BACKGROUND = "#0f1020"
PLOTLY_SCALE = "Viridis"
MPL_CMAP = "viridis"


def _naive(times: Any) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(times)
    return idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx


def _profile_row(snapshot: LiqMapSnapshot, profile_at: pd.Timestamp | None) -> int:
    """Row of ``snapshot`` for the profile: the last column at or before ``profile_at``."""
    if profile_at is None or len(snapshot.times) == 0:
        return len(snapshot.times) - 1
    at = pd.Timestamp(profile_at)
    if at.tzinfo is None and snapshot.times.tz is not None:
        at = at.tz_localize("UTC")
    pos = int(snapshot.times.searchsorted(at, side="right")) - 1
    return max(pos, 0)


def _price_window(frame: pd.DataFrame, snapshot: LiqMapSnapshot, margin: float) -> np.ndarray:
    """Mask of bins inside the frame's price range widened by ``margin`` (where levels sit)."""
    lo = float(frame["low"].min()) * (1.0 - margin)
    hi = float(frame["high"].max()) * (1.0 + margin)
    return (snapshot.prices >= lo) & (snapshot.prices <= hi)


def _rows(snapshot: LiqMapSnapshot, mask: np.ndarray, max_rows: int) -> tuple[np.ndarray, np.ndarray,
                                                                               np.ndarray, np.ndarray]:
    """Prices, edges and long/short notional of the windowed bins, summed in groups of g bins."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        idx = np.arange(snapshot.prices.size)
    g = max(1, int(np.ceil(idx.size / max_rows)))
    idx = idx[: idx.size // g * g]
    edges_all = snapshot.edges
    long_ = snapshot.long_usd[:, idx].reshape(len(snapshot.times), -1, g).sum(axis=2)
    short = snapshot.short_usd[:, idx].reshape(len(snapshot.times), -1, g).sum(axis=2)
    edges = np.concatenate([edges_all[idx[::g]], edges_all[idx[-1] + 1:idx[-1] + 2]])
    prices = np.sqrt(edges[:-1] * edges[1:])
    return prices, edges, long_, short


def _colour_limits(values: np.ndarray) -> tuple[float, float]:
    """Log colour limits. The top is the 99.5th percentile of non-empty cells. The bottom is
    their median, but at most two decades below the top, so the background stays dark and
    clusters are bright."""
    pos = values[values > 0]
    if pos.size == 0:
        return 1.0, 10.0
    top = float(np.quantile(pos, 0.995))
    bottom = min(max(float(np.quantile(pos, 0.5)), top / 100.0), top / 3.0)
    return bottom, top


def _price_line(frame: pd.DataFrame, max_points: int) -> tuple[pd.DatetimeIndex, np.ndarray]:
    close = frame["close"]
    if len(close) <= max_points:
        return _naive(close.index), close.to_numpy(dtype=float)
    groups = int(np.ceil(len(close) / (max_points // 2)))
    key = np.arange(len(close)) // groups
    hi = frame["high"].groupby(key).max().to_numpy()
    lo = frame["low"].groupby(key).min().to_numpy()
    t = pd.Series(close.index).groupby(key).first()
    up = frame["close"].groupby(key).last().to_numpy() >= frame["open"].groupby(key).first().to_numpy()
    # low then high for up groups, high then low for down groups
    first = np.where(up, lo, hi)
    second = np.where(up, hi, lo)
    tt = _naive(t.to_numpy())
    step = (tt[1] - tt[0]) / 2 if len(tt) > 1 else pd.Timedelta(0)
    times = pd.DatetimeIndex(np.ravel(np.column_stack([tt.to_numpy(), (tt + step).to_numpy()])))
    return times, np.ravel(np.column_stack([first, second]))


PRESETS = (("12h", 12, "hour"), ("24h", 24, "hour"), ("7d", 7, "day"), ("30d", 30, "day"))
"""Range-selector buttons of the HTML heatmap (plus ``all``)."""

# Re-fits the price axis to the close line inside the visible time window after every zoom/preset,
# with the same margin as the initial view (plotly itself does not rescale y on an x zoom).
FIT_Y_SCRIPT = """
var gd = document.getElementById('{plot_id}');
var fitting = false;
gd.on('plotly_relayout', function (ev) {
  if (fitting) return;
  var line = gd.data.find(function (t) { return t.name === 'close'; });
  if (!line) return;
  var r = gd._fullLayout.xaxis.range, a = new Date(r[0]).getTime(), b = new Date(r[1]).getTime();
  var lo = Infinity, hi = -Infinity;
  for (var i = 0; i < line.x.length; i++) {
    var t = new Date(line.x[i]).getTime();
    if (t >= a && t <= b) { lo = Math.min(lo, line.y[i]); hi = Math.max(hi, line.y[i]); }
  }
  if (!isFinite(lo)) return;
  var pad = Math.max((hi - lo) * MARGIN, hi * 0.004);
  fitting = true;
  Plotly.relayout(gd, {'yaxis.range': [lo - pad, hi + pad]}).then(function () { fitting = false; });
});
"""


def price_view(frame: pd.DataFrame, margin: float = 0.25) -> tuple[float, float]:
    """The y-range fitted to the price path: its low–high widened by ``margin`` of that span each side
    (at least 0.4 % of the price), so the path fills most of the chart and nearby levels show."""
    lo, hi = float(frame["low"].min()), float(frame["high"].max())
    pad = max((hi - lo) * margin, hi * 0.004)
    return lo - pad, hi + pad


def _log_ticks(zmin: float, zmax: float) -> np.ndarray:
    """1-2-3-5 ticks inside [zmin, zmax]; the two ends are added when fewer than three fall inside."""
    ticks = [m * 10.0 ** e for e in range(int(np.floor(np.log10(zmin))), int(np.ceil(np.log10(zmax))) + 1)
             for m in (1, 2, 3, 5)]
    inside = [t for t in ticks if zmin <= t <= zmax]
    if len(inside) < 3:
        inside = sorted({zmin, *inside, zmax})
    return np.array(inside)


def heatmap_figure(frame: pd.DataFrame, snapshot: LiqMapSnapshot, profile_at: pd.Timestamp | None = None,
                   title: str | None = None, max_rows: int = 500, max_points: int = 4000,
                   margin: float = 0.15, view_margin: float = 0.25) -> go.Figure:
    """Plotly figure: the heatmap with the close on top, and the map at ``profile_at`` as a profile.

    ``snapshot`` is a :class:`LiqMapSnapshot` (e.g. from ``liquidation_heatmap``) over the bars
    of ``frame``. ``profile_at`` defaults to the last snapshot column; the profile uses the last
    column at or before it. The map covers the price range widened by ``margin`` (pan or zoom out
    to see it); the initial view is fitted to the price path (:func:`price_view`). The colour bar
    sits at the far right, clear of both axes; range buttons select the last 12h/24h/7d/30d or all.
    """
    row = _profile_row(snapshot, profile_at)
    prices, _, long_, short = _rows(snapshot, _price_window(frame, snapshot, margin), max_rows)
    total = long_ + short
    zmin, zmax = _colour_limits(total)
    z = np.where(total > 0, np.log10(np.clip(total, zmin, None)), np.nan).T.astype(np.float32)
    times = _naive(snapshot.times)
    ticks = _log_ticks(zmin, zmax)

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.8, 0.2], horizontal_spacing=0.012)
    fig.add_trace(go.Heatmap(
        x=times, y=prices.astype(np.float32), z=z, zmin=np.log10(zmin), zmax=np.log10(zmax), colorscale=PLOTLY_SCALE,
        colorbar=dict(title=dict(text="est. liquidations<br>per bin (USD, log)", side="top", font=dict(size=12)),
                      tickvals=np.log10(ticks), ticktext=[_usd(t) for t in ticks], x=1.02, xanchor="left",
                      len=0.85, y=0.45, thickness=16, tickfont=dict(size=12), outlinewidth=0),
        customdata=total.T.astype(np.float32), hovertemplate="%{x}<br>price %{y:,.0f}<br>est. liquidations $%{customdata:,.0f}"
                                          "<extra></extra>",
        name="liquidation map"), row=1, col=1)
    lt, lp = _price_line(frame, max_points)
    fig.add_trace(go.Scattergl(x=lt, y=lp, mode="lines", line=dict(color=PRICE_COLOUR, width=1.2), name="close",
                               hovertemplate="%{x}<br>%{y:,.1f}<extra>close</extra>"), row=1, col=1)
    at_time = times[row] if len(times) else None
    if at_time is not None:
        fig.add_vline(x=at_time, line=dict(color="#bbbbbb", width=1, dash="dot"), row=1, col=1)

    if len(times):
        price = _close_at(frame, snapshot.times[row])
        below = prices < price
        fig.add_trace(go.Bar(x=np.where(below, long_[row], 0.0), y=prices, orientation="h",
                             marker_color=LONG_COLOUR, name="long liquidations (below)",
                             hovertemplate="%{y:,.0f}: $%{x:,.0f}<extra>longs</extra>"), row=1, col=2)
        fig.add_trace(go.Bar(x=np.where(~below, short[row], 0.0), y=prices, orientation="h",
                             marker_color=SHORT_COLOUR, name="short liquidations (above)",
                             hovertemplate="%{y:,.0f}: $%{x:,.0f}<extra>shorts</extra>"), row=1, col=2)
        fig.add_hline(y=price, line=dict(color=PRICE_COLOUR, width=1, dash="dash"), row=1, col=2)
        fig.update_xaxes(title_text=f"map at {snapshot.times[row]:%Y-%m-%d %H:%M} UTC (USD per bin)",
                         tickformat="~s", row=1, col=2)
    buttons = [dict(count=c, label=label, step=step, stepmode="backward") for label, c, step in PRESETS]
    fig.update_layout(
        title=title or "Estimated liquidation heatmap", template="plotly_dark", paper_bgcolor=BACKGROUND,
        plot_bgcolor=BACKGROUND, bargap=0.0, barmode="overlay", hovermode="closest",
        legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="right", x=1.0),
        margin=dict(l=80, r=130, t=90, b=50))
    fig.update_xaxes(title_text="time (UTC)", row=1, col=1,
                     rangeselector=dict(buttons=[*buttons, dict(step="all", label="all")], x=0, y=1.02,
                                        xanchor="left", yanchor="bottom", bgcolor="#2a2c44",
                                        activecolor="#4a4e80", font=dict(color="#e0e0e0")))
    fig.update_yaxes(title_text="price", tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(range=list(price_view(frame, view_margin)))
    return fig


def write_heatmap_html(fig: go.Figure, path: str | Path, view_margin: float = 0.25) -> Path:
    """Write ``fig`` as a standalone HTML page (plotly.js inlined: opens offline) that fills the
    window and re-fits the price axis to the visible price path after each zoom or preset."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True, default_height="94vh", default_width="100%",
                   config={"scrollZoom": True, "displaylogo": False},
                   post_script=FIT_Y_SCRIPT.replace("MARGIN", repr(view_margin)))
    return path


def _close_at(frame: pd.DataFrame, t: pd.Timestamp) -> float:
    pos = int(frame.index.searchsorted(t, side="right")) - 1
    return float(frame["close"].iloc[max(pos, 0)])


def _usd(x: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def heatmap_png(frame: pd.DataFrame, snapshot: LiqMapSnapshot, path: str | Path,
                profile_at: pd.Timestamp | None = None, title: str | None = None, max_rows: int = 500,
                margin: float = 0.15, dpi: int = 130) -> Path:
    """Write the same picture as :func:`heatmap_figure` as a PNG (matplotlib, no browser needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    path = Path(path)
    row = _profile_row(snapshot, profile_at)
    prices, edges, long_, short = _rows(snapshot, _price_window(frame, snapshot, margin), max_rows)
    total = long_ + short
    vmin, vmax = _colour_limits(total)
    times = _naive(snapshot.times)

    fig = plt.figure(figsize=(14, 7.5), facecolor=BACKGROUND)
    grid = fig.add_gridspec(1, 3, width_ratios=[0.8, 0.17, 0.015], wspace=0.03)
    ax = fig.add_subplot(grid[0, 0], facecolor=BACKGROUND)
    axp = fig.add_subplot(grid[0, 1], sharey=ax, facecolor=BACKGROUND)
    cax = fig.add_subplot(grid[0, 2])
    for a in (ax, axp, cax):
        a.tick_params(colors="#d0d0d0", labelsize=9)
        for spine in a.spines.values():
            spine.set_color("#555555")

    if len(times):
        # column edges: midpoints between snapshot times, the last column one step wide
        t_num = mdates.date2num(times.to_pydatetime())
        step = np.diff(t_num).mean() if t_num.size > 1 else 1 / 24
        t_edges = np.concatenate([[t_num[0] - step / 2], (t_num[1:] + t_num[:-1]) / 2, [t_num[-1] + step / 2]])
        masked = np.ma.masked_less_equal(total.T, 0.0)
        mesh = ax.pcolormesh(t_edges, edges, masked, cmap=MPL_CMAP, norm=LogNorm(vmin=vmin, vmax=vmax),
                             shading="flat", rasterized=True)
        cb = fig.colorbar(mesh, cax=cax)
        cb.set_label("estimated liquidations per bin (USD, log)", color="#d0d0d0")
        cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _usd(v)))
        cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: _usd(v)))
        cb.ax.tick_params(which="both", colors="#d0d0d0", labelcolor="#d0d0d0")
    lt, lp = _price_line(frame, 4000)
    ax.plot(lt.to_pydatetime(), lp, color=PRICE_COLOUR, linewidth=0.8, label="close")
    if len(times):
        ax.axvline(times[row].to_pydatetime(), color="#bbbbbb", linewidth=0.8, linestyle=":")
    ax.set_ylim(*price_view(frame))
    ax.set_xlim(lt[0].to_pydatetime(), lt[-1].to_pydatetime())
    ax.xaxis.set_major_locator(mdates.AutoDateLocator())
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.xaxis.get_offset_text().set_color("#d0d0d0")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_ylabel("price", color="#d0d0d0")
    ax.set_title(title or "Estimated liquidation heatmap", color="#f0f0f0", loc="left", fontsize=12)
    ax.grid(color="#ffffff", alpha=0.06)

    if len(times):
        price = _close_at(frame, snapshot.times[row])
        below = prices < price
        heights = np.diff(edges)
        axp.barh(edges[:-1], np.where(below, long_[row], 0.0), height=heights, align="edge",
                 color=LONG_COLOUR, label="longs (below)")
        axp.barh(edges[:-1], np.where(~below, short[row], 0.0), height=heights, align="edge",
                 color=SHORT_COLOUR, label="shorts (above)")
        axp.axhline(price, color=PRICE_COLOUR, linewidth=0.8, linestyle="--")
        axp.set_title(f"map at {snapshot.times[row]:%Y-%m-%d %H:%M}", color="#d0d0d0", fontsize=9)
        axp.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _usd(v)))
        axp.tick_params(axis="x", labelsize=8, labelrotation=30)
        axp.legend(loc="upper right", fontsize=8, facecolor=BACKGROUND, labelcolor="#d0d0d0", framealpha=0.7)
    plt.setp(axp.get_yticklabels(), visible=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor=BACKGROUND, bbox_inches="tight")
    plt.close(fig)
    return path
