"""The backtest report: per-trade figures recomputed independently, monthly returns, risk states,
and the written page (shared chart library, decodable data, native candles)."""

from __future__ import annotations

import base64
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtests.engines import run_backtest
from backtests.metrics import compute_stats
from backtests.report.html import ASSETS_DIRNAME, CHART_JS, heatmap_grid, render_report
from backtests.report.trades import enrich_trades, monthly_returns, risk_state_summary, side_split
from backtests.sample import load_sample_frame
from bot.config import BacktestConfig, RiskConfig


def ema_atr_signals(frame: pd.DataFrame, fast: int = 12, slow: int = 48) -> pd.DataFrame:
    """Always in the market on an EMA cross, stop 2 ATR(14) from the close: trades with stops, both sides."""
    close = frame["close"]
    diff = close.ewm(span=fast, adjust=False).mean() - close.ewm(span=slow, adjust=False).mean()
    prev = close.shift()
    tr = pd.concat([frame["high"] - frame["low"], (frame["high"] - prev).abs(), (frame["low"] - prev).abs()],
                   axis=1).max(axis=1)
    atr = tr.ewm(alpha=1 / 14, adjust=False).mean()
    target = np.sign(diff).where(np.arange(len(frame)) >= slow, 0.0)
    stop = (close - 2.0 * atr * target).where(target != 0)
    return pd.DataFrame({"target": target.astype(float), "stop": stop, "take_profit": np.nan}, index=frame.index)


@pytest.fixture(scope="module")
def run() -> tuple[pd.DataFrame, pd.DataFrame, object]:
    frame = load_sample_frame("BTC/USDT:USDT", "1h", pd.Timestamp("2025-05-01", tz="UTC"),
                              pd.Timestamp("2025-08-01", tz="UTC"))
    signals = ema_atr_signals(frame)
    risk = RiskConfig(daily_loss=0.01, reduce_drawdown=0.02)  # REDUCING and HALTED episodes happen
    result = run_backtest(frame, signals, BacktestConfig(engine="fast"), risk, engine="fast")
    assert len(result.trades) > 20
    return frame, signals, result


# -- Per-trade figures -----------------------------------------------------------------------------


def test_enriched_trades_match_an_independent_recomputation(run) -> None:
    frame, _, result = run
    t = enrich_trades(result.trades, frame)
    assert set(t["side"]) == {"long", "short"}
    assert len(t) == len(result.trades) and "side" in result.trades and result.trades["side"].dtype != object
    for k, row in t.iterrows():
        raw = result.trades.iloc[k]
        sign = 1.0 if raw["side"] > 0 else -1.0
        assert row["side"] == ("long" if sign > 0 else "short")
        # held bars: from the entry bar's open up to (not including) the exit bar, plus the exit price
        held = frame[(frame.index >= raw["entry_time"]) & (frame.index < raw["exit_time"])]
        hi = max([*held["high"].tolist(), raw["exit_price"]])
        lo = min([*held["low"].tolist(), raw["exit_price"]])
        adverse = (lo - raw["entry_price"]) if sign > 0 else (raw["entry_price"] - hi)
        favour = (hi - raw["entry_price"]) if sign > 0 else (raw["entry_price"] - lo)
        assert row["mae_pct"] == pytest.approx(min(adverse, 0.0) / raw["entry_price"] * 100, abs=1e-9)
        assert row["mfe_pct"] == pytest.approx(max(favour, 0.0) / raw["entry_price"] * 100, abs=1e-9)
        assert row["mae_pct"] <= 0.0 <= row["mfe_pct"]
        assert row["return_pct"] == pytest.approx(raw["pnl"] / (raw["qty"] * raw["entry_price"]) * 100)
        assert row["r_multiple"] == pytest.approx(raw["pnl"] / (raw["qty"] * abs(raw["entry_price"] - raw["stop"])))
        hours = (pd.Timestamp(raw["exit_time"]) - pd.Timestamp(raw["entry_time"])).total_seconds() / 3600
        assert row["duration_hours"] == pytest.approx(hours)
        assert row["bars_held"] == len(held)
    stopped = t[t["exit_reason"] == "stop"]
    assert len(stopped) and (stopped["r_multiple"] < 0).mean() > 0.5  # a stop-out mostly loses about 1R


