"""Open the synthetic report in headless Chromium: every figure is drawn, no script error.

Chromium is installed here when missing (Debian's `chromium`, with apt-get, when running as
root); the test is skipped, with the reason, only when that is not possible. Set
D2R_REPORT_SCREENSHOT=path.png to keep a screenshot of the rendered page.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import chromium_binary

pytestmark = pytest.mark.slow

APT_TIMEOUT = 900


def _install_chromium() -> str:
    """Install Debian's chromium with apt-get; return '' on success, else why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root, so apt-get cannot install it"
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` took longer than {APT_TIMEOUT} s"
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-400:]}"
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_binary()
    if path is None:
        why = _install_chromium()
        path = chromium_binary()
        if path is None:
            pytest.skip(f"headless Chromium is not available and could not be installed: {why or 'unknown'}")
    return path


def _chromium_cmd(binary: str, profile: Path, *extra: str) -> list[str]:
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
            "--mute-audio", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
            "--run-all-compositor-stages-before-draw", *extra]


def _dump_dom(binary: str, page: Path, tmp_path: Path) -> str:
    proc = subprocess.run(_chromium_cmd(binary, tmp_path / "profile-dom", "--dump-dom", page.as_uri()),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    assert "<body" in proc.stdout, f"chromium printed no DOM: {proc.stderr[-2000:]}"
    return proc.stdout


def _figure_blocks(dom: str) -> dict[str, str]:
    """div id -> the DOM text of that plotly figure (up to the next figure)."""
    starts = [(m.start(), m.group(1)) for m in re.finditer(r'<div id="([^"]+)" class="[^"]*plotly-graph-div', dom)]
    blocks = {}
    for k, (pos, div_id) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(dom)
        blocks[div_id] = dom[pos:end]
    return blocks


def test_report_renders_in_chromium(chromium, synthetic_report, tmp_path):
    page = synthetic_report["report"]
    source_ids = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', page.read_text())
    assert source_ids, "the report has no plotly figures"

    dom = _dump_dom(chromium, page, tmp_path)
    errors = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert errors is not None, "the error box is missing from the rendered page"
    assert html.unescape(errors.group(1)).strip() == "", f"script errors in the report:\n{errors.group(1)}"

    blocks = _figure_blocks(dom)
    not_rendered = [i for i in source_ids if i not in blocks or "main-svg" not in blocks[i]
                    or "plot-container" not in blocks[i]]
    assert not not_rendered, f"figures not rendered by plotly.js: {not_rendered}"
    # A drawn figure has traces: scatter/bar/heatmap layers inside its SVG.
    empty = [i for i in source_ids if not re.search(r'class="(scatterlayer|barlayer|heatmaplayer|imagelayer)',
                                                       blocks[i]) and "heatmap" not in blocks[i]]
    assert not empty, f"figures drawn without any trace layer: {empty}"
    # The statistics' figures are among them.
    for div_id in ("fig-aggregates", "fig-improvement", "fig-profiles", "fig-sample-efficiency"):
        assert div_id in blocks and "main-svg" in blocks[div_id], div_id


def test_report_videos_play_in_chromium(chromium, synthetic_report, tmp_path):
    """Opened at its videos (so they are on screen), every embedded video decodes and plays: its
    time advances (the page marks it data-played="yes"), and no video error reaches the error box."""
    from conftest import SYNTH_METHODS, SYNTH_TASKS

    page = synthetic_report["report"]
    proc = subprocess.run(_chromium_cmd(chromium, tmp_path / "profile-videos", "--window-size=1280,1600",
                                        "--autoplay-policy=no-user-gesture-required", "--dump-dom",
                                        page.as_uri() + "#videos"),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    errors = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert errors is not None and html.unescape(errors.group(1)).strip() == "", errors and errors.group(1)
    videos = re.findall(r"<video [^>]*>", dom)
    assert len(videos) == len(SYNTH_METHODS) * len(SYNTH_TASKS)
    not_played = [v[:80] for v in videos if 'data-played="yes"' not in v]
    assert not not_played, f"videos that did not play: {not_played}"


def test_report_screenshot(chromium, synthetic_report, tmp_path):
    shot = Path(os.environ.get("D2R_REPORT_SCREENSHOT", tmp_path / "report.png"))
    proc = subprocess.run(_chromium_cmd(chromium, tmp_path / "profile-shot", f"--screenshot={shot}",
                                        "--window-size=1280,2400", synthetic_report["report"].as_uri()),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000, "screenshot missing or blank"


def test_dvc_plots_page_draws_offline(chromium, tmp_path):
    """`dvc plots show` with the project's page template (make install writes it; .dvc/config) draws
    the learning curves with no network: Vega is inlined, no <script src> to a CDN."""
    from helpers import REPO, pipeline_env

    repo = tmp_path / "repo"
    for rel in ("dvc.yaml", ".dvcignore", "workflow/plots/learning_curves.json"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, repo / rel)
    curves = repo / "reports" / "curves" / "synth.csv"
    curves.parent.mkdir(parents=True)
    curves.write_text("method,task,env_steps,success\n" + "".join(
        f"{m},{t},{x},{y}\n" for m in ("d2r", "mtsac") for t in ("(mean over tasks)", "reach")
        for x, y in ((0, 0.0), (1000, 0.5))))
    env = pipeline_env()
    for cmd in (["dvc", "init", "--no-scm", "-q"], ["dvc", "config", "core.analytics", "false"],
                [sys.executable, str(REPO / "workflow/plots/offline_template.py"), ".dvc/plots.html"],
                ["dvc", "config", "plots.html_template", "plots.html"], ["dvc", "plots", "show"]):
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}: {proc.stderr[-2000:]}"
    page = repo / "dvc_plots" / "index.html"
    assert not re.search(r"<script[^>]+src=", page.read_text()), "the page loads a script from elsewhere"
    dom = _dump_dom(chromium, page, tmp_path)
    assert '<canvas class="marks"' in dom or 'class="marks"' in dom, dom[-3000:]
