"""The study report's HTML pages: the template filters, the study page and each subject's QC page."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402

from fclab.framework.pluginhost.contracts import as_scale  # noqa: E402
from fclab.framework.io import write_text
from fclab.framework.report.summaries import slug  # noqa: E402


def _num(value, fmt: str) -> str:
    """Format a number for the report; missing values (None, NaN) as a dash."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return fmt % v if np.isfinite(v) else "–"


EFFECT_SIZE_KINDS = {"hedges_g": "Hedges' g", "nbs_extent": "NBS extent", "nbs_intensity": "NBS intensity",
                     "bayes_factor_10": "BF₁₀"}


def _effect_kind(kind) -> str:
    """A label for an effect-size kind (a plugin's own kind as it is)."""
    return EFFECT_SIZE_KINDS.get(kind, kind) if isinstance(kind, str) else ""


def render_html(context: dict, template: str = "report.html.j2") -> str:
    env = Environment(loader=PackageLoader("fclab.framework.report", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.filters["num"] = _num
    env.filters["effect_kind"] = _effect_kind
    return env.get_template(template).render(**context)


def subject_page(job: dict) -> tuple[str, str]:
    """One subject's QC page and its figures in ``job['out']`` (reports/subjects/): per run the motion,
    DVARS and carpet before and after denoising, the ROI coverage and tSNR, the subject's connectivity
    per window, and the QC measures that flag it. Returns (subject, page file name)."""
    from fclab.framework.extraction.runqc import read_carpet
    from fclab.framework.report.figures import carpet_figure, subject_matrices_figure

    s, out = job["subject"], Path(job["out"])
    stem = f"sub-{slug(s)}"
    runs = []
    carpets = {r.run: (r.png, r.n_volumes) for r in job["carpets"].itertuples()}
    for r in job["runs"].itertuples():
        entry = {**r._asdict(), "figure": None, "dvars_raw": np.nan, "dvars_clean": np.nan}  # a skipped run has none
        m = job["motion"][job["motion"]["run"] == r.run]
        if carpets.get(r.run, (b"",))[0] and len(m):
            name = f"{stem}_{slug(r.run)}_carpet.jpg"
            carpet_figure(m, read_carpet(carpets[r.run][0]), float(r.tr_s), f"sub-{s}, {r.run} run", out / name)
            entry["figure"] = name
            entry["dvars_raw"] = float(m["dvars_raw"].mean())
            entry["dvars_clean"] = float(m["dvars_clean"].mean())
        runs.append(entry)
    matrix = None
    if len(job["edges"]):
        matrix = f"{stem}_connectivity.png"
        subject_matrices_figure(job["edges"], job["rois"], job["windows"], job["scale"], out / matrix)
    roi_qc = job["roi_qc"].pivot_table(index="roi", columns="run", values=["coverage", "tsnr"], sort=False)
    roi_rows = [{"roi": roi, "cells": [(run, roi_qc.loc[roi, ("coverage", run)], roi_qc.loc[roi, ("tsnr", run)])
                                      for run in roi_qc.columns.get_level_values(1).unique()]}
                for roi in roi_qc.index] if len(job["roi_qc"]) else []
    missing = job["roi_qc"][job["roi_qc"]["missing"]].to_dict("records")
    html = render_html({"subject": s, "summary": job["summary"], "runs": runs, "matrix": matrix,
                        "roi_rows": roi_rows, "roi_runs": list(dict.fromkeys(job["roi_qc"]["run"])),
                        "missing": missing, "flags": job["flags"].to_dict("records"), "title": job["title"],
                        "scale": as_scale(job["scale"]).label}, "subject.html.j2")
    write_text(out / f"{stem}.html", html)
    return s, f"{stem}.html"


def write_report(out_dir: Path, context: dict) -> Path:
    path = out_dir / "index.html"
    write_text(path, render_html(context))
    return path


