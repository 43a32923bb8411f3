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
    return sorted(path.iterdir()) if path.exists() else []


# -- End to end ----------------------------------------------------------------------------------


def test_fast_run_writes_a_complete_run_folder(config: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "--config", str(config), "--engine", "fast", *SHORT, "--json")
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

    params = json.loads((run_dir / "params.json").read_text())
    assert params["strategy"] == run_dir.name.split("-", 1)[1].rsplit("-", 1)[0]
    assert params["engine"] == "fast" and params["data"]["timeframe"] == "1h"
    assert params["config"]["backtest"]["from"] == "2025-06-01"
    html = (run_dir / "report.html").read_text()
    assert "plotly" in html.lower() and "Statistics" in html and "<script" in html


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
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(set(RUN_FILES) - {"report.html"})


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
    info, warning = brackets_used("DOGE/USDT:USDT")
    assert info["requested"] == "DOGEUSDT" and info["symbol"] == "BTCUSDT"
    assert warning is not None and "no leverage brackets stored for DOGEUSDT" in warning
