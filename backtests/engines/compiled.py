"""The fast engine's kernel compiled ahead of time, so a backtest process runs it without numba.

Importing numba and loading a kernel from numba's cache costs about a second per process (numba's
own import, then its type registries, which pull in scipy) — more than the whole rest of a
``cascade backtest`` on a year of 5m bars. So the kernel of `backtests.engines.fast`, and the two
series it may need (`bot.risk.stops.average_true_range`, `bot.risk.sizing.realized_volatility`), are
compiled once with numba's ahead-of-time compiler (``numba.pycc``) into a CPython extension module
that needs only NumPy. It is the same Python source compiled by the same LLVM: the results are the
JIT kernel's, bit for bit (``tests/backtests/test_compiled.py``).

The module is built on first use in a child process (``compiling the fast engine (first run
only) …``), keyed on everything that could change the machine code: the source of `bot.core`,
`bot.risk`, `backtests.engines.fast` and this file, the numba/llvmlite/NumPy/Python versions, the
platform, and the number of leverage tiers (the tiers travel as fixed-length tuples, see
`bot.risk.brackets.BracketTable`). It lives in ``$CASCADE_CACHE_DIR`` (default
``~/.cache/cascade``) under ``kernels/``; builds are serialised by a file lock and land by rename.

Where the build cannot run (no C compiler, a read-only cache) the engine falls back to numba's JIT
with one note, and remembers the failure until the key changes. ``CASCADE_AOT=0`` always uses the JIT.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import warnings
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np

from backtests.engines.common import Prepared, RawRun, kernel_args, raw_from_kernel

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("bot/core", "bot/risk", "backtests/engines/fast.py", "backtests/engines/compiled.py")
"""What the compiled code is built from (directories: every ``*.py`` in them)."""
PREFIX = "cascade_fast_"
KEEP_OTHER_KEYS = 86_400.0
"""Modules built for another key (an older checkout) are removed by a build once this many seconds old."""


def enabled() -> bool:
    """False when ``CASCADE_AOT`` is ``0`` (or ``false``/``no``/``off``): the JIT kernel is used."""
    return os.environ.get("CASCADE_AOT", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """``$CASCADE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cascade``, else ``~/.cache/cascade``; plus ``kernels``."""
    base = os.environ.get("CASCADE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cascade")
    return Path(base) / "kernels"


@cache
def source_key() -> str:
    """A digest of the sources and toolchain the compiled module depends on (16 hex digits)."""
    h = hashlib.sha256()
    h.update(f"numpy={np.__version__};".encode())
    for package in ("numba", "llvmlite"):  # their version files, found without importing them
        spec = importlib.util.find_spec(package)
        version_file = Path(spec.origin).with_name("_version.py") if spec and spec.origin else None
        h.update(version_file.read_bytes() if version_file and version_file.exists() else b"?")
    h.update(f"{sys.version};{sysconfig.get_config_var('EXT_SUFFIX')};{platform.machine()};".encode())
    for entry in SOURCES:
        path = ROOT / entry
        for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            h.update(str(file.relative_to(ROOT)).encode())
            h.update(file.read_bytes())
    return h.hexdigest()[:16]


def module_name(tiers: int) -> str:
    """The extension module's name for ``tiers`` leverage tiers under the current `source_key`."""
    return f"{PREFIX}{source_key()}_t{tiers}"


def _module_path(name: str) -> Path:
    return cache_dir() / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"


