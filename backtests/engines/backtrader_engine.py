"""The backtrader engine: the event-driven reference (docs/architecture.md, "Two engines, one answer").

backtrader runs the loop, the feed and the broker's books; the rules come from the core, as in the
fast engine. Pieces, each a standard backtrader extension point:

* `PerpFeed` — a ``bt.feeds.PandasData`` with extra lines: mark prices, ``funding_rate`` and the mark
  at its settlement, the signal (``target``, ``signal_stop``, ``take_profit``), the derived ``atr`` and
  ``volatility``, and the bar ``time``.
* `PerpCommInfo` — a linear USDT-margined perpetual: futures-like (``stocklike=False``: the broker
  settles price changes to cash at every close, so its value is the mark-to-market equity), taker fee
  on notional per fill. Isolated margins are not blocked in the broker's cash: the core keeps them.
* `SignalTrader` — a thin ``bt.Strategy`` run with cheat-on-open. In ``next_open`` it calls
  `bot.core.bar_open` (through `bot.core.loop.Stepper`) and mirrors what the core booked as broker orders: market orders for the exit
  and entry at the open (filled by backtrader's own matching and slippage, ``slip_out=True``: slippage
  is a cost and may leave the bar's range), and ``Historical`` orders at the core's price for an
  intrabar exit (stop, take profit, liquidation at the bankruptcy price with its fee refunded) and
  the end-of-data close. In ``next`` (the close) it checks every broker fill and fee against the core,
  calls `bot.core.bar_close` (funding goes to the broker with ``add_cash``) and checks the broker's
  position against the core's. The recorded equity is the broker's value.
"""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np
import pandas as pd
from backtrader.utils import date2num

from backtests.engines.common import Prepared, RawRun, trade_rows
from bot.core.book import end_price, taker_fee
from bot.core.loop import Stepper
from bot.core.state import Trade
from bot.risk.execution import EXIT_LIQUIDATION, EXIT_NONE

EXTRA_LINES = ("mark_open", "mark_high", "mark_low", "funding_rate", "funding_mark", "target", "signal_stop",
               "take_profit", "atr", "volatility", "time")


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
    """Linear perpetual: futures-like cash settlement, taker fee on notional."""

    params = (("stocklike", False), ("commtype", bt.CommInfoBase.COMM_PERC), ("percabs", True))

    def _getcommission(self, size: float, price: float, pseudoexec: bool) -> float:
        return abs(size) * price * self.p.commission

    def getoperationcost(self, size: float, price: float) -> float:
        # the wallet is not blocked: the core keeps each position's isolated margin
        return 0.0

    def getvaluesize(self, size: float, price: float) -> float:
        return 0.0

    def getvalue(self, position: bt.Position, price: float) -> float:
        return 0.0


class _BooksError(RuntimeError):
    pass


