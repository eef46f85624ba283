"""Stage ``extract``: find runs, denoise, and turn each run into ROI time series plus QC."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse as sp
from nilearn import signal
from nilearn.interfaces.bids import get_bids_files
from nilearn.interfaces.fmriprep import load_confounds_strategy

from framework.contracts import RoiSet, RoiWeights
from framework.errors import DataError, ParamsError
from framework.executor import Executor, LocalExecutor, progress
from framework.io import file_digest
from framework.params import DataParams, DenoiseParams, ExtractParams, plugin_spec
from framework.registry import get_registry

TIMESERIES_KEYS = ["subject", "run", "volume", "time_s"]


@dataclass(frozen=True)
class RunInput:
    subject: str
    group: str
    run: str  # the run's key in params (e.g. "baseline")
    bold: Path
    mask: Path
    confounds: Path
    events: Path | None
    tr: float


def _one(files: list[str], what: str, where: str) -> Path:
    if not files:
        raise DataError(f"{where}: no {what} found")
    if len(files) > 1:
        raise DataError(f"{where}: {len(files)} {what} files match ({', '.join(Path(f).name for f in files)})")
    return Path(files[0])


def read_participants(data: DataParams) -> pd.DataFrame:
    root = Path(data.root)
    path = root / data.participants
    if not path.is_file():
        raise DataError(f"{path}: participants file not found")
    table = pd.read_csv(path, sep="\t", dtype={"participant_id": str})
    for col in ("participant_id", data.group_column):
        if col not in table.columns:
            raise DataError(f"{path}: no column {col!r}")
    missing = table[data.group_column].isna()
    if missing.any():
        sub = table.loc[missing, "participant_id"].iloc[0]
        raise DataError(f"{path}: {sub} has no value in group column {data.group_column!r}")
    table = table.rename(columns={data.group_column: "group"})
    table["group"] = table["group"].astype(str)
    table["subject"] = table["participant_id"].str.removeprefix("sub-")
    if data.group_map:
        unmapped = ~table["group"].isin(list(data.group_map))
        if unmapped.any():
            r = table[unmapped].iloc[0]
            raise DataError(f"{path}: sub-{r['subject']} has group value {r['group']!r}, which "
                            f"extract.data.group_map does not map (maps {', '.join(map(repr, data.group_map))})")
        table["group"] = table["group"].map(data.group_map)
    include, exclude = ([x.removeprefix("sub-") for x in v] for v in (data.include, data.exclude))
    for key, labels in (("include", include), ("exclude", exclude)):
        unknown = sorted(set(labels) - set(table["subject"]))
        if unknown:
            raise DataError(f"extract.data.{key}: no subject {', '.join(unknown)} in {path}")
    if include:
        table = table[table["subject"].isin(include)]
    table = table[~table["subject"].isin(exclude)].reset_index(drop=True)
    return table


def discover(data: DataParams, problems: list | None = None) -> tuple[pd.DataFrame, list[RunInput]]:
    """The participants table and every run to extract, with their files, via nilearn's BIDS tools.

    With a ``problems`` list, a run whose files are missing is reported there as (subject, group,
    run key, message) and left out instead of raising.
    """
    root = Path(data.root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (run `fclab simulate` for the default study)")
    participants = read_participants(data)
    runs = []
    for sub, group in zip(participants["subject"], participants["group"]):
        for key, sel in data.runs.items():
            try:
                runs.append(_find_run(root, data, sub, group, key, sel))
            except DataError as exc:
                if problems is None:
                    raise
                problems.append((sub, str(group), key, str(exc)))
    return participants, runs


def _find_run(root: Path, data: DataParams, sub: str, group, key: str, sel) -> RunInput:
    """The files of one run (BIDS entities from params), located with nilearn.interfaces.bids."""
    filters = ([("ses", sel.session)] if sel.session else []) + [("task", sel.task)] + (
        [("run", sel.run)] if sel.run else [])
    image = [("space", data.space)] + ([("res", data.res)] if data.res else [])
    where = f"sub-{sub} run {key!r}"
    bold = _one(get_bids_files(str(root), "bold", "nii.gz", sub, "func",
                               filters + image + [("desc", "preproc")]),
                "preprocessed BOLD", where)
    mask = _one(get_bids_files(str(root), "mask", "nii.gz", sub, "func",
                               filters + image + [("desc", "brain")]),
                "brain mask", where)
    conf = _one(get_bids_files(str(root), "timeseries", "tsv", sub, "func",
                               filters + [("desc", "confounds")]), "confounds TSV", where)
    events = get_bids_files(str(root), "events", "tsv", sub, "func", filters)
    sidecar = Path(str(bold).removesuffix(".nii.gz") + ".json")
    tr = _repetition_time(sidecar)
    return RunInput(sub, str(group), key, bold, mask, conf, Path(events[0]) if events else None, tr)


def check_inputs(p: ExtractParams, needed_events: dict[str, set[str]]) -> tuple[pd.DataFrame, list[str]]:
    """Every input ``extract`` will read, checked from headers and tables without computing anything.

    Returns one row per run found (subject, group, run, TR, volumes) and every problem as a line.
    """
    found: list = []
    participants, runs = discover(p.data, found)
    problems = [msg for *_, msg in found]
    rows = []
    for run in runs:
        row = {"subject": run.subject, "group": run.group, "run": run.run, "tr_s": run.tr, "n_volumes": np.nan}
        try:
            bold, mask = (_header(f) for f in (run.bold, run.mask))
            if len(bold.shape) != 4:
                raise DataError(f"{run.bold}: expected a 4D BOLD image, got shape {bold.shape}")
            row["n_volumes"] = bold.shape[3]
            if mask.shape[:3] != bold.shape[:3] or not np.allclose(mask.affine, bold.affine, atol=1e-4):
                raise DataError(f"{run.mask}: grid differs from {run.bold.name} (shape or affine)")
            n_rows = len(pd.read_csv(run.confounds, sep="\t"))
            if n_rows != bold.shape[3]:
                raise DataError(f"{run.confounds}: {n_rows} rows for {bold.shape[3]} volumes in {run.bold.name}")
            try:
                if p.denoise.strategy != "none":
                    load_confounds_strategy(str(run.bold), denoise_strategy=p.denoise.strategy,
                                            **p.denoise.strategy_options)
            except (ValueError, KeyError, FileNotFoundError) as exc:
                raise DataError(f"{run.confounds}: cannot build {p.denoise.strategy!r} confounds ({exc})") from exc
            if p.denoise.columns:
                custom_confounds(run.confounds, p.denoise.columns, bold.shape[3], run.bold.name)
            wanted = needed_events.get(run.run, set())
            if wanted:
                have = set() if run.events is None else set(pd.read_csv(run.events, sep="\t")["trial_type"].astype(str))
                for name in sorted(wanted - have):
                    where = run.events or f"sub-{run.subject} run {run.run!r}"
                    raise DataError(f"{where}: no event {name!r} (needed by connectivity.windows)")
        except DataError as exc:
            problems.append(str(exc))
        rows.append(row)
    return pd.DataFrame(rows, columns=["subject", "group", "run", "tr_s", "n_volumes"]), problems


def _header(path: Path) -> nib.Nifti1Image:
    try:
        return nib.load(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from exc


def _repetition_time(sidecar: Path) -> float:
    try:
        tr = json.loads(sidecar.read_text())["RepetitionTime"]
    except FileNotFoundError as exc:
        raise DataError(f"{sidecar}: sidecar JSON not found (it gives the TR)") from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{sidecar}: no valid RepetitionTime") from exc
    if not isinstance(tr, (int, float)) or tr <= 0:
        raise DataError(f"{sidecar}: RepetitionTime must be a positive number, got {tr!r}")
    return float(tr)


def load_nifti(path: Path) -> tuple[nib.Nifti1Image, str]:
    """The image (header read, data loaded on access) and the file's digest; errors name the file.

    The digest streams the file, and the image is not built from an in-memory copy of the
    compressed bytes, so a run's peak memory is its data array, not twice it.
    """
    try:
        digest = file_digest(path)
        img = nib.load(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from exc
    return img, digest


class RoiBuilder:
    """Builds the study's ROI set (every configured ROI plugin, in order) once per voxel grid."""

    def __init__(self, specs):
        registry = get_registry()
        self.plugins: list[RoiSet] = []
        for i, spec in enumerate(specs):
            name, opts = plugin_spec(spec, f"extract.rois[{i}]")
            cls = registry.get("roi", name, f"extract.rois[{i}]")
            self.plugins.append(cls(cls.Params.model_validate(opts)))
        self._cache: dict[tuple, RoiWeights] = {}

    def for_grid(self, reference: nib.Nifti1Image) -> RoiWeights:
        key = (reference.shape[:3], np.round(reference.affine, 6).tobytes())
        if key not in self._cache:
            parts = [plugin.build(reference) for plugin in self.plugins]
            names = [n for part in parts for n in part.names]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ParamsError(f"extract.rois: ROI names defined twice: {', '.join(dup)}")
            weights = sp.vstack([part.weights for part in parts]).tocsr()
            self._cache[key] = RoiWeights(names, weights)
        return self._cache[key]


