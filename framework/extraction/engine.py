"""Stage ``extract``: find runs, denoise, and turn each run into ROI time series plus QC."""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fclab.framework.errors import DataError, ParamsError, PluginError
from fclab.framework.executor import Executor, as_executor, progress
from fclab.framework.extraction import cache as runcache
from fclab.framework.extraction.bids import RunInput, discover, event_onsets, read_events, sidecar_json
from fclab.framework.extraction.denoise import band_variance_kept, check_filter, clean, run_confounds, temporal_dof
from fclab.framework.extraction.runqc import (
    MIN_CLEAN_VOLUMES, QC_VOXELS, apply_exclusions, carpet_png, dvars, no_fd_message, skipped_run, voxel_sample,
)
from fclab.framework.extraction.stream import VolumeStream, flat_index
from fclab.framework.extraction.surface import (
    FSAVERAGE_VERTICES, Grayordinates, SurfaceStream, cifti_grayordinates, cifti_step, element_coordinates,
    gifti_shape, is_surface_space, label_image, load_cifti, surface_axis,
)
from fclab.framework.extraction.xcpd import Parcels, atlas_image, parcels_reference, read_xcpd_run
from fclab.framework.io import file_digest
from fclab.framework.params import DenoiseParams, ExtractParams, check_label, is_mni_space
from fclab.framework.pluginhost.contracts import TIMESERIES_KEYS, RoiSet, RoiWeights



def check_cifti_step(img: nib.Cifti2Image, path: Path, tr: float) -> None:
    """A dtseries' series step must agree with the sidecar's RepetitionTime."""
    step = cifti_step(img)
    if step is not None and step > 0 and abs(step - tr) > 1e-3 * tr:
        raise DataError(f"{path}: series step {step:g} s differs from RepetitionTime {tr:g} s in "
                        f"{sidecar_json(path).name}")


def check_header_tr(img: nib.Nifti1Image, path: Path, tr: float) -> None:
    """A NIfTI BOLD header's time step (pixdim[4]) must agree with the sidecar's RepetitionTime when
    the header states one: a positive step in stated time units (fMRIPrep writes seconds; a header
    with unknown units, such as nibabel's default of 1 for a new image, states nothing)."""
    zooms = img.header.get_zooms()
    unit = img.header.get_xyzt_units()[1]
    scale = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}.get(unit)
    if len(zooms) < 4 or not zooms[3] > 0 or scale is None:
        return
    step = float(zooms[3]) * scale
    if abs(step - tr) > 1e-3 * tr:
        raise DataError(f"{path}: the header's time step {step:g} s differs from RepetitionTime {tr:g} s in "
                        f"{sidecar_json(path).name}; correct the one that is wrong")


def check_volume_headers(run: RunInput, bold: nib.Nifti1Image, mask: nib.Nifti1Image) -> None:
    """A NIfTI run's BOLD is 4D, its time step agrees with the sidecar, both images state world
    coordinates, and the mask shares the BOLD's grid."""
    if bold.ndim != 4:
        raise DataError(f"{run.bold}: expected a 4D BOLD image, got shape {bold.shape}")
    check_header_tr(bold, run.bold, run.tr)
    for path, img in ((run.bold, bold), (run.mask, mask)):
        if int(img.header["qform_code"]) == 0 and int(img.header["sform_code"]) == 0:
            raise DataError(f"{path}: qform and sform codes are both 0, so the image states no world coordinates "
                            "(nibabel would guess them from the voxel sizes and ROIs would land by that guess); "
                            "use the preprocessed derivatives, or set the scanner's affine with an sform code")
    if mask.shape[:3] != bold.shape[:3] or not np.allclose(mask.affine, bold.affine, atol=1e-4):
        raise DataError(f"{run.mask}: grid differs from {run.bold.name} (shape or affine)")


