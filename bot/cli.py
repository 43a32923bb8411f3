"""The ``cascade`` command line: one entry point, one subcommand per job.

User errors (:class:`bot.errors.UserError`) print one line on stderr and exit with code 2;
nothing else is caught, so a bug still shows its traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from bot.errors import UserError

app = typer.Typer(
    name="cascade",
    help="Backtest and trade crypto perpetual futures on liquidation maps, funding reversals and levels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (command name, module, function): the explicit list of subcommands.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("download", "bot.commands.download", "download"),
    ("import-data", "bot.commands.data", "import_data"),
    ("data-info", "bot.commands.data", "data_info"),
    ("backtest", "bot.commands.backtest", "backtest"),
    ("liqmap", "bot.commands.liqmap", "liqmap"),
    ("replay-server", "bot.commands.replay", "replay_server"),
    ("strategies", "bot.commands.strategies", "strategies"),
    ("paper", "bot.commands.paper", "paper"),
    ("live", "bot.commands.paper", "live"),
    ("status", "bot.commands.paper", "status"),
    ("compare", "bot.commands.paper", "compare"),
)

for _name, _module, _func in COMMANDS:
    app.command(_name)(getattr(importlib.import_module(_module), _func))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. Bad flags are click's usage errors (exit 2)."""
    try:
        app(args=argv)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
