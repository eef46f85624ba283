"""XCP-D's outputs as fclab's input (``extract.data.format: xcpd``): its denoised mean time series of an
atlas's parcels instead of BOLD, so a study XCP-D has post-processed gets fclab's windows, statistics
and report without extracting again.

Per run XCP-D writes (docs/outputs.rst of PennLINC/xcp_d): ``*_space-X_atlas-A_stat-mean_timeseries.tsv``
(one column per parcel, NaN where a parcel's coverage fell below its threshold), ``*_outliers.tsv``
(``framewise_displacement``: 1 for a high-motion volume it censored), ``*_motion.tsv`` (the motion
parameters and ``framewise_displacement`` of every volume), and ``*_desc-linc_qc.tsv``
(``num_dummy_volumes`` among its columns). In ``linc`` mode the time series holds only the retained
volumes; in ``abcd`` and ``hbcd`` modes every volume, the censored ones interpolated, and fclab leaves
those out, as XCP-D's own correlations do. Dummy volumes XCP-D dropped at the start shift the time
axis: a kept row's time is (its volume + num_dummy_volumes) × TR, so event-locked windows stay
locked to the raw run's events. The atlas image (``atlases/.../*atlas-A*_dseg.nii.gz`` with its
``_dseg.tsv`` of ``index`` and ``label``) gives the ROI figure and the centroids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fclab.framework.errors import DataError
from fclab.framework.extraction.bids import RunInput, read_events, read_tsv
from fclab.framework.extraction.denoise import clean
from fclab.framework.io import file_digest


@dataclass(frozen=True)
class Parcels:
    """What a parcellated run's ROIs are placed on: its atlas and parcel (column) names, in order."""

    atlas: str
    names: tuple[str, ...]

    @property
    def key(self) -> tuple:
        return ("parcels", self.atlas, self.names)

    @property
    def n(self) -> int:
        return len(self.names)

    def describe(self) -> str:
        return f"XCP-D parcel time series, atlas-{self.atlas}, {self.n} parcels"


def atlas_of(run: RunInput) -> str:
    part = next((p for p in run.bold.name.split("_") if p.startswith("atlas-")), "atlas-")
    return part.removeprefix("atlas-")


def parcels_reference(run: RunInput) -> tuple[Parcels, int]:
    """(the run's parcels, its number of volumes after XCP-D's dummy volumes), from headers."""
    try:
        names = pd.read_csv(run.bold, sep="\t", nrows=0).columns
    except (OSError, ValueError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{run.bold}: not a readable XCP-D time series TSV ({exc})") from exc
    if not len(names) or len(set(names)) != len(names):
        raise DataError(f"{run.bold}: its header must name each parcel once")
    return Parcels(atlas_of(run), tuple(map(str, names))), len(_flags(run))


def _flags(run: RunInput) -> np.ndarray:
    """XCP-D's censoring of every volume after its dummy volumes (True: censored)."""
    table = read_tsv(run.outliers)
    if "framewise_displacement" not in table:
        raise DataError(f"{run.outliers}: no framewise_displacement column (XCP-D writes 1 for a censored volume)")
    flags = pd.to_numeric(table["framewise_displacement"], errors="coerce").to_numpy(float)
    if not np.isin(flags, (0, 1)).all():
        raise DataError(f"{run.outliers}: framewise_displacement must hold 0 (kept) or 1 (censored)")
    return flags == 1


def dummy_volumes(run: RunInput) -> int:
    """Volumes XCP-D dropped at the run start (its QC table's num_dummy_volumes; 0 without the table)."""
    if run.qc is None:
        return 0
    table = read_tsv(run.qc)
    if "num_dummy_volumes" not in table or len(table) != 1:
        raise DataError(f"{run.qc}: expected one row with num_dummy_volumes")
    n = pd.to_numeric(table["num_dummy_volumes"], errors="coerce").iloc[0]
    if not np.isfinite(n) or n < 0 or n != int(n):
        raise DataError(f"{run.qc}: num_dummy_volumes must be a count, got {table['num_dummy_volumes'].iloc[0]!r}")
    return int(n)


def read_xcpd_run(run: RunInput, rois, denoise, min_coverage: float | None):
    """One run's tables, as ``engine._extract_run`` returns them: XCP-D's kept volumes of the ROIs'
    parcels, detrended and standardised as ``denoise`` says (nothing else: XCP-D denoised them)."""
    flags = _flags(run)
    series = read_tsv(run.bold)
    kept = np.flatnonzero(~flags)
    if len(series) == len(flags):  # abcd/hbcd: every volume, the censored ones interpolated
        series = series.iloc[kept]
    elif len(series) != kept.size:  # linc: the kept volumes only
        raise DataError(f"{run.bold}: {len(series)} rows, but {run.outliers.name} has {len(flags)} volumes of which "
                        f"{kept.size} are kept")
    dummy = dummy_volumes(run)
    values = series.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)  # columns: the Parcels' names
    weights = rois.weights.tocsr()
    raw = np.asarray(weights @ np.nan_to_num(values).T).T
    has_nan = np.asarray(abs(weights) @ np.isnan(values).T.astype(float)).T > 0  # (volumes, ROIs)
    empty = has_nan.all(axis=0)
    partial = has_nan.any(axis=0) & ~empty
    if partial.any():
        roi = rois.names[int(np.flatnonzero(partial)[0])]
        raise DataError(f"{run.bold}: ROI {roi!r} has values missing in some volumes only")
    if empty.any() and min_coverage is None:
        roi = rois.names[int(np.flatnonzero(empty)[0])]
        raise DataError(f"{run.bold}: ROI {roi!r} has no values (XCP-D leaves a parcel under its coverage threshold "
                        "empty); set extract.min_coverage to treat it as missing")
    cleaned = clean(np.where(empty, 0.0, raw), None, None, run.tr, denoise, denoise.standardize) if kept.size >= 2 \
        else np.empty((0, len(rois.names)))
    ts = pd.DataFrame(cleaned, columns=rois.names)
    for name in np.asarray(rois.names)[empty]:
        ts[name] = np.nan
    volumes = (kept + dummy).astype(np.int32)
    ts.insert(0, "time_s", volumes * run.tr)
    ts.insert(0, "volume", volumes)
    ts.insert(0, "run", run.run)
    ts.insert(0, "subject", run.subject)

    T = len(flags) + dummy
    motion = read_tsv(run.confounds)
    if len(motion) != len(flags) or "framewise_displacement" not in motion:
        raise DataError(f"{run.confounds}: expected {len(flags)} rows (as {run.outliers.name}) with framewise_displacement")
    fd = np.concatenate([np.full(dummy, np.nan), pd.to_numeric(motion["framewise_displacement"], errors="coerce")])
    censored = np.ones(T, bool)
    censored[volumes] = False
    n_roi = len(rois.names)
    roi_qc = pd.DataFrame({"subject": run.subject, "run": run.run, "roi": rois.names, "n_voxels": np.zeros(n_roi, np.int32),
                           "coverage": np.where(empty, 0.0, 1.0), "tsnr": np.nan, "frac_bad": 0.0,
                           "missing": empty, "reason": np.where(empty, "no values in XCP-D's time series", "")})
    motion_table = pd.DataFrame({"subject": run.subject, "run": run.run, "volume": np.arange(T, dtype=np.int32),
                                 "framewise_displacement": fd, "censored": censored, "dvars_raw": np.nan,
                                 "dvars_clean": np.nan})
    kept_fd = fd[np.isfinite(fd)]
    run_qc = {
        "subject": run.subject, "group": run.group, "run": run.run, "bold": run.bold.name, "tr_s": run.tr,
        "n_volumes": T, "n_retained": int(kept.size),
        "mean_fd": float(kept_fd.mean()) if kept_fd.size else np.nan,
        "max_fd": float(kept_fd.max()) if kept_fd.size else np.nan,
        # XCP-D's regressors and filter took degrees of freedom fclab cannot count from these files
        "confounds": "XCP-D", "n_regressors": 0, "dof_band": np.nan, "dof_left": np.nan,
        "band_variance_kept": np.nan, "excluded": kept.size < 2,
        "reason": f"XCP-D kept {kept.size} of {len(flags)} volumes, fewer than 2" if kept.size < 2 else "",
    }
    events = None
    digests = {str(f): file_digest(f) for f in (run.bold, run.outliers, run.confounds, run.qc, run.events) if f is not None}
    if run.events is not None:
        ev = read_events(run.events)
        events = pd.DataFrame({"subject": run.subject, "run": run.run, "trial_type": ev["trial_type"].astype(str),
                               "onset_s": ev["onset"].astype(float), "duration_s": ev["duration"].astype(float)})
    carpet = {"subject": run.subject, "run": run.run, "n_volumes": T, "png": b""}
    return ts, roi_qc, run_qc, events, digests, motion_table, carpet


