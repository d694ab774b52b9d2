"""Build records and freshness (d2r.pipeline.records) on a results tree written by hand: what makes a
result outdated, what is said about it, and what is left alone. The same through Snakemake and
DVC: tests/test_dvc.py."""

from __future__ import annotations

import json
from fnmatch import fnmatch

import pytest
import yaml
from conftest import REPO

from d2r.config import parse_params
from d2r.pipeline import layout, records
from d2r.pipeline.layout import Job, experiment_jobs

EXPERIMENT = "smoke"


def params_with(change=None):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["experiments"][EXPERIMENT].update(methods=["d2r"], seeds=[0])
    if change:
        change(raw)
    return parse_params(raw)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """Every job of a one-run smoke experiment with its outputs (made-up bytes) and its record."""
    monkeypatch.chdir(tmp_path)
    params = params_with()
    jobs = experiment_jobs(params, EXPERIMENT)
    for job in jobs:
        for name, path in job.outputs().items():
            target = tmp_path / path
            if name == "videos":
                (target / "reach.mp4").parent.mkdir(parents=True, exist_ok=True)
                (target / "reach.mp4").write_bytes(b"video")
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps({"made by": job.label}))
        records.write_record(job, records.made_from(job, params))
    return params, {job.name: job for job in jobs}


def verdicts(params) -> dict[str, tuple[str | None, bool]]:
    fresh = records.Freshness(params)
    return {job.name: fresh.verdict(job) for job in experiment_jobs(params, EXPERIMENT)}


def test_a_tree_as_its_records_say_is_current(tree):
    params, jobs = tree
    assert set(jobs) == {"setup", "train", "evaluate", "analyse", "render", "report"}
    assert all(why is None for why, _ in verdicts(params).values()), verdicts(params)


def test_a_parameter_change_outdates_its_job_and_what_reads_its_outputs(tree):
    params, _ = tree
    edited = params_with(lambda raw: raw["experiments"][EXPERIMENT].update(final_eval_episodes=5))
    got = verdicts(edited)
    assert got["evaluate"] == ("made with other parameters (final_eval_episodes: 2 -> 5)", True)
    assert got["analyse"] == ("made from the outputs of evaluate smoke/d2r/seed0, which is outdated", False)
    assert got["report"][0] is not None and got["report"][1] is False
    assert got["train"] == got["setup"] == got["render"] == (None, False)


def test_a_training_parameter_outdates_training_and_everything_after_it(tree):
    params, _ = tree
    edited = params_with(lambda raw: raw["train"].update(lr=1e-3))
    got = verdicts(edited)
    assert got["train"] == ("made with other parameters (sac.lr: 0.0003 -> 0.001)", True)
    assert all(got[j][0] is not None for j in ("evaluate", "analyse", "render", "report"))
    assert got["setup"] == (None, False)


def test_a_damaged_or_missing_output_is_named(tree, tmp_path):
    params, jobs = tree
    eval_json = tmp_path / jobs["evaluate"].outputs()["eval"]
    eval_json.write_text(eval_json.read_text()[:5])
    assert verdicts(params)["evaluate"] == (f"{jobs['evaluate'].outputs()['eval']} is not the file its job wrote "
                                            "(edited or damaged since)", True)
    eval_json.unlink()
    assert verdicts(params)["evaluate"] == (f"{jobs['evaluate'].outputs()['eval']} is missing", True)
    video = tmp_path / jobs["render"].outputs()["videos"] / "reach.mp4"
    video.write_bytes(b"other")
    assert verdicts(params)["render"][0].endswith("videos is not the file its job wrote (edited or damaged since)")


def test_time_stamps_and_left_overs_in_a_directory_are_not_content(tree, tmp_path):
    params, jobs = tree
    videos = tmp_path / jobs["render"].outputs()["videos"]
    (videos / ".snakemake_timestamp").write_text("")
    (videos / ".reach.mp4.abc.tmp").write_bytes(b"half")
    assert verdicts(params)["render"] == (None, False)


def test_a_missing_or_unreadable_record_is_said(tree, tmp_path):
    params, jobs = tree
    record = tmp_path / jobs["analyse"].record
    record.write_text('{"params": ')
    assert verdicts(params)["analyse"] == (f"{jobs['analyse'].record}: unreadable record (Expecting value: "
                                           "line 1 column 12 (char 11))", True)
    record.unlink()
    routes = jobs["analyse"].outputs()["routes"]
    assert verdicts(params)["analyse"] == (f"{routes} has no build record ({jobs['analyse'].record}): made "
                                           "before records or interrupted", True)
    (tmp_path / routes).unlink()
    assert verdicts(params)["analyse"] == ("not built yet", False)


def test_outputs_read_after_they_changed_make_the_reader_outdated(tree, tmp_path):
    """evaluate re-ran (its record is current) but analyse did not read its new eval.json."""
    params, jobs = tree
    evaluate = jobs["evaluate"]
    (tmp_path / evaluate.outputs()["eval"]).write_text('{"again": true}')
    records.write_record(evaluate, records.made_from(evaluate, params))
    got = verdicts(params)
    assert got["evaluate"] == (None, False)
    assert got["analyse"] == (f"made from other inputs ({evaluate.outputs()['eval']} changed since)", True)
    assert got["train"] == (None, False)


