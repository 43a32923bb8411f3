"""Configuration: `config.toml` loaded once with tomllib into frozen pydantic models.

Unknown keys are rejected with a "did you mean" hint, bad values are reported with their dotted
path (``risk.max_leverage: must be > 0``). Secrets never live in the file: it names the
environment variables that hold them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import UserError
from strategies.features.liqmap_params import LiqMapParams

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
    """Backtest defaults: strategy, engine, period and starting cash (costs live in `CostsConfig`)."""

    strategy: str = "liq_asymmetry"
    engine: Literal["backtrader", "fast"] = "backtrader"
    start: str = Field(default="", alias="from")
    end: str = Field(default="", alias="to")
    initial_cash: float = Field(default=10_000.0, gt=0)
    results_dir: Path = Path("results")
    equity_csv: bool = False  # equity.csv beside equity.parquet (13 MB and ~0.1 s for a year of 5m bars)


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def duration_seconds(value: str) -> int:
    """Return the seconds of a duration written like a timeframe (``"90m"``, ``"24h"``, ``"30d"``)."""
    match = _DURATION.match(value)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"invalid duration {value!r}; use a positive number and a unit s, m, h, d or w "
                         "(e.g. 24h, 30d)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _duration(value: str) -> str:
    duration_seconds(value)
    return value


# a length of time written like a timeframe: "90m", "24h", "30d", "1w"
Duration = Annotated[str, AfterValidator(_duration)]


# the cost defaults, declared once (docs/methods.md §D.3.6: Binance VIP0 taker; 2 bp unless a market says less)
TAKER_FEE = 0.0005
SLIPPAGE_BPS = 2.0


class MarketCosts(_Section):
    """One market's trading costs: taker fee per side on notional, adverse slippage on market fills."""

    taker_fee: float = Field(default=TAKER_FEE, ge=0, lt=0.05)
    slippage_bps: float = Field(default=SLIPPAGE_BPS, ge=0, lt=1000)


class MarketCostsOverride(_Section):
    """A market's entry in ``[costs.markets]``: unset fields take the ``[costs]`` defaults."""

    taker_fee: float | None = Field(default=None, ge=0, lt=0.05)
    slippage_bps: float | None = Field(default=None, ge=0, lt=1000)


def _market_key(symbol: str) -> str:
    # "BTC/USDT:USDT" and "BTCUSDT" name the same market
    return symbol.split(":")[0].replace("/", "").upper()


class CostsConfig(_Section):
    """Fees and slippage per market (docs/methods.md §D.3.6), shared by backtests, paper and live trading.

    ``taker_fee``/``slippage_bps`` apply to every market not listed in ``markets`` (keys: unified
    symbols such as ``"BTC/USDT:USDT"`` or exchange ids such as ``"BTCUSDT"``).
    """

    taker_fee: float = Field(default=TAKER_FEE, ge=0, lt=0.05)
    slippage_bps: float = Field(default=SLIPPAGE_BPS, ge=0, lt=1000)
    markets: dict[str, MarketCostsOverride] = Field(default_factory=lambda: {
        "BTC/USDT:USDT": MarketCostsOverride(slippage_bps=1.0),
        "ETH/USDT:USDT": MarketCostsOverride(slippage_bps=2.0),
    })

    def for_symbol(self, symbol: str | None) -> MarketCosts:
        """Return the costs of ``symbol`` (the defaults when it is None or not listed)."""
        fee, slip = self.taker_fee, self.slippage_bps
        if symbol is not None:
            wanted = _market_key(symbol)
            for key, market in self.markets.items():
                if _market_key(key) == wanted:
                    fee = fee if market.taker_fee is None else market.taker_fee
                    slip = slip if market.slippage_bps is None else market.slippage_bps
                    break
        return MarketCosts(taker_fee=fee, slippage_bps=slip)


class RiskConfig(_Section):
    """Position sizing, stops, leverage caps and protections (bot/risk, bot/core)."""

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
    liquidation_buffer: float = Field(default=0.05, ge=0, lt=1)
    kelly_min_trades: int = Field(default=20, ge=1)
    max_drawdown: float = Field(default=0.25, gt=0, le=1)
    reduce_drawdown: float = Field(default=0.15, gt=0, le=1)
    drawdown_lookback: Duration = "30d"
    halt_duration: Duration = "3d"
    reduce_size_factor: float = Field(default=0.5, gt=0, le=1)
    daily_loss: float = Field(default=0.05, gt=0, le=1)
    cooldown_stopouts: int = Field(default=3, ge=1)
    cooldown: Duration = "24h"

    @model_validator(mode="after")
    def _levels_are_ordered(self) -> RiskConfig:
        if self.reduce_drawdown >= self.max_drawdown:
            raise ValueError(f"reduce_drawdown ({self.reduce_drawdown}) must be below max_drawdown "
                             f"({self.max_drawdown}): REDUCING comes before HALTED")
        return self


