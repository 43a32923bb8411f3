"""The dependency rule of docs/architecture.md ("Layout and the dependency rule"), checked on the source.

Every module is parsed with :mod:`ast` (imports inside functions count too), so a violation is found
even in code no test runs:

* ``strategies/`` imports no I/O and nothing above it: not ccxt, backtrader, ``bot`` or ``backtests``
  (tests/strategies/test_purity.py also forbids file and network calls there);
* ``bot/risk/`` and ``bot/core/`` (the one trading core) import only the standard library, numpy/numba
  and each other, plus the typed settings (``bot.config``) and ``bot.errors``;
* ``bot.commands`` is imported by ``bot/cli.py`` only (commands may share helpers among themselves);
* in ``strategies/`` only the kernel modules (``_*_kernels.py``, ``_liqmap_kernel.py``) import numba:
  strategies call kernels by reference (`strategies.features.kernels`), so a process that runs them
  precompiled never loads numba;
* the backtest path imports no numba: ``bot/risk/codes.py``, ``bot/risk/brackets.py``,
  ``bot/risk/params.py``, ``backtests/engines/common.py`` and ``backtests/engines/compiled.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("strategies", "backtests", "bot")


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every absolute import in ``path``; relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out += [(node.lineno, f"{module}.{a.name}" if module in ("bot", "backtests", "strategies") else module)
                    for a in node.names]
    return out


def modules(under: str) -> list[Path]:
    return sorted((ROOT / under).rglob("*.py")) if (ROOT / under).exists() else []


def top(name: str) -> str:
    return name.split(".")[0]


def check_strategies(path: Path) -> list[str]:
    bad = {"ccxt", "backtrader", "bot", "backtests"}
    return [f"{path.relative_to(ROOT)}:{line} imports {m}" for line, m in imports(path) if top(m) in bad]


CORE_ALLOWED_PROJECT = ("bot.risk", "bot.core", "bot.config", "bot.errors")
CORE_ALLOWED_THIRD_PARTY = {"numpy", "numba"}


def check_core(path: Path) -> list[str]:
    import sys

    found = []
    for line, m in imports(path):
        root = top(m)
        if root in PACKAGES:
            ok = any(m == a or m.startswith(a + ".") for a in CORE_ALLOWED_PROJECT)
        else:
            ok = root in sys.stdlib_module_names or root in CORE_ALLOWED_THIRD_PARTY or root == "__future__"
        if not ok:
            found.append(f"{path.relative_to(ROOT)}:{line} imports {m}")
    return found


def check_commands_users(path: Path) -> list[str]:
    rel = path.relative_to(ROOT)
    if rel.parts[:2] == ("bot", "commands") or rel == Path("bot/cli.py"):
        return []
    return [f"{rel}:{line} imports {m}" for line, m in imports(path)
            if m == "bot.commands" or m.startswith("bot.commands.")]


@pytest.mark.parametrize("path", modules("strategies"), ids=lambda p: str(p.relative_to(ROOT)))
def test_strategies_import_no_io_and_nothing_above(path):
    assert check_strategies(path) == []


@pytest.mark.parametrize("path", modules("bot/risk") + modules("bot/core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_nothing_above_it(path):
    assert check_core(path) == []


def test_only_the_cli_imports_commands():
    found = [v for pkg in PACKAGES for p in modules(pkg) for v in check_commands_users(p)]
    assert found == []


def is_kernel_module(path: Path) -> bool:
    return path.name.startswith("_") and path.stem.endswith(("_kernels", "_kernel"))


NUMBA_FREE = ("bot/risk/codes.py", "bot/risk/brackets.py", "bot/risk/params.py", "backtests/engines/common.py",
              "backtests/engines/compiled.py", "backtests/runner.py", "bot/aot.py", "bot/progress.py")


def numba_imports(path: Path) -> list[str]:
    # `bot/aot.py` and `compiled.py` import numba inside their build functions only (run in a child)
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:  # module level: what importing the module runs
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names if top(n) == "numba"]
    return found


@pytest.mark.parametrize("path", [p for p in modules("strategies") if not is_kernel_module(p)]
                         + [ROOT / f for f in NUMBA_FREE], ids=lambda p: str(p.relative_to(ROOT)))
def test_strategies_and_the_backtest_path_import_no_numba(path):
    assert numba_imports(path) == []


def test_the_checks_catch_violations(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "strategies").mkdir()
    (tmp_path / "bot" / "risk").mkdir(parents=True)
    (tmp_path / "backtests").mkdir()
    s = tmp_path / "strategies" / "x.py"
    s.write_text("import ccxt\nfrom backtests.engines import run_backtest\nimport numpy\n"
                 "def f():\n    from bot import data\n")
    r = tmp_path / "bot" / "risk" / "y.py"
    r.write_text("import math\nimport pandas\nfrom bot.risk import stops\nfrom . import brackets\n"
                 "from bot.data import load_frame\nfrom ..store import Store\n")
    b = tmp_path / "backtests" / "z.py"
    b.write_text("from bot.commands.backtest import backtest\n")
    assert check_strategies(s) == ["strategies/x.py:1 imports ccxt", "strategies/x.py:2 imports backtests.engines",
                                   "strategies/x.py:5 imports bot.data"]
    assert check_core(r) == ["bot/risk/y.py:2 imports pandas", "bot/risk/y.py:5 imports bot.data",
                             "bot/risk/y.py:6 imports bot.store"]
    assert check_commands_users(b) == ["backtests/z.py:1 imports bot.commands.backtest"]
    n = tmp_path / "strategies" / "w.py"
    n.write_text("import numba as nb\nfrom numba import njit\ndef f():\n    import numba\n")
    assert numba_imports(n) == ["strategies/w.py:1 imports numba", "strategies/w.py:2 imports numba"]
