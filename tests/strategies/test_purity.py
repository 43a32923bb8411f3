"""``strategies/`` is pure (docs/architecture.md, dependency rule): no I/O libraries, no file access.

Every module under ``strategies/`` is parsed with :mod:`ast` (not imported), so a violation is found
even in code paths no test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "strategies"
MODULES = sorted(ROOT.rglob("*.py"))

FORBIDDEN_IMPORTS = {
    "ccxt", "backtrader", "bot", "backtests", "requests", "urllib", "http", "socket", "aiohttp",
    "websockets", "sqlite3", "shutil", "pickle", "subprocess",
}
FORBIDDEN_CALLS = {
    "open", "read_parquet", "read_feather", "read_csv", "read_json", "read_pickle", "read_hdf",
    "read_sql", "read_excel", "read_table", "to_parquet", "to_feather", "to_csv", "to_json",
    "to_pickle", "to_hdf", "to_sql", "to_excel", "read_text", "read_bytes", "write_text",
    "write_bytes", "load", "loadtxt", "genfromtxt", "save", "savez", "savetxt", "fromfile",
    "tofile", "memmap", "urlopen", "system", "popen",
}


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        else:
            names = []
        for name in names:
            if name.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(f"{path.name}:{node.lineno} imports {name}")
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in FORBIDDEN_CALLS:
                found.append(f"{path.name}:{node.lineno} calls {called}()")
    return found


def test_modules_found():
    names = {p.name for p in MODULES}
    assert {"__init__.py", "funding.py", "levels.py", "indicators.py", "liq_asymmetry.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_pure(path):
    assert violations(path) == []


def test_checker_catches_violations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import ccxt\nfrom bot.store import Store\nimport pandas as pd\n"
        "x = pd.read_parquet('f')\nwith open('f') as fh:\n    pass\nfrom backtests import sample\n"
    )
    assert sorted(violations(bad)) == sorted([
        "bad.py:1 imports ccxt",
        "bad.py:2 imports bot.store",
        "bad.py:4 calls read_parquet()",
        "bad.py:5 calls open()",
        "bad.py:7 imports backtests",
    ])