class ReplayConfig(_Section):
    """Replay exchange defaults (`cascade replay-server`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    speed: float = Field(default=1.0, ge=0)  # 0 freezes the clock (moved by --clock-control)
    start: str = ""
    state: str = ""                     # account state file (SQLite); empty = in memory
    initial_balance: float = Field(default=10_000.0, gt=0)
    timeframe: str = ""                 # bars the matching engine books; empty = finest with mark data
    read_timeout: float = Field(default=10.0, gt=0)


class RecordConfig(_Section):
    """`cascade record`: venues, symbols and polling of the liquidation recorder."""

    venues: tuple[Literal["binanceusdm", "bybit", "okx"], ...] = ("binanceusdm",)
    symbols: tuple[str, ...] = ("BTC/USDT:USDT", "ETH/USDT:USDT")
    poll_interval: str = "1m"
    flush_seconds: float = Field(default=2.0, gt=0)
    max_backoff_seconds: float = Field(default=60.0, gt=0)
    exchange_url: str = ""
    ws_url: str = ""


class OptimizeConfig(_Section):
    """Defaults for `cascade optimize` (docs/methods.md §E; README "Optimisation")."""

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


class LiveConfig(_Section):
    """Paper and live trading (`cascade paper`, `cascade live`, `cascade status`)."""

    runs_dir: Path = Path("runs")
    settle_seconds: float = Field(default=2.0, ge=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    stale_bars: int = Field(default=1, ge=0)
    error_burst: int = Field(default=5, ge=1)
    halt_file: str = "HALT"
    flatten_on_halt: bool = True
    stop_trigger: Literal["last", "mark"] = "last"
    max_window_bars: int = Field(default=0, ge=0)


class Config(_Section):
    """The whole configuration file."""

    data: DataConfig = DataConfig()
    download: DownloadConfig = DownloadConfig()
    exchange: ExchangeConfig = ExchangeConfig()
    backtest: BacktestConfig = BacktestConfig()
    costs: CostsConfig = CostsConfig()
    risk: RiskConfig = RiskConfig()
    replay: ReplayConfig = ReplayConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    record: RecordConfig = RecordConfig()
    live: LiveConfig = LiveConfig()
    liqmap: LiqMapParams = LiqMapParams()
    """The liquidation-map estimator (``cascade liqmap``, the report, and every strategy that uses it)."""
    strategies: dict[str, Any] = Field(default_factory=dict)
    """``paths`` (user strategy files, relative to the config file) and one table of parameters per
    strategy; each table is checked against the strategy's ``Params`` when the file loads."""

    @field_validator("strategies")
    @classmethod
    def _strategy_tables(cls, value: dict[str, Any]) -> dict[str, Any]:
        out = dict(value)
        paths = out.get("paths", [])
        if not isinstance(paths, (list, tuple)) or not all(isinstance(x, str) for x in paths):
            raise ValueError("strategies.paths must be a list of file paths (strings)")
        if "paths" in out:
            out["paths"] = list(paths)
        for name, table in out.items():
            if name != "paths" and not isinstance(table, dict):
                raise ValueError(f"[strategies.{name}] must be a table of parameters, got {table!r}")
        return out


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
    tables = raw.get("strategies")
    if isinstance(tables, dict) and isinstance(tables.get("paths"), list):  # relative to the config file
        tables["paths"] = [str(p.parent / x) if isinstance(x, str) and not Path(x).is_absolute() else x
                           for x in tables["paths"]]
    cfg = parse_config(raw, source=str(p))
    check_strategy_tables(cfg, source=str(p))
    return cfg


def strategy_registry(cfg: Config) -> dict[str, Any]:
    """The registered strategies plus the user strategies of ``[strategies] paths`` (by name).

    Raises :class:`UserError` with one line naming a broken file.
    """
    from strategies import STRATEGIES, StrategyLoadError, load_strategy

    registry = dict(STRATEGIES)
    for path in cfg.strategies.get("paths", []):
        try:
            spec = load_strategy(path)
        except StrategyLoadError as err:
            raise UserError(f"config [strategies] paths: {err}") from None
        registry[spec.name] = spec
    return registry


def check_strategy_tables(cfg: Config, source: str = "config") -> None:
    """Validate every non-empty ``[strategies.<name>]`` table against that strategy's ``Params``.

    Only imports the strategies when a table has keys, so commands that never backtest stay light.
    """
    tables = {k: v for k, v in cfg.strategies.items() if k != "paths" and v}
    if not tables:
        return
    from strategies import make_params

    registry = strategy_registry(cfg)
    for name, table in tables.items():
        if name not in registry:
            close = difflib.get_close_matches(name, list(registry), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{source}: [strategies.{name}]: unknown strategy{hint}; "
                            f"known: {', '.join(registry)}")
        try:
            make_params(registry[name], table)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(x) for x in first["loc"]) or "?"
            if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                names = [f.name for f in dataclasses.fields(registry[name].Params)]
                close = difflib.get_close_matches(field, names, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise UserError(f"{source}: unknown key 'strategies.{name}.{field}'{hint}; "
                                f"valid: {', '.join(names)}") from None
            raise UserError(f"{source}: strategies.{name}.{field}: {first['msg']}") from None
        except (TypeError, ValueError) as err:
            raise UserError(f"{source}: [strategies.{name}]: {' '.join(str(err).split())}") from None


def with_overrides(config: Config, section: str, **values: Any) -> Config:
    """Return a copy of ``config`` with non-None ``values`` replaced in ``section`` (validated)."""
    changes = {k: v for k, v in values.items() if v is not None}
    if not changes:
        return config
    raw = config.model_dump(by_alias=True)
    fields = type(getattr(config, section)).model_fields
    raw[section].update({(fields[k].alias or k) if k in fields else k: v for k, v in changes.items()})
    return parse_config(raw, source="command line")
