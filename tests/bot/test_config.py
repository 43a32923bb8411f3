"""Config: defaults, dotted-path errors, did-you-mean hints, overrides, CLI exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.config import Config, load_config, parse_config, with_overrides
from bot.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_config_equals_model_defaults():
    # config.toml documents the defaults: loading it must give exactly the built-in values
    assert load_config(ROOT / "config.toml").model_dump(exclude={"strategies"}) == \
        Config().model_dump(exclude={"strategies"})


def test_unknown_key_has_did_you_mean_hint():
    with pytest.raises(UserError) as err:
        parse_config({"risk": {"max_levrage": 3}}, "config.toml")
    assert str(err.value) == ("config.toml: unknown key 'risk.max_levrage' (did you mean 'risk.max_leverage'?); "
                              "remove or rename it")


def test_unknown_section_hint():
    with pytest.raises(UserError, match=r"unknown key 'bactest' \(did you mean 'backtest'\?\)"):
        parse_config({"bactest": {}})


def test_bad_value_reports_dotted_path():
    with pytest.raises(UserError, match=r"^config: risk.max_leverage: input should be greater than 0$"):
        parse_config({"risk": {"max_leverage": 0}})


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(ValidationError):
        cfg.risk.max_leverage = 3  # type: ignore[misc]


def test_overrides_are_validated_and_use_aliases():
    cfg = with_overrides(Config(), "backtest", start="2025-03-01", engine="fast", end=None)
    assert cfg.backtest.start == "2025-03-01" and cfg.backtest.engine == "fast" and cfg.backtest.end == ""
    with pytest.raises(UserError, match="backtest.engine"):
        with_overrides(Config(), "backtest", engine="zipline")


def test_missing_explicit_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("text,fragment", [
    ("[risk]\nmax_leverage = -1\n", "risk.max_leverage"),
    ("[risk\nmax_leverage = 1\n", "not valid TOML"),
    ("[data]\nsymbl = 'x'\n", "did you mean 'data.symbol'"),
])
def test_cli_exits_2_with_one_line(tmp_path, text, fragment):
    bad = tmp_path / "config.toml"
    bad.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "bot", "data-info", "--config", str(bad)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr
