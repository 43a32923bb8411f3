"""Validate the liquidation map against realised liquidations (docs/methods.md §A.3, "Calibration").

The model's per-bar consumed notional (``liq_consumed_long``/``liq_consumed_short``: the
liquidations it predicts in the bar) is compared with what a venue reported
(``liq_long_usd``/``liq_short_usd``), on the bars where realised data exist:

* **Spearman rank correlations** per side, pooled over sides and on per-bar totals. They
  ignore scale: the map's USD level is an estimate, while the recorded streams under-count
  (Binance and OKX push at most one liquidation per symbol per second).
* **Predicted liquidation zones**: a side's zone *fires* in a bar when the model consumed
  at least X USD there (and more than 0). Precision = share of firing (bar, side) pairs with a
  realised liquidation on that side; recall = share of (bar, side) pairs with a realised
  liquidation in which the zone fired. ``base_rate`` (the share of pairs with a realised
  liquidation) is what a coin flip's precision would be.

``python -m backtests.validation`` runs this over **every realised event set** in the stores
(the bundled sample: Hyperliquid and OKX, BTC and ETH; add ``--data-dir`` for recorded ones),
per venue and pooled per timeframe. Each set is scored on the map of *its own venue's* open
interest when stored (else ``--oi-source``, Hyperliquid), on candles of its own venue or else of
``--candles`` (Binance), with realised values of that venue only. A set whose span no stored
candles cover is listed as not evaluable, with the reason.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from strategies.features.liquidation_map import LiqMapParams, liquidation_features

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.0, 1e5, 1e6, 1e7)


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(rho, two-sided p); NaN when either side is constant or fewer than 3 pairs exist."""
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def _hit_rate(model: np.ndarray, realised: np.ndarray) -> float:
    """Share of bars with model consumption > 0 that also had realised liquidations."""
    fired = model > 0
    return float((realised[fired] > 0).mean()) if fired.any() else math.nan


