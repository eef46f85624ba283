"""The study report in a real headless Chromium (Debian's package): images load, no console errors."""

from __future__ import annotations

import os
import re
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a closed network: no background connections, no first-run, no GPU; root needs no sandbox.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def watched_page(browser, errors: list):
    """A 1280 × 900 page whose console errors and uncaught exceptions are appended to ``errors``."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page

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
            page = watched_page(browser, errors)
            page.goto(page_path.resolve().as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate(
                "Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            text = page.inner_text("body")
            # The statistics tables sort by a clicked column (missing values last) and filter by words.
            table = page.locator("table.stats").first
            heads = table.locator("thead th").all_inner_texts()
            col = heads.index("p")
            table.locator("thead th").nth(col).click()
            cells = f"Array.from(document.querySelector('table.stats').tBodies[0].rows).map(r => r.cells[{col}].getAttribute('data-v'))"
            ascending = page.evaluate(cells)
            table.locator("thead th").nth(col).click()
            descending = page.evaluate(cells)
            page.fill("#stats-filter", "vmPFC 10-20min mmrm")
            visible = page.evaluate("Array.from(document.querySelectorAll('table.stats tbody tr'))"
                                    ".filter(r => !r.hidden).map(r => r.textContent)")
        finally:
            browser.close()
    assert errors == []
    assert len(images) >= 10  # ROIs, matrices, Δ per confirmatory edge, courses, QC
    broken = [i["src"] for i in images if not i["ok"]]
    assert broken == [], broken
    srcs = {i["src"] for i in images}
    assert {"figures/rois.png", "figures/matrices.png", "figures/qc_fd.png", "figures/qc_motion_windows.png",
            "figures/qc_fc_distance.png", "figures/qc_rois.png", "figures/connectome_mmrm.png"} <= srcs
    assert shot.stat().st_size > 50_000
    for heading in ("Study summary", "Regions and connectivity", "Quality control", "Statistics", "Methods",
                    "References"):
        assert heading in text
    numbers = [float(v) for v in ascending if v != "–"]
    assert numbers == sorted(numbers) and len(numbers) > 10
    assert ascending[len(numbers):] == ["–"] * (len(ascending) - len(numbers))  # missing values last
    assert [float(v) for v in descending if v != "–"] == sorted(numbers, reverse=True)
    import pandas as pd

    tests = pd.read_parquet(directory / "results/stats/tests.parquet")
    wanted = tests[(tests["test"] == "mmrm") & (tests["window"] == "10-20min")
                   & ((tests["roi_a"] == "vmPFC") | (tests["roi_b"] == "vmPFC"))]
    assert len(visible) == len(wanted) > 0
    assert all("vmPFC" in r and "10-20min" in r and "mmrm" in r for r in visible)


def test_hostile_names_render_as_text(ran_study, tmp_path, in_dir):
    """An ROI named like a script and a group with markup stay text in the page, in a real browser."""
    if os.environ.get("FCLAB_SKIP_BROWSER") == "1":
        pytest.skip("FCLAB_SKIP_BROWSER=1")
    import pandas as pd
    from playwright.sync_api import sync_playwright

    from conftest import run_cli, small_params, write_params
    from fclab.framework.connectome.edgestore import read_edges, write_edges
    from fclab.framework.io import file_digest, read_provenance, write_parquet

    from fclab.framework.params import StatsParams, section_hash

    roi, group = "<script>alert(1)</script>", "<b>ketamine</b>"
    params = small_params(subject_pages=True)
    params["stats"]["groups"] = ["midazolam", group]
    params["stats"]["confirmatory"] = [["Left_Amygdala", roi], ["Right_Amygdala", roi]]
    directory, _, _ = ran_study
    shutil.copytree(directory / "results", tmp_path / "results")
    order = ("extract", "connectivity", "truth", "stats")  # inputs first: their new digests go downstream
    for path in sorted((tmp_path / "results").rglob("*.parquet"), key=lambda p: order.index(p.parent.name)):
        prov = read_provenance(path)
        prov["inputs"] = {k: file_digest(tmp_path / k) if (tmp_path / k).is_file() else v
                          for k, v in prov.get("inputs", {}).items()}
        if path.name == "edges.parquet":  # packed: ROI names in the layout record, groups in the rows
            edges = read_edges(path)
            edges.rois = [roi if r == "vmPFC" else r for r in edges.rois]
            edges.rows["group"] = edges.rows["group"].replace("ketamine", group)
            write_edges(edges, path, prov)
            continue
        table = pd.read_parquet(path)
        for col in ("roi_a", "roi_b", "roi"):
            if col in table:
                table[col] = table[col].replace("vmPFC", roi)
        if "group" in table:
            table["group"] = table["group"].replace("ketamine", group)
        if path.name == "timeseries.parquet":
            table = table.rename(columns={"vmPFC": roi})
        if path.name == "tests.parquet":  # as if computed with these stats params
            prov["params_hash"] = section_hash(StatsParams(**params["stats"]))
        write_parquet(table, path, prov)
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, _, err = run_cli("report")
    assert code == 0, err
    html = (tmp_path / "reports" / "index.html").read_text()
    assert roi not in html and group not in html
    pages = sorted((tmp_path / "reports" / "subjects").glob("*.html"))
    assert len(pages) == 16 and "&lt;b&gt;ketamine&lt;/b&gt;" in "".join(p.read_text() for p in pages)
    assert not any(roi in p.read_text() or group in p.read_text() for p in pages)
    dialogs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto((tmp_path / "reports" / "index.html").resolve().as_uri())
            page.wait_for_load_state("load")
            text = page.inner_text("body")
            scripts = page.evaluate("Array.from(document.scripts).map(s => s.textContent.trim().slice(0, 40))")
            bold = page.evaluate("document.querySelectorAll('b').length")
        finally:
            browser.close()
    assert scripts == ["/* Sorting and filtering of the statisti"]  # the report's own script, nothing injected
    assert dialogs == [] and bold == 0
    assert roi in text and group in text  # shown literally, as text


def test_labels_follow_alpha_and_subject_pages_in_chromium(ran_study, tmp_path, in_dir):
    """At α = 0.01 the intervals are 99 %, and every label, legend and caption says so; stars use α.
    In Chromium: the page at that α, and a subject's QC page (reached from the study page), load with
    every image and no console error."""
    from conftest import run_cli, small_params, write_params
    from fclab.framework.report.effect_figures import stars

    directory, _, _ = ran_study
    shutil.copytree(directory / "results", tmp_path / "results")
    shutil.copytree(directory / "data", tmp_path / "data")
    params = small_params(subject_pages=True)
    params["stats"]["alpha"] = 0.01
    params["report"]["title"] = "A <pilot> study"
    write_params(tmp_path, params)
    in_dir(tmp_path)
    for stage in ("stats", "report"):
        code, _, err = run_cli(stage)
        assert code == 0, err
    html = (tmp_path / "reports/index.html").read_text()
    assert "<title>fclab report: A &lt;pilot&gt; study</title>" in html
    assert "95 %" not in html and "95%" not in html
    assert re.search(r"(&lt;|<|α =)\s*0?\.05\b", html) is None  # no threshold at the default α
    assert "with 99 % confidence intervals" in html and "<th>99 % CI</th>" in html
    assert "99 % confidence band" in html
    assert "p<sub>adj</sub> &lt; 0.01, ** &lt; 0.002, *** &lt; 0.0002" in html
    assert "(99 % CI)" in html and "at α = 0.01" in html
    assert "mean and 99 % CI over subjects" in html and "Mann–Whitney p &lt; 0.01" in html
    assert [stars(p, 0.01) for p in (0.02, 0.009, 0.001, 0.0001)] == ["", "*", "**", "***"]
    assert [stars(p, 0.05) for p in (0.04, 0.009, 0.0009)] == ["*", "**", "***"]
    if os.environ.get("FCLAB_SKIP_BROWSER") == "1":
        pytest.skip("FCLAB_SKIP_BROWSER=1")
    from playwright.sync_api import sync_playwright

    errors, pages = [], {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = watched_page(browser, errors)
            page.goto((tmp_path / "reports/index.html").resolve().as_uri())
            page.wait_for_load_state("load")
            for name in ("index", "subject"):
                if name == "subject":  # follow the first subject link of the study page
                    page.locator("#subjects ~ div table a").first.click()
                    page.wait_for_load_state("load")
                shot = tmp_path / f"{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                pages[name] = {
                    "url": page.url, "text": page.inner_text("body"), "shot": shot.stat().st_size,
                    "images": page.evaluate("Array.from(document.images).map(i => ({src: i.getAttribute('src'), "
                                            "ok: i.complete && i.naturalWidth > 0, w: i.getBoundingClientRect().width}))"),
                }
            page.locator("text=← study report").click()
            page.wait_for_load_state("load")
            back = page.url
        finally:
            browser.close()
    assert errors == []
    index, subject = pages["index"], pages["subject"]
    assert "99 % CI" in index["text"] and "95 %" not in index["text"]
    assert subject["url"].endswith("/reports/subjects/sub-01.html")
    assert back.endswith("/reports/index.html#subjects")
    for name, pg in pages.items():
        broken = [i["src"] for i in pg["images"] if not i["ok"]]
        assert broken == [], (name, broken)
    assert {"sub-01_baseline_carpet.jpg", "sub-01_infusion_carpet.jpg", "sub-01_connectivity.png"} == {
        i["src"] for i in subject["images"]}
    assert all(i["w"] >= 800 for i in subject["images"] if "carpet" in i["src"])  # readable, not thumbnails
    assert all(i["w"] >= 1000 for i in index["images"] if i["src"].startswith("figures/qc_"))
    for heading in ("Runs", "ROI quality", "Connectivity", "DVARS before (%)", "Left_Amygdala"):
        assert heading in subject["text"]
    assert subject["shot"] > 50_000


def test_dvc_plots_show_offline_one_plot_per_edge_one_line_per_group(ran_study, tmp_path):
    """`make plots` (dvc plots show with the project's dvc.yaml, template and page): one plot per edge, each with a
    line per group, x in minutes from the infusion onset; it renders in Chromium with every network
    request refused."""
    if os.environ.get("FCLAB_SKIP_BROWSER") == "1":
        pytest.skip("FCLAB_SKIP_BROWSER=1")
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd
    from playwright.sync_api import sync_playwright

    from fclab.framework.report.dvcviews import offline_template

    root = Path(__file__).resolve().parents[1]
    directory, _, _ = ran_study
    work = tmp_path / "repo"
    shutil.copytree(directory / "reports" / "plots", work / "reports" / "plots")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(root / name, work / name)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=work, check=True)
    shutil.copy(root / ".dvc/config", work / ".dvc/config")
    (work / ".dvc/plots").mkdir(exist_ok=True)
    shutil.copy(root / ".dvc/plots/by_group.json", work / ".dvc/plots/by_group.json")
    (work / ".dvc/plots/offline.html").write_text(offline_template())
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", "out", "-q", "--html-template",
                    ".dvc/plots/offline.html"], cwd=work, check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    html = (work / "out" / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and "<script src" not in html
    edges = sorted(p.name for p in (work / "reports/plots/delta").glob("*.csv"))
    assert len(edges) == 10  # every ROI pair of the small study
    one = pd.read_csv(work / "reports/plots/delta" / edges[0])
    assert set(one["group"]) == {"midazolam", "ketamine"}
    assert sorted(set(one["window_mid_min"])) == [5.0, 15.0]  # 0-10 and 10-20 min after the infusion onset
    refused, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:")
                       else (refused.append(r.request.url), r.abort()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((work / "out" / "index.html").resolve().as_uri())
            page.wait_for_load_state("load")
            page.wait_for_function("document.querySelectorAll('svg.marks, canvas.marks').length >= 20")
            charts = page.evaluate("document.querySelectorAll('svg.marks, canvas.marks').length")
            text = page.inner_text("body")
        finally:
            browser.close()
    assert refused == [] and errors == []
    assert charts == 20  # 10 edges x (change from baseline, sliding course)
    assert "min from the event onset" in text and "ketamine" in text and "midazolam" in text
