"""The results table in the paper's shape (reports/paper.html): our experiments beside published numbers.

Reads files only: the metrics of the experiments that were run (metrics/E.json, written by each
experiment's report) and the published numbers with their sources (d2r/reporting/published.yaml).
Per setting (MT10-Fixed, MT10-Rand, MT50-Fixed, MT50-Rand): our methods as rows, the IQM of final
success with its 95% interval under both protocols of the final evaluation, then the published
numbers with source, protocol, budget, seeds and Meta-World version; a setting no experiment ran
says so. An experiment on a subset of a benchmark's tasks has no published counterpart and is
listed below the table.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import yaml

from d2r.reporting.load import ReportError

PUBLISHED = Path(__file__).with_name("published.yaml")
SETTINGS = ("MT10-Fixed", "MT10-Rand", "MT50-Fixed", "MT50-Rand")
FULL_SIZE = {"MT10": 10, "MT50": 50}
PROTOCOLS = {"paper": "the paper's protocol", "metaworld.evaluation": "Meta-World's protocol (metaworld.evaluation)"}


def setting_of(experiment: dict[str, Any]) -> str | None:
    """metrics "experiment" -> MT10-Fixed, ...; None for a subset of a benchmark's tasks."""
    benchmark = experiment["benchmark"]
    if FULL_SIZE.get(benchmark) != experiment["num_tasks"]:
        return None
    return f"{benchmark}-{'Fixed' if experiment['goal_mode'] == 'fixed' else 'Rand'}"