def zone_scores(model: np.ndarray, realised: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision/recall of "the model consumed ≥ ``threshold`` (and > 0)" against "realised > 0"."""
    fired = (model > 0) & (model >= threshold)
    actual = realised > 0
    tp = int((fired & actual).sum())
    n_fired, n_actual = int(fired.sum()), int(actual.sum())
    return {"threshold_usd": float(threshold), "fired": n_fired, "realised": n_actual, "hits": tp,
            "precision": tp / n_fired if n_fired else math.nan, "recall": tp / n_actual if n_actual else math.nan,
            "base_rate": n_actual / actual.size if actual.size else math.nan}


def score_bars(m_long: np.ndarray, m_short: np.ndarray, r_long: np.ndarray, r_short: np.ndarray,
               thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """Every metric of the module docstring over per-bar arrays (equal lengths, finite)."""
    rho_l, p_l = _spearman(m_long, r_long)
    rho_s, p_s = _spearman(m_short, r_short)
    both_m, both_r = np.concatenate([m_long, m_short]), np.concatenate([r_long, r_short])
    rho_c, p_c = _spearman(both_m, both_r)
    rho_t, p_t = _spearman(m_long + m_short, r_long + r_short)
    return {
        "spearman_long": rho_l, "p_long": p_l, "spearman_short": rho_s, "p_short": p_s,
        "spearman_combined": rho_c, "p_combined": p_c, "spearman_total": rho_t, "p_total": p_t,
        "hit_rate_long": _hit_rate(m_long, r_long), "hit_rate_short": _hit_rate(m_short, r_short),
        "hit_rate_total": _hit_rate(m_long + m_short, r_long + r_short),
        "zones": [zone_scores(both_m, both_r, x) for x in thresholds],
        "model_long_usd": float(m_long.sum()), "model_short_usd": float(m_short.sum()),
        "realised_long_usd": float(r_long.sum()), "realised_short_usd": float(r_short.sum()),
        "model_bars_long": int((m_long > 0).sum()), "model_bars_short": int((m_short > 0).sum()),
        "realised_bars_long": int((r_long > 0).sum()), "realised_bars_short": int((r_short > 0).sum()),
    }


def _paired(frame: pd.DataFrame, params: LiqMapParams) -> tuple[pd.DatetimeIndex, list[np.ndarray]] | None:
    feats = liquidation_features(frame, params)
    mask = (frame["liq_long_usd"].notna() & frame["liq_short_usd"].notna()).to_numpy()
    if not mask.any():
        return None
    arrays = [feats["liq_consumed_long"].to_numpy()[mask], feats["liq_consumed_short"].to_numpy()[mask],
              frame["liq_long_usd"].to_numpy(dtype=float)[mask], frame["liq_short_usd"].to_numpy(dtype=float)[mask]]
    return frame.index[mask], arrays


def validate_against_realised(frame: pd.DataFrame, params: LiqMapParams = LiqMapParams(),
                              thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """Compare modelled with realised liquidations, bar by bar, where realised data exist.

    The map runs over the whole ``frame``, so the history before the realised span serves as
    warm-up. The returned dict holds ``bars`` (bars with both realised columns finite), ``first``
    and ``last`` of them, and :func:`score_bars`' metrics. A correlation is NaN when one series is
    constant over the span (a venue may report only one side).
    """
    out: dict[str, Any] = {"bars": 0}
    if "liq_long_usd" not in frame.columns or "liq_short_usd" not in frame.columns:
        return out | {"note": "frame has no realised liquidation columns"}
    paired = _paired(frame, params)
    if paired is None:
        return out | {"note": "no bar has realised liquidation data"}
    idx, arrays = paired
    return {"bars": len(idx), "first": idx[0].isoformat(), "last": idx[-1].isoformat(),
            **score_bars(*arrays, thresholds)}


# ----------------------------------------------------------------------------- every event set


@dataclass(frozen=True)
class EventSet:
    """One venue's realised liquidations for one symbol."""

    venue: str
    symbol: str
    events: pd.DataFrame


def event_sets(stores: Sequence[Any]) -> list[EventSet]:
    """Every stored ``liquidations`` dataset (first store holding a key wins), sorted."""
    found: dict[tuple[str, str], EventSet] = {}
    for store in stores:
        if not Path(store.root).is_dir():
            continue
        for key in store.keys():
            if key.kind == "liquidations" and (key.exchange, key.symbol) not in found:
                ev = store.read(key)
                if ev is not None and len(ev):
                    found[(key.exchange, key.symbol)] = EventSet(key.exchange, key.symbol, ev)
    return [found[k] for k in sorted(found)]


def _first_key(stores: Sequence[Any], kind: str, venue: str, base: str, timeframe: str | None) -> Any:
    for store in stores:
        if not Path(store.root).is_dir():
            continue
        for key in store.keys():
            if key.kind == kind and key.exchange == venue and key.symbol.split("/")[0] == base and (
                    timeframe is None or key.timeframe == timeframe):
                return store, key
    return None


def validation_frame(stores: Sequence[Any], es: EventSet, timeframe: str, candles: str = "binanceusdm",
                     oi_source: str = "hyperliquid") -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The frame to score ``es`` on (candles + open interest + this venue's realised sums)."""
    from bot.data import join_asof_close, join_liquidations, load_frame
    from bot.timeframes import timeframe_to_timedelta

    base = es.symbol.split("/")[0]
    info: dict[str, Any] = {"venue": es.venue, "symbol": es.symbol, "timeframe": timeframe,
                            "events": len(es.events), "span": f"{es.events.index[0]:%Y-%m-%d %H:%M} → "
                                                              f"{es.events.index[-1]:%Y-%m-%d %H:%M}"}
    found = _first_key(stores, "ohlcv", es.venue, base, timeframe) or _first_key(stores, "ohlcv", candles, base,
                                                                                  timeframe)
    if found is None:
        return None, info | {"note": f"no {timeframe} candles for {base}"}
    store, ckey = found
    step = timeframe_to_timedelta(timeframe)
    ohlcv = store.read(ckey)
    if ohlcv.index[-1] < es.events.index[0].floor(step) or ohlcv.index[0] > es.events.index[-1]:
        return None, info | {"candles": f"{ckey.exchange} {ckey.symbol}",
                             "note": f"no {timeframe} candles cover the events (candles {ohlcv.index[0]:%Y-%m-%d} → "
                                     f"{ohlcv.index[-1]:%Y-%m-%d %H:%M})"}
    frame = load_frame(store.root, ckey.exchange, ckey.symbol, timeframe, use_sample=False, open_interest_source=None)
    frame = frame.drop(columns=[c for c in ("open_interest", "liq_long_usd", "liq_short_usd") if c in frame.columns])
    oi_found = _first_key(stores, "open_interest", es.venue, base, None) or _first_key(
        stores, "open_interest", oi_source, base, None)
    if oi_found is not None:
        ostore, okey = oi_found
        oi = ostore.read(okey)
        tol = 2 * max(step, timeframe_to_timedelta(okey.timeframe))
        frame["open_interest"] = join_asof_close(frame, oi, ["open_interest"], timeframe, tol)["open_interest"]
        info["open_interest"] = okey.exchange
    else:
        info["open_interest"] = "none (volume inference)"
    frame[["liq_long_usd", "liq_short_usd"]] = join_liquidations(frame, [es.events], timeframe)
    info["candles"] = f"{ckey.exchange} {ckey.symbol}"
    return frame, info


def validate_event_sets(stores: Sequence[Any], timeframes: Sequence[str] = ("1h", "5m"),
                        params: LiqMapParams = LiqMapParams(), thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                        candles: str = "binanceusdm", oi_source: str = "hyperliquid") -> list[dict[str, Any]]:
    """One row per (event set, timeframe), then one pooled row per timeframe (``venue = "pooled"``)."""
    rows: list[dict[str, Any]] = []
    for tf in timeframes:
        pooled: list[list[np.ndarray]] = [[], [], [], []]
        members = []
        for es in event_sets(stores):
            frame, info = validation_frame(stores, es, tf, candles, oi_source)
            paired = None if frame is None else _paired(frame, params)
            if paired is None:
                rows.append(info | {"bars": 0, "note": info.get("note", "no bar has realised data")})
                continue
            idx, arrays = paired
            rows.append(info | {"bars": len(idx), "first": idx[0].isoformat(), "last": idx[-1].isoformat(),
                                **score_bars(*arrays, thresholds)})
            for acc, a in zip(pooled, arrays, strict=True):
                acc.append(a)
            members.append(f"{es.venue} {es.symbol.split('/')[0]}")
        if members:
            arrays = [np.concatenate(a) for a in pooled]
            rows.append({"venue": "pooled", "symbol": ", ".join(members), "timeframe": tf, "bars": len(arrays[0]),
                         **score_bars(*arrays, thresholds)})
    return rows


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{100 * x:.0f} %" if pct else f"{x:.2f}"


def markdown_tables(rows: list[dict[str, Any]]) -> str:
    """The README's two tables: rank correlations, and zone precision/recall per threshold."""
    head = ["| set | tf | bars | events | Spearman short | long | pooled sides | per-bar total | note |",
            "|---|---|---|---|---|---|---|---|---|"]
    zones = ["| set | tf | X (USD) | fired | hits | precision | recall | base rate |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = f"{r['venue']} {r['symbol']}"
        head.append(f"| {name} | {r['timeframe']} | {r['bars']} | {r.get('events', '')} | "
                    f"{_fmt(r.get('spearman_short'))} | {_fmt(r.get('spearman_long'))} | "
                    f"{_fmt(r.get('spearman_combined'))} | {_fmt(r.get('spearman_total'))} | {r.get('note', '')} |")
        for z in r.get("zones", []):
            x = "> 0" if z["threshold_usd"] == 0 else f"≥ {z['threshold_usd']:,.0f}"
            zones.append(f"| {name} | {r['timeframe']} | {x} | {z['fired']} | {z['hits']} | "
                         f"{_fmt(z['precision'], True)} | {_fmt(z['recall'], True)} | {_fmt(z['base_rate'], True)} |")
    return "\n".join(head) + "\n\n" + "\n".join(zones) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m backtests.validation``: the README's validation tables, reproducibly."""
    import json

    from backtests.metrics import json_safe
    from bot.data import SAMPLE_DIR
    from bot.store import Store

    ap = argparse.ArgumentParser(prog="python -m backtests.validation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="also score the event sets stored here (first)")
    ap.add_argument("--no-sample", action="store_true", help="leave out the bundled sample")
    ap.add_argument("--timeframes", default="1h,5m")
    ap.add_argument("--thresholds", default=",".join(f"{x:g}" for x in DEFAULT_THRESHOLDS),
                    help="zone thresholds X in USD (0 = any consumption)")
    ap.add_argument("--candles", default="binanceusdm", help="venue whose candles score sets without their own")
    ap.add_argument("--oi-source", default="hyperliquid", help="open interest for venues without their own")
    ap.add_argument("--json", action="store_true", help="one JSON object per row instead of Markdown")
    args = ap.parse_args(argv)
    stores = ([Store(args.data_dir)] if args.data_dir else []) + ([] if args.no_sample else [Store(SAMPLE_DIR)])
    rows = validate_event_sets(stores, [t for t in args.timeframes.split(",") if t],
                               thresholds=[float(x) for x in args.thresholds.split(",") if x],
                               candles=args.candles, oi_source=args.oi_source)
    if args.json:
        for r in rows:
            print(json.dumps(json_safe(r)))
    else:
        print(markdown_tables(rows), end="")


if __name__ == "__main__":
    main()
