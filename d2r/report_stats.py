"""The report's aggregate comparison: d2r.stats over the results, as metrics and as HTML.

Arrays come from the results the report loaded (d2r.report.Data); the numbers from d2r.stats
(rliable); the figures and tables are drawn here from the metrics (metrics/E.json
"statistics"), so the page shows exactly what the metrics file holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from d2r import stats
from d2r.report import Data, Figures, _check_rate, _color, _rgba, esc, pct, table


def score_array(data: Data, method: str) -> np.ndarray:
    """Final success [runs, tasks] (eval.json per seed and task)."""
    return np.array([[float(data.runs[method][s]["eval"]["success"][t]) for t in data.tasks] for s in data.seeds])


def curve_array(data: Data, method: str) -> tuple[list[int], np.ndarray] | None:
    """Periodic-evaluation success [runs, tasks, points] at the env steps every run evaluated."""
    logs = [data.runs[method][s]["eval_log"] for s in data.seeds]
    common = set.intersection(*({int(r["env_steps"]) for r in log} for log in logs))
    if not common:
        return None
    steps = sorted(common)
    arr = np.empty((len(logs), len(data.tasks), len(steps)))
    for i, log in enumerate(logs):
        at = {int(r["env_steps"]): r for r in log}
        where = f"results/{data.experiment}/{method}/seed{data.seeds[i]}/eval_log.jsonl"
        for k, x in enumerate(steps):
            arr[i, :, k] = [_check_rate(at[x].get("success", {}).get(t), f"{where} at env steps {x}: success.{t}")
                            for t in data.tasks]
    return steps, arr


def variants(data: Data) -> list[str]:
    """D2R and its ablations: methods whose network is d2r."""
    return [m for m in data.methods if data.methods_raw[m].get("net") == "d2r"]


def baselines(data: Data) -> list[str]:
    return [m for m in data.methods if data.methods_raw[m].get("net") != "d2r"]


def statistics(data: Data, reps: int = stats.REPS) -> dict[str, Any]:
    """d2r.stats.compute over this experiment's runs (metrics/E.json "statistics")."""
    scores = {m: score_array(data, m) for m in data.methods}
    curves = {m: c for m in data.methods if (c := curve_array(data, m)) is not None}
    return stats.compute(scores, variants(data), baselines(data), curves, reps)


# ----------------------------------------------------------------------------------------------
# Figures


def _ci(point: float, low: float, high: float) -> dict:
    return {"type": "data", "symmetric": False, "array": [high - point], "arrayminus": [point - low],
            "thickness": 2.5, "width": 6}


def aggregates(metrics: dict[str, Any], method: str) -> dict[str, float]:
    """IQM and mean with their intervals, from a method's metrics entry."""
    mm = metrics["methods"][method]
    return {"iqm": mm["iqm"], "iqm_low": mm["iqm_low"], "iqm_high": mm["iqm_high"],
            "mean": mm["success_mean"], "mean_low": mm["success_mean_low"], "mean_high": mm["success_mean_high"]}


def fig_aggregates(data: Data, metrics: dict, figs: Figures) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["IQM (interquartile mean)", "mean"],
                        horizontal_spacing=0.12, shared_yaxes=True)
    for m in data.methods:
        a = aggregates(metrics, m)
        for col, key in ((1, "iqm"), (2, "mean")):
            fig.add_trace(go.Scatter(
                x=[a[key]], y=[m], mode="markers", marker={"color": _color(data, m), "size": 11},
                error_x=_ci(a[key], a[f"{key}_low"], a[f"{key}_high"]), showlegend=False, name=m,
                hovertemplate=f"{m}<br>{key} %{{x:.1%}} (95% CI {a[f'{key}_low']:.1%} to "
                              f"{a[f'{key}_high']:.1%})<extra></extra>"), row=1, col=col)
    fig.update_xaxes(range=[-0.02, 1.02], tickformat=".0%", title_text="final success")
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_layout(title="Final success over runs x tasks: point estimate and 95% stratified bootstrap CI",
                      margin={"l": 160})
    return figs.html(fig, "fig-aggregates", max(260, 150 + 40 * len(data.methods)))


def fig_improvement(st: dict, figs: Figures) -> str:
    import plotly.graph_objects as go

    poi = st["probability_of_improvement"]
    labels = [f"P({p['variant']} > {p['baseline']})" for p in poi.values()]
    fig = go.Figure()
    for label, p in zip(labels, poi.values()):
        fig.add_trace(go.Scatter(
            x=[p["p"]], y=[label], mode="markers", marker={"color": "#1f77b4", "size": 11},
            error_x=_ci(p["p"], p["low"], p["high"]), showlegend=False,
            hovertemplate=f"{label} = %{{x:.2f}} (95% CI {p['low']:.2f} to {p['high']:.2f})<extra></extra>"))
    fig.add_vline(x=0.5, line={"color": "#888", "dash": "dash"})
    fig.update_layout(title="Probability of improvement of each D2R variant over each baseline (95% CI)",
                      xaxis={"range": [0, 1], "title": "P(a run of the variant beats a run of the baseline, per task)"},
                      yaxis={"autorange": "reversed", "showgrid": False}, margin={"l": 220})
    return figs.html(fig, "fig-improvement", max(240, 150 + 40 * len(labels)))


