"""The study report put together: it reads the stages' tables (where the stage adapter says they
are), computes the summaries and QC tables, draws every figure (subject pages in worker processes
meanwhile), writes the DVC views and metrics, and renders the page from one template context."""

from __future__ import annotations

import gc
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from fclab.framework import references as refs
from fclab.framework.connectome.edgestore import read_edges
from fclab.framework.errors import DataError
from fclab.framework.executor import OneThread, progress
from fclab.framework.io import (
    check_fresh, file_digest, git_commit, read_parquet, read_provenance, write_json, write_text,
)
from fclab.framework.params import Params, is_mni_space, section_hash
from fclab.framework.pluginhost.contracts import TEST_COLUMNS, Scale, as_scale
from fclab.framework.report import effect_figures as ef
from fclab.framework.report import methods, page
from fclab.framework.report import summaries as sm


@dataclass(frozen=True)
class ReportInputs:
    """Where the report reads each stage's outputs (the stage adapter fills it from the results layout)."""

    edges: Path
    tests: Path
    timeseries: Path
    run_qc: Path
    roi_qc: Path
    motion: Path
    events: Path
    carpets: Path
    rois: Path  # rois.parquet: names and centroids
    rois_image: Path  # rois.nii.gz, or rois.dlabel.nii for surface data
    truth: Path


