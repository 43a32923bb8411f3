"""The ``cascade`` command line: one entry point, one subcommand per job.

Subcommands are loaded lazily: ``cascade --help`` reads each command's one-line help from its
module's source (no import), and only the module of the command being run is imported. So
``cascade liqmap`` never imports ccxt, and ``cascade --help`` starts in a fraction of a second.

User errors (:class:`bot.errors.UserError`) print one line on stderr and exit with code 2;
nothing else is caught, so a bug still shows its traceback.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import importlib.util
import sys
from functools import cache
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from bot import aot, interrupts
from bot.allocators import use_system_pool_for_arrow
from bot.atomic import os_error
from bot.errors import UserError

# (command name, module, function): the explicit list of subcommands.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("download", "bot.commands.download", "download"),
    ("import-data", "bot.commands.data", "import_data"),
    ("data-info", "bot.commands.data", "data_info"),
    ("backtest", "bot.commands.backtest", "backtest"),
    ("optimize", "bot.commands.optimize", "optimize"),
    ("liqmap", "bot.commands.liqmap", "liqmap"),
    ("replay-server", "bot.commands.replay", "replay_server"),
    ("strategies", "bot.commands.strategies", "strategies"),
    ("record", "bot.commands.record", "record"),
    ("paper", "bot.commands.paper", "paper"),
    ("live", "bot.commands.paper", "live"),
    ("status", "bot.commands.paper", "status"),
    ("compare", "bot.commands.paper", "compare"),
    ("warm", "bot.commands.warm", "warm"),
)


def cascade_version() -> str:
    """The installed distribution's version (the source tree's when not installed)."""
    from importlib.metadata import PackageNotFoundError, version  # ~20 ms: only for --version

    try:
        return version("cascade")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


@cache
def short_help(module: str, func: str) -> str:
    """First line of ``module.func``'s docstring, read from the source without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    try:
        with open(spec.origin, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=spec.origin)
    except (OSError, SyntaxError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == func:
            doc = ast.get_docstring(node) or ""
            return doc.strip().splitlines()[0] if doc.strip() else ""
    return ""


def _tidy_param(param: Any) -> None:
    """Plain metavars: none on flags (typer shows ``<bool>``), the element type on repeatable
    options (``<str>``, not ``<list[str]>``), upper-case names on arguments."""
    if isinstance(param, TyperOption):
        if param.is_flag:
            param.metavar = ""
        elif param.multiple and param.metavar is None:
            bare = param.bare_type()
            param.metavar = "<" + (bare[5:-1] if bare.startswith("list[") else bare) + ">"
    elif isinstance(param, TyperArgument) and param.metavar is None and param.name:
        param.metavar = param.name.upper()


class TidyCommand(TyperCommand):
    """typer's command with conventional help: ``Usage: cascade import-data [OPTIONS] PATH``."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            _tidy_param(param)
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "ARG").upper()
                pieces.append((name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else ""))
        return pieces


def _with_compile_notice(fn: Any) -> Any:
    """``fn`` run inside `bot.progress.compile_notice`, so a first run that compiles numba kernels says
    why it is slow (the notice imports no numba: it listens once something else imports it)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        from bot.progress import compile_notice

        with compile_notice():
            return fn(*args, **kwargs)

    return run


@cache
def load_command(name: str) -> Any:
    """Import the module of subcommand ``name`` and build its click command (with typer)."""
    for cmd_name, module, func in COMMANDS:
        if cmd_name == name:
            fn = _with_compile_notice(getattr(importlib.import_module(module), func))
            single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            single.command(name, cls=TidyCommand)(fn)
            return typer.main.get_command(single)
    raise KeyError(name)


class LazyGroup(TyperGroup):
    """A click group whose subcommands are imported only when one of them runs (or shows --help)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [name for name, _, _ in COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in {name for name, _, _ in COMMANDS}:
            return None
        return load_command(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # one-line help from the source: listing the commands must not import them
        rows = [(name, short_help(module, func)) for name, module, func in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except typer.BadParameter:
            raise
        except Exception as err:  # click's UsageError (typer vendors click): add a suggestion
            message = getattr(err, "message", None)
            close = difflib.get_close_matches(args[0], self.list_commands(ctx), n=1) if args else []
            if message is not None and close and "Did you mean" not in message:
                err.message = f"{message.rstrip('.')}. Did you mean '{close[0]}'?"
            raise


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cascade {cascade_version()}")
        raise typer.Exit()


app = typer.Typer(
    name="cascade",
    cls=LazyGroup,
    help="Backtest and trade crypto perpetual futures on liquidation maps, funding reversals and levels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain root help: rich's would cost its import on every --help
)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version_callback,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Backtest and trade crypto perpetual futures on liquidation maps, funding reversals and levels."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. Bad flags are click's usage errors (exit 2).

    A :class:`UserError` prints one line and exits 2; SIGINT/SIGTERM print ``interrupted`` and
    exit 130/143 after the atomic writers removed their temporaries (bot/interrupts.py); an
    ``OSError`` nobody translated (disk full, read-only, missing path) is still one line, exit 2.
    """
    interrupts.install()
    use_system_pool_for_arrow()
    aot.install()  # strategy kernels run precompiled: a backtest process never imports numba
    try:
        app(args=argv)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except OSError as err:
        typer.echo(f"error: {os_error(err, err.filename or '(unknown path)', 'accessing')}", err=True)
        sys.exit(2)
    except SystemExit as err:
        if err.code == interrupts.EXIT_SIGINT:  # typer's exit on KeyboardInterrupt, silent by itself
            typer.echo("interrupted", err=True)
        raise
    except (KeyboardInterrupt, interrupts.Interrupted, SystemError) as err:
        code = interrupts.exit_code_for(err)
        if code is None:
            raise
        typer.echo("interrupted", err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