def _load(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


_LOADED: dict[int, ModuleType | None] = {}


def kernel_module(tiers: int) -> ModuleType | None:
    """The compiled module for ``tiers`` leverage tiers, built on first use; None = use the JIT kernel.

    None when `enabled` is false or the build failed (a note on stderr says why, once per key).
    """
    if not enabled():
        return None
    if tiers in _LOADED:
        return _LOADED[tiers]
    name = module_name(tiers)
    path = _module_path(name)
    failed = path.with_name(name + ".failed")
    module = None
    try:
        if not path.exists() and not failed.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_name(name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same module
                if not path.exists() and not failed.exists():
                    _build(name, tiers, path, failed)
        if path.exists():
            module = _load(name, path)
    except ImportError as err:  # a damaged module: drop it, so the next run builds it afresh
        path.unlink(missing_ok=True)
        print(f"note: the precompiled fast engine did not load ({err}); using numba's JIT, rebuilding next run",
              file=sys.stderr)
    except OSError as err:  # e.g. a read-only or missing cache folder
        print(f"note: the precompiled fast engine is unavailable ({err}); using numba's JIT (set "
              "CASCADE_CACHE_DIR to a writable folder)", file=sys.stderr)
    _LOADED[tiers] = module
    return module


def _build(name: str, tiers: int, path: Path, failed: Path) -> None:
    """Compile the module in a child process (its compiler output stays out of our stdout)."""
    print("compiling the fast engine (first run only; later runs load it without numba) …", file=sys.stderr,
          flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "backtests.engines.compiled", name, str(tiers), str(path)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not path.exists():
        reason = _error_line(proc.stderr + proc.stdout) or f"exit code {proc.returncode}"
        failed.write_text(proc.stderr + proc.stdout)
        print(f"note: could not precompile the fast engine ({reason[:200]}); using numba's JIT. "
              f"Details in {failed}; delete it to retry.", file=sys.stderr)
        return
    print(f"compiled the fast engine in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    _remove_other_keys(path.parent)


def _error_line(output: str) -> str:
    """The last ``SomeError: message`` line of a traceback (else its last line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return (errors or lines or [""])[-1]


def _remove_other_keys(folder: Path) -> None:
    """Remove modules of other keys, and build folders a killed build left, once a day old."""
    now = time.time()
    for other in [*folder.glob(f"{PREFIX}*"), *folder.glob(f".{PREFIX}*.build")]:
        try:
            if source_key() not in other.name and now - other.stat().st_mtime > KEEP_OTHER_KEYS:
                shutil.rmtree(other) if other.is_dir() else other.unlink()
            elif other.is_dir() and now - other.stat().st_mtime > KEEP_OTHER_KEYS:
                shutil.rmtree(other)
        except OSError:
            pass  # another process removed it first


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


def series_function(name: str, tiers: int):  # noqa: ANN201  (a compiled function or None)
    """The compiled ``average_true_range`` or ``realized_volatility`` (None = use the JIT one)."""
    module = kernel_module(tiers)
    return None if module is None else getattr(module, name)


# -- the build (run as ``python -m backtests.engines.compiled NAME TIERS PATH``) ------------------


def _exports(tiers: int) -> dict:
    """The exported functions (plain Python functions calling the jitted ones, which pycc compiles
    with everything they call) and their numba signatures for ``tiers`` leverage tiers."""
    import numba as nb

    from backtests.engines.fast import kernel
    from bot.config import MarketCosts, RiskConfig
    from bot.risk.brackets import BracketTable
    from bot.risk.params import risk_params
    from bot.risk.sizing import realized_volatility
    from bot.risk.stops import average_true_range

    def run_kernel(tm, o, h, lo, c, mo, mh, ml, fr, fm, tgt, sstop, stp, atr, vol, p, br, initial_cash):  # noqa: ANN001, ANN202
        return kernel(tm, o, h, lo, c, mo, mh, ml, fr, fm, tgt, sstop, stp, atr, vol, p, br, initial_cash)

    def atr_series(high, low, close, period):  # noqa: ANN001, ANN202
        return average_true_range(high, low, close, period)

    def volatility_series(close, window, periods_per_year):  # noqa: ANN001, ANN202
        return realized_volatility(close, window, periods_per_year)

    f8, i8 = nb.float64, nb.int64
    series = nb.types.Array(f8, 1, "C", readonly=True)
    p = nb.typeof(risk_params(RiskConfig(), MarketCosts()))
    br = nb.typeof(BracketTable(*([tuple(float(i) for i in range(tiers))] * 5)))
    out = nb.types.Array(f8, 1, "C")
    result = nb.types.Tuple((out, out, out, out, out, nb.types.Array(nb.int8, 1, "C"), nb.types.Array(i8, 2, "C"),
                             nb.types.Array(f8, 2, "C"), i8))
    kernel_args = (nb.types.Array(i8, 1, "C", readonly=True), *([series] * 14), p, br, f8)
    return {"kernel": (run_kernel, result(*kernel_args)),
            "average_true_range": (atr_series, out(series, series, series, i8)),
            "realized_volatility": (volatility_series, out(series, i8, f8))}


def build(name: str, tiers: int, path: Path) -> None:
    """Compile the kernel and the series functions into the extension module ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba.pycc's pending-deprecation warning
        from numba.pycc import CC

    work = path.with_name(f".{name}.{os.getpid()}.build")
    work.mkdir(parents=True, exist_ok=True)
    try:
        cc = CC(name)
        cc.output_dir = str(work)
        cc.verbose = False
        for export, (fn, signature) in _exports(tiers).items():
            cc.export(export, signature)(fn)
        cc.compile()
        built = next(work.glob(f"{name}*{sysconfig.get_config_var('EXT_SUFFIX')}"))
        os.replace(built, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    build(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
