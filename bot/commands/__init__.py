"""One module per ``cascade`` subcommand; :mod:`bot.cli` registers them."""
