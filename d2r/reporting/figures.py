"""The report's plotly figures, each an HTML fragment with a fixed div id.

Figures draw numbers they are given (d2r.reporting.metrics computes them; d2r.reporting.html passes
them in): method and task names, per-seed values, means, curves. What is decided here is
drawing only: colours, layout, where tied points and their labels go.
"""

from __future__ import annotations

import math
from typing import Any

from d2r.reporting.metrics import Curve, DepthDifficulty, OverSeeds

# A small fixed template: plotly's default template would be embedded (large) in every figure.
TEMPLATE = {
    "layout": {
        "font": {"family": "Helvetica, Arial, sans-serif", "size": 13, "color": "#222"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                     "#7f7f7f", "#bcbd22", "#17becf"],
        "xaxis": {"showgrid": True, "gridcolor": "#e5e5e5", "zeroline": False, "linecolor": "#888",
                  "showline": True, "ticks": "outside"},
        "yaxis": {"showgrid": True, "gridcolor": "#e5e5e5", "zeroline": False, "linecolor": "#888",
                  "showline": True, "ticks": "outside"},
        "hovermode": "closest",
        "margin": {"l": 70, "r": 30, "t": 60, "b": 60},
        "legend": {"bgcolor": "rgba(255,255,255,0.8)"},
    }
}
COLORS = TEMPLATE["layout"]["colorway"]
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}}


def method_colors(methods: list[str]) -> dict[str, str]:
    """A method's colour follows its place in the experiment, so it is the same in every figure."""
    return {m: COLORS[i % len(COLORS)] for i, m in enumerate(methods)}


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


class Figures:
    """Collects figures as HTML fragments with fixed, unique div ids."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def html(self, fig, div_id: str, height: int) -> str:
        if div_id in self.ids:
            raise ValueError(f"duplicate figure id {div_id}")
        self.ids.append(div_id)
        fig.update_layout(template=TEMPLATE, height=height, autosize=True)
        return ('<div class="figure">'
                + fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG,
                              default_width="100%", default_height=f"{height}px")
                + "</div>")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())


def _grid(n: int, max_cols: int = 5) -> tuple[int, int]:
    cols = min(max_cols, n)
    return math.ceil(n / cols), cols


# ----------------------------------------------------------------------------------------------
# Learning curves and final success


def learning_curves(curves: dict[str, Curve], colors: dict[str, str], several_seeds: bool, figs: Figures,
                    quantity: str = "success") -> str:
    """curves: method -> curve of the mean over tasks of `quantity` (success, or return)."""
    import plotly.graph_objects as go

    success = quantity == "success"
    fig = go.Figure()
    for m, c in curves.items():
        color = colors[m]
        if several_seeds and c.x:
            fig.add_trace(go.Scatter(x=c.x + c.x[::-1], y=c.high + c.low[::-1], mode="lines", fill="toself",
                                     fillcolor=_rgba(color, 0.18),
                                     line={"width": 0}, hoverinfo="skip", legendgroup=m, showlegend=False,
                                     name=f"{m} (min-max over seeds)"))
        value = "success %{y:.1%}" if success else "return %{y:.1f}"
        fig.add_trace(go.Scatter(x=c.x, y=c.mean, mode="lines+markers", name=m, legendgroup=m,
                                 line={"color": color, "width": 2.5}, marker={"size": 5},
                                 hovertemplate=f"{m}<br>env steps %{{x:,}}<br>{value}<extra></extra>"))
    spread = "line: mean over seeds, band: min to max over seeds" if several_seeds else "one seed"
    what = "success rate" if success else "episode return"
    fig.update_layout(title=f"Mean {what} over tasks during training ({spread})",
                      xaxis={"title": "environment steps per task", "rangemode": "tozero"},
                      yaxis={"title": what, **({"range": [-0.02, 1.02], "tickformat": ".0%"} if success else {})})
    return figs.html(fig, "fig-learning-curves" if success else "fig-return-curves", 460)


def task_curves(curves: dict[str, dict[str, Curve]], colors: dict[str, str], figs: Figures) -> str:
    """curves: task -> method -> success curve of the task; a panel per task."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tasks = list(curves)
    rows, cols = _grid(len(tasks))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks, shared_yaxes=True,
                        horizontal_spacing=0.03, vertical_spacing=0.5 / max(rows, 1) if rows > 1 else 0.1)
    for i, t in enumerate(tasks):
        r, c = divmod(i, cols)
        for m, cv in curves[t].items():
            fig.add_trace(go.Scatter(x=cv.x, y=cv.mean, mode="lines", name=m, legendgroup=m, showlegend=(i == 0),
                                     line={"color": colors[m], "width": 2},
                                     hovertemplate=f"{m} / {t}<br>env steps %{{x:,}}<br>success %{{y:.0%}}"
                                                   "<extra></extra>"),
                          row=r + 1, col=c + 1)
    fig.update_yaxes(range=[-0.05, 1.05], tickformat=".0%")
    fig.update_xaxes(rangemode="tozero")
    fig.update_annotations(font_size=12)
    fig.update_layout(title="Success rate per task during training (mean over seeds)")
    return figs.html(fig, "fig-task-curves", 120 + 230 * rows)


