"""`cascade liqmap` on the bundled sample: files written, JSON summary, user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bot.commands.liqmap import liqmap
from bot.errors import UserError

app = typer.Typer()
app.command("liqmap")(liqmap)
app.command("noop")(lambda: None)  # keeps the subcommand form


def test_liqmap_writes_html_png_and_json(tmp_path: Path):
    cfg = tmp_path / "empty.toml"
    cfg.write_text("")
    args = ["liqmap", "--config", str(cfg), "--from", "2025-11-01", "--to", "2025-12-01",
            "--at", "2025-11-20T12:30", "--output", str(tmp_path / "btc"), "--json"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["at"] == "2025-11-20T12:00:00+00:00"
    assert summary["symbol"] == "BTC/USDT:USDT" and summary["close"] > 0
    assert {"S_up_10", "L_dn_10", "A_10", "cluster_up", "cluster_dn"} <= set(summary)
    html = Path(summary["html"])
    png = Path(summary["png"])
    assert html.stat().st_size > 1_000_000 and "plotly" in html.read_text()[:20_000].lower()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_liqmap_rejects_bad_input(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[liqmap]\nbucket_pc = 0.1\n")
    with pytest.raises(UserError, match="liqmap"):
        CliRunner().invoke(app, ["liqmap", "--config", str(cfg)], catch_exceptions=False)
    cfg.write_text("")
    with pytest.raises(UserError, match="--at"):
        CliRunner().invoke(app, ["liqmap", "--config", str(cfg), "--from", "2025-11-01", "--to", "2025-12-01",
                                 "--at", "2024-01-01", "--output", str(tmp_path / "x")], catch_exceptions=False)
