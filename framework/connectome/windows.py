"""Windows: where each fixed and sliding window lies in each subject's runs, and which volumes it uses."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fclab.framework.errors import DataError, ParamsError
from fclab.framework.params import ConnectivityParams

CUT_COLUMNS = ["subject", "group", "run", "window", "kind", "window_start_s", "window_end_s", "tr_s"]


def _zero(run, event, onsets, what) -> float:
    if event is None:
        return 0.0
    key = (run.subject, run.run, event)
    if key not in onsets:
        raise DataError(f"sub-{run.subject} run {run.run!r}: no {event!r} event (needed by window {what!r})")
    if len(onsets[key]) > 1:
        raise DataError(f"sub-{run.subject} run {run.run!r}: {len(onsets[key])} {event!r} events (onsets "
                        f"{', '.join(f'{x:g}' for x in onsets[key])} s in events.tsv); window {what!r} needs exactly one")
    return onsets[key][0]


def resolve(p: ConnectivityParams, run_qc: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """One row per subject and window (fixed and sliding), with bounds in seconds from the run start."""
    onsets: dict[tuple, list[float]] = {}
    for r in events.itertuples():
        onsets.setdefault((r.subject, r.run, r.trial_type), []).append(r.onset_s)
    missing_events(p, run_qc, onsets)
    rows = []
    for run in run_qc.itertuples():
        if not np.isfinite(run.n_volumes):  # skipped (on_error: skip): its fixed windows stay, missing
            rows += [{"subject": run.subject, "group": run.group, "run": run.run, "tr_s": np.nan, "window": w.name,
                      "kind": "fixed", "window_start_s": np.nan, "window_end_s": np.nan}
                     for w in p.windows if w.run == run.run]
            continue
        duration = run.n_volumes * run.tr_s
        base = {"subject": run.subject, "group": run.group, "run": run.run, "tr_s": run.tr_s}
        fixed = []
        for w in p.windows:
            if w.run != run.run:
                continue
            zero = _zero(run, w.event, onsets, w.name)
            lo, hi = w.bounds_s()
            start, end = (0.0, duration) if lo is None else (zero + lo, zero + hi)
            _inside(start, end, duration, run, w.name, w.event)
            fixed.append((w.name, start, end))
            rows.append({**base, "window": w.name, "kind": "fixed", "window_start_s": start, "window_end_s": end})
        if not p.allow_overlap:
            for i, (a, a0, a1) in enumerate(fixed):
                for b, b0, b1 in fixed[i + 1:]:
                    if a0 < b1 - 1e-9 and b0 < a1 - 1e-9:
                        raise ParamsError(f"connectivity.windows: {a!r} and {b!r} overlap in sub-{run.subject} "
                                          "(set allow_overlap: true to permit it)")
        for s in p.sliding:
            if s.run != run.run:
                continue
            zero = _zero(run, s.event, onsets, s.name)
            lo, hi = s.bounds_s()
            span0, span1 = (zero, duration) if lo is None else (zero + lo, zero + hi)
            _inside(span0, span1, duration, run, s.name, s.event)
            n = int(np.floor((span1 - span0 - s.length_s) / s.step_s + 1e-9)) + 1
            if n < 1:  # else no sliding row at all, and no reason anywhere
                raise ParamsError(f"connectivity.sliding {s.name!r}: length_s {s.length_s:g} s is longer than its span "
                                  f"in sub-{run.subject}'s run {run.run!r} ({span1 - span0:g} s)")
            for k in range(max(n, 0)):
                start = span0 + k * s.step_s
                rows.append({**base, "window": s.name, "kind": "sliding", "window_start_s": start,
                             "window_end_s": start + s.length_s})
    return pd.DataFrame(rows, columns=CUT_COLUMNS)


def missing_events(p: ConnectivityParams, run_qc: pd.DataFrame, onsets: dict) -> None:
    """One error for every subject whose run lacks an event a window is timed from (not one per
    window): the subjects are listed, with the likely cause."""
    for spec in [*p.windows, *p.sliding]:
        if spec.event is None:
            continue
        runs = run_qc[(run_qc["run"] == spec.run) & np.isfinite(run_qc["n_volumes"].to_numpy(float))]
        lacking = [s for s in runs["subject"] if (s, spec.run, spec.event) not in onsets]
        if lacking:
            shown = ", ".join(f"sub-{s}" for s in lacking[:10]) + (f" and {len(lacking) - 10} more" if len(lacking) > 10 else "")
            raise DataError(f"run {spec.run!r}: no {spec.event!r} event for {len(lacking)} subject"
                            f"{'s' if len(lacking) > 1 else ''} ({shown}), needed by window {spec.name!r}: their "
                            "events.tsv is missing or has no such trial_type (fMRIPrep does not copy events.tsv; "
                            "set extract.data.events_root to the raw BIDS dataset, and rerun extract)")


def _inside(start, end, duration, run, name, event=None):
    if start < -1e-9 or end > duration + 1e-6:
        raise ParamsError(
            f"connectivity: window {name!r} ({start:g}-{end:g} s) lies outside run {run.run!r} of "
            f"sub-{run.subject} (0-{duration:g} s; check the window bounds"
            + (f" and the {event!r} onset in events.tsv)" if event else ")")
        )


def subsample(n: int, target: int, rng: np.random.Generator, contiguous: bool) -> np.ndarray:
    """Indices of ``target`` of ``n`` volumes: one contiguous block, or scattered volumes in order."""
    if contiguous:
        start = int(rng.integers(0, n - target + 1))
        return np.arange(start, start + target)
    return np.sort(rng.choice(n, size=target, replace=False))


def taper(kind: str, n: int) -> np.ndarray | None:
    """Per-volume weights for a sliding window (None for a plain rectangle)."""
    if kind == "none":
        return None
    from scipy.signal import get_window  # here: scipy.signal takes ~0.8 s to import

    return get_window("hann" if kind == "hann" else ("tukey", 0.5), n, fftbins=False)
