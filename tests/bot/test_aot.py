"""Strategy kernels run precompiled (bot/aot.py) give the JIT functions' results, bit for bit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bot import aot
from strategies import get_strategy, make_params
from strategies.features import kernels

STRATEGIES = ("liq_asymmetry", "funding_reversal", "sr_levels", "confluence")


@pytest.fixture(autouse=True)
def precompiled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Precompiled kernels on (tests/conftest.py turns them off for the rest of the suite); runner removed after."""
    monkeypatch.setenv("CASCADE_AOT", "1")
    yield
    kernels.set_runner(None)


def assert_identical(a: Any, b: Any) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=True)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_identical(a[key], b[key])
    elif hasattr(a, "__dict__"):  # a feature object (e.g. liq_asymmetry.AsymmetryZ): its state
        assert type(a) is type(b)
        assert_identical(vars(a), vars(b))
    else:
        assert a == b


def run(name: str, frame: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    spec = get_strategy(name)
    params = make_params(spec, {})
    features = spec.compute_features(frame, params)
    return features, spec.run(frame, params, features)


@pytest.mark.parametrize(("name", "timeframe"), [*[(s, "1h") for s in STRATEGIES], ("liq_asymmetry", "5m"),
                                                 ("sr_levels", "5m")])
def test_every_strategy_kernel_precompiled_equals_the_jit(sample_frame, name: str, timeframe: str) -> None:
    frame = sample_frame("BTC/USDT:USDT", timeframe)
    kernels.set_runner(None)
    jit_features, jit_signals = run(name, frame)

    ran: list[tuple[str, bool]] = []

    def spy(ref: str, args: tuple[Any, ...]) -> Any:
        out = aot.run_kernel(ref, args)
        ran.append((ref, out is not kernels.NOT_RUN))
        return out

    kernels.set_runner(spy)
    aot_features, aot_signals = run(name, frame)
    assert ran, "the strategy called no kernel"
    assert all(ok for _, ok in ran), [ref for ref, ok in ran if not ok]  # every call ran precompiled
    assert (aot_signals["target"] != 0).sum() > 10  # the strategy trades here
    assert_identical(aot_signals, jit_signals)
    assert_identical(aot_features, jit_features)


def test_type_key_names_what_numba_would_type() -> None:
    a = np.arange(6.0)
    ro = a.copy()
    ro.setflags(write=False)
    key = aot.type_key((a, ro, a[::2], a.reshape(2, 3).T, np.arange(3), True, np.bool_(False), 3, np.int64(3),
                        2.5, np.float32(1.0)))
    assert key == (("array", "<f8", 1, "C", False), ("array", "<f8", 1, "C", True), ("array", "<f8", 1, "A", False),
                   ("array", "<f8", 2, "F", False), ("array", "<i8", 1, "C", False), "boolean", "boolean", "int64",
                   "int64", "float64", "float32")
    assert aot.type_key((a, None)) is None and aot.type_key(([1.0],)) is None  # left to the JIT


def test_a_call_the_compiled_module_cannot_take_runs_on_the_jit() -> None:
    from strategies.features.indicators import rolling_percentile

    ref = "strategies.features._indicator_kernels:percentile_kernel"
    assert aot.run_kernel(ref, (np.arange(3.0), 5, None)) is kernels.NOT_RUN
    declined: list[str] = []
    kernels.set_runner(lambda r, args: declined.append(r) or kernels.NOT_RUN)
    x = pd.Series([1.0, 2.0, 3.0, 2.0, 1.0, 5.0])
    # p_k = (#less + ½·#equal) / m over the earlier values in the window, worked by hand
    expected = [np.nan, 1.0, 1.0, 1.5 / 3, 0.5 / 4, 1.0]
    assert np.allclose(rolling_percentile(x, 5, 1).to_numpy(), expected, equal_nan=True)
    assert declined == [ref]
