"""The DVC stages, one adapter each: read the stage's inputs from the results layout, build the
plugins params select, call the engine, and write the outputs atomically with their provenance.
The layout (which directory holds which tables) lives here and nowhere else."""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fclab.framework import references as refs
from fclab.framework.connectome.edgestore import read_edges, write_edges
from fclab.framework.connectome.engine import check_windows_have_values, connectivity, output_scales, scale_descriptions
from fclab.framework.executor import make_executor
from fclab.framework.extraction import cache as runcache
from fclab.framework.extraction.engine import RoiBuilder, extract
from fclab.framework import __version__
from fclab.framework.errors import DataError, ParamsError
from fclab.framework.io import (
    DIRECTORY, atomic_dir, locked, check_fresh, check_params, file_digest, git_commit, provenance, read_parquet, read_provenance, staged_members,
    write_json, write_parquet,
)
from fclab.framework.params import ExtractParams, Params, section_hash
from fclab.framework.pluginhost.builder import SECTIONS, build_all, selected, specs_of
from fclab.framework.pluginhost.contracts import Plugin
from fclab.framework.pluginhost.registry import get_registry
from fclab.framework.report import methods

EXTRACT_DIR = Path("results/extract")
CONNECTIVITY_DIR = Path("results/connectivity")
STATS_DIR = Path("results/stats")
TRUTH_DIR = Path("results/truth")
REPORT_DIR = Path("reports")
EXTRACT_FILES = {"timeseries.parquet", "roi_qc.parquet", "run_qc.parquet", "events.parquet", "participants.parquet",
                 "motion.parquet", "carpets.parquet", "rois.parquet", "rois.nii.gz", "rois.dlabel.nii", "rois_background.nii.gz"}
STAGES = ("simulate", "extract", "connectivity", "truth", "stats", "report")


def default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _plugin_versions(plugins: list[Plugin]) -> dict[str, str]:
    versions = {(i.kind, i.name): i.version for i in get_registry().infos()}
    return {p.name: versions.get((p.kind, p.name), "unknown") for p in plugins}


def _provenance(stage: str, params_hash: str, plugins: list[Plugin], inputs: dict[str, str],
                references: tuple[str, ...] = ()) -> dict:
    """A stage's provenance: plugin versions, plugin code hashes, the hashes of its input files (the
    files its plugins read included), and the works to cite for its methods (its own, then its plugins')."""
    registry = get_registry()
    records = [registry.record(p) for p in plugins]
    inputs = dict(inputs) | {f: d for r in records for f, d in r["inputs"].items()}
    prov = provenance(stage, params_hash, _plugin_versions(plugins), inputs)
    prov["plugin_code"] = {p.name: r["code"] for p, r in zip(plugins, records)}
    prov["references"] = list(dict.fromkeys([*references, *(r for p in plugins for r in p.references)]))
    return prov


PLUGINS_DIR = Path("results/plugins")


def plugins(params: Params, kind: str) -> list[Plugin]:
    """The plugins of ``kind`` ("roi", "metric", "test") params select, built once by the stage that
    runs them and handed to its engine."""
    return build_all(kind, specs_of(params, kind), get_registry())


def roi_builder(p: ExtractParams) -> RoiBuilder:
    """The study's ROI sets (``extract.rois``), ready to be placed on each run's grid."""
    registry = get_registry()
    installed = {name: tuple(cls.data) for name, cls in registry.rois().items()}
    return RoiBuilder(build_all("roi", p.rois, registry), installed, p.data.space)


@locked
def stage_plugins(params: Params) -> None:
    """results/plugins/{roi,metric,test}.json: what the plugins params.yaml selects depend on (code
    hash, version, requirements, input files), and inputs.json, the files extract reads outside its
    data root (``outside_inputs``). A DVC stage that always runs; a file changes only when what it
    describes does, so `dvc repro` reruns just the stages that use it."""
    registry = get_registry()
    entries = {kind: [] for kind, _ in SECTIONS}
    for kind, _, name, plugin in selected(params, registry):
        entries[kind].append({"name": name, **registry.record(plugin)})
    entries["inputs"] = outside_inputs(params.extract.data)
    with atomic_dir(PLUGINS_DIR, {f"{k}.json" for k in entries}.__contains__) as out_dir:
        for kind, rows in entries.items():
            write_json(out_dir / f"{kind}.json", rows)


def outside_inputs(data) -> list[dict]:
    """The files extract reads that its DVC dependency ``${extract.data.root}`` does not hold, each with
    its role, path and hash: every events.tsv under ``data.events_root`` (``events_manifest``), and
    participants.tsv when it lies outside the root (fMRIPrep writes none, so it is often the raw BIDS
    tree's). Without them, moving a subject between groups there left every result silently stale."""
    rows = [{"role": "events", **row} for row in events_manifest(data.events_root)]
    path = Path(data.root) / data.participants
    if not path.resolve().is_relative_to(Path(data.root).resolve()):
        try:
            digest = file_digest(path)
        except OSError:  # extract names it
            digest = "missing"
        rows.append({"role": "participants", "path": str(path), "sha256": digest})
    return rows


