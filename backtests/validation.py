"""Validate the liquidation map against realised liquidations (methods.md §A.3, "Calibration").

The model's per-bar consumed notional (``liq_consumed_long``/``liq_consumed_short``: the
liquidations it predicts in the bar) is compared with what the exchange(s) reported
(``liq_long_usd``/``liq_short_usd``), on the bars where realised data exist. The metrics are
Spearman rank correlations, which ignore scale: the map's USD level is an estimate, while
the recorded streams under-count, e.g. Binance's one event per second.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from strategies.features.liquidation_map import LiqMapParams, liquidation_features


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


def validate_against_realised(frame: pd.DataFrame, params: LiqMapParams = LiqMapParams()) -> dict[str, Any]:
    """Compare modelled with realised liquidations, bar by bar, where realised data exist.

    The map runs over the whole ``frame``, so the history before the realised span serves as
    warm-up. The returned dict holds:

    * ``bars``: the number of bars with realised data (both columns finite). ``first`` and
      ``last`` are the first and last of them;
    * ``spearman_long``, ``spearman_short``: per side, the model's consumed longs (shorts)
      against realised long (short) liquidations. Each has a matching ``p_*`` value;
    * ``spearman_combined``: both sides pooled as 2·bars pairs (side, bar);
    * ``spearman_total``: the per-bar sums of both sides;
    * ``hit_rate_*``: the share of bars where the model liquidated something and something was
      in fact liquidated;
    * the USD sums of both, and the counts of bars with a non-zero value.

    A correlation is NaN when one series is constant over the span. For example, a venue may
    report only one side.
    """
    out: dict[str, Any] = {"bars": 0}
    if "liq_long_usd" not in frame.columns or "liq_short_usd" not in frame.columns:
        return out | {"note": "frame has no realised liquidation columns"}
    feats = liquidation_features(frame, params)
    mask = (frame["liq_long_usd"].notna() & frame["liq_short_usd"].notna()).to_numpy()
    if not mask.any():
        return out | {"note": "no bar has realised liquidation data"}
    idx = frame.index[mask]
    m_long = feats["liq_consumed_long"].to_numpy()[mask]
    m_short = feats["liq_consumed_short"].to_numpy()[mask]
    r_long = frame["liq_long_usd"].to_numpy(dtype=float)[mask]
    r_short = frame["liq_short_usd"].to_numpy(dtype=float)[mask]
    rho_l, p_l = _spearman(m_long, r_long)
    rho_s, p_s = _spearman(m_short, r_short)
    rho_c, p_c = _spearman(np.concatenate([m_long, m_short]), np.concatenate([r_long, r_short]))
    rho_t, p_t = _spearman(m_long + m_short, r_long + r_short)
    return {
        "bars": int(mask.sum()),
        "first": idx[0].isoformat(),
        "last": idx[-1].isoformat(),
        "spearman_long": rho_l, "p_long": p_l,
        "spearman_short": rho_s, "p_short": p_s,
        "spearman_combined": rho_c, "p_combined": p_c,
        "spearman_total": rho_t, "p_total": p_t,
        "hit_rate_long": _hit_rate(m_long, r_long),
        "hit_rate_short": _hit_rate(m_short, r_short),
        "hit_rate_total": _hit_rate(m_long + m_short, r_long + r_short),
        "model_long_usd": float(m_long.sum()), "model_short_usd": float(m_short.sum()),
        "realised_long_usd": float(r_long.sum()), "realised_short_usd": float(r_short.sum()),
        "model_bars_long": int((m_long > 0).sum()), "model_bars_short": int((m_short > 0).sum()),
        "realised_bars_long": int((r_long > 0).sum()), "realised_bars_short": int((r_short > 0).sum()),
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m backtests.validation [SYMBOL TIMEFRAME ...]``: the README's table, from the sample."""
    import json
    import sys

    from backtests.metrics import json_safe
    from backtests.sample import load_sample_frame

    args = sys.argv[1:] if argv is None else argv
    pairs = list(zip(args[::2], args[1::2], strict=False)) or [
        ("BTC/USDT:USDT", "1h"), ("BTC/USDT:USDT", "5m"), ("ETH/USDT:USDT", "1h")]
    keys = ("bars", "first", "last", "spearman_short", "spearman_long", "spearman_combined", "spearman_total",
            "hit_rate_total", "realised_long_usd", "realised_short_usd")
    for symbol, timeframe in pairs:
        out = validate_against_realised(load_sample_frame(symbol, timeframe))
        print(json.dumps(json_safe({"symbol": symbol, "timeframe": timeframe} | {k: out.get(k) for k in keys})))


if __name__ == "__main__":
    main()