class SignalTrader(bt.Strategy):
    """Trade a precomputed signal frame through `bot.core` (see the module docstring)."""

    params = (("prep", None),)

    def __init__(self) -> None:
        prep: Prepared = self.p.prep
        self.rp = prep.params
        self.n = len(prep)
        self.core = Stepper(prep.params, prep.brackets.table, prep.initial_cash, int(prep.time[0]))
        self.cash_pending = 0.0  # add_cash amounts the broker applies at its next cycle
        self.sent: list[tuple[bt.Order, float, float, bool]] = []  # (order, core price, core fee, liquidation)
        self.booked: list[Trade] = []  # trades the core booked at this open
        self.trades: list[Trade] = []
        self.rows = np.zeros((self.n, 6))
        self.final_equity = math.nan
        # the core reads each bar and signal from the prepared arrays the feed was built from (the same
        # numbers; reading ten backtrader lines per bar would double the engine's time)
        columns = (prep.open, prep.high, prep.low, prep.close, prep.mark_open, prep.mark_high, prep.mark_low,
                   prep.funding_rate, prep.funding_mark)
        self.bars = list(zip(prep.time.tolist(), *(c.tolist() for c in columns), strict=True))  # `Bar` fields
        self.signals = list(zip(prep.target.tolist(), prep.stop.tolist(), prep.take_profit.tolist(),
                                prep.atr.tolist(), prep.volatility.tolist(), strict=True))  # `Signal` fields

    def _k(self) -> int:
        return len(self.data) - 1

    def _send(self, side: int, qty: float, price: float, fee: float, historical: bool = False,
              liquidation: bool = False) -> None:
        kwargs = {"exectype": bt.Order.Historical, "price": price} if historical else {}
        order = self.buy(size=qty, **kwargs) if side > 0 else self.sell(size=qty, **kwargs)
        self.sent.append((order, price, fee, liquidation))

    # -- the open: the core books the bar's fills, the broker mirrors them ------------------------

    def prenext_open(self) -> None:
        self.next_open()

    def nextstart_open(self) -> None:
        self.next_open()

    def next_open(self) -> None:
        core = self.core
        intent = core.intent
        if core.pos.side == 0 and intent.side == 0:  # nothing held, nothing to send
            return
        k = self._k()
        rp = self.rp
        at_open, entered, intrabar = core.bar_open(k, self.bars[k])
        pos = core.pos
        self.booked = [t for t in (at_open, intrabar) if t.reason != EXIT_NONE]
        if at_open.reason != EXIT_NONE:
            self._send(-at_open.side, at_open.qty, at_open.exit_price, taker_fee(rp, at_open.qty, at_open.exit_price))
        if entered:
            entry = intrabar.entry_price if intrabar.reason != EXIT_NONE else pos.entry
            self._send(intent.side, intent.qty, entry, taker_fee(rp, intent.qty, entry))
        if intrabar.reason != EXIT_NONE:
            liquidation = intrabar.reason == EXIT_LIQUIDATION
            fee = 0.0 if liquidation else taker_fee(rp, intrabar.qty, intrabar.exit_price)
            self._send(-intrabar.side, intrabar.qty, intrabar.exit_price, fee, historical=True,
                       liquidation=liquidation)
        if k == self.n - 1 and pos.side != 0:
            # end of data: the core closes at the last close (after this bar's funding)
            price = end_price(rp, pos, self.data.close[0])
            self._send(-pos.side, pos.qty, price, taker_fee(rp, pos.qty, price), historical=True)

    # -- the close: check the broker, funding, protections, decide -----------------------------

    def prenext(self) -> None:
        self.next()

    def nextstart(self) -> None:
        self.next()

    def next(self) -> None:
        d = self.data
        k = self._k()
        for order, price, fee, liquidation in self.sent:
            self._check_fill(k, order, price, fee, liquidation)
        self.sent = []
        self.trades.extend(self.booked)
        self.booked = []
        core = self.core
        funding = core.acct.funding
        end, _, state = core.bar_close(k, self.bars[k], k == self.n - 1, self.signals[k])
        acct = core.acct
        if acct.funding != funding:
            self.broker.add_cash(acct.funding - funding)
            self.cash_pending += acct.funding - funding
        if end.reason != EXIT_NONE:
            self.trades.append(end)
        pos = core.pos
        held = pos.side * pos.qty
        position = self.getposition(d).size
        if not math.isclose(position, held, rel_tol=1e-12, abs_tol=1e-12):
            raise _BooksError(f"bar {k}: broker position {position} != core {held}")
        equity = self.broker.getvalue() + self.cash_pending
        self.cash_pending = 0.0
        unrealized = 0.0 if pos.side == 0 else held * (d.close[0] - pos.entry)
        self.rows[k] = (equity, equity - unrealized, held, acct.funding, acct.fees, state)
        if k == self.n - 1:
            self.final_equity = equity

    def _check_fill(self, k: int, order: bt.Order, price: float, fee: float, liquidation: bool) -> None:
        if order.status != bt.Order.Completed:
            raise _BooksError(f"bar {k}: order {order.ref} not filled ({order.getstatusname()})")
        bits = order.executed.exbits  # the execution bit keeps the raw price
        if len(bits) != 1:
            raise _BooksError(f"bar {k}: order {order.ref} filled in {len(bits)} parts; expected one")
        if bits[0].price != price:
            raise _BooksError(f"bar {k}: order {order.ref} filled at {bits[0].price}, the core says {price}")
        comm = order.executed.comm
        if liquidation:
            # liquidations pay no exit fee (the forfeited margin covers it, docs/methods.md §D.3.3)
            self.broker.add_cash(comm)
            self.cash_pending += comm
        elif not math.isclose(comm, fee, rel_tol=1e-12, abs_tol=1e-12):
            raise _BooksError(f"bar {k}: broker fee {comm} != core fee {fee}")


def feed_frame(prep: Prepared) -> pd.DataFrame:
    """Return the DataFrame `PerpFeed` reads (tz-naive UTC index, one column per line)."""
    return pd.DataFrame({
        "open": prep.open, "high": prep.high, "low": prep.low, "close": prep.close,
        "volume": np.zeros(len(prep)),
        "mark_open": prep.mark_open, "mark_high": prep.mark_high, "mark_low": prep.mark_low,
        "funding_rate": prep.funding_rate, "funding_mark": prep.funding_mark, "target": prep.target,
        "signal_stop": prep.stop, "take_profit": prep.take_profit, "atr": prep.atr,
        "volatility": prep.volatility, "time": prep.time.astype(np.float64),
    }, index=prep.index.tz_convert("UTC").tz_localize(None).as_unit("ns"))


def run_raw(prep: Prepared) -> RawRun:
    """Run cerebro on prepared arrays; return the raw books."""
    cerebro = bt.Cerebro(stdstats=False, cheat_on_open=True, preload=True, runonce=True,
                         exactbars=False, quicknotify=False)
    cerebro.adddata(PerpFeed(dataname=feed_frame(prep)))
    cerebro.broker = bt.brokers.BackBroker(cash=prep.initial_cash, checksubmit=False, coo=True)
    cerebro.broker.addcommissioninfo(PerpCommInfo(commission=prep.params.taker_fee))
    slip = prep.params.slippage
    if slip > 0.0:
        cerebro.broker.set_slippage_perc(slip, slip_open=True, slip_limit=True, slip_match=True, slip_out=True)
    cerebro.addstrategy(SignalTrader, prep=prep)
    strat = cerebro.run()[0]
    rows = strat.rows
    ti, tf = trade_rows(strat.trades)
    return RawRun(equity=rows[:, 0].copy(), cash=rows[:, 1].copy(), position=rows[:, 2].copy(),
                  funding_pnl=rows[:, 3].copy(), fees=rows[:, 4].copy(), risk_state=rows[:, 5].astype(np.int8),
                  trade_int=ti, trade_float=tf, final_equity=float(strat.final_equity),
                  n_liquidations=int(strat.core.acct.n_liquidations))
