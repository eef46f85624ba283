"""Real volumetric BOLD in native space: the two runs nitime ships, laid out as fMRIPrep-style derivatives.

nitime 0.12.1 ships ``nitime/data/fmri1.nii.gz`` and ``fmri2.nii.gz`` (the data of its seed-analysis
examples): 10 × 10 × 18 voxels of 2.08 × 2.08 × 2.3 mm, 40 volumes, TR 1.35 s (the header's time step,
in seconds, and the examples' ``TR``), int16 with an oblique affine in scanner coordinates (qform and
sform code 1). Both share one grid: two runs of one acquisition, a partial field of view (tSNR ~32).
They are raw, not preprocessed, and nothing else ships with them, so the layout adds what fMRIPrep
would write and says how each part was made:

- no ``space-`` entity: fMRIPrep's name for runs in the BOLD's own space (``extract.data.space: native``);
- the brain mask holds the voxels whose mean exceeds half the run's median voxel mean (the field of
  view lies almost all inside the brain, so nilearn's ``compute_epi_mask``, made for whole-brain EPI,
  finds no background and returns an empty mask);
- the confounds TSV holds ``global_signal`` (the mean over the mask per volume), as fMRIPrep's does,
  and no motion columns, since no motion estimates ship (so no framewise displacement);
- the ROIs are a label image per subject in the run's own space: the mask's voxels split into the
  eight octants of the field of view by voxel index (a native-space label file, as
  ``labels_file`` with ``{subject}`` reads fMRIPrep's ``desc-aseg_dseg``);
- a study needs two groups of subjects: each group holds both runs (sub-01 and sub-03 are fmri1,
  sub-02 and sub-04 fmri2), so every between-group estimate is exactly zero. This is a pipeline test
  on real signal, not a study.

    .venv/bin/python tests/real_volume_data.py OUT     # lays the derivatives out under OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

TR = 1.35
RUNS = ("fmri1.nii.gz", "fmri2.nii.gz")
SUBJECTS = {"01": ("A", RUNS[0]), "02": ("A", RUNS[1]), "03": ("B", RUNS[0]), "04": ("B", RUNS[1])}
STEM = "task-rest"
OCTANTS = [f"octant{i}" for i in range(1, 9)]


def nitime_run(name: str) -> Path:
    from fclab.framework.extraction.surface import package_file

    return package_file("nitime", name)


def octant_labels(mask: np.ndarray) -> np.ndarray:
    """Labels 1-8: the octant of the field of view each mask voxel lies in (0 outside the mask)."""
    ijk = np.indices(mask.shape)
    half = [(ijk[a] >= mask.shape[a] // 2).astype(int) for a in range(3)]
    labels = 1 + half[0] + 2 * half[1] + 4 * half[2]
    return np.where(mask, labels, 0).astype(np.int16)


def func_files(root: Path, sub: str) -> dict[str, Path]:
    func = root / f"sub-{sub}" / "func"
    prefix = func / f"sub-{sub}_{STEM}"
    return {"bold": Path(f"{prefix}_desc-preproc_bold.nii.gz"), "mask": Path(f"{prefix}_desc-brain_mask.nii.gz"),
            "confounds": Path(f"{prefix}_desc-confounds_timeseries.tsv"), "sidecar": Path(f"{prefix}_desc-preproc_bold.json"),
            "labels": Path(f"{prefix}_desc-octants_dseg.nii.gz")}


def write_real_volume_study(root: Path) -> Path:
    """The derivatives directory (and participants.tsv and octants.tsv in it); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "nitime's two BOLD runs as native-space derivatives", "BIDSVersion": "1.9.0",
         "DatasetType": "derivative", "GeneratedBy": [{"Name": "tests/real_volume_data.py"}]}))
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in SUBJECTS], "group": [g for g, _ in SUBJECTS.values()]}
                 ).to_csv(root / "participants.tsv", sep="\t", index=False)
    pd.DataFrame({"index": range(1, 9), "name": OCTANTS}).to_csv(root / "octants.tsv", sep="\t", index=False)
    for sub, (_, run) in SUBJECTS.items():
        files = func_files(root, sub)
        files["bold"].parent.mkdir(parents=True, exist_ok=True)
        source = nitime_run(run)
        files["bold"].write_bytes(source.read_bytes())
        img = nib.load(source)
        data = img.get_fdata()
        mean = data.mean(axis=-1)
        mask = mean > 0.5 * np.median(mean)
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), img.affine, img.header), files["mask"])
        labels = nib.Nifti1Image(octant_labels(mask), img.affine, img.header)
        labels.set_data_dtype(np.int16)
        nib.save(labels, files["labels"])
        pd.DataFrame({"global_signal": data[mask].mean(axis=0)}).to_csv(files["confounds"], sep="\t", index=False)
        files["sidecar"].write_text(json.dumps({"RepetitionTime": TR, "SkullStripped": False}))
    return root


def study_params(root: Path) -> dict:
    """params.yaml sections for the laid-out study: native space, the per-subject octant labels, no
    confounds and no filter (40 volumes leave too few degrees of freedom for a band-pass: the guard's
    test), two 27-s windows of the one run, no motion rule (no framewise displacement ships)."""
    return {
        "data": {"root": str(root), "space": "native", "runs": {"rest": {"task": "rest"}}},
        "rois": [{"name": "labels_file",
                  "path": str(root / "sub-{subject}" / "func" / f"sub-{{subject}}_{STEM}_desc-octants_dseg.nii.gz"),
                  "labels": str(root / "octants.tsv")}],
        "denoise": {"strategy": "none", "high_pass_hz": None, "low_pass_hz": None},
        "exclude": {"max_mean_fd": None},
        "windows": [{"name": "first", "run": "rest", "start_s": 0, "end_s": 27},
                    {"name": "second", "run": "rest", "start_s": 27, "end_s": 54}],
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(write_real_volume_study(Path(sys.argv[1])))
