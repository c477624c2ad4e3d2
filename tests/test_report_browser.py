"""The rendered report in a real browser: headless Chromium opens index.html from disk, every image loads
(natural width > 0), and a screenshot is written. Skipped only when Chromium is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import make_study  # tests/ is on sys.path (pytest's rootdir-relative import)

from harness.report import render_report

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
