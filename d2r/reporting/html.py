"""The report's sections as HTML: tables, notes and the figures between them.

Each section takes its numbers from d2r.reporting.metrics (or the metrics JSON it built) and its
figures from d2r.reporting.figures; this module escapes and formats. Cells of `table` are HTML
already: callers escape what they put in.
"""

from __future__ import annotations

import dataclasses
import json
from html import escape
from typing import Any

import yaml

from d2r.config import MethodConfig
from d2r.reporting import figures  # mx: `metrics` names the metrics JSON data here
from d2r.reporting import metrics as mx
from d2r.reporting.figures import Figures
from d2r.reporting.load import Data
from d2r.reporting.metrics import OverSeeds

# ----------------------------------------------------------------------------------------------
# Building blocks


def esc(x: Any) -> str:
    return escape(str(x), quote=True)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def pm(xs: OverSeeds) -> str:
    """mean +- std over seeds, or the one value."""
    return f"{pct(xs.mean)} &plusmn; {100 * xs.std:.1f}" if len(xs.values) > 1 else pct(xs.mean)


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


def _interval(point: float, low: float, high: float, fmt=pct) -> str:
    return f"{fmt(point)} <span class=\"ci\">[{fmt(low)}, {fmt(high)}]</span>"


def _code(version: dict | None) -> str:
    """A code version of provenance.code_version: "commit 1a2b3c4d5e6f (uncommitted changes)"."""
    if not version or not version.get("commit"):
        return "not recorded (not a git checkout)"
    return f"commit {version['commit'][:12]}" + (" (uncommitted changes)" if version.get("dirty") else "")


def code_versions(data: Data) -> str:
    """The code that trained the runs (run.json), and the one setup ran with (environment.json)."""
    trained = sorted({_code(data.runs[m][s]["run"].get("code")) for m in data.methods for s in data.seeds})
    return f"training: {'; '.join(trained)}; setup: {_code(data.environment.get('code'))}"


# ----------------------------------------------------------------------------------------------
# Sections, in page order

#: below this many env steps per task, 0% success everywhere is expected (the paper trains 1M-1.5M)
SMALL_BUDGET = 100_000
#: the two protocols of the final evaluation (d2r/sac/evaluation.py), as the page names them
PAPER_LABEL = "the paper's protocol"
METAWORLD_LABEL = "Meta-World's protocol (metaworld.evaluation)"


def section_header(data: Data) -> str:
    env = data.environment
    budget = data.run_config(data.methods[0]).experiment.budget
    ts = env["task_set"]
    v = env["versions"]
    setting = mx.experiment_setting(data)   # the episodes the runs were evaluated with (eval.json)
    items = [
        ("benchmark", f"{ts['benchmark']}, {ts['num_tasks']} tasks, {ts['goal_mode']} goals"),
        ("methods", ", ".join(data.methods)),
        ("seeds", ", ".join(map(str, data.seeds))),
        ("budget preset", f"{data.config.preset}: {budget.epochs} epochs "
                          f"({budget.epochs * ts['max_episode_steps']:,} env steps per task), "
                          f"{budget.updates_per_epoch} updates per epoch, batch {budget.batch_per_task} per task"),
        ("final evaluation", f"two protocols, greedy routes, tanh(mean): {PAPER_LABEL} "
                             f"({setting['paper_protocol_episodes']} episodes per task, the runs' goals, "
                             f"{ts['max_episode_steps']}-step episodes) and {METAWORLD_LABEL} "
                             f"({setting['metaworld_protocol_episodes']} episodes per task over the 50 goal "
                             f"variations, 500-step episodes ended at success)"),
        ("device", f"{env['device']['resolved']} (requested {env['device']['requested']})"
                   + (f", {env['device']['gpu_name']}" if env['device'].get('gpu_name') else "")),
        ("software", f"python {v.get('python')}, torch {v.get('torch')}, mujoco {v.get('mujoco')}, "
                     f"metaworld {v.get('metaworld')}, gymnasium {v.get('gymnasium')}"),
        ("code", code_versions(data)),
    ]
    return kv_table(items)