def events_manifest(events_root: str | None) -> list[dict]:
    """Every events.tsv under extract.data.events_root (the raw BIDS dataset) with its hash: a directory
    DVC cannot list as a dependency when the setting is optional, so the manifest stage records it."""
    if not events_root or not Path(events_root).is_dir():
        return []
    root = Path(events_root)
    return [{"path": str(f.relative_to(root)), "sha256": file_digest(f)} for f in sorted(root.rglob("*_events.tsv"))]


def _digests(*paths: Path) -> dict[str, str]:
    return {str(p): file_digest(p) for p in paths}


def executor(params: Params, jobs: int | None = None):
    """The backend for independent jobs that params.executor names (-j sizes the local one)."""
    return make_executor(params.executor, jobs or default_jobs())


@locked
def stage_simulate(params: Params, jobs: int | None = None) -> Path:
    from fclab.framework.simulation.study import simulate

    return simulate(params.simulate, n_jobs=executor(params, jobs))


def kept_extract_state(p: ExtractParams, plugins: list[Plugin]) -> str | None:
    """The ``extract_state`` results/extract was written from (the cache's record of its files, by
    name, size and mtime), when its outputs can stand as they are: every table there written by one
    extraction, with these params, this fclab code and these ROI plugins' code (the state itself
    covers inputs, settings, ROIs and the extraction code run by run)."""
    try:
        provs = [read_provenance(EXTRACT_DIR / f) for f in sorted(EXTRACT_FILES) if f.endswith(".parquet")]
    except DataError:
        return None
    first = provs[0]
    images = [EXTRACT_DIR / f for f in ("rois.nii.gz", "rois.dlabel.nii")]
    if any(pv != first for pv in provs) or not any(f.is_file() for f in images):
        return None
    registry = get_registry()
    if (first.get("params_hash"), first.get("git_commit"), first.get("fclab_version"), first.get("plugin_code")) != (
            section_hash(p), git_commit(), __version__, {pl.name: registry.record(pl)["code"] for pl in plugins}):
        return None
    return runcache.recorded_state(EXTRACT_DIR)


@locked
def stage_extract(params: Params, jobs: int | None = None) -> None:
    if (params.simulate.design == "crossover" and params.analyses_simulated_study()
            and not any(sel.session for sel in params.extract.data.runs.values())):
        raise ParamsError("simulate.design: crossover: the simulated study has two sessions per subject (ses-1, "
                          "ses-2, named in sub-*/sub-*_sessions.tsv), which the stages do not yet analyse as one "
                          "crossover study; select one session per run (extract.data.runs.<key>.session) to extract "
                          "it (README, Crossover studies)")
    p = params.extract
    builder = roi_builder(params.extract)
    cache = runcache.enabled()
    out = extract(p, builder, executor=executor(params, jobs), cache=cache,
                  unchanged_if=kept_extract_state(p, builder.plugins) if cache else None)
    if out is None:
        print(f"extract: nothing changed since {EXTRACT_DIR} was written (the same inputs by content, settings and "
              "code); kept it", file=sys.stderr)
        return
    for line in out.warnings:
        print(line, file=sys.stderr)
    if out.cached:
        print(f"extract: {methods.counted(out.computed, 'run')} extracted, {out.cached} from the per-run cache "
              f"({runcache.cache_dir()})", file=sys.stderr)
    ts, roi_qc, run_qc = out.timeseries, out.roi_qc, out.run_qc
    d = p.denoise
    cite = (refs.FMRIPREP, refs.NILEARN) + ((refs.DENOISING,) if d.strategy != "none" else ()) + (
        (refs.SCRUBBING,) if d.strategy == "scrubbing" else ())
    prov = _provenance("extract", section_hash(p), out.plugins, out.digests, cite)
    prov["methods"] = methods.extraction_methods(p, run_qc, out.surface, out.plugins)
    with atomic_dir(EXTRACT_DIR, EXTRACT_FILES.__contains__) as out_dir:
        write_parquet(ts, out_dir / "timeseries.parquet", prov)
        write_parquet(roi_qc, out_dir / "roi_qc.parquet", prov)
        write_parquet(run_qc, out_dir / "run_qc.parquet", prov)
        write_parquet(out.events, out_dir / "events.parquet", prov)
        write_parquet(out.participants, out_dir / "participants.parquet", prov)
        write_parquet(out.motion, out_dir / "motion.parquet", prov)
        write_parquet(out.carpets, out_dir / "carpets.parquet", prov)
        write_parquet(out.atlas, out_dir / "rois.parquet", prov)
        if isinstance(out.atlas_img, nib.Cifti2Image):  # surface data: a CIFTI dlabel over their grayordinates
            (out_dir / "rois.dlabel.nii").write_bytes(out.atlas_img.to_bytes())
        else:  # gzip without a timestamp: reproducible bytes
            (out_dir / "rois.nii.gz").write_bytes(gzip.compress(out.atlas_img.to_bytes(), mtime=0))
        if out.background is not None:  # runs outside MNI space: their ROIs are drawn on the first run's mean
            (out_dir / "rois_background.nii.gz").write_bytes(gzip.compress(out.background.to_bytes(), mtime=0))
    runcache.record_outputs(EXTRACT_DIR, out.state)


