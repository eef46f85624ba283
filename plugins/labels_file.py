"""ROI plugin ``labels_file``: your own label image plus a TSV of its label values and names.

``path`` is a 3D NIfTI of integer labels (0 = background) in the BOLD space; ``labels`` is a TSV
with columns ``index`` and ``name``; ``names`` picks a subset (default: every row). Labels are
resampled to each BOLD grid with nearest-neighbour interpolation and averaged over voxels, like
nilearn's NiftiLabelsMasker.

For runs in each subject's own space (``space: native`` or ``T1w``), ``path`` (and ``labels``) may
hold ``{subject}``: each subject's runs use that subject's label image, for example fMRIPrep's
``sub-{subject}/func/sub-{subject}_task-rest_desc-aseg_dseg.nii.gz``, the FreeSurfer segmentation in
the BOLD's own space.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
from pydantic import Field

from fclab.api import (DataError, ParamsError, PluginParams, RoiSet, RoiWeights, hookimpl, labels_weights, load_nifti,
                       read_label_table, resample_to_grid)


class LabelsFile(RoiSet):
    name = "labels_file"
    space = "run"  # the user's image, in the runs' own space

    class Params(PluginParams):
        path: str
        labels: str
        names: list[str] = Field(default_factory=list)

    def selection(self) -> tuple[list[str], list[list[int]]]:
        table = read_label_table(Path(self.params.labels))
        lookup = dict(zip(table["name"].astype(str), table["index"].astype(int)))
        names = self.params.names or list(lookup)
        unknown = [n for n in names if n not in lookup]
        if unknown:
            raise ParamsError(f"extract.rois.labels_file.names: {unknown[0]!r} is not in {self.params.labels}")
        return names, [[lookup[n]] for n in names]

    def input_files(self) -> list[str]:
        """The label image and table; with ``{subject}``, every subject's that exists (DVC tracks them)."""
        return sorted({f for pattern in (self.params.path, self.params.labels)
                       for f in (glob.glob(glob.escape(pattern).replace("{subject}", "*"))
                                 if "{subject}" in pattern else [pattern])})

    def for_subject(self, subject: str) -> "LabelsFile":
        if "{subject}" not in self.params.path + self.params.labels:
            return self
        fill = {k: getattr(self.params, k).replace("{subject}", subject) for k in ("path", "labels")}
        return type(self)(self.params.model_copy(update=fill))

    def build(self, reference) -> RoiWeights:
        if "{subject}" in self.params.path + self.params.labels:
            raise ParamsError(f"extract.rois.labels_file.path: {self.params.path!r} names a file per subject; "
                              "it is built for one subject's runs only")
        img, _ = load_nifti(Path(self.params.path))
        if len(img.shape) != 3:
            raise DataError(f"{self.params.path}: expected a 3D label image, got shape {img.shape}")
        names, groups = self.selection()
        resampled = resample_to_grid(img, reference, "nearest", f"labels_file {self.params.path}")
        data = np.rint(np.asarray(resampled.dataobj)).astype(np.int64)
        return labels_weights(data, groups, names, f"labels_file {self.params.path}")

    def describe(self) -> str:
        image = Path(self.params.path).name
        if "{subject}" in self.params.labels:
            return f"the labels of each subject's own label image {image} (nearest-neighbour resampled)"
        names, _ = self.selection()
        if "{subject}" in self.params.path:
            return f"{', '.join(names)} from each subject's own label image {image} (nearest-neighbour resampled)"
        return f"{', '.join(names)} from the label image {Path(self.params.path).name} (nearest-neighbour resampled)"


@hookimpl
def register_rois(register):
    register(LabelsFile)