def check_inputs(p: ExtractParams, windows=()) -> tuple[pd.DataFrame, list[str]]:
    """Every input ``extract`` will read, checked from headers and tables without computing anything:
    image headers and grids, TR, confounds (rows, values, what the strategy needs), the filter against
    the Nyquist frequency, and the events the ``windows`` (fixed and sliding specs) need, with each
    window inside its run.

    Returns one row per run found (subject, group, run, TR, volumes) and every problem as a line.
    """
    found: list = []
    participants, runs = discover(p.data, found)
    problems = [msg for *_, msg in found]
    rows = []
    for run in runs:
        row = {"subject": run.subject, "group": run.group, "run": run.run, "tr_s": run.tr, "n_volumes": np.nan}
        try:
            if run.kind == "nifti":
                bold, mask = (_header(f) for f in (run.bold, run.mask))
                check_volume_headers(run, bold, mask)
                T = bold.shape[3]
            else:
                T = run_reference(run, p.data.space)[1]
            row["n_volumes"] = T
            check_filter(run.tr, p.denoise, run.bold, T)
            fd = run_confounds(run, p.denoise, T)[2]
            if p.exclude.max_mean_fd is not None and not np.isfinite(fd.to_numpy(float)).any():
                raise DataError(no_fd_message(run.subject, run.run, run.bold.name))
            mine = [w for w in windows if w.run == run.run]
            onsets = event_onsets(run.events, {w.event for w in mine if w.event},
                                  f"sub-{run.subject} run {run.run!r}")
            for w in mine:
                lo, hi = w.bounds_s()
                if w.event and lo is not None:
                    start, end = onsets[w.event] + lo, onsets[w.event] + hi
                    if start < -1e-9 or end > T * run.tr + 1e-6:
                        raise DataError(f"{run.events}: window {w.name!r} ({lo:g} to {hi:g} s from the {w.event!r} "
                                        f"onset at {onsets[w.event]:g} s) lies outside the run (0-{T * run.tr:g} s)")
        except DataError as exc:
            problems.append(str(exc))
        rows.append(row)
    return pd.DataFrame(rows, columns=["subject", "group", "run", "tr_s", "n_volumes"]), problems


def run_reference(run: RunInput, space: str) -> tuple[nib.Nifti1Image | Grayordinates, int]:
    """(the grid ROIs are placed on, number of volumes) of a run, from headers: the brain mask's
    NIfTI header for volumes, the run's grayordinates for CIFTI and GIfTI data. Errors name the file."""
    if run.kind == "nifti":
        return _header(run.mask), _header(run.bold).shape[-1]
    if run.kind == "xcpd":
        return parcels_reference(run)
    if run.kind == "cifti":
        img = load_cifti(run.bold)
        check_cifti_step(img, run.bold, run.tr)
        return cifti_grayordinates(img, space), img.shape[0]
    shapes = [gifti_shape(f) for f in run.bold_files]
    for f, (_, t) in zip(run.bold_files[1:], shapes[1:]):
        if t != shapes[0][1]:
            raise DataError(f"{f}: {t} time points, {run.bold.name} has {shapes[0][1]}")
    expected = FSAVERAGE_VERTICES.get(space)
    for f, (n, _) in zip(run.bold_files, shapes):
        if expected and n != expected:
            raise DataError(f"{f}: {n} vertices, but space {space} has {expected} per hemisphere")
    return Grayordinates(space, surface_axis(dict(zip(run.hemis, (n for n, _ in shapes))))), shapes[0][1]


