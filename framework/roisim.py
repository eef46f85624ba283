"""The fast ROI-level simulation behind ``fclab power`` and the null calibration.

It skips voxels, noise and denoising: each subject and window gets band-limited (0.01–0.08 Hz)
latent ROI time series mixed to a target correlation matrix, exactly like the latent sources of
the full simulation (``framework.simulate``), and the window's Pearson correlations become the
edge values. Between-subject variability comes from ``subject_jitter_r`` (a symmetric perturbation
of the resting matrix, as in the full simulation) and window-to-window variability from
``state_jitter_r``; sampling variability comes from the finite, autocorrelated window. A planted
effect lowers one edge's correlation by ``delta_z`` on Fisher's z scale, in one window, for the
target group only. Edge values are Fisher z (``pearson`` with ``fisher_z``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from framework.simulate import BASE_CORR, ROI_NAMES, _bandlimited, _nearest_pd


@dataclass(frozen=True)
class RoiStudy:
    n_ref: int = 14
    n_target: int = 12
    groups: tuple[str, str] = ("midazolam", "ketamine")  # (reference, target)
    windows: dict[str, int] = field(default_factory=lambda: {  # name -> volumes; baseline first
        "baseline": 192, "0-10min": 240, "10-20min": 240, "20-30min": 240, "30-40min": 240})
    tr: float = 2.5
    rois: tuple[str, ...] = ROI_NAMES
    base: np.ndarray = field(default_factory=lambda: BASE_CORR.copy())
    subject_jitter_r: float = 0.05
    state_jitter_r: float = 0.05
    effect: tuple[str, str, str, float] | None = None  # (roi_a, roi_b, window, delta_z)

    @classmethod
    def from_params(cls, params, **overrides) -> RoiStudy:
        """Group sizes, TR, jitter and window lengths of the study that ``params`` describes."""
        sim, conn = params.simulate, params.connectivity
        tr = sim.tr_s
        windows = {}
        for w in conn.windows:
            lo, hi = w.bounds_s()
            run_s = sim.baseline_duration_s if w.run == "baseline" else sim.infusion_duration_s
            windows[w.name] = int(round(((hi - lo) if lo is not None else run_s) / tr))
        base = params.stats.baseline_window
        windows = {base: windows.pop(base), **windows}
        names = dict(zip(("ketamine", "midazolam"), (sim.n_ketamine, sim.n_midazolam)))
        ref, target = params.stats.groups
        kw = dict(n_ref=names.get(ref, sim.n_midazolam), n_target=names.get(target, sim.n_ketamine),
                  groups=(ref, target), windows=windows, tr=tr, subject_jitter_r=sim.subject_jitter_r)
        return cls(**{**kw, **overrides})


def simulate_edges(study: RoiStudy, seed) -> pd.DataFrame:
    """One simulated study as an edge table (subject, group, window, metric, roi_a, roi_b, value)."""
    rng = np.random.default_rng(seed)
    R = len(study.rois)
    S = study.n_ref + study.n_target
    groups = np.array([study.groups[0]] * study.n_ref + [study.groups[1]] * study.n_target)
    iu = np.triu_indices(R, 1)
    effect = None
    if study.effect is not None:
        a, b, w, dz = study.effect
        i, j = sorted((study.rois.index(a), study.rois.index(b)))
        effect = (i, j, w, dz)

    def jitter(scale):
        x = np.triu(rng.standard_normal((S, R, R)) * scale, 1)
        return x + x.transpose(0, 2, 1)

    subject_base = study.base[None] + jitter(study.subject_jitter_r)
    values, rows = [], []
    for name, T in study.windows.items():
        corr = subject_base + jitter(study.state_jitter_r)
        if effect is not None and effect[2] == name:
            i, j, _, dz = effect
            target = groups == study.groups[1]
            r = np.tanh(np.arctanh(np.clip(corr[target, i, j], -0.999, 0.999)) - dz)
            corr[target, i, j] = corr[target, j, i] = r
        corr = np.stack([_nearest_pd(c) for c in corr])
        mix = np.linalg.cholesky(corr)  # (S, R, R)
        latent = _bandlimited(rng, S * R, T, study.tr).reshape(S, R, T)
        ts = np.einsum("srk,skt->str", mix, latent)  # (S, T, R)
        ts -= ts.mean(axis=1, keepdims=True)
        ts /= np.sqrt((ts**2).sum(axis=1, keepdims=True))
        r = np.einsum("sti,stj->sij", ts, ts)[:, iu[0], iu[1]]  # (S, edges)
        values.append(np.arctanh(np.clip(r, -0.9999999, 0.9999999)))
        rows.append(name)
    n_edges = len(iu[0])
    W = len(rows)
    vals = np.stack(values, axis=1)  # (S, W, edges)
    return pd.DataFrame({
        "subject": np.repeat([f"{k:02d}" for k in range(S)], W * n_edges),
        "group": np.repeat(groups, W * n_edges),
        "window": np.tile(np.repeat(rows, n_edges), S),
        "metric": "pearson",
        "roi_a": np.tile(np.array(study.rois)[iu[0]], S * W),
        "roi_b": np.tile(np.array(study.rois)[iu[1]], S * W),
        "value": vals.ravel(),
    })
