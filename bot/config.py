"""Configuration: `config.toml` loaded once with tomllib into frozen pydantic models.

Unknown keys are rejected with a "did you mean" hint, bad values are reported with their dotted
path (``risk.max_leverage: must be > 0``). Secrets never live in the file: it names the
environment variables that hold them.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.errors import UserError

DEFAULT_CONFIG_PATH = Path("config.toml")

Kind = Literal["ohlcv", "mark", "funding_rate", "open_interest", "liquidations"]
ALL_KINDS: tuple[str, ...] = ("ohlcv", "mark", "funding_rate", "open_interest", "liquidations")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class DataConfig(_Section):
    """Where data lives and which dataset commands use by default."""

    dir: Path = Path("data")
    use_sample: bool = True
    exchange: str = "binanceusdm"
    symbol: str = "BTC/USDT:USDT"
    timeframe: str = "1h"
    open_interest_source: str = "hyperliquid"


class DownloadConfig(_Section):
    """Defaults for `cascade download`."""

    symbols: tuple[str, ...] = ("BTC/USDT:USDT",)
    timeframe: str = "1h"
    kinds: tuple[Kind, ...] = ("ohlcv", "mark", "funding_rate", "open_interest")
    since: str = "2025-01-01"
    until: str = ""
    exchange_url: str = ""
    max_retries: int = Field(default=6, ge=0)
    backoff_seconds: float = Field(default=1.0, gt=0)


class ExchangeConfig(_Section):
    """Names of the environment variables holding API credentials (never the secrets)."""

    api_key_env: str = "CASCADE_API_KEY"
    secret_env: str = "CASCADE_API_SECRET"


class BacktestConfig(_Section):
    """Backtest defaults: strategy, engine, period and costs (methods.md §D.3.6)."""

    strategy: str = "liq_asymmetry"
    engine: Literal["backtrader", "fast"] = "backtrader"
    start: str = Field(default="", alias="from")
    end: str = Field(default="", alias="to")
    initial_cash: float = Field(default=10_000.0, gt=0)
    taker_fee: float = Field(default=0.0005, ge=0, lt=0.05)
    slippage_bps: float = Field(default=1.0, ge=0, lt=1000)
    results_dir: Path = Path("results")


class RiskConfig(_Section):
    """Position sizing, stops, leverage caps and protections (bot/risk)."""

    sizing: Literal["risk_per_trade", "fixed_fraction", "volatility_target", "kelly"] = "risk_per_trade"
    risk_per_trade: float = Field(default=0.01, gt=0, le=0.2)
    fixed_fraction: float = Field(default=0.5, gt=0, le=10)
    vol_target: float = Field(default=0.5, gt=0, le=10)
    kelly_fraction: float = Field(default=0.25, gt=0, le=1)
    kelly_cap: float = Field(default=0.25, gt=0, le=1)
    max_leverage: float = Field(default=5.0, gt=0, le=125)
    stop: Literal["strategy", "fixed_pct", "atr", "trailing_atr"] = "strategy"
    stop_pct: float = Field(default=0.02, gt=0, lt=1)
    atr_period: int = Field(default=14, ge=1)
    atr_mult: float = Field(default=2.0, gt=0)
    max_drawdown: float = Field(default=0.25, gt=0, le=1)
    reduce_drawdown: float = Field(default=0.15, gt=0, le=1)
    daily_loss: float = Field(default=0.05, gt=0, le=1)
    cooldown_stopouts: int = Field(default=3, ge=1)
    cooldown_bars: int = Field(default=24, ge=0)


class ReplayConfig(_Section):
    """Replay exchange defaults (`cascade replay-server`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    speed: float = Field(default=1.0, gt=0)
    start: str = ""


class OptimizeConfig(_Section):
    """Defaults for `cascade optimize` (methods.md §E; README "Optimisation")."""

    trials: int = Field(default=100, ge=1)
    objective: str = "sharpe"
    min_trades: int = Field(default=15, ge=0)
    seed: int = Field(default=0, ge=0)
    engine: Literal["backtrader", "fast"] = "fast"
    walk_forward: bool = True
    anchored: bool = False
    is_days: float = Field(default=180.0, gt=0)
    oos_days: float = Field(default=30.0, gt=0)
    step_days: float = Field(default=30.0, gt=0)
    embargo_days: float = Field(default=3.0, ge=0)
    sub_blocks: int = Field(default=3, ge=1, le=50)
    prune: bool = False
    dd_weight: float = Field(default=1.0, ge=0)
    top_frac: float = Field(default=0.1, gt=0, le=1)
    plateau_step: float = Field(default=0.1, gt=0, le=1)
    pbo_blocks: int = Field(default=16, ge=2, le=20)
    minbtl_sharpe: float = Field(default=1.0, gt=0)
    workers: int = Field(default=1, ge=1, le=256)
    storage: str = ""
    results_dir: Path = Path("results/optimize")
    check_engine: Literal["backtrader", "fast", ""] = "backtrader"


class Config(_Section):
    """The whole configuration file."""

    data: DataConfig = DataConfig()
    download: DownloadConfig = DownloadConfig()
    exchange: ExchangeConfig = ExchangeConfig()
    backtest: BacktestConfig = BacktestConfig()
    risk: RiskConfig = RiskConfig()
    replay: ReplayConfig = ReplayConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    liqmap: dict[str, Any] = Field(default_factory=dict)
    strategies: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("liqmap", "strategies")
    @classmethod
    def _plain_tables(cls, value: dict[str, Any]) -> dict[str, Any]:
        return dict(value)


def _model_for_path(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose fields are valid at ``loc`` (the parent of an offending key)."""
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None) if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line: the first problem with its dotted path and, for unknown keys, a hint."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    path = ".".join(str(p) for p in loc)
    if first["type"] == "extra_forbidden":
        model = _model_for_path(loc[:-1])
        hint = ""
        if model is not None:
            close = difflib.get_close_matches(str(loc[-1]), _field_names(model), n=1)
            if close:
                parent = ".".join(str(p) for p in loc[:-1])
                hint = f" (did you mean '{parent + '.' if parent else ''}{close[0]}'?)"
        return f"{source}: unknown key '{path}'{hint}; remove or rename it"
    msg = first["msg"]
    msg = msg[0].lower() + msg[1:] if msg else msg
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"{source}: {path}: {msg}{more}"


def parse_config(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a parsed TOML document into a frozen :class:`Config`."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, source)) from None


def load_config(path: Path | str | None = None) -> Config:
    """Load ``path`` (default ``./config.toml``; built-in defaults when that file is absent).

    Raises :class:`UserError` naming the file, the dotted key and the fix.
    """
    explicit = path is not None
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not p.exists():
        if explicit:
            raise UserError(f"config file {p} not found; pass an existing file to --config")
        return Config()
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{p}: not valid TOML ({err}); fix the syntax") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{p}: cannot read ({err})") from None
    return parse_config(raw, source=str(p))


def with_overrides(config: Config, section: str, **values: Any) -> Config:
    """Return a copy of ``config`` with non-None ``values`` replaced in ``section`` (validated)."""
    changes = {k: v for k, v in values.items() if v is not None}
    if not changes:
        return config
    raw = config.model_dump(by_alias=True)
    fields = type(getattr(config, section)).model_fields
    raw[section].update({(fields[k].alias or k) if k in fields else k: v for k, v in changes.items()})
    return parse_config(raw, source="command line")
