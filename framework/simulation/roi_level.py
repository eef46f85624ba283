"""The fast ROI-level simulation behind ``fclab power`` and ``fclab calibrate``.

It skips voxels but keeps what makes windows differ in a real study. Per subject:

* every run is one continuous stretch of band-limited (0.01–0.08 Hz) latent ROI sources, as in the
  full simulation (``fclab.framework.simulation.study``): the baseline run has its own (shorter) length and the
  infusion windows are cut from one infusion run, at their offsets from the event;
* within each window the sources are mixed to that window's correlation matrix: the resting
  matrix plus a subject perturbation (``subject_jitter_r``), optionally a subject's own response in
  every non-baseline window (``response_jitter_r``), a run perturbation shared by the windows of one
  run (``run_jitter_r``) and a window perturbation (``state_jitter_r``); a planted
  ``effect`` shifts one edge on Fisher's z scale in one window for the target group, and planted
  ``effects`` (the ``simulate.effects`` description: ROI pair, group, signed Δr, time course) shift
  the edge's correlation by their mean over the window's volumes, as the full simulation plants them;
* white measurement noise (``noise_sd`` relative to the unit-variance signal) is added, and each
  run is cleaned in the order ``nilearn.signal.clean`` uses (linear detrend; 5th-order Butterworth
  band-pass of signals and confounds; projection onto the confounds' orthogonal complement;
  z-score), vectorised over subjects, with ``n_confounds`` nuisance regressors (random walks, as
  head-motion parameters are, drawn once per study and run) plus fMRIPrep's 128 s cosine basis. Regressing a run's confounds
  costs its windows degrees of freedom in proportion to the run's length, so the short baseline
  run's correlations spread more across subjects than an infusion window's, as in the voxel
  simulation and in real data.

The window's Pearson correlations become the edge values on Fisher's z scale (``pearson`` with
``fisher_z``). ``RoiStudy.from_params`` reads group sizes, TR, run lengths, windows and the
denoising settings from params.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fclab.framework.simulation.signals import bandlimited, nearest_pd
from fclab.framework.simulation.study import BASE_CORR, N_COSINE_PERIOD_S, ROI_NAMES

DEFAULT_WINDOWS = {"baseline": ("baseline", 0, 192), "0-10min": ("infusion", 24, 240),
                   "10-20min": ("infusion", 264, 240), "20-30min": ("infusion", 504, 240),
                   "30-40min": ("infusion", 744, 240)}


@dataclass(frozen=True)
class RoiStudy:
    n_ref: int = 14
    n_target: int = 12
    groups: tuple[str, str] = ("midazolam", "ketamine")  # (reference, target)
    runs: dict[str, int] = field(default_factory=lambda: {"baseline": 192, "infusion": 984})  # volumes
    # name -> (run, first volume, volumes); the baseline window first
    windows: dict[str, tuple[str, int, int]] = field(default_factory=lambda: dict(DEFAULT_WINDOWS))
    tr: float = 2.5
    rois: tuple[str, ...] = ROI_NAMES
    base: np.ndarray = field(default_factory=lambda: BASE_CORR.copy())
    subject_jitter_r: float = 0.05
    # A subject's own response to the infusion context: a perturbation of every non-baseline window's
    # matrix, the same in each of the subject's sessions (0: none, the default). It does not cancel in a
    # subject's change from baseline, so it spreads a parallel design's changes; a crossover's
    # within-subject difference removes it.
    response_jitter_r: float = 0.0
    run_jitter_r: float = 0.03
    state_jitter_r: float = 0.03
    noise_sd: float = 0.5
    # Nuisance regressors per run. `simple` has 24 motion terms + WM + CSF, but after filtering
    # they span far fewer in-band dimensions; 8 random walks reproduce the voxel simulation's
    # spread of every window (docs/validation.md, `fclab calibrate --kind spread`).
    n_confounds: int = 8
    high_pass: float | None = 0.01
    low_pass: float | None = 0.08
    detrend: bool = True
    effect: tuple[str, str, str, float] | None = None  # (roi_a, roi_b, window, delta_z)
    effects: tuple = ()  # EffectSpec planted as in the full simulation
    onsets: dict[str, float] = field(default_factory=lambda: {"infusion": 60.0})  # event onset per run, s
    # "crossover": every subject scanned in both conditions (``groups``), n_target of them target first;
    # period_shift_r and carryover as simulate_crossover_edges takes them
    design: str = "parallel"
    period_shift_r: float = 0.0
    carryover: float = 0.0

    @classmethod
    def from_params(cls, params, **overrides) -> RoiStudy:
        """The study that ``params`` describes (simulate section for sizes and run lengths)."""
        sim, conn, den = params.simulate, params.connectivity, params.extract.denoise
        tr = sim.tr_s
        runs = {"baseline": int(round(sim.baseline_duration_s / tr)),
                "infusion": int(round((sim.pre_onset_s + sim.infusion_duration_s) / tr))}
        onset = {"baseline": 0.0, "infusion": sim.pre_onset_s}
        windows = {}
        for w in conn.windows:
            run = w.run if w.run in runs else "infusion"
            lo, hi = w.bounds_s()
            start = (onset[run] if w.event else 0.0) + (lo or 0.0)
            stop = (onset[run] if w.event else 0.0) + hi if hi is not None else runs[run] * tr
            first = int(round(start / tr))
            windows[w.name] = (run, first, max(min(int(round(stop / tr)), runs[run]) - first, 0))
        base = params.stats.baseline_window
        windows = {base: windows.pop(base), **windows}
        names = dict(zip(("ketamine", "midazolam"), (sim.n_ketamine, sim.n_midazolam)))
        ref, target = params.stats.groups
        n_conf = 0 if den.strategy == "none" else cls.n_confounds
        kw = dict(n_ref=names.get(ref, sim.n_midazolam), n_target=names.get(target, sim.n_ketamine),
                  groups=(ref, target), runs=runs, windows=windows, tr=tr, subject_jitter_r=sim.subject_jitter_r,
                  onsets={"infusion": sim.pre_onset_s},
                  n_confounds=n_conf, high_pass=den.high_pass_hz, low_pass=den.low_pass_hz, detrend=den.detrend)
        return cls(**{**kw, **overrides})


def _confounds(rng, T, n, tr):
    """``n`` random-walk nuisance regressors plus the cosine basis of fMRIPrep (period 128 s)."""
    walks = np.cumsum(rng.standard_normal((T, n)), axis=0) if n else np.zeros((T, 0))
    k = int(np.floor(2 * T * tr / N_COSINE_PERIOD_S))
    t = np.arange(T)
    cos = np.stack([np.cos(np.pi * j * (2 * t + 1) / (2 * T)) for j in range(1, k + 1)], axis=1) if k else np.zeros((T, 0))
    return np.concatenate([walks, cos], axis=1)


def _clean(x, conf, study: RoiStudy):
    """Detrend, band-pass (signals and confounds), project out the confounds, z-score: (T, n)."""
    from scipy import signal as sps

    T = len(x)
    t = np.linspace(-1, 1, T)[:, None]
    trend = np.concatenate([np.ones((T, 1)), t], axis=1) if study.detrend else np.ones((T, 1))

    def detrend(a):
        return a - trend @ np.linalg.lstsq(trend, a, rcond=None)[0]

    x = detrend(x)
    conf = detrend(conf) if conf.shape[1] else conf
    fs = 1 / study.tr
    bands = [(b, kind) for b, kind in ((study.low_pass, "lowpass"), (study.high_pass, "highpass")) if b]
    for cut, kind in bands:
        sos = sps.butter(5, cut, btype=kind, fs=fs, output="sos")
        x = sps.sosfiltfilt(sos, x, axis=0)
        conf = sps.sosfiltfilt(sos, conf, axis=0) if conf.shape[1] else conf
    if conf.shape[1]:
        q, _ = np.linalg.qr(conf)
        x = x - q @ (q.T @ x)
    x = x - x.mean(axis=0)
    return x / x.std(axis=0, ddof=1)


def planted_shifts(study: RoiStudy, names: list[str]) -> dict:
    """window -> {(i, j, group): mean Δr over the window's volumes} for ``study.effects``."""
    from fclab.framework.simulation.study import effect_profile

    out: dict = {}
    for name in names:
        run, first, n = study.windows[name]
        if run not in study.onsets:
            continue
        t_min = ((first + np.arange(n)) * study.tr - study.onsets[run]) / 60.0
        for e in study.effects:
            i, j = sorted((study.rois.index(e.roi_a), study.rois.index(e.roi_b)))
            key = (i, j, e.group)
            out.setdefault(name, {})
            out[name][key] = out[name].get(key, 0.0) + e.delta_r * float(effect_profile(t_min, e).mean())
    return out


def _jitter(rng, scale, n, R):
    x = np.triu(rng.standard_normal((n, R, R)) * scale, 1)
    return x + x.transpose(0, 2, 1)


def _response(rng, study: RoiStudy, S: int, R: int) -> np.ndarray | None:
    """The subjects' own responses (``response_jitter_r``); no random numbers when it is 0, so that
    studies without it are the ones simulated before it existed."""
    return _jitter(rng, study.response_jitter_r, S, R) if study.response_jitter_r else None


def _sessions(rng, study: RoiStudy, subject: np.ndarray, groups: np.ndarray, shift=None,
              response: np.ndarray | None = None) -> np.ndarray:
    """Every window's Fisher z (S, windows, edges) of one scan session of each subject, from the
    subjects' own correlation matrices ``subject`` (S, R, R); ``groups`` names each subject's arm
    (a group, or a crossover session's condition) for the planted effects; ``shift(name, corr)``
    may change a window's matrices in place before mixing; ``response`` (S, R, R) is added to every
    window but the baseline (``response_jitter_r``)."""
    R = len(study.rois)
    S = len(subject)
    iu = np.triu_indices(R, 1)
    effect = None
    if study.effect is not None:
        a, b, w, dz = study.effect
        i, j = sorted((study.rois.index(a), study.rois.index(b)))
        effect = (i, j, w, dz)
    names = list(study.windows)
    planted = planted_shifts(study, names)
    values = np.full((S, len(names), len(iu[0])), np.nan)
    for run, T in study.runs.items():
        mine = [k for k, n in enumerate(names) if study.windows[n][0] == run]
        if not mine:
            continue
        run_corr = subject + _jitter(rng, study.run_jitter_r, S, R)
        latent = bandlimited(rng, S * R, T, study.tr).reshape(S, R, T)  # continuous over the run
        ts = latent.transpose(0, 2, 1).copy()  # (S, T, R)
        for k in mine:
            _, first, n = study.windows[names[k]]
            corr = run_corr + _jitter(rng, study.state_jitter_r, S, R)
            if response is not None and k != 0:
                corr += response
            if effect is not None and effect[2] == names[k]:
                i, j, _, dz = effect
                tg = groups == study.groups[1]
                r = np.tanh(np.arctanh(np.clip(corr[tg, i, j], -0.999, 0.999)) - dz)
                corr[tg, i, j] = corr[tg, j, i] = r
            for (i, j, grp), delta in planted.get(names[k], {}).items():
                sel = groups == grp
                corr[sel, i, j] += delta
                corr[sel, j, i] += delta
            if shift is not None:
                shift(names[k], corr)
            mix = np.linalg.cholesky(np.stack([nearest_pd(c) for c in corr]))  # (S, R, R)
            ts[:, first:first + n] = np.einsum("srk,skt->str", mix, latent[:, :, first:first + n])
        ts += study.noise_sd * rng.standard_normal(ts.shape)
        conf = _confounds(rng, T, study.n_confounds, study.tr)
        clean = _clean(ts.transpose(1, 0, 2).reshape(T, S * R), conf, study).reshape(T, S, R)
        for k in mine:
            _, first, n = study.windows[names[k]]
            w = clean[first:first + n].transpose(1, 0, 2)  # (S, n, R)
            w = w - w.mean(axis=1, keepdims=True)
            w = w / np.sqrt((w**2).sum(axis=1, keepdims=True))
            r = np.einsum("sti,stj->sij", w, w)[:, iu[0], iu[1]]
            values[:, k] = np.arctanh(np.clip(r, -0.9999999, 0.9999999))
    return values


def _long(study: RoiStudy, subjects, groups, values, **extra) -> pd.DataFrame:
    """The edge table of ``values`` (S, windows, edges), one row per subject, window and edge."""
    R = len(study.rois)
    iu = np.triu_indices(R, 1)
    names = list(study.windows)
    S, W, n_edges = values.shape
    cols = {"subject": np.repeat(subjects, W * n_edges)}
    cols.update({k: v for k, v in extra.items()})  # scalars
    cols.update({"group": np.repeat(groups, W * n_edges),
                 "window": np.tile(np.repeat(names, n_edges), S),
                 "metric": "pearson",
                 "roi_a": np.tile(np.array(study.rois)[iu[0]], S * W),
                 "roi_b": np.tile(np.array(study.rois)[iu[1]], S * W),
                 "value": values.ravel()})
    return pd.DataFrame(cols)


def simulate_edges(study: RoiStudy, seed) -> pd.DataFrame:
    """One simulated study as an edge table (subject, group, window, metric, roi_a, roi_b, value)."""
    rng = np.random.default_rng(seed)
    R = len(study.rois)
    S = study.n_ref + study.n_target
    groups = np.array([study.groups[0]] * study.n_ref + [study.groups[1]] * study.n_target)
    subject = study.base[None] + _jitter(rng, study.subject_jitter_r, S, R)
    values = _sessions(rng, study, subject, groups, response=_response(rng, study, S, R))
    return _long(study, [f"{k:02d}" for k in range(S)], groups, values)


def simulate_crossover_edges(study: RoiStudy, seed, period_shift_r: float = 0.0,
                             carryover: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One simulated two-period crossover study: (edge table with a ``session`` column, sessions table).

    ``study.groups`` are the conditions (reference, target); ``study.n_target`` subjects have the target
    condition first (sequence target-reference), ``study.n_ref`` the reference first. Each subject keeps
    its own correlation matrices (``subject_jitter_r``) and response (``response_jitter_r``) in both
    sessions; every session has its own run
    and window perturbations and noise. The planted effects (``study.effects``, whose ``group`` names
    the condition) act in the sessions of that condition. ``period_shift_r`` adds to every edge's latent
    correlation in the non-baseline windows of period 2 (habituation, say: it moves the change from
    baseline); ``carryover`` plants that fraction of the effects, on their time course, in the
    reference-condition session of subjects who had the target condition first. Session labels are
    the periods ("1", "2").
    """
    rng = np.random.default_rng(seed)
    R = len(study.rois)
    S = study.n_ref + study.n_target
    ref, target = study.groups
    first_target = np.array([False] * study.n_ref + [True] * study.n_target)
    subject = study.base[None] + _jitter(rng, study.subject_jitter_r, S, R)
    response = _response(rng, study, S, R)
    names = list(study.windows)
    baseline = names[0]
    planted = planted_shifts(study, names)
    iu = np.triu_indices(R, 1)
    frames, sessions = [], []
    ids = [f"{k:02d}" for k in range(S)]
    for period in (1, 2):
        cond = np.where(first_target == (period == 1), target, ref)
        carried = (period == 2) & first_target  # the reference session after the target one

        def shift(name, corr, period=period):
            if period == 2 and period_shift_r and name != baseline:
                corr[:, iu[0], iu[1]] += period_shift_r
                corr[:, iu[1], iu[0]] += period_shift_r
            if carryover:
                for (i, j, grp), delta in planted.get(name, {}).items():
                    if grp == target:
                        corr[carried, i, j] += carryover * delta
                        corr[carried, j, i] += carryover * delta

        values = _sessions(rng, study, subject, cond, shift, response)
        frames.append(_long(study, ids, cond, values, session=str(period)))
        sessions.append(pd.DataFrame({"subject": ids, "session": str(period), "condition": cond, "period": period}))
    edges = pd.concat(frames, ignore_index=True)
    return edges, pd.concat(sessions, ignore_index=True)