def _header(path: Path) -> nib.Nifti1Image:
    try:
        return nib.load(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from exc


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
    """Builds the study's ROI set (every configured ROI plugin, in order) once per voxel grid, and per
    subject when a set differs by subject (``RoiSet.for_subject``)."""

    def __init__(self, plugins: list[RoiSet], installed: dict[str, tuple[str, ...]] | None = None,
                 space: str | None = None):
        """``plugins``: the study's ROI sets, built from params (``pluginhost.builder``); ``installed``:
        every installed ROI set's name and the data it places ROIs on, for the error that names the
        ones fitting the study's data; ``space``: the runs' space (``extract.data.space``): a volume
        space other than an MNI template refuses ROI sets defined in MNI space."""
        self.plugins = list(plugins)
        self.installed = installed
        self.space = space
        self._cache: dict[tuple, RoiWeights] = {}
        if space is not None and not is_surface_space(space) and not is_mni_space(space):
            for i, plugin in enumerate(self.plugins):
                if "volume" in plugin.data and plugin.space != "run":
                    raise ParamsError(
                        f"extract.rois[{i}]: ROI set {plugin.name!r} places ROIs in MNI space, and the runs are in "
                        f"space {space!r} (extract.data.space); give ROIs in the runs' own space (labels_file, "
                        "whose path may name each subject's label image with {subject}; masks; maps), or set "
                        "extract.data.space to an MNI template the derivatives have")

    def for_grid(self, reference: nib.Nifti1Image | Grayordinates | Parcels, subject: str | None = None) -> RoiWeights:
        surface = isinstance(reference, Grayordinates | Parcels)  # elements other than a voxel grid
        plugins = [plugin.for_subject(subject) for plugin in self.plugins] if subject is not None else self.plugins
        own = subject if any(a is not b for a, b in zip(plugins, self.plugins)) else None
        key = (reference.key if surface else (reference.shape[:3], np.round(reference.affine, 6).tobytes()), own)
        if key not in self._cache:
            data = "parcellated" if isinstance(reference, Parcels) else "surface" if surface else "volume"
            for i, plugin in enumerate(self.plugins):
                if data not in plugin.data:
                    others = ", ".join(sorted(n for n, kinds in (self.installed or {}).items() if data in kinds))
                    fitting = (f"; ROI sets for {data} data: {others or 'none installed'}"
                               if self.installed is not None else "")
                    raise ParamsError(f"extract.rois[{i}]: ROI set {plugin.name!r} places ROIs on "
                                      f"{' and '.join(plugin.data)} data, and these runs are {data} data "
                                      f"({reference.describe() if surface else 'NIfTI'}){fitting}")
            parts = [plugin.build(reference) for plugin in plugins]
            n = reference.n if surface else int(np.prod(reference.shape[:3]))
            for plugin, part in zip(plugins, parts):
                if part.weights.shape[1] != n:
                    raise PluginError(f"ROI set {plugin.name!r}: weights over {part.weights.shape[1]} elements for "
                                      f"a grid of {n}")
            names = [n for part in parts for n in part.names]
            for n in names:
                check_label(n, "extract.rois: ROI name")
                if n in TIMESERIES_KEYS:
                    raise ParamsError(f"extract.rois: ROI name {n!r} is reserved (a column of timeseries.parquet: "
                                      f"{', '.join(TIMESERIES_KEYS)}); rename the ROI")
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ParamsError(f"extract.rois: ROI names defined twice: {', '.join(dup)}")
            if len(names) < 2:
                raise ParamsError(f"extract.rois: {len(names)} ROI ({', '.join(names) or 'none'}); ROI-to-ROI "
                                  "connectivity needs at least two")
            weights = sp.vstack([part.weights for part in parts]).tocsr()
            self._cache[key] = RoiWeights(names, weights)
        return self._cache[key]


def _read_volume_run(run: RunInput, rois: RoiWeights, cols: np.ndarray, denoise: DenoiseParams):
    """``read_run`` of a NIfTI run, whether each ROI voxel ``cols`` lies in the brain mask, the number
    of volumes and the files' digests."""
    bold = _header(run.bold)
    mask, mask_digest = load_nifti(run.mask)
    check_volume_headers(run, bold, mask)
    ijk = np.unravel_index(cols, bold.shape[:3])
    mask_data = np.asarray(mask.dataobj)
    qc_index = voxel_sample(mask_data, QC_VOXELS)
    read = read_run(run.bold, bold, rois.weights[:, cols], cols, qc_index, denoise.smoothing_fwhm)
    return read, mask_data[ijk] > 0, bold.shape[3], {str(run.bold): read[3], str(run.mask): mask_digest}


def _read_surface_run(run: RunInput, rois: RoiWeights, cols: np.ndarray, denoise: DenoiseParams,
                      grid: Grayordinates, T: int):
    """As ``_read_volume_run`` for CIFTI and GIfTI runs. With no brain mask, an element "in the brain"
    is one whose values are not all 0 (fMRIPrep leaves the medial wall at 0 on fsaverage)."""
    if denoise.smoothing_fwhm:
        raise ParamsError(f"extract.denoise.smoothing_fwhm: volume smoothing does not apply to {run.kind} data "
                          f"({run.bold.name}); set it to null")
    if rois.weights.shape[1] != grid.n:
        raise DataError(f"{run.bold}: {grid.n} grayordinates, but the ROI set was built for {rois.weights.shape[1]}")
    stream = SurfaceStream(run.files, run.kind, T, grid.n)
    qc_index = voxel_sample(np.ones(grid.n), QC_VOXELS)
    read = read_run(run.bold, None, rois.weights[:, cols], cols, qc_index, None, stream=stream)
    return read, ~read[1][2], T, dict(stream.file_digests)


def _extract_run(run: RunInput, rois: RoiWeights, denoise: DenoiseParams, min_coverage: float | None = None,
                 surface: tuple[Grayordinates, int] | None = None):
    """One run's tables. ``surface``: a CIFTI or GIfTI run's (grayordinates, volumes), from
    ``run_reference`` (its headers are read once, where the study's grids are found)."""
    if run.kind == "xcpd":
        return read_xcpd_run(run, rois, denoise, min_coverage)
    cols = np.unique(rois.weights.indices)
    if run.kind == "nifti":
        read, inside, T, digests = _read_volume_run(run, rois, cols, denoise)
    else:
        read, inside, T, digests = _read_surface_run(run, rois, cols, denoise, *surface)
    raw_signals, voxel_stats, qc_voxels, _ = read

    check_filter(run.tr, denoise, run.bold, T)
    # An ROI whose signal never changes has none to correlate (an all-zero image, a region outside the
    # field of view): nilearn would clean it to zeros with a raw RuntimeWarning and every edge would be NaN.
    constant = np.ptp(raw_signals, axis=0) == 0 if T else np.ones(len(rois.names), bool)
    if constant.all():
        raise DataError(f"{run.bold}: no signal: every ROI's signal is constant over the run (a blank image?)")
    confounds, sample_mask, fd = run_confounds(run, denoise, T)
    kept = np.arange(T) if sample_mask is None else np.asarray(sample_mask)
    # Censoring that leaves almost nothing (nilearn cannot clean fewer than 2 volumes): the run is
    # excluded with the reason, and its windows become missing, rather than stopping the study.
    over_censored = kept.size < MIN_CLEAN_VOLUMES
    if over_censored:
        cleaned, kept = np.empty((0, len(rois.names))), kept[:0]
    else:
        cleaned = clean(raw_signals, confounds, sample_mask, run.tr, denoise, denoise.standardize)
    ts = pd.DataFrame(cleaned, columns=rois.names)
    qc_clean = None if over_censored or not len(qc_voxels) else clean(  # the same cleaning, in signal units
        qc_voxels.T, confounds, sample_mask, run.tr, denoise, None).T
    dof_band = dof_left = kept_share = np.nan
    if not over_censored:
        dof_band, dof_left = temporal_dof(T, confounds, sample_mask, run.tr, denoise)
        if qc_clean is not None:
            kept_share = band_variance_kept(qc_voxels.T, qc_clean.T, sample_mask, run.tr, denoise)
    ts.insert(0, "time_s", kept * run.tr)
    ts.insert(0, "volume", kept.astype(np.int32))
    ts.insert(0, "run", run.run)
    ts.insert(0, "subject", run.subject)

    mean, sd, bad = voxel_stats
    tsnr = np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 0)
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
            roi = roi_qc['roi'][np.flatnonzero(outside)[0]]
            raise DataError(f"{run.mask}: ROI {roi!r} has no voxel inside sub-{run.subject}'s brain mask (is the "
                            "run in extract.data.space? ROIs and runs meet by world coordinates)"
                            if run.mask else f"{run.bold}: every value of ROI {roi!r} is 0 (no signal)")
        if constant.any():
            raise DataError(f"{run.bold}: ROI {rois.names[np.flatnonzero(constant)[0]]!r} has no signal (constant "
                            "over the run); set extract.min_coverage to treat such an ROI as missing for the run")
        roi_qc["missing"], roi_qc["reason"] = False, ""
    else:
        low = cover < min_coverage
        roi_qc["missing"] = low | constant
        roi_qc["reason"] = [f"coverage {c:.2f} < min_coverage {min_coverage:g}" if m else
                            "no signal (constant over the run)" if k else "" for c, m, k in zip(cover, low, constant)]
        for name in roi_qc.loc[roi_qc["missing"], "roi"]:
            ts[name] = np.nan  # the ROI keeps its column, with no values for this run

    censored = np.ones(T, bool)
    censored[kept] = False
    motion = pd.DataFrame({"subject": run.subject, "run": run.run, "volume": np.arange(T, dtype=np.int32),
                           "framewise_displacement": fd.to_numpy(np.float64), "censored": censored,
                           "dvars_raw": dvars(qc_voxels, np.arange(T), T),
                           "dvars_clean": dvars(qc_voxels, kept, T, qc_clean)})
    carpet = {"subject": run.subject, "run": run.run, "n_volumes": T,
              "png": carpet_png(qc_voxels, kept, T, qc_clean)}
    run_qc = {
        "subject": run.subject, "group": run.group, "run": run.run, "bold": run.bold.name,
        "tr_s": run.tr, "n_volumes": T, "n_retained": int(kept.size),
        **({"mean_fd": float(np.nanmean(fd)), "max_fd": float(np.nanmax(fd))} if np.isfinite(fd).any()
           else {"mean_fd": np.nan, "max_fd": np.nan}),  # no framewise_displacement column
        "confounds": "" if confounds is None else ",".join(map(str, confounds.columns)),
        "n_regressors": 0 if confounds is None else int(confounds.shape[1]),
        "dof_band": dof_band, "dof_left": dof_left, "band_variance_kept": kept_share,
        "excluded": over_censored,
        "reason": (f"censored by the {denoise.strategy!r} strategy: {T - len(sample_mask)} of {T} volumes, "
                   f"fewer than {MIN_CLEAN_VOLUMES} left") if over_censored else "",
    }
    events = None
    if run.events is not None:
        ev = read_events(run.events)
        events = pd.DataFrame({"subject": run.subject, "run": run.run, "trial_type": ev["trial_type"].astype(str),
                               "onset_s": ev["onset"].astype(float), "duration_s": ev["duration"].astype(float)})
    digests[str(run.confounds)] = file_digest(run.confounds)
    if run.events is not None:
        digests[str(run.events)] = file_digest(run.events)
    return ts, roi_qc, run_qc, events, digests, motion, carpet


