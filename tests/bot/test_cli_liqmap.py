"""`cascade liqmap` output conventions: ``--output`` suffixes, the HTML view fitted to the price path,
range presets and a readable colour bar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtests.report.liqmap_plot import PRESETS, _log_ticks, price_view
from bot.cli import main
from bot.commands.liqmap import _outputs

AT = pd.Timestamp("2025-11-20T12:00", tz="UTC")


@pytest.mark.parametrize(("output", "html", "png"), [
    ("x.html", "x.html", None), ("x.HTML", "x.HTML", None), ("x.png", None, "x.png"),
    ("out/btc", "out/btc.html", "out/btc.png"), ("btc.1h", "btc.1h.html", "btc.1h.png"),
])
def test_output_suffix_decides_what_is_written(output: str, html: str | None, png: str | None) -> None:
    got = _outputs(Path(output), "BTC/USDT:USDT", "1h", AT)
    assert got == (None if html is None else Path(html), None if png is None else Path(png))


def test_default_output_is_named_after_symbol_timeframe_and_time() -> None:
    html, png = _outputs(None, "BTC/USDT:USDT", "1h", AT)
    assert html is not None and png is not None
    assert html.name == "BTCUSDT_1h_20251120T1200.html" and png.name == "BTCUSDT_1h_20251120T1200.png"


def test_view_fits_the_price_path_and_ticks_are_1_2_5() -> None:
    frame = pd.DataFrame({"low": [100.0, 90.0], "high": [110.0, 120.0]})
    assert price_view(frame, 0.25) == pytest.approx((82.5, 127.5))
    np.testing.assert_allclose(_log_ticks(1.5e6, 2.2e7), [2e6, 3e6, 5e6, 1e7, 2e7])
    np.testing.assert_allclose(_log_ticks(6.7e5, 1.5e6), [6.7e5, 1e6, 1.5e6])
    assert [p[0] for p in PRESETS] == ["12h", "24h", "7d", "30d"]


def test_png_suffix_writes_only_the_png_and_html_has_presets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "empty.toml"
    cfg.write_text("")
    base = ["liqmap", "--config", str(cfg), "--from", "2025-11-10", "--to", "2025-11-20", "--json"]
    with pytest.raises(SystemExit) as done:
        main([*base, "--output", str(tmp_path / "only.png")])
    assert done.value.code in (0, None)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["html"] is None and Path(summary["png"]).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.toml", "only.png"]

    with pytest.raises(SystemExit):
        main([*base, "--output", str(tmp_path / "page.html")])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["png"] is None
    page = Path(summary["html"]).read_text()
    for label in ("12h", "24h", "7d", "30d", "all"):
        assert f'"label":"{label}"' in page
    assert "plotly_relayout" in page  # the price axis re-fits on zoom


def test_figure_keeps_the_colour_bar_clear_and_fits_the_price_path() -> None:
    from backtests.report.liqmap_plot import heatmap_figure
    from backtests.sample import load_sample_frame
    from strategies.features.liquidation_map import LiqMapSnapshot

    frame = load_sample_frame("BTC/USDT:USDT", "1h", pd.Timestamp("2025-06-01", tz="UTC"),
                              pd.Timestamp("2025-06-08", tz="UTC"))
    prices = np.geomspace(80_000, 130_000, 400)
    rng = np.random.default_rng(3)
    snap = LiqMapSnapshot(times=frame.index[::12], prices=prices, long_usd=rng.gamma(0.5, 1e6, (14, 400)),
                          short_usd=rng.gamma(0.5, 1e6, (14, 400)))
    fig = heatmap_figure(frame, snap)
    heat = fig.data[0]
    assert heat.colorbar.x >= 1.0 and heat.colorbar.xanchor == "left"  # right of the profile panel
    assert len(heat.colorbar.tickvals) >= 3 and all(t[-1] in "kMB" for t in heat.colorbar.ticktext)
    lo, hi = price_view(frame)
    assert tuple(fig.layout.yaxis.range) == pytest.approx((lo, hi))
    assert frame["low"].min() > lo and frame["high"].max() < hi and hi - lo < 1.6 * (frame["high"].max() - frame["low"].min())
    labels = [b.label for b in fig.layout.xaxis.rangeselector.buttons]
    assert labels == ["12h", "24h", "7d", "30d", "all"]
