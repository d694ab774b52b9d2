"""`python -m d2r report`: one self-contained HTML report and a metrics JSON for one experiment.

Reads files only, never training code (no torch, no agent, no envs):

    params.yaml                                 the experiment's methods, seeds, budget preset
    results/{exp}/environment.json              versions, platform, device, task set (setup job)
    results/{exp}/{method}/seed{s}/run.json     training config, parameter counts, wall time
    results/{exp}/{method}/seed{s}/eval_log.jsonl   periodic evaluations during training
    results/{exp}/{method}/seed{s}/eval.json    final evaluation (greedy routes)
    results/{exp}/{method}/seed{s}/routes.json  routing analysis (analyse job)
    results/{exp}/{method}/seed{s}/videos/      rollout videos of the first seed (render job; --videos)

Writes ``reports/{exp}.html``, ``metrics/{exp}.json`` and, with --curves, the learning curves as
a small CSV for `dvc plots` (``reports/curves/{exp}.csv``). Both depend on these files only, so a
rebuild from the same results gives the same bytes: no timestamps, no random ids (every figure
has a fixed div id), keys sorted, plotly.js inlined once in <head> so the page opens offline.

Definitions used in the report (also printed in it):
- final success of a run = eval.json ``mean_success`` (mean over tasks of the per-task success
  rate of the final evaluation); per method: mean and standard deviation over seeds
  (population std, ddof = 0, so one seed gives 0);
- learning curves: eval_log.jsonl ``mean_success`` against env steps per task; the line is the
  mean over seeds, the band spans the lowest to the highest seed;
- task difficulty = 1 - final success on the task, averaged over every method and seed of the
  experiment (so it does not favour the routed method whose depth is plotted against it).

metrics/{exp}.json (results only, so two runs with the same seed give the same bytes)::

    {"methods": {method: {"success_mean", "success_std", "per_task": {task: mean over seeds},
                          "seeds", and for routed methods "depth_mean", "modules_used_mean",
                          "iqm", "iqm_low", "iqm_high", "success_mean_low", "success_mean_high"}},
     "statistics": {"bootstrap": {...}, "probability_of_improvement": {"X vs Y": {"variant",
                    "baseline", "p", "low", "high"}}, "performance_profile": {"tau": [...],
                    "methods": {method: {"fraction", "low", "high"}}}, "sample_efficiency":
                    {method: {"env_steps", "iqm", "low", "high"}}, "warnings": [...]}}

(d2r/stats.py: rliable's IQM, mean, probability of improvement and performance profiles with
95% stratified bootstrap intervals over runs x tasks, seeded, so the same bytes every time.)

reports/curves/{exp}.csv (--curves): ``method,task,env_steps,success`` with the mean over seeds of
each periodic evaluation, per task and ("(mean over tasks)") for the task set, for `dvc plots`.

reports/{exp}.timing.json (wall times differ from run to run, so they are kept apart)::

    {"methods": {method: seconds of training plus final evaluation, summed over seeds},
     "wall_time": the same summed over every run}
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from d2r.io import atomic_write_json, atomic_write_text, read_json, read_jsonl

# ----------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="the parameter file (default: params.yaml)")
    parser.add_argument("--experiment", required=True, help="experiment name in params.yaml")
    parser.add_argument("--results", required=True, help="results/{experiment}")
    parser.add_argument("--out", required=True, help="where to write the HTML report")
    parser.add_argument("--metrics", required=True, help="where to write the metrics JSON")
    parser.add_argument("--timing", help="where to write the wall times JSON (optional)")
    parser.add_argument("--videos", nargs="*", default=None,
                        help="the render job's video directories to embed (results/E/M/seedS/videos)")
    parser.add_argument("--curves", help="where to write the learning curves CSV for `dvc plots` (optional)")


class ReportError(ValueError):
    """A results file is missing or does not follow the contract; the message names it."""


def run(args: argparse.Namespace) -> int:
    from d2r.report_videos import load_videos
    from d2r.stats import StatsError

    try:
        data = load(args.params, args.experiment, args.results)
        if args.videos:
            data.videos = load_videos(args.videos, data.methods, data.tasks)
        metrics, timing = compute_metrics(data), compute_timing(data)
    except (ReportError, StatsError, FileNotFoundError) as err:
        print(f"error: report {args.experiment}: {err}", file=sys.stderr)
        return 1
    atomic_write_json(args.metrics, metrics)
    if args.timing:
        atomic_write_json(args.timing, timing)
    if args.curves:
        atomic_write_text(args.curves, curves_csv(data))
    atomic_write_text(args.out, render(data, metrics, timing))
    print(f"report: {args.experiment}: {len(data.methods)} methods x {len(data.seeds)} seeds -> "
          f"{args.out}, {args.metrics}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------
# Loading


class Data:
    """Everything the report shows, read from the results tree."""

    def __init__(self, experiment: str, exp_raw: dict, methods_raw: dict, environment: dict,
                 runs: dict[str, dict[int, dict[str, Any]]], tasks: list[str], render=None):
        self.experiment = experiment
        self.exp_raw = exp_raw
        self.methods = list(exp_raw["methods"])
        self.seeds = [int(s) for s in exp_raw["seeds"]]
        self.methods_raw = methods_raw
        self.environment = environment
        self.runs = runs            # runs[method][seed] = {"run", "eval_log", "eval", "routes"}
        self.tasks = tasks
        self.render = render        # d2r.config.RenderConfig of the experiment
        self.videos: dict[str, dict[str, Any]] | None = None   # method -> index.json (report_videos)

    def routed(self, method: str) -> bool:
        return all(self.runs[method][s]["routes"].get("routed", False) for s in self.seeds)

    @property
    def routed_methods(self) -> list[str]:
        return [m for m in self.methods if self.routed(m)]


def _check_rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
        raise ReportError(f"{where}: expected a success rate in [0, 1], got {value!r}")
    return float(value)


def _read(path: Path) -> Any:
    if not path.exists():
        raise ReportError(f"{path}: missing")
    try:
        return read_json(path)
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON: {err}") from None


def load(params_path: str | Path, experiment: str, results: str | Path) -> Data:
    raw = yaml.safe_load(Path(params_path).read_text())
    if experiment not in raw.get("experiments", {}):
        raise ReportError(f"{params_path}: no experiment {experiment!r}")
    exp_raw = raw["experiments"][experiment]
    results = Path(results)
    environment = _read(results / "environment.json")
    tasks = list(environment["task_set"]["tasks"])
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for method in exp_raw["methods"]:
        runs[method] = {}
        for seed in exp_raw["seeds"]:
            d = results / method / f"seed{seed}"
            log_path = d / "eval_log.jsonl"
            if not log_path.exists():
                raise ReportError(f"{log_path}: missing")
            r = {"run": _read(d / "run.json"), "eval_log": list(read_jsonl(log_path)),
                 "eval": _read(d / "eval.json"), "routes": _read(d / "routes.json")}
            ev = r["eval"]
            if list(ev["tasks"]) != tasks:
                raise ReportError(f"{d / 'eval.json'}: tasks {ev['tasks']} differ from environment.json's {tasks}")
            for t in tasks:
                _check_rate(ev["success"][t], f"{d / 'eval.json'}: success.{t}")
            _check_rate(ev["mean_success"], f"{d / 'eval.json'}: mean_success")
            for i, rec in enumerate(r["eval_log"]):
                _check_rate(rec["mean_success"], f"{log_path} record {i}: mean_success")
            runs[method][int(seed)] = r
    from d2r.config import ParamsError, render_config

    try:
        render = render_config(raw, experiment, str(params_path))
    except (ParamsError, TypeError) as err:
        raise ReportError(f"{params_path}: render settings: {err}") from None
    return Data(experiment, exp_raw, {m: raw["methods"].get(m, {}) for m in exp_raw["methods"]},
                environment, runs, tasks, render)


# ----------------------------------------------------------------------------------------------
# Statistics (plain Python: no numpy needed, results are the same everywhere)


def mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def std(xs: Iterable[float]) -> float:
    """Population standard deviation (ddof = 0)."""
    xs = list(xs)
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = mean(xs), mean(ys)
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    if sx == 0 or sy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy)


def _r6(x: float) -> float:
    return round(float(x), 6)


def final_success(data: Data, method: str) -> list[float]:
    return [float(data.runs[method][s]["eval"]["mean_success"]) for s in data.seeds]


def task_success(data: Data, method: str, task: str) -> list[float]:
    return [float(data.runs[method][s]["eval"]["success"][task]) for s in data.seeds]


def difficulty(data: Data) -> dict[str, float]:
    """1 - final success per task, averaged over every method and seed."""
    return {t: 1.0 - mean(v for m in data.methods for v in task_success(data, m, t)) for t in data.tasks}


def run_wall_time(r: dict[str, Any]) -> float:
    return float(r["run"].get("wall_time", 0.0)) + float(r["eval"].get("wall_time", 0.0))


def compute_metrics(data: Data) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for m in data.methods:
        fs = final_success(data, m)
        entry: dict[str, Any] = {
            "success_mean": _r6(mean(fs)),
            "success_std": _r6(std(fs)),
            "per_task": {t: _r6(mean(task_success(data, m, t))) for t in data.tasks},
            "seeds": len(data.seeds),
        }
        if data.routed(m):
            entry["depth_mean"] = _r6(mean(data.runs[m][s]["routes"]["mean"]["depth"] for s in data.seeds))
            entry["modules_used_mean"] = _r6(mean(data.runs[m][s]["routes"]["mean"]["modules_used"]
                                                  for s in data.seeds))
        methods[m] = entry
    from d2r.report_stats import statistics

    st = statistics(data)
    for m, agg in st.pop("aggregates").items():   # the point estimate of the mean is success_mean
        methods[m].update(iqm=agg["iqm"], iqm_low=agg["iqm_low"], iqm_high=agg["iqm_high"],
                          success_mean_low=agg["mean_low"], success_mean_high=agg["mean_high"])
    return {"methods": methods, "statistics": st}


CURVES_HEADER = "method,task,env_steps,success\n"
MEAN_TASK = "(mean over tasks)"   # sorts before the task names in `dvc plots` panels


def curves_csv(data: Data) -> str:
    """Learning curves for `dvc plots`: mean over seeds per method, task and periodic evaluation."""
    lines = [CURVES_HEADER]
    for m in data.methods:
        logs = [data.runs[m][s]["eval_log"] for s in data.seeds]
        for task, key in [(MEAN_TASK, None)] + [(t, t) for t in data.tasks]:
            per_seed = [[(r["env_steps"], r["mean_success"] if key is None else r["success"][key]) for r in log]
                        for log in logs]
            xs, ys, _, _ = curve(per_seed)
            lines += [f"{m},{task},{x},{_r6(y)}\n" for x, y in zip(xs, ys)]
    return "".join(lines)


def compute_timing(data: Data) -> dict[str, Any]:
    methods = {m: _r6(sum(run_wall_time(data.runs[m][s]) for s in data.seeds)) for m in data.methods}
    return {"methods": methods, "wall_time": _r6(sum(methods.values()))}


def curve(records_per_seed: list[list[tuple[int, float]]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """x (union of env steps), mean, min and max over the seeds that have a value at x."""
    by_x: dict[int, list[float]] = {}
    for records in records_per_seed:
        for x, y in records:
            by_x.setdefault(int(x), []).append(float(y))
    xs = sorted(by_x)
    return xs, [mean(by_x[x]) for x in xs], [min(by_x[x]) for x in xs], [max(by_x[x]) for x in xs]


# ----------------------------------------------------------------------------------------------
# Figures

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


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def _color(data: Data, method: str) -> str:
    return COLORS[data.methods.index(method) % len(COLORS)]


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


def fig_learning_curves(data: Data, figs: Figures) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for m in data.methods:
        per_seed = [[(rec["env_steps"], rec["mean_success"]) for rec in data.runs[m][s]["eval_log"]]
                    for s in data.seeds]
        xs, ys, lo, hi = curve(per_seed)
        color = _color(data, m)
        if len(data.seeds) > 1 and xs:
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=hi + lo[::-1], mode="lines", fill="toself",
                                     fillcolor=_rgba(color, 0.18),
                                     line={"width": 0}, hoverinfo="skip", legendgroup=m, showlegend=False,
                                     name=f"{m} (min-max over seeds)"))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=m, legendgroup=m,
                                 line={"color": color, "width": 2.5}, marker={"size": 5},
                                 hovertemplate=f"{m}<br>env steps %{{x:,}}<br>success %{{y:.1%}}<extra></extra>"))
    spread = "line: mean over seeds, band: min to max over seeds" if len(data.seeds) > 1 else "one seed"
    fig.update_layout(title=f"Mean success rate over tasks during training ({spread})",
                      xaxis_title="environment steps per task", yaxis_title="success rate",
                      yaxis={"range": [-0.02, 1.02], "tickformat": ".0%"})
    return figs.html(fig, "fig-learning-curves", 460)


def _grid(n: int, max_cols: int = 5) -> tuple[int, int]:
    cols = min(max_cols, n)
    return math.ceil(n / cols), cols


def fig_task_curves(data: Data, figs: Figures) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows, cols = _grid(len(data.tasks))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=data.tasks, shared_yaxes=True,
                        horizontal_spacing=0.03, vertical_spacing=0.5 / max(rows, 1) if rows > 1 else 0.1)
    for i, t in enumerate(data.tasks):
        r, c = divmod(i, cols)
        for m in data.methods:
            per_seed = [[(rec["env_steps"], rec["success"][t]) for rec in data.runs[m][s]["eval_log"]]
                        for s in data.seeds]
            xs, ys, _, _ = curve(per_seed)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=m, legendgroup=m, showlegend=(i == 0),
                                     line={"color": _color(data, m), "width": 2},
                                     hovertemplate=f"{m} / {t}<br>env steps %{{x:,}}<br>success %{{y:.0%}}"
                                                   "<extra></extra>"),
                          row=r + 1, col=c + 1)
    fig.update_yaxes(range=[-0.05, 1.05], tickformat=".0%")
    fig.update_annotations(font_size=12)
    fig.update_layout(title="Success rate per task during training (mean over seeds)")
    return figs.html(fig, "fig-task-curves", 120 + 230 * rows)


def fig_final_success(data: Data, figs: Figures) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for m in data.methods:
        fs = final_success(data, m)
        fig.add_trace(go.Bar(x=[m], y=[mean(fs)], name=m, marker_color=_color(data, m),
                             error_y={"type": "data", "array": [std(fs)], "visible": len(fs) > 1},
                             hovertemplate=f"{m}<br>mean %{{y:.1%}} +- {std(fs):.1%}<extra></extra>",
                             showlegend=False))
        fig.add_trace(go.Scatter(x=[m] * len(fs), y=fs, mode="markers", showlegend=False,
                                 marker={"color": "#222", "size": 7, "symbol": "circle-open"},
                                 text=[f"seed {s}" for s in data.seeds],
                                 hovertemplate=f"{m} %{{text}}<br>success %{{y:.1%}}<extra></extra>"))
    fig.update_layout(title="Final success rate per method (bar: mean over seeds, whisker: std, circles: seeds)",
                      yaxis={"range": [0, 1.05], "tickformat": ".0%", "title": "success rate"})
    return figs.html(fig, "fig-final-success", 420)


def fig_task_heatmap(data: Data, figs: Figures) -> str:
    import plotly.graph_objects as go

    diff = difficulty(data)
    tasks = sorted(data.tasks, key=lambda t: (diff[t], data.tasks.index(t)))
    z = [[mean(task_success(data, m, t)) for m in data.methods] for t in tasks]
    text = [[f"{v:.0%}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=data.methods, y=tasks, zmin=0, zmax=1, colorscale="Viridis",
                               text=text, texttemplate="%{text}", colorbar={"title": "success", "tickformat": ".0%"},
                               hovertemplate="%{y} / %{x}<br>success %{z:.1%}<extra></extra>"))
    fig.update_layout(title="Final success per task and method (mean over seeds; easiest task on top)",
                      yaxis={"autorange": "reversed", "showgrid": False}, xaxis={"showgrid": False, "side": "top"},
                      margin={"l": 220, "t": 110})
    return figs.html(fig, "fig-task-success", max(320, 160 + 26 * len(tasks)))


def _seed_mean(values: list[list[float]]) -> list[float]:
    return [mean(col) for col in zip(*values)]


def fig_depth_per_task(data: Data, m: str, figs: Figures) -> str:
    import plotly.graph_objects as go

    def per_seed(key: str, t: str) -> list[float]:
        return [data.runs[m][s]["routes"]["per_task"][t][key] for s in data.seeds]

    fig = go.Figure()
    for key, label, color in (("depth_mean", "route depth", "#1f77b4"),
                              ("modules_used_mean", "modules used", "#ff7f0e")):
        vals = [per_seed(key, t) for t in data.tasks]
        fig.add_trace(go.Bar(x=data.tasks, y=[mean(v) for v in vals], name=label, marker_color=color,
                             error_y={"type": "data", "array": [std(v) for v in vals], "visible": len(data.seeds) > 1},
                             hovertemplate=f"%{{x}}<br>{label} %{{y:.2f}}<extra></extra>"))
    n = data.runs[m][data.seeds[0]]["routes"]["num_modules"]
    fig.update_layout(barmode="group", title=f"{m}: mean route depth and modules used per task "
                                             f"(final evaluation, greedy routes, N = {n} modules)",
                      yaxis={"title": "modules", "range": [0, n + 0.5]}, xaxis={"tickangle": -30})
    return figs.html(fig, f"fig-depth-{_slug(m)}", 430)


def _edge_labels(n: int) -> tuple[list[str], list[str]]:
    """Rows: node n = 1..N-1 is module M{n+1} (1-based, as in the spec), row N-1 the output."""
    rows = [f"M{i + 2}" for i in range(n - 1)] + ["out"]
    cols = [f"M{j + 1}" for j in range(n)]
    return rows, cols


def fig_edge_heatmaps(data: Data, m: str, figs: Figures) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = data.runs[m][data.seeds[0]]["routes"]["num_modules"]
    row_labels, col_labels = _edge_labels(n)
    rows, cols = _grid(len(data.tasks), 4)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=data.tasks, horizontal_spacing=0.05,
                        vertical_spacing=0.35 / rows if rows > 1 else 0.1)
    for i, t in enumerate(data.tasks):
        mats = [data.runs[m][s]["routes"]["per_task"][t]["edge_frequency"] for s in data.seeds]
        z = []
        for r in range(n):
            row = []
            for j in range(n):
                possible = r == n - 1 or j <= r   # module r+1 (0-based) picks among 0..r; output among all
                row.append(mean(mat[r][j] for mat in mats) if possible else None)
            z.append(row)
        fig.add_trace(go.Heatmap(z=z, x=col_labels, y=row_labels, coloraxis="coloraxis",
                                 hovertemplate=f"{t}<br>%{{y}} takes %{{x}}: %{{z:.1%}} of steps<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(autorange="reversed", showgrid=False, tickfont={"size": 9})
    fig.update_xaxes(showgrid=False, tickfont={"size": 9}, tickangle=-90)
    fig.update_annotations(font_size=12)
    fig.update_layout(title=f"{m}: edge-selection frequency per task (mean over seeds)",
                      plot_bgcolor="#cfcfcf",   # impossible edges (no value) show grey
                      coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1,
                                 "colorbar": {"title": "frequency", "tickformat": ".0%"}})
    return (figs.html(fig, f"fig-edges-{_slug(m)}", 110 + 330 * rows)
            + '<p class="note">Row: the receiving node (modules M2 to MN, then the output node "out"); column: '
              'the source module; cell: fraction of evaluation steps whose greedy route selects that edge '
              '(a row sums to the number of edges the node takes, top-k). Grey cells are impossible edges: '
              'a module only takes earlier modules.</p>')


def fig_module_use(data: Data, m: str, figs: Figures) -> str:
    import plotly.graph_objects as go

    n = data.runs[m][data.seeds[0]]["routes"]["num_modules"]
    z = [_seed_mean([data.runs[m][s]["routes"]["per_task"][t]["module_use"] for s in data.seeds])
         for t in data.tasks]
    fig = go.Figure(go.Heatmap(z=z, x=[f"M{j + 1}" for j in range(n)], y=data.tasks, zmin=0, zmax=1,
                               colorscale="Blues", colorbar={"title": "used", "tickformat": ".0%"},
                               hovertemplate="%{y}<br>%{x} used in %{z:.1%} of steps<extra></extra>"))
    fig.update_layout(title=f"{m}: how often each module lies on the route to the output, per task",
                      yaxis={"autorange": "reversed", "showgrid": False}, xaxis={"showgrid": False},
                      margin={"l": 220})
    return figs.html(fig, f"fig-module-use-{_slug(m)}", max(300, 140 + 24 * len(data.tasks)))


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


def fig_depth_vs_difficulty(data: Data, figs: Figures) -> tuple[str, dict[str, float | None]]:
    import plotly.graph_objects as go

    diff = difficulty(data)
    xs = spread_ties([diff[t] for t in data.tasks])
    depth = {m: [mean(data.runs[m][s]["routes"]["per_task"][t]["depth_mean"] for s in data.seeds) for t in data.tasks]
             for m in data.routed_methods}
    points = [(x, y) for m in data.routed_methods for x, y in zip(xs, depth[m])]
    y_range = (max(y for _, y in points) - min(y for _, y in points)) or 1.0
    labelled = iter(isolated(points, 0.07, 0.08 * y_range))
    fig = go.Figure()
    correlations: dict[str, float | None] = {}
    for m in data.routed_methods:
        ys = depth[m]
        r = pearson([diff[t] for t in data.tasks], ys)
        correlations[m] = r
        label = f"{m} (Pearson r = {r:.2f})" if r is not None else f"{m} (r: n/a)"
        text = [t if next(labelled) else "" for t in data.tasks]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=text, textposition="top center",
                                 textfont={"size": 10}, name=label, marker={"color": _color(data, m), "size": 10},
                                 customdata=[[t, diff[t]] for t in data.tasks],
                                 hovertemplate=f"{m}<br>%{{customdata[0]}}<br>difficulty %{{customdata[1]:.2f}}"
                                               "<br>depth %{y:.2f}<extra></extra>"))
    fig.update_layout(title="Route depth against task difficulty (difficulty = 1 - final success, "
                            "mean over all methods and seeds)",
                      xaxis={"title": "task difficulty", "range": [-0.1, 1.1]}, yaxis={"title": "mean route depth"},
                      showlegend=True, legend={"orientation": "h", "y": -0.2})
    rows = [[esc(t), f"{diff[t]:.2f}"] + [f"{depth[m][i]:.2f}" for m in data.routed_methods]
            for i, t in enumerate(data.tasks)]
    note = ('<p class="note">Tasks with the same difficulty are drawn side by side (0.015 apart, all of them within 0.15); '
            'a name is written next to a point only where it does not crowd another: hover for every task, '
            'and the table gives the values.</p>')
    return (figs.html(fig, "fig-depth-difficulty", 480) + note
            + table(["task", "difficulty"] + [f"depth {esc(m)}" for m in data.routed_methods], rows)), correlations


def fig_depth_evolution(data: Data, m: str, figs: Figures) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows, cols = _grid(len(data.tasks))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=data.tasks, shared_yaxes=True,
                        horizontal_spacing=0.03, vertical_spacing=0.5 / max(rows, 1) if rows > 1 else 0.1)
    n = data.runs[m][data.seeds[0]]["routes"]["num_modules"]
    for i, t in enumerate(data.tasks):
        for key, label, color in (("depth", "route depth", "#1f77b4"), ("modules_used", "modules used", "#ff7f0e")):
            per_seed = []
            for s in data.seeds:
                ev = data.runs[m][s]["routes"]["evolution"]
                per_seed.append(list(zip(ev["env_steps"], ev[key][t])))
            xs, ys, _, _ = curve(per_seed)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label, legendgroup=key,
                                     showlegend=(i == 0), line={"color": color, "width": 2}, marker={"size": 4},
                                     hovertemplate=f"{t}<br>env steps %{{x:,}}<br>{label} %{{y:.2f}}<extra></extra>"),
                          row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(range=[0, n + 0.5])
    fig.update_annotations(font_size=12)
    fig.update_layout(title=f"{m}: route depth and modules used per task during training (mean over seeds, "
                            f"N = {n} modules)")
    return figs.html(fig, f"fig-depth-time-{_slug(m)}", 120 + 230 * rows)


def fig_ablation(data: Data, figs: Figures) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    variants = data.routed_methods
    fig = make_subplots(rows=1, cols=2, subplot_titles=["final success rate", "mean route depth"],
                        horizontal_spacing=0.1)
    for m in variants:
        fs = final_success(data, m)
        depth = [data.runs[m][s]["routes"]["mean"]["depth"] for s in data.seeds]
        common = {"marker_color": _color(data, m), "showlegend": False, "name": m}
        fig.add_trace(go.Bar(x=[m], y=[mean(fs)], error_y={"type": "data", "array": [std(fs)]},
                             hovertemplate=f"{m}<br>success %{{y:.1%}}<extra></extra>", **common), row=1, col=1)
        fig.add_trace(go.Bar(x=[m], y=[mean(depth)], error_y={"type": "data", "array": [std(depth)]},
                             hovertemplate=f"{m}<br>depth %{{y:.2f}}<extra></extra>", **common), row=1, col=2)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.05], row=1, col=1)
    fig.update_layout(title="D2R variants: final success and route depth (mean +- std over seeds)")
    return figs.html(fig, "fig-ablation", 430)


# ----------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: Helvetica, Arial, sans-serif; color: #222; margin: 0 auto; max-width: 1280px;
       padding: 0 24px 60px; line-height: 1.45; }
h1 { margin-top: 28px; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 42px; }
h3 { margin-top: 28px; }
nav { background: #f6f6f6; padding: 8px 14px; border-radius: 6px; }
nav a { margin-right: 16px; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 9px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
tr.best td { font-weight: bold; }
.note { color: #555; font-size: 14px; max-width: 980px; }
.figure { margin: 12px 0 26px; border: 1px solid #eee; }
pre { background: #f8f8f8; padding: 10px; font-size: 12px; overflow-x: auto; }
#js-errors { color: #a00; background: #fee; border: 1px solid #a00; white-space: pre-wrap; }
.kv td:first-child { text-align: left; color: #555; }
.kv td { text-align: left; }
.warn { background: #fff4e0; border: 1px solid #e0a030; border-left: 6px solid #e08a00; padding: 8px 14px;
        margin: 12px 0; max-width: 980px; font-size: 14px; }
.warn ul { margin: 4px 0 0; padding-left: 20px; }
.ci { color: #666; font-size: 12px; }
.videos { display: flex; flex-wrap: wrap; gap: 10px; }
figure.video { margin: 0; font-size: 12px; color: #444; }
figure.video video { display: block; background: #000; }
"""