def test_enrich_does_not_depend_on_warmup_bars_in_the_frame(run) -> None:
    frame, _, result = run
    longer = load_sample_frame("BTC/USDT:USDT", "1h", pd.Timestamp("2025-03-01", tz="UTC"),
                               pd.Timestamp("2025-08-01", tz="UTC"))
    pd.testing.assert_frame_equal(enrich_trades(result.trades, frame), enrich_trades(result.trades, longer))


def test_side_split_adds_up(run) -> None:
    frame, _, result = run
    t = enrich_trades(result.trades, frame)
    split = side_split(t)
    assert split.loc["long", "trades"] + split.loc["short", "trades"] == split.loc["all", "trades"] == len(t)
    assert split.loc["long", "net_pnl"] + split.loc["short", "net_pnl"] == pytest.approx(t["pnl"].sum())
    assert split.loc["long", "win_rate"] == pytest.approx((t[t["side"] == "long"]["pnl"] > 0).mean())


def test_monthly_returns_chain_to_the_total_return(run) -> None:
    _, _, result = run
    eq = result.equity["equity"]
    m = monthly_returns(eq, result.initial_cash)
    assert list(m.index) == [2025] and m.loc[2025, [5, 6, 7]].notna().all() and m.loc[2025, [1, 12]].isna().all()
    # independently: month-end equity by calendar month
    ends = eq.groupby(eq.index.month).last()
    assert m.loc[2025, 5] == pytest.approx(ends[5] / result.initial_cash - 1)
    assert m.loc[2025, 6] == pytest.approx(ends[6] / ends[5] - 1)
    assert m.loc[2025, "year"] == pytest.approx(eq.iloc[-1] / result.initial_cash - 1)


def test_risk_state_summary_counts_time_and_reports_the_ongoing_halt() -> None:
    idx = pd.date_range("2025-01-01", periods=10, freq="1h", tz="UTC")
    states = pd.Series(["ACTIVE"] * 3 + ["REDUCING"] * 2 + ["ACTIVE"] * 2 + ["HALTED"] * 3, index=idx)
    rows = {r["state"]: r for r in risk_state_summary(states, pd.Timedelta(hours=1))}
    assert [r["state"] for r in risk_state_summary(states)] == ["ACTIVE", "REDUCING", "HALTED"]
    assert rows["ACTIVE"]["bars"] == 5 and rows["ACTIVE"]["episodes"] == 2 and not rows["ACTIVE"]["ongoing"]
    assert rows["REDUCING"]["last_start"] == idx[3] and rows["REDUCING"]["last_end"] == idx[5]
    assert rows["HALTED"]["ongoing"] and rows["HALTED"]["last_start"] == idx[7]
    assert rows["HALTED"]["share"] == pytest.approx(0.3)


# -- Heatmap grid -------------------------------------------------------------------------------


def test_heatmap_grid_keeps_the_usd_inside_the_window() -> None:
    frame = load_sample_frame("BTC/USDT:USDT", "1h", pd.Timestamp("2025-06-01", tz="UTC"),
                              pd.Timestamp("2025-06-10", tz="UTC"))
    prices = np.geomspace(50_000, 200_000, 900)
    rng = np.random.default_rng(7)
    long_usd, short_usd = rng.gamma(0.5, 1e5, (5, 900)), rng.gamma(0.5, 1e5, (5, 900))
    snap = {"times": frame.index[[0, 50, 100, 150, 200]], "prices": prices, "long_usd": long_usd,
            "short_usd": short_usd}
    g = heatmap_grid(snap, frame, rows=200)
    assert g is not None and g["long"].shape == (5, 200) and g["long"].dtype == np.uint8
    assert list(g["positions"]) == [0, 50, 100, 150, 200]
    inside = (prices >= g["lo"]) & (prices < g["hi"])
    assert g["lo"] < frame["low"].min() and g["hi"] > frame["high"].max()
    # intensities are sqrt(usd / top) on one scale for both sides, the top at the 99th percentile
    top = g["top"]
    assert np.all(g["long"] <= 255) and np.any(g["long"] == 255) and top > 0
    # a cell at full intensity holds at least `top`; the column sums of the window are the input's
    row = np.floor((g["hi"] - prices) / (g["hi"] - g["lo"]) * 200).astype(int)
    col0 = np.bincount(row[inside], weights=long_usd[0, inside], minlength=200)
    expect = np.round(255 * np.sqrt(np.clip(col0 / top, 0, 1))).astype(np.uint8)
    np.testing.assert_array_equal(g["long"][0], expect)