def read_run(path: Path, img: nib.Nifti1Image | None, weights: sp.csr_matrix, cols: np.ndarray, qc_index: np.ndarray,
             smoothing_fwhm: float | None, stream: VolumeStream | SurfaceStream | None = None):
    """One streamed pass over a run's BOLD file (``stream.VolumeStream``): the raw ROI signals
    ``(weights @ voxels).T`` (T, R) over the voxels ``cols``, those voxels' mean, SD and all-zero flag
    over time, the (n, T) values of the QC voxels ``qc_index`` and the file's digest.

    Values are float64 of the file's values after the header's scaling; with ``smoothing_fwhm``
    each volume is first smoothed as nilearn's ``smooth_img`` does (volume by volume, so the same
    numbers). The 4D image is never held in memory, only one slab of volumes at a time. ``stream``
    replaces the NIfTI stream of ``img`` (surface data: ``surface.SurfaceStream``).
    """
    stream = stream or VolumeStream(path, img)
    T, shape = stream.n_volumes, stream.shape
    roi_flat, qc_flat = flat_index(cols, shape), flat_index(qc_index, shape)
    signals = np.empty((T, weights.shape[0]))
    qc = np.empty((len(qc_index), T))
    first = s1 = s2 = None
    check = stream.dtype.kind == "f" or stream.slope != 1.0 or stream.inter != 0.0  # integers are finite
    for t, slab in stream:
        k = len(slab)
        if smoothing_fwhm:
            from nilearn.image import smooth_img

            vols = stream.scaled(slab).reshape((k,) + shape[::-1]).T  # (x, y, z, k), a view
            vols = np.asarray(smooth_img(nib.Nifti1Image(vols, img.affine), smoothing_fwhm).dataobj)
            flat = vols.T.reshape(k, -1)
            x, q = flat[:, roi_flat], flat[:, qc_flat]
        else:
            x, q = stream.scaled(slab[:, roi_flat]), stream.scaled(slab[:, qc_flat])
        if (check or smoothing_fwhm) and not np.isfinite(x).all():
            raise DataError(f"{path}: NaN or infinite values inside the ROIs")
        signals[t:t + k] = (weights @ x.T).T
        qc[:, t:t + k] = q.T
        # Per-voxel sums of the deviations from the first volume (shifted sums: no cancellation)
        if first is None:
            first, s1, s2 = x[0].copy(), np.zeros(len(cols)), np.zeros(len(cols))
        x -= first
        s1 += x.sum(axis=0)
        x *= x
        s2 += x.sum(axis=0)
    mean = first + s1 / T
    var = np.maximum(s2 / T - (s1 / T) ** 2, 0.0)
    zero = (first == 0) & (s2 == 0)  # every value equals the first, which is 0
    return signals, (mean, np.sqrt(var), zero), qc, stream.digest


