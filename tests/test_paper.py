"""The paper table (`python -m d2r paper` -> reports/paper.html): the experiments that have metrics
beside the published numbers of d2r/reporting/published.yaml, from a synthetic tree with experiments
missing; and the published data file itself (every number cited)."""

from __future__ import annotations

import copy
import json
import shutil
from html import unescape

import pytest

from conftest import REPO, run_d2r
from d2r.runtime.io import read_json
from d2r.reporting.paper_table import SETTINGS, load_published


def _section(text: str, setting: str) -> str:
    start = text.index(f'<section id="{setting.lower()}">')
    return text[start:text.index("</section>", start)]


@pytest.fixture(scope="module")
def table(synthetic_report, tmp_path_factory):
    """metrics/mt10.json (MT10, fixed goals, all tasks) and metrics/easy3.json (a subset), made from
    the synthetic report's real metrics; no other experiment of params.yaml has metrics."""
    root = tmp_path_factory.mktemp("paper")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    metrics = read_json(synthetic_report["metrics"])
    (root / "metrics").mkdir()
    mt10 = copy.deepcopy(metrics)
    mt10["experiment"].update(benchmark="MT10", goal_mode="fixed", num_tasks=10)
    (root / "metrics" / "mt10.json").write_text(json.dumps(mt10))
    easy3 = copy.deepcopy(metrics)
    easy3["experiment"].update(benchmark="MT10", num_tasks=3)
    (root / "metrics" / "easy3.json").write_text(json.dumps(easy3))
    run_d2r("paper", "--params", "params.yaml", "--out", "reports/paper.html", cwd=root)
    return root, metrics, (root / "reports" / "paper.html").read_text()


def test_experiments_run_are_rows_with_both_protocols(table):
    _, metrics, text = table
    mt10 = _section(text, "MT10-Fixed")
    for method, m in metrics["methods"].items():
        mw = m["metaworld"]
        row = (f"<td>mt10</td><td>{method}</td><td>{100 * m['iqm']:.1f}% <span class=\"ci\">"
               f"[{100 * m['iqm_low']:.1f}%, {100 * m['iqm_high']:.1f}%]</span></td><td>{100 * m['success_mean']:.1f}%"
               f"</td><td>{100 * mw['iqm']:.1f}% <span class=\"ci\">[{100 * mw['iqm_low']:.1f}%, "
               f"{100 * mw['iqm_high']:.1f}%]</span></td>")
        assert row in mt10, row
    assert "easy3" not in mt10 and "Not run here" not in mt10


def test_what_was_not_run_says_so(table):
    _, _, text = table
    for setting in ("MT10-Rand", "MT50-Fixed", "MT50-Rand"):
        assert "<b>Not run here:</b> no experiment of this setting has metrics" in _section(text, setting)
    assert "reports/mt50-rand.html" in _section(text, "MT50-Rand")
    assert "a subset of a benchmark's tasks: no published counterpart): easy3." in text
    assert ("without metrics (not run, or their report not built): smoke, mt10-rand, mt10-ablation, mt50, "
            "mt50-rand.") in text


def test_every_published_number_is_shown_with_its_source(table):
    _, _, text = table
    data = load_published()
    numbers = {key: i + 1 for i, key in enumerate(data["sources"])}
    for setting in SETTINGS:
        section = unescape(_section(text, setting))
        rows = [r for r in data["results"] if r["setting"] == setting]
        assert section.count(f'<a href="#ref-') == len(rows)
        for r in rows:
            name = r["method"] + (" \u2020" if r["second_hand"] else "")
            assert (f"<td>{name}</td><td>{100 * r['success']:.1f}%</td>" in section
                    and f'[{numbers[r["source"]]}]</a>' in section), r
    for key, source in data["sources"].items():
        assert f'<li id="ref-{key}">[{numbers[key]}] ' in text and unescape(source["cite"]) in unescape(text)


def test_published_numbers_are_cited_and_second_hand_marked():
    data = load_published()
    assert {r["setting"] for r in data["results"]} == set(SETTINGS)
    for r in data["results"]:
        about = data["about"][r["source"]]
        assert about["protocol"] in ("paper", "metaworld.evaluation") and about["checked"]
        assert isinstance(r["second_hand"], bool)
    # T3S's own method is first hand, the baselines of its table are not
    t3s = {r["method"]: r["second_hand"] for r in data["results"] if r["source"] == "t3s"}
    assert t3s["T3S"] is False and t3s["MT-SAC"] is True


def test_a_bad_published_entry_is_one_line(tmp_path):
    import yaml

    from d2r.reporting.load import ReportError

    data = yaml.safe_load((REPO / "d2r" / "reporting" / "published.yaml").read_text())
    data["results"][3]["source"] = "somebody"
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ReportError, match=r"published.yaml: results\[3\]: source 'somebody' has no entry"):
        load_published(path)
