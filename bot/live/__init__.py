"""Paper and live trading: one runner over the one core, brokers, crash-safe state, kill switch.

* :mod:`bot.live.runner` — wakes at each bar close, fetches the window, computes the strategy's
  signals and calls the core (`bot.core.bar_open` / `bar_close`) with the persisted state;
  lock-step driving of an in-process replay exchange.
* :mod:`bot.live.brokers` — `SimBroker` (fills simulated in process by the core on live prices)
  and `ExchangeBroker` (orders through `bot.gateway.Gateway`, fills booked by the core).
* :mod:`bot.live.store` — the run's SQLite (WAL) state: core state, orders, fills, trades,
  equity, protection orders, events.
* :mod:`bot.live.killswitch` — ACTIVE / REDUCING / HALTED from the core's protections plus error
  bursts, stale data and a halt file.
* :mod:`bot.live.secrets` — API keys only from environment variables; redaction.
* :mod:`bot.live.compare` — trade-by-trade comparison of two run folders.
"""
