"""The study report in a real headless Chromium (Debian's package): images load, no console errors."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a closed network: no background connections, no first-run, no GPU; root needs no sandbox.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def test_report_renders_in_headless_chromium(ran_study, tmp_path):
    if os.environ.get("FCLAB_SKIP_BROWSER") == "1":
        pytest.skip("FCLAB_SKIP_BROWSER=1")
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: `make browser` installs it"
    from playwright.sync_api import sync_playwright

    directory, _, _ = ran_study
    page_path = directory / "reports" / "index.html"
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.resolve().as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate(
                "Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            text = page.inner_text("body")
        finally:
            browser.close()
    assert errors == []
    assert len(images) >= 10  # ROIs, matrices, Δ per confirmatory edge, courses, QC
    broken = [i["src"] for i in images if not i["ok"]]
    assert broken == [], broken
    srcs = {i["src"] for i in images}
    assert {"figures/rois.png", "figures/matrices.png", "figures/qc_fd.png", "figures/qc_censoring.png",
            "figures/qc_fc_distance.png", "figures/qc_rois.png"} <= srcs
    assert shot.stat().st_size > 50_000
    for heading in ("Study summary", "Regions and connectivity", "Quality control", "Statistics", "Methods"):
        assert heading in text
