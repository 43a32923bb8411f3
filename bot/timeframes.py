"""Timeframe strings (ccxt style: ``1m 5m 15m 1h 4h 8h 1d 1w``) and UTC time parsing."""

from __future__ import annotations

import re

import pandas as pd

from bot.errors import UserError

_UNITS = {"s": "s", "m": "min", "h": "h", "d": "D", "w": "W"}
_PATTERN = re.compile(r"^(\d+)([smhdw])$")


def timeframe_to_timedelta(timeframe: str) -> pd.Timedelta:
    """``"5m"`` -> ``Timedelta(5 minutes)``; raises :class:`UserError` on an unknown form."""
    match = _PATTERN.match(timeframe or "")
    if not match or int(match.group(1)) == 0:
        raise UserError(f"invalid timeframe '{timeframe}'; use forms like 1m, 5m, 15m, 1h, 4h, 8h, 1d")
    return pd.Timedelta(int(match.group(1)), _UNITS[match.group(2)])


def timeframe_ms(timeframe: str) -> int:
    """Timeframe length in milliseconds (the unit ccxt uses at the edge)."""
    return int(timeframe_to_timedelta(timeframe) / pd.Timedelta(1, "ms"))


def parse_utc(value: str | None, what: str = "date") -> pd.Timestamp | None:
    """Parse a user-supplied date/time as UTC (``2025-01-01``, ``2025-01-01T08:00``); ``None``/"" -> None."""
    if value is None or value == "":
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise UserError(f"cannot parse {what} '{value}'; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)") from None
    if ts is pd.NaT:
        raise UserError(f"cannot parse {what} '{value}'; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