def upstream_params(params: Params, *stages: str) -> None:
    """Every table the named upstream stages wrote was computed with this params file's sections (a
    one-line error naming the table otherwise); ``truth`` is checked only when it exists."""
    tables = {"extract": (EXTRACT_DIR / "run_qc.parquet", "extract"),
              "connectivity": (CONNECTIVITY_DIR / "edges.parquet", "connectivity"),
              "stats": (STATS_DIR / "tests.parquet", "stats")}
    for stage in stages:
        path, section = tables[stage]
        check_params(path, read_provenance(path), section, section_hash(getattr(params, section)), stage)


@locked
def stage_connectivity(params: Params) -> None:
    p = params.connectivity
    upstream_params(params, "extract")
    inputs = [EXTRACT_DIR / f for f in ("timeseries.parquet", "run_qc.parquet", "events.parquet",
                                       "participants.parquet")]
    run_qc, events, participants = (read_parquet(f) for f in inputs[1:])
    metrics = plugins(params, "metric")
    roi_qc = read_parquet(EXTRACT_DIR / "roi_qc.parquet")
    roi_reasons = {(r.subject, r.run, r.roi): r.reason for r in roi_qc[roi_qc["missing"]].itertuples()}
    # the time series table is not kept here, so connectivity can free it once each run is an array
    edges = connectivity(p, read_parquet(inputs[0]), run_qc, events, metrics, participants["subject"].tolist(),
                         roi_reasons)
    check_windows_have_values(edges, [w.name for w in p.windows])
    inputs.append(EXTRACT_DIR / "roi_qc.parquet")
    prov = _provenance("connectivity", section_hash(p), metrics, _digests(*inputs))
    prov["methods"] = methods.connectivity_methods(p, metrics, methods.window_dof(edges.rows, run_qc, p.windows))
    prov["scales"] = output_scales(metrics)
    prov["scale_info"] = scale_descriptions(metrics)
    prov["windows"] = [w.name for w in p.windows]
    prov["sliding"] = [{"name": s.name, "run": s.run, "event": s.event} for s in p.sliding]
    with atomic_dir(CONNECTIVITY_DIR, {"edges.parquet"}.__contains__) as out_dir:
        write_edges(edges, out_dir / "edges.parquet", prov)


@locked
def stage_truth(params: Params, jobs: int | None = None) -> bool:
    """The planted effects on the measured scale (results/truth/), for the simulated study; for other
    data, empty outputs that say so. Returns whether the study is simulated."""
    from fclab.framework.simulation.truth import TRUTH_COLUMNS, measured_truth

    simulated = params.analyses_simulated_study()
    if simulated and params.simulate.design == "crossover":
        raise ParamsError("simulate.design: crossover: the truth stage does not yet take a session's period and "
                          "carry-over into its counterfactual (README, Crossover studies)")
    inputs = [EXTRACT_DIR / f"{f}.parquet" for f in ("timeseries", "run_qc", "events", "participants", "roi_qc")]
    inputs.append(CONNECTIVITY_DIR / "edges.parquet")
    prov = provenance("truth", section_hash({k: section_hash(getattr(params, k))
                                             for k in ("simulate", "extract", "connectivity")}), {}, {})
    truth = pd.DataFrame({c: pd.Series(dtype=float if c.startswith(("measured", "latent", "window_")) else object)
                          for c in TRUTH_COLUMNS})
    latent = {}
    if simulated:
        upstream_params(params, "connectivity", "extract")
        ts, run_qc, events, participants, roi_qc = (read_parquet(f) for f in inputs[:-1])
        check_fresh(inputs[-1])
        edges = read_edges(inputs[-1]).long()
        metrics = plugins(params, "metric")
        prov["plugins"] = _plugin_versions(metrics)
        prov["inputs"] = _digests(*inputs)
        roi_reasons = {(r.subject, r.run, r.roi): r.reason for r in roi_qc[roi_qc["missing"]].itertuples()}
        truth = measured_truth(params, ts, run_qc, events, participants, roi_reasons, edges, metrics,
                               roi_builder(params.extract), TRUTH_DIR.parent, executor(params, jobs))
        latent = json.loads((Path(params.simulate.output_dir) / "ground_truth.json").read_text())
    prov["simulated"] = simulated
    with atomic_dir(TRUTH_DIR, {"truth.parquet", "ground_truth.json"}.__contains__) as out_dir:
        write_parquet(truth, out_dir / "truth.parquet", prov)
        write_json(out_dir / "ground_truth.json", {
            "simulated": simulated,
            "description": "The planted effects on two scales. latent: the change of the simulated sources' "
            "correlation (ground_truth.json of the simulated data). measured: the mean over a group's subjects of "
            "(edge value of the study) - (edge value of the same study simulated with the same seed but no effect), "
            "through this study's extraction and connectivity settings; measured_se is its Monte Carlo standard "
            "error. Rows per metric, edge, window and group are in truth.parquet." if simulated
            else "The study's data are not the simulated study: there is no ground truth.",
            "latent": latent,
            "measured": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
                         for row in truth[truth["window"].isin([w.name for w in params.connectivity.windows])]
                         .to_dict("records")],
        })
    return simulated


