"""Fault injection: transport faults on any request, trading faults on the account.

Transport faults (:class:`FaultConfig`) hit a random share of all requests. Trading faults
(:class:`TradeFaults`) are what makes order handling hard; each is switched on per test with
:meth:`TradeFaults.arm` (the next ``count`` occurrences) or by a rate (a random share):

``lost_reply``      an order placement is *accepted* (booked, filled) but the connection is then
                    closed without a reply, as when a read times out after the exchange acted
``status_unknown``  the order is accepted and the reply is HTTP 408 ``-1007`` "execution status
                    unknown" (ccxt: ``RequestTimeout``)
``delayed_fill``    a market order is accepted as ``NEW`` and fills ``fill_delay_ms`` of replay time
                    later, at the price then
``reject_margin``   an order placement is refused with ``-2019`` "Margin is insufficient."
``vanish_stop``     at the next processed bar, the resting conditional orders of a symbol are
                    cancelled by the exchange (status ``EXPIRED``)
``liquidate``       at the next processed bar, the open position is liquidated by the exchange
                    (its whole isolated margin is lost, as a real liquidation books it)
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from bot.errors import UserError

FAULT_KINDS: tuple[str, ...] = ("429", "5xx", "drop", "slow")
TRADE_FAULT_KINDS: tuple[str, ...] = ("lost_reply", "status_unknown", "delayed_fill", "reject_margin",
                                      "vanish_stop", "liquidate")


@dataclass(frozen=True)
class FaultConfig:
    """Fault injection: on a ``rate`` share of requests, one of ``kinds`` chosen at random.

    ``429``  status 429, ``Retry-After: retry_after``, body -1003 (ccxt: DDoSProtection)
    ``5xx``  502/503/504 with an HTML body, as a gateway sends (ExchangeNotAvailable/RequestTimeout)
    ``drop`` the connection is closed without any response (NetworkError)
    ``slow`` the normal response, after ``slow_seconds``
    """

    rate: float = 0.0
    seed: int | None = None
    kinds: tuple[str, ...] = FAULT_KINDS
    slow_seconds: float = 2.0
    retry_after: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise UserError(f"fault rate must be within [0, 1], got {self.rate}")
        unknown = [k for k in self.kinds if k not in FAULT_KINDS]
        if unknown or not self.kinds:
            raise UserError(f"unknown fault kind(s) {unknown or '(none)'}; use some of {', '.join(FAULT_KINDS)}")
        if self.slow_seconds < 0 or self.retry_after < 0:
            raise UserError("slow_seconds and retry_after must be >= 0")


class FaultPicker:
    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._armed: list[str] = []

    def arm(self, kind: str, count: int = 1) -> None:
        """Make the next ``count`` requests fail with ``kind`` (a burst), whatever the rate."""
        if kind not in FAULT_KINDS:
            raise UserError(f"unknown fault kind '{kind}'; use one of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._armed.extend([kind] * int(count))

    def pick(self) -> tuple[str | None, int]:
        """(fault kind or None, gateway status for 5xx)."""
        with self._lock:
            if self._armed:
                return self._armed.pop(0), self._rng.choice((502, 503, 504))
        if self.config.rate <= 0:
            return None, 0
        with self._lock:
            if self._rng.random() >= self.config.rate:
                return None, 0
            return self._rng.choice(self.config.kinds), self._rng.choice((502, 503, 504))


class TradeFaults:
    """Trading faults, switchable per test (module docstring).

    ``rates``          kind -> share of occurrences that fail (random, from ``seed``)
    ``fill_delay_ms``  replay-time delay of a ``delayed_fill``
    """

    def __init__(self, rates: dict[str, float] | None = None, seed: int | None = None,
                 fill_delay_ms: int = 60_000) -> None:
        rates = dict(rates or {})
        unknown = [k for k in rates if k not in TRADE_FAULT_KINDS]
        if unknown:
            raise UserError(f"unknown trading fault(s) {unknown}; use some of {', '.join(TRADE_FAULT_KINDS)}")
        if any(not 0.0 <= r <= 1.0 for r in rates.values()):
            raise UserError("trading fault rates must be within [0, 1]")
        if fill_delay_ms < 0:
            raise UserError("fill_delay_ms must be >= 0")
        self.rates = rates
        self.fill_delay_ms = int(fill_delay_ms)
        self._armed: dict[str, int] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def arm(self, kind: str, count: int = 1) -> None:
        """Make the next ``count`` occurrences of ``kind`` faulty."""
        if kind not in TRADE_FAULT_KINDS:
            raise UserError(f"unknown trading fault '{kind}'; use one of {', '.join(TRADE_FAULT_KINDS)}")
        with self._lock:
            self._armed[kind] = self._armed.get(kind, 0) + int(count)

    def clear(self) -> None:
        """Disarm everything (rates stay)."""
        with self._lock:
            self._armed.clear()

    def take(self, kind: str) -> bool:
        """Whether this occurrence of ``kind`` fails (consumes one armed fault first)."""
        with self._lock:
            if self._armed.get(kind, 0) > 0:
                self._armed[kind] -= 1
                return True
            rate = self.rates.get(kind, 0.0)
            return rate > 0 and self._rng.random() < rate
