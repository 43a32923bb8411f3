"""The backtrader engine: the event-driven reference (docs/architecture.md, "Two engines, one answer").

Pieces, each a standard backtrader extension point:

* `PerpFeed` — a ``bt.feeds.PandasData`` with extra lines: mark prices, ``funding_rate``, the signal
  (``target``, ``signal_stop``, ``take_profit``) and the derived ``atr``, ``volatility`` and UTC ``day``.
* `PerpCommInfo` — a linear USDT-margined perpetual: futures-like (``stocklike=False``: the broker
  settles price changes to cash at every close, so its value is the mark-to-market equity), taker fee
  on notional per fill, ``leverage`` giving the isolated margin per unit. The isolated margin is not
  blocked in the broker's cash: the position's margin and liquidation price are kept by the strategy.
* `SignalTrader` — a thin ``bt.Strategy`` run with cheat-on-open. In ``next_open`` (the bar's open,
  before the broker matches orders) it sends the market orders decided at the previous close, rests the
  position's stop (``Stop``) and take-profit (``Limit``, one-cancels-other, stop first so the stop wins
  a bar where both trigger) and, when `bot.risk.execution.intrabar_exit` says the mark price reaches the
  liquidation price first, cancels them and books the liquidation as a ``Historical`` order at the
  bankruptcy price (its fee refunded: liquidations pay none). In ``next`` (the close) it books fills,
  settles funding with ``broker.add_cash``, evaluates protections and decides the next orders — all
  through the same `bot.risk` functions the fast engine calls. Slippage is the broker's
  ``set_slippage_perc`` (backtrader's default matching rules), fills are backtrader's own.
"""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np
import pandas as pd
from backtrader.utils import date2num

from backtests.engines.common import Prepared, RawRun
from bot.risk.execution import (
    EXIT_END,
    EXIT_LIQUIDATION,
    EXIT_NONE,
    EXIT_PROTECTION,
    EXIT_SIGNAL,
    EXIT_STOP,
    EXIT_TAKE_PROFIT,
    forced_exit,
    intrabar_exit,
    market_fill,
    target_action,
    target_side,
)
from bot.risk.liquidation import bankruptcy_price, isolated_margin, liquidation_price, position_leverage
from bot.risk.params import (
    P_ATR_MULT,
    P_COOLDOWN_BARS,
    P_COOLDOWN_STOPOUTS,
    P_DAILY_LOSS,
    P_LIQUIDATION_BUFFER,
    P_MAX_DRAWDOWN,
    P_MAX_LEVERAGE,
    P_REDUCE_DRAWDOWN,
    P_SLIPPAGE,
    P_STOP,
    P_STOP_PCT,
    P_TAKER_FEE,
    STOP_STRATEGY,
    STOP_TRAILING_ATR,
)
from bot.risk.protections import HALTED, allows, new_state, record_exit, update_state
from bot.risk.sizing import entry_quantity
from bot.risk.stops import clamp_to_liquidation, entry_stop, stop_distance, tighter, trail_stop

EXTRA_LINES = ("mark_open", "mark_high", "mark_low", "mark_close", "funding_rate", "target", "signal_stop",
               "take_profit", "atr", "volatility", "day")


class PerpFeed(bt.feeds.PandasData):
    """Candles plus perpetual-futures and signal lines (backtrader's "extend a datafeed" pattern)."""

    lines = EXTRA_LINES
    params = (("datetime", None), ("open", "open"), ("high", "high"), ("low", "low"), ("close", "close"),
              ("volume", "volume"), ("openinterest", None)) + tuple((name, name) for name in EXTRA_LINES)

    def start(self) -> None:
        super().start()
        # PandasData reads every value through DataFrame.iloc; read plain rows instead (same values)
        frame = self.p.dataname
        self._rows = frame.to_numpy(dtype=np.float64).tolist()
        self._dtnums = [date2num(t.to_pydatetime()) for t in frame.index]
        self._fields = [(getattr(self.lines, field), col) for field, col in self._colmapping.items()
                        if field != "datetime" and col is not None]

    def _load(self) -> bool:
        self._idx += 1
        if self._idx >= len(self._rows):
            return False
        row = self._rows[self._idx]
        for line, col in self._fields:
            line[0] = row[col]
        self.lines.datetime[0] = self._dtnums[self._idx]
        return True