# Collects script errors into <pre id="js-errors"> (hidden while empty) and checks, once the page
# has loaded, that every plotly figure drew its SVG. Tests read this element; readers see a red box.
ERROR_HOOK = """
window.d2rErrors = [];
function d2rShowErrors() {
  var el = document.getElementById("js-errors");
  if (!el) return;
  el.textContent = window.d2rErrors.join("\\n");
  el.hidden = window.d2rErrors.length === 0;
}
window.addEventListener("error", function (e) {
  window.d2rErrors.push("error: " + (e.message || e.type) + (e.filename ? " (" + e.filename + ":" + e.lineno + ")" : ""));
  d2rShowErrors();
});
window.addEventListener("unhandledrejection", function (e) {
  window.d2rErrors.push("unhandled rejection: " + e.reason);
  d2rShowErrors();
});
window.addEventListener("load", function () {
  if (typeof Plotly === "undefined") { window.d2rErrors.push("plotly.js did not load"); }
  var figs = document.querySelectorAll("div.plotly-graph-div");
  for (var i = 0; i < figs.length; i++) {
    if (!figs[i].querySelector(".main-svg")) { window.d2rErrors.push("figure not rendered: " + figs[i].id); }
  }
  d2rShowErrors();
});
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def pm(xs: list[float]) -> str:
    return f"{pct(mean(xs))} &plusmn; {100 * std(xs):.1f}" if len(xs) > 1 else pct(mean(xs))


def table(header: list[str], rows: list[list[Any]], left: int | set[int] = 1,
          row_classes: list[str] | None = None) -> str:
    """Cells are HTML already (callers escape). Left-aligned: the first `left` columns, or those in a set."""
    lefts = set(range(left)) if isinstance(left, int) else left
    out = ["<table><thead><tr>"]
    out += [f'<th class="l">{h}</th>' if i in lefts else f"<th>{h}</th>" for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for k, row in enumerate(rows):
        cls = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        out.append(f"<tr{cls}>" + "".join(f'<td class="l">{c}</td>' if i in lefts else f"<td>{c}</td>"
                                           for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def kv_table(items: list[tuple[str, Any]]) -> str:
    return '<table class="kv"><tbody>' + "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in items) + "</tbody></table>"


def _fmt_int(x: Any) -> str:
    return f"{int(x):,}" if isinstance(x, (int, float)) and not isinstance(x, bool) else esc(x)


def _fmt_seconds(x: float) -> str:
    x = float(x)
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def _first_config(data: Data) -> dict[str, Any]:
    return data.runs[data.methods[0]][data.seeds[0]]["run"].get("config", {})


def _code(version: dict | None) -> str:
    """A code version of provenance.code_version: "commit 1a2b3c4d5e6f (uncommitted changes)"."""
    if not version or not version.get("commit"):
        return "not recorded (not a git checkout)"
    return f"commit {version['commit'][:12]}" + (" (uncommitted changes)" if version.get("dirty") else "")


def code_versions(data: Data) -> str:
    """The code that trained the runs (run.json), and the one setup ran with (environment.json)."""
    trained = sorted({_code(data.runs[m][s]["run"].get("code")) for m in data.methods for s in data.seeds})
    return f"training: {'; '.join(trained)}; setup: {_code(data.environment.get('code'))}"


def section_header(data: Data) -> str:
    env = data.environment
    cfg = _first_config(data)
    budget = cfg.get("experiment", {}).get("budget", {})
    ts = env["task_set"]
    v = env["versions"]
    items = [
        ("benchmark", f"{ts['benchmark']}, {ts['num_tasks']} tasks, {ts['goal_mode']} goals"),
        ("methods", ", ".join(data.methods)),
        ("seeds", ", ".join(map(str, data.seeds))),
        ("budget preset", f"{data.exp_raw['preset']}: {budget.get('epochs', '?')} epochs "
                          f"({budget.get('epochs', 0) * ts['max_episode_steps']:,} env steps per task), "
                          f"{budget.get('updates_per_epoch', '?')} updates per epoch, "
                          f"batch {budget.get('batch_per_task', '?')} per task"),
        ("final evaluation", f"{data.exp_raw['final_eval_episodes']} episodes per task, greedy routes, tanh(mean)"),
        ("device", f"{env['device']['resolved']} (requested {env['device']['requested']})"
                   + (f", {env['device']['gpu_name']}" if env['device'].get('gpu_name') else "")),
        ("software", f"python {v.get('python')}, torch {v.get('torch')}, mujoco {v.get('mujoco')}, "
                     f"metaworld {v.get('metaworld')}, gymnasium {v.get('gymnasium')}"),
        ("code", code_versions(data)),
    ]
    return kv_table(items)


def section_summary(data: Data, metrics: dict[str, Any], timing: dict[str, Any], figs: Figures) -> str:
    best = max(data.methods, key=lambda m: (metrics["methods"][m]["success_mean"], -data.methods.index(m)))
    rows, classes = [], []
    for m in data.methods:
        fs = final_success(data, m)
        counts = data.runs[m][data.seeds[0]]["run"].get("param_counts", {})
        mm = metrics["methods"][m]
        rows.append([
            esc(m), pm(fs), " ".join(pct(x) for x in fs),
            f"{mm['depth_mean']:.2f}" if "depth_mean" in mm else "&ndash;",
            _fmt_int(counts.get("policy", "?")), _fmt_int(counts.get("q", "?")),
            _fmt_seconds(timing["methods"][m]),
        ])
        classes.append("best" if m == best else "")
    spread = "mean &plusmn; std over seeds (population std)" if len(data.seeds) > 1 else "one seed"
    from d2r import report_stats

    return (table(["method", "final success", "per seed", "route depth", "policy params", "Q params",
                   "wall time (all seeds)"], rows, row_classes=classes)
            + f'<p class="note">Final success = mean over tasks of the success rate in the final evaluation '
              f'({data.exp_raw["final_eval_episodes"]} episodes per task, greedy routes, deterministic actions); '
              f'{spread}. Bold: the best mean. Parameter counts are one network each (policy, one Q); '
              f'wall time = training plus final evaluation, summed over seeds.</p>'
            + report_stats.section(data, metrics, figs))


def section_per_task(data: Data) -> str:
    diff = difficulty(data)
    rows = []
    for t in data.tasks:
        rows.append([esc(t), f"{diff[t]:.2f}"] + [pm(task_success(data, m, t)) for m in data.methods])
    return (table(["task", "difficulty"] + [esc(m) for m in data.methods], rows)
            + '<p class="note">Final success rate per task, mean &plusmn; std over seeds. '
              'Difficulty = 1 - final success on the task averaged over every method and seed.</p>')


def section_params_counts(data: Data) -> str:
    rows = []
    for m in data.methods:
        counts = [data.runs[m][s]["run"].get("param_counts", {}) for s in data.seeds]
        cfg = data.runs[m][data.seeds[0]]["run"].get("config", {}).get("method", {})
        c = counts[0]
        policy, q = c.get("policy"), c.get("q")
        total = policy + 2 * q if isinstance(policy, int) and isinstance(q, int) else None
        rows.append([esc(m), esc(cfg.get("net", "?")), _fmt_int(policy), _fmt_int(q),
                     _fmt_int(total) if total is not None else "?",
                     f"<code>{esc(json.dumps(cfg.get('net_args', {}), sort_keys=True))}</code>"])
    return (table(["method", "network", "policy", "one&nbsp;Q", "policy&nbsp;+&nbsp;2&nbsp;Q", "network sizes"], rows,
                  left={0, 1, 5})
            + '<p class="note">Trainable parameters. SAC trains one policy and two Q networks '
              '(targets are copies and not counted).</p>')


def section_runs(data: Data) -> str:
    rows = []
    for m in data.methods:
        for s in data.seeds:
            r = data.runs[m][s]
            run_info, ev = r["run"], r["eval"]
            rows.append([esc(m), str(s), _fmt_int(run_info.get("epochs", "?")),
                         _fmt_int(run_info.get("env_steps_per_task", "?")), _fmt_int(run_info.get("updates", "?")),
                         str(len(r["eval_log"])), _fmt_seconds(run_info.get("wall_time", 0.0)),
                         _fmt_seconds(ev.get("wall_time", 0.0)) if "wall_time" in ev else "&ndash;",
                         pct(ev["mean_success"])])
    return table(["method", "seed", "epochs", "env steps / task", "updates", "periodic evals",
                  "train time", "eval time", "final success"], rows, left=2)


#: switches that only act on the router: shown for D2R variants only (MethodConfig has them all)
ROUTING_SWITCHES = ("resrouting", "policy_route", "route_balance", "temperature")


def applicable_settings(method: dict[str, Any]) -> dict[str, Any]:
    """A method's settings without the routing switches when its network has no router (net != d2r)."""
    if method.get("net") == "d2r":
        return dict(method)
    return {k: v for k, v in method.items() if k not in ROUTING_SWITCHES}


