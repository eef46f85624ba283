"""ROI plugin ``maps``: probabilistic or weighted maps (a 4D NIfTI, one volume per ROI).

As nilearn's NiftiMapsMasker does, the maps are resampled to each BOLD grid with linear
interpolation and the ROI signals are the least-squares fit of the data on the maps,
``(M'M)⁻¹ M' y`` over the voxels where any map is non-zero: a fixed (ROIs × voxels) operator, so
the extract stage applies it like any other ROI set. ``names`` names the volumes in order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from fclab.api import DataError, ParamsError, PluginParams, RoiSet, RoiWeights, hookimpl, load_nifti, resample_to_grid


class Maps(RoiSet):
    name = "maps"
    space = "run"  # the user's images, in the runs' own space

    class Params(PluginParams):
        path: str
        names: list[str] = Field(min_length=1)

    def input_files(self) -> list[str]:
        return [self.params.path]

    def build(self, reference) -> RoiWeights:
        img, _ = load_nifti(Path(self.params.path))
        if len(img.shape) != 4 or img.shape[3] != len(self.params.names):
            raise ParamsError(f"extract.rois.maps.names: {len(self.params.names)} names for "
                              f"{img.shape[3] if len(img.shape) == 4 else 1} maps in {self.params.path}")
        res = resample_to_grid(img, reference, "linear", f"maps {self.params.path}")
        maps = np.asarray(res.dataobj, dtype=np.float64).reshape(-1, img.shape[3])
        support = np.flatnonzero((maps != 0).any(axis=1))
        M = maps[support]
        empty = [n for n, col in zip(self.params.names, M.T) if not col.any()]
        if empty:
            raise DataError(f"{self.params.path}: map {empty[0]!r} has no voxels on the BOLD grid")
        op = np.linalg.pinv(M)  # (ROIs, support voxels): the least-squares operator
        n = int(np.prod(reference.shape[:3]))
        w = sp.csr_matrix((op.ravel(), (np.repeat(np.arange(op.shape[0]), op.shape[1]), np.tile(support, op.shape[0]))),
                          shape=(op.shape[0], n))
        return RoiWeights(list(self.params.names), w)

    def describe(self) -> str:
        return (f"maps {', '.join(self.params.names)} from {Path(self.params.path).name} "
                "(least-squares fit of the data on the maps, as NiftiMapsMasker)")


@hookimpl
def register_rois(register):
    register(Maps)