class PerpCommInfo(bt.CommInfoBase):
    """Linear perpetual: futures-like cash settlement, taker fee on notional, isolated leverage."""

    params = (("commission", 0.0005), ("leverage", 5.0), ("stocklike", False),
              ("commtype", bt.CommInfoBase.COMM_PERC), ("percabs", True))

    def _getcommission(self, size: float, price: float, pseudoexec: bool) -> float:
        return abs(size) * price * self.p.commission

    def get_margin(self, price: float) -> float:
        """Return the isolated initial margin of one unit at ``price``."""
        return price / self.p.leverage

    def getoperationcost(self, size: float, price: float) -> float:
        # the wallet is not blocked: the strategy keeps each position's isolated margin
        return 0.0

    def getvaluesize(self, size: float, price: float) -> float:
        return 0.0

    def getvalue(self, position: bt.Position, price: float) -> float:
        return 0.0


class _BooksError(RuntimeError):
    pass


class _Position:
    """The open position as the strategy books it (entry from the rules, checked against the fill)."""

    __slots__ = ("bp", "entry", "entry_bar", "entry_equity", "entry_fee", "funding", "lp", "margin", "qty",
                 "side", "stop", "stop0", "tp")

    def __init__(self, side: int, qty: float, entry: float, entry_bar: int, entry_equity: float) -> None:
        self.side = side
        self.qty = qty
        self.entry = entry
        self.entry_bar = entry_bar
        self.entry_equity = entry_equity
        self.entry_fee = 0.0
        self.funding = 0.0
        self.margin = 0.0
        self.lp = math.nan
        self.bp = math.nan
        self.stop = math.nan
        self.stop0 = math.nan
        self.tp = math.nan


