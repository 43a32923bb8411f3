"""Warm-up in time (docs/architecture.md, "The strategy contract"): the declared ``warmup(p)`` is enough.

For every registered strategy, on 1h and 5m bars, the signals from a start date are the same whether
the frame begins ``warmup(p)`` or ``2 × warmup(p)`` before it.
"""

from __future__ import annotations

import pandas as pd
import pytest

from strategies import STRATEGIES

COMPARE = pd.Timedelta(days=45)  # the compared span after the start


@pytest.mark.parametrize("timeframe", ["1h", "5m"])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_declared_warmup_is_enough(name, timeframe, sample_frame):
    spec = STRATEGIES[name]
    p = spec.Params()
    frame = sample_frame("BTC/USDT:USDT", timeframe)
    w = spec.warmup(p)
    assert isinstance(w, pd.Timedelta) and w > pd.Timedelta(0)
    start = frame.index[0] + 2 * w
    end = start + COMPARE
    assert end <= frame.index[-1], "the sample is too short for this warm-up"
    short = spec.run(frame[(frame.index >= start - w) & (frame.index < end)], p).loc[start:]
    long = spec.run(frame[(frame.index >= start - 2 * w) & (frame.index < end)], p).loc[start:]
    assert (short["target"] != 0).sum() > 0, "nothing to compare: no position in the span"
    pd.testing.assert_frame_equal(short, long, check_exact=False, rtol=1e-9, atol=0.0)
