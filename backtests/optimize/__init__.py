"""Optimisation: optuna walk-forward tuning with overfitting gates (docs/methods.md §E).

Modules: :mod:`~backtests.optimize.adapter` (strategies, data, engines: the one seam),
:mod:`~backtests.optimize.folds`, :mod:`~backtests.optimize.objective`,
:mod:`~backtests.optimize.selection` (plateau choice), :mod:`~backtests.optimize.gates` (PSR/DSR,
PBO, MinBTL), :mod:`~backtests.optimize.study` (RDB storage, workers, resume),
:mod:`~backtests.optimize.walkforward` (the orchestration) and :mod:`~backtests.optimize.report`.
"""