def final_success(final: dict[str, OverSeeds], seeds: list[int], colors: dict[str, str], figs: Figures) -> str:
    """final: method -> final success over seeds."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for m, fs in final.items():
        fig.add_trace(go.Bar(x=[m], y=[fs.mean], name=m, marker_color=colors[m],
                             error_y={"type": "data", "array": [fs.std], "visible": len(fs.values) > 1},
                             hovertemplate=f"{m}<br>mean %{{y:.1%}} +- {fs.std:.1%}<extra></extra>",
                             showlegend=False))
        fig.add_trace(go.Scatter(x=[m] * len(fs.values), y=fs.values, mode="markers", showlegend=False,
                                 marker={"color": "#222", "size": 7, "symbol": "circle-open"},
                                 text=[f"seed {s}" for s in seeds],
                                 hovertemplate=f"{m} %{{text}}<br>success %{{y:.1%}}<extra></extra>"))
    fig.update_layout(title="Final success rate per method (bar: mean over seeds, whisker: std, circles: seeds)",
                      yaxis={"range": [0, 1.05], "tickformat": ".0%", "title": "success rate"})
    return figs.html(fig, "fig-final-success", 420)


def task_heatmap(methods: list[str], success: dict[str, list[float]], difficulty: dict[str, float],
                 figs: Figures) -> str:
    """success: task -> mean final success of each method (in `methods` order); easiest task on top."""
    import plotly.graph_objects as go

    order = list(success)
    tasks = sorted(order, key=lambda t: (difficulty[t], order.index(t)))
    z = [success[t] for t in tasks]
    text = [[f"{v:.0%}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=methods, y=tasks, zmin=0, zmax=1, colorscale="Viridis",
                               text=text, texttemplate="%{text}", colorbar={"title": "success", "tickformat": ".0%"},
                               hovertemplate="%{y} / %{x}<br>success %{z:.1%}<extra></extra>"))
    fig.update_layout(title="Final success per task and method (mean over seeds; easiest task on top)",
                      yaxis={"autorange": "reversed", "showgrid": False}, xaxis={"showgrid": False, "side": "top"},
                      margin={"l": 220, "t": 110})
    return figs.html(fig, "fig-task-success", max(320, 160 + 26 * len(tasks)))


# ----------------------------------------------------------------------------------------------
# Routes of one routed method


def depth_per_task(m: str, tasks: list[str], per_task: dict[str, list[OverSeeds]], n: int, several_seeds: bool,
                   figs: Figures) -> str:
    """per_task: "depth_mean" and "modules_used_mean" -> the values over seeds of each task."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, label, color in (("depth_mean", "route depth", "#1f77b4"),
                              ("modules_used_mean", "modules used", "#ff7f0e")):
        vals = per_task[key]
        fig.add_trace(go.Bar(x=tasks, y=[v.mean for v in vals], name=label, marker_color=color,
                             error_y={"type": "data", "array": [v.std for v in vals], "visible": several_seeds},
                             hovertemplate=f"%{{x}}<br>{label} %{{y:.2f}}<extra></extra>"))
    fig.update_layout(barmode="group", title=f"{m}: mean route depth and modules used per task "
                                             f"(final evaluation, greedy routes, N = {n} modules)",
                      yaxis={"title": "modules", "range": [0, n + 0.5]}, xaxis={"tickangle": -30})
    return figs.html(fig, f"fig-depth-{_slug(m)}", 430)