def roi_atlas(rois: RoiWeights, grid: nib.Nifti1Image | Grayordinates):
    """The ROI set as a label image on ``grid`` (1-based, in ROI order; the larger weight wins an
    overlap) and a table of ROI centroids in world (MNI) mm and voxel counts, for figures. On
    grayordinates the image is a CIFTI-2 dlabel, and centroids come from the shipped meshes (NaN
    where none ships for the space)."""
    support = rois.support.tocsr()
    n_vox = np.asarray(support.sum(axis=1)).ravel()
    surface = isinstance(grid, Grayordinates)
    shape = (grid.n,) if surface else grid.shape[:3]
    labels = np.zeros(int(np.prod(shape)), np.int16)
    best = np.zeros(labels.shape)
    members = []
    for r in range(len(rois.names)):
        row = rois.weights.getrow(r)
        idx, w = row.indices, np.abs(row.data)
        win = w > best[idx]
        labels[idx[win]], best[idx[win]] = r + 1, w[win]
        members.append(idx)
    if surface:
        xyz = element_coordinates(grid)
        cent = [xyz[idx].mean(axis=0) if len(idx) else np.full(3, np.nan) for idx in members]
        img = label_image(labels, rois.names, grid)
    else:
        img = nib.Nifti1Image(labels.reshape(shape), grid.affine)
        img.header.set_data_dtype(np.int16)
        cent = [nib.affines.apply_affine(grid.affine, np.column_stack(np.unravel_index(idx, shape))).mean(axis=0)
                if len(idx) else np.full(3, np.nan) for idx in members]
    table = pd.DataFrame({"roi": rois.names, "label": np.arange(1, len(rois.names) + 1, dtype=np.int16),
                          "x_mm": [c[0] for c in cent], "y_mm": [c[1] for c in cent], "z_mm": [c[2] for c in cent],
                          "n_voxels": n_vox.astype(np.int32)})
    return img, table