class SignalTrader(bt.Strategy):
    """Trade a precomputed signal frame through `bot.risk` (see the module docstring)."""

    params = (("prep", None),)

    def __init__(self) -> None:
        prep: Prepared = self.p.prep
        p = prep.params
        b = prep.brackets
        self.rp = p
        self.floor, self.cap, self.mmr, self.cum, self.blev = b.floor, b.cap, b.mmr, b.cum, b.max_leverage
        self.slip = float(p[P_SLIPPAGE])
        self.mode = int(p[P_STOP])
        self.n = len(prep)
        self.cash_pending = 0.0  # add_cash amounts the broker applies at its next cycle
        self.fund_cum = 0.0
        self.fees_cum = 0.0
        self.n_liq = 0
        self.blocked = 0
        self.kelly = [0, 0.0, 0, 0.0]  # n_win, sum_win, n_loss, sum_loss
        self.pstate = new_state(prep.initial_cash, int(prep.day[0]))
        self.pos: _Position | None = None
        self.pend_exit = EXIT_NONE
        self.pend: tuple | None = None  # (side, qty, stop distance, signal stop, take profit, equity)
        self.entry_order: bt.Order | None = None
        self.exits: list[tuple[bt.Order, int, _Position]] = []  # exits sent at this open
        self.resting: list[tuple[bt.Order, int]] = []  # (stop, EXIT_STOP) then (take profit, ...)
        self.trades: list[tuple] = []
        self.rows = np.zeros((self.n, 6))
        self.final_equity = math.nan

    def _bar(self) -> int:
        return len(self.data) - 1

    def _send(self, side: int, size: float, **kwargs) -> bt.Order:
        if side > 0:
            return self.buy(size=size, **kwargs)
        return self.sell(size=size, **kwargs)

    def _rest_orders(self) -> None:
        self._cancel_resting()
        pos = self.pos
        if pos is None:
            return
        if not math.isnan(pos.stop):
            self.resting.append((self._send(-pos.side, pos.qty, exectype=bt.Order.Stop, price=pos.stop), EXIT_STOP))
        if not math.isnan(pos.tp):
            oco = self.resting[0][0] if self.resting else None
            order = self._send(-pos.side, pos.qty, exectype=bt.Order.Limit, price=pos.tp, oco=oco)
            self.resting.append((order, EXIT_TAKE_PROFIT))

    def _cancel_resting(self) -> None:
        for order, _ in self.resting:
            if order.alive():
                self.cancel(order)
        self.resting = []

    # -- the open: send what was decided at the last close, resolve the bar -----------------------

    def prenext_open(self) -> None:
        self.next_open()

    def nextstart_open(self) -> None:
        self.next_open()

    def next_open(self) -> None:
        d = self.data
        k = self._bar()
        o, h, lo = d.open[0], d.high[0], d.low[0]
        self.exits = []
        if self.pend_exit != EXIT_NONE and self.pos is not None:
            self._cancel_resting()
            self.exits.append((self._send(-self.pos.side, self.pos.qty), self.pend_exit, self.pos))
            self.pos = None
        self.pend_exit = EXIT_NONE
        entered = self.pend is not None
        if entered:
            self._open_position(k, o, h, lo)
        pos = self.pos
        if pos is None:
            return
        reason, _ = intrabar_exit(pos.side, o, h, lo, d.mark_open[0], d.mark_high[0], d.mark_low[0],
                                  pos.stop, pos.tp, pos.lp, self.slip)
        if reason == EXIT_LIQUIDATION:
            # the mark reaches LP before any resting order could fill: the margin is lost
            self._cancel_resting()
            order = self._send(-pos.side, pos.qty, exectype=bt.Order.Historical, price=pos.bp)
            self.exits.append((order, EXIT_LIQUIDATION, pos))
            return
        if entered:
            self._rest_orders()
        if k == self.n - 1 and reason == EXIT_NONE:
            # end of data: a market close at the last close, booked after this bar's funding
            self._cancel_resting()
            price = market_fill(-pos.side, d.close[0], h, lo, self.slip)
            order = self._send(-pos.side, pos.qty, exectype=bt.Order.Historical, price=price)
            self.exits.append((order, EXIT_END, pos))

    def _open_position(self, k: int, o: float, h: float, lo: float) -> None:
        side, qty, dist, sstop, tp, equity = self.pend
        self.pend = None
        self.entry_order = self._send(side, qty)
        entry = market_fill(side, o, h, lo, self.slip)  # the broker's fill, checked in next()
        pos = _Position(side, qty, entry, k, equity)
        rp = self.rp
        pos.margin = isolated_margin(qty * entry, rp[P_MAX_LEVERAGE], self.cap, self.blev)
        pos.lp = liquidation_price(side, qty, entry, pos.margin, self.cap, self.mmr, self.cum)
        pos.bp = bankruptcy_price(side, qty, entry, pos.margin)
        stop = entry_stop(self.mode, entry, side, sstop, dist)
        pos.stop = clamp_to_liquidation(stop, pos.lp, entry, side, rp[P_LIQUIDATION_BUFFER])
        pos.stop0 = pos.stop
        pos.tp = tp
        self.pos = pos
        comminfo = self.broker.getcommissioninfo(self.data)
        comminfo.p.leverage = position_leverage(qty * entry, rp[P_MAX_LEVERAGE], self.cap, self.blev)

    # -- the close: book fills, settle funding, protections, decide -----------------------------

    def prenext(self) -> None:
        self.next()

    def nextstart(self) -> None:
        self.next()

    def next(self) -> None:
        d = self.data
        k = self._bar()
        end = None
        for order, reason, pos in self.exits:
            if reason == EXIT_END:
                end = (order, pos)
            elif pos is not self.pos:  # exits at the open come before the new entry
                self._book(order, reason, k, pos)
        self._check_entry()
        for order, reason, pos in self.exits:
            if reason == EXIT_LIQUIDATION and pos is self.pos:
                self._book(order, reason, k, pos)
        for order, reason in self.resting:
            if order.status == bt.Order.Completed:
                self._book(order, reason, k, self.pos)
                break
        self.exits = []
        self._settle_funding(d.funding_rate[0], d.mark_close[0])
        if end is not None:
            self._book(end[0], EXIT_END, k, end[1])
        self._close_books(k, d)

    def _settle_funding(self, rate: float, mark: float) -> None:
        pos = self.pos
        if pos is None or math.isnan(rate):
            return
        flow = -pos.side * pos.qty * mark * rate
        self.broker.add_cash(flow)
        self.cash_pending += flow
        pos.margin += flow
        pos.funding += flow
        self.fund_cum += flow
        pos.lp = liquidation_price(pos.side, pos.qty, pos.entry, pos.margin, self.cap, self.mmr, self.cum)
        pos.bp = bankruptcy_price(pos.side, pos.qty, pos.entry, pos.margin)

    def _close_books(self, k: int, d: bt.feeds.PandasData) -> None:
        pos = self.pos
        rp = self.rp
        held = 0.0 if pos is None else pos.side * pos.qty
        position = self.getposition(d).size
        if not math.isclose(position, held, rel_tol=1e-12, abs_tol=1e-12):
            raise _BooksError(f"bar {k}: broker position {position} != books {held}")
        close = d.close[0]
        equity = self.broker.getvalue() + self.cash_pending
        self.cash_pending = 0.0
        unrealized = 0.0 if pos is None else pos.side * pos.qty * (close - pos.entry)
        self.pstate, state = update_state(self.pstate, equity, int(d.day[0]), k, rp[P_MAX_DRAWDOWN],
                                          rp[P_REDUCE_DRAWDOWN], rp[P_DAILY_LOSS])
        self.rows[k] = (equity, equity - unrealized, held, self.fund_cum, self.fees_cum, state)
        if k == self.n - 1:
            self.final_equity = equity
            return
        if pos is not None:
            stop = pos.stop
            if self.mode == STOP_TRAILING_ATR:
                stop = trail_stop(stop, close, pos.side, d.atr[0], rp[P_ATR_MULT])
            elif self.mode == STOP_STRATEGY and target_side(d.target[0]) == pos.side \
                    and pos.side * (close - d.signal_stop[0]) > 0.0:
                stop = tighter(stop, d.signal_stop[0], pos.side)
            if not (stop == pos.stop or (math.isnan(stop) and math.isnan(pos.stop))):
                pos.stop = stop
                self._rest_orders()
        if state == HALTED:
            if pos is not None:
                self.pend_exit = EXIT_PROTECTION
            return
        target = d.target[0]
        close_now, enter, self.blocked = target_action(0 if pos is None else pos.side, target, self.blocked)
        if close_now:
            self.pend_exit = EXIT_SIGNAL
        if enter != 0 and allows(state, 0.0, float(enter)):
            sstop = d.signal_stop[0]
            dist = stop_distance(self.mode, close, enter, sstop, d.atr[0], rp[P_STOP_PCT], rp[P_ATR_MULT])
            n_win, sum_win, n_loss, sum_loss = self.kelly
            qty = entry_quantity(rp, enter, abs(target), equity, close, close - enter * dist, d.volatility[0],
                                 n_win, sum_win, n_loss, sum_loss, self.floor, self.cap, self.blev)
            if qty > 0.0:
                tp = d.take_profit[0]
                self.pend = (enter, qty, dist, sstop, tp if enter * (tp - close) > 0.0 else math.nan, equity)

    @staticmethod
    def _fill(order: bt.Order) -> tuple[float, float]:
        # the execution bit keeps the raw price (executed.price is a size-weighted average)
        bits = order.executed.exbits
        if len(bits) != 1:
            raise _BooksError(f"order {order.ref} filled in {len(bits)} parts; expected one")
        return bits[0].price, order.executed.comm

    def _check_entry(self) -> None:
        order = self.entry_order
        if order is None:
            return
        self.entry_order = None
        if order.status != bt.Order.Completed:
            raise _BooksError(f"entry order not filled ({order.getstatusname()})")
        price, fee = self._fill(order)
        pos = self.pos
        if pos is None or price != pos.entry:
            raise _BooksError(f"entry filled at {price}, the rules say {None if pos is None else pos.entry}")
        pos.entry_fee = fee
        self.fees_cum += pos.entry_fee

    def _book(self, order: bt.Order, reason: int, k: int, pos: _Position) -> None:
        if order.status != bt.Order.Completed:
            raise _BooksError(f"bar {k}: exit ({reason}) not filled ({order.getstatusname()})")
        price, fee = self._fill(order)
        if reason == EXIT_LIQUIDATION:
            # liquidations pay no exit fee (the forfeited margin covers it, methods.md §D.3.3)
            self.broker.add_cash(fee)
            self.cash_pending += fee
            fee = 0.0
            self.n_liq += 1
        self.fees_cum += fee
        pnl = pos.side * pos.qty * (price - pos.entry) - pos.entry_fee - fee + pos.funding
        self.trades.append((pos.entry_bar, k, pos.side, reason, pos.qty, pos.entry, price, pos.stop0, pnl,
                            pos.entry_fee + fee, pos.funding))
        r = pnl / pos.entry_equity if pos.entry_equity > 0.0 else 0.0
        if r > 0.0:
            self.kelly[0] += 1
            self.kelly[1] += r
        elif r < 0.0:
            self.kelly[2] += 1
            self.kelly[3] -= r
        self.pstate = record_exit(self.pstate, reason == EXIT_STOP or reason == EXIT_LIQUIDATION, k,
                                  int(self.rp[P_COOLDOWN_STOPOUTS]), int(self.rp[P_COOLDOWN_BARS]))
        if forced_exit(reason):
            self.blocked = pos.side
        if pos is self.pos:
            self._cancel_resting()
            self.pos = None