def custom_confounds(path: Path, columns: list[str], n_volumes: int, bold_name: str) -> pd.DataFrame:
    """The named columns of a confounds TSV, leading n/a (derivatives) as 0; errors name file and column."""
    table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no confound column {missing[0]!r} (extract.denoise.columns)")
    if len(table) != n_volumes:
        raise DataError(f"{path}: {len(table)} rows for {n_volumes} volumes in {bold_name}")
    return table[columns].astype(float).fillna(0.0)


def _extract_run(run: RunInput, rois: RoiWeights, denoise: DenoiseParams, min_coverage: float | None = None):
    bold, bold_digest = load_nifti(run.bold)
    mask, mask_digest = load_nifti(run.mask)
    if bold.ndim != 4:
        raise DataError(f"{run.bold}: expected a 4D BOLD image, got shape {bold.shape}")
    if mask.shape[:3] != bold.shape[:3] or not np.allclose(mask.affine, bold.affine, atol=1e-4):
        raise DataError(f"{run.mask}: grid differs from {run.bold.name} (shape or affine)")
    T = bold.shape[3]
    cols = np.unique(rois.weights.indices)
    ijk = np.unravel_index(cols, bold.shape[:3])
    try:
        dataobj = np.asarray(bold.dataobj)
    except (ValueError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{run.bold}: data block unreadable ({exc})") from exc
    if denoise.smoothing_fwhm:  # as the nilearn maskers do: smooth the image, then extract
        from nilearn.image import smooth_img

        dataobj = np.asarray(smooth_img(nib.Nifti1Image(dataobj.astype(np.float64), bold.affine),
                                        denoise.smoothing_fwhm).dataobj)
    voxels = dataobj[ijk].astype(np.float64)  # (n_roi_voxels, T): only the voxels ROIs use
    if not np.isfinite(voxels).all():
        raise DataError(f"{run.bold}: NaN or infinite values inside the ROIs")
    raw_signals = (rois.weights[:, cols] @ voxels).T  # (T, R)

    if denoise.strategy == "none":  # detrending, filtering and scaling only
        confounds, sample_mask = None, None
    else:
        try:
            confounds, sample_mask = load_confounds_strategy(
                str(run.bold), denoise_strategy=denoise.strategy, **denoise.strategy_options
            )
        except (ValueError, KeyError, FileNotFoundError) as exc:
            raise DataError(f"{run.confounds}: cannot build {denoise.strategy!r} confounds ({exc})") from exc
        if len(confounds) != T:
            raise DataError(f"{run.confounds}: {len(confounds)} rows for {T} volumes in {run.bold.name}")
    if denoise.columns:
        extra = custom_confounds(run.confounds, denoise.columns, T, run.bold.name)
        confounds = extra if confounds is None else pd.concat([confounds, extra.drop(
            columns=[c for c in extra.columns if c in confounds.columns])], axis=1)
    cleaned = signal.clean(
        raw_signals, confounds=None if confounds is None else confounds.to_numpy(), sample_mask=sample_mask,
        t_r=run.tr, detrend=denoise.detrend, standardize=denoise.standardize,
        low_pass=denoise.low_pass_hz, high_pass=denoise.high_pass_hz,
    )
    kept = np.arange(T) if sample_mask is None else np.asarray(sample_mask)
    ts = pd.DataFrame(cleaned, columns=rois.names)
    ts.insert(0, "time_s", kept * run.tr)
    ts.insert(0, "volume", kept.astype(np.int32))
    ts.insert(0, "run", run.run)
    ts.insert(0, "subject", run.subject)

    inside = np.asarray(mask.dataobj)[ijk] > 0
    mean, sd = voxels.mean(axis=1), voxels.std(axis=1)
    tsnr = np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 0)
    bad = (voxels == 0).all(axis=1)
    support = rois.support[:, cols]
    n_vox = np.asarray(support.sum(axis=1)).ravel()
    per_roi = lambda v: np.asarray(support @ v).ravel() / np.maximum(n_vox, 1)  # noqa: E731
    roi_qc = pd.DataFrame({
        "subject": run.subject, "run": run.run, "roi": rois.names, "n_voxels": n_vox.astype(np.int32),
        "coverage": per_roi(inside.astype(float)), "tsnr": per_roi(tsnr), "frac_bad": per_roi(bad.astype(float)),
    })
    cover = roi_qc["coverage"].to_numpy()
    if min_coverage is None:
        outside = cover == 0
        if outside.any():
            raise DataError(f"{run.mask}: ROI {roi_qc['roi'][np.flatnonzero(outside)[0]]!r} has no voxel inside "
                            f"sub-{run.subject}'s brain mask")
        roi_qc["missing"], roi_qc["reason"] = False, ""
    else:
        low = cover < min_coverage
        roi_qc["missing"] = low
        roi_qc["reason"] = [f"coverage {c:.2f} < min_coverage {min_coverage:g}" if m else ""
                            for c, m in zip(cover, low)]
        for name in roi_qc.loc[low, "roi"]:
            ts[name] = np.nan  # the ROI keeps its column, with no values for this run

    fd = pd.read_csv(run.confounds, sep="\t", usecols=["framewise_displacement"])["framewise_displacement"]
    censored = np.ones(T, bool)
    censored[kept] = False
    motion = pd.DataFrame({"subject": run.subject, "run": run.run, "volume": np.arange(T, dtype=np.int32),
                           "framewise_displacement": fd.to_numpy(np.float64), "censored": censored})
    run_qc = {
        "subject": run.subject, "group": run.group, "run": run.run, "bold": run.bold.name,
        "tr_s": run.tr, "n_volumes": T, "n_retained": int(kept.size),
        "mean_fd": float(np.nanmean(fd)), "max_fd": float(np.nanmax(fd)),
        "excluded": False, "reason": "",
    }
    events = None
    if run.events is not None:
        ev = pd.read_csv(run.events, sep="\t")
        events = pd.DataFrame({"subject": run.subject, "run": run.run, "trial_type": ev["trial_type"].astype(str),
                               "onset_s": ev["onset"].astype(float), "duration_s": ev["duration"].astype(float)})
    digests = {str(run.bold): bold_digest, str(run.mask): mask_digest,
               str(run.confounds): file_digest(run.confounds)}
    if run.events is not None:
        digests[str(run.events)] = file_digest(run.events)
    return ts, roi_qc, run_qc, events, digests, motion