def test_other_code_outdates_the_jobs_that_run_it(tree, monkeypatch):
    params, _ = tree
    real = records.code_digests

    def edited(job_name):
        code = real(job_name)
        if "d2r/sac/agent.py" in code:
            code["d2r/sac/agent.py"] = "0" * 64
        return code

    monkeypatch.setattr(records, "code_digests", edited)
    got = verdicts(params)
    assert got["train"] == ("made by other code (d2r/sac/agent.py changed)", True)
    assert got["setup"] == (None, False)          # setup runs no network code
    assert got["report"][0] is not None           # built from the retrained run


def test_a_record_is_where_the_layout_puts_it():
    assert Job("train", "e", "d2r", "3").record == "results/e/d2r/seed3/records/train.json"
    assert Job("report", "e").record == "results/e/records/report.json"
    with pytest.raises(ValueError):
        Job("evaluate", "e")


def test_logs_and_benchmarks_are_where_the_layout_puts_them():
    train = Job("train", "e", "d2r", "3")
    assert (train.log, train.benchmark) == ("logs/e/d2r/seed3/train.log", "benchmarks/runs/e/d2r/seed3/train.tsv")
    assert (Job("setup", "e").log, Job("report", "e").benchmark) == ("logs/e/setup.log", "benchmarks/runs/e/report.tsv")
    assert (Job("paper").log, Job("paper").benchmark) == ("logs/paper.log", "benchmarks/runs/paper.tsv")


def layout_files(jobs) -> list[str]:
    """Every path the layout gives these jobs: outputs, build records, logs and benchmarks."""
    return [path for job in jobs for path in (*job.outputs().values(), job.record, job.log, job.benchmark)]


def with_videos(raw):
    raw["experiments"][EXPERIMENT]["render"] = {"enabled": True}


def test_dvc_yaml_outs_are_the_layouts():
    """dvc.yaml spells the outputs of the stage experiment@E by hand (DVC reads no Python): they are
    the experiment's results, logs and benchmarks and its report's outputs, and hold every file of
    every job of the experiment."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["experiment"]["do"]
    outs = [(next(iter(out)) if isinstance(out, dict) else out).replace("${item}", EXPERIMENT) for out in stage["outs"]]
    report = Job("report", EXPERIMENT)
    assert sorted(outs) == sorted([report.experiment_dir, f"{layout.LOGS}/{EXPERIMENT}",
                                   f"{layout.BENCHMARKS}/{EXPERIMENT}", *report.outputs().values()])
    jobs = experiment_jobs(params_with(with_videos), EXPERIMENT)
    assert {job.name for job in jobs} == set(layout.JOBS) - {layout.PAPER}
    outside = [path for path in layout_files(jobs) if not any(path == o or path.startswith(o + "/") for o in outs)]
    assert not outside, f"not in dvc.yaml's outs: {outside}"


def test_make_clean_removes_every_file_of_the_layout():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nclean:\n", 1)[1].splitlines()[0].split()
    assert recipe[:2] == ["rm", "-rf"]
    jobs = [*experiment_jobs(params_with(with_videos), EXPERIMENT), Job(layout.PAPER)]
    kept = [path for path in layout_files(jobs)
            if not any(fnmatch(path, p) or path.startswith(p + "/") for p in recipe[2:])]
    assert not kept, f"`make clean` leaves {kept}"


def test_the_paper_table_is_made_from_the_metrics_there_are(tree, tmp_path):
    """Its inputs are the metrics on disk, as they are: another experiment's metrics appearing (here
    without a record of their report, as in a clone without `dvc pull`), or one changing, outdates
    it; whether their reports are current does not."""
    params, jobs = tree
    paper = Job("paper")
    assert paper.record == "results/records/paper.json" and paper.outputs() == {"html": "reports/paper.html"}
    (tmp_path / "reports").mkdir(exist_ok=True)
    (tmp_path / "reports" / "paper.html").write_text("table")
    records.write_record(paper, records.made_from(paper, params))
    fresh = records.Freshness(params)
    assert fresh.verdict(paper) == (None, False)
    assert list(json.loads((tmp_path / paper.record).read_text())["inputs"]) == ["metrics/smoke.json"]
    other = tmp_path / "metrics" / "easy3.json"
    other.write_text("{}")
    assert records.Freshness(params).verdict(paper) == ("made from another set of inputs", True)
    other.unlink()
    edited = params_with(lambda raw: raw["train"].update(lr=1e-3))     # every job of smoke outdated
    assert records.Freshness(edited).verdict(paper) == (None, False)
    (tmp_path / jobs["report"].outputs()["metrics"]).write_text('{"edited": 1}')
    assert records.Freshness(params).verdict(paper) == ("made from other inputs (metrics/smoke.json changed since)",
                                                        True)
    with pytest.raises(ValueError):
        Job("paper", "smoke")
