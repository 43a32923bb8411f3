"""Optimisation output: the JSON summary, the config fragment, ``--write-config``, the HTML report.

The report is one offline HTML file: plotly.js is embedded once, followed by optuna's own plotly
figures (optimisation history, parameter importances, parallel coordinates, slices; the Pareto front
for ``return,drawdown``) of the last fold's study, the stitched out-of-sample equity curve, the fold
table, the engine cross-check and the gates.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import tomlkit

from backtests.metrics import json_safe
from backtests.optimize.walkforward import Outcome


def fold_rows(outcome: Outcome) -> list[dict[str, Any]]:
    """One row per fold: windows, trials, chosen objective, plateau, IS/OOS numbers, WFE, PBO."""
    rows = []
    for o in outcome.folds:
        d = o.fold.as_dict(outcome.index)
        d.update({"trials": o.n_trials, "pruned": o.n_pruned, "chosen_trial": o.choice.trial.number,
                  "objective": o.choice.value, "plateau_ratio": o.choice.plateau_ratio,
                  "sensitivity": o.sensitivity,
                  "is_cagr": o.is_run.ann_return, "is_sharpe": o.is_run.sharpe,
                  "oos_cagr": o.oos_run.ann_return if o.oos_run else None,
                  "oos_sharpe": o.oos_run.sharpe if o.oos_run else None,
                  "oos_trades": o.oos_run.n_trades if o.oos_run else None,
                  "wfe": o.wfe(), "pbo": o.pbo.pbo if o.pbo else None, "params": o.params})
        rows.append(d)
    return rows


def summary(outcome: Outcome, check: dict[str, Any], study: str, storage: str, run_dir: Path | None,
            strategy: str) -> dict[str, Any]:
    """The ``--json`` line (best_params, n_trials, oos_sharpe, wfe, dsr, pbo, gates, ...)."""
    m = outcome.metrics
    return json_safe({
        "strategy": strategy, "study": study, "storage": storage, "run_dir": str(run_dir) if run_dir else None,
        "best_params": outcome.best_params, "n_trials": outcome.n_trials, "n_trials_eff": outcome.n_trials_eff,
        "oos_sharpe": m.get("oos_sharpe"), "wfe": m.get("wfe"), "dsr": m.get("dsr"), "dsr_neff": m.get("dsr_neff"),
        "pbo": m.get("pbo"), "passed": outcome.passed,
        "gates": {g.name: g.as_dict() for g in outcome.gates}, "metrics": m, "stability": outcome.stability,
        "folds": fold_rows(outcome), "engine_check": check,
    })


def config_fragment(strategy: str, params: dict[str, Any], note: str) -> str:
    """``[strategies.<name>]`` with ``params``, ready to paste into config.toml."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment(note))
    table = tomlkit.table()
    for k, v in params.items():
        table.add(k, v)
    strategies = tomlkit.table(is_super_table=True)
    strategies.add(strategy, table)
    doc.add("strategies", strategies)
    return tomlkit.dumps(doc)


def write_config(path: Path, strategy: str, params: dict[str, Any], note: str) -> None:
    """Set ``[strategies.<name>]`` in ``path`` to ``params``, keeping every comment and other key
    (tomlkit round-trip); written to a temporary file and renamed, so a failure leaves it intact."""
    doc = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    if "strategies" not in doc:
        doc.add("strategies", tomlkit.table(is_super_table=True))
    table = tomlkit.table()
    table.add(tomlkit.comment(note))
    for k, v in params.items():
        table.add(k, v)
    doc["strategies"][strategy] = table  # type: ignore[index]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(tomlkit.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)


def _fig_html(fig: Any) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False)