def atlas_image(root: Path, parcels: Parcels, names: list[str], weights) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """The ROIs as a label image on XCP-D's atlas (1-based, in ROI order) and their centroids and
    voxel counts, from the atlas's ``*_dseg.nii.gz`` and ``*_dseg.tsv`` in XCP-D's output."""
    found = sorted(f for f in root.rglob(f"*atlas-{parcels.atlas}*_dseg.nii.gz") if "func" not in f.parts)
    if not found:
        raise DataError(f"{root}: no XCP-D atlas image *atlas-{parcels.atlas}*_dseg.nii.gz (XCP-D writes it under "
                        "atlases/ or sourcedata/atlases/)")
    image = found[0]
    table_path = Path(str(image).removesuffix(".nii.gz") + ".tsv")
    table = read_tsv(table_path, ("index",))
    label_col = "label" if "label" in table else "name" if "name" in table else None
    if label_col is None:
        raise DataError(f"{table_path}: no label column (XCP-D's atlas tables have index and label)")
    index = dict(zip(table[label_col].astype(str), table["index"].astype(int)))
    img = nib.load(image)
    data = np.rint(np.asarray(img.dataobj)).astype(np.int64)
    labels = np.zeros(data.shape, np.int16)
    rows = []
    w = weights.tocsr()
    for r, name in enumerate(names):
        parts = [parcels.names[c] for c in w.getrow(r).indices]
        missing = [p for p in parts if p not in index]
        if missing:
            raise DataError(f"{table_path}: parcel {missing[0]!r} of the time series is not in the atlas table")
        inside = np.isin(data, [index[p] for p in parts])
        labels[inside] = r + 1
        ijk = np.argwhere(inside)
        xyz = nib.affines.apply_affine(img.affine, ijk).mean(axis=0) if len(ijk) else np.full(3, np.nan)
        rows.append({"roi": name, "label": r + 1, "x_mm": xyz[0], "y_mm": xyz[1], "z_mm": xyz[2], "n_voxels": len(ijk)})
    out = nib.Nifti1Image(labels, img.affine)
    out.header.set_data_dtype(np.int16)
    atlas = pd.DataFrame(rows).astype({"label": np.int16, "n_voxels": np.int32})
    return out, atlas