def load_published(path: str | Path = PUBLISHED) -> dict[str, Any]:
    """The published numbers, checked: every result names a known setting and a source described
    under `about` (ReportError naming the file and the entry otherwise)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ReportError(f"{path}: cannot be read ({err})") from None
    for i, r in enumerate(data["results"]):
        where = f"{path}: results[{i}]"
        if r.get("setting") not in SETTINGS:
            raise ReportError(f"{where}: setting {r.get('setting')!r} is not one of {', '.join(SETTINGS)}")
        if r.get("source") not in data["sources"] or r["source"] not in data["about"]:
            raise ReportError(f"{where}: source {r.get('source')!r} has no entry in sources and about")
        if not isinstance(r.get("success"), (int, float)) or not 0 <= r["success"] <= 1:
            raise ReportError(f"{where}: success must be a rate in [0, 1], got {r.get('success')!r}")
        if not isinstance(r.get("second_hand"), bool):
            raise ReportError(f"{where}: second_hand must be true or false")
    return data


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _interval(point: float, low: float, high: float) -> str:
    return f'{_pct(point)} <span class="ci">[{_pct(low)}, {_pct(high)}]</span>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ours(name: str, metrics: dict[str, Any]) -> list[list[str]]:
    exp = metrics["experiment"]
    rows = []
    for method, m in metrics["methods"].items():
        mw = m["metaworld"]
        rows.append([escape(name), escape(method), _interval(m["iqm"], m["iqm_low"], m["iqm_high"]),
                     _pct(m["success_mean"]), _interval(mw["iqm"], mw["iqm_low"], mw["iqm_high"]),
                     _pct(mw["success_mean"]), f"{exp['env_steps_per_task']:,}", str(exp["seeds"])])
    return rows


def _published(rows: list[dict[str, Any]], data: dict[str, Any], numbers: dict[str, int]) -> list[list[str]]:
    out = []
    for r in rows:
        about = data["about"][r["source"]]
        method = escape(r["method"]) + (" &dagger;" if r["second_hand"] else "")
        detail = "; ".join(escape(x) for x in (r.get("variant"), r.get("note")) if x)
        out.append([method, _pct(r["success"]), escape(about["statistic"]) + (f" ({detail})" if detail else ""),
                    escape(PROTOCOLS.get(about["protocol"], about["protocol"])), escape(about["budget"]),
                    escape(about["seeds"]), escape(about["metaworld"]),
                    f'<a href="#ref-{escape(r["source"])}">[{numbers[r["source"]]}]</a>'])
    return out


def render(experiments: dict[str, dict[str, Any]], not_run: list[str], data: dict[str, Any]) -> str:
    """experiments: name -> its metrics (metrics/E.json) for those that have them; not_run: the
    other experiments of params.yaml."""
    numbers = {key: i + 1 for i, key in enumerate(data["sources"])}
    by_setting: dict[str, list[str]] = {s: [] for s in SETTINGS}
    subsets = []
    for name, metrics in experiments.items():
        if "experiment" not in metrics:
            raise ReportError(f"metrics/{name}.json: no \"experiment\" entry (written by an older version): "
                              f"rebuild its report")
        setting = setting_of(metrics["experiment"])
        (by_setting[setting] if setting else subsets).append(name)
    parts = []
    for setting in SETTINGS:
        parts.append(f'<section id="{setting.lower()}"><h2>{setting}</h2>')
        names = by_setting[setting]
        if names:
            rows = [row for name in names for row in _ours(name, experiments[name])]
            parts.append(_table(["experiment", "method", "IQM, paper protocol [95% CI]", "mean, paper protocol",
                                 "IQM, Meta-World protocol [95% CI]", "mean, Meta-World protocol",
                                 "env steps per task", "seeds"], rows))
        else:
            parts.append(f'<p class="not-run"><b>Not run here:</b> no experiment of this setting has metrics '
                         f'(e.g. <code>snakemake --cores all reports/{setting.lower().replace("-fixed", "")}'
                         f'.html</code>).</p>')
        published = [r for r in data["results"] if r["setting"] == setting]
        if published:
            parts.append(_table(["published method", "success", "statistic", "protocol", "budget", "seeds",
                                 "Meta-World", "source"], _published(published, data, numbers)))
        parts.append("</section>")
    refs = "".join(f'<li id="ref-{escape(k)}">[{numbers[k]}] {escape(s["cite"])}'
                   + (f' <a href="{escape(s["url"])}">{escape(s["url"])}</a>' if s.get("url") else "")
                   + (f' <span class="note">({escape(data["about"][k]["checked"])})</span>' if k in data["about"]
                      else ' <span class="note">(no number of it is in this table)</span>') + "</li>"
                   for k, s in data["sources"].items())
    others = (f"<p>Not in the table (a subset of a benchmark's tasks: no published counterpart): "
              f"{escape(', '.join(subsets))}.</p>" if subsets else "")
    missing = (f"<p>Experiments of params.yaml without metrics (not run, or their report not built): "
               f"{escape(', '.join(not_run))}.</p>" if not_run else "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<title>D2R: results beside published numbers</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<h1>D2R: results beside published numbers</h1>\n"
        f"{INTRO}\n{''.join(parts)}\n{others}{missing}<h2>Sources</h2><ol class=\"refs\">{refs}</ol>\n"
        "<p class=\"note\">Generated by <code>python -m d2r paper</code> from metrics/*.json and "
        "d2r/reporting/published.yaml. Rebuilding from the same files gives the same file.</p>\n"
        "</body>\n</html>\n"
    )


INTRO = """<p class="note">Ours: per experiment and method, the IQM (interquartile mean over runs &times; tasks)
of final success with its 95% stratified-bootstrap interval, and the plain mean, under both protocols of the
final evaluation: <b>the paper's protocol</b> (the runs' own goals and episode length, 200 steps at paper
settings, success if the flag fired at any step; compare with D2R, Soft Modularization, T3S and the other
papers of that family) and <b>Meta-World's protocol</b> (metaworld.evaluation: 50 episodes per task over the
benchmark's 50 goal variations, 500-step episodes that end at success; compare with Meta-World+ and later work
on Meta-World 3). Budgets differ: read the env steps per task (the paper trains 1.5M per task on MT10, 1M on
MT50). Published: each number with its source, protocol, budget, seeds and Meta-World version; &dagger; = second
hand (the source reports another paper's number, or a baseline it ran or copied, not its own method).
Meta-World 3's MT10 / MT50 draw goals from 50 variations per task and are listed under -Rand. D2R's own Table 1
could not be retrieved for this table: its numbers are missing, not guessed.</p>"""

CSS = """
body { font-family: Helvetica, Arial, sans-serif; color: #222; margin: 0 auto; max-width: 1280px;
       padding: 0 24px 60px; line-height: 1.45; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.note { color: #555; font-size: 14px; max-width: 980px; }
.ci { color: #666; font-size: 12px; }
.not-run { background: #f6f6f6; padding: 8px 14px; border-left: 6px solid #bbb; max-width: 980px; }
"""
