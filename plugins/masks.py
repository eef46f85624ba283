"""ROI plugin ``masks``: one binary NIfTI per ROI (``masks: {name: path}``), in the BOLD space.

Each mask is resampled to the BOLD grid with nearest-neighbour interpolation; the ROI signal is the
mean over its non-zero voxels. Masks may overlap (a voxel then counts in each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from fclab.api import DataError, PluginParams, RoiSet, RoiWeights, hookimpl, load_nifti, resample_to_grid


class Masks(RoiSet):
    name = "masks"
    space = "run"  # the user's images, in the runs' own space

    class Params(PluginParams):
        masks: dict[str, str] = Field(min_length=1)

    def input_files(self) -> list[str]:
        return list(self.params.masks.values())

    def build(self, reference) -> RoiWeights:
        rows = []
        for name, path in self.params.masks.items():
            img, _ = load_nifti(Path(path))
            if len(img.shape) != 3:
                raise DataError(f"{path}: expected a 3D mask, got shape {img.shape}")
            res = resample_to_grid(img, reference, "nearest", f"masks {path}")
            vox = np.flatnonzero(np.asarray(res.dataobj).ravel() != 0)
            if vox.size == 0:
                raise DataError(f"{path}: mask {name!r} has no voxels on the BOLD grid")
            rows.append(vox)
        n = int(np.prod(reference.shape[:3]))
        data = np.concatenate([np.full(v.size, 1.0 / v.size) for v in rows])
        r = np.concatenate([np.full(v.size, i) for i, v in enumerate(rows)])
        w = sp.csr_matrix((data, (r, np.concatenate(rows))), shape=(len(rows), n))
        return RoiWeights(list(self.params.masks), w)

    def describe(self) -> str:
        return f"binary masks {', '.join(f'{k} ({Path(v).name})' for k, v in self.params.masks.items())}"


@hookimpl
def register_rois(register):
    register(Masks)
