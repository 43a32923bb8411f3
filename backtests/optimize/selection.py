"""Choosing a fold's parameters: plateau selection, not the argmax (docs/methods.md §E.1, §E.5 item 7).

Each parameter is placed on ``[0, 1]`` by its optuna distribution (log scale when the distribution is
log, the index for categoricals' neighbours is "same category"). Two trials are **neighbours** when
every numeric parameter is within ``step`` (default 0.1 of its range; at least one integer step) and
every categorical is equal. Among the top ``top_frac`` trials by objective, the chosen one has the
best *mean* objective over its neighbourhood (itself included); ties go to its own value, then to the
lower trial number. ``plateau ratio`` = neighbourhood mean / own value (§E.5 item 7 asks ≥ 0.7).

Multi-objective studies choose, on the Pareto front, the trial with the best return/drawdown ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Choice:
    """The chosen trial of a fold and how robust its neighbourhood is."""

    trial: Any
    value: float
    neighbourhood_mean: float
    n_neighbours: int

    @property
    def plateau_ratio(self) -> float:
        if not (math.isfinite(self.value) and self.value > 0 and math.isfinite(self.neighbourhood_mean)):
            return math.nan
        return self.neighbourhood_mean / self.value


def _position(value: Any, dist: Any) -> float | None:
    """``value`` on [0, 1] of ``dist``; None for categoricals."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return None
    lo, hi = float(dist.low), float(dist.high)
    if hi <= lo:
        return 0.0
    if getattr(dist, "log", False):
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (float(value) - lo) / (hi - lo)


def _min_step(dist: Any, step: float) -> float:
    """The neighbourhood radius on [0, 1]: ``step``, but at least one integer/grid step."""
    grid = getattr(dist, "step", None)
    lo, hi = float(getattr(dist, "low", 0.0)), float(getattr(dist, "high", 1.0))
    if grid and hi > lo and not getattr(dist, "log", False):
        return max(step, float(grid) / (hi - lo) + 1e-12)
    return step


def neighbours(trials: list[Any], i: int, step: float = 0.1) -> list[int]:
    """Indices of ``trials`` in the ±``step`` neighbourhood of ``trials[i]`` (itself included)."""
    me = trials[i]
    out = []
    for j, other in enumerate(trials):
        ok = True
        for name, dist in me.distributions.items():
            if name not in other.params:
                ok = False
                break
            a = _position(me.params[name], dist)
            if a is None:
                if other.params[name] != me.params[name]:
                    ok = False
                    break
                continue
            b = _position(other.params[name], dist)
            if b is None or abs(a - b) > _min_step(dist, step):
                ok = False
                break
        if ok:
            out.append(j)
    return out


def plateau_select(trials: list[Any], top_frac: float = 0.1, step: float = 0.1) -> Choice:
    """Plateau selection over completed single-objective ``trials`` (module docstring).

    Raises:
        ValueError: no completed trial.
    """
    done = [t for t in trials if t.values is not None and len(t.values) == 1]
    if not done:
        raise ValueError("no completed trial to choose from")
    vals = np.array([t.values[0] for t in done], dtype=float)
    order = sorted(range(len(done)), key=lambda i: (-vals[i], done[i].number))
    top = order[:max(1, int(math.ceil(top_frac * len(done))))]
    best: tuple[float, float, int] | None = None
    choice: Choice | None = None
    for i in top:
        nb = neighbours(done, i, step)
        mean = float(np.mean(vals[nb]))
        key = (mean if math.isfinite(mean) else -math.inf, vals[i], -done[i].number)
        if best is None or key > best:
            best, choice = key, Choice(done[i], float(vals[i]), mean, len(nb))
    assert choice is not None
    return choice


def pareto_select(front: list[Any]) -> Choice:
    """On a (return ↑, drawdown ↓) Pareto front: the trial with the best return / drawdown."""
    if not front:
        raise ValueError("empty Pareto front")

    def ratio(t: Any) -> float:
        ret, dd = t.values
        return ret / max(dd, 1e-9)

    chosen = max(front, key=lambda t: (ratio(t), -t.number))
    return Choice(chosen, ratio(chosen), math.nan, 1)
