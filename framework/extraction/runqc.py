"""Run QC at extraction: the fixed voxel sample, DVARS before and after denoising, the carpet's
stored image, and the run exclusion rules."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fclab.framework.errors import DataError


MIN_CLEAN_VOLUMES = 3  # a run censored below this is excluded at extraction


QC_VOXELS = 300  # in-mask voxels sampled per run for DVARS and the carpet (nilearn filters them one by one)


CARPET_ROWS = 150  # of those, the rows of the stored carpet


CARPET_Z = 3.0  # carpet values: each voxel's z-score, clipped to ±CARPET_Z, in CARPET_LEVELS steps


CARPET_LEVELS = 15  # odd, so the mean (z = 0) is a level


def voxel_sample(mask_data: np.ndarray, limit: int) -> np.ndarray:
    """Flat (C-order) indices of at most ``limit`` in-mask voxels, evenly spaced through the mask so
    every slice is represented; all of them when the mask has fewer."""
    flat = np.flatnonzero(np.ravel(mask_data) > 0)
    if flat.size > limit:
        flat = flat[np.linspace(0, flat.size - 1, limit).round().astype(np.int64)]
    return flat


def dvars(raw: np.ndarray, kept: np.ndarray, n_volumes: int, clean: np.ndarray | None = None) -> np.ndarray:
    """DVARS per volume (Power et al. 2012): the root mean square over voxels of the change from the
    previous volume, in percent of each voxel's mean raw signal.

    ``raw``: (voxels, T) signals; ``clean``: (voxels, len(kept)) the same voxels after denoising
    (volumes ``kept`` only), or None for the DVARS of ``raw``. Volume 0, censored volumes, and
    volumes whose previous one was censored have no value. Voxels whose mean is not positive
    (outside the signal) are left out.
    """
    out = np.full(n_volumes, np.nan)
    mean = raw.mean(axis=1)
    use = np.isfinite(mean) & (mean > 0)
    if clean is None:
        clean, kept = raw, np.arange(n_volumes)
    if kept.size < 2 or not use.any():
        return out
    psc = 100.0 * clean[use] / mean[use, None]
    step = np.diff(kept) == 1
    out[kept[1:][step]] = np.sqrt(np.mean(np.diff(psc, axis=1)[:, step] ** 2, axis=0))
    return out


def carpet_png(raw: np.ndarray, kept: np.ndarray, n_volumes: int, clean: np.ndarray | None) -> bytes:
    """A carpet plot's data as a 4-bit grey PNG: up to CARPET_ROWS sampled voxels (rows, in mask
    order) by volumes (columns), each row z-scored over its volumes, clipped to ±CARPET_Z and
    quantised to CARPET_LEVELS steps (a carpet shows patterns, not values; this keeps a 1,000-volume
    run near 150 kB); the raw signals on top, the denoised ones below (censored volumes at the mean);
    empty bytes when the mask has no voxel."""
    import io

    from PIL import Image

    if not raw.shape[0]:  # no voxel in the mask: no carpet
        return b""
    rows = np.linspace(0, raw.shape[0] - 1, min(CARPET_ROWS, raw.shape[0])).round().astype(np.int64)

    def quantise(x):
        sd = x.std(axis=1, keepdims=True)
        z = np.divide(x - x.mean(axis=1, keepdims=True), sd, out=np.zeros_like(x), where=sd > 0)
        return np.round((np.clip(z, -CARPET_Z, CARPET_Z) + CARPET_Z) * ((CARPET_LEVELS - 1) / (2 * CARPET_Z)))

    after = np.full((rows.size, n_volumes), (CARPET_LEVELS - 1) // 2, np.float64)
    if clean is not None and kept.size:
        after[:, kept] = quantise(clean[rows])
    levels = np.vstack([quantise(raw[rows]), after]).astype(np.uint8)
    img = Image.frombytes("P", (levels.shape[1], levels.shape[0]), levels.tobytes())
    img.putpalette([round(255 * i / (CARPET_LEVELS - 1)) for i in range(CARPET_LEVELS) for _ in range(3)])
    buf = io.BytesIO()
    img.save(buf, format="PNG", bits=4, optimize=True)
    return buf.getvalue()


def read_carpet(png: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The (raw, denoised) z-score arrays of a ``carpet_png``."""
    import io

    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float64) * (2 * CARPET_Z / (CARPET_LEVELS - 1)) - CARPET_Z
    half = a.shape[0] // 2
    return a[:half], a[half:]


def skipped_run(subject: str, group: str, run: str, message: str, bold: str = "") -> dict:
    """The run_qc row of a run left out under ``on_error: skip``."""
    return {"subject": subject, "group": group, "run": run, "bold": bold, "tr_s": np.nan, "n_volumes": np.nan,
            "n_retained": np.nan, "mean_fd": np.nan, "max_fd": np.nan, "confounds": "", "n_regressors": np.nan,
            "dof_band": np.nan, "dof_left": np.nan, "band_variance_kept": np.nan, "excluded": True,
            "reason": f"skipped: {message}"}


def no_fd_message(subject: str, run: str, bold: str) -> str:
    """The error of a run without framewise displacement when the FD exclusion rule is on."""
    return (f"sub-{subject} run {run!r} ({bold}): its confounds file has no framewise_displacement column, "
            "which extract.exclude.max_mean_fd needs (set it to null to run without FD)")


def apply_exclusions(run_qc: pd.DataFrame, rules) -> pd.DataFrame:
    """Mark runs that break a rule as excluded, with every broken rule in ``reason``."""
    run_qc = run_qc.copy()
    # Runs already excluded at extraction (censored to nothing) keep that reason.
    reasons = [[r] if e else [] for e, r in zip(run_qc.get("excluded", [False] * len(run_qc)),
                                                 run_qc.get("reason", [""] * len(run_qc)))]
    censored = 1 - run_qc["n_retained"] / run_qc["n_volumes"]
    for i, r in enumerate(run_qc.itertuples()):
        if rules.max_mean_fd is not None and np.isnan(r.mean_fd) and not reasons[i]:
            raise DataError(no_fd_message(r.subject, r.run, r.bold))
        if rules.max_mean_fd is not None and r.mean_fd > rules.max_mean_fd:
            reasons[i].append(f"mean FD {r.mean_fd:.3f} mm > {rules.max_mean_fd:g} mm")
        if rules.max_censored_fraction is not None and censored.iloc[i] > rules.max_censored_fraction:
            reasons[i].append(f"censored fraction {censored.iloc[i]:.2f} > {rules.max_censored_fraction:g}")
        if rules.min_clean_volumes is not None and r.n_retained < rules.min_clean_volumes:
            reasons[i].append(f"{r.n_retained} clean volumes < {rules.min_clean_volumes}")
        if rules.min_dof is not None and getattr(r, "dof_left", np.nan) < rules.min_dof:  # NaN: not denoised
            reasons[i].append(f"{r.dof_left:.1f} temporal degrees of freedom left < min_dof {rules.min_dof:g} "
                              f"({r.n_regressors} regressors, {r.dof_band:.1f} after filtering and censoring)")
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