def _optuna_figures(study: optuna.Study, multi: bool) -> list[tuple[str, str]]:
    from optuna import visualization as vis

    out: list[tuple[str, str]] = []
    makers = ([("Pareto front", lambda: vis.plot_pareto_front(study, target_names=["return", "drawdown"]))]
              if multi else [])
    target = {"target": (lambda t: t.values[0]), "target_name": "return"} if multi else {}
    makers += [("Optimisation history", lambda: vis.plot_optimization_history(study, **target)),
               ("Parameter importances", lambda: vis.plot_param_importances(study, **target)),
               ("Parallel coordinates", lambda: vis.plot_parallel_coordinate(study, **target)),
               ("Slices", lambda: vis.plot_slice(study, **target))]
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "-inf trials omitted" is expected, not news
    for title, make in makers:
        try:
            out.append((title, _fig_html(make())))
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. importances need ≥ 2 trials
            out.append((title, f"<p>not available: {html.escape(str(err))}</p>"))
    optuna.logging.set_verbosity(level)
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(path: Path, outcome: Outcome, check: dict[str, Any], study: optuna.Study, title: str,
           meta_lines: list[str]) -> None:
    """Write the offline HTML report to ``path``."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    multi = len(study.directions) == 2
    parts = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{html.escape(x)}</p>" for x in meta_lines]
    verdict = "PASSED" if outcome.passed else "FAILED"
    parts.append(f"<h2>Gates: {verdict}</h2><pre>" + "\n".join(html.escape(g.line()) for g in outcome.gates)
                 + "</pre>")
    parts.append("<h2>Chosen parameters (last fold)</h2>" + _table([outcome.best_params]))
    if outcome.stitched is not None:
        fig = go.Figure(go.Scatter(x=outcome.stitched.index, y=outcome.stitched.to_numpy(), name="OOS equity"))
        for o in outcome.folds:
            fig.add_vline(x=outcome.index[o.fold.oos_start], line_dash="dot", line_color="grey")
        fig.update_layout(title="Stitched out-of-sample equity (every OOS metric comes from it)",
                          height=380, margin={"t": 40})
        parts.append("<h2>Out-of-sample equity</h2>" + _fig_html(fig))
    m = {k: v for k, v in outcome.metrics.items() if not isinstance(v, list)}
    parts.append("<h2>Metrics</h2>" + _table([json_safe(m)]))
    parts.append("<h2>Folds</h2>" + _table([{k: v for k, v in r.items()} for r in fold_rows(outcome)]))
    parts.append("<h2>Parameter stability across folds</h2>"
                 + _table([{"param": k, **v} for k, v in outcome.stability.items()]))
    if check:
        parts.append(f"<h2>Engine check: fast vs {html.escape(check['engine'])} — "
                     f"{'agree' if check['agree'] else 'DISAGREE'}</h2>" + _table(check["folds"]))
    if multi:
        front = [{"trial": t.number, "return": t.values[0], "drawdown": t.values[1], **t.params}
                 for t in sorted(study.best_trials, key=lambda t: t.values[1])]
        parts.append("<h2>Pareto front (last fold)</h2>" + _table(front))
    for name, body in _optuna_figures(study, multi):
        parts.append(f"<h2>{html.escape(name)} (last fold)</h2>{body}")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}pre{background:#f6f6f6;padding:1em}")
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{style}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
           f"<body>{''.join(parts)}</body></html>")
    path.write_text(doc, encoding="utf-8")


def write_artifacts(folder: Path, outcome: Outcome, check: dict[str, Any], line: dict[str, Any],
                    fragment: str) -> None:
    """result.json, best_params.toml, oos_equity.csv, folds.csv into ``folder``."""
    (folder / "result.json").write_text(json.dumps(line, indent=2, allow_nan=False, default=str) + "\n")
    (folder / "best_params.toml").write_text(fragment)
    if outcome.stitched is not None:
        outcome.stitched.to_frame("equity").to_csv(folder / "oos_equity.csv", index_label="time")
    import pandas as pd

    rows = fold_rows(outcome)
    for r in rows:
        r["params"] = json.dumps(json_safe(r["params"]))
    pd.DataFrame(rows).replace({np.nan: None}).to_csv(folder / "folds.csv", index=False)
