"""The integer codes the core writes into its outputs, and their names (no numba here).

Exit reasons (`bot.risk.execution`) and risk states (`bot.risk.protections`) travel through the
compiled kernels as small integers; the result tables turn them back into names with
:data:`EXIT_REASONS` and :data:`STATE_NAMES`.

>>> EXIT_REASONS[EXIT_LIQUIDATION], STATE_NAMES[HALTED], TradingState(REDUCING).name
('liquidation', 'HALTED', 'REDUCING')
"""

from __future__ import annotations

from enum import IntEnum

EXIT_NONE = 0
EXIT_SIGNAL = 1
EXIT_STOP = 2
EXIT_TAKE_PROFIT = 3
EXIT_LIQUIDATION = 4
EXIT_END = 5
EXIT_PROTECTION = 6
EXIT_REASONS = ("none", "signal", "stop", "take_profit", "liquidation", "end", "protection")

ACTIVE = 0
REDUCING = 1
HALTED = 2
STATE_NAMES = ("ACTIVE", "REDUCING", "HALTED")


class TradingState(IntEnum):
    """The risk state codes, named."""

    ACTIVE = ACTIVE
    REDUCING = REDUCING
    HALTED = HALTED