# -- The page ----------------------------------------------------------------------------------------


def _decode(page: str) -> tuple[dict, bytes]:
    meta = json.loads(re.search(r'<script id="cascade-meta" type="application/json">(.*?)</script>', page, re.S)[1])
    data = re.search(r'<script id="cascade-data" type="application/octet-stream">(.*?)</script>', page, re.S)[1]
    return meta, zlib.decompress(base64.b64decode(data))


def _array(meta: dict, buf: bytes, name: str) -> np.ndarray:
    h = meta["arrays"][name]
    if h["type"] == "f32":
        return np.frombuffer(buf, "<f4", h["n"], h["offset"])
    if h["type"] == "u8":
        return np.frombuffer(buf, np.uint8, h["n"], h["offset"])
    planes = np.frombuffer(buf, np.uint8, 4 * h["n"], h["offset"]).reshape(4, h["n"])
    ints = np.ascontiguousarray(planes.T).view("<i4").ravel().astype(np.int64)
    out = (np.cumsum(ints) if h["delta"] else ints).astype(float)
    if h.get("missing"):
        out[_array(meta, buf, name + "_missing").astype(bool)] = np.nan
    return out, h["scale"]


def _values(meta: dict, buf: bytes, name: str) -> np.ndarray:
    got = _array(meta, buf, name)
    return got[0] * got[1] if isinstance(got, tuple) else got


def _candles(meta: dict, buf: bytes) -> np.ndarray:
    """The page's candle decoding: gap from the previous close, body, upper and lower wick."""
    (gap, scale), (body, _), (upper, _), (lower, _) = (_array(meta, buf, f"bar_{p}") for p in
                                                       ("gap", "body", "upper", "lower"))
    close = np.cumsum(gap + body)
    open_ = close - body
    return np.column_stack([open_, np.maximum(open_, close) + upper, np.minimum(open_, close) - lower, close]) * scale


def test_report_shares_the_chart_library_and_carries_every_bar(run, tmp_path: Path) -> None:
    frame, signals, result = run
    stats = compute_stats(result, "1h")
    results = tmp_path / "results"
    paths = [render_report(frame, signals, result, stats, results / f"run{i}" / "report.html", "t")
             for i in range(2) if (results / f"run{i}").mkdir(parents=True) is None]
    assets = results / ASSETS_DIRNAME
    assert sorted(p.name for p in assets.iterdir()) == sorted([CHART_JS, "LICENSE-lightweight-charts.txt", "NOTICE"])
    for path in paths:
        page = path.read_text()
        assert f'<script src="../{ASSETS_DIRNAME}/{CHART_JS}">' in page and "plotly" not in page.lower()
        assert path.stat().st_size < 400_000  # 2 200 bars: the data, not a library
        for heading in ("Statistics", "Long / short", "Risk states", "Monthly returns", "Trades"):
            assert f"<h2>{heading}</h2>" in page
    meta, buf = _decode(paths[0].read_text())
    assert meta["n"] == len(frame) and meta["step_s"] == 3600
    times = _values(meta, buf, "time")
    np.testing.assert_array_equal(times, frame.index.as_unit("s").asi8)  # every bar, at its own timeframe
    np.testing.assert_allclose(_candles(meta, buf), frame[["open", "high", "low", "close"]].to_numpy(),
                               rtol=0, atol=1e-4)
    np.testing.assert_allclose(_values(meta, buf, "equity"), result.equity["equity"].to_numpy(), rtol=1e-6)
    assert set(_values(meta, buf, "risk")) == {0, 1, 2}
    trades = meta["trades"]
    assert len(trades) == len(result.trades)
    first = result.trades.iloc[0]
    assert frame.index[trades[0]["a"]] == first["entry_time"] and trades[0]["stop"] == pytest.approx(first["stop"])
    assert trades[0]["side"] in ("long", "short")


def test_report_js_is_plain_and_the_vendored_library_has_its_licence() -> None:
    root = Path(__file__).resolve().parents[2] / "backtests" / "report"
    lib = (root / "vendor" / CHART_JS).read_text()
    assert "Licensed under Apache License 2.0" in lib[:400]
    assert "Apache License" in (root / "vendor" / "LICENSE-lightweight-charts.txt").read_text()
    assert "tradingview.com" in (root / "vendor" / "NOTICE").read_text()