def _edge_labels(n: int) -> tuple[list[str], list[str]]:
    """Rows: node n = 1..N-1 is module M{n+1} (1-based, as in the spec), row N-1 the output."""
    rows = [f"M{i + 2}" for i in range(n - 1)] + ["out"]
    cols = [f"M{j + 1}" for j in range(n)]
    return rows, cols


def edge_heatmaps(m: str, frequency: dict[str, list[list[float | None]]], n: int, figs: Figures) -> str:
    """frequency: task -> [receiving node][source module] (None: an impossible edge)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tasks = list(frequency)
    row_labels, col_labels = _edge_labels(n)
    rows, cols = _grid(len(tasks), 4)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks, horizontal_spacing=0.05,
                        vertical_spacing=0.35 / rows if rows > 1 else 0.1)
    for i, t in enumerate(tasks):
        fig.add_trace(go.Heatmap(z=frequency[t], x=col_labels, y=row_labels, coloraxis="coloraxis",
                                 hovertemplate=f"{t}<br>%{{y}} takes %{{x}}: %{{z:.1%}} of steps<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(autorange="reversed", showgrid=False, tickfont={"size": 9})
    fig.update_xaxes(showgrid=False, tickfont={"size": 9}, tickangle=-90)
    fig.update_annotations(font_size=12)
    fig.update_layout(title=f"{m}: edge-selection frequency per task (mean over seeds)",
                      plot_bgcolor="#cfcfcf",   # impossible edges (no value) show grey
                      coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1,
                                 "colorbar": {"title": "frequency", "tickformat": ".0%"}})
    return figs.html(fig, f"fig-edges-{_slug(m)}", 110 + 330 * rows)


def module_use(m: str, tasks: list[str], use: list[list[float]], n: int, figs: Figures) -> str:
    """use: [task][module] fraction of steps the module lies on the route to the output."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=use, x=[f"M{j + 1}" for j in range(n)], y=tasks, zmin=0, zmax=1,
                               colorscale="Blues", colorbar={"title": "used", "tickformat": ".0%"},
                               hovertemplate="%{y}<br>%{x} used in %{z:.1%} of steps<extra></extra>"))
    fig.update_layout(title=f"{m}: how often each module lies on the route to the output, per task",
                      yaxis={"autorange": "reversed", "showgrid": False}, xaxis={"showgrid": False},
                      margin={"l": 220})
    return figs.html(fig, f"fig-module-use-{_slug(m)}", max(300, 140 + 24 * len(tasks)))