def roi_atlas(rois: RoiWeights, grid: nib.Nifti1Image) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """The ROI set as a label image on ``grid`` (1-based, in ROI order; the larger weight wins an
    overlap) and a table of ROI centroids in world (MNI) mm and voxel counts, for figures."""
    support = rois.support.tocsr()
    n_vox = np.asarray(support.sum(axis=1)).ravel()
    shape = grid.shape[:3]
    labels = np.zeros(int(np.prod(shape)), np.int16)
    best = np.zeros(labels.shape)
    ijk_all = []
    for r in range(len(rois.names)):
        row = rois.weights.getrow(r)
        idx, w = row.indices, np.abs(row.data)
        win = w > best[idx]
        labels[idx[win]], best[idx[win]] = r + 1, w[win]
        ijk_all.append(np.column_stack(np.unravel_index(idx, shape)))
    img = nib.Nifti1Image(labels.reshape(shape), grid.affine)
    img.header.set_data_dtype(np.int16)
    cent = [nib.affines.apply_affine(grid.affine, ijk).mean(axis=0) if len(ijk) else np.full(3, np.nan)
            for ijk in ijk_all]
    table = pd.DataFrame({"roi": rois.names, "label": np.arange(1, len(rois.names) + 1, dtype=np.int16),
                          "x_mm": [c[0] for c in cent], "y_mm": [c[1] for c in cent], "z_mm": [c[2] for c in cent],
                          "n_voxels": n_vox.astype(np.int32)})
    return img, table


