"""User strategies: ``load_strategy`` by name, file and ``module:NAME``; the documented example; broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strategies import STRATEGIES, StrategyLoadError, load_strategy
from strategies.base import StrategySpec

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ema_cross.py"


def test_references_resolve():
    assert load_strategy("sr_levels") is STRATEGIES["sr_levels"]
    assert load_strategy("strategies.sr_levels:SPEC") is STRATEGIES["sr_levels"]
    spec = load_strategy(EXAMPLE)
    assert isinstance(spec, StrategySpec) and spec.name == "ema_cross" and spec.description
    assert load_strategy(str(EXAMPLE)) is spec  # loaded once per file
    assert load_strategy(f"{EXAMPLE}:SPEC") is spec


def ema(x: np.ndarray, n: int) -> np.ndarray:
    """EMA by its recursion, seeded with the first value (pandas' ewm(adjust=False))."""
    out = np.empty_like(x)
    out[0] = x[0]
    a = 2.0 / (n + 1.0)
    for i in range(1, len(x)):
        out[i] = a * x[i] + (1.0 - a) * out[i - 1]
    return out


def test_example_crosses_where_the_emas_cross(make_bars):
    spec = load_strategy(EXAMPLE)
    close = np.r_[np.linspace(100, 140, 120), np.linspace(140, 90, 120), np.linspace(90, 130, 120)]
    frame = make_bars(close)
    sig = spec.run(frame, spec.Params())
    diff = ema(close, 20) - ema(close, 50)
    expect = np.where(np.arange(len(close)) >= 49, np.sign(diff), 0.0)
    np.testing.assert_array_equal(sig["target"].to_numpy(), expect)
    flips = np.flatnonzero(np.diff(expect[49:]) != 0) + 50
    assert len(flips) == 2 and 120 < flips[0] < 240 < flips[1]  # one short reversal, one long reversal
    assert sig["stop"].isna().all() and sig["take_profit"].isna().all()
    # with a stop: on the losing side of the close while held
    p = spec.Params(stop_atr=2.0)
    s = spec.run(frame, p)
    held = s["target"] != 0
    assert (np.sign(frame["close"] - s["stop"])[held & s["stop"].notna()] == s["target"][held & s["stop"].notna()]).all()


def test_example_prefix_and_warmup(btc_1h):
    spec = load_strategy(EXAMPLE)
    p = spec.Params()
    full = spec.run(btc_1h, p)
    for k in (60, 700, 5000):
        pd.testing.assert_frame_equal(spec.run(btc_1h.iloc[:k], p), full.iloc[:k])
    w = spec.warmup(p)
    start = btc_1h.index[0] + 2 * w
    short = spec.run(btc_1h.loc[start - w:], p).loc[start:]
    pd.testing.assert_frame_equal(short, full.loc[start:], rtol=1e-9)


@pytest.mark.parametrize(("source", "problem"), [
    ("def signals(:\n", "syntax error"),
    ("import not_a_module_xyz\n", "importing it failed: ModuleNotFoundError"),
    ("raise RuntimeError('boom')\n", "importing it failed: RuntimeError: boom"),
    ("def signals(frame, p):\n    return frame\n", "missing Params, warmup"),
    ("from pydantic.dataclasses import dataclass\n@dataclass(frozen=True)\nclass Params:\n    n: int = 3\n"
     "def warmup(p):\n    return 3\n", "missing signals"),
    ("import pandas as pd\nfrom pydantic.dataclasses import dataclass\n@dataclass(frozen=True)\nclass Params:\n"
     "    n: int = 3\ndef signals(frame, p):\n    return frame\ndef warmup(p):\n    return 3\n",
     "warmup(p) must return a pd.Timedelta"),
])
def test_broken_file_is_one_line_naming_file_and_problem(tmp_path, source, problem):
    path = tmp_path / "mine.py"
    path.write_text(source)
    with pytest.raises(StrategyLoadError) as info:
        load_strategy(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and problem in msg, msg


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(StrategyLoadError, match="not found"):
        load_strategy(tmp_path / "nope.py")
    with pytest.raises(StrategyLoadError, match="did you mean 'sr_levels'"):
        load_strategy("sr_level")
    with pytest.raises(StrategyLoadError, match="cannot import module"):
        load_strategy("no_such_pkg_xyz:SPEC")


def test_module_level_parts_make_a_spec(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text('"""Always long."""\nimport numpy as np\nimport pandas as pd\n'
                    "from pydantic.dataclasses import dataclass\n"
                    "@dataclass(frozen=True)\nclass Params:\n    size: float = 0.5\n"
                    "def signals(frame, p):\n"
                    "    return pd.DataFrame({'target': p.size, 'stop': np.nan, 'take_profit': np.nan}, index=frame.index)\n"
                    "def warmup(p):\n    return pd.Timedelta(0)\n")
    spec = load_strategy(path)
    assert spec.name == "plain" and spec.description == "Always long."
    frame = pd.DataFrame({"close": [1.0, 2.0]}, index=pd.date_range("2025", periods=2, freq="h", tz="UTC"))
    assert spec.run(frame, spec.Params())["target"].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="no search space"):
        spec.suggest(None)
