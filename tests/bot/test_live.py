"""The runner under faults, end to end through ccxt's real client against the replay exchange on loopback:
429/5xx bursts, replies lost after the exchange accepted an order, insufficient margin, vanished stops,
liquidation by the exchange, downtime (missed bars), stale data, the halt file; `cascade live` refusals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from backtests.runner import resolve_strategy
from backtests.runner import run as backtest_run
from bot.commands.paper import compare_trades, status_data
from bot.config import parse_config
from bot.live.killswitch import KillSwitch
from bot.live.session import build
from bot.replay import FaultConfig, TradeFaults
from bot.store import Store

ROOT = Path(__file__).resolve().parents[2]
EMA = str(ROOT / "examples" / "ema_cross.py")
EX, BTC = "binanceusdm", "BTC/USDT:USDT"
FROM, TO = "2025-03-27", "2025-03-28"  # 24 bars: 3 trades (signal, stop, end) in the backtest
H = 3_600_000


def ms(ts: str) -> int:
    return int(pd.Timestamp(ts, tz="UTC").value // 1_000_000)


@pytest.fixture(scope="module")
def source(btc_trading_store) -> Store:
    return btc_trading_store("2025-02-25", "2025-04-05")


def config(source: Store, runs: Path, **live):
    return parse_config({"data": {"dir": str(source.root), "use_sample": False},
                         "backtest": {"engine": "fast", "from": FROM, "to": TO, "strategy": EMA},
                         "live": {"runs_dir": str(runs), "settle_seconds": 1.0, **live}})


@pytest.fixture(scope="module")
def backtest(source, tmp_path_factory):
    return backtest_run(config(source, tmp_path_factory.mktemp("bt")), {"stop_atr": 2.0}).result.trades


def session(source, tmp_path, broker="exchange", faults=None, trade_faults=None, **live):
    cfg = config(source, tmp_path, **live)
    spec, p = resolve_strategy(cfg, EMA, {"stop_atr": 2.0})
    opts = {"faults": faults or FaultConfig(), "trade_faults": trade_faults or TradeFaults()}
    s = build(cfg, spec, p, broker=broker, run="r", start=pd.Timestamp(FROM, tz="UTC"),
              end=pd.Timestamp(TO, tz="UTC"), lockstep=True, quiet=True, replay_options=opts)
    s.gateway.backoff, s.gateway.max_backoff = 0.005, 0.02  # retries without real waiting
    return s


def drive(s, on_wake=None, stop_at: int | None = None) -> int:
    """The lock-step loop of `bot.live.runner.lockstep`, with a hook before each wake."""
    settle = int(s.runner.cfg.live.settle_seconds * 1000)
    wakes = 0
    while not s.runner.finished():
        wake = s.runner.next_wake_ms()
        if wake - settle > ms(TO) or (stop_at is not None and wake >= stop_at):
            break
        s.server.clock.set(wake)
        if on_wake is not None:
            on_wake(s, wake)
        s.runner.step(wake)
        wakes += 1
    return wakes


def paper_trades(s) -> pd.DataFrame:
    df = pd.DataFrame(s.store.trades())
    df["entry_time"] = pd.to_datetime(df["entry_ms"], unit="ms", utc=True)
    df["exit_time"] = pd.to_datetime(df["exit_ms"], unit="ms", utc=True)
    return df


def kinds(s) -> list[str]:
    return [r[0] for r in s.store.db.execute("SELECT kind FROM events ORDER BY id")]


def assert_one_order_per_intent(srv) -> None:
    cids = [o["clientOrderId"] for o in srv.account.orders.values()]
    assert len(cids) == len(set(cids))
    opening = pd.Series([o["time"] // H for o in srv.account.orders.values()
                         if not o["reduceOnly"] and o["origType"] == "MARKET"])
    assert (opening.value_counts() <= 1).all()
    assert sum(a["algoStatus"] == "NEW" and a["orderType"] == "STOP_MARKET"
               for a in srv.account.algos.values()) <= 1


def test_429_and_5xx_bursts_change_nothing(source, tmp_path, backtest):
    s = session(source, tmp_path, faults=FaultConfig(rate=0.15, seed=3, kinds=("429", "5xx")))
    try:
        assert drive(s) == 24
        lines, diffs = compare_trades(backtest, paper_trades(s), 0.001)
        assert diffs == 0, "\n".join(lines)
        assert "gw.retry" in kinds(s)
        assert_one_order_per_intent(s.server)
    finally:
        s.close()


def test_reply_lost_after_acceptance_makes_exactly_one_order(source, tmp_path, backtest):
    faults = TradeFaults()
    s = session(source, tmp_path, trade_faults=faults)
    faults.arm("lost_reply", 2)  # the first two placements are booked by the exchange, their replies lost
    faults.arm("status_unknown", 1)
    try:
        drive(s)
        lines, diffs = compare_trades(backtest, paper_trades(s), 0.001)
        assert diffs == 0, "\n".join(lines)
        assert kinds(s).count("gw.lost_reply") == 3 and kinds(s).count("gw.recovered") == 3
        assert "gw.resubmit" not in kinds(s)
        assert_one_order_per_intent(s.server)
    finally:
        s.close()


def test_insufficient_margin_is_an_event_not_a_crash(source, tmp_path):
    faults = TradeFaults()
    s = session(source, tmp_path, trade_faults=faults)
    faults.arm("reject_margin", 1)
    try:
        assert drive(s) == 24  # every bar still booked
        failed = s.store.db.execute("SELECT message FROM events WHERE kind = 'order_failed'").fetchall()
        assert len(failed) == 1 and "InsufficientFunds" in failed[0][0]
        assert s.server.account.positions == {}
        assert s.store.get("last_bar_ms") == ms(TO) - H
    finally:
        s.close()


def test_vanished_stop_is_restored_within_one_bar_and_liquidation_is_booked(source, tmp_path):
    faults = TradeFaults()
    s = session(source, tmp_path, trade_faults=faults)
    seen: dict[str, int] = {}

    def hook(s, wake):
        acct = s.server.account
        if acct.positions and "vanish" not in seen:
            faults.arm("vanish_stop", 1)  # the exchange drops the resting stop in the next bar
            seen["vanish"] = wake
        elif "vanish" in seen and "checked" not in seen and wake > seen["vanish"]:
            seen["checked"] = wake
        elif "checked" in seen and acct.positions and "liq" not in seen:
            faults.arm("liquidate", 1)
            seen["liq"] = wake

    try:
        drive(s, hook)
        assert "vanish" in seen and "liq" in seen
        protects = s.store.db.execute("SELECT bar_ms FROM events WHERE kind = 'gw.protect'").fetchall()
        assert protects  # stops were (re)placed
        reasons = [t["exit_reason"] for t in s.store.trades()]
        assert "liquidation" in reasons
        eq = s.store.db.execute("SELECT cash, exchange_equity FROM equity ORDER BY bar_ms").fetchall()
        assert max(abs(c - w) for c, w in eq[:-1]) < 1e-6  # the liquidation is booked as the exchange did
        assert_one_order_per_intent(s.server)
    finally:
        s.close()


def test_restored_stop_after_vanishing(source, tmp_path):
    faults = TradeFaults()
    s = session(source, tmp_path, trade_faults=faults)
    try:
        drive(s, stop_at=ms("2025-03-27T04:00") + 1000)  # in a position by now
        assert s.server.account.positions
        s.server.account.vanish_stops("BTCUSDT")
        assert not any(a["algoStatus"] == "NEW" for a in s.server.account.algos.values())
        s.runner.recover(s.runner.next_wake_ms() - H)  # a restart mid-bar restores it at once
        resting = [a for a in s.server.account.algos.values() if a["algoStatus"] == "NEW"]
        assert len(resting) == 1 and resting[0]["orderType"] == "STOP_MARKET" and resting[0]["reduceOnly"]
    finally:
        s.close()


def test_downtime_books_missed_bars_but_acts_only_on_the_latest_close(source, tmp_path):
    s = session(source, tmp_path)
    try:
        drive(s, stop_at=ms("2025-03-27T06:00"))
        before = len(s.server.account.orders)
        last = s.store.get("last_bar_ms")
        wake = last + 7 * H + 1000  # six closes since the last wake: five missed, one latest
        s.server.clock.set(wake)
        out = s.runner.step(wake)
        assert out.processed == 6 and out.missed == 5
        msg = s.store.db.execute("SELECT message FROM events WHERE kind = 'missed'").fetchone()[0]
        assert "5 bar(s)" in msg and "decisions dropped" in msg
        # orders only for the latest close: none stamped inside the missed bars (stop fills aside)
        new = [o for o in list(s.server.account.orders.values())[before:] if o["origType"] == "MARKET"]
        assert all(o["time"] >= wake - 1000 for o in new)
        rows = s.store.db.execute("SELECT COUNT(*) FROM equity").fetchone()[0]
        assert rows == (s.store.get("last_bar_ms") - ms(FROM)) // H + 1  # every bar booked once
        assert_one_order_per_intent(s.server)
    finally:
        s.close()


def test_stale_data_and_halt_file_halt_new_exposure_until_cleared(source, tmp_path):
    s = session(source, tmp_path, broker="sim")
    try:
        drive(s, stop_at=ms("2025-03-27T05:00"))
        last = s.store.get("last_bar_ms")
        # the exchange's clock stands still (no new bar) while ours runs on: stale
        out = s.runner.step(s.runner.next_wake_ms() + 2 * H)
        assert out.stale and s.store.get("stale") and s.runner.kill.reason(s.store) == "stale data"
        assert s.store.get("last_bar_ms") == last
        (s.folder / "HALT").touch()
        wake = s.runner.next_wake_ms()
        s.server.clock.set(wake)
        s.runner.step(wake)
        assert "fresh" in kinds(s) and s.runner.kill.reason(s.store) == "halt file HALT exists"
        assert status_data(s.folder)["state"] == "HALTED"
        core = s.store.load_core()
        held = core[0].side != 0 or core[2].side != 0
        drive(s, stop_at=wake + 3 * H)
        core = s.store.load_core()
        assert core[0].side == 0 and core[2].side == 0  # flattened, nothing entered while halted
        if held:
            assert s.store.trades()[-1]["exit_reason"] == "protection"
        KillSwitch(s.folder, "HALT", 5).clear(s.store)
        assert not (s.folder / "HALT").exists() and s.runner.kill.reason(s.store) is None
        drive(s)
        assert s.store.get("state") != "HALTED"
    finally:
        s.close()


def _cascade(capsys, *args: str) -> tuple[int, str]:
    """``cascade ARGS`` in process through `bot.cli.main` (exit code, stderr)."""
    from bot.cli import main

    with pytest.raises(SystemExit) as done:
        main(list(args))
    return int(done.value.code or 0), capsys.readouterr().err


def test_live_refuses_without_confirm_and_with_a_literal_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _cascade(capsys, "live")
    assert code == 2 and "--confirm" in err and len(err.strip().splitlines()) == 1
    key = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
    (tmp_path / "bad.toml").write_text(f'[exchange]\napi_key_env = "{key}"\n')
    code, err = _cascade(capsys, "live", "--confirm", "--config", "bad.toml")
    assert code == 2 and "must name an environment variable" in err and key not in err
    code, err = _cascade(capsys, "paper", "--exchange-url", "http://127.0.0.1:9", "--config", "bad.toml")
    assert code == 2 and "must name an environment variable" in err and len(err.strip().splitlines()) == 1
    code, err = _cascade(capsys, "paper", "--exchange-url", "http://127.0.0.1:9", "--strategy", EMA)
    assert code == 2 and "CASCADE_API_KEY" in err  # the keys' variables are named, no key is asked for
    monkeypatch.setenv("CASCADE_API_KEY", "test-key-0123")
    monkeypatch.setenv("CASCADE_API_SECRET", "test-secret-4567")
    code, err = _cascade(capsys, "paper", "--exchange-url", "http://127.0.0.1:9", "--strategy", EMA, "--run", "x")
    assert code == 2 and "cannot reach the exchange" in err and "test-secret-4567" not in err
    assert not (tmp_path / "runs" / "x").exists()  # nothing half-made on disk


class Killed(BaseException):
    """Stands for SIGKILL at one exact line (the process stops; nothing after it runs)."""


@pytest.fixture(scope="module")
def entry(source, tmp_path_factory) -> int:
    """The wake whose decision enters the first position (from a clean run)."""
    s = session(source, tmp_path_factory.mktemp("probe"))
    try:
        while not s.runner.finished():
            wake = s.runner.next_wake_ms()
            s.server.clock.set(wake)
            if s.runner.step(wake).acted:
                return wake
    finally:
        s.close()
    raise AssertionError("no entry in the window")


@pytest.mark.parametrize("where", ["before_send", "after_accept", "before_protect"])
def test_crash_around_an_order_never_duplicates_it(source, tmp_path, where, entry):
    s = session(source, tmp_path)
    try:
        drive(s, stop_at=entry)
        gw = s.gateway
        if where == "before_send":
            def die(*a, **k):
                raise Killed
            s.runner.broker.execute = die
        elif where == "before_protect":  # filled and recorded, not yet in the committed core state
            def die(*a, **k):
                raise Killed
            s.runner.broker.protect = die
        else:
            real = gw.market_order

            def die(*a, **k):
                real(*a, **k)  # the exchange accepted and filled it ...
                raise Killed  # ... and the runner died before booking it
            gw.market_order = die
        s.server.clock.set(entry)
        with pytest.raises(Killed):
            s.runner.step(entry)
        assert s.store.get("sending") is not None  # the decision was committed before any order went out
    finally:
        s.close()
    again = session(source, tmp_path)  # restart on the same run folder and replay account
    try:
        again.runner.recover(entry + 500)  # still inside the bar the order was meant for
        assert again.store.get("sending") is None
        opening = [o for o in again.server.account.orders.values() if not o["reduceOnly"]]
        assert len(opening) == 1 and again.server.account.positions  # one order, one position
        assert protected_once(again.server)
        core = again.store.load_core()
        assert core[0].side != 0 and abs(core[0].qty - again.server.account.positions["BTCUSDT"]["qty"]) < 1e-12
        if where == "after_accept":
            assert "gw.duplicate" in kinds(again) or "gw.recovered" in kinds(again)
        drive(again)
        assert_one_order_per_intent(again.server)
    finally:
        again.close()


def test_restart_after_the_bar_is_over_does_not_replay_the_decision(source, tmp_path, entry):
    s = session(source, tmp_path)
    try:
        drive(s, stop_at=entry)

        def die(*a, **k):
            raise Killed
        s.runner.broker.execute = die
        s.server.clock.set(entry)
        with pytest.raises(Killed):
            s.runner.step(entry)
    finally:
        s.close()
    again = session(source, tmp_path)
    try:
        late = entry + 3 * H
        again.server.clock.set(late)
        again.runner.recover(late)
        assert "dropped" in kinds(again) and not again.server.account.orders
        assert again.store.load_core()[0].side == 0
    finally:
        again.close()


def protected_once(srv) -> bool:
    pos = srv.account.positions.get("BTCUSDT")
    stops = [a for a in srv.account.algos.values() if a["algoStatus"] == "NEW" and a["orderType"] == "STOP_MARKET"]
    return pos is None or (len(stops) == 1 and abs(float(stops[0]["quantity"]) - pos["qty"]) < 1e-12)


def test_error_burst_halts_and_a_person_clears_it(source, tmp_path):
    from typer.testing import CliRunner

    from bot.cli import app
    from bot.gateway import GatewayUnavailable
    from bot.live.runner import run_forever
    from bot.replay.faults import FaultPicker

    s = session(source, tmp_path, error_burst=2)
    try:
        drive(s, stop_at=ms("2025-03-27T03:00"))
        s.server.faults = FaultPicker(FaultConfig(rate=1.0, kinds=("5xx",)))  # the exchange is down
        wake = s.runner.next_wake_ms()
        s.server.clock.set(wake)
        with pytest.raises(GatewayUnavailable):
            s.runner.step(wake)
        polls = run_forever(s.runner, lambda: wake, poll_seconds=0.0, max_polls=2)
        assert polls == 0  # two failed wakes, none booked
        assert "2 failed wakes in a row" in s.runner.kill.reason(s.store)
        assert status_data(s.folder)["state"] == "HALTED"
        s.server.faults = FaultPicker(FaultConfig())
        out = CliRunner().invoke(app, ["status", str(s.folder), "--clear-halt", "--json"])
        assert out.exit_code == 0 and '"state": "ACTIVE"' in out.output
        assert s.runner.kill.reason(s.store) is None
        assert run_forever(s.runner, lambda: wake, poll_seconds=0.0, max_polls=1) == 1
        assert "cleared" in kinds(s)
    finally:
        s.close()


def test_a_fill_the_exchange_reports_late_is_booked_once_and_protected(source, tmp_path, entry):
    faults = TradeFaults(fill_delay_ms=60_000)  # accepted as NEW, filled a replay minute later
    s = session(source, tmp_path, trade_faults=faults)
    try:
        drive(s, stop_at=entry)
        faults.arm("delayed_fill", 1)
        s.server.clock.set(entry)
        s.runner.step(entry)
        assert s.store.orders("open") and not s.server.account.positions
        assert s.store.load_core()[0].side == 0  # not booked before the exchange fills it
        drive(s, stop_at=entry + H + 1)  # the next close
        pos = s.store.load_core()[0]
        ex = s.server.account.positions.get("BTCUSDT")
        late = s.store.db.execute("SELECT message FROM events WHERE kind = 'fill' AND message LIKE '%late%'"
                                  ).fetchall()
        assert len(late) == 1 and not s.store.orders("open")
        assert ex is not None and pos.side == ex["side"] and abs(pos.qty - ex["qty"]) < 1e-12
        assert protected_once(s.server)
        drive(s)
        assert_one_order_per_intent(s.server)
    finally:
        s.close()


def test_halt_without_flattening_keeps_the_position_and_its_stop(source, tmp_path):
    s = session(source, tmp_path, flatten_on_halt=False)
    try:
        drive(s, stop_at=ms("2025-03-27T04:00") + 1000)
        pos = s.server.account.positions.get("BTCUSDT")
        assert pos is not None
        (s.folder / "HALT").touch()
        drive(s, stop_at=ms("2025-03-27T07:00") + 1000)
        states = [r[0] for r in s.store.db.execute("SELECT state FROM equity ORDER BY bar_ms DESC LIMIT 3")]
        assert states == ["HALTED"] * 3
        still = s.server.account.positions.get("BTCUSDT")
        held = s.store.load_core()[0]
        if still is not None:  # kept (unless its own stop closed it meanwhile), still protected
            assert held.side == still["side"] and protected_once(s.server)
        else:
            assert s.store.trades()[-1]["exit_reason"] in ("stop", "liquidation")
        after = [o for o in s.server.account.orders.values()
                 if o["origType"] == "MARKET" and o["time"] >= ms("2025-03-27T04:00") + 1000]
        assert after == []  # halted: no entry, and no flattening either
    finally:
        s.close()


def test_one_runner_per_run_folder(source, tmp_path):
    from bot.errors import UserError

    s = session(source, tmp_path)
    try:
        with pytest.raises(UserError, match="already running"):
            session(source, tmp_path)
    finally:
        s.close()
    again = session(source, tmp_path)  # released on close (and by the kernel on SIGKILL)
    again.close()


def test_a_wallet_that_drifts_from_the_books_is_adopted(source, tmp_path):
    s = session(source, tmp_path)
    try:
        drive(s, stop_at=ms("2025-03-27T05:00"))
        acct = s.server.account
        with acct.lock:  # money moved on the exchange outside the run (a transfer, another fee tier)
            acct._set("cash", float(acct.kv["cash"]) + 123.45)
            acct.flush()
        drive(s, stop_at=ms("2025-03-27T06:00") + 1000)
        drift = s.store.db.execute("SELECT message FROM events WHERE kind = 'drift'").fetchall()
        assert len(drift) == 1 and "adopting" in drift[0][0]
        core = s.store.load_core()[1]
        assert abs(core.cash - acct.totals(acct.clock_ms)["wallet"]) < 1e-6
        drive(s)
        rows = s.store.db.execute("SELECT cash, exchange_equity FROM equity ORDER BY bar_ms").fetchall()
        assert max(abs(c - w) for c, w in rows[-5:-1]) < 1e-6  # in step again afterwards
    finally:
        s.close()