def build_report(params: Params, inputs: ReportInputs, out: Path, jobs: int = 1) -> None:
    """Everything reports/ holds, written into ``out`` (the stage's staging directory)."""
    sp, rparams = params.stats, params.report
    paths = {"edges": inputs.edges, "tests": inputs.tests, "run_qc": inputs.run_qc, "timeseries": inputs.timeseries}
    provs = {"extract": read_provenance(paths["timeseries"]), "connectivity": check_fresh(paths["edges"]),
             "stats": check_fresh(paths["tests"])}
    fixed = provs["connectivity"].get("windows")
    # The fixed windows only: sliding-window rows (most of a connectome's table) are read below, for
    # the edges the course is drawn for.
    edges = read_edges(paths["edges"], fixed).long()
    tests, run_qc = read_parquet(paths["tests"], TEST_COLUMNS), read_parquet(paths["run_qc"])
    metric = rparams.metric or edges["metric"].iloc[0]
    scale = provs["connectivity"].get("scales", {}).get(metric, "value")
    described = provs["connectivity"].get("scale_info", {}).get(scale)
    scale = Scale(**described) if described else as_scale(scale)
    windows = fixed or list(dict.fromkeys(edges["window"]))
    infusion_windows = [w for w in windows if w != sp.baseline_window]
    groups = list(sp.groups)
    edges_m = edges[(edges["metric"] == metric) & edges["window"].isin(windows)]
    delta = sm.change_from_baseline(edges_m, sp.baseline_window)
    events = read_parquet(inputs.events)
    delta["zero_s"] = sm.event_zero(delta, events, params.connectivity.windows)
    summary = sm.delta_summary(delta, groups, infusion_windows, sp.alpha)
    primary = tests[(tests["test"] == rparams.primary_test) & (tests["metric"] == metric)
                    & (tests["term"] == rparams.primary_term)]
    if primary.empty:
        raise DataError(f"{paths['tests']}: no rows for test {rparams.primary_test!r}, metric {metric!r} "
                        f"and term {rparams.primary_term!r}")

    roi_qc = read_parquet(inputs.roi_qc)
    motion = read_parquet(inputs.motion)
    qc_tables = study_qc(params, run_qc, roi_qc, motion, edges_m, windows, events)
    page_jobs = subject_page_jobs(params, edges_m, run_qc, roi_qc, motion, qc_tables, windows, scale, out / "subjects",
                                  inputs)
    # Worker processes draw the subject pages while this one draws the study's figures: the pool forks
    # here, before any drawing, and the pages are collected once the figures are done.
    # The tables read so far live to the end: frozen, the garbage collector stops scanning their
    # objects at every collection (in this process and the forked workers; ~12 % of a page's time).
    gc.freeze()
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 and len(page_jobs) > 1 else None
    # and no BLAS threads of this process compete with the pool's (threadpoolctl applies the limit now)
    limits = threadpool_limits(limits=1) if pool else None
    try:
        pages = pool.map(OneThread(page.subject_page), page_jobs) if pool else map(page.subject_page, page_jobs)
        figures = []
        pairs = list(edges_m[["roi_a", "roi_b"]].drop_duplicates().itertuples(index=False, name=None))
        figure_pairs, figure_note = sm.figure_edges(sp.confirmatory, primary, pairs)
        for a, b in progress(figure_pairs, len(figure_pairs), "report: change figures"):
            name = f"delta_{sm.slug(a)}__{sm.slug(b)}.png"
            ef.delta_figure(summary, primary, a, b, groups, infusion_windows, scale, out / "figures" / name,
                            sp.alpha, ef.window_axis_label(params.connectivity.windows, infusion_windows))
            figures.append({"src": f"figures/{name}", "alt": f"Change from baseline, {methods.edge_label(a, b)}"})

        courses = []
        sliding = provs["connectivity"].get("sliding") or []
        course_columns = ["edge", "group", "centre_min", "mean", "ci_low", "ci_high", "n"]
        # the DVC plot series exists, empty, without sliding windows
        course = pd.DataFrame(columns=course_columns + ["roi_a", "roi_b"])
        if sliding:
            spec = sliding[0]
            # the course of the figure edges only (edges.parquet has all)
            sl = read_edges(paths["edges"], [spec["name"]], [metric]).long(
                figure_pairs if len(pairs) > sm.FIGURE_EDGES else None)
            course = sm.sliding_course(sl, events, spec, groups, sp.alpha)
            drawn = list(course[["roi_a", "roi_b"]].drop_duplicates().itertuples(index=False, name=None))
            if len(drawn) > sm.FIGURE_EDGES:
                drawn = [e for e in figure_pairs if e in set(drawn)]
            for a, b in progress(drawn, len(drawn), "report: sliding-window figures"):
                name = f"course_{sm.slug(a)}__{sm.slug(b)}.png"
                ef.course_figure(course, a, b, groups, scale, spec, out / "figures" / name)
                courses.append({"src": f"figures/{name}", "alt": f"Sliding-window course, {methods.edge_label(a, b)}"})
        write_text(out / "plots" / "sliding_course.csv", sm.csv_text(course[course_columns]))
        plotted = set(figure_pairs)
        sm.plot_series(course[[(a, b) in plotted for a, b in zip(course["roi_a"], course["roi_b"])]] if len(pairs) >
                       sm.FIGURE_EDGES else course, course_columns[2:3] + course_columns[1:2] + course_columns[3:],
                       out / "plots" / "course")

        study_figs, qc_figs = study_figures(inputs, edges_m, run_qc, roi_qc, motion, qc_tables, groups, windows,
                                              sp.baseline_window, scale, out / "figures", sp.alpha, tests,
                                              rparams.primary_test, metric, params.extract.data.space)
        subject_links = {s: f"subjects/{name}"
                         for s, name in progress(pages, len(page_jobs), "report: subject pages")}
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
            limits.restore_original_limits()

    plot_csv = summary[["edge", "group", "window", "window_mid_min", "mean_delta", "ci_low", "ci_high", "n"]]
    write_text(out / "plots" / "delta_by_window.csv", sm.csv_text(plot_csv))
    sm.plot_series(summary[[(a, b) in plotted for a, b in zip(summary["roi_a"], summary["roi_b"])]]
                   if len(pairs) > sm.FIGURE_EDGES else summary,
                   ["window_mid_min", "group", "window", "mean_delta", "ci_low", "ci_high", "n"], out / "plots" / "delta")

    n_per_group = run_qc.drop_duplicates("subject")["group"].value_counts().sort_index().to_dict()
    n_per_group = {k: int(v) for k, v in n_per_group.items()}
    detail = sm.metrics_payload(primary, rparams.primary_test, metric, n_per_group, run_qc)
    write_json(out / "confirmatory.json", detail)
    payload = sm.headline_metrics(detail, sp.alpha)
    truth, truth_note = planted_contrasts(params, inputs.truth, paths["edges"])
    if truth is not None and rparams.primary_term == "group:window":
        truth = sm.truth_check(primary, truth)
        conf = truth[truth["family"] == "confirmatory"] if (truth["family"] == "confirmatory").any() else truth
        covered = conf["covered"].dropna()
        payload["planted"] = {"family": str(conf["family"].iloc[0]) if len(conf) else None,
                              "intervals": int(covered.size), "covering": int(covered.sum())}
        truth_note = (f"The {sm.ci_level(sp.alpha)} intervals of {rparams.primary_test} cover the planted "
                      f"contrast (measured scale) in {int(covered.sum())} of {covered.size} "
                      f"{payload['planted']['family']} edge-windows.")
        truth = conf.to_dict("records")
    elif truth is not None:
        truth, truth_note = None, "Planted values are given for group:window contrasts only."
    write_json(out / "metrics.json", payload)

    group_rows = []
    for g, frame in run_qc.groupby("group", sort=True):
        group_rows.append({"group": g, "subjects": frame["subject"].nunique(), "runs": len(frame),
                           "volumes": int(frame["n_volumes"].sum()), "mean_fd": float(frame["mean_fd"].mean()),
                           "excluded": int(frame["excluded"].sum())})
    excl = run_qc[run_qc["excluded"]]
    missing_rois = roi_qc[roi_qc["missing"]].to_dict("records")
    per_group = sm.group_counts(edges[edges["window"].isin(windows)], tests, sp.baseline_window, groups)
    shown = tests.assign(n_groups=[" / ".join("–" if pd.isna(v) else str(v) for v in row)
                                   for row in per_group.itertuples(index=False)])
    fams = []
    for f in ("confirmatory", "exploratory"):
        rows = shown[shown["family"] == f]
        if len(rows) > sm.TABLE_ROWS:  # the page shows the smallest adjusted p; tests.csv has every row
            order = np.lexsort((rows["p"].to_numpy(float), rows["p_adj"].to_numpy(float)))  # NaN last
            rows = rows.iloc[np.sort(order[:sm.TABLE_ROWS])]
        if (shown["family"] == f).any():
            fams.append({"name": f, "rows": rows.to_dict("records"), "total": int((shown["family"] == f).sum())})
    write_text(out / "tests.csv", sm.csv_text(pd.concat([tests[TEST_COLUMNS], per_group.add_prefix("n_")], axis=1)))
    context = {
        "title": rparams.title or f"{groups[1]} vs {groups[0]}",
        "headline": headline(primary, sp.alpha),
        "summary": group_rows, "n_excluded": len(excl), "exclusions": excl.to_dict("records"),
        "missing_rois": missing_rois,
        "primary_test": rparams.primary_test, "correction": sp.correction, "figures": figures,
        "figure_note": figure_note,
        "courses": courses, "study_figures": study_figs, "qc_figures": qc_figs,
        "motion_tests": qc_tables["motion_tests"][(qc_tables["motion_tests"]["measure"] != "censored")
                                                   | bool(motion["censored"].any())].to_dict("records"),
        "any_censored": bool(motion["censored"].any()), "strategy": params.extract.denoise.strategy,
        "qc_fc": qc_tables["qc_fc_summary"].to_dict("records"),
        "subject_rows": qc_tables["subjects"].to_dict("records"), "subject_links": subject_links,
        "outliers": qc_tables["outliers"].to_dict("records"),
        "families": fams, "groups": groups, "alpha": sp.alpha, "truth": truth, "truth_note": truth_note, "caveats": provs["stats"].get("caveats", {}),
        "ci_level": sm.ci_level(sp.alpha), "primary_term": rparams.primary_term,
        "star_levels": [f"{sp.alpha:g}", f"{sp.alpha / 5:g}", f"{sp.alpha / 50:g}"],
        "methods": methods.methods_text(provs, sp.correction, sp.confirmatory, sp.alpha, sp.family,
                                   section_hash(rparams), section_hash(params), tests),
        "references": list(dict.fromkeys([*(r for stage in ("extract", "connectivity", "stats")
                                            for r in provs[stage].get("references", [])), refs.DVC])),
        "versions": methods.package_versions(), "commit": git_commit(),
        "data_version": file_digest(paths["timeseries"]),
    }
    page.write_report(out, context)