def _extract_job(args):
    run, rois, denoise, skip, min_coverage = args
    try:
        return _extract_run(run, rois, denoise, min_coverage)
    except DataError as exc:
        if not skip:
            raise
        return str(exc)


def skipped_run(subject: str, group: str, run: str, message: str, bold: str = "") -> dict:
    """The run_qc row of a run left out under ``on_error: skip``."""
    return {"subject": subject, "group": group, "run": run, "bold": bold, "tr_s": np.nan, "n_volumes": np.nan,
            "n_retained": np.nan, "mean_fd": np.nan, "max_fd": np.nan, "excluded": True,
            "reason": f"skipped: {message}"}


def apply_exclusions(run_qc: pd.DataFrame, rules) -> pd.DataFrame:
    """Mark runs that break a rule as excluded, with every broken rule in ``reason``."""
    run_qc = run_qc.copy()
    reasons = [[] for _ in range(len(run_qc))]
    censored = 1 - run_qc["n_retained"] / run_qc["n_volumes"]
    for i, r in enumerate(run_qc.itertuples()):
        if rules.max_mean_fd is not None and r.mean_fd > rules.max_mean_fd:
            reasons[i].append(f"mean FD {r.mean_fd:.3f} mm > {rules.max_mean_fd:g} mm")
        if rules.max_censored_fraction is not None and censored.iloc[i] > rules.max_censored_fraction:
            reasons[i].append(f"censored fraction {censored.iloc[i]:.2f} > {rules.max_censored_fraction:g}")
        if rules.min_clean_volumes is not None and r.n_retained < rules.min_clean_volumes:
            reasons[i].append(f"{r.n_retained} clean volumes < {rules.min_clean_volumes}")
    run_qc["excluded"] = [bool(x) for x in reasons]
    run_qc["reason"] = ["; ".join(x) for x in reasons]
    if rules.whole_subject:
        for sub, f in run_qc.groupby("subject", sort=False):
            if f["excluded"].any():
                first = f.loc[f["excluded"], ["run", "reason"]].iloc[0]
                for i in f.index[~f["excluded"]]:
                    run_qc.loc[i, "excluded"] = True
                    run_qc.loc[i, "reason"] = f"subject excluded (run {first['run']}: {first['reason']})"
    return run_qc


