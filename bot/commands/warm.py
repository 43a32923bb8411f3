"""`cascade warm`: the warm servers that run short commands without the import wait (bot/warm.py)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer


def warm(
    stop: Annotated[bool, typer.Option("--stop", help="Stop every warm server of this user.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the servers as JSON.")] = False,
) -> None:
    """List (or stop) the warm servers that run backtest, liqmap and strategies without the import wait."""
    from bot import warm as warm_start

    found = warm_start.servers()
    if stop:
        for info in found:
            warm_start.control(info["key"], "stop")
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not warm_start.enabled():
        typer.echo("warm start is off (CASCADE_WARM=0): every command imports in its own process")
    if not found:
        typer.echo("no warm server runs; the next backtest, liqmap or strategies command starts one")
        return
    for info in found:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
        verb = "stopping" if stop else "serving"
        last = "" if info["last_peak_rss_mib"] is None else f", last command's peak {info['last_peak_rss_mib']:.0f} MiB"
        typer.echo(f"pid {info['pid']}: {verb} {info['checkout']} since {started}, {info['served']} commands run, "
                   f"{info['running']} running, idle {info['idle_s']:.0f} s, {info['rss_mib'] or 0:.0f} MiB resident{last}")
