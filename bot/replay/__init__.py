"""The replay exchange: stored data served over Binance USDⓈ-M's REST API with a replay clock."""

from bot.replay.clock import ReplayClock
from bot.replay.faults import FAULT_KINDS, TRADE_FAULT_KINDS, FaultConfig, TradeFaults
from bot.replay.server import ReplayServer

__all__ = ["FAULT_KINDS", "TRADE_FAULT_KINDS", "FaultConfig", "ReplayClock", "ReplayServer", "TradeFaults"]