@dataclass
class Extracted:
    timeseries: pd.DataFrame
    roi_qc: pd.DataFrame
    run_qc: pd.DataFrame
    events: pd.DataFrame
    participants: pd.DataFrame
    motion: pd.DataFrame
    atlas_img: nib.Nifti1Image
    atlas: pd.DataFrame
    digests: dict
    plugins: list


def extract(p: ExtractParams, n_jobs: int = 2, executor: Executor | None = None) -> Extracted:
    """Extract every run; the tables, the ROI atlas on the first run's grid, digests and plugins."""
    skip = p.on_error == "skip"
    found: list = []
    participants, runs = discover(p.data, found if skip else None)
    skipped = [skipped_run(*f) for f in found]
    builder = RoiBuilder(p.rois)
    jobs = []
    for run in runs:
        try:
            grid = nib.load(run.mask)  # header only: ROIs are placed once per distinct grid
        except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as exc:
            if not skip:
                raise DataError(f"{run.mask}: not a readable NIfTI image ({exc})") from exc
            skipped.append(skipped_run(run.subject, run.group, run.run, f"{run.mask}: not a readable NIfTI image",
                                       run.bold.name))
            continue
        jobs.append((run, builder.for_grid(grid), p.denoise, skip, p.min_coverage))
    if not jobs:
        raise DataError(f"{p.data.root}: no run could be extracted")
    executor = executor or LocalExecutor(n_jobs)
    results = list(progress(executor.map(_extract_job, jobs), len(jobs), "extract: runs"))
    for job, res in zip(jobs, results):
        if isinstance(res, str):
            skipped.append(skipped_run(job[0].subject, job[0].group, job[0].run, res, job[0].bold.name))
    results = [r for r in results if not isinstance(r, str)]
    ts = pd.concat([r[0] for r in results], ignore_index=True)
    roi_qc = pd.concat([r[1] for r in results], ignore_index=True)
    run_qc = apply_exclusions(pd.DataFrame([r[2] for r in results]), p.exclude)
    if skipped:
        keys = [(s, k) for s in participants["subject"] for k in p.data.runs]  # discovery order
        order = {key: i for i, key in enumerate(keys)}
        run_qc = pd.concat([run_qc, pd.DataFrame(skipped)], ignore_index=True)
        run_qc["_o"] = [order[(s, r)] for s, r in zip(run_qc["subject"], run_qc["run"])]
        run_qc = run_qc.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)
    events = [r[3] for r in results if r[3] is not None]
    events = pd.concat(events, ignore_index=True) if events else pd.DataFrame(
        columns=["subject", "run", "trial_type", "onset_s", "duration_s"])
    digests = {k: v for r in results for k, v in r[4].items()}
    digests[str(Path(p.data.root) / p.data.participants)] = file_digest(Path(p.data.root) / p.data.participants)
    motion = pd.concat([r[5] for r in results], ignore_index=True)
    atlas_img, atlas = roi_atlas(jobs[0][1], nib.load(jobs[0][0].mask))
    return Extracted(ts, roi_qc, run_qc, events, participants, motion, atlas_img, atlas, digests, builder.plugins)
