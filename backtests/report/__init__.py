"""Backtest reports: the HTML report and its plot helpers."""