def section_summary(data: Data, metrics: dict[str, Any], timing: dict[str, Any], figs: Figures) -> str:
    best = mx.best_method(data, metrics)
    setting = metrics["experiment"]     # the episodes the runs were evaluated with (eval.json)
    rows, classes = [], []
    for m in data.methods:
        fs, fr, mw = mx.final_success(data, m), mx.final_return(data, m), mx.metaworld_success(data, m)
        counts = data.runs[m][data.seeds[0]]["run"].get("param_counts", {})
        mm = metrics["methods"][m]
        rows.append([
            esc(m), pm(fs), " ".join(pct(x) for x in fs.values), pm_number(fr), pm(mw),
            f"{mm['depth_mean']:.2f}" if "depth_mean" in mm else "&ndash;",
            _fmt_int(counts.get("policy", "?")), _fmt_int(counts.get("q", "?")),
            _fmt_seconds(timing["methods"][m]),
        ])
        classes.append("best" if m == best else "")
    spread = "mean &plusmn; std over seeds (population std)" if len(data.seeds) > 1 else "one seed"
    bold = ("Bold: the best mean final success." if best else
            "No method is in bold: the best mean final success is shared.")
    parts = [table(["method", "final success", "per seed", "final return", "success, Meta-World protocol",
                    "route depth", "policy params", "Q params", "wall time (all seeds)"], rows, row_classes=classes),
             f'<p class="note">Final success = mean over tasks of the success rate in the final evaluation under '
             f'{PAPER_LABEL} ({setting["paper_protocol_episodes"]} episodes per task, greedy routes, deterministic '
             f'actions, success if the flag fired at any step); final return = mean over tasks of the mean '
             f'episode return (env rewards, unscaled) in the same episodes. Success under {METAWORLD_LABEL}: '
             f'{setting["metaworld_protocol_episodes"]} episodes per task over the benchmark\'s 50 goal variations, '
             f'500-step episodes that end at success (the protocol of Meta-World+ and later work on Meta-World '
             f'3). {spread}. {bold} Parameter counts are one network each (policy, one Q); wall time = '
             f'training plus final evaluation, summed over seeds.</p>']
    steps = setting["env_steps_per_task"]
    if all(metrics["methods"][m]["success_mean"] == 0 for m in data.methods):
        why = (f"At {steps:,} env steps per task that is expected (the paper trains 1.5M per task on MT10, 1M "
               f"on MT50; the smoke experiment checks the pipeline, not learning)." if steps < SMALL_BUDGET
               else f"(after {steps:,} env steps per task)")
        parts.append(f'<p class="note" id="no-success"><b>No method succeeded on any task.</b> {why} The '
                     f'returns still tell runs apart.</p>')
    return "".join(parts) + section_comparison(data, metrics, figs)


def pm_number(xs: OverSeeds) -> str:
    """mean +- std over seeds of a plain number (a return), or the one value."""
    return f"{xs.mean:.1f} &plusmn; {xs.std:.1f}" if len(xs.values) > 1 else f"{xs.mean:.1f}"


def section_comparison(data: Data, metrics: dict[str, Any], figs: Figures) -> str:
    """The aggregate comparison, drawn from metrics/E.json "statistics": the page shows exactly
    what the metrics file holds."""
    st = metrics["statistics"]
    b = st["bootstrap"]
    runs = len(data.seeds)
    colors = figures.method_colors(data.methods)
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
    aggs = {m: mx.method_aggregates(metrics, m) for m in data.methods}
    mws = {m: metrics["methods"][m]["metaworld"] for m in data.methods}
    rows = [[esc(m), str(runs), _interval(a["iqm"], a["iqm_low"], a["iqm_high"]),
             _interval(a["mean"], a["mean_low"], a["mean_high"]),
             _interval(mws[m]["iqm"], mws[m]["iqm_low"], mws[m]["iqm_high"]),
             _interval(mws[m]["success_mean"], mws[m]["success_mean_low"], mws[m]["success_mean_high"])]
            for m, a in aggs.items()]
    parts.append(table(["method", "runs", "IQM [95% CI]", "mean [95% CI]", "IQM, Meta-World protocol [95% CI]",
                        "mean, Meta-World protocol [95% CI]"], rows))
    parts.append('<p class="note">The first two columns are the paper\'s protocol, the last two Meta-World\'s '
                 '(metaworld.evaluation; the same bootstrap). The figures and the probability of improvement '
                 'below are the paper\'s protocol.</p>')
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
                     + ("no baseline (every method is a D2R variant)." if not mx.baselines(data)
                        else "no D2R variant.") + "</p>")
    parts.append(figures.aggregates(aggs, colors, figs))
    if poi:
        parts.append(figures.improvement(poi, figs))
    parts.append(figures.profiles(data.methods, st["performance_profile"], colors, figs))
    if st["sample_efficiency"]:
        parts.append(figures.sample_efficiency(data.methods, st["sample_efficiency"], colors, figs))
    return "".join(parts)


