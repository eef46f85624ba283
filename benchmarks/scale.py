"""Benchmark: the stages after extraction at consortium scale, wall time and peak RSS per stage.

A study of N subjects is written straight as the extract stage's outputs (the fast path the issue
allows: no voxels): the default study's design (26-subject template: baseline 192 volumes, infusion
984 volumes at TR 2.5 s with the infusion from 60 s; groups alternate), R ROIs whose first five are the
default ROI set's names, signals mixed Gaussian noise. Then ``fclab connectivity`` and ``fclab stats``
run in their own processes under ``/usr/bin/time``, so each peak RSS is its own stage's.

Configurations (``--only`` picks some):
  - ``r100``: 100 ROIs, the default windows (5 fixed + 75 sliding), the default tests (mmrm, lmm,
    change_welch, permutation with 5,000 relabelings), N = 100, 300, 1,000;
  - ``r400``: 400 ROIs, fixed windows only, lmm only, N = 100, 300, 1,000.

Prints one row per stage and N, and per configuration and stage a least-squares line of wall time and
of peak RSS on N with its largest relative residual (costs linear in subjects fit the line closely).

    .venv/bin/python benchmarks/scale.py [--only r100 r400] [--n 100 300 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
FCLAB = Path(sys.executable).parent / "fclab"
DEFAULT_ROIS = ["Left_Amygdala", "Right_Amygdala", "vmPFC", "dmPFC", "amPFC"]
TR, BASELINE, INFUSION, ONSET = 2.5, 192, 984, 60.0
CONFIGS = {
    "r100": {"rois": 100, "sliding": True, "tests": None},
    "r400": {"rois": 400, "sliding": False, "tests": ["lmm"]},
}


def write_study(work: Path, n: int, R: int, seed: int = 0) -> None:
    """results/extract/ of an N-subject study with R ROIs, and params.yaml beside it."""
    from fclab.framework.io import write_parquet

    out = work / "results" / "extract"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rois = DEFAULT_ROIS + [f"roi{k:03d}" for k in range(len(DEFAULT_ROIS), R)]
    subjects = [f"{k + 1:04d}" for k in range(n)]
    groups = ["ketamine" if k % 2 else "midazolam" for k in range(n)]
    mix = np.eye(R) + 0.15 * rng.standard_normal((R, R))
    frames = []
    for s in subjects:
        for run, T in (("baseline", BASELINE), ("infusion", INFUSION)):
            x = (rng.standard_normal((T, R)) @ mix).astype(np.float64)
            x = (x - x.mean(0)) / x.std(0, ddof=1)
            f = pd.DataFrame(x, columns=rois)
            f.insert(0, "time_s", np.arange(T) * TR)
            f.insert(0, "volume", np.arange(T, dtype=np.int64))
            f.insert(0, "run", run)
            f.insert(0, "subject", s)
            frames.append(f)
    prov = {"stage": "extract", "fclab_version": "benchmark", "inputs": {}}
    write_parquet(pd.concat(frames, ignore_index=True), out / "timeseries.parquet", prov)
    del frames
    run_qc = pd.DataFrame([{"subject": s, "group": g, "run": run, "bold": f"sub-{s}_{run}.nii.gz", "tr_s": TR,
                            "n_volumes": T, "n_retained": T, "mean_fd": 0.1, "max_fd": 0.3, "confounds": "",
                            "excluded": False, "reason": ""}
                           for s, g in zip(subjects, groups) for run, T in (("baseline", BASELINE), ("infusion", INFUSION))])
    write_parquet(run_qc, out / "run_qc.parquet", prov)
    write_parquet(pd.DataFrame({"subject": subjects, "run": "infusion", "trial_type": "infusion",
                                "onset_s": ONSET, "duration_s": 2400.0}), out / "events.parquet", prov)
    write_parquet(pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects], "group": groups,
                                "age": rng.integers(20, 60, n), "sex": np.where(np.arange(n) % 2, "F", "M"),
                                "subject": subjects}), out / "participants.parquet", prov)
    roi_qc = pd.DataFrame({"subject": np.repeat(subjects, 2 * R), "run": np.tile(np.repeat(["baseline", "infusion"], R), n),
                           "roi": np.tile(rois, 2 * n), "n_voxels": 20, "coverage": 1.0, "tsnr": 50.0,
                           "frac_bad": 0.0, "missing": False, "reason": ""})
    write_parquet(roi_qc, out / "roi_qc.parquet", prov)


def write_params(work: Path, sliding: bool, tests) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if not sliding:
        params["connectivity"]["sliding"] = []
    if tests:
        params["stats"]["tests"] = tests
        params["report"]["primary_test"] = tests[0]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def timed(work: Path, stage: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of ``fclab <stage>`` in its own process."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "%M", str(FCLAB), stage], cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"fclab {stage} failed in {work}:\n{res.stderr[-2000:]}")
    return wall, int(res.stderr.strip().splitlines()[-1]) / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--n", nargs="+", type=int, default=[100, 300, 1000])
    ap.add_argument("--keep", type=Path, default=None, help="work under DIR and keep it")
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="fclab-scale-"))
    rows = []
    try:
        for name in args.only:
            cfg = CONFIGS[name]
            for n in args.n:
                work = base / f"{name}-{n}"
                if work.exists():
                    shutil.rmtree(work)
                work.mkdir(parents=True)
                t0 = time.perf_counter()
                write_study(work, n, cfg["rois"])
                write_params(work, cfg["sliding"], cfg["tests"])
                made = time.perf_counter() - t0
                for stage in ("connectivity", "stats"):
                    wall, peak = timed(work, stage)
                    size = (work / "results" / stage / ("edges.parquet" if stage == "connectivity" else "tests.parquet")).stat().st_size
                    rows.append({"config": name, "n": n, "stage": stage, "wall_s": wall, "peak_gb": peak,
                                 "file_mb": size / 1e6, "study_s": made})
                    print(json.dumps(rows[-1]), flush=True)
                if not args.keep:
                    shutil.rmtree(work)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    table = pd.DataFrame(rows)
    print()
    print(f"{'config':<8}{'N':>6}{'stage':>14}{'wall s':>10}{'peak GB':>10}{'file MB':>10}")
    for r in table.itertuples():
        print(f"{r.config:<8}{r.n:>6}{r.stage:>14}{r.wall_s:>10.1f}{r.peak_gb:>10.2f}{r.file_mb:>10.1f}")
    print()
    for (name, stage), f in table.groupby(["config", "stage"], sort=False):
        if len(f) < 2:
            continue
        for col in ("wall_s", "peak_gb"):
            slope, icept = np.polyfit(f["n"], f[col], 1)
            fit = icept + slope * f["n"]
            resid = np.max(np.abs(f[col] - fit) / f[col])
            print(f"{name} {stage} {col}: {icept:.2f} + {slope * 1000:.2f} per 1,000 subjects "
                  f"(largest relative residual {resid:.1%})")
    total = table.groupby(["config", "n"])["wall_s"].sum()
    print()
    for (name, n), t in total.items():
        print(f"{name} N={n}: connectivity + stats {t / 60:.1f} min, peak "
              f"{table[(table.config == name) & (table.n == n)]['peak_gb'].max():.2f} GB")


if __name__ == "__main__":
    main()