def feed_frame(prep: Prepared) -> pd.DataFrame:
    """Return the DataFrame `PerpFeed` reads (tz-naive UTC index, one column per line)."""
    return pd.DataFrame({
        "open": prep.open, "high": prep.high, "low": prep.low, "close": prep.close,
        "volume": np.zeros(len(prep)),
        "mark_open": prep.mark_open, "mark_high": prep.mark_high, "mark_low": prep.mark_low,
        "mark_close": prep.mark_close, "funding_rate": prep.funding_rate, "target": prep.target,
        "signal_stop": prep.stop, "take_profit": prep.take_profit, "atr": prep.atr,
        "volatility": prep.volatility, "day": prep.day.astype(np.float64),
    }, index=prep.index.tz_convert("UTC").tz_localize(None).as_unit("ns"))


def run_raw(prep: Prepared) -> RawRun:
    """Run cerebro on prepared arrays; return the raw books."""
    cerebro = bt.Cerebro(stdstats=False, cheat_on_open=True, preload=True, runonce=True,
                         exactbars=False, quicknotify=False)
    cerebro.adddata(PerpFeed(dataname=feed_frame(prep)))
    cerebro.broker = bt.brokers.BackBroker(cash=prep.initial_cash, checksubmit=False, coo=True)
    cerebro.broker.addcommissioninfo(PerpCommInfo(commission=float(prep.params[P_TAKER_FEE]),
                                                  leverage=float(prep.params[P_MAX_LEVERAGE])))
    slip = float(prep.params[P_SLIPPAGE])
    if slip > 0.0:
        cerebro.broker.set_slippage_perc(slip, slip_open=True, slip_limit=True, slip_match=True, slip_out=False)
    cerebro.addstrategy(SignalTrader, prep=prep)
    strat = cerebro.run()[0]
    rows = strat.rows
    trades = strat.trades
    ti = np.array([t[:4] for t in trades], dtype=np.int64).reshape(len(trades), 4)
    tf = np.array([t[4:] for t in trades], dtype=np.float64).reshape(len(trades), 7)
    return RawRun(equity=rows[:, 0].copy(), cash=rows[:, 1].copy(), position=rows[:, 2].copy(),
                  funding_pnl=rows[:, 3].copy(), fees=rows[:, 4].copy(), risk_state=rows[:, 5].astype(np.int8),
                  trade_int=ti, trade_float=tf, final_equity=float(strat.final_equity),
                  n_liquidations=int(strat.n_liq))