def _band(fig, xs: list, low: list, high: list, color: str, name: str) -> None:
    import plotly.graph_objects as go

    fig.add_trace(go.Scatter(x=xs + xs[::-1], y=high + low[::-1], mode="lines", fill="toself",
                             fillcolor=_rgba(color, 0.18), line={"width": 0}, hoverinfo="skip",
                             legendgroup=name, showlegend=False, name=f"{name} (95% CI)"))


def fig_profiles(data: Data, st: dict, figs: Figures) -> str:
    import plotly.graph_objects as go

    prof = st["performance_profile"]
    taus = prof["tau"]
    fig = go.Figure()
    for m in data.methods:
        p, color = prof["methods"][m], _color(data, m)
        _band(fig, taus, p["low"], p["high"], color, m)
        fig.add_trace(go.Scatter(x=taus, y=p["fraction"], mode="lines", name=m, legendgroup=m,
                                 line={"color": color, "width": 2.5},
                                 hovertemplate=f"{m}<br>tau %{{x:.2f}}<br>%{{y:.1%}} of run x task scores "
                                               "above tau<extra></extra>"))
    fig.update_layout(title="Performance profile: fraction of run x task final success rates above tau (95% CI band)",
                      xaxis={"title": "tau (success rate)", "range": [0, 1]},
                      yaxis={"title": "fraction of runs x tasks > tau", "range": [-0.02, 1.02], "tickformat": ".0%"})
    return figs.html(fig, "fig-profiles", 420)


def fig_sample_efficiency(data: Data, st: dict, figs: Figures) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for m in data.methods:
        c = st["sample_efficiency"].get(m)
        if not c:
            continue
        color = _color(data, m)
        if len(c["env_steps"]) > 1:
            _band(fig, c["env_steps"], c["low"], c["high"], color, m)
        fig.add_trace(go.Scatter(x=c["env_steps"], y=c["iqm"], mode="lines+markers", name=m, legendgroup=m,
                                 line={"color": color, "width": 2.5}, marker={"size": 5},
                                 hovertemplate=f"{m}<br>env steps %{{x:,}}<br>IQM %{{y:.1%}}<extra></extra>"))
    fig.update_layout(title="Sample efficiency: IQM of success over runs x tasks at each periodic evaluation (95% CI band)",
                      xaxis_title="environment steps per task",
                      yaxis={"title": "IQM success", "range": [-0.02, 1.02], "tickformat": ".0%"})
    return figs.html(fig, "fig-sample-efficiency", 440)


# ----------------------------------------------------------------------------------------------
# HTML


def _interval(point: float, low: float, high: float, fmt=pct) -> str:
    return f"{fmt(point)} <span class=\"ci\">[{fmt(low)}, {fmt(high)}]</span>"


def section(data: Data, metrics: dict[str, Any], figs: Figures) -> str:
    st = metrics["statistics"]
    b = st["bootstrap"]
    runs = len(data.seeds)
    parts = [f'<h3>Aggregate comparison (rliable)</h3><p class="note"><b>The intervals rest on {runs} '
             f'run{"s" if runs != 1 else ""} per method</b> (seeds {", ".join(map(str, data.seeds))}) &times; '
             f'{len(data.tasks)} tasks = {runs * len(data.tasks)} final success rates per method. '
             f'{int(b["confidence"] * 100)}% confidence intervals from a stratified bootstrap ({b["reps"]:,} '
             'resamples of the runs within each task, percentile method; Agarwal et al., NeurIPS 2021, '
             'rliable). IQM = mean of the middle 50% of all run &times; task scores: less sensitive to '
             'outliers than the mean, less noisy than the median.</p>']
    if st["warnings"]:
        parts.append('<div class="warn" id="stats-warnings"><b>Caution: these results do not separate the '
                     'methods.</b><ul>' + "".join(f"<li>{esc(w)}</li>" for w in st["warnings"]) + "</ul></div>")
    rows = []
    for m in data.methods:
        a = aggregates(metrics, m)
        rows.append([esc(m), str(runs), _interval(a["iqm"], a["iqm_low"], a["iqm_high"]),
                     _interval(a["mean"], a["mean_low"], a["mean_high"])])
    parts.append(table(["method", "runs", "IQM [95% CI]", "mean [95% CI]"], rows))
    poi = st["probability_of_improvement"]
    if poi:
        prow = [[esc(p["variant"]), esc(p["baseline"]),
                 _interval(p["p"], p["low"], p["high"], lambda x: f"{x:.2f}")] for p in poi.values()]
        parts.append(table(["D2R variant X", "baseline Y", "P(X &gt; Y) [95% CI]"], prow, left=2))
        parts.append('<p class="note">P(X &gt; Y): the probability that a run of X has a higher final success '
                     'than a run of Y on the same task (ties count half), averaged over tasks. 0.5 = no '
                     'difference; an interval that contains 0.5 does not show one.</p>')
    else:
        parts.append('<p class="note">No probability of improvement: the experiment has '
                     + ("no baseline (every method is a D2R variant)." if not baselines(data)
                        else "no D2R variant.") + "</p>")
    parts.append(fig_aggregates(data, metrics, figs))
    if poi:
        parts.append(fig_improvement(st, figs))
    parts.append(fig_profiles(data, st, figs))
    if st["sample_efficiency"]:
        parts.append(fig_sample_efficiency(data, st, figs))
    return "".join(parts)
