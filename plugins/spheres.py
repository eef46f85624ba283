"""ROI plugin ``spheres``: spheres around MNI coordinates.

The default centres are the medial prefrontal nodes of the default network from Andrews-Hanna,
Reidler, Sepulcre, Poulin & Buckner (2010), "Functional-anatomic fractionation of the brain's
default network", Neuron 65(4):550-562, doi:10.1016/j.neuron.2010.02.005 (MNI mm):
vmPFC (0, 26, -18), dmPFC (0, 52, 26) and amPFC (-6, 52, -2). That study used 8 mm spheres.

A voxel belongs to a sphere when its centre lies within ``radius_mm`` of the sphere's centre; a
sphere smaller than a voxel keeps the voxel nearest its centre, as nilearn's NiftiSpheresMasker does.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import scipy.sparse as sp
from pydantic import Field

from fclab.api import (ANDREWS_HANNA_2010_MPFC, ParamsError, PluginParams, RoiSet, RoiWeights, hookimpl, refs,
                       sphere_masks)


class Spheres(RoiSet):
    name = "spheres"

    class Params(PluginParams):
        centres: dict[str, tuple[float, float, float]] = Field(
            default_factory=lambda: dict(ANDREWS_HANNA_2010_MPFC), min_length=1)
        radius_mm: float = Field(8.0, gt=0)
        allow_overlap: bool = False

    def __init__(self, params=None):
        super().__init__(params)
        default = {k: tuple(v) for k, v in ANDREWS_HANNA_2010_MPFC.items()}
        ours = {k: tuple(v) for k, v in self.params.centres.items()}
        self.references = (refs.ANDREWS_HANNA,) if ours.items() <= default.items() else ()

    def build(self, reference) -> RoiWeights:
        names = list(self.params.centres)
        centres = np.array([self.params.centres[n] for n in names])
        ijk = nib.affines.apply_affine(np.linalg.inv(reference.affine), centres)
        outside = ((ijk < -0.5) | (ijk > np.array(reference.shape[:3]) - 0.5)).any(axis=1)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise ParamsError(f"extract.rois.spheres: sphere {names[i]!r} at "
                              f"({', '.join(f'{c:g}' for c in centres[i])}) lies outside the BOLD field of view")
        masks = sphere_masks(centres, self.params.radius_mm, reference.shape[:3], reference.affine)
        shared = masks.sum(axis=0) > 1
        if shared.any() and not self.params.allow_overlap:
            a, b = [names[i] for i in np.flatnonzero(masks[:, shared].any(axis=1))[:2]]
            raise ParamsError(
                f"extract.rois.spheres: spheres {a!r} and {b!r} overlap at radius {self.params.radius_mm:g} mm "
                "(set allow_overlap: true to keep them)"
            )
        weights = masks / masks.sum(axis=1, keepdims=True)
        return RoiWeights(names, sp.csr_matrix(weights))

    def describe(self) -> str:
        where = "; ".join(f"{n} ({', '.join(f'{c:g}' for c in xyz)})" for n, xyz in self.params.centres.items())
        return f"{self.params.radius_mm:g} mm spheres at MNI {where}"


@hookimpl
def register_rois(register):
    register(Spheres)