def depth_evolution(m: str, curves: dict[str, dict[str, Curve]], n: int, figs: Figures) -> str:
    """curves: task -> "depth" / "modules_used" -> its curve over training; a panel per task."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tasks = list(curves)
    rows, cols = _grid(len(tasks))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks, shared_yaxes=True,
                        horizontal_spacing=0.03, vertical_spacing=0.5 / max(rows, 1) if rows > 1 else 0.1)
    for i, t in enumerate(tasks):
        for key, label, color in (("depth", "route depth", "#1f77b4"), ("modules_used", "modules used", "#ff7f0e")):
            c = curves[t][key]
            fig.add_trace(go.Scatter(x=c.x, y=c.mean, mode="lines+markers", name=label, legendgroup=key,
                                     showlegend=(i == 0), line={"color": color, "width": 2}, marker={"size": 4},
                                     hovertemplate=f"{t}<br>env steps %{{x:,}}<br>{label} %{{y:.2f}}<extra></extra>"),
                          row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(range=[0, n + 0.5])
    fig.update_xaxes(rangemode="tozero")
    fig.update_annotations(font_size=12)
    fig.update_layout(title=f"{m}: route depth and modules used per task during training (mean over seeds, "
                            f"N = {n} modules)")
    return figs.html(fig, f"fig-depth-time-{_slug(m)}", 120 + 230 * rows)


# ----------------------------------------------------------------------------------------------
# Across routed methods


def spread_ties(xs: list[float], step: float = 0.015, max_width: float = 0.15) -> list[float]:
    """x positions with tied values moved apart by `step` (less when n ties would span more than
    `max_width`: MT50 may have dozens at difficulty 1), centred on the value, in input order."""
    groups: dict[float, list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(round(x, 9), []).append(i)
    out = list(xs)
    for members in groups.values():
        gap = min(step, max_width / max(len(members) - 1, 1))
        for k, i in enumerate(members):
            out[i] = xs[i] + (k - (len(members) - 1) / 2) * gap
    return out


def isolated(points: list[tuple[float, float]], dx: float, dy: float) -> list[bool]:
    """Whether each point has no other point within dx horizontally and dy vertically."""
    return [not any(j != i and abs(x - u) < dx and abs(y - v) < dy for j, (u, v) in enumerate(points))
            for i, (x, y) in enumerate(points)]


def depth_vs_difficulty(tasks: list[str], dd: DepthDifficulty, colors: dict[str, str], figs: Figures) -> str:
    """A point per task and routed method; a task's name is written only where it crowds no other point."""
    import plotly.graph_objects as go

    xs = spread_ties(dd.difficulty)
    points = [(x, y) for ys in dd.depth.values() for x, y in zip(xs, ys)]
    y_range = (max(y for _, y in points) - min(y for _, y in points)) or 1.0
    labelled = iter(isolated(points, 0.07, 0.08 * y_range))
    fig = go.Figure()
    for m, ys in dd.depth.items():
        r = dd.correlation[m]
        label = f"{m} (Pearson r = {r:.2f})" if r is not None else f"{m} (r: n/a)"
        text = [t if next(labelled) else "" for t in tasks]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=text, textposition="top center",
                                 textfont={"size": 10}, name=label, marker={"color": colors[m], "size": 10},
                                 customdata=[[t, d] for t, d in zip(tasks, dd.difficulty)],
                                 hovertemplate=f"{m}<br>%{{customdata[0]}}<br>difficulty %{{customdata[1]:.2f}}"
                                               "<br>depth %{y:.2f}<extra></extra>"))
    fig.update_layout(title="Route depth against task difficulty (difficulty = 1 - final success, "
                            "mean over all methods and seeds)",
                      xaxis={"title": "task difficulty", "range": [-0.1, 1.1]}, yaxis={"title": "mean route depth"},
                      showlegend=True, legend={"orientation": "h", "y": -0.2})
    return figs.html(fig, "fig-depth-difficulty", 480)