def _roles(run: RunInput) -> dict:
    """The run's input files by role, as its cache key holds their digests."""
    sidecar = run.confounds.with_suffix(".json")  # load_confounds_strategy reads it (CompCor)
    return {"bold": list(run.files), "mask": run.mask, "confounds": run.confounds,
            "confounds_json": sidecar if sidecar.is_file() else None, "events": run.events,
            **({"outliers": run.outliers, "qc": run.qc} if run.kind == "xcpd" else {})}


def _files(roles: dict) -> list[Path]:
    return [f for v in roles.values() for f in (v if isinstance(v, list) else [v]) if f is not None]


def job_keys(jobs: list) -> list[tuple[str, dict, dict] | None]:
    """Each job's (cache key, its input files' digests, the key's material), computed in the calling process with one
    pass over the digest memo (a stat per file for files it knows); None where an input cannot be
    read (extraction then names it)."""
    roles = [_roles(job[0]) for job in jobs]
    try:
        found = runcache.digests(sorted({f for r in roles for f in _files(r)}, key=str))
    except OSError:
        found = None
    out = []
    for job, role in zip(jobs, roles):
        run, _, denoise, _, min_coverage, rois_hash, _ = job
        try:
            mine = {str(f): found[str(f)] for f in _files(role)} if found is not None else runcache.digests(_files(role))
        except OSError:
            out.append(None)
            continue
        by_role = {k: [mine[str(f)] for f in v] if isinstance(v, list) else (mine[str(v)] if v else None)
                   for k, v in role.items()}
        material = runcache.key_material(run, by_role, rois_hash, denoise, min_coverage)
        out.append((runcache.key_of(material), mine, material))
    return out


