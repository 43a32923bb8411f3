"""`cascade strategies`: the registered and user strategies, their parameters, defaults and search spaces."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bot.config import load_config, strategy_registry
from bot.errors import UserError


def search_space(spec: Any) -> dict[str, str]:
    """``{param: "float 1.0 … 4.0 (log)"}`` from one call of ``spec.suggest`` on an in-memory optuna trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    try:
        spec.suggest(trial)
    except ValueError:
        return {}  # no search space declared
    out = {}
    for name, dist in trial.distributions.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            out[name] = "one of " + ", ".join(map(str, dist.choices))
        else:
            kind = "int" if isinstance(dist, optuna.distributions.IntDistribution) else "float"
            out[name] = f"{kind} {dist.low:g} … {dist.high:g}" + (" (log)" if dist.log else "")
    return out


def describe(spec: Any) -> dict[str, Any]:
    """Name, description, warm-up, and per parameter: type, default, search space (JSON-ready)."""
    hints = typing.get_type_hints(spec.Params)
    defaults = spec.Params()
    space = search_space(spec)
    params = []
    for f in dataclasses.fields(spec.Params):
        value = getattr(defaults, f.name)
        if f.name == "liqmap":  # the estimator's parameters come from the config's [liqmap] section
            shown = "[liqmap]"
        else:
            shown = value if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
        hint = hints[f.name]
        kind = str(hint).replace("typing.", "") if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
        params.append({"name": f.name, "type": kind, "default": shown, "search": space.get(f.name, "")})
    return {"name": spec.name, "description": spec.description, "warmup": str(spec.warmup(defaults)),
            "features": list(spec.feature_params) if spec.features is not None else None, "params": params}


def strategies(
    config: Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")] = None,
    name: Annotated[str | None, typer.Argument(help="Show one strategy: a name, path/to/file.py or module:NAME.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """List registered and user strategies with their parameters, defaults and search spaces."""
    from strategies import StrategyLoadError, load_strategy

    cfg = load_config(config)
    registry = strategy_registry(cfg)
    try:
        specs = [load_strategy(name, registry)] if name else list(registry.values())
    except StrategyLoadError as err:
        raise UserError(str(err)) from None
    info = [describe(s) for s in specs]
    if as_json:
        print(json.dumps(info, default=str))
        return
    console = Console()
    for item in info:
        table = Table(title=f"{item['name']} · warm-up {item['warmup']}", caption=item["description"],
                      title_justify="left", caption_justify="left")
        for col in ("parameter", "type", "default", "search space"):
            table.add_column(col)
        for p in item["params"]:
            table.add_row(p["name"], p["type"], str(p["default"]), p["search"])
        console.print(table)