def ablation(success: dict[str, OverSeeds], depth: dict[str, OverSeeds], colors: dict[str, str],
             figs: Figures) -> str:
    """success, depth: D2R variant -> final success and mean route depth over seeds."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["final success rate", "mean route depth"],
                        horizontal_spacing=0.1)
    for m, fs in success.items():
        common = {"marker_color": colors[m], "showlegend": False, "name": m}
        fig.add_trace(go.Bar(x=[m], y=[fs.mean], error_y={"type": "data", "array": [fs.std]},
                             hovertemplate=f"{m}<br>success %{{y:.1%}}<extra></extra>", **common), row=1, col=1)
        fig.add_trace(go.Bar(x=[m], y=[depth[m].mean], error_y={"type": "data", "array": [depth[m].std]},
                             hovertemplate=f"{m}<br>depth %{{y:.2f}}<extra></extra>", **common), row=1, col=2)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.05], row=1, col=1)
    fig.update_layout(title="D2R variants: final success and route depth (mean +- std over seeds)")
    return figs.html(fig, "fig-ablation", 430)


# ----------------------------------------------------------------------------------------------
# The aggregate comparison (metrics/E.json "statistics", d2r.reporting.stats)


def _ci(point: float, low: float, high: float) -> dict:
    return {"type": "data", "symmetric": False, "array": [high - point], "arrayminus": [point - low],
            "thickness": 2.5, "width": 6}


def aggregates(aggs: dict[str, dict[str, float]], colors: dict[str, str], figs: Figures) -> str:
    """aggs: method -> IQM and mean with their intervals (metrics.method_aggregates)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["IQM (interquartile mean)", "mean"],
                        horizontal_spacing=0.12, shared_yaxes=True)
    for m, a in aggs.items():
        for col, key in ((1, "iqm"), (2, "mean")):
            fig.add_trace(go.Scatter(
                x=[a[key]], y=[m], mode="markers", marker={"color": colors[m], "size": 11},
                error_x=_ci(a[key], a[f"{key}_low"], a[f"{key}_high"]), showlegend=False, name=m,
                hovertemplate=f"{m}<br>{key} %{{x:.1%}} (95% CI {a[f'{key}_low']:.1%} to "
                              f"{a[f'{key}_high']:.1%})<extra></extra>"), row=1, col=col)
    fig.update_xaxes(range=[-0.02, 1.02], tickformat=".0%", title_text="final success")
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_layout(title="Final success over runs x tasks: point estimate and 95% stratified bootstrap CI",
                      margin={"l": 160})
    return figs.html(fig, "fig-aggregates", max(260, 150 + 40 * len(aggs)))


def improvement(poi: dict[str, dict[str, Any]], figs: Figures) -> str:
    """poi: the statistics' "probability_of_improvement"."""
    import plotly.graph_objects as go

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


def profiles(methods: list[str], prof: dict[str, Any], colors: dict[str, str], figs: Figures) -> str:
    """prof: the statistics' "performance_profile"."""
    import plotly.graph_objects as go

    taus = prof["tau"]
    fig = go.Figure()
    for m in methods:
        p, color = prof["methods"][m], colors[m]
        _band(fig, taus, p["low"], p["high"], color, m)
        fig.add_trace(go.Scatter(x=taus, y=p["fraction"], mode="lines", name=m, legendgroup=m,
                                 line={"color": color, "width": 2.5},
                                 hovertemplate=f"{m}<br>tau %{{x:.2f}}<br>%{{y:.1%}} of run x task scores "
                                               "above tau<extra></extra>"))
    fig.update_layout(title="Performance profile: fraction of run x task final success rates above tau (95% CI band)",
                      xaxis={"title": "tau (success rate)", "range": [0, 1]},
                      yaxis={"title": "fraction of runs x tasks > tau", "range": [-0.02, 1.02], "tickformat": ".0%"})
    return figs.html(fig, "fig-profiles", 420)


def sample_efficiency(methods: list[str], se: dict[str, Any], colors: dict[str, str], figs: Figures) -> str:
    """se: the statistics' "sample_efficiency" (methods without a curve are left out)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for m in methods:
        c = se.get(m)
        if not c:
            continue
        color = colors[m]
        if len(c["env_steps"]) > 1:
            _band(fig, c["env_steps"], c["low"], c["high"], color, m)
        fig.add_trace(go.Scatter(x=c["env_steps"], y=c["iqm"], mode="lines+markers", name=m, legendgroup=m,
                                 line={"color": color, "width": 2.5}, marker={"size": 5},
                                 hovertemplate=f"{m}<br>env steps %{{x:,}}<br>IQM %{{y:.1%}}<extra></extra>"))
    fig.update_layout(title="Sample efficiency: IQM of success over runs x tasks at each periodic evaluation (95% CI band)",
                      xaxis={"title": "environment steps per task", "rangemode": "tozero"},
                      yaxis={"title": "IQM success", "range": [-0.02, 1.02], "tickformat": ".0%"})
    return figs.html(fig, "fig-sample-efficiency", 440)