def section_parameters(data: Data) -> str:
    cfg = _first_config(data)
    env = data.environment
    parts = []
    exp_cfg = dict(cfg.get("experiment", {}))
    parts.append("<h3>Experiment (params.yaml)</h3>")
    parts.append(f"<pre>{esc(yaml.safe_dump({data.experiment: data.exp_raw}, sort_keys=True))}</pre>")
    parts.append("<h3>Budget, environment, SAC and device, as the training runs saw them</h3>")
    shown = {"budget": exp_cfg.get("budget"), "tasks (resolved)": exp_cfg.get("tasks"),
             "env": cfg.get("env"), "sac": cfg.get("sac"), "device": cfg.get("device")}
    parts.append(f"<pre>{esc(yaml.safe_dump(shown, sort_keys=True))}</pre>")
    parts.append("<h3>Methods</h3>")
    parts.append('<p class="note">As the runs saw them; the routing switches (resrouting, policy_route, '
                 'route_balance, temperature) are shown only for methods with a router (net d2r).</p>')
    methods = {m: applicable_settings(data.runs[m][data.seeds[0]]["run"].get("config", {})
                                      .get("method", data.methods_raw[m]))
               for m in data.methods}
    parts.append(f"<pre>{esc(yaml.safe_dump(methods, sort_keys=True))}</pre>")
    parts.append("<h3>Software and machine (setup job)</h3>")
    parts.append(kv_table(sorted(env["versions"].items()) + [(f"platform.{k}", v) for k, v in sorted(env["platform"].items())]
                          + [(f"device.{k}", v) for k, v in sorted(env["device"].items())]))
    parts.append("<h3>Task set</h3>")
    parts.append(kv_table(sorted((k, ", ".join(v) if isinstance(v, list) and k == "tasks" else v)
                                 for k, v in env["task_set"].items())))
    return "".join(parts)