def _extract_job(args):
    """("computed" or "cached", the run's results, its cache key or None, a cache problem or None), or
    the error message of a run skipped under ``on_error: skip``. With a key (``job_keys``) the run is
    looked up in, or added to, the per-run cache; an entry that fails its checks is computed again."""
    run, rois, denoise, skip, min_coverage, keyed, surface = args
    key, found, material = keyed if keyed else (None, {}, None)
    problem = None  # (kind, message): "failed" verification, or "unwritten" (a full or read-only cache)
    if key:
        hit, failed = runcache.load(key)
        problem = ("failed", failed) if failed else None
        if hit is not None:  # the provenance names the files where they are now, as extraction records them
            sidecar = str(run.confounds.with_suffix(".json"))
            where = {f: d for f, d in found.items() if f != sidecar}
            return "cached", (*hit[:4], where, *hit[5:]), key, None
    try:
        result = _extract_run(run, rois, denoise, min_coverage, surface)
    except DataError as exc:
        if not skip:
            raise
        return str(exc)
    if key:
        unwritten = runcache.store(key, result, material)
        problem = problem or (("unwritten", unwritten) if unwritten else None)
    return "computed", result, key, problem


def extract_state(keys: list, skipped: list[dict], participants_digest: str) -> str:
    """A digest of everything an extraction's outputs follow from, given its params: every run's
    cache key (inputs by content, settings, ROIs, code), the runs skipped and why, and participants.tsv."""
    spec = {"keys": [k[0] if k else None for k in keys], "participants": participants_digest,
            "skipped": [{k: str(v) for k, v in s.items()} for s in skipped]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


@dataclass
class Extracted:
    timeseries: pd.DataFrame
    roi_qc: pd.DataFrame
    run_qc: pd.DataFrame
    events: pd.DataFrame
    participants: pd.DataFrame
    motion: pd.DataFrame
    carpets: pd.DataFrame  # subject, run, n_volumes, png (carpet_png)
    atlas_img: nib.Nifti1Image | nib.Cifti2Image  # the ROI labels (CIFTI dlabel for surface data)
    atlas: pd.DataFrame
    digests: dict
    plugins: list
    computed: int = 0  # runs extracted now; the others came from the per-run cache (runcache.py)
    cached: int = 0
    surface: str = ""  # surface or CIFTI data: what the first run's elements are, for the methods text
    background: nib.Nifti1Image | None = None  # runs outside MNI space: the first run's mean, under its ROIs
    state: str | None = None  # extract_state, recorded so an unchanged rerun can keep the outputs
    warnings: list = field(default_factory=list)  # one line each: the cache's problems, which extraction survived


def mean_image(path: Path) -> nib.Nifti1Image:
    """A 4D run's mean over time, on its grid: what the ROI figure draws a native-space run's ROIs on."""
    img = _header(path)
    mean = nib.Nifti1Image(img.get_fdata(dtype=np.float32).mean(axis=-1), img.affine)
    mean.header.set_data_dtype(np.float32)
    mean.header["descrip"] = path.name[:79].encode()  # which run, for the figure's caption
    return mean


def extract(p: ExtractParams, rois: RoiBuilder, n_jobs: int = 2, executor: Executor | None = None,
            cache: bool = True, unchanged_if: str | None = None) -> Extracted | None:
    """Extract every run; the tables, the ROI atlas on the first run's grid, digests and plugins.

    With ``cache``, runs whose inputs, settings and ROIs are unchanged come from the per-run cache;
    and None is returned, with nothing read, when the extraction's state (``extract_state``) equals
    ``unchanged_if`` (the state of the outputs already written).
    """
    skip = p.on_error == "skip"
    grid_hash: dict[int, str] = {}
    found: list = []
    participants, runs = discover(p.data, found if skip else None)
    skipped = [skipped_run(*f) for f in found]
    builder = rois
    jobs = []
    grids = []
    for run in runs:
        try:
            if run.kind == "nifti":
                grid = nib.load(run.mask)  # header only: ROIs are placed once per distinct grid
            else:
                grid, n_volumes = run_reference(run, p.data.space)
        except DataError as exc:  # a surface run's header
            if not skip:
                raise
            skipped.append(skipped_run(run.subject, run.group, run.run, str(exc), run.bold.name))
            continue
        except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as exc:
            if not skip:
                raise DataError(f"{run.mask}: not a readable NIfTI image ({exc})") from exc
            skipped.append(skipped_run(run.subject, run.group, run.run, f"{run.mask}: not a readable NIfTI image",
                                       run.bold.name))
            continue
        rois = builder.for_grid(grid, run.subject)
        if cache and id(rois) not in grid_hash:
            grid_hash[id(rois)] = runcache.rois_digest(rois)
        grids.append(grid)
        jobs.append((run, rois, p.denoise, skip, p.min_coverage, grid_hash.get(id(rois)),
                     None if run.kind == "nifti" else (grid, n_volumes)))
    if not jobs:
        raise DataError(f"{p.data.root}: no run could be extracted")
    state = participants_digest = None
    participants_file = Path(p.data.root) / p.data.participants
    warnings = []
    unusable = runcache.usable() if cache else None
    if unusable:  # the cache is optional: say so once and go on without it
        warnings.append(f"extract: warning: the per-run cache is unusable ({unusable}); extracting without it")
        cache = False
    if cache:
        keys = job_keys(jobs)
        jobs = [(*job[:5], keyed, job[6]) for job, keyed in zip(jobs, keys)]
        if all(keys):
            participants_digest = runcache.digests([participants_file])[str(participants_file)]
            state = extract_state(keys, skipped, participants_digest)
            if unchanged_if is not None and state == unchanged_if:
                return None
    else:
        jobs = [(*job[:5], None, job[6]) for job in jobs]
    executor = executor or as_executor(n_jobs)
    results = list(progress(executor.map(_extract_job, jobs), len(jobs), "extract: runs"))
    for job, res in zip(jobs, results):
        if isinstance(res, str):
            skipped.append(skipped_run(job[0].subject, job[0].group, job[0].run, res, job[0].bold.name))
    done = [r for r in results if not isinstance(r, str)]
    if cache:
        runcache.record_run([r[2] for r in done if r[2]])
    failed = [m for r in done if r[3] and r[3][0] == "failed" for m in r[3][1:]]
    unwritten = [m for r in done if r[3] and r[3][0] == "unwritten" for m in r[3][1:]]
    if failed:
        warnings.append(f"extract: warning: {len(failed)} cache entr{'y' if len(failed) == 1 else 'ies'} failed "
                        f"verification and {'was' if len(failed) == 1 else 'were'} computed again ({failed[0]})")
    if unwritten:
        warnings.append(f"extract: warning: the per-run cache could not store {len(unwritten)} "
                        f"run{'' if len(unwritten) == 1 else 's'} ({unwritten[0]}); extraction went on without it")
    how, results = [r[0] for r in done], [r[1] for r in done]
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
    digests[str(participants_file)] = participants_digest or file_digest(participants_file)
    motion = pd.concat([r[5] for r in results], ignore_index=True)
    carpets = pd.DataFrame([r[6] for r in results], columns=["subject", "run", "n_volumes", "png"])
    if isinstance(grids[0], Parcels):  # XCP-D's parcels: the atlas image it wrote gives their voxels
        atlas_img, atlas = atlas_image(Path(p.data.root), grids[0], jobs[0][1].names, jobs[0][1].weights)
    else:
        atlas_img, atlas = roi_atlas(jobs[0][1], grids[0])
    surface = ""
    if isinstance(grids[0], Grayordinates):
        kind = {"cifti": "CIFTI dtseries", "gifti": "GIfTI surface BOLD"}[jobs[0][0].kind]
        surface = f"{kind} ({grids[0].describe()})"
    background = None if surface or is_mni_space(p.data.space) or jobs[0][0].kind != "nifti" \
        else mean_image(jobs[0][0].bold)
    return Extracted(ts, roi_qc, run_qc, events, participants, motion, carpets, atlas_img, atlas, digests,
                     builder.plugins, how.count("computed"), how.count("cached"), surface, background, state,
                     warnings)
