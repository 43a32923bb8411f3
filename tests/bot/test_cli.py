"""The command line's conventions: lazy subcommands, --version, plain help; and bot.progress."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from importlib.metadata import version

import numba
import pytest

from bot.cli import COMMANDS, main, short_help
from bot.progress import PlainProgress, compile_notice, progress, track


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "CASCADE_WARM": "0"})


def test_help_lists_every_command_without_importing_any() -> None:
    code = ("import sys, json\nfrom bot.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('ccxt', 'numba', 'numpy', 'pandas', 'pyarrow', 'pydantic', 'plotly', 'backtrader', 'optuna') "
            "or m.startswith('bot.commands.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.strip().splitlines()
    assert json.loads(lines[-1]) == []  # nothing heavy, no command module
    text = "\n".join(lines[:-1])
    for name, module, func in COMMANDS:
        assert name in text
        assert short_help(module, func) and short_help(module, func)[:30] in text.replace("\n", " ").replace("  ", " ")


def test_running_a_command_imports_only_its_module() -> None:
    code = ("import sys, json\nfrom bot.cli import main\ntry:\n    main(['liqmap', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'ccxt' "
            "or m.startswith('bot.commands.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == ["bot.commands.liqmap"]


def test_version_and_unknown_command() -> None:
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"cascade {version('cascade')}"
    bad = run_cli("bactest")
    assert bad.returncode == 2 and "Did you mean 'backtest'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("name", [c[0] for c in COMMANDS])
def test_flag_help_has_no_type_placeholders_for_flags(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code in (0, None)
    text = capsys.readouterr().out
    assert "<bool>" not in text and "list[" not in text and "{" not in text.split("\n\n")[0] + text[:400]
    assert f" {name} [OPTIONS]" in " ".join(text.split())


def test_import_data_usage_names_its_argument_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["import-data", "--help"])
    assert " import-data [OPTIONS] PATH " in " ".join(capsys.readouterr().out.split())


# -- bot.progress ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_percentage_and_eta_periodically() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = PlainProgress("estimating", 200, out, interval=5.0, clock=clock)
    clock.now += 1.0
    bar.update(10)  # 5 %, 1 s in: not due yet
    assert out.getvalue() == ""
    clock.now += 5.0
    bar.update(40)  # 20 %, 6 s in: due; ETA = 6 s × 80/20 = 24 s
    assert out.getvalue().splitlines()[-1] == "estimating:  20 % (40/200), 6 s elapsed, ETA 24 s"
    clock.now += 0.5
    bar.update(100)  # crossing 50 % prints even before the interval
    assert out.getvalue().splitlines()[-1].startswith("estimating:  50 % (100/200)")
    clock.now += 60.5
    bar.finish()
    assert out.getvalue().splitlines()[-1] == "estimating: done in 1 min 07 s"


def test_progress_off_a_terminal_is_plain_lines() -> None:
    out = io.StringIO()
    items = list(track(range(8), "steps", stream=out, interval=0.0))
    assert items == list(range(8))
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("steps: done in") and any("ETA" in ln for ln in lines)
    with progress("unknown total", None, stream=out, interval=0.0) as bar:
        bar.advance(3)
    assert "unknown total: 3 done" in out.getvalue()


def test_compile_notice_appears_only_when_numba_compiles() -> None:
    @numba.njit(cache=False)
    def add_one(x: float) -> float:  # a fresh dispatcher: its first call compiles
        return x + 1.0

    out = io.StringIO()
    with compile_notice("the test kernel", stream=out):
        assert add_one(1.0) == 2.0
        assert add_one(2.0) == 3.0
    assert out.getvalue() == "compiling the test kernel (first run only; later runs load numba's cache) …\n"
    again = io.StringIO()
    with compile_notice("the test kernel", stream=again):
        add_one(3.0)  # already compiled in this process
    assert again.getvalue() == ""


def test_nested_compile_notices_print_one_line_the_innermost() -> None:
    @numba.njit(cache=False)
    def twice(x: float) -> float:
        return 2.0 * x

    @numba.njit(cache=False)
    def thrice(x: float) -> float:
        return 3.0 * x

    out = io.StringIO()
    with compile_notice("numba kernels", stream=out):
        with compile_notice("the inner kernel", stream=out):
            twice(1.0)
        thrice(1.0)  # a later compile inside the outer block: already announced
    assert out.getvalue() == "compiling the inner kernel (first run only; later runs load numba's cache) …\n"


def test_compile_notice_does_not_import_numba_but_hears_it_when_imported_inside() -> None:
    import subprocess
    import sys

    code = ("import sys\n"
            "from bot.progress import compile_notice\n"
            "with compile_notice('nothing'):\n"
            "    pass\n"
            "assert 'numba' not in sys.modules\n"
            "with compile_notice('the probe kernel'):\n"
            "    import numba\n"
            "    numba.njit(lambda a: a + 1)(1)\n"
            "assert not [f for f in sys.meta_path if type(f).__name__ == '_WhenImported']\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("compiling the probe kernel (first run only") == 1
    assert "compiling nothing" not in proc.stderr