def planted_contrasts(params: Params, path: Path, edges_path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """The planted group:window contrasts of a simulated study from results/truth/, or None and why not."""
    from fclab.framework.report.summaries import truth_contrasts as contrasts

    if not path.exists():
        return None, None
    prov = read_provenance(path)
    if not prov.get("simulated"):
        return None, None
    if prov.get("inputs", {}).get(str(edges_path)) != file_digest(edges_path):
        return None, f"{path} was computed from other connectivity values; run fclab truth to compare with the planted effect."
    sp = params.stats
    windows = [w.name for w in params.connectivity.windows]
    return contrasts(read_parquet(path), tuple(sp.groups), windows, sp.baseline_window), None


def study_qc(params: Params, run_qc, roi_qc, motion, edges_m, windows, events) -> dict[str, pd.DataFrame]:
    """The report's QC tables (framework/qc.py): motion and censoring per window and group over the
    runs analysed, with the group tests; per-subject summaries and outliers; QC-FC per edge and window."""
    from fclab.framework.report import qc
    from fclab.framework.connectome.windows import resolve

    sp = params.stats
    analysed = run_qc[~run_qc["excluded"].astype(bool)]
    cuts = resolve(params.connectivity, analysed, events)
    wm = qc.window_motion(motion, cuts[cuts["window"].isin(windows)])
    subjects = qc.subject_qc(run_qc, motion, roi_qc)
    q = qc.qc_fc_all(edges_m, run_qc, windows)
    return {"window_motion": wm, "motion_tests": qc.window_motion_tests(wm, list(sp.groups), windows),
            "subjects": subjects, "outliers": qc.outliers(subjects), "qc_fc": q,
            "qc_fc_summary": qc.qc_fc_summary(q, sp.alpha)}


def study_figures(inputs: ReportInputs, edges_m, run_qc, roi_qc, motion, qc_tables, groups, windows, baseline, scale, fig_dir: Path,
                  alpha: float = 0.05, tests: pd.DataFrame | None = None, primary_test: str | None = None,
                  metric: str | None = None, space: str = "MNI152NLin2009cAsym"):
    """The ROI, matrix and QC figures; returns (study figures, QC figures) for the template. Runs outside
    MNI space (``space``) get their first run's ROIs on its mean image and no glass-brain view."""
    from fclab.framework.report import figures as fg
    from fclab.framework.report.summaries import ci_level

    atlas = read_parquet(inputs.rois)
    rois = atlas["roi"].tolist()
    study, qc = [], []

    def add(where, name, caption):
        where.append({"src": f"figures/{name}", "alt": caption})

    if inputs.rois_image.name.endswith(".dlabel.nii"):  # surface or CIFTI data
        fg.surface_roi_figure(nib.load(inputs.rois_image), atlas, fig_dir / "rois.png")
        add(study, "rois.png", "Regions of interest on the cortical surface (and subcortical ones on the MNI152 template)")
    elif is_mni_space(space):
        fg.roi_figure(nib.load(inputs.rois_image), atlas, fig_dir / "rois.png")
        add(study, "rois.png", "Regions of interest on the MNI152 template (axial slices)")
    else:  # the ROIs of the first run, on that run's mean image: no template stands for a native space
        background = nib.load(inputs.rois_image.with_name("rois_background.nii.gz"))
        fg.roi_figure(nib.load(inputs.rois_image), atlas, fig_dir / "rois.png", background, space)
        run = background.header["descrip"].tobytes().decode(errors="replace").rstrip("\0")
        add(study, "rois.png", f"Regions of interest on the mean image of the run {run} ({space} space, "
            "axial slices); every subject has its own, and no "
            "glass-brain view is drawn: the ROI positions are not in a template's coordinates")
    fg.matrices_figure(edges_m, rois, groups, windows, scale, fig_dir / "matrices.png")
    add(study, "matrices.png", "Group-mean connectivity per window, and the group difference")
    effect_windows = [w for w in windows if w != baseline]
    views = {primary_test: f"Strongest effects, {primary_test}"} if primary_test else {}
    views.setdefault("nbs", "NBS components")  # when the study ran the network-based statistic
    for test, what in views.items() if is_mni_space(space) or inputs.rois_image.name.endswith(
            ".dlabel.nii") else ():
        rows = tests[(tests["test"] == test) & (tests["term"] == "group:window") & (tests["metric"] == metric)] \
            if tests is not None else pd.DataFrame()
        if rows.empty:
            continue
        name = f"connectome_{test}.png"
        fg.connectome_figure(rows, atlas, effect_windows, alpha, f"{what}: edges with adjusted p < {alpha:g}, "
                             "coloured by the estimate", fig_dir / name)
        add(study, name, f"{what} on a glass brain, one row per window that has any: edges whose group × window "
            f"term has adjusted p < {alpha:g} (at most 40 per window, smallest adjusted p first), between ROI centroids")
    fg.motion_window_figure(qc_tables["window_motion"], qc_tables["motion_tests"], groups, windows,
                            fig_dir / "qc_motion_windows.png", alpha)
    censored = (qc_tables["window_motion"]["censored"] > 0).any()
    add(qc, "qc_motion_windows.png", "Head motion" + (" and censoring" if censored else "") +
        f" per window and group, runs analysed (mean and {ci_level(alpha)} CI over subjects; dots: subjects; "
        f"* groups differ, Holm-adjusted Mann–Whitney p < {alpha:g})")
    fg.fd_figure(motion, run_qc, groups, fig_dir / "qc_fd.png")
    no_fd = not np.isfinite(pd.to_numeric(run_qc["mean_fd"], errors="coerce")).any()
    add(qc, "qc_fd.png", "Framewise displacement per volume, by group" + (
        ": none to draw, since no run's confounds have a framewise_displacement column (no motion rule, "
        "QC-FC or motion comparison could use it)" if no_fd else ""))
    fg.qcfc_distance_figure(qc_tables["qc_fc"], edges_m, atlas, groups, baseline, scale, fig_dir / "qc_fc_distance.png")
    add(qc, "qc_fc_distance.png", f"QC-FC over every edge and window, and connectivity against ROI distance "
        f"({baseline} window)")
    fg.roi_qc_figure(roi_qc, fig_dir / "qc_rois.png")
    add(qc, "qc_rois.png", "ROI coverage and tSNR")
    return study, qc


def subject_page_jobs(params: Params, edges_m, run_qc, roi_qc, motion, qc_tables, windows, scale,
                      out: Path, inputs: ReportInputs) -> list[dict]:
    """The jobs of ``report.subject_page``: one per subject, each drawing reports/subjects/sub-<label>.html
    and its figures (none when ``report.subject_pages`` is off)."""
    out.mkdir(parents=True, exist_ok=True)  # a DVC output: it exists, empty, without pages
    if not params.report.subject_pages:
        return []
    carpets = read_parquet(inputs.carpets)
    rois = read_parquet(inputs.rois)["roi"].tolist()
    flags = qc_tables["outliers"]
    jobs = []
    for row in qc_tables["subjects"].to_dict("records"):
        s = row["subject"]
        jobs.append({
            "subject": s, "summary": row, "out": out, "rois": rois, "windows": windows, "scale": scale,
            "title": params.report.title or f"{params.stats.groups[1]} vs {params.stats.groups[0]}",
            "runs": run_qc[run_qc["subject"] == s], "roi_qc": roi_qc[roi_qc["subject"] == s],
            "motion": motion[motion["subject"] == s], "carpets": carpets[carpets["subject"] == s],
            "edges": edges_m[edges_m["subject"] == s], "flags": flags[flags["subject"] == s],
        })
    return jobs


def headline(primary: pd.DataFrame, alpha: float) -> str:
    """The strongest adjusted result of the primary test, in one sentence."""
    from fclab.framework.report.summaries import ci_level

    pool = primary[primary["family"] == "confirmatory"]
    pool = pool if not pool.empty else primary
    best = pool.sort_values(["p_adj", "p"]).iloc[0]
    where = f"Strongest {best['family']} effect ({best['test']}): {best['roi_a']} – {best['roi_b']} at {best['window']}"
    if not np.isfinite(best["p_adj"]):  # no row has a p-value: say why instead of "p_adj = nan"
        why = best.get("reason")
        return (f"{where}: no adjusted p-value ({why if isinstance(why, str) and why.strip() else 'no reason given'})"
                f"; estimate {best['estimate']:.3f}.")
    verdict = "significant" if best["p_adj"] < alpha else "not significant"
    return (
        f"{where}, "
        f"estimate {best['estimate']:.3f} [{best['ci_low']:.3f}, {best['ci_high']:.3f}] ({ci_level(alpha)} CI), "
        f"p_adj = {best['p_adj']:.2g} ({best['adj_method']}), {verdict} at α = {alpha}."
    )
