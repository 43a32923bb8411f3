"""``cascade`` with the bench's EMA(20/50) strategy registered: ``python bench/_cascade_with_ema.py backtest ...``.

Only a stand-in for ``cascade backtest --strategy examples/ema_cross.py`` while the command cannot
load strategy files; the command path after registration is the real one (``bot.cli.main``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ema_cross  # noqa: E402

import strategies  # noqa: E402
from bot.cli import main  # noqa: E402

strategies.STRATEGIES["ema_cross"] = ema_cross
main(sys.argv[1:])
