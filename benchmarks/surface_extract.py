"""Extraction of one CIFTI dtseries run (fsLR 91k-style: the 91k set's 59,412 cortical vertices plus
two amygdalae) and one pair of fsaverage5 GIfTI runs, side by side with a plain reference: nibabel
loading the whole array and averaging each ROI's columns. Each timed in this process, min of 3.

    .venv/bin/python benchmarks/surface_extract.py --volumes 492
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import surface_data as sd  # noqa: E402


def best(f, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    from fclab.framework.extraction.engine import RoiBuilder, _extract_run, run_reference
    from fclab.framework.extraction.bids import discover
    from fclab.framework.params import DataParams, DenoiseParams
    from fclab.framework.pluginhost.builder import build_all

    ap = argparse.ArgumentParser()
    ap.add_argument("--volumes", type=int, default=492)
    a = ap.parse_args()
    denoise = DenoiseParams(strategy="none", high_pass_hz=None, low_pass_hz=None)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, space, rois in (
                ("cifti", "fsLR", [{"name": "cifti_structures"}, {"name": "surface_spheres"},
                                   {"name": "surface_atlas", "atlas": "yeo7"}]),
                ("gifti", "fsaverage5", [{"name": "surface_spheres"}])):
            root = Path(tmp) / kind
            sd.write_study(root, kind, n_subjects=1, T=a.volumes, n_parcels=6)
            _, runs = discover(DataParams(root=str(root), space=space, runs={"rest": {"task": "rest"}}))
            run = runs[0]
            grid, n_volumes = run_reference(run, space)
            built = RoiBuilder(build_all("roi", rois)).for_grid(grid)
            ours = best(lambda: _extract_run(run, built, denoise, None, (grid, n_volumes)))

            def reference():
                if kind == "cifti":
                    x = np.asarray(nib.load(run.bold).dataobj, np.float64)
                else:
                    x = np.hstack([np.stack([d.data for d in nib.load(f).darrays]) for f in run.files]).astype(float)
                return built.weights @ x.T

            ref = best(reference)
            size = sum(f.stat().st_size for f in run.files) / 1e6
            print(f"{kind:5s} {grid.describe()}, {a.volumes} volumes, {size:.0f} MB, {len(built.names)} ROIs: "
                  f"fclab {ours:.2f} s (QC, digest and denoising included), nibabel load + weights {ref:.2f} s")


if __name__ == "__main__":
    main()
