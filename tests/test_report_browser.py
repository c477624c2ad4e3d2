"""The rendered report in a real browser: headless Chromium opens index.html from disk, every image loads
(natural width > 0), the verdict opens the page with the right numbers, sample captions do not overlap, provenance
is collapsed at the end, and a screenshot is written. Skipped only when Chromium is not installed."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_report import SEEDS, make_study  # tests/ is on sys.path (pytest's rootdir-relative import)
from test_stats import power_by_hand, smallest_n_by_hand

from harness.report.render import render_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# After the load event (all images done), write each image's src and natural width into the DOM.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify([...document.images].map(i => [i.getAttribute("src"), i.naturalWidth]));
  document.body.appendChild(out);
});
</script>
<img src="no-such-file.png" alt="control: must not load">"""

# After the load event: the verdict block as text, the page's section order, whether provenance is open, and
# every pair of sample figures whose boxes (caption included) overlap.
LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const top = (sel) => { const e = document.querySelector(sel); return e ? e.getBoundingClientRect().top : null; };
  const text = (el) => {
    const r = document.createRange(); r.selectNodeContents(el); return r.getBoundingClientRect();
  };
  const figures = [...document.querySelectorAll(".samples figure")].map(f => {  // the box and its caption's text
    const a = f.getBoundingClientRect(), b = text(f.querySelector("figcaption"));
    const [left, right] = [Math.min(a.left, b.left), Math.max(a.right, b.right)];
    return {left: left, right: right, top: a.top, bottom: Math.max(a.bottom, b.bottom)};
  });
  const overlaps = [];
  figures.forEach((a, i) => figures.slice(i + 1).forEach((b, j) => {
    if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom) overlaps.push([i, i + 1 + j]);
  }));
  const out = document.createElement("pre");
  out.id = "layout-probe";
  out.textContent = JSON.stringify({
    verdicts: [...document.querySelectorAll("#verdict-list li")].map(li => li.textContent.replace(/\\s+/g, " ").trim()),
    rows: [...document.querySelectorAll("#verdict-table tbody tr")].map(tr => [...tr.cells].map(td => td.textContent)),
    order: ["#verdict", "#effects", "#timing", "#plots", "#samples", "#provenance"].map(top),
    provenance_open: document.querySelector("details#provenance").open,
    first_heading: document.querySelector("h2").textContent,
    figures: figures.length,
    overlaps: overlaps,
  });
  document.body.appendChild(out);
});
</script>"""


def verdict_fid(schedule: int, loss: int, seed: int) -> float:
    """The schedule helps by a clear margin (resolved); the loss moves FID by seed-dependent amounts whose mean
    is small against their spread (not resolved)."""
    return 40.0 - 6.0 * schedule + 0.37 * schedule * seed + loss * [1.5, -1.0, 0.4][seed]


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_report_opens_in_chromium_and_every_image_loads(tmp_path):
    url = make_study(tmp_path / "h.db", "browser <check>", tmp=tmp_path)
    index = render_report(url, "browser <check>", tmp_path / "report")
    probe = index.with_name("probe.html")
    probe.write_text(index.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")

    dom = chromium(tmp_path, "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"no probe output; chromium exit {dom.returncode}: {dom.stderr[-2000:]}"
    images = dict(json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")))
    assert images.pop("no-such-file.png") == 0  # the probe does see a broken image
    assert len(images) >= 8 + 12, images  # plots + one sample grid per complete trial
    broken = [src for src, width in images.items() if width <= 0]
    assert not broken, f"images that did not load: {broken}"
    assert "browser &lt;check&gt;" in dom.stdout  # the study name arrives as text, escaped

    shot = tmp_path / "report.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", index.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, run.stderr[-2000:]


def test_the_verdict_opens_the_page_with_the_numbers_by_hand(tmp_path):
    url = make_study(tmp_path / "h.db", "verdict", tmp=tmp_path, fid=verdict_fid)
    index = render_report(url, "verdict", tmp_path / "report")
    probe = index.with_name("layout.html")
    probe.write_text(index.read_text(encoding="utf-8").replace("</body>", LAYOUT_PROBE + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path, "--window-size=1280,2000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"no probe output; chromium exit {dom.returncode}: {dom.stderr[-2000:]}"
    page = json.loads(html.unescape(found.group(1)))

    assert page["first_heading"] == "Verdict" and not page["provenance_open"]
    assert page["order"] == sorted(page["order"]), page["order"]  # verdict, effects, timing, plots, samples, provenance
    assert page["figures"] == 12 and page["overlaps"] == [], page["overlaps"]

    # by hand: paired differences over the 6 (schedule, seed) or (loss, seed) pairs, t interval, power
    cells = {(s, lo, seed): verdict_fid(s, lo, seed) for s in range(2) for lo in range(2) for seed in SEEDS}
    loss_d = np.array([cells[(s, 1, seed)] - cells[(s, 0, seed)] for s in range(2) for seed in SEEDS])
    half = stats.t.ppf(0.975, 5) * loss_d.std(ddof=1) / math.sqrt(6)
    low, high = loss_d.mean() - half, loss_d.mean() + half
    assert low < 0 < high  # the design: not resolved
    sd, delta = loss_d.std(ddof=1), loss_d.mean()
    n = smallest_n_by_hand(lambda k: power_by_hand(k - 1, abs(delta) * math.sqrt(k) / sd), sd, delta)
    base_mean = np.mean([v for (s, lo, seed), v in cells.items() if lo == 0])
    loss_line = next(v for v in page["verdicts"] if "diffusion.loss" in v)
    assert loss_line.startswith(
        "not resolved For fid, diffusion.loss: mse (the base) is best; the runner-up, multiscale,"
    )
    assert f"by {delta:.4g} ({100 * delta / base_mean:+.1f} %)" in loss_line
    assert f"95 % CI [{low:.4g}, {high:.4g}]" in loss_line and "6 paired seeds" in loss_line
    assert loss_line.endswith(f"not resolved: about {n} seeds per arm would resolve a difference of this size.")

    schedule_d = np.array([cells[(1, lo, seed)] - cells[(0, lo, seed)] for lo in range(2) for seed in SEEDS])
    schedule_line = next(v for v in page["verdicts"] if "diffusion.schedule" in v)
    assert schedule_line.startswith("resolved For fid, diffusion.schedule: shifted_cosine(base_resolution=32) beats")
    assert f"by {abs(schedule_d.mean()):.4g}" in schedule_line and "6 paired seeds: resolved." in schedule_line
    assert schedule_line.endswith(
        "Caution: sampler fidelity differs between levels (see the sampler fidelity warning)."
    )
    p = stats.ttest_1samp(schedule_d, 0).pvalue
    row = next(r for r in page["rows"] if r[0] == "diffusion.schedule")
    assert row[2] == "shifted_cosine(base_resolution=32)" and row[3] == "cosine" and row[6] == f"{p:.2g}"
    assert row[7] == "6 paired" and row[8] == "resolved"

    shot = tmp_path / "top.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", index.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, run.stderr[-2000:]
