"""The replay exchange: stored data served over Binance USDⓈ-M's REST API with a replay clock."""

from bot.replay.server import FaultConfig, ReplayClock, ReplayServer

__all__ = ["FaultConfig", "ReplayClock", "ReplayServer"]
