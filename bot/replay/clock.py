"""The replay clock: ``now = start + elapsed wall time × speed`` in epoch milliseconds."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from bot.errors import UserError


class ReplayClock:
    """Replay time in epoch milliseconds: ``start + elapsed wall time × speed`` (speed 0 freezes it)."""

    def __init__(self, start_ms: int, speed: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        if speed < 0 or not math.isfinite(speed):
            raise UserError(f"replay speed must be >= 0, got {speed}")
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._anchor_ms = int(start_ms)
        self._anchor_wall = monotonic()
        self.speed = float(speed)

    def now_ms(self) -> int:
        with self._lock:
            return self._anchor_ms + int((self._monotonic() - self._anchor_wall) * 1000 * self.speed)

    def set(self, ms: int) -> None:
        """Jump to ``ms`` (tests, or a controller driving the replay); the clock keeps running from there."""
        with self._lock:
            self._anchor_ms, self._anchor_wall = int(ms), self._monotonic()

