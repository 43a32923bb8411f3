"""`cascade backtest` end to end on the bundled sample: run folder, JSON line, user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from backtests.runner import atomic_dir, run_id
from bot.cli import main
from bot.commands.backtest import SUMMARY_KEYS, parse_param_flags
from bot.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SHORT = ["--from", "2025-06-01", "--to", "2025-06-15"]  # two weeks of 1h bars
RUN_FILES = ("stats.json", "trades.csv", "equity.csv", "equity.parquet", "params.json", "report.html")
"""A run folder with ``--equity-csv`` (equity.csv is written only on request)."""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Built-in defaults, an empty user data dir (so the bundled sample is used), results in tmp."""
    path = tmp_path / "config.toml"
    path.write_text(f'[data]\ndir = "{(tmp_path / "data").as_posix()}"\n'
                    f'[backtest]\nresults_dir = "{(tmp_path / "results").as_posix()}"\n')
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["backtest", *args])
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else int(code)), out, err


def entries(path: Path) -> list[Path]:
    # the results folder's shared chart library (`_assets/`) is not a run
    return sorted(p for p in path.iterdir() if p.name != "_assets") if path.exists() else []


# -- End to end ----------------------------------------------------------------------------------


def test_equity_csv_is_written_only_on_request(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", *SHORT, "--json", "--no-report")
    assert code == 0, err
    run_dir = Path(json.loads(out.strip().splitlines()[-1])["run_dir"])
    assert sorted(p.name for p in run_dir.iterdir()) == ["equity.parquet", "params.json", "stats.json", "trades.csv"]
    config.write_text(config.read_text().replace("[backtest]\n", "[backtest]\nequity_csv = true\n"))
    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", *SHORT, "--json", "--no-report")
    assert code == 0, err
    assert (Path(json.loads(out.strip().splitlines()[-1])["run_dir"]) / "equity.csv").stat().st_size > 0


def test_fast_run_writes_a_complete_run_folder(config: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", *SHORT, "--json", "--equity-csv")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    for key in (*SUMMARY_KEYS, "run_dir", "sharpe", "sortino", "cagr"):
        assert key in summary
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == tmp_path / "results"
    assert entries(tmp_path / "results") == [run_dir]  # no temporary folder left behind
    for name in RUN_FILES:
        assert (run_dir / name).stat().st_size > 0, name

    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["n_trades"] == summary["n_trades"]
    assert stats["final_equity"] == pytest.approx(summary["final_equity"])
    trades = pd.read_csv(run_dir / "trades.csv")
    assert len(trades) == stats["n_trades"]
    if len(trades):
        assert {"entry_time", "exit_time", "side", "qty", "pnl", "exit_reason"} <= set(trades.columns)
        assert trades["pnl"].sum() == pytest.approx(stats["final_equity"] - stats["initial_cash"], rel=1e-6, abs=1e-6)
    equity = pd.read_csv(run_dir / "equity.csv", index_col="time", parse_dates=True)
    assert equity.index[0] == pd.Timestamp("2025-06-01", tz="UTC")
    assert equity.index[-1] == pd.Timestamp("2025-06-14 23:00", tz="UTC")
    assert equity["equity"].iloc[-1] == pytest.approx(stats["final_equity"])
    assert (run_dir / "equity.csv").read_text().splitlines()[1].startswith('"2025-06-01T00:00:00Z",')
    stored = pd.read_parquet(run_dir / "equity.parquet").set_index("time")
    assert (stored.index == equity.index).all()
    pd.testing.assert_frame_equal(stored, equity, check_dtype=False, check_index_type=False, rtol=0, atol=0)

    params = json.loads((run_dir / "params.json").read_text())
    assert params["strategy"] == run_dir.name.split("-", 1)[1].rsplit("-", 1)[0]
    assert params["engine"] == "fast" and params["data"]["timeframe"] == "1h"
    assert params["config"]["backtest"]["from"] == "2025-06-01"
    html = (run_dir / "report.html").read_text()
    assert "../_assets/lightweight-charts" in html and "Statistics" in html and "<script" in html


def test_param_override_lands_in_params_json_and_run_id(config: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from backtests.runner import params_dict
    from strategies import DEFAULT_STRATEGY, make_params

    def valid(key: str, value: int) -> bool:
        try:
            make_params(DEFAULT_STRATEGY, {key: value + 1})
        except ValueError:
            return False
        return True

    defaults = params_dict(make_params(DEFAULT_STRATEGY, {}))
    key, value = next((k, v) for k, v in defaults.items()
                      if isinstance(v, int) and not isinstance(v, bool) and valid(k, v))
    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", *SHORT, "--no-report", "--json",
                         "--param", f"{key}={value + 1}")
    assert code == 0, err
    run_dir = Path(json.loads(out.strip().splitlines()[-1])["run_dir"])
    params = json.loads((run_dir / "params.json").read_text())
    assert params["params"][key] == value + 1 and params["overrides"] == {key: value + 1}
    assert not (run_dir / "report.html").exists()  # --no-report
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(set(RUN_FILES) - {"report.html", "equity.csv"})


def test_backtrader_engine_short_range(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "--config", str(config), "--engine", "backtrader", "--from", "2025-06-01",
                         "--to", "2025-06-08", "--no-report", "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["engine"] == "backtrader"
    assert (Path(summary["run_dir"]) / "stats.json").exists()


def test_human_output_without_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", *SHORT, "--no-report")
    assert code == 0, err
    assert "final equity" in out and "run folder:" in out


# -- User errors: exit 2, one line, no run folder --------------------------------------------------


@pytest.mark.parametrize(("args", "expect"), [
    (["--strategy", "liq_asymetry"], "unknown strategy 'liq_asymetry' (did you mean 'liq_asymmetry'?)"),
    (["--strategy", "nope"], "unknown strategy 'nope'"),
    (["--param", "no_such_param=3"], "unknown parameter 'no_such_param'"),
    (["--param", "justtext"], "expected KEY=VALUE"),
    (["--engine", "turbo"], "backtest.engine"),
    (["--from", "2030-01-01", "--to", "2030-02-01"], "--from/--to"),
    (["--from", "2025-06-10", "--to", "2025-06-01"], "must be after --from"),
    (["--timeframe", "7x"], "invalid timeframe"),
])
def test_user_errors_exit_2_with_one_line(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], expect: str) -> None:
    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", *SHORT, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert entries(tmp_path / "results") == []


def test_bad_param_value_names_the_field(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from backtests.runner import params_dict
    from strategies import DEFAULT_STRATEGY, make_params

    key = next(k for k, v in params_dict(make_params(DEFAULT_STRATEGY, {})).items()
               if isinstance(v, int | float) and not isinstance(v, bool))
    code, _, err = cli(capsys, "--config", str(config), "--engine", "fast", *SHORT, "--param", f"{key}=banana")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and key in err
    assert entries(tmp_path / "results") == []


def test_failure_while_writing_leaves_no_partial_folder(config: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import backtests.report.html as report

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "render_report", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["backtest", "--config", str(config), "--engine", "fast", *SHORT])
    assert entries(tmp_path / "results") == []


def test_cascade_entry_point_exit_code(tmp_path: Path) -> None:
    """The real console entry point (python -m bot): exit 2 and one line on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "bot", "backtest", "--strategy", "nope", "--output-dir",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "unknown strategy 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


# -- Helpers -------------------------------------------------------------------------------------


def test_parse_param_flags_reads_toml_literals() -> None:
    assert parse_param_flags(["a=1", "b=0.5", "c=true", "d=text", "e='quoted'", "f=[1, 2]"]) == {
        "a": 1, "b": 0.5, "c": True, "d": "text", "e": "quoted", "f": [1, 2]}
    assert parse_param_flags(None) == {}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_param_flags(["=3"])


def test_run_id_is_time_strategy_and_hash() -> None:
    now = pd.Timestamp("2025-01-02 03:04:05", tz="UTC").to_pydatetime()
    a = run_id("sr_levels", {"params": {"x": 1}}, now)
    assert a.startswith("20250102T030405Z-sr_levels-") and len(a.rsplit("-", 1)[1]) == 8
    assert a == run_id("sr_levels", {"params": {"x": 1}}, now)
    assert a != run_id("sr_levels", {"params": {"x": 2}}, now)


def test_atomic_dir_renames_on_success_and_cleans_on_error(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "ok") as tmp:
        (tmp / "f.txt").write_text("x")
        assert not (tmp_path / "ok").exists()
    assert (tmp_path / "ok" / "f.txt").read_text() == "x"
    with pytest.raises(ValueError), atomic_dir(tmp_path / "bad") as tmp:
        (tmp / "f.txt").write_text("x")
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


# -- User strategies, config checked at load, warnings ------------------------------------------

EXAMPLE = REPO / "examples" / "ema_cross.py"


def test_user_strategy_file_runs_from_another_directory(tmp_path: Path) -> None:
    """A strategy file outside the package, given by a relative path, from a directory with no config."""
    work = tmp_path / "elsewhere"
    (work / "mine").mkdir(parents=True)
    (work / "mine" / "cross.py").write_text(EXAMPLE.read_text())
    proc = subprocess.run([sys.executable, "-m", "bot", "backtest", "--strategy", "mine/cross.py", "--param",
                           "fast=10", "--engine", "fast", *SHORT, "--no-report", "--json", "--data-dir",
                           str(REPO / "backtests" / "sample_data"), "--output-dir", "out"],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["strategy"] == "ema_cross" and summary["n_trades"] > 0
    params = json.loads((Path(work / summary["run_dir"]) / "params.json").read_text())
    assert params["params"] == {"fast": 10, "slow": 50, "stop_atr": 0.0}
    assert params["strategy_ref"] == "mine/cross.py"


@pytest.mark.parametrize(("source", "problem"), [
    ("def signals(:\n", "syntax error"),
    ("import not_a_module_xyz\n", "ModuleNotFoundError"),
    ("X = 1\n", "missing Params, signals, warmup"),
])
def test_broken_user_file_exits_2_naming_file_and_problem(config: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str], source: str,
                                                          problem: str) -> None:
    path = tmp_path / "broken.py"
    path.write_text(source)
    code, _, err = cli(capsys, "--config", str(config), "--strategy", str(path), *SHORT)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(path) in lines[0] and problem in lines[0], err
    assert entries(tmp_path / "results") == []


def test_config_strategy_paths_relative_to_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "strats").mkdir()
    (tmp_path / "strats" / "ema.py").write_text(EXAMPLE.read_text())
    config = tmp_path / "config.toml"
    config.write_text(f'[data]\ndir = "{(tmp_path / "data").as_posix()}"\n'
                      f'[backtest]\nresults_dir = "{(tmp_path / "results").as_posix()}"\nstrategy = "ema_cross"\n'
                      '[strategies]\npaths = ["strats/ema.py"]\n[strategies.ema_cross]\nslow = 40\n')
    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", *SHORT, "--no-report", "--json")
    assert code == 0, err
    run_dir = Path(json.loads(out.strip().splitlines()[-1])["run_dir"])
    assert json.loads((run_dir / "params.json").read_text())["params"]["slow"] == 40


@pytest.mark.parametrize(("table", "expect"), [
    ("[liqmap]\nhalf_life_dayz = 3\n", "unknown key 'liqmap.half_life_dayz' (did you mean 'liqmap.half_life_days'?)"),
    ("[liqmap]\nwindow_days = -1\n", "liqmap.window_days"),
    ("[strategies.sr_levels]\npivot = 3\n", "unknown key 'strategies.sr_levels.pivot' (did you mean 'pivot_n'?)"),
    ("[strategies.sr_levels]\nrule = 'sometimes'\n", "strategies.sr_levels.rule"),
    ("[strategies.sr_level]\npivot_n = 3\n", "[strategies.sr_level]: unknown strategy (did you mean 'sr_levels'?)"),
])
def test_config_sections_checked_at_load(tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str,
                                         expect: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in [liqmap] or [strategies.X] stops the command before any data is read."""
    import bot.data

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr(bot.data, "load_frame", no_work)
    config = tmp_path / "config.toml"
    config.write_text(f'[backtest]\nresults_dir = "{(tmp_path / "results").as_posix()}"\n' + table)
    code, _, err = cli(capsys, "--config", str(config), *SHORT)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expect in lines[0], err


def test_liqmap_section_reaches_the_strategy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[data]\ndir = "{(tmp_path / "data").as_posix()}"\n'
                      f'[backtest]\nresults_dir = "{(tmp_path / "results").as_posix()}"\n'
                      '[liqmap]\nhalf_life_days = 7.0\n')
    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", *SHORT, "--no-report", "--json")
    assert code == 0, err
    params = json.loads((Path(json.loads(out.strip().splitlines()[-1])["run_dir"]) / "params.json").read_text())
    assert params["params"]["liqmap"]["half_life_days"] == 7.0


def test_degenerate_runs_warn_on_terminal_and_in_stats(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # funding never reached the crowded level in the sample: the reset rule makes no trade; 2025-01-20 leaves
    # 20 days of history for a ~60 day warm-up; Hyperliquid open interest starts on 2025-03-08
    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", "--strategy", "funding_reversal",
                         "--param", "rule=reset", "--from", "2025-01-20", "--to", "2025-02-20", "--no-report",
                         "--json")
    assert code == 0, err
    stats = json.loads((Path(json.loads(out.strip().splitlines()[-1])["run_dir"]) / "stats.json").read_text())
    warnings = stats["warnings"]
    assert any(w.startswith("0 trades") for w in warnings)
    assert any(w.startswith("only 20.0 days of data before 2025-01-20") for w in warnings)
    assert any(w.startswith("no open interest") for w in warnings)
    assert not any(w.startswith("no funding") for w in warnings)
    for w in warnings:
        assert f"warning: {w[:40]}" in " ".join(err.split())


def test_brackets_recorded_and_missing_ones_warned(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from backtests.runner import brackets_used

    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", "--symbol", "ETH/USDT:USDT", *SHORT,
                         "--no-report", "--json")
    assert code == 0, err
    params = json.loads((Path(json.loads(out.strip().splitlines()[-1])["run_dir"]) / "params.json").read_text())
    assert params["brackets"]["symbol"] == "ETHUSDT" and params["brackets"]["requested"] == "ETHUSDT"
    from bot.config import Config, with_overrides

    def on(symbol: str, data_dir: Path | None = None) -> Config:
        return with_overrides(Config(), "data", symbol=symbol, dir=data_dir)

    info, warning = brackets_used(on("DOGE/USDT:USDT"))  # from the older bundled snapshot, no stand-in
    assert info == {"requested": "DOGEUSDT", "symbol": "DOGEUSDT", "as_of": "2023-09", "tiers": 10} and warning is None
    info, warning = brackets_used(on("XRP/USDT:USDT"))
    assert info["requested"] == "XRPUSDT" and info["symbol"] == "BTCUSDT"
    assert warning is not None and "no leverage brackets stored for XRPUSDT" in warning


def test_downloaded_brackets_take_precedence(tmp_path: Path) -> None:
    """Tiers ``cascade download`` stored in the data directory (current) win over the bundled ones."""
    from backtests.runner import brackets_used, market_brackets
    from bot.config import Config, with_overrides
    from bot.risk.brackets import BRACKETS_FILE, DOWNLOADED_FILE, load_brackets

    bundled = json.loads(BRACKETS_FILE.read_text())
    tiers = [dict(t, max_leverage=min(t["max_leverage"], 50)) for t in bundled["symbols"]["BTCUSDT"]]
    (tmp_path / "binanceusdm").mkdir()
    (tmp_path / "binanceusdm" / DOWNLOADED_FILE).write_text(json.dumps(
        {"as_of": "2026-12-01", "symbols": {"XRPUSDT": tiers, "BTCUSDT": tiers}}))
    for symbol in ("XRP/USDT:USDT", "BTC/USDT:USDT"):
        cfg = with_overrides(Config(), "data", symbol=symbol, dir=tmp_path)
        info, warning = brackets_used(cfg)
        assert info["symbol"] == symbol.split("/")[0] + "USDT" and info["as_of"] == "2026-12-01" and warning is None
        assert float(market_brackets(cfg).max_leverage[0]) == 50.0
    assert float(load_brackets("BTCUSDT").max_leverage[0]) > 50.0  # the bundled file is untouched


def test_open_interest_source_reaches_the_frame() -> None:
    """``[data] open_interest_source`` picks the venue whose open interest joins a Binance frame."""
    from backtests.runner import data_warnings, load_history
    from bot.config import Config, with_overrides

    start, end = pd.Timestamp("2025-06-01", tz="UTC"), pd.Timestamp("2025-06-03", tz="UTC")
    joined = load_history(Config(), pd.Timedelta(days=1), start, end)
    assert joined.traded["open_interest"].notna().all() and data_warnings(joined.traded) == []
    none = load_history(with_overrides(Config(), "data", open_interest_source=""), pd.Timedelta(days=1), start, end)
    assert "open_interest" not in none.frame.columns
    assert data_warnings(none.traded) == ["no open interest in the traded range: the liquidation map falls back "
                                          "to volume-inferred interest"]


def test_protection_warnings_from_the_risk_state_path() -> None:
    """Hand-built equity paths: a run that ends HALTED says since when; one that recovered says for how long."""
    from types import SimpleNamespace

    from backtests.runner import result_warnings

    idx = pd.date_range("2025-01-01", periods=10, freq="1h", tz="UTC", name="time")
    ends_halted = ["ACTIVE"] * 4 + ["REDUCING"] * 2 + ["HALTED"] * 4
    res = SimpleNamespace(equity=pd.DataFrame({"risk_state": pd.Categorical(ends_halted)}, index=idx))
    assert result_warnings(res, {"n_trades": 3}) == [
        "trading stopped by a protection: HALTED since 2025-01-01 06:00 UTC until the end (60% of the bars not "
        "ACTIVE); see [risk] and equity.parquet's risk_state"]
    recovered = ["ACTIVE"] * 2 + ["HALTED"] * 3 + ["ACTIVE"] * 5
    res = SimpleNamespace(equity=pd.DataFrame({"risk_state": pd.Categorical(recovered)}, index=idx))
    assert result_warnings(res, {"n_trades": 0}) == [
        "0 trades: the strategy never entered in this range (check the period, the warm-up and the parameters)",
        "trading was halted by a protection for 30% of the bars (first at 2025-01-01 02:00 UTC)"]


def test_report_draws_the_features_the_strategy_traded_on() -> None:
    import numpy as np

    from backtests import runner
    from bot.config import Config, LiqMapParams, with_overrides
    from strategies.features import liquidation_map as lm
    from strategies.features.levels import LevelParams, level_features

    cfg = Config(liqmap=LiqMapParams(half_life_days=7.0))
    cfg = with_overrides(cfg, "backtest", strategy="sr_levels", engine="fast", start="2025-06-01", end="2025-06-08")
    r = runner.run(cfg, {"pivot_n": 3})
    layers = runner.report_layers(r, cfg, columns=20)
    own = level_features(r.history.frame, LevelParams(pivot_left=3, pivot_right=3), r.features["liq"])
    pd.testing.assert_frame_equal(layers["zones"], own.loc[r.history.start:])  # pivot 3, not the default 5
    snap = lm.liquidation_map_snapshots(r.history.frame, LiqMapParams(half_life_days=7.0), layers["heatmap"].times)
    np.testing.assert_array_equal(layers["heatmap"].long_usd, snap.long_usd)
    assert layers["heatmap"].times[0] == r.history.start
    plain = runner.run(with_overrides(cfg, "backtest", strategy="funding_reversal"))
    assert runner.report_layers(plain, cfg) == {"zones": None, "heatmap": None}


def test_bundled_extra_brackets_match_their_source() -> None:
    """bot/risk/brackets_binance_top.json: tiers contiguous, and the §D.1 recursion reproduces the
    maintenance amounts ``cum`` that the source file states next to each tier."""
    import numpy as np

    from bot.risk.brackets import maintenance_amounts

    doc = json.loads((REPO / "bot" / "risk" / "brackets_binance_top.json").read_text())
    source_cum = {  # the ``cum`` column of the source, per symbol
        "BNBUSDT": [0, 5, 45, 545, 8045, 58045, 183045, 433045, 2433045, 9933045],
        "DOGEUSDT": [0, 5, 15, 165, 11415, 38915, 148915, 288915, 1163915, 5663915],
        "DOTUSDT": [0, 35, 535, 8035, 58035, 108035, 233035, 1233035, 13733035],
        "SOLUSDT": [0, 100, 900, 1900, 26900, 126900, 246900, 996900, 5496900],
    }
    assert set(doc["symbols"]) == set(source_cum)
    for symbol, tiers in doc["symbols"].items():
        floor = np.array([t["floor"] for t in tiers], dtype=float)
        cap = np.array([t["cap"] for t in tiers], dtype=float)
        assert floor[0] == 0 and (floor[1:] == cap[:-1]).all() and [t["tier"] for t in tiers] == list(range(1, len(tiers) + 1))
        lev = [t["max_leverage"] for t in tiers]
        assert lev == sorted(lev, reverse=True)
        np.testing.assert_allclose(maintenance_amounts(floor, np.array([t["mmr"] for t in tiers])),
                                   source_cum[symbol], atol=1e-6)


def test_default_start_is_one_warmup_after_the_data_and_short_data_warns() -> None:
    from backtests.runner import load_history
    from bot.config import Config

    h = load_history(Config(), pd.Timedelta(days=30))
    assert h.start == h.frame.index[0] + pd.Timedelta(days=30) and h.warnings == ()
    short = load_history(Config(), pd.Timedelta(days=5000))
    assert short.start == short.frame.index[0]
    assert short.warnings[0].startswith("the data (") and "shorter than the strategy's warm-up" in short.warnings[0]


def test_suggested_params_keep_the_configured_fixed_values() -> None:
    import optuna

    from backtests import runner
    from bot.config import Config, LiqMapParams
    from strategies import STRATEGIES

    cfg = Config(liqmap=LiqMapParams(half_life_days=7.0), strategies={"sr_levels": {"window": 300, "rr": 9.0}})
    spec = STRATEGIES["sr_levels"]
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2)).ask()
    p = runner.suggest_params(cfg, spec, trial)
    assert p.liqmap.half_life_days == 7.0 and p.window == 300  # not searched: from the config
    assert p.rr == trial.params["rr"] != 9.0 and p.pivot_n == trial.params["pivot_n"]  # searched: the trial's


def test_timeframe_above_the_warmup_convention_warns(tmp_path: Path, btc_1h: pd.DataFrame) -> None:
    """Daily bars built from the sample's hourly candles: the run works and says the warm-up may be short."""
    from backtests import runner
    from bot.config import Config, with_overrides
    from bot.store import DatasetKey, Store

    daily = btc_1h[["open", "high", "low", "close", "volume"]].resample("1D").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()
    Store(tmp_path).write(DatasetKey("binanceusdm", "BTC/USDT:USDT", "ohlcv", "1d"), daily)
    cfg = with_overrides(Config(), "data", dir=tmp_path, timeframe="1d", use_sample=False)
    cfg = with_overrides(cfg, "backtest", strategy=str(EXAMPLE), engine="fast")
    r = runner.run(cfg)
    assert any(w.startswith("1d bars: declared warm-ups cover bar-counted lookbacks up to 4h") for w in r.warnings)
