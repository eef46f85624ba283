"""BIDS discovery: fclab's subject-scoped file matching returns exactly what nilearn's get_bids_files
returns, on trees with and without sessions (and with a subject-level file beside sessions), for
every query discovery makes; and discovery lists each subject's folders once, not every subject's."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from nilearn.interfaces.bids import get_bids_files

from fclab.framework.extraction import bids

NAMES = [
    "{p}_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz",
    "{p}_task-rest_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.nii.gz",
    "{p}_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii",
    "{p}_task-rest_desc-preproc_bold.nii.gz",  # native space: no space- entity
    "{p}_task-rest_desc-brain_mask.nii.gz",
    "{p}_task-rest_run-1_space-T1w_desc-preproc_bold.nii.gz",
    "{p}_task-rest_run-2_space-T1w_desc-preproc_bold.nii.gz",
    "{p}_task-rest_desc-confounds_timeseries.tsv",
    "{p}_task-rest_run-1_desc-confounds_timeseries.tsv",
    "{p}_task-rest_space-fsLR_den-91k_bold.dtseries.nii",
    "{p}_task-rest_hemi-L_space-fsaverage5_bold.func.gii",
    "{p}_task-nback_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz",
]


def tree(root: Path, sessions: bool) -> list[str]:
    subjects = ["01", "02", "10"]
    for sub in subjects:
        folders = [root / f"sub-{sub}" / f"ses-{s}" / "func" for s in ("pre", "post")] if sessions else []
        folders.append(root / f"sub-{sub}" / "func")  # subject-level files beside sessions, too
        for folder in folders:
            folder.mkdir(parents=True)
            ses = folder.parent.name if folder.parent.name.startswith("ses-") else None
            prefix = f"sub-{sub}" + (f"_{ses}" if ses else "")
            for name in NAMES:
                (folder / name.format(p=prefix)).touch()
    return subjects


QUERIES = [
    ("bold", "nii.gz", [("task", "rest"), ("space", "MNI152NLin2009cAsym"), ("res", "2"), ("desc", "preproc")]),
    ("bold", "nii", [("task", "rest"), ("space", "MNI152NLin2009cAsym"), ("desc", "preproc")]),
    ("bold", "nii.gz", [("task", "rest"), ("space", ""), ("desc", "preproc")]),
    ("mask", "nii.gz", [("task", "rest"), ("space", ""), ("desc", "brain")]),
    ("bold", "nii.gz", [("task", "rest"), ("run", "2"), ("space", "T1w"), ("desc", "preproc")]),
    ("timeseries", "tsv", [("task", "rest"), ("desc", "confounds")]),
    ("timeseries", "tsv", [("task", "rest"), ("run", "1"), ("desc", "confounds")]),
    ("bold", "dtseries.nii", [("task", "rest"), ("space", "fsLR"), ("den", "91k")]),
    ("bold", "func.gii", [("task", "rest"), ("hemi", "L"), ("space", "fsaverage5")]),
]


@pytest.mark.parametrize("sessions", [False, True])
def test_matches_nilearns_get_bids_files(tmp_path, sessions):
    subjects = tree(tmp_path, sessions)
    checked = 0
    for sub, (tag, ext, filters), ses in itertools.product(subjects, QUERIES, ["pre", "post", None]):
        if ses and not sessions:
            continue
        query = ([("ses", ses)] if ses else []) + filters
        expected = get_bids_files(str(tmp_path), tag, ext, sub, "func", query)
        got = bids.bids_files(bids.subject_files(tmp_path, sub), sub, tag, ext, query)
        assert got == expected, (sub, tag, ext, query)
        checked += bool(expected)
    assert checked > 20  # most queries find files: the comparison is not of empty lists


def test_discovery_lists_only_the_subjects_own_folders(tmp_path, monkeypatch):
    """The quadratic cost was a glob of every subject's sessions per file kind and run."""
    tree(tmp_path, sessions=True)
    seen = []
    real_glob = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: seen.append((self, pattern)) or real_glob(self, pattern))
    files = bids.subject_files(tmp_path, "02")
    assert seen == [(tmp_path / "sub-02", "ses-*/func")]
    assert files and all("/sub-02/" in f for f in files)
