"""environment.json and run.json record the code: the git commit and whether the tree had changes."""

import subprocess

from d2r.runtime.provenance import code_version


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True,
                   capture_output=True)


def test_commit_and_uncommitted_changes(tmp_path):
    repo = tmp_path / "repo"
    (repo / "d2r").mkdir(parents=True)
    (repo / "d2r" / "train.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert code_version(repo) == {"commit": head, "dirty": False}
    (repo / "metrics").mkdir()  # results the pipeline writes into the tree are not code changes
    (repo / "metrics" / "smoke.json").write_text("{}")
    (repo / "dvc.lock").write_text("")
    assert code_version(repo) == {"commit": head, "dirty": False}
    (repo / "d2r" / "train.py").write_text("x = 2\n")
    assert code_version(repo) == {"commit": head, "dirty": True}
    git(repo, "commit", "-qam", "second")
    (repo / "d2r" / "new.py").write_text("")  # an untracked source counts too
    assert code_version(repo)["dirty"] is True


def test_outside_a_git_checkout(tmp_path):
    assert code_version(tmp_path) == {"commit": None, "dirty": None}