def section_curves(data: Data, figs: Figures) -> str:
    colors = figures.method_colors(data.methods)
    overall = {m: mx.success_curve(data, m) for m in data.methods}
    per_task = {t: {m: mx.success_curve(data, m, t) for m in data.methods} for t in data.tasks}
    returns = {m: mx.return_curve(data, m) for m in data.methods}
    first = min((c.x[0] for c in overall.values() if c.x), default=0)
    return (figures.learning_curves(overall, colors, len(data.seeds) > 1, figs)
            + figures.task_curves(per_task, colors, figs)
            + figures.learning_curves(returns, colors, len(data.seeds) > 1, figs, quantity="return")
            + f'<p class="note">Periodic evaluations during training (greedy routes, deterministic '
              f'actions; every {data.config.budget.eval_every} epochs, the first at {first:,} env steps: no '
              f'evaluation runs before training). Env steps are counted per task; the axes start at 0. Return '
              f'= mean episode return over tasks (env rewards, unscaled). Hover for values; click a legend '
              f'entry to hide a method, double-click to show it alone.</p>')


def section_final(data: Data, figs: Figures) -> str:
    colors = figures.method_colors(data.methods)
    diff = mx.difficulty(data)
    success = {t: {m: mx.task_success(data, m, t) for m in data.methods} for t in data.tasks}
    rows = [[esc(t), f"{diff[t]:.2f}"] + [pm(success[t][m]) for m in data.methods]
            + [pm_number(mx.task_return(data, m, t)) for m in data.methods]
            + [pm(mx.metaworld_task_success(data, m, t)) for m in data.methods] for t in data.tasks]
    header = (["task", "difficulty"] + [f"success {esc(m)}" for m in data.methods]
              + [f"return {esc(m)}" for m in data.methods] + [f"Meta-World protocol {esc(m)}" for m in data.methods])
    return (figures.final_success({m: mx.final_success(data, m) for m in data.methods}, data.seeds, colors, figs)
            + figures.task_heatmap(data.methods, {t: [s.mean for s in success[t].values()] for t in data.tasks},
                                   diff, figs)
            + table(header, rows)
            + f'<p class="note">Per task, mean &plusmn; std over seeds: the final success rate and mean episode '
              f'return under {PAPER_LABEL}, and the success rate under {METAWORLD_LABEL}. '
              'Difficulty = 1 - final success on the task (paper protocol) averaged over every method and seed.</p>')


def section_routing(data: Data, figs: Figures) -> str:
    """Routes of each routed method, then their depth against task difficulty."""
    routed = data.routed_methods
    parts = ['<p class="note">Depth of a route = number of modules on the longest path of selected '
             'edges that ends at the output node; a module is used when a path of selected edges leads from '
             'it to the output. Measured on the greedy routes of the final evaluation, per step, then '
             'averaged per task and over seeds.</p>']
    for m in routed:
        n = mx.num_modules(data, m)
        parts.append(f"<h3>{esc(m)}</h3>")
        per_task = {key: mx.route_per_task(data, m, key) for key in ("depth_mean", "modules_used_mean")}
        parts.append(figures.depth_per_task(m, data.tasks, per_task, n, len(data.seeds) > 1, figs))
        parts.append(figures.edge_heatmaps(m, {t: mx.edge_frequency(data, m, t) for t in data.tasks}, n, figs))
        parts.append('<p class="note">Row: the receiving node (modules M2 to MN, then the output node "out"); '
                     'column: the source module; cell: fraction of evaluation steps whose greedy route selects '
                     'that edge (a row sums to the number of edges the node takes, top-k). Grey cells are '
                     'impossible edges: a module only takes earlier modules.</p>')
        parts.append(figures.module_use(m, data.tasks, mx.module_use(data, m), n, figs))
        evolution = {t: {key: mx.route_curve(data, m, t, key) for key in ("depth", "modules_used")}
                     for t in data.tasks}
        parts.append(figures.depth_evolution(m, evolution, n, figs))
    dd = mx.depth_vs_difficulty(data)
    parts.append("<h3>Depth against task difficulty</h3>")
    parts.append(figures.depth_vs_difficulty(data.tasks, dd, figures.method_colors(data.methods), figs))
    parts.append('<p class="note">Tasks with the same difficulty are drawn side by side (0.015 apart, all of them '
                 'within 0.15); a name is written next to a point only where it does not crowd another: hover '
                 'for every task, and the table gives the values.</p>')
    rows = [[esc(t), f"{dd.difficulty[i]:.2f}"] + [f"{dd.depth[m][i]:.2f}" for m in routed]
            for i, t in enumerate(data.tasks)]
    parts.append(table(["task", "difficulty"] + [f"depth {esc(m)}" for m in routed], rows))
    corr_text = "; ".join(f"{esc(m)}: r = {r:.2f}" if r is not None else f"{esc(m)}: r n/a (fewer than 3 tasks "
                          "or no spread)" for m, r in dd.correlation.items())
    parts.append(f'<p class="note">A positive correlation means harder tasks take deeper routes. '
                 f'{corr_text}.</p>')
    return "".join(parts)