@locked
def stage_stats(params: Params) -> None:
    from fclab.framework.stats.engine import run_stats, subject_table

    p = params.stats
    path = CONNECTIVITY_DIR / "edges.parquet"
    upstream_params(params, "connectivity", "extract")  # the nearest first: a missing table names it
    upstream = check_fresh(path)
    tests = plugins(params, "test")
    # sliding windows are for time courses; a test gets them only when it asks (StatTest.uses), and
    # otherwise their rows (most of the table with sliding windows) are never read
    wants_sliding = any("sliding" in t.uses for t in tests)
    windows = upstream.get("windows")
    edges = read_edges(path, None if wants_sliding or not windows else windows)
    windows = windows or list(dict.fromkeys(edges.rows["window"]))
    fixed = edges.rows["window"].isin(windows).to_numpy()
    sliding = edges.select(~fixed) if wants_sliding else None
    edges = edges.select(fixed)
    run_qc = read_parquet(EXTRACT_DIR / "run_qc.parquet")
    subjects = subject_table(read_parquet(EXTRACT_DIR / "participants.parquet"), run_qc)
    result = run_stats(p, edges, windows, tests, upstream.get("scales"), subjects, sliding,
                       run_qc if any("run_qc" in t.uses for t in tests) else None)
    prov = _provenance("stats", section_hash(p), tests, _digests(path), refs.CORRECTIONS[p.correction])
    n_per_group = edges.rows.drop_duplicates("subject")["group"].value_counts().to_dict()
    n_per_group = {g: int(n_per_group.get(g, 0)) for g in p.groups}
    prov["caveats"] = {t.name: c for t in tests if (c := t.caveat_for(n_per_group))}
    prov["methods"] = methods.stats_methods(p, tests, result, run_qc, params.extract.exclude)
    with atomic_dir(STATS_DIR, {"tests.parquet"}.__contains__) as out_dir:
        write_parquet(result, out_dir / "tests.parquet", prov)


@locked
def stage_report(params: Params, jobs: int | None = None) -> Path:
    """reports/: figures, plot series, per-subject QC pages, metrics.json and index.html, staged
    together and moved in with index.html last; other entries of reports/ (calibration, power) are
    left alone."""
    members = {"figures": DIRECTORY, "plots": DIRECTORY, "subjects": DIRECTORY, "metrics.json": b'"term": ',
               "confirmatory.json": b'"term": ', "tests.csv": b"test,metric,roi_a,roi_b,", "index.html": b"<title>fclab report"}
    from fclab.framework.report.assemble import ReportInputs, build_report

    inputs = ReportInputs(
        edges=CONNECTIVITY_DIR / "edges.parquet", tests=STATS_DIR / "tests.parquet",
        **{name: EXTRACT_DIR / f"{name}.parquet" for name in ("timeseries", "run_qc", "roi_qc", "motion", "events",
                                                              "carpets")},
        rois=EXTRACT_DIR / "rois.parquet", rois_image=next(
            (f for f in (EXTRACT_DIR / "rois.dlabel.nii", EXTRACT_DIR / "rois.nii.gz") if f.exists()),
            EXTRACT_DIR / "rois.nii.gz"),
        truth=TRUTH_DIR / "truth.parquet")
    upstream_params(params, "stats", "connectivity", "extract")
    with staged_members(REPORT_DIR, members) as out:
        build_report(params, inputs, out, jobs or default_jobs())
    return REPORT_DIR / "index.html"
