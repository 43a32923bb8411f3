"""The ``cascade`` executable: run the command in a warm server when one is up, else in this process.

Only the standard library is imported before that choice (:mod:`bot.warm`); the command line itself
(:mod:`bot.cli`, typer, pandas, …) is imported only when the command runs here.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point (``cascade``, ``python -m bot``)."""
    from bot import warm

    argv = sys.argv[1:]
    if warm.wanted(argv):
        key = warm.identity()
        sock = warm.connect(key)
        if sock is not None:
            status = warm.run_remote(sock, argv)
            sock.close()
            if status is not None:
                warm.exit_with(status)
        else:
            warm.start_server(key)  # imports while this command runs: the next one is served
    from bot.cli import main as cli_main

    cli_main(argv)
