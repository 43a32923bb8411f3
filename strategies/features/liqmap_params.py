"""The liquidation-map estimator's parameters (docs/methods.md §A.3), light enough for the config to import.

Re-exported by :mod:`strategies.features.liquidation_map`, which holds the estimator itself.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DEFAULT_TIERS", "N_FEATURES", "LiqMapParams"]

N_FEATURES = 19
"""Columns of the estimator's per-bar feature matrix (`liquidation_map.FEATURE_COLUMNS`)."""

DEFAULT_TIERS: tuple[tuple[float, float], ...] = ((5.0, 0.15), (10.0, 0.30), (25.0, 0.25), (50.0, 0.20), (100.0, 0.10))
"""(leverage, weight) pairs of the default leverage mix (docs/methods.md §A.3)."""


class LiqMapParams(BaseModel):
    """Parameters of the liquidation-map estimator (docs/methods.md §A.3 defaults).

    Percent fields (``*_pct``) are in percent. ``kernel_h`` and ``dense_quantile`` are fractions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tiers: tuple[tuple[float, float], ...] = DEFAULT_TIERS
    """(leverage, weight) pairs; weights are normalised to sum 1."""
    mmr: float = Field(default=0.004, ge=0.0, lt=0.5)
    """Maintenance margin rate m of the first bracket (§D.2)."""
    half_life_days: float = Field(default=14.0, gt=0.0)
    """Half-life of the exponential decay (``inf`` disables it)."""
    window_days: float = Field(default=30.0, gt=0.0)
    """W_map: lots older than this are dropped (``inf`` keeps them)."""
    bucket_pct: float = Field(default=0.1, gt=0.0, le=5.0)
    """Log-grid bin width in percent."""
    kappa: float = Field(default=1.0, ge=0.0)
    """Side-split sharpness κ; κ = 1 gives w_L = taker-buy share."""
    side_rule: Literal["body", "colour"] = "body"
    """Side split without taker volume: soft candle-body rule or hard candle colour."""
    funding_tilt: bool = True
    """Tilt w_L by excess funding (§A.3 step 4)."""
    funding_tilt_max: float = Field(default=0.20, ge=0.0, le=1.0)
    funding_tilt_scale: float = Field(default=5000.0, ge=0.0)
    funding_baseline: float = 0.0001
    """Baseline 8 h funding rate that adds no tilt."""
    funding_interval_hours: float | None = Field(default=None, gt=0.0)
    """Funding interval; None infers it from the settlements seen so far."""
    removal: Literal["side_aware", "proportional"] = "side_aware"
    removal_scale: Literal["relative", "absolute"] = "relative"
    """Remove R USD from the map, or the fraction R/OI of the map (see step 4)."""
    close_share: float = Field(default=0.7, ge=0.0, le=1.0)
    """Side-aware removal: share of the residual closed by the side the bar moved against."""
    volume_oi_fraction: float = Field(default=0.03, gt=0.0, le=1.0)
    """Without any open interest: share of bar volume treated as new interest."""
    entry_price: Literal["hlc3", "close"] = "hlc3"
    range_pct: float = Field(default=25.0, ge=20.0, le=200.0)
    """Grid margin around the data's price range and the feature/cluster window around price."""
    kernel_h: float = Field(default=0.03, gt=0.0)
    """Pull kernel scale h of K(d) = exp(-d/h)."""
    dense_quantile: float = Field(default=0.9, ge=0.0, le=1.0)

    @field_validator("tiers")
    @classmethod
    def _check_tiers(cls, tiers: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        if not tiers:
            raise ValueError("at least one (leverage, weight) tier is needed")
        for lev, w in tiers:
            if not (lev > 1.0 and math.isfinite(lev)):
                raise ValueError(f"leverage must be a finite number > 1, got {lev}")
            if not (w >= 0.0 and math.isfinite(w)):
                raise ValueError(f"tier weight must be finite and >= 0, got {w}")
        if sum(w for _, w in tiers) <= 0.0:
            raise ValueError("tier weights sum to 0")
        return tiers

    @model_validator(mode="after")
    def _check_grid(self) -> LiqMapParams:
        lev_min = min(lev for lev, _ in self.tiers)
        if (1.0 - 1.0 / lev_min) / (1.0 - self.mmr) <= 0.0:
            raise ValueError("tiers/mmr put a long liquidation price at or below 0")
        return self
