"""The fast engine's kernel compiled ahead of time, so a backtest process runs it without numba.

Importing numba and loading a kernel from numba's cache costs about a second per process (numba's
own import, then its type registries, which pull in scipy) — more than the whole rest of a
``cascade backtest`` on a year of 5m bars. So the kernel of `backtests.engines.fast`, and the two
series it may need (`bot.risk.stops.average_true_range`, `bot.risk.sizing.realized_volatility`), are
compiled once with numba's ahead-of-time compiler (``numba.pycc``) into a CPython extension module
that needs only NumPy. It is the same Python source compiled by the same LLVM: the results are the
JIT kernel's, bit for bit (``tests/backtests/test_compiled.py``).

How modules are built, cached and loaded is `bot.aot`'s. This one is keyed on the source of
`bot.core`, `bot.risk`, `backtests.engines.fast` and this file, and on the number of leverage tiers
(the tiers travel as fixed-length tuples, see `bot.risk.brackets.BracketTable`). Without it (no C
compiler, ``CASCADE_AOT=0``) the JIT kernel runs: same answer, slower start.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np

from backtests.engines.common import Prepared, RawRun, kernel_args, raw_from_kernel
from bot import aot

SOURCES = ("bot/core", "bot/risk", "backtests/engines/fast.py", "backtests/engines/compiled.py")
"""What the compiled code is built from (directories: every ``*.py`` in them), relative to `bot.aot.ROOT`."""
PREFIX = f"{aot.PREFIX}fast_"


@cache
def source_key() -> str:
    """A digest of the sources and toolchain the compiled module depends on (16 hex digits)."""
    files = []
    for entry in SOURCES:
        path = aot.ROOT / entry
        files += sorted(path.glob("*.py")) if path.is_dir() else [path]
    return aot.digest(files)


def module_name(tiers: int) -> str:
    """The extension module's name for ``tiers`` leverage tiers under the current `source_key`."""
    return f"{PREFIX}{source_key()}_t{tiers}"


def kernel_module(tiers: int) -> ModuleType | None:
    """The compiled module for ``tiers`` leverage tiers, built on first use; None = use the JIT kernel."""
    name = module_name(tiers)
    return aot.load_or_build(name, ["backtests.engines.compiled", name, str(tiers)], "the fast engine")


def _contiguous(arrays: tuple, dtype: type) -> bool:
    return all(a.dtype == dtype and a.ndim == 1 and a.flags.c_contiguous for a in arrays)


def call_kernel(args: tuple) -> tuple | None:
    """Run the compiled kernel on `backtests.engines.fast`'s argument tuple; None = not available.

    The compiled wrapper trusts its declared types, so anything but C-contiguous int64 times and
    float64 series is left to the JIT kernel (which dispatches on the actual types).
    """
    times, series, br = args[0], args[1:15], args[16]
    if not (times.dtype == np.int64 and times.flags.c_contiguous and _contiguous(series, np.float64)):
        return None
    module = kernel_module(len(br.floor))
    return None if module is None else module.kernel(*args)


def run_raw(prep: Prepared) -> RawRun:
    """Run the fast kernel on ``prep``: precompiled when available, else numba's JIT (same results)."""
    args = kernel_args(prep)
    out = call_kernel(args)
    if out is None:
        from backtests.engines.fast import kernel

        out = kernel(*args)
    return raw_from_kernel(out)


def series_function(name: str, tiers: int) -> Callable[..., np.ndarray] | None:
    """The compiled ``average_true_range`` or ``realized_volatility`` (None = use the JIT one)."""
    module = kernel_module(tiers)
    return None if module is None else getattr(module, name)


# -- the build (run as ``python -m backtests.engines.compiled NAME TIERS PATH``) ------------------


def _exports(tiers: int) -> dict:
    """The exported functions and their numba signatures for ``tiers`` leverage tiers."""
    import numba as nb

    from backtests.engines.fast import kernel
    from bot.config import MarketCosts, RiskConfig
    from bot.risk.brackets import BracketTable
    from bot.risk.params import risk_params
    from bot.risk.sizing import realized_volatility
    from bot.risk.stops import average_true_range

    f8, i8 = nb.float64, nb.int64
    series = nb.types.Array(f8, 1, "C", readonly=True)
    p = nb.typeof(risk_params(RiskConfig(), MarketCosts()))
    br = nb.typeof(BracketTable(*([tuple(float(i) for i in range(tiers))] * 5)))
    out = nb.types.Array(f8, 1, "C")
    result = nb.types.Tuple((out, out, out, out, out, nb.types.Array(nb.int8, 1, "C"), nb.types.Array(i8, 2, "C"),
                             nb.types.Array(f8, 2, "C"), i8))
    kernel_args_types = (nb.types.Array(i8, 1, "C", readonly=True), *([series] * 14), p, br, f8)
    return {"kernel": (aot.forwarder(kernel, len(kernel_args_types)), result(*kernel_args_types)),
            "average_true_range": (aot.forwarder(average_true_range, 4), out(series, series, series, i8)),
            "realized_volatility": (aot.forwarder(realized_volatility, 3), out(series, i8, f8))}


if __name__ == "__main__":
    aot.build_module(sys.argv[1], Path(sys.argv[3]), _exports(int(sys.argv[2])))
