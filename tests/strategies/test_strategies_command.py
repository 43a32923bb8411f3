"""`cascade strategies`: every registered and user strategy with its parameters, defaults and search space."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bot.cli import main
from strategies import STRATEGIES

REPO = Path(__file__).resolve().parents[2]


def listing(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["strategies", *args])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_lists_registered_and_configured_user_strategies(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(f'[strategies]\npaths = ["{(REPO / "examples" / "ema_cross.py").as_posix()}"]\n')
    code, out, err = listing(capsys, "--config", str(config), "--json")
    assert code == 0, err
    info = {s["name"]: s for s in json.loads(out)}
    assert set(STRATEGIES) | {"ema_cross"} == set(info)
    for name, spec in STRATEGIES.items():
        fields = [f.name for f in dataclasses.fields(spec.Params)]
        assert [p["name"] for p in info[name]["params"]] == fields
        assert info[name]["warmup"] == str(spec.warmup(spec.Params()))
    sr = {p["name"]: p for p in info["sr_levels"]["params"]}
    assert sr["pivot_n"] == {"name": "pivot_n", "type": "int", "default": 5, "search": "int 3 … 10"}
    assert sr["rule"]["search"] == "one of bounce, breakout, retest, all" and sr["window"]["search"] == ""
    assert sr["liqmap"]["default"] == "[liqmap]"
    ema = {p["name"]: p for p in info["ema_cross"]["params"]}
    assert ema["fast"]["default"] == 20 and ema["stop_atr"]["search"] == "float 0 … 4"


def test_one_strategy_as_tables_and_a_bad_reference(capsys):
    code, out, _ = listing(capsys, "funding_reversal")
    assert code == 0 and "funding_reversal" in out and "z_entry" in out and "float 1 … 3" in out
    code, _, err = listing(capsys, "no_such_strategy")
    assert code == 2 and err.strip().startswith("error: unknown strategy 'no_such_strategy'")
