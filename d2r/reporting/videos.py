"""The report's rollout videos: the render job's MP4 files, base64-embedded in <video> tags.

Reads ``{videos_dir}/index.json`` and the files it names (d2r/video.py writes them); the
report stays one file. Videos play (muted, looped) while on screen and pause when scrolled away;
the page's own check puts a video that cannot be decoded in the red error box.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from d2r.reporting.html import esc
from d2r.reporting.load import ReportError
from d2r.runtime.io import ResultFileError, read_json

INDEX = "index.json"


def load_videos(dirs: list[str | Path], methods: list[str], tasks: list[str]) -> dict[str, dict[str, Any]]:
    """method -> the index (with each video's bytes under "data"), checked against the experiment."""
    out: dict[str, dict[str, Any]] = {}
    for d in map(Path, dirs):
        path = d / INDEX
        if not path.exists():
            raise ReportError(f"{path}: missing")
        try:
            index = read_json(path)
        except ResultFileError as err:
            raise ReportError(str(err)) from None
        method = index.get("method")
        if method not in methods:
            raise ReportError(f"{path}: method {method!r} is not one of the experiment's {methods}")
        if index.get("tasks") != tasks:
            raise ReportError(f"{path}: tasks {index.get('tasks')} differ from environment.json's {tasks}")
        for t in tasks:
            video = index.get("videos", {}).get(t)
            if not isinstance(video, dict) or "file" not in video:
                raise ReportError(f"{path}: no video for task {t!r}")
            f = d / video["file"]
            if not f.exists():
                raise ReportError(f"{f}: missing")
            video["data"] = f.read_bytes()
        out[method] = index
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())


def section(videos: dict[str, dict[str, Any]] | None, enabled: bool, methods: list[str], tasks: list[str]) -> str:
    if not enabled:
        return ('<p class="note" id="videos-off">Videos are off (<code>render.enabled: false</code> in '
                'params.yaml): no episodes were rendered.</p>')
    if not videos:
        return ('<p class="note" id="videos-off">No videos: <code>render.enabled</code> is true, but the report '
                'was built without the render job\'s output (<code>--videos</code>); build it with Snakemake, '
                'which renders them first.</p>')
    first = next(iter(videos.values()))
    parts = [f'<p class="note">One greedy episode per task (greedy routes, tanh(mean) actions) of the final '
             f'policy of each method\'s seed {esc(first["seed"])}, on an environment stream of its own (so no '
             f'result above depends on it): camera {esc(first["camera"])}, every {esc(first["frame_stride"])} '
             f'env step(s) a frame, {esc(first["fps"])} frames/s, {esc(first["width"])}x{esc(first["height"])} '
             f'pixels (MuJoCo offscreen, {esc(first["backend"])}). The caption says whether this episode '
             'succeeded; the tables above are over the final evaluation\'s episodes.</p>']
    for m in methods:
        if m not in videos:
            continue
        idx = videos[m]
        parts.append(f"<h3>{esc(m)} (seed {esc(idx['seed'])})</h3><div class=\"videos\">")
        for t in tasks:
            v = idx["videos"][t]
            src = "data:video/mp4;base64," + base64.b64encode(v["data"]).decode("ascii")
            outcome = "success" if v["success"] else "no success"
            parts.append(
                f'<figure class="video" style="max-width: {max(int(idx["width"]), 160)}px"><video id="video-{_slug(m)}-{_slug(t)}" class="d2r-video" muted loop '
                f'playsinline controls preload="auto" width="{idx["width"]}" height="{idx["height"]}" '
                f'src="{src}"></video><figcaption>{esc(t)}: {outcome} '
                f'({v["steps"]} steps, return {v["return"]:.1f})</figcaption></figure>')
        parts.append("</div>")
    return "".join(parts)


# Plays each video while it is on screen (all of them where IntersectionObserver is missing),
# marks a video data-played="yes" once its time has advanced, and reports decoding errors in the
# page's error box (ERROR_HOOK in d2r/reporting/page.py).
SCRIPT = """
(function () {
  var vids = document.querySelectorAll("video.d2r-video");
  function play(v) { var p = v.play(); if (p && p.catch) { p.catch(function () {}); } }
  for (var i = 0; i < vids.length; i++) {
    (function (v) {
      v.addEventListener("timeupdate", function () { if (v.currentTime > 0) { v.dataset.played = "yes"; } });
      v.addEventListener("error", function () {
        window.d2rErrors.push("video cannot be played: " + v.id + " (" + (v.error ? v.error.code : "?") + ")");
        d2rShowErrors();
      });
    })(vids[i]);
  }
  window.addEventListener("load", function () {
    for (var n = 0; n < vids.length; n++) {
      if (vids[n].error) { window.d2rErrors.push("video cannot be played: " + vids[n].id); }
    }
    d2rShowErrors();
  });
  if (!("IntersectionObserver" in window)) { for (var j = 0; j < vids.length; j++) { play(vids[j]); } return; }
  var seen = new IntersectionObserver(function (entries) {
    entries.forEach(function (e) { if (e.isIntersecting) { play(e.target); } else { e.target.pause(); } });
  });
  for (var k = 0; k < vids.length; k++) { seen.observe(vids[k]); }
})();
"""