def section_ablation(data: Data, figs: Figures) -> str:
    """Two or more routed methods: the D2R variants against the base one."""
    routed = data.routed_methods
    base = mx.ablation_base(data)
    deltas = mx.ablation_deltas(data)
    success = {m: mx.final_success(data, m) for m in routed}
    depth = {m: mx.route_depth(data, m) for m in routed}
    rows = [[esc(m), pm(success[m]), f"{100 * deltas[m]:+.1f} pt" if m != base else "&ndash;",
             f"{depth[m].mean:.2f} &plusmn; {depth[m].std:.2f}",
             esc(json.dumps(switches(data.run_config(m).method), sort_keys=True))]
            for m in routed]
    return (figures.ablation(success, depth, figures.method_colors(data.methods), figs)
            + table(["variant", "final success", f"vs {esc(base)}", "route depth", "switches"], rows, left={0, 4})
            + '<p class="note">Switches: resrouting = ResRouting in replayed-route updates; '
              'policy_route = route used in the policy update (replayed behaviour route or the '
              'current greedy path); route_balance = per-task routing temperature from alpha; '
              'temperature = the base routing temperature; task_loss_weights = each task\'s losses '
              'weighted by softmax(-log alpha); fixed_depth = chain through every module.</p>')


def section_params_counts(data: Data) -> str:
    rows = []
    for m in data.methods:
        counts = [data.runs[m][s]["run"].get("param_counts", {}) for s in data.seeds]
        cfg = data.run_config(m).method
        c = counts[0]
        policy, q = c.get("policy"), c.get("q")
        total = policy + 2 * q if isinstance(policy, int) and isinstance(q, int) else None
        rows.append([esc(m), esc(cfg.net), _fmt_int(policy), _fmt_int(q),
                     _fmt_int(total) if total is not None else "?",
                     f"<code>{esc(json.dumps(cfg.net_args, sort_keys=True))}</code>"])
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


def applicable_settings(method: MethodConfig) -> dict[str, Any]:
    """A method's settings without the routing switches when its network has no router (net != d2r)."""
    settings = dataclasses.asdict(method)
    if method.net == "d2r":
        return settings
    return {k: v for k, v in settings.items() if k not in ROUTING_SWITCHES}


def switches(method: MethodConfig) -> dict[str, Any]:
    """What sets a D2R variant apart (the ablation table): its routing switches, the task loss
    weights and fixed depth."""
    return {**{k: getattr(method, k) for k in (*ROUTING_SWITCHES, "task_loss_weights")},
            "fixed_depth": bool(method.net_args.get("fixed_depth", False))}


def section_parameters(data: Data) -> str:
    run = data.run_config(data.methods[0])
    env = data.environment
    parts = []
    parts.append("<h3>Experiment (params.yaml)</h3>")
    parts.append(f"<pre>{esc(yaml.safe_dump({data.experiment: data.exp_raw}, sort_keys=True))}</pre>")
    parts.append("<h3>Budget, environment, SAC and device, as the training runs saw them</h3>")
    shown = {"budget": dataclasses.asdict(run.experiment.budget), "tasks (resolved)": list(run.experiment.tasks),
             "env": dataclasses.asdict(run.env), "sac": dataclasses.asdict(run.sac), "device": run.device}
    parts.append(f"<pre>{esc(yaml.safe_dump(shown, sort_keys=True))}</pre>")
    parts.append("<h3>Methods</h3>")
    parts.append('<p class="note">As the runs saw them; the routing switches (resrouting, policy_route, '
                 'route_balance, temperature) are shown only for methods with a router (net d2r).</p>')
    methods = {m: applicable_settings(data.run_config(m).method) for m in data.methods}
    parts.append(f"<pre>{esc(yaml.safe_dump(methods, sort_keys=True))}</pre>")
    parts.append("<h3>Software and machine (setup job)</h3>")
    parts.append(kv_table(sorted(env["versions"].items()) + [(f"platform.{k}", v) for k, v in sorted(env["platform"].items())]
                          + [(f"device.{k}", v) for k, v in sorted(env["device"].items())]))
    parts.append("<h3>Task set</h3>")
    parts.append(kv_table(sorted((k, ", ".join(v) if isinstance(v, list) and k == "tasks" else v)
                                 for k, v in env["task_set"].items())))
    return "".join(parts)
