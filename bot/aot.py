"""numba kernels compiled ahead of time, so a short command runs them without importing numba.

Importing numba and loading a kernel from numba's cache costs about a second per process (numba's
own import, then its type registries, which pull in scipy) — more than the rest of a ``cascade
backtest``. So the kernels a backtest calls are compiled once with numba's ahead-of-time compiler
(``numba.pycc``) into CPython extension modules that need only NumPy. It is the same Python source
compiled by the same LLVM: the results are the JIT function's, bit for bit
(``tests/backtests/test_compiled.py``, ``tests/bot/test_aot.py``).

* The fast engine's kernel: `backtests.engines.compiled` (typed state, one module per tier count).
* Strategy kernels, called through `strategies.features.kernels.call`: `install` makes
  `run_kernel` their runner; one module per kernel and argument types, built on the first call with
  those types.

A module is built in a child process on first use (``compiling <what> (first run only) …``, a few
seconds each), keyed on everything that could change its machine code: the sources it is built from,
the numba/llvmlite/NumPy/Python versions and the platform. Modules live in ``$CASCADE_CACHE_DIR``
(default ``~/.cache/cascade``) under ``kernels/``; builds are serialised by a file lock and land by
rename. Where a build cannot run (no C compiler, a read-only cache) the JIT function runs instead,
with one note, and the failure is remembered until the key changes. ``CASCADE_AOT=0`` turns it off.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from strategies.features.kernels import NOT_RUN, jitted, set_runner

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "cascade_"
KEEP_UNUSED = 30 * 86_400.0
"""A build removes cached files not used for this long (seconds)."""


def enabled() -> bool:
    """False when ``CASCADE_AOT`` is ``0`` (or ``false``/``no``/``off``): the JIT functions run."""
    return os.environ.get("CASCADE_AOT", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """``$CASCADE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cascade``, else ``~/.cache/cascade``; plus ``kernels``."""
    base = os.environ.get("CASCADE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cascade")
    return Path(base) / "kernels"


@cache
def toolchain_key() -> str:
    """What every compiled module depends on besides its sources: numba, llvmlite, NumPy, Python, platform."""
    import numpy as np

    h = hashlib.sha256(f"numpy={np.__version__};".encode())
    for package in ("numba", "llvmlite"):  # their version files, found without importing them
        spec = importlib.util.find_spec(package)
        version_file = Path(spec.origin).with_name("_version.py") if spec and spec.origin else None
        h.update(version_file.read_bytes() if version_file and version_file.exists() else b"?")
    h.update(f"{sys.version};{sysconfig.get_config_var('EXT_SUFFIX')};{platform.machine()};".encode())
    h.update(f"cpu={host_cpu() or 'generic'}".encode())
    return h.hexdigest()


@cache
def host_cpu() -> str | None:
    """This CPU's identity (Linux: model and feature flags), or None where it is not known.

    Modules are compiled for the host CPU when it is known (loops vectorise as numba's JIT does:
    generic x86-64 code ran a rolling kernel 1.9x slower), and the identity is part of every key,
    so a cache shared with another machine never loads code for the wrong CPU. Elsewhere the code
    is generic.
    """
    try:
        first = Path("/proc/cpuinfo").read_text(errors="replace").split("\n\n")[0]
    except OSError:
        return None
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}
    ident = "|".join(fields.get(k, "") for k in ("model name", "flags", "CPU implementer", "CPU part", "Features"))
    return hashlib.sha256(ident.encode()).hexdigest()[:16] if ident.strip("|") else None


def digest(files: Iterable[Path], *extra: str) -> str:
    """16 hex digits over the toolchain, the contents of ``files`` and ``extra``."""
    h = hashlib.sha256(toolchain_key().encode())
    for file in files:
        h.update(str(file.relative_to(ROOT)).encode() if file.is_relative_to(ROOT) else file.name.encode())
        h.update(file.read_bytes())
    for item in extra:
        h.update(item.encode())
    return h.hexdigest()[:16]


def module_path(name: str) -> Path:
    """Where the extension module ``name`` lives."""
    return cache_dir() / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"


def _load(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


_LOADED: dict[str, ModuleType | None] = {}


def load_or_build(name: str, build: list[str], what: str) -> ModuleType | None:
    """The extension module ``name``, built on first use by ``python -m <build...> PATH``; None = use the JIT.

    ``what`` names it in the notes (``compiling <what> (first run only) …``).
    """
    if not enabled():
        return None
    if name in _LOADED:
        return _LOADED[name]
    path = module_path(name)
    failed = path.with_name(name + ".failed")
    module = None
    try:
        if not path.exists() and not failed.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_name(name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same module
                if not path.exists() and not failed.exists():
                    _build_in_child(build, path, failed, what)
        if path.exists():
            module = _load(name, path)
            os.utime(path)  # last use, for the sweep
    except ImportError as err:  # a damaged module: drop it, so the next run builds it afresh
        path.unlink(missing_ok=True)
        print(f"note: precompiled {what} did not load ({err}); using numba's JIT, rebuilding next run",
              file=sys.stderr)
    except OSError as err:  # e.g. a read-only or missing cache folder
        print(f"note: precompiled {what} unavailable ({err}); using numba's JIT (set CASCADE_CACHE_DIR to a "
              "writable folder)", file=sys.stderr)
    _LOADED[name] = module
    return module


def _build_in_child(build: list[str], path: Path, failed: Path, what: str) -> None:
    """Compile in a child process: its compiler output stays out of our stdout, numba out of our memory."""
    print(f"compiling {what} (first run only; later runs load it without numba) …", file=sys.stderr, flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", *build, str(path)], capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode != 0 or not path.exists():
        reason = error_line(proc.stderr + proc.stdout) or f"exit code {proc.returncode}"
        failed.write_text(proc.stderr + proc.stdout)
        print(f"note: could not precompile {what} ({reason[:200]}); using numba's JIT. Details in {failed}; "
              "delete it to retry.", file=sys.stderr)
        return
    print(f"compiled {what} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    _sweep(path.parent)


def error_line(output: str) -> str:
    """The last ``SomeError: message`` line of a traceback (else its last line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return (errors or lines or [""])[-1]


def _sweep(folder: Path) -> None:
    """Remove what has not been used for `KEEP_UNUSED` seconds: modules of older sources (loading a
    module touches it), failure notes (so the build is retried), killed builds' folders."""
    now = time.time()
    for old in folder.iterdir():
        try:
            if old.name.lstrip(".").startswith(PREFIX) and now - old.stat().st_mtime > KEEP_UNUSED:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        except OSError:
            pass  # another process removed it first


def build_module(name: str, path: Path, exports: dict[str, tuple[Callable[..., Any], Any]]) -> None:
    """Compile ``exports`` (``{name: (python function, numba signature)}``) into extension module ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba.pycc's pending-deprecation warning
        from numba.pycc import CC

    work = path.with_name(f".{name}.{os.getpid()}.build")
    work.mkdir(parents=True, exist_ok=True)
    try:
        cc = CC(name)
        cc.output_dir = str(work)
        cc.verbose = False
        if host_cpu() is not None:
            cc.target_cpu = "host"
        for export, (fn, signature) in exports.items():
            cc.export(export, signature)(fn)
        cc.compile()
        built = next(work.glob(f"{name}*{sysconfig.get_config_var('EXT_SUFFIX')}"))
        os.replace(built, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def forwarder(fn: Callable[..., Any], n_args: int) -> Callable[..., Any]:
    """A plain function of ``n_args`` positional arguments calling ``fn`` (pycc exports Python functions;
    it compiles them with everything they call)."""
    names = ", ".join(f"a{i}" for i in range(n_args))
    namespace: dict[str, Any] = {"fn": fn}
    exec(f"def forward({names}):\n    return fn({names})\n", namespace)  # noqa: S102  (fixed template)
    return namespace["forward"]


# -- strategy kernels (strategies.features.kernels) ---------------------------------------------------


def type_key(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The argument types as numba would type them (arrays: dtype, ndim, layout, read-only; NumPy and
    Python scalars); None when an argument is of another kind (the JIT handles those)."""
    import numpy as np  # imported here: `install` runs in every command, `cascade --help` included

    out: list[Any] = []
    for a in args:
        if isinstance(a, np.ndarray):
            layout = "C" if a.flags.c_contiguous else "F" if a.flags.f_contiguous else "A"
            out.append(("array", a.dtype.str, a.ndim, layout, not a.flags.writeable))
        elif isinstance(a, bool | np.bool_):
            out.append("boolean")
        elif isinstance(a, np.integer | np.floating):
            out.append(a.dtype.name)
        elif isinstance(a, int):
            out.append("int64")
        elif isinstance(a, float):
            out.append("float64")
        else:
            return None
    return tuple(out)


@cache
def kernel_sources(ref: str) -> tuple[Path, ...]:
    """The kernel's module file and the project modules it imports (what its machine code is built from)."""
    spec = importlib.util.find_spec(ref.partition(":")[0])
    assert spec is not None and spec.origin is not None, ref
    origin = Path(spec.origin)
    files = [origin]
    for node in ast.walk(ast.parse(origin.read_text(encoding="utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        for mod in names:
            if mod.split(".")[0] in ("strategies", "bot", "backtests"):
                dep = importlib.util.find_spec(mod)
                if dep is not None and dep.origin:
                    files.append(Path(dep.origin))
    return tuple(files)


def run_kernel(ref: str, args: tuple[Any, ...]) -> Any:
    """Run strategy kernel ``ref`` precompiled for the types of ``args`` (the `strategies.features.kernels`
    runner); `NOT_RUN` when they are not types a compiled module can take, or it is unavailable."""
    key = type_key(args)
    if key is None:
        return NOT_RUN
    module = _kernel_module(ref, key)
    return NOT_RUN if module is None else module.run(*args)


_KERNELS: dict[tuple[str, tuple[Any, ...]], ModuleType | None] = {}


def _kernel_module(ref: str, key: tuple[Any, ...]) -> ModuleType | None:
    """The module of kernel ``ref`` for argument types ``key``, looked up (a digest of its sources) once
    per process: an optimisation trial calls kernels many times."""
    if (ref, key) not in _KERNELS:
        encoded = json.dumps(key)
        short = ref.rpartition(":")[2]
        name = f"{PREFIX}k_{short}_{digest(kernel_sources(ref), ref, encoded)}"
        _KERNELS[(ref, key)] = load_or_build(name, ["bot.aot", name, ref, encoded], f"the {short} kernel")
    return _KERNELS[(ref, key)]


def install() -> None:
    """Run strategy kernels precompiled in this process (no-op when ``CASCADE_AOT=0``)."""
    if enabled():
        set_runner(run_kernel)


def _numba_type(key: Any) -> Any:
    import numba as nb
    import numpy as np

    if isinstance(key, list):  # an array, from JSON
        _, dtype, ndim, layout, readonly = key
        return nb.types.Array(nb.from_dtype(np.dtype(dtype)), ndim, layout, readonly=readonly)
    return getattr(nb.types, key)


def build_kernel(name: str, ref: str, encoded: str, path: Path) -> None:
    """Compile strategy kernel ``ref`` for the argument types ``encoded`` (a `type_key`) as ``run``."""
    fn = jitted(ref)
    argtypes = tuple(_numba_type(k) for k in json.loads(encoded))
    fn.compile(argtypes)
    signature = fn.overloads[argtypes].signature
    build_module(name, path, {"run": (forwarder(fn, len(argtypes)), signature)})


if __name__ == "__main__":
    build_kernel(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]))
