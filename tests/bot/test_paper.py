"""`cascade paper` end to end: the runner on the replay exchange (ccxt's real client, loopback) and the
in-process broker, held to the backtest's trades; `cascade compare` and `cascade status` on the result."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from backtests.runner import resolve_strategy
from backtests.runner import run as backtest_run
from bot.cli import app
from bot.commands.paper import compare_trades, status_data
from bot.config import parse_config
from bot.live.runner import lockstep
from bot.live.session import build
from bot.store import Store

ROOT = Path(__file__).resolve().parents[2]
EMA = str(ROOT / "examples" / "ema_cross.py")
EX, BTC = "binanceusdm", "BTC/USDT:USDT"
FROM, TO = "2025-03-27", "2025-03-29"  # 48 bars after a 25-day warm-up


def ms(ts: str) -> int:
    return int(pd.Timestamp(ts, tz="UTC").value // 1_000_000)


@pytest.fixture(scope="module")
def source(btc_trading_store) -> Store:
    return btc_trading_store("2025-02-25", "2025-04-05")


def config(source: Store, runs: Path, **risk):
    return parse_config({"data": {"dir": str(source.root), "use_sample": False},
                         "backtest": {"engine": "fast", "from": FROM, "to": TO, "strategy": EMA,
                                      "results_dir": str(runs / "results")},
                         "live": {"runs_dir": str(runs), "settle_seconds": 1.0}, "risk": risk})


def paper_run(cfg, broker: str, name: str, **kw):
    spec, p = resolve_strategy(cfg, EMA, {"stop_atr": 2.0})
    s = build(cfg, spec, p, broker=broker, run=name, start=pd.Timestamp(FROM, tz="UTC"),
              end=pd.Timestamp(TO, tz="UTC"), lockstep=True, quiet=True, **kw)
    return s


def trades_csv(folder: Path) -> pd.DataFrame:
    df = pd.read_csv(folder / "trades.csv")
    for c in ("entry_time", "exit_time"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


@pytest.fixture(scope="module")
def runs(source, tmp_path_factory):
    """One backtest and two paper runs over the same 72 bars (exchange broker and in-process broker)."""
    root = tmp_path_factory.mktemp("paper-runs")
    cfg = config(source, root)
    out = {"cfg": cfg, "root": root}
    bt = backtest_run(cfg, {"stop_atr": 2.0})
    out["backtest"] = bt.result.trades
    from backtests.runner import write_run

    out["backtest_dir"] = write_run(cfg, bt, {"stop_atr": 2.0}, report=False)
    for broker in ("exchange", "sim"):
        s = paper_run(cfg, broker, f"p-{broker}")
        try:
            out[f"{broker}_wakes"] = lockstep(s.server, s.runner, ms(TO))
            out[f"{broker}_equity"] = s.store.db.execute("SELECT bar_ms, cash, exchange_equity FROM equity "
                                                         "ORDER BY bar_ms").fetchall()
            out[f"{broker}_trades"] = s.store.trades()
            if broker == "exchange":
                acct = s.server.account
                out["orders"] = list(acct.orders.values())
                out["algos"] = list(acct.algos.values())
                out["wallet"] = acct.totals(acct.clock_ms)["wallet"]
                out["positions"] = dict(acct.positions)
        finally:
            s.close()
        out[broker] = s.folder
    return out


def test_paper_on_the_replay_exchange_makes_the_backtests_trades(runs):
    bt, paper = runs["backtest"], trades_csv(runs["exchange"])
    lines, diffs = compare_trades(bt, paper, qty_step=0.001)
    assert diffs == 0, "\n".join(lines)
    assert len(bt) >= 2 and set(bt["exit_reason"]) >= {"stop"}
    # the exchange truncates the backtest's exact size to its 0.001 lot step, never more
    assert ((bt["qty"] - paper["qty"]) >= 0).all() and ((bt["qty"] - paper["qty"]) < 0.001).all()


def test_lockstep_books_every_bar_once_and_the_model_wallet_is_the_exchanges(runs):
    bars = pd.date_range(FROM, TO, freq="1h", tz="UTC", inclusive="left")
    eq = runs["exchange_equity"]
    assert runs["exchange_wakes"] == len(bars) == len(eq)
    assert [r[0] for r in eq] == [ms(str(b)) for b in bars]
    # the core's books (fills booked at the exchange's prices) against the exchange's wallet, every bar
    # but the last, where the core books the end-of-run close at the last close (as the backtest does)
    # and the exchange's position is closed by a market order at the next open. The exchange charges
    # funding at the mark at the settlement time, the runner's books at the bar's mark close (README:
    # about 1e-8 relative), so the two agree to that, not to the last cent's fraction
    assert max(abs(cash - wallet) / wallet for _, cash, wallet in eq[:-1]) < 1e-8
    assert runs["positions"] == {}  # the run's end closed the exchange position too


def test_one_order_per_intent_and_never_two_stops(runs):
    cids = [o["clientOrderId"] for o in runs["orders"]] + [a["clientAlgoId"] for a in runs["algos"]]
    assert len(cids) == len(set(cids))
    opening = [o for o in runs["orders"] if not o["reduceOnly"] and o["origType"] == "MARKET"]
    by_bar = pd.Series([o["time"] // 3_600_000 for o in opening]).value_counts()
    assert (by_bar <= 1).all()
    assert len(opening) == len(runs["exchange_trades"])  # each trade entered once
    # at any time at most one stop rests: every stop but the last ended before the next was placed
    stops = sorted((a for a in runs["algos"] if a["orderType"] == "STOP_MARKET"), key=lambda a: a["createTime"])
    for a, b in zip(stops, stops[1:], strict=False):
        assert a["algoStatus"] != "NEW" and a["updateTime"] <= b["createTime"]


def test_in_process_broker_is_the_fast_engine_exactly(runs):
    bt, sim = runs["backtest"], trades_csv(runs["sim"])
    assert len(sim) == len(bt)
    for col in ("side", "qty", "entry_price", "exit_price", "fees"):
        assert sim[col].to_numpy() == pytest.approx(bt[col].to_numpy(), rel=1e-12, abs=1e-9), col
    # funding: at a close the runner knows the mark price at settlement only as that bar's mark close
    # (what the replay exchange books too); the backtest reads the next bar's mark open (docs/methods.md §B.3)
    for col in ("funding", "pnl"):
        assert sim[col].to_numpy() == pytest.approx(bt[col].to_numpy(), rel=1e-6, abs=1e-5), col
    assert (sim["entry_time"].to_numpy() == bt["entry_time"].to_numpy()).all()
    assert list(sim["exit_reason"]) == list(bt["exit_reason"])


def test_compare_command_prints_trade_by_trade_and_fails_on_a_difference(runs, tmp_path):
    cli = CliRunner()
    same = cli.invoke(app, ["compare", str(runs["backtest_dir"]), str(runs["exchange"])])
    assert same.exit_code == 0, same.output
    assert "0 difference(s)" in same.output and same.output.count(" ok ") == len(runs["backtest"])
    changed = tmp_path / "changed"
    changed.mkdir()
    df = trades_csv(runs["exchange"])
    df.loc[0, "exit_reason"] = "signal" if df.loc[0, "exit_reason"] != "signal" else "stop"
    df.to_csv(changed / "trades.csv", index=False)
    diff = cli.invoke(app, ["compare", str(runs["backtest_dir"]), str(changed)])
    assert diff.exit_code == 1 and "DIFF" in diff.output and "reason" in diff.output
    missing = cli.invoke(app, ["compare", str(tmp_path), str(changed)])
    assert missing.exit_code == 2 or "no trades.csv" in str(missing.exception)


def test_status_shows_the_run(runs):
    data = status_data(runs["exchange"])
    assert data["state"] == "ACTIVE" and data["position"] is None and data["resting"] == []
    assert data["last_bar"] == (pd.Timestamp(TO, tz="UTC") - pd.Timedelta("1h")).isoformat()
    assert data["exchange_wallet"] == runs["exchange_equity"][-1][2]  # the exchange's wallet at the last bar
    assert data["equity"] == data["wallet"]  # flat at the end: nothing open to mark
    assert data["pnl"] == pytest.approx(data["equity"] - 10_000.0)
    assert data["trades"] == len(runs["backtest"]) and data["events"]
    out = CliRunner().invoke(app, ["status", str(runs["exchange"]), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["run"] == "p-exchange"
    table = CliRunner().invoke(app, ["status", str(runs["exchange"])])
    assert table.exit_code == 0 and "ACTIVE" in table.output and "last bar" in table.output


def test_events_jsonl_has_one_decision_per_bar_and_every_order(runs):
    lines = [json.loads(x) for x in (runs["exchange"] / "events.jsonl").read_text().splitlines()]
    decisions = [e for e in lines if e["kind"] == "decision"]
    assert len(decisions) == 48 and len({e["bar"] for e in decisions}) == 48
    bt = runs["backtest"]
    orders = [e for e in lines if e["kind"] == "order"]
    entries = [e for e in orders if e["message"].startswith("entry")]
    exits = [e for e in orders if e["message"].startswith(("exit", "end"))]
    assert len(entries) == len(bt)  # one market order per entry ...
    assert len(exits) == int((bt["exit_reason"].isin(["signal", "end"])).sum())  # ... and per exit at market
    stop_fills = [e for e in lines if e["kind"] == "fill" and e.get("reason") == "stop"]
    assert len(stop_fills) == int((bt["exit_reason"] == "stop").sum())  # stops fill on the exchange


def test_the_fetched_window_is_the_backtests_frame(source):
    """The feed's frame (ccxt from the replay exchange) equals the store's frame bar for bar."""
    from bot.data import load_frame
    from bot.exchange import make_exchange
    from bot.gateway import Gateway
    from bot.live.feed import Feed, stored_open_interest
    from bot.replay import ReplayServer

    now = ms("2025-03-20T00:00") + 1500
    # open interest: the replay serves none for binanceusdm; the store's (the sample's Hyperliquid
    # history, the backtest's [data] open_interest_source) is joined as the backtest joins it
    cfg = parse_config({"data": {"dir": str(source.root), "use_sample": True}})
    with ReplayServer(source.root, start=now, speed=0) as srv:
        feed = Feed(Gateway(make_exchange(EX, url=srv.url, rate_limit=False), "feed"), BTC, "1h",
                    ms("2025-03-01"), stored_open_interest=stored_open_interest(cfg))
        live = feed.frame(now)
        again = feed.frame(now)  # nothing new: the same frame, no duplicate rows
        short = Feed(feed.gw, BTC, "1h", ms("2025-03-01"), max_bars=48).frame(now)  # [live] max_window_bars
    stored = load_frame(source.root, EX, BTC, "1h", pd.Timestamp("2025-03-01", tz="UTC"),
                        pd.Timestamp("2025-03-20", tz="UTC"), use_sample=True)
    assert len(live) == 19 * 24 and live.index.equals(stored.index) and again.index.equals(live.index)
    assert live["open_interest"].notna().sum() > 200  # the history starts 2025-03-08
    pd.testing.assert_frame_equal(short[["open", "close", "funding_rate"]], live[["open", "close", "funding_rate"]].iloc[-48:])
    cols = ["open", "high", "low", "close", "volume", "mark_open", "mark_high", "mark_low", "mark_close",
            "funding_rate", "open_interest"]
    pd.testing.assert_frame_equal(live[cols], stored[cols], check_freq=False, check_names=False)
    assert live["funding_rate"].notna().sum() == 19 * 3  # every 8h settlement, at its bar's close


def test_paper_command_replays_and_prints_its_folder(source, tmp_path, monkeypatch, capsys):
    from bot.cli import main

    (tmp_path / "cfg.toml").write_text(f'[data]\ndir = "{source.root}"\nuse_sample = false\n'
                                       f'[live]\nruns_dir = "{tmp_path / "runs"}"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["paper", "--config", "cfg.toml", "--strategy", EMA, "--replay", "--from", "2025-03-27",
              "--to", "2025-03-27T06:00", "--run", "cli"])
    out = capsys.readouterr().out
    assert done.value.code in (0, None)
    assert "decision" in out and out.strip().splitlines()[-1].endswith("cli")
    assert status_data(tmp_path / "runs" / "cli")["last_bar"] == "2025-03-27T05:00:00+00:00"
    with pytest.raises(SystemExit) as done:
        main(["paper", "--config", "cfg.toml", "--strategy", EMA, "--replay", "--from", "2025-03-27"])
    assert done.value.code == 2 and "--replay needs --from and --to" in capsys.readouterr().err


def test_paper_against_a_replay_exchange_on_its_own_fast_clock_makes_the_backtests_trades(source, tmp_path):
    """Wall-clock mode: the replay exchange runs at 3600x (one 1h bar a second), the runner wakes on the
    exchange's clock, orders go through ccxt; no bar missed or booked twice, the backtest's trades."""
    import threading

    from bot.live.runner import run_forever
    from bot.replay import ReplayServer

    end = "2025-03-27T08:00"
    cfg = parse_config({"data": {"dir": str(source.root), "use_sample": False},
                        "backtest": {"engine": "fast", "from": FROM, "to": end, "strategy": EMA},
                        "live": {"runs_dir": str(tmp_path), "settle_seconds": 1.0, "poll_seconds": 0.02}})
    bt = backtest_run(cfg, {"stop_atr": 2.0}).result.trades
    spec, p = resolve_strategy(cfg, EMA, {"stop_atr": 2.0})
    key, secret = "wall-key-5d1c", "wall-secret-9e27"
    with ReplayServer(source.root, start=ms(FROM) - 2_000, speed=0, api_key=key, secret=secret,
                      initial_balance=10_000.0, taker_fee=0.0005, slippage_bps=1.0, timeframe="1h") as srv:
        s = build(cfg, spec, p, broker="exchange", run="wall", start=pd.Timestamp(FROM, tz="UTC"),
                  end=pd.Timestamp(end, tz="UTC"), exchange_url=srv.url, api_key=key, secret=secret, quiet=True)
        try:
            srv.clock.speed = 3600.0
            srv.clock.set(ms(FROM) - 2_000)
            done: list[int] = []
            gw = s.gateway
            t = threading.Thread(target=lambda: done.append(run_forever(
                s.runner, lambda: int(gw.call("time", gw.exchange.fetch_time)), poll_seconds=0.02,
                max_polls=5_000)))
            t.start()
            t.join(60)
            assert not t.is_alive() and done == [8]
            assert "missed" not in {r[0] for r in s.store.db.execute("SELECT kind FROM events")}
            paper = pd.DataFrame(s.store.trades())
        finally:
            s.close()
    paper["entry_time"] = pd.to_datetime(paper["entry_ms"], unit="ms", utc=True)
    paper["exit_time"] = pd.to_datetime(paper["exit_ms"], unit="ms", utc=True)
    lines, diffs = compare_trades(bt, paper, 0.001)
    assert diffs == 0 and len(bt) >= 2, "\n".join(lines)


def test_lockstep_against_a_replay_server_process_makes_the_backtests_trades(source, tmp_path):
    """`cascade replay-server --clock-control` in its own process; `cascade paper --exchange-url URL
    --replay` drives its clock bar by bar over HTTP: every bar booked once, the backtest's trades."""
    import os
    import subprocess
    import sys

    end = "2025-03-28T12:00"
    key, secret = "lockstep-key-4b1e", "lockstep-secret-77c2"
    env = {**os.environ, "CASCADE_API_KEY": key, "CASCADE_API_SECRET": secret}
    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text(f'[data]\ndir = "{source.root}"\nuse_sample = false\n'
                        f'[live]\nruns_dir = "{tmp_path / "runs"}"\nsettle_seconds = 1.0\n'
                        '[risk]\nmax_leverage = 5\n')
    cascade = str(Path(sys.executable).parent / "cascade")
    server = subprocess.Popen([cascade, "replay-server", "--config", str(cfg_file), "--port", "0", "--speed", "0",
                               "--start", "2025-03-26T23:59:58", "--timeframe", "1h", "--clock-control"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = next(line.split()[1] for line in server.stdout if line.startswith("url "))
        run = subprocess.run([cascade, "paper", "--config", str(cfg_file), "--strategy", EMA, "--param", "stop_atr=2",
                              "--exchange-url", url, "--replay", "--from", FROM, "--to", end, "--run", "remote",
                              "--quiet"], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
    finally:
        server.terminate()
        server.wait(30)
    folder = tmp_path / "runs" / "remote"
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    decided = [e["bar"] for e in events if e["kind"] == "decision"]
    bars = pd.date_range(FROM, end, freq="1h", tz="UTC", inclusive="left")
    assert len(decided) == len(bars) == len(set(decided)) and not [e for e in events if e["kind"] == "missed"]
    cfg = parse_config({"data": {"dir": str(source.root), "use_sample": False},
                        "backtest": {"engine": "fast", "from": FROM, "to": end, "strategy": EMA}})
    bt = backtest_run(cfg, {"stop_atr": 2.0}).result.trades
    lines, diffs = compare_trades(bt, trades_csv(folder), 0.001)
    assert diffs == 0 and len(bt) >= 2, "\n".join(lines)
    for path in folder.rglob("*"):  # the keys the server and the runner shared are in no file of the run
        if path.is_file():
            assert key.encode() not in path.read_bytes() and secret.encode() not in path.read_bytes()
