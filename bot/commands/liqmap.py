"""`cascade liqmap`: estimate the liquidation map, draw its heatmap, print the asymmetry.

The estimator is :mod:`strategies.features.liquidation_map` (docs/methods.md §A.3–§A.4), and its
parameters come from the ``[liqmap]`` table of the config. The map needs history to forget its
empty start, so bars from ``warmup_days`` before ``--from`` are loaded and run too, but only
``--from``…``--to`` is drawn.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from bot.config import load_config
from bot.data import load_frame
from bot.errors import UserError
from bot.progress import compile_notice, progress
from bot.timeframes import parse_utc
from strategies.features.liquidation_map import (
    LiqMapParams,
    compute_liquidation_map,
    heatmap_positions,
    warmup_days,
)

DEFAULT_OUTPUT_DIR = Path("results") / "liqmap"


def _console(as_json: bool) -> Console:
    """Human output goes to stderr when stdout carries JSON."""
    console = Console(stderr=as_json)
    return console if console.is_terminal else Console(stderr=as_json, width=120)


def _params(raw: dict[str, Any]) -> LiqMapParams:
    try:
        return LiqMapParams(**raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "?"
        raise UserError(f"config [liqmap] {where}: {first['msg']}; see LiqMapParams in "
                        "strategies/features/liquidation_map.py for the valid keys") from None
    except TypeError as err:
        raise UserError(f"config [liqmap]: {err}") from None


def _outputs(output: Path | None, symbol: str, timeframe: str, at: pd.Timestamp) -> tuple[Path | None, Path | None]:
    """(html, png) paths. A stem writes both, ``.html``/``.png`` writes that one only."""
    if output is None:
        safe = re.sub(r"[^A-Za-z0-9]+", "", symbol.split(":")[0])
        output = DEFAULT_OUTPUT_DIR / f"{safe}_{timeframe}_{at:%Y%m%dT%H%M}"
    suffix = output.suffix.lower()
    if suffix == ".html":
        return output, None
    if suffix == ".png":
        return None, output
    return output.with_name(output.name + ".html"), output.with_name(output.name + ".png")


def _usd(x: float) -> str:
    if x != x:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"${x / div:,.2f}{unit}"
    return f"${x:,.0f}"


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _times(start: str | None, end: str | None, at: str | None) -> tuple[Any, Any, Any]:
    """``--from``, ``--to`` and ``--at`` as UTC timestamps (None when not given); ``--to`` after ``--from``."""
    t_from, t_to, t_at = parse_utc(start, "--from"), parse_utc(end, "--to"), parse_utc(at, "--at")
    if t_from is not None and t_to is not None and t_to <= t_from:
        raise UserError(f"--to ({t_to}) must be after --from ({t_from})")
    return t_from, t_to, t_at


def _at_position(frame: pd.DataFrame, shown: pd.DataFrame, t_at: Any) -> int:
    """The row of ``frame`` holding ``--at`` (default: the last bar); it must lie in the drawn bars."""
    if t_at is None:
        return len(frame) - 1
    at_pos = int(frame.index.searchsorted(t_at, side="right")) - 1
    step = frame.index[-1] - frame.index[max(len(frame) - 2, 0)]
    if at_pos < len(frame) - len(shown) or t_at > frame.index[-1] + step:
        raise UserError(f"--at {t_at} is outside the data drawn ({shown.index[0]} to {shown.index[-1]}); "
                        "change --at, --from or --to")
    return at_pos


def liqmap(
    symbol: Annotated[str | None, typer.Option("--symbol", help="Unified symbol, e.g. BTC/USDT:USDT.")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", help="Bar length (1h, 5m, ...).")] = None,
    start: Annotated[str | None, typer.Option("--from", help="First bar drawn (UTC date/time).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End of the drawn range, exclusive (UTC).")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Bar for the profile and the numbers (default: last).")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Path stem (writes .html and .png) or a "
                                                "file ending in .html or .png.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary as the last stdout line.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory (overrides \\[data] dir).")] = None,
    exchange: Annotated[str | None, typer.Option("--exchange", help="ccxt exchange id (overrides \\[data] exchange).")] = None,
    venues: Annotated[str | None, typer.Option("--venues", help="Sum the map over these venues, each on its own open "
                                               "interest (e.g. binanceusdm,bybit,okx,hyperliquid).")] = None,
) -> None:
    """Estimate the liquidation map; write the heatmap (HTML + PNG) and print the asymmetry."""
    cfg = load_config(config)
    params = _params(dict(cfg.liqmap))
    symbol = symbol or cfg.data.symbol
    timeframe = timeframe or cfg.data.timeframe
    exchange = exchange or cfg.data.exchange
    data_dir = data_dir or cfg.data.dir
    t_from, t_to, t_at = _times(start, end, at)
    console = _console(as_json)

    load_from = None if t_from is None else t_from - pd.Timedelta(days=warmup_days(params))
    with console.status(f"loading {exchange} {symbol} {timeframe} …"):
        frame = load_frame(data_dir, exchange, symbol, timeframe, load_from, t_to, use_sample=cfg.data.use_sample)
    shown = frame if t_from is None else frame[frame.index >= t_from]
    if shown.empty:
        raise UserError(f"no {timeframe} bars for {symbol} from {t_from} (stored up to {frame.index[-1]}); "
                        "change --from")
    first_shown = len(frame) - len(shown)
    at_pos = _at_position(frame, shown, t_at)
    if "open_interest" not in frame.columns or frame["open_interest"].notna().sum() == 0:
        console.print("[yellow]warning:[/] no open interest in this range: entries are inferred from volume "
                      "(relative magnitudes only)")

    positions = np.unique(np.concatenate([first_shown + heatmap_positions(len(shown), 400), [at_pos]]))
    breakdown = None
    with console.status(f"estimating the liquidation map over {len(frame):,} bars …"), \
            compile_notice("the liquidation-map estimator"):
        if venues:  # one estimator per venue, summed (strategies/features/venues.py)
            from bot.record.venues import venue_liquidation_map

            features, snapshot, breakdown = venue_liquidation_map(
                data_dir, [v.strip() for v in venues.split(",") if v.strip()], frame, symbol, timeframe, params,
                positions, cfg.data.use_sample, at=at_pos, note=lambda line: console.print(f"[yellow]note:[/] {line}"))
        else:
            features, snapshot = compute_liquidation_map(frame, params, positions)
    at_time = frame.index[at_pos]
    row = features.iloc[at_pos]
    close = float(frame["close"].iloc[at_pos])

    html_path, png_path = _outputs(output, symbol, timeframe, at_time)
    title = f"{symbol} {timeframe} estimated liquidation heatmap ({exchange})"
    from backtests.report.liqmap_plot import heatmap_figure, heatmap_png, write_heatmap_html

    drawings = [p for p in (html_path, png_path) if p is not None]
    with progress("drawing the heatmap", len(drawings)) as bar:
        if html_path is not None:
            write_heatmap_html(heatmap_figure(shown, snapshot, at_time, title=title), html_path)
            bar.advance()
        if png_path is not None:
            heatmap_png(shown, snapshot, png_path, at_time, title=title)
            bar.advance()

    table = Table(title=f"{symbol} {timeframe} at {at_time:%Y-%m-%d %H:%M} UTC (bar open), close {close:,.2f}")
    for col in ("band", "shorts above S_up", "longs below L_dn", "A = ln(S/L)", "I"):
        table.add_column(col, justify="right")
    for x in (5, 10, 20):
        imb = f"{row['liq_imbalance_10']:+.3f}" if x == 10 else ""
        table.add_row(f"±{x} %", _usd(row[f"liq_short_above_{x}"]), _usd(row[f"liq_long_below_{x}"]),
                      f"{row[f'liq_asym_{x}']:+.3f}", imb)
    console.print(table)
    console.print(f"pull (h={params.kernel_h:g}): up {_usd(row['liq_pull_up'])}, down {_usd(row['liq_pull_dn'])}, "
                  f"asymmetry {row['liq_pull_asym']:+.3f}")
    for side, word in (("up", "above"), ("dn", "below")):
        dist, size = row[f"liq_cluster_{side}_dist"], row[f"liq_cluster_{side}_size"]
        if dist == dist:
            sign = 1 if side == "up" else -1
            console.print(f"nearest dense cluster {word}: {dist * 100:.2f} % ({close * (1 + sign * dist):,.0f}), "
                          f"{_usd(size)}")
        else:
            console.print(f"nearest dense cluster {word}: none within {params.range_pct:g} %")
    if breakdown is not None:
        console.print(breakdown.map(_usd).to_string())
    written = [str(p) for p in (html_path, png_path) if p is not None]
    console.print("wrote " + ", ".join(written))

    if as_json:
        summary = {
            "symbol": symbol, "timeframe": timeframe, "exchange": exchange, "at": at_time.isoformat(),
            "close": close,
            **{f"{k}_{x}": _num(row[f"liq_{c}_{x}"]) for x in (5, 10, 20)
               for k, c in (("S_up", "short_above"), ("L_dn", "long_below"), ("A", "asym"))},
            "imbalance_10": _num(row["liq_imbalance_10"]),
            "pull_up": _num(row["liq_pull_up"]), "pull_dn": _num(row["liq_pull_dn"]),
            "pull_asym": _num(row["liq_pull_asym"]),
            "cluster_up": {"dist": _num(row["liq_cluster_up_dist"]), "size_usd": _num(row["liq_cluster_up_size"])},
            "cluster_dn": {"dist": _num(row["liq_cluster_dn_dist"]), "size_usd": _num(row["liq_cluster_dn_size"])},
            "venues": None if breakdown is None else {v: {k: _num(x) for k, x in r.items()}
                                                      for v, r in breakdown.to_dict("index").items()},
            "html": None if html_path is None else str(html_path),
            "png": None if png_path is None else str(png_path),
        }
        print(json.dumps(summary))
