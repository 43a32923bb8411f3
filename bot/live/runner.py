"""The runner: a thin loop over the one core, waking at each bar close (docs/architecture.md "Live and paper").

At each wake (`Runner.step`, given *now*):

1. the window of closed bars is topped up (`bot.live.feed.Feed`) and the strategy's signals are
   computed on it with the same `StrategySpec.run` the backtest calls; `backtests.engines.common.prepare`
   derives the same arrays (mark prices, funding mark, ATR, volatility, costs, brackets) the engines use;
2. every closed bar not processed yet goes through the fast engine's two calls: the broker's open
   (`SimBroker`: `bot.core.bar_open` with the pending intent; `ExchangeBroker`: reconcile with the
   exchange) and `bot.core.bar_close` (funding, equity, protections, `decide`);
3. only the **latest** close's decision is acted on. After downtime the bars missed are still
   booked (funding, stops, protections), but their decisions are dropped with an event: old
   decisions are never replayed into orders;
4. the kill switch may override the decision (`bot.live.killswitch`): HALTED asks the core's own
   `decide` for the HALTED answer (flatten, no entry);
5. the state is committed (one SQLite transaction) *before* orders go out and again after.

No new closed bar when one is due (plus ``[live] stale_bars`` bars of grace) is stale data: an
event, and HALTED for new exposure until fresh bars arrive. `lockstep` drives an in-process replay
exchange's clock bar by bar, so a month replays in minutes with no bar missed or decided twice.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtests.engines.common import TRADE_COLUMNS, prepare
from bot.core import (
    EXIT_NONE,
    EXIT_REASONS,
    HALTED,
    STATE_NAMES,
    Bar,
    Intent,
    Signal,
    Trade,
    bar_close,
    decide,
    flat_position,
    new_account,
    no_intent,
)
from bot.live.killswitch import KillSwitch
from bot.live.store import RunStore
from bot.timeframes import timeframe_to_timedelta


def _utc(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")


@dataclass
class StepResult:
    """What one wake did."""

    processed: int = 0  # bars booked
    missed: int = 0  # of those, bars whose decision was dropped
    acted: bool = False  # the latest decision went to the broker
    stale: bool = False


class Runner:
    """One run: strategy, broker, feed and the run folder's state (module docstring)."""

    def __init__(self, cfg: Any, spec: Any, params: Any, store: RunStore, broker: Any, feed: Any, *,
                 start_ms: int, end_ms: int | None = None, log: Callable[..., None],
                 killswitch: KillSwitch, initial_cash: float) -> None:
        self.cfg = cfg
        self.spec = spec
        self.params = params
        self.store = store
        self.broker = broker
        self.feed = feed
        self.start_ms = int(start_ms)
        self.end_ms = None if end_ms is None else int(end_ms)
        self.log = log
        self.kill = killswitch
        self.initial_cash = float(initial_cash)
        self.symbol = cfg.data.symbol
        self.tf_ms = int(timeframe_to_timedelta(cfg.data.timeframe).total_seconds() * 1000)
        self.tf_s = self.tf_ms // 1000
        store.put("tf_ms", self.tf_ms)
        if store.get("initial_cash") is None and initial_cash > 0:
            store.put("initial_cash", float(initial_cash))

    # -- state -----------------------------------------------------------------------------------

    def _core(self) -> tuple[Any, Any, Intent]:
        loaded = self.store.load_core()
        if loaded is None:
            return flat_position(), new_account(self.initial_cash, self.start_ms // 1000), no_intent()
        pos, acct, intent = loaded
        return pos, acct, intent if intent is not None else no_intent()

    @property
    def last_bar_ms(self) -> int | None:
        return self.store.get("last_bar_ms")

    def next_wake_ms(self) -> int:
        """The replay/exchange time of the next wake: the next bar's close plus the settle delay."""
        last = self.last_bar_ms
        close = (last + 2 * self.tf_ms) if last is not None else self.start_ms + self.tf_ms
        return close + int(self.cfg.live.settle_seconds * 1000)

    def finished(self) -> bool:
        """True once the bar before ``end_ms`` is booked."""
        last = self.last_bar_ms
        return self.end_ms is not None and last is not None and last + self.tf_ms >= self.end_ms

    def _trade_row(self, t: Trade) -> dict[str, Any]:
        return {"entry_ms": int(t.entry_bar) * self.tf_ms, "exit_ms": int(t.exit_bar) * self.tf_ms,
                "side": int(t.side), "qty": float(t.qty), "entry_price": float(t.entry_price),
                "exit_price": float(t.exit_price), "stop": None if math.isnan(t.stop) else float(t.stop),
                "exit_reason": EXIT_REASONS[int(t.reason)], "pnl": float(t.pnl), "fees": float(t.fees),
                "funding": float(t.funding)}

    def _book_trades(self, trades: list[Trade]) -> None:
        for t in trades:
            row = self._trade_row(t)
            self.store.trade(row)
            self.log("trade", f"closed {'long' if t.side > 0 else 'short'} {t.qty:g}: {_utc(row['entry_ms'])} "
                              f"{t.entry_price:.2f} -> {_utc(row['exit_ms'])} {t.exit_price:.2f} "
                              f"({row['exit_reason']}) pnl {t.pnl:+.2f}", row["exit_ms"])
        if trades:
            write_trades_csv(self.store)

    # -- restart ---------------------------------------------------------------------------------

    def recover(self, now_ms: int) -> None:
        """Before anything else after a (re)start: finish or drop orders a crash interrupted, restore the stop."""
        sending = self.store.get("sending")
        pos, acct, intent = self._core()
        if sending is not None and hasattr(self.broker, "protect"):
            late = now_ms >= int(sending) + self.tf_ms
            self.log("recover", f"resuming the orders of {_utc(sending)} ({'look-up only: their bar is over' if late else 'idempotent resend'})", int(sending))
            prep_p, prep_br = self._params()
            pos, acct, trades, _ = self.broker.execute(prep_p, prep_br, pos, acct, intent, int(sending),
                                                       int(sending) // self.tf_ms, float("nan"), lookup_only=late)
            with self.store.transaction():
                self._book_trades(trades)
                self.store.save_core(pos, acct, no_intent())
                self.store.put("sending", None)
        elif hasattr(self.broker, "protect") and self.last_bar_ms is not None:
            if self.store.orders("open"):  # accepted before the restart, maybe filled since
                p, br = self._params()
                pos, acct, late = self.broker.late_fills(p, br, pos, acct, self.last_bar_ms + self.tf_ms)
                with self.store.transaction():
                    self._book_trades(late)
                    self.store.save_core(pos, acct, no_intent())
            if pos.side == 0 and self.broker.gw.position(self.symbol) is not None:
                # not ours: leave it (and its stop) alone; the next bar's reconciliation halts entries
                self.log("unknown_position", f"{self.symbol}: the exchange holds a position this run does not "
                                             "know; not touching it", self.last_bar_ms)
                return
            self.broker.protect(pos, self.last_bar_ms + self.tf_ms)

    def _params(self) -> tuple[Any, Any]:
        from backtests.engines.common import resolve_costs
        from bot.risk.brackets import brackets_for
        from bot.risk.params import risk_params

        costs = resolve_costs(self.cfg.costs, self.symbol)
        return risk_params(self.cfg.risk, costs), brackets_for(self.symbol).table

    # -- one wake --------------------------------------------------------------------------------

    def step(self, now_ms: int) -> StepResult:
        """Book every closed bar not booked yet and act on the latest decision (module docstring)."""
        out = StepResult()
        frame = self.feed.frame(now_ms)
        if len(frame) == 0:
            return out
        times = frame.index.as_unit("ms").asi8
        new = self._unbooked(times)
        if len(new) == 0:
            out.stale = self._check_stale(now_ms, times[-1])
            return out
        if self.store.get("stale"):
            self.store.put("stale", False)
            self.log("fresh", f"fresh data again: bar {_utc(times[new[-1]])}", int(times[new[-1]]))
        features = self.spec.compute_features(frame, self.params)
        signals = self.spec.run(frame, self.params, features)
        prep = prepare(frame, signals, self.cfg.backtest, self.cfg.risk, self.symbol, self.cfg.costs)
        pos, acct, pending = self._core()
        acct = self._apply_cleared_halt(acct, int(times[new[0]]))
        if len(new) > 1:
            out.missed = len(new) - 1
            self.log("missed", f"{len(new) - 1} bar(s) closed while down ({_utc(times[new[0]])} .. "
                               f"{_utc(times[new[-2]])}): booked, their decisions dropped; deciding only on "
                               f"{_utc(times[new[-1]])}", int(times[new[-1]]))
        for n, j in enumerate(new):
            pos, acct = self._book_bar(prep, int(j), int(times[j]), pos, acct, pending if n == 0 else no_intent(),
                                       n == len(new) - 1, out)
        return out

    def _unbooked(self, times: np.ndarray) -> np.ndarray:
        """Positions in ``times`` of the closed bars in [start, end) after the last booked one."""
        keep = times >= self.start_ms
        if self.last_bar_ms is not None:
            keep &= times > self.last_bar_ms
        if self.end_ms is not None:
            keep &= times < self.end_ms
        return np.flatnonzero(keep)

    def _apply_cleared_halt(self, acct: Any, t_ms: int) -> Any:
        """End the core's protection lock now if a person cleared the halt (``status --clear-halt``)."""
        if not self.store.get("clear_core_halt"):
            return acct
        self.store.put("clear_core_halt", False)
        self.log("cleared", "a person cleared the halt: the core's lock ends now", t_ms)
        return acct._replace(protection=acct.protection._replace(halt_until=t_ms // 1000, stopouts=0))

    def _book_bar(self, prep: Any, j: int, t_ms: int, pos: Any, acct: Any, pending: Intent, latest: bool,
                  out: StepResult) -> tuple[Any, Any]:
        """Book bar ``j`` through the core (open, close, decision) and, on the latest bar, act on it."""
        p, br = prep.params, prep.brackets.table
        k = t_ms // self.tf_ms
        bar = Bar(int(prep.time[j]), prep.open[j], prep.high[j], prep.low[j], prep.close[j], prep.mark_open[j],
                  prep.mark_high[j], prep.mark_low[j], prep.funding_rate[j], prep.funding_mark[j])
        sig = Signal(prep.target[j], prep.stop[j], prep.take_profit[j], prep.atr[j], prep.volatility[j])
        pos, acct, trades = self.broker.at_open(p, br, pos, acct, pending, k, bar)
        is_last = self.end_ms is not None and t_ms + self.tf_ms >= self.end_ms
        pos, acct, end, equity, state, intent = bar_close(p, br, pos, acct, k, bar, is_last, sig)
        trades = [*trades, end] if end.reason != EXIT_NONE else list(trades)
        wallet = self.broker.wallet() if latest else None
        if wallet is not None and not is_last:
            acct = self._adopt_wallet(acct, wallet, t_ms)
        reason = self.kill.reason(self.store) if latest else None
        if reason and not is_last:
            pos, acct, intent = decide(p, br, pos, acct, HALTED, equity, float(bar.close), sig)
            if not self.cfg.live.flatten_on_halt:
                intent = intent._replace(exit=EXIT_NONE)
        effective = HALTED if reason else int(state)
        self._decision_line(t_ms, bar, sig, intent, pos, equity, effective, reason, latest)
        act = latest and not is_last and (intent.exit != EXIT_NONE or intent.side != 0)
        next_ms = t_ms + self.tf_ms
        with self.store.transaction():
            self._book_trades(trades)
            self.store.equity(t_ms, float(equity), float(acct.cash), float(pos.side * pos.qty),
                              STATE_NAMES[effective], wallet)
            self.store.put("last_bar_ms", t_ms)
            self.store.put("state", STATE_NAMES[effective])
            self.store.put("halt_reason", reason or "")
            self.store.put("sending", next_ms if act and self.broker.name == "exchange" else None)
            self.store.save_core(pos, acct, intent if act else no_intent())
        out.processed += 1
        if not latest:
            return pos, acct
        if is_last and self.broker.name == "exchange":
            self.broker.flatten(next_ms, float(bar.close))
        if act:
            pos, acct, done, kept = self.broker.execute(p, br, pos, acct, intent, next_ms, k + 1, float(bar.close))
            with self.store.transaction():
                self._book_trades(done)
                self.store.save_core(pos, acct, kept)
                self.store.put("sending", None)
            out.acted = True
        elif self.broker.name == "exchange" and not is_last:
            self.broker.protect(pos, next_ms)  # the stop may have tightened; a vanished one comes back
        return pos, acct

    def _adopt_wallet(self, acct: Any, wallet: float, t_ms: int) -> Any:
        """The exchange's wallet is the truth (its fee tier, its funding mark, a transfer): adopt it when
        it differs from the core's by more than a cent, so sizing and protections see the real equity."""
        if abs(float(acct.cash) - wallet) <= 0.01:
            return acct
        self.log("drift", f"the core's wallet {acct.cash:.2f} differs from the exchange's {wallet:.2f}; "
                          "adopting the exchange's", t_ms, core=float(acct.cash), exchange=wallet)
        return acct._replace(cash=wallet)

    def _decision_line(self, t_ms: int, bar: Bar, sig: Signal, intent: Intent, pos: Any, equity: float,
                       state: int, reason: str | None, latest: bool) -> None:
        parts = []
        if intent.exit != EXIT_NONE:
            parts.append(f"exit ({EXIT_REASONS[int(intent.exit)]})")
        if intent.side != 0:
            parts.append(f"enter {'long' if intent.side > 0 else 'short'} {intent.qty:.6g}")
        if not parts:
            parts.append(f"hold {'long' if pos.side > 0 else 'short' if pos.side < 0 else 'flat'}"
                         + (f" stop {pos.stop:.2f}" if pos.side and not math.isnan(pos.stop) else ""))
        what = ", ".join(parts) if latest else "catch-up: " + ", ".join(parts) + " (not acted on)"
        self.log("decision", f"{_utc(t_ms)} close {bar.close:.2f} target {sig.target:+.2f} -> {what} | "
                             f"{STATE_NAMES[state]}{' (' + reason + ')' if reason else ''} equity {equity:.2f}",
                 t_ms, target=float(sig.target), exit=int(intent.exit), side=int(intent.side), qty=float(intent.qty))

    def _check_stale(self, now_ms: int, last_seen_ms: int) -> bool:
        due = int(last_seen_ms) + 2 * self.tf_ms + int(self.cfg.live.settle_seconds * 1000)
        grace = int(self.cfg.live.stale_bars) * self.tf_ms
        if now_ms <= due + grace:
            return False
        if not self.store.get("stale"):
            self.store.put("stale", True)
            self.log("stale", f"no new closed bar since {_utc(last_seen_ms)} although one was due at "
                              f"{_utc(due - int(self.cfg.live.settle_seconds * 1000))}; new exposure refused until "
                              "fresh data arrives", int(last_seen_ms))
        return True


def write_trades_csv(store: RunStore) -> Path:
    """``trades.csv`` of the run folder in the backtest's columns (written atomically)."""
    rows = store.trades()
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=TRADE_COLUMNS)
    else:
        df["entry_time"] = pd.to_datetime(df["entry_ms"], unit="ms", utc=True)
        df["exit_time"] = pd.to_datetime(df["exit_ms"], unit="ms", utc=True)
        for c in ("entry_bar", "exit_bar"):
            df[c] = -1  # bar numbers are the backtest's positions in its frame; times identify bars here
        df = df[TRADE_COLUMNS]
    path = store.folder / "trades.csv"
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def lockstep(server: Any, runner: Runner, end_ms: int, progress: Callable[[int], None] | None = None) -> int:
    """Drive ``server``'s replay clock bar by bar to ``end_ms``: each close (plus the settle delay), one wake.

    Returns the number of wakes. No bar is skipped (the clock waits for the runner) and none is
    decided twice (the runner books each bar once, by its open time).
    """
    settle = int(runner.cfg.live.settle_seconds * 1000)
    wakes = 0
    while not runner.finished():
        wake = runner.next_wake_ms()
        if wake - settle > end_ms:
            break
        server.clock.set(wake)
        runner.step(wake)
        wakes += 1
        if progress is not None:
            progress(wake)
    return wakes


def run_forever(runner: Runner, now: Callable[[], int], *, poll_seconds: float, max_wakes: int | None = None,
                sleep: Callable[[float], None] = time.sleep, max_polls: int | None = None) -> int:
    """Wake at each bar close on the exchange's clock until ``end_ms`` (or ``max_wakes`` wakes, or
    ``max_polls`` looks at the clock); one look every ``poll_seconds``.

    Errors of one wake are events; ``[live] error_burst`` of them in a row halt new exposure.
    """
    wakes = polls = 0
    while not runner.finished() and (max_wakes is None or wakes < max_wakes) and (
            max_polls is None or polls < max_polls):
        polls += 1
        try:
            t = now()
            if t >= runner.next_wake_ms() or runner.store.get("stale"):
                runner.step(t)
                wakes += 1
                runner.kill.ok(runner.store)
        except Exception as err:  # noqa: BLE001 — every failure of a wake is an event, the loop goes on
            from bot.gateway import GatewayError

            if not isinstance(err, GatewayError | OSError | ConnectionError):
                raise
            runner.kill.error(runner.store, runner.log, str(err))
        sleep(poll_seconds)
    return wakes


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The run's JSON-lines event log."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
