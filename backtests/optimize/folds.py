"""Walk-forward folds: in-sample / embargo / out-of-sample windows (docs/methods.md §E.1).

Windows are half-open bar ranges ``[start, stop)`` of positions into the loaded frame. Rolling folds
move the whole in-sample window by ``step``; anchored folds keep the first in-sample bar. The first
in-sample bar is the first bar with a valid signal (after the strategy's warm-up), so no fold tunes
on bars where the strategy cannot trade. The embargo bars between in-sample and out-of-sample are
used by neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold (positions into the frame; ``oos_*`` are None without walk-forward)."""

    k: int
    is_start: int
    is_stop: int
    oos_start: int | None
    oos_stop: int | None

    def as_dict(self, index: pd.DatetimeIndex) -> dict[str, object]:
        """Times of the windows (bar opens; stops exclusive) for reports and study metadata."""

        def at(pos: int | None) -> str | None:
            if pos is None:
                return None
            return str(index[pos]) if pos < len(index) else str(index[-1] + (index[-1] - index[-2]))

        return {"fold": self.k, "is_from": at(self.is_start), "is_to": at(self.is_stop),
                "oos_from": at(self.oos_start), "oos_to": at(self.oos_stop)}


def make_folds(index: pd.DatetimeIndex, first: int, is_days: float, oos_days: float, step_days: float,
               embargo_days: float, anchored: bool = False, start: pd.Timestamp | None = None) -> list[Fold]:
    """Folds over ``index[first:]`` (``first`` = first valid signal bar; ``start`` may move it later).

    Raises:
        ValueError: when not even one fold fits, naming the span the data allows.
    """
    if min(is_days, oos_days, step_days) <= 0 or embargo_days < 0:
        raise ValueError("in-sample, out-of-sample and step lengths must be > 0 and the embargo >= 0")
    t0 = index[first]
    if start is not None and start > t0:
        t0 = start
    end = index[-1] + (index[-1] - index[-2])
    need = pd.Timedelta(days=is_days + embargo_days + oos_days)
    folds: list[Fold] = []
    k = 0
    while True:
        is_from = t0 if anchored else t0 + k * pd.Timedelta(days=step_days)
        is_to = t0 + pd.Timedelta(days=is_days) + k * pd.Timedelta(days=step_days)
        oos_from = is_to + pd.Timedelta(days=embargo_days)
        oos_to = oos_from + pd.Timedelta(days=oos_days)
        if oos_to > end:
            break
        pos = index.searchsorted([is_from, is_to, oos_from, oos_to])
        folds.append(Fold(k, int(pos[0]), int(pos[1]), int(pos[2]), int(pos[3])))
        k += 1
    if not folds:
        span = (end - t0) / DAY
        raise ValueError(
            f"walk-forward needs {need / DAY:g} days (in-sample {is_days:g} + embargo {embargo_days:g} + "
            f"out-of-sample {oos_days:g}) after the warm-up, but the data from {t0:%Y-%m-%d} to {end:%Y-%m-%d} "
            f"spans {span:.0f} days; shorten --is-days/--oos-days, load more data, or pass --no-walk-forward")
    return folds


def whole_range(index: pd.DatetimeIndex, first: int, start: pd.Timestamp | None = None) -> list[Fold]:
    """One in-sample window over everything after the warm-up (``--no-walk-forward``)."""
    lo = first if start is None else max(first, int(index.searchsorted(start)))
    if lo >= len(index) - 2:
        raise ValueError("no bars left after the strategy's warm-up; load more data or move --from earlier")
    return [Fold(0, lo, len(index), None, None)]


def sub_blocks(start: int, stop: int, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous, near-equal bar ranges covering ``[start, stop)``."""
    edges = [start + (stop - start) * i // n for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n) if edges[i + 1] > edges[i]]