def render(data: Data, metrics: dict[str, Any], timing: dict[str, Any]) -> str:
    import plotly.offline

    figs = Figures()
    sections: list[tuple[str, str, str]] = []   # (anchor, title, html)
    sections.append(("summary", "Summary", section_summary(data, metrics, timing, figs)))
    sections.append(("curves", "Learning curves",
                     fig_learning_curves(data, figs) + fig_task_curves(data, figs)
                     + '<p class="note">Periodic evaluations during training (greedy routes, deterministic '
                       'actions). Env steps are counted per task. Hover for values; click a legend entry to '
                       'hide a method, double-click to show it alone.</p>'))
    sections.append(("final", "Final success",
                     fig_final_success(data, figs) + fig_task_heatmap(data, figs) + section_per_task(data)))
    routed = data.routed_methods
    if routed:
        parts = ['<p class="note">Depth of a route = number of modules on the longest path of selected '
                 'edges that ends at the output node; a module is used when a path of selected edges leads from '
                 'it to the output. Measured on the greedy routes of the final evaluation, per step, then '
                 'averaged per task and over seeds.</p>']
        depth_fig, corr = fig_depth_vs_difficulty(data, figs)
        for m in routed:
            parts.append(f"<h3>{esc(m)}</h3>")
            parts.append(fig_depth_per_task(data, m, figs))
            parts.append(fig_edge_heatmaps(data, m, figs))
            parts.append(fig_module_use(data, m, figs))
            parts.append(fig_depth_evolution(data, m, figs))
        parts.append("<h3>Depth against task difficulty</h3>")
        parts.append(depth_fig)
        corr_text = "; ".join(f"{esc(m)}: r = {r:.2f}" if r is not None else f"{esc(m)}: r n/a (fewer than 3 tasks "
                              "or no spread)" for m, r in corr.items())
        parts.append(f'<p class="note">A positive correlation means harder tasks take deeper routes. '
                     f'{corr_text}.</p>')
        sections.append(("routing", "Routing depth (D2R)", "".join(parts)))
    if len(routed) >= 2:
        base = "d2r" if "d2r" in routed else routed[0]
        rows = []
        for m in routed:
            fs, fb = final_success(data, m), final_success(data, base)
            depth = [data.runs[m][s]["routes"]["mean"]["depth"] for s in data.seeds]
            delta = mean(fs) - mean(fb)
            rows.append([esc(m), pm(fs), f"{100 * delta:+.1f} pt" if m != base else "&ndash;",
                         f"{mean(depth):.2f} &plusmn; {std(depth):.2f}",
                         esc(json.dumps({k: v for k, v in data.methods_raw[m].items() if k != "net"},
                                        sort_keys=True))])
        sections.append(("ablation", "D2R variants",
                         fig_ablation(data, figs)
                         + table(["variant", "final success", f"vs {esc(base)}", "route depth", "switches"], rows,
                                 left={0, 4})
                         + '<p class="note">Switches: resrouting = ResRouting in replayed-route updates; '
                           'policy_route = route used in the policy update (replayed behaviour route or the '
                           'current greedy path); route_balance = per-task routing temperature from alpha; '
                           'fixed_depth = chain through every module.</p>'))
    from d2r import report_videos

    sections.append(("videos", "Rollout videos",
                     report_videos.section(data.videos, data.render is not None and data.render.enabled,
                                           data.methods, data.tasks)))
    sections.append(("sizes", "Network sizes", section_params_counts(data)))
    sections.append(("runs", "Runs", section_runs(data)))
    sections.append(("parameters", "Parameters and versions", section_parameters(data)))

    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{h}</section>' for a, t, h in sections)
    title = f"D2R experiment {data.experiment}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{esc(title)}</title>\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<script>{ERROR_HOOK}</script>\n"
        f"<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n"
        "<pre id=\"js-errors\" hidden></pre>\n"
        f"<h1>{esc(title)}</h1>\n{section_header(data)}\n<nav>{nav}</nav>\n{body}\n"
        f"<p class=\"note\">Generated by <code>python -m d2r report</code> from results/{esc(data.experiment)} "
        f"({len(figs.ids)} figures). Rebuilding from the same results gives the same file.</p>\n"
        f"<script>{report_videos.SCRIPT}</script>\n"
        "</body>\n</html>\n"
    )
