"""`cascade paper`, `cascade live`, `cascade status`, `cascade compare`: trading the core on live prices.

See bot/live (the runner, brokers, state, kill switch) and the README section "Paper and live trading".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from bot.config import load_config, with_overrides
from bot.errors import UserError
from bot.timeframes import parse_utc

_Strategy = Annotated[str | None, typer.Option("--strategy", help="Registered strategy, path/to/file.py or module:NAME.")]
_Param = Annotated[list[str] | None, typer.Option("--param", help="Strategy parameter KEY=VALUE (repeatable).")]
_Run = Annotated[str | None, typer.Option("--run", help="Run name (folder under [live] runs_dir) or path; an existing one resumes.")]
_Config = Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")]


def _overrides(params: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param '{item}' must look like KEY=VALUE, e.g. fast=10")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _trade(*, live: bool, strategy: str | None, params: list[str] | None, run: str | None, exchange_url: str | None,
           replay: bool, sim: bool, start: str | None, end: str | None, max_wakes: int | None, quiet: bool,
           config: Path | None, symbol: str | None, timeframe: str | None) -> None:
    from rich.console import Console

    from backtests.runner import resolve_strategy
    from bot.live.runner import lockstep, run_forever
    from bot.live.secrets import credentials
    from bot.live.session import build

    cfg = with_overrides(load_config(config), "data", symbol=symbol, timeframe=timeframe)
    spec, p = resolve_strategy(cfg, strategy, _overrides(params))
    broker = "sim" if (sim or (not live and not exchange_url and not replay)) else "exchange"
    needs_keys = broker == "exchange" and not (replay and not exchange_url)  # an in-process replay makes its own
    key, secret = credentials(cfg.exchange.api_key_env, cfg.exchange.secret_env, needs_keys)
    t0, t1 = parse_utc(start or "", "--from"), parse_utc(end or "", "--to")
    console = Console(stderr=False)
    from bot.gateway import GatewayError

    try:
        session = build(cfg, spec, p, broker=broker, run=run, start=t0, end=t1, exchange_url=exchange_url,
                        lockstep=replay, api_key=key if needs_keys else None, secret=secret if needs_keys else None,
                        console=console, quiet=quiet)
    except GatewayError as err:
        raise UserError(f"cannot start trading: {err}") from None
    r = session.runner
    try:
        mode = "lock-step replay" if replay else (exchange_url or "the exchange")
        session.log("start", f"{'live' if live else 'paper'} run {session.folder.name}: {spec.name} on "
                             f"{cfg.data.symbol} {cfg.data.timeframe}, {broker} broker, {mode}")
        if replay:
            r.recover(r.next_wake_ms())
            wakes = lockstep(session.server, r, int(r.end_ms))
        else:
            def now() -> int:
                return int(session.gateway.call("fetch time", session.gateway.exchange.fetch_time))

            r.recover(now())
            wakes = run_forever(r, now, poll_seconds=cfg.live.poll_seconds, max_wakes=max_wakes)
        session.log("stop", f"{wakes} wake(s); {len(session.store.trades())} trade(s); folder {session.folder}")
    finally:
        session.close()
    typer.echo(str(session.folder))


def paper(
    strategy: _Strategy = None,
    param: _Param = None,
    run: _Run = None,
    exchange_url: Annotated[str | None, typer.Option("--exchange-url", help="Paper against this exchange (the replay exchange or a testnet) through the gateway.")] = None,
    replay: Annotated[bool, typer.Option("--replay", help="Lock-step: drive a replay exchange's clock bar by bar (needs --from/--to): the one at --exchange-url (started with --clock-control), else one started in process over the stored data.")] = False,
    sim: Annotated[bool, typer.Option("--sim", help="Simulate fills in process even with --exchange-url (prices only from the exchange).")] = False,
    start: Annotated[str | None, typer.Option("--from", help="First traded bar (UTC); default: the next bar.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Stop before this bar (UTC, exclusive); default: run until stopped.")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="Market (default [data] symbol).")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", help="Bar size (default [data] timeframe).")] = None,
    max_wakes: Annotated[int | None, typer.Option("--max-wakes", min=1, help="Stop after this many wakes.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No per-event lines on the terminal (events.jsonl keeps them).")] = False,
    config: _Config = None,
) -> None:
    """Paper-trade a strategy: simulated fills on live prices (default), or orders on a replay/test exchange."""
    _trade(live=False, strategy=strategy, params=param, run=run, exchange_url=exchange_url, replay=replay, sim=sim,
           start=start, end=end, max_wakes=max_wakes, quiet=quiet, config=config, symbol=symbol, timeframe=timeframe)


def live(
    confirm: Annotated[bool, typer.Option("--confirm", help="Really send orders to the exchange with the keys in the environment.")] = False,
    strategy: _Strategy = None,
    param: _Param = None,
    run: _Run = None,
    exchange_url: Annotated[str | None, typer.Option("--exchange-url", help="Another host for the exchange's API (a testnet).")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="Market (default [data] symbol).")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", help="Bar size (default [data] timeframe).")] = None,
    max_wakes: Annotated[int | None, typer.Option("--max-wakes", min=1, help="Stop after this many wakes.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No per-event lines on the terminal.")] = False,
    config: _Config = None,
) -> None:
    """Trade live: real orders through the gateway. Refuses without --confirm."""
    cfg = load_config(config)
    from bot.live.secrets import check_env_names

    check_env_names(cfg.exchange.api_key_env, cfg.exchange.secret_env)
    if not confirm:
        raise UserError("cascade live sends real orders with real money; add --confirm to proceed "
                        "(or use cascade paper)")
    _trade(live=True, strategy=strategy, params=param, run=run, exchange_url=exchange_url, replay=False, sim=False,
           start=None, end=None, max_wakes=max_wakes, quiet=quiet, config=config, symbol=symbol, timeframe=timeframe)


def _folder(cfg: Any, run: str) -> Path:
    p = Path(run)
    for cand in (p, Path(cfg.live.runs_dir) / run):
        if (cand / "state.sqlite").exists():
            return cand
    raise UserError(f"no run folder '{run}' (looked for {p}/state.sqlite and {Path(cfg.live.runs_dir) / run}); "
                    "pass a run name or folder written by cascade paper/live")


def status_data(folder: Path, halt_file: str = "HALT") -> dict[str, Any]:
    """What `cascade status` shows, as JSON-ready data."""
    from bot.live.killswitch import KillSwitch
    from bot.live.store import RunStore

    store = RunStore(folder)
    try:
        meta = store.get("meta", {})
        core = store.load_core()
        tf_ms = int(pd.Timedelta(store.get("meta", {}).get("timeframe", "1h")).total_seconds() * 1000)
        last = store.get("last_bar_ms")
        eq = store.last_equity() or {}
        position = None
        if core is not None and core[0].side != 0:
            pos = core[0]
            position = {"side": "long" if pos.side > 0 else "short", "qty": pos.qty, "entry": pos.entry,
                        "stop": None if math.isnan(pos.stop) else pos.stop,
                        "take_profit": None if math.isnan(pos.take_profit) else pos.take_profit,
                        "liq_price": pos.liq_price}
        halt = KillSwitch(folder, halt_file, 1).reason(store) or ""
        equity = eq.get("equity")  # mark-to-market at the last close, the core's books
        initial = store.get("initial_cash")
        end = meta.get("end_ms")
        finished = end is not None and last is not None and last + tf_ms >= end
        return {
            "run": folder.name, "strategy": meta.get("strategy"), "symbol": meta.get("symbol"),
            "timeframe": meta.get("timeframe"), "broker": meta.get("broker"),
            "state": "HALTED" if halt else store.get("state") or "ACTIVE", "halt_reason": halt or None,
            "position": position,
            "resting": [{"role": r, "order_id": v["order_id"], "price": v["price"], "qty": v["qty"]}
                        for r, v in store.protection().items()],
            "open_orders": [o["cid"] for o in store.orders() if o["status"] in ("sending", "open")],
            "equity": equity, "wallet": eq.get("cash"), "exchange_wallet": eq.get("exchange_equity"),
            "initial": initial,
            "pnl": (equity - initial) if (equity is not None and initial) else None,
            "trades": len(store.trades()),
            "last_bar": None if last is None else pd.Timestamp(last, unit="ms", tz="UTC").isoformat(),
            "next_wake": "finished" if finished else pd.Timestamp(
                (last + 2 * tf_ms) if last is not None else meta.get("start_ms", 0) + tf_ms, unit="ms",
                tz="UTC").isoformat(),
            "events": [{**e, "time": pd.Timestamp(e["time"], unit="s", tz="UTC").isoformat(timespec="seconds")}
                       for e in store.events(10)],
        }
    finally:
        store.close()


def status(
    run: Annotated[str, typer.Argument(help="Run name (under [live] runs_dir) or folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    clear_halt: Annotated[bool, typer.Option("--clear-halt", help="A person clears the halt (file, reason and the core's lock).")] = False,
    config: _Config = None,
) -> None:
    """Show a paper/live run: state, position, resting orders, equity and PnL, last bar, next wake, events."""
    cfg = load_config(config)
    folder = _folder(cfg, run)
    if clear_halt:
        from bot.live.killswitch import KillSwitch
        from bot.live.store import RunStore

        store = RunStore(folder)
        KillSwitch(folder, cfg.live.halt_file, cfg.live.error_burst).clear(store)
        store.put("halt_reason", "")
        store.close()
    data = status_data(folder, cfg.live.halt_file)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{data['run']} · {data['strategy']} · {data['symbol']} {data['timeframe']} · {data['broker']}",
                  show_header=False)
    pos = data["position"]
    rows = [("state", data["state"] + (f" ({data['halt_reason']})" if data["halt_reason"] else "")),
            ("position", "flat" if pos is None else f"{pos['side']} {pos['qty']:g} @ {pos['entry']:.2f} stop "
                                                   f"{pos['stop'] if pos['stop'] is not None else '-'}"),
            ("resting", ", ".join(f"{o['role']} {o['price']} x {o['qty']}" for o in data["resting"]) or "none"),
            ("equity", "-" if data["equity"] is None else f"{data['equity']:.2f} (mark-to-market at the last close)"),
            ("wallet", "-" if data["wallet"] is None else f"{data['wallet']:.2f}" + (
                "" if data["exchange_wallet"] is None else f" (exchange: {data['exchange_wallet']:.2f})")),
            ("pnl", "-" if data["pnl"] is None else f"{data['pnl']:+.2f}"),
            ("trades", str(data["trades"])), ("last bar", str(data["last_bar"])),
            ("next wake", str(data["next_wake"]))]
    for k, v in rows:
        table.add_row(k, v)
    console = Console()
    console.print(table)
    for e in data["events"]:
        console.print(f"{e['time']} {e['kind']:<9} {e['message']}", highlight=False, markup=False)


def _trades_of(folder: Path) -> pd.DataFrame:
    path = folder / "trades.csv"
    if not path.exists():
        raise UserError(f"{folder} has no trades.csv; pass a backtest or paper run folder")
    df = pd.read_csv(path)
    for c in ("entry_time", "exit_time"):
        df[c] = pd.to_datetime(df[c], utc=True)
    # a backtest's trades.csv says long/short, the engines' tables +1/-1
    df["side"] = df["side"].replace({"long": 1, "short": -1}).astype(int)
    return df


def compare_trades(a: pd.DataFrame, b: pd.DataFrame, qty_step: float) -> tuple[list[str], int]:
    """Trade-by-trade lines and the number of differences (entry/exit bar, side, quantity, exit reason).

    Quantities match when they differ by less than ``qty_step`` (an exchange truncates the
    backtest's exact size to its lot step).
    """
    lines, diffs = [], 0
    for i in range(max(len(a), len(b))):
        ta = a.iloc[i] if i < len(a) else None
        tb = b.iloc[i] if i < len(b) else None
        if ta is None or tb is None:
            t = ta if ta is not None else tb
            lines.append(f"#{i + 1:<3} only in {'A' if tb is None else 'B'}: {t['entry_time']} -> {t['exit_time']} "
                         f"side {int(t['side']):+d} qty {t['qty']:g} {t['exit_reason']}")
            diffs += 1
            continue
        bad = [name for name, same in (
            ("entry", ta["entry_time"] == tb["entry_time"]), ("exit", ta["exit_time"] == tb["exit_time"]),
            ("side", int(ta["side"]) == int(tb["side"])), ("qty", abs(float(ta["qty"]) - float(tb["qty"])) < qty_step),
            ("reason", ta["exit_reason"] == tb["exit_reason"])) if not same]
        diffs += bool(bad)
        mark = "ok  " if not bad else "DIFF"
        lines.append(f"#{i + 1:<3} {mark} {ta['entry_time']:%Y-%m-%d %H:%M} -> {ta['exit_time']:%Y-%m-%d %H:%M} "
                     f"side {int(ta['side']):+d} qty {ta['qty']:.6g}/{tb['qty']:.6g} {ta['exit_reason']}"
                     + ("" if not bad else f" | B: {tb['entry_time']:%Y-%m-%d %H:%M} -> "
                        f"{tb['exit_time']:%Y-%m-%d %H:%M} side {int(tb['side']):+d} {tb['exit_reason']} "
                        f"({', '.join(bad)} differ)"))
    return lines, diffs


def compare(
    run_a: Annotated[Path, typer.Argument(help="A run folder (backtest results/<id> or a paper run).")],
    run_b: Annotated[Path, typer.Argument(help="Another run folder.")],
    qty_step: Annotated[float, typer.Option("--qty-step", min=0.0, help="Quantities closer than this match (the exchange's lot step).")] = 0.001,
) -> None:
    """Compare two runs trade by trade (entry/exit bar, side, quantity, exit reason); exit 1 on a difference."""
    lines, diffs = compare_trades(_trades_of(run_a), _trades_of(run_b), qty_step)
    for line in lines:
        typer.echo(line)
    n = max(len(lines), 0)
    typer.echo(f"{n} trade(s) compared, {diffs} difference(s)")
    if diffs:
        raise typer.Exit(1)
