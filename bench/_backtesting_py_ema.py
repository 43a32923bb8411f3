"""backtesting.py on the bench's year of 5m BTC with the same EMA(20/50) reversal (a whole process).

    python bench/_backtesting_py_ema.py OHLCV_PARQUET FROM TO

Reads the same parquet file cascade's store holds, runs ``Backtest.run()`` (statistics included,
as ``cascade backtest`` computes its stats) and prints one JSON line.
"""

import json
import sys

import pandas as pd
from backtesting import Backtest, Strategy
from backtesting.lib import crossover


def ema(values, n):
    return pd.Series(values).ewm(span=n, adjust=False).mean().to_numpy()


class EmaCross(Strategy):
    fast = 20
    slow = 50

    def init(self):
        self.ema_fast = self.I(ema, self.data.Close, self.fast)
        self.ema_slow = self.I(ema, self.data.Close, self.slow)

    def next(self):
        if crossover(self.ema_fast, self.ema_slow):
            self.position.close()
            self.buy()
        elif crossover(self.ema_slow, self.ema_fast):
            self.position.close()
            self.sell()


def main() -> None:
    path, start, end = sys.argv[1], pd.Timestamp(sys.argv[2], tz="UTC"), pd.Timestamp(sys.argv[3], tz="UTC")
    raw = pd.read_parquet(path)
    if "time" in raw.columns:
        raw = raw.set_index("time")
    raw.index = pd.DatetimeIndex(raw.index, tz="UTC") if raw.index.tz is None else raw.index
    raw = raw[(raw.index >= start) & (raw.index < end)]
    df = raw.rename(columns=str.capitalize)[["Open", "High", "Low", "Close", "Volume"]]
    bt = Backtest(df, EmaCross, cash=1_000_000, commission=0.0004, finalize_trades=True)
    stats = bt.run()
    print(json.dumps({"bars": len(df), "trades": int(stats["# Trades"]), "equity": float(stats["Equity Final [$]"])}))


if __name__ == "__main__":
    main()
