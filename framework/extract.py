"""Stage ``extract``: find runs, denoise, and turn each run into ROI time series plus QC."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fclab.framework import runcache
from fclab.framework.contracts import RoiSet, RoiWeights
from fclab.framework.errors import DataError, ParamsError, PluginError
from fclab.framework.executor import Executor, as_executor, progress
from fclab.framework.io import file_digest
from fclab.framework.params import DataParams, DenoiseParams, ExtractParams, check_label, plugin_spec
from fclab.framework.registry import get_registry
from fclab.framework.stream import VolumeStream, flat_index
from fclab.framework.surface import (FSAVERAGE_VERTICES, Grayordinates, SurfaceStream, cifti_grayordinates, cifti_step,
                                     element_coordinates, gifti_shape, is_surface_space, label_image, load_cifti,
                                     surface_axis)

TIMESERIES_KEYS = ["subject", "run", "volume", "time_s"]
MIN_CLEAN_VOLUMES = 3  # a run censored below this is excluded at extraction
QC_VOXELS = 300  # in-mask voxels sampled per run for DVARS and the carpet (nilearn filters them one by one)
CARPET_ROWS = 150  # of those, the rows of the stored carpet
CARPET_Z = 3.0  # carpet values: each voxel's z-score, clipped to ±CARPET_Z, in CARPET_LEVELS steps
CARPET_LEVELS = 15  # odd, so the mean (z = 0) is a level


@dataclass(frozen=True)
class RunInput:
    subject: str
    group: str
    run: str  # the run's key in params (e.g. "baseline")
    bold: Path  # the BOLD file (GIfTI: the first hemisphere's)
    mask: Path | None  # the brain mask (None for surface and CIFTI data)
    confounds: Path
    events: Path | None
    tr: float
    kind: str = "nifti"  # nifti, cifti (a dtseries) or gifti (hemisphere runs)
    bold_files: tuple[Path, ...] = ()  # GIfTI: each hemisphere's file, in element order
    hemis: tuple[str, ...] = ()  # GIfTI: their hemispheres (L, R)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every BOLD file of the run."""
        return self.bold_files or (self.bold,)

    @property
    def image(self):
        """What nilearn's confound loader takes: the BOLD path, or the hemisphere paths. The loader
        only reads the name, to find the confounds file beside it, and accepts gzipped NIfTI names
        only: a gunzipped run is named as its .nii.gz."""
        if len(self.bold_files) > 1:
            return [str(f) for f in self.bold_files]
        return str(self.bold) + (".gz" if self.kind == "nifti" and self.bold.name.endswith(".nii") else "")


def _one(files: list[str], what: str, where: str) -> Path:
    if not files:
        raise DataError(f"{where}: no {what} found")
    if len(files) > 1:
        raise DataError(f"{where}: {len(files)} {what} files match ({', '.join(Path(f).name for f in files)})")
    return Path(files[0])


def read_tsv(path: Path, columns: tuple[str, ...] = (), **kwargs) -> pd.DataFrame:
    """A BIDS TSV (``n/a`` missing); a missing, empty, unparsable or non-UTF-8 file, or a missing
    column of ``columns``, is a DataError naming the file."""
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a", ""], keep_default_na=False, **kwargs)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: empty file (no header row)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable TSV ({str(exc).splitlines()[0]})") from exc
    for col in columns:
        if col not in table.columns:
            raise DataError(f"{path}: no column {col!r}")
    return table


def read_events(path: Path) -> pd.DataFrame:
    """An events.tsv with numeric, finite onset and duration and a trial_type for every row."""
    table = read_tsv(path, ("onset", "duration", "trial_type"), dtype={"trial_type": str})
    for col in ("onset", "duration"):
        values = pd.to_numeric(table[col], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(float)) | (values.to_numpy(float) < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raw = table[col].iloc[i]
            raise DataError(f"{path}: row {i + 1}: {col} {'n/a' if pd.isna(raw) else repr(raw)} is not a number ≥ 0")
        table[col] = values.astype(float)
    if table["trial_type"].isna().any():
        i = int(np.flatnonzero(table["trial_type"].isna())[0])
        raise DataError(f"{path}: row {i + 1}: no trial_type")
    return table


def event_onsets(path: Path | None, names, where: str) -> dict[str, float]:
    """The onset of each event type in ``names``: exactly one event of each must be in ``path``."""
    if not names:
        return {}
    if path is None:
        raise DataError(f"{where}: no events.tsv (needed for the event {sorted(names)[0]!r} of connectivity.windows; "
                        "fMRIPrep does not copy them: set extract.data.events_root to the raw BIDS dataset)")
    table = read_events(path)
    out = {}
    for name in sorted(names):
        rows = table[table["trial_type"] == name]
        if rows.empty:
            raise DataError(f"{path}: no event {name!r} (needed by connectivity.windows)")
        if len(rows) > 1:
            raise DataError(f"{path}: {len(rows)} {name!r} events (onsets "
                            f"{', '.join(f'{x:g}' for x in rows['onset'])} s); windows need exactly one")
        out[name] = float(rows["onset"].iloc[0])
    return out


def read_participants(data: DataParams) -> pd.DataFrame:
    root = Path(data.root)
    path = root / data.participants
    if not path.is_file():
        raise DataError(f"{path}: participants file not found")
    table = read_tsv(path, ("participant_id", data.group_column), dtype={"participant_id": str})
    if table.empty:
        raise DataError(f"{path}: no participants")
    ids = table["participant_id"]
    for i, pid in enumerate(ids):
        check_label(pid, f"{path}: row {i + 1}: participant_id", DataError)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(f"{path}: {dup.iloc[0]} is listed more than once")
    missing = table[data.group_column].isna()
    if missing.any():
        sub = table.loc[missing, "participant_id"].iloc[0]
        raise DataError(f"{path}: {sub} has no value in group column {data.group_column!r}")
    table = table.rename(columns={data.group_column: "group"})
    table["group"] = table["group"].astype(str)
    for pid, g in zip(ids, table["group"]):
        check_label(g, f"{path}: {pid}: group value", DataError)
    table["subject"] = table["participant_id"].str.removeprefix("sub-")
    if data.group_map:
        unmapped = ~table["group"].isin(list(data.group_map))
        if unmapped.any():
            r = table[unmapped].iloc[0]
            raise DataError(f"{path}: sub-{r['subject']} has group value {r['group']!r}, which "
                            f"extract.data.group_map does not map (maps {', '.join(map(repr, data.group_map))})")
        table["group"] = table["group"].map(data.group_map)
    include, exclude = ([x.removeprefix("sub-") for x in v] for v in (data.include, data.exclude))
    for key, labels in (("include", include), ("exclude", exclude)):
        unknown = sorted(set(labels) - set(table["subject"]))
        if unknown:
            raise DataError(f"extract.data.{key}: no subject {', '.join(unknown)} in {path}")
    if include:
        table = table[table["subject"].isin(include)]
    table = table[~table["subject"].isin(exclude)].reset_index(drop=True)
    return table


def discover(data: DataParams, problems: list | None = None) -> tuple[pd.DataFrame, list[RunInput]]:
    """The participants table and every run to extract, with their files, via nilearn's BIDS tools.

    With a ``problems`` list, a run whose files are missing is reported there as (subject, group,
    run key, message) and left out instead of raising.
    """
    root = Path(data.root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (run `fclab simulate` for the default study)")
    if data.events_root and not Path(data.events_root).is_dir():
        raise DataError(f"{data.events_root}: extract.data.events_root is not a directory")
    participants = read_participants(data)
    runs = []
    for sub, group in zip(participants["subject"], participants["group"]):
        for key, sel in data.runs.items():
            try:
                runs.append(_find_run(root, data, sub, group, key, sel))
            except DataError as exc:
                if problems is None:
                    raise
                problems.append((sub, str(group), key, str(exc)))
    return participants, runs


def _find_run(root: Path, data: DataParams, sub: str, group, key: str, sel) -> RunInput:
    """The files of one run (BIDS entities from params), located with nilearn.interfaces.bids."""
    filters = ([("ses", sel.session)] if sel.session else []) + [("task", sel.task)] + (
        [("run", sel.run)] if sel.run else [])
    where = f"sub-{sub} run {key!r}"
    from nilearn.interfaces.bids import get_bids_files  # here, not at the top: importing nilearn costs ~1 s

    fmt = data.format if data.format != "auto" else ("nifti" if not is_surface_space(data.space) else "surface")
    if fmt == "nifti":
        image = [("space", data.space)] + ([("res", data.res)] if data.res else [])
        def nifti(suffix, entities):  # gzipped as fMRIPrep writes them, or gunzipped (memory-mapped)
            return [f for ext in ("nii.gz", "nii")
                    for f in get_bids_files(str(root), suffix, ext, sub, "func", filters + image + entities)]

        found = nifti("bold", [("desc", "preproc")])
        if not found:
            wanted = ", ".join(f"{k} {v!r}" for k, v in filters + image)
            raise DataError(f"{where}: no preprocessed BOLD found for {wanted} ({available_bold(root, sub)})")
        bold = _one(found, "preprocessed BOLD", where)
        mask = _one(nifti("mask", [("desc", "brain")]), "brain mask", where)
        extra = {}
    else:
        bold, mask, extra = _find_surface_run(root, data, sub, filters, where, fmt, get_bids_files)
    conf = _one(get_bids_files(str(root), "timeseries", "tsv", sub, "func",
                               filters + [("desc", "confounds")]), "confounds TSV", where)
    roots = ([Path(data.events_root)] if data.events_root else []) + [root]
    events = find_events(roots, sub, sel)
    tr = _repetition_time(sidecar_json(bold))
    return RunInput(sub, str(group), key, bold, mask, conf, events, tr, **extra)


def _find_surface_run(root: Path, data: DataParams, sub: str, filters, where: str, fmt: str, get_bids_files):
    """(BOLD path, None, RunInput fields) of a CIFTI dtseries or of GIfTI hemisphere runs."""
    image = [("space", data.space)] + ([("den", data.den)] if data.den else [])
    cifti = get_bids_files(str(root), "bold", "dtseries.nii", sub, "func", filters + image) if fmt != "gifti" else []
    gifti = {h: get_bids_files(str(root), "bold", "func.gii", sub, "func", filters + [("hemi", h)] + image)
             for h in data.hemi} if fmt != "cifti" else {}
    has_gifti = bool(gifti) and all(gifti.values())
    wanted = ", ".join(f"{k} {v!r}" for k, v in filters + image)
    if cifti and has_gifti:
        raise DataError(f"{where}: both a CIFTI dtseries and GIfTI hemispheres match {wanted}; "
                        "set extract.data.format to cifti or gifti")
    if cifti:
        return _one(cifti, "CIFTI dtseries", where), None, {"kind": "cifti"}
    if has_gifti:
        files = tuple(_one(gifti[h], f"hemi-{h} GIfTI BOLD", where) for h in data.hemi)
        return files[0], None, {"kind": "gifti", "bold_files": files, "hemis": tuple(data.hemi)}
    partial = [h for h, f in gifti.items() if f]
    if partial:
        missing = [h for h in data.hemi if h not in partial]
        raise DataError(f"{where}: GIfTI BOLD for hemi-{', hemi-'.join(partial)} but none for hemi-{', hemi-'.join(missing)} "
                        f"({wanted}; extract.data.hemi lists {', '.join(data.hemi)})")
    what = {"cifti": "CIFTI dtseries", "gifti": "GIfTI BOLD"}.get(fmt, "CIFTI dtseries or GIfTI BOLD")
    raise DataError(f"{where}: no {what} found for {wanted} ({available_bold(root, sub)})")


BOLD_SUFFIXES = ("_bold.nii.gz", "_bold.nii", "_bold.dtseries.nii", "_bold.func.gii")


def sidecar_json(bold: Path) -> Path:
    """The BIDS sidecar of a BOLD file (its name with .json for the extension)."""
    name = bold.name
    for ext in (".nii.gz", ".dtseries.nii", ".func.gii", ".nii"):
        if name.endswith(ext):
            return bold.with_name(name.removesuffix(ext) + ".json")
    return bold.with_suffix(".json")


def check_cifti_step(img: nib.Cifti2Image, path: Path, tr: float) -> None:
    """A dtseries' series step must agree with the sidecar's RepetitionTime."""
    step = cifti_step(img)
    if step is not None and step > 0 and abs(step - tr) > 1e-3 * tr:
        raise DataError(f"{path}: series step {step:g} s differs from RepetitionTime {tr:g} s in "
                        f"{sidecar_json(path).name}")


def available_bold(root: Path, sub: str) -> str:
    """What BOLD files a subject has, entity by entity, so a wrong space, task, run, session, res,
    den or hemi in params names the values that exist."""
    files = sorted(f for f in (root / f"sub-{sub}").glob("**/func/*_bold.*")
                   if f.name.endswith(("_desc-preproc_bold.nii.gz", "_desc-preproc_bold.nii") + BOLD_SUFFIXES[2:]))
    if not files:
        return (f"sub-{sub} has no *_desc-preproc_bold.nii[.gz], *_bold.dtseries.nii or *_bold.func.gii "
                f"under {root}")
    ents = [e for e in (_entities(f.name, next(s for s in BOLD_SUFFIXES if f.name.endswith(s))) for f in files) if e]
    parts = []
    for key in ("ses", "task", "run", "space", "res", "den", "hemi"):
        values = sorted({e[key] for e in ents if key in e})
        if values:
            parts.append(f"{key} {', '.join(values)}")
    return f"sub-{sub} has {'; '.join(parts)}"


def _entities(name: str, suffix: str) -> dict[str, str] | None:
    """BIDS key-value entities of a file name ending in ``suffix`` (None if it is not one)."""
    if not name.endswith(suffix):
        return None
    parts = name.removesuffix(suffix).split("_")
    if not all(p.count("-") >= 1 for p in parts):
        return None
    return dict(p.split("-", 1) for p in parts)


def find_events(roots: list[Path], sub: str, sel) -> Path | None:
    """The events.tsv that applies to one run, by BIDS's inheritance principle. Each root is searched
    in turn (the raw dataset, ``extract.data.events_root``, before the derivatives): the level nearest
    the run first (the subject's [session's] func/, then the [session and] subject directory, then the
    dataset's top level, where ``task-rest_run-2_events.tsv`` applies to every subject), and at one
    level the file naming the most of the run's entities (sub, ses, task, run; task required) and no
    other value. Two equally specific files are an error."""
    run = {"sub": sub, "task": sel.task, **({"ses": sel.session} if sel.session else {}),
           **({"run": sel.run} if sel.run else {})}
    for root in roots:
        subject = root / f"sub-{sub}"
        levels = ([subject / f"ses-{sel.session}" / "func", subject / f"ses-{sel.session}"] if sel.session else [])
        for level in [*levels, subject / "func", subject, root]:
            if not level.is_dir():
                continue
            found = []
            for f in level.glob("*_events.tsv"):
                ents = _entities(f.name, "_events.tsv")
                if ents and "task" in ents and all(run.get(k) == v for k, v in ents.items()):
                    found.append((len(ents), f))
            if found:
                found.sort(key=lambda t: (-t[0], t[1].name))
                if len(found) > 1 and found[0][0] == found[1][0]:
                    raise DataError(f"{level}: {found[0][1].name} and {found[1][1].name} both apply to sub-{sub} "
                                    f"task {sel.task!r}{f' run {sel.run!r}' if sel.run else ''}")
                return found[0][1]
    return None


def check_inputs(p: ExtractParams, windows=()) -> tuple[pd.DataFrame, list[str]]:
    """Every input ``extract`` will read, checked from headers and tables without computing anything:
    image headers and grids, TR, confounds (rows, values, what the strategy needs), the filter against
    the Nyquist frequency, and the events the ``windows`` (fixed and sliding specs) need, with each
    window inside its run.

    Returns one row per run found (subject, group, run, TR, volumes) and every problem as a line.
    """
    found: list = []
    participants, runs = discover(p.data, found)
    problems = [msg for *_, msg in found]
    rows = []
    for run in runs:
        row = {"subject": run.subject, "group": run.group, "run": run.run, "tr_s": run.tr, "n_volumes": np.nan}
        try:
            if run.kind == "nifti":
                bold, mask = (_header(f) for f in (run.bold, run.mask))
                if len(bold.shape) != 4:
                    raise DataError(f"{run.bold}: expected a 4D BOLD image, got shape {bold.shape}")
                T = bold.shape[3]
                if mask.shape[:3] != bold.shape[:3] or not np.allclose(mask.affine, bold.affine, atol=1e-4):
                    raise DataError(f"{run.mask}: grid differs from {run.bold.name} (shape or affine)")
            else:
                T = run_reference(run, p.data.space)[1]
            row["n_volumes"] = T
            check_filter(run.tr, p.denoise, run.bold)
            run_confounds(run, p.denoise, T)
            mine = [w for w in windows if w.run == run.run]
            onsets = event_onsets(run.events, {w.event for w in mine if w.event},
                                  f"sub-{run.subject} run {run.run!r}")
            for w in mine:
                lo, hi = w.bounds_s()
                if w.event and lo is not None:
                    start, end = onsets[w.event] + lo, onsets[w.event] + hi
                    if start < -1e-9 or end > T * run.tr + 1e-6:
                        raise DataError(f"{run.events}: window {w.name!r} ({lo:g} to {hi:g} s from the {w.event!r} "
                                        f"onset at {onsets[w.event]:g} s) lies outside the run (0-{T * run.tr:g} s)")
        except DataError as exc:
            problems.append(str(exc))
        rows.append(row)
    return pd.DataFrame(rows, columns=["subject", "group", "run", "tr_s", "n_volumes"]), problems


def run_reference(run: RunInput, space: str) -> tuple[nib.Nifti1Image | Grayordinates, int]:
    """(the grid ROIs are placed on, number of volumes) of a run, from headers: the brain mask's
    NIfTI header for volumes, the run's grayordinates for CIFTI and GIfTI data. Errors name the file."""
    if run.kind == "nifti":
        return _header(run.mask), _header(run.bold).shape[-1]
    if run.kind == "cifti":
        img = load_cifti(run.bold)
        check_cifti_step(img, run.bold, run.tr)
        return cifti_grayordinates(img, space), img.shape[0]
    shapes = [gifti_shape(f) for f in run.bold_files]
    for f, (_, t) in zip(run.bold_files[1:], shapes[1:]):
        if t != shapes[0][1]:
            raise DataError(f"{f}: {t} time points, {run.bold.name} has {shapes[0][1]}")
    expected = FSAVERAGE_VERTICES.get(space)
    for f, (n, _) in zip(run.bold_files, shapes):
        if expected and n != expected:
            raise DataError(f"{f}: {n} vertices, but space {space} has {expected} per hemisphere")
    return Grayordinates(space, surface_axis(dict(zip(run.hemis, (n for n, _ in shapes))))), shapes[0][1]


def _header(path: Path) -> nib.Nifti1Image:
    try:
        return nib.load(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from exc


def _repetition_time(sidecar: Path) -> float:
    try:
        tr = json.loads(sidecar.read_text())["RepetitionTime"]
    except FileNotFoundError as exc:
        raise DataError(f"{sidecar}: sidecar JSON not found (it gives the TR)") from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{sidecar}: no valid RepetitionTime") from exc
    if isinstance(tr, bool) or not isinstance(tr, (int, float)) or not np.isfinite(tr) or tr <= 0:
        raise DataError(f"{sidecar}: RepetitionTime must be a positive number of seconds, got {tr!r}")
    if tr > 100:
        raise DataError(f"{sidecar}: RepetitionTime {tr:g} s looks like milliseconds (BIDS gives seconds)")
    return float(tr)


def check_filter(tr: float, denoise: DenoiseParams, where) -> None:
    """The band-pass cut-offs must lie below the run's Nyquist frequency (nilearn would drop them with a
    warning, and the methods text would state a filter that was not applied)."""
    nyquist = 0.5 / tr
    for key in ("low_pass_hz", "high_pass_hz"):
        f = getattr(denoise, key)
        if f is not None and f >= nyquist:
            raise DataError(f"{where}: extract.denoise.{key} {f:g} Hz is not below the Nyquist frequency "
                            f"{nyquist:g} Hz of TR {tr:g} s")


def load_nifti(path: Path) -> tuple[nib.Nifti1Image, str]:
    """The image (header read, data loaded on access) and the file's digest; errors name the file.

    The digest streams the file, and the image is not built from an in-memory copy of the
    compressed bytes, so a run's peak memory is its data array, not twice it.
    """
    try:
        digest = file_digest(path)
        img = nib.load(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from exc
    return img, digest


class RoiBuilder:
    """Builds the study's ROI set (every configured ROI plugin, in order) once per voxel grid."""

    def __init__(self, specs):
        registry = get_registry()
        self.plugins: list[RoiSet] = []
        for i, spec in enumerate(specs):
            name, opts = plugin_spec(spec, f"extract.rois[{i}]")
            cls = registry.get("roi", name, f"extract.rois[{i}]")
            self.plugins.append(cls(cls.Params.model_validate(opts)))
        self._cache: dict[tuple, RoiWeights] = {}

    def for_grid(self, reference: nib.Nifti1Image | Grayordinates) -> RoiWeights:
        surface = isinstance(reference, Grayordinates)
        key = reference.key if surface else (reference.shape[:3], np.round(reference.affine, 6).tobytes())
        if key not in self._cache:
            data = "surface" if surface else "volume"
            for i, plugin in enumerate(self.plugins):
                if data not in plugin.data:
                    others = ", ".join(sorted(n for n, c in get_registry().rois().items() if data in c.data))
                    raise ParamsError(f"extract.rois[{i}]: ROI set {plugin.name!r} places ROIs on "
                                      f"{' and '.join(plugin.data)} data, and these runs are {data} data "
                                      f"({reference.describe() if surface else 'NIfTI'}); ROI sets for {data} data: "
                                      f"{others or 'none installed'}")
            parts = [plugin.build(reference) for plugin in self.plugins]
            n = reference.n if surface else int(np.prod(reference.shape[:3]))
            for plugin, part in zip(self.plugins, parts):
                if part.weights.shape[1] != n:
                    raise PluginError(f"ROI set {plugin.name!r}: weights over {part.weights.shape[1]} elements for "
                                      f"a grid of {n}")
            names = [n for part in parts for n in part.names]
            for n in names:
                check_label(n, "extract.rois: ROI name")
                if n in TIMESERIES_KEYS:
                    raise ParamsError(f"extract.rois: ROI name {n!r} is reserved (a column of timeseries.parquet: "
                                      f"{', '.join(TIMESERIES_KEYS)}); rename the ROI")
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ParamsError(f"extract.rois: ROI names defined twice: {', '.join(dup)}")
            weights = sp.vstack([part.weights for part in parts]).tocsr()
            self._cache[key] = RoiWeights(names, weights)
        return self._cache[key]


def run_confounds(run: RunInput, denoise: DenoiseParams, n_volumes: int):
    """(confounds or None, sample mask or None, framewise displacement) of one run.

    Errors name the confounds file: too few or too many rows, a column the strategy needs, a missing
    value after the first row (only derivatives may start with n/a), a framewise_displacement column
    missing (run QC and exclusion use it).
    """
    path = run.confounds
    table = read_tsv(path, ("framewise_displacement",))
    if len(table) != n_volumes:
        raise DataError(f"{path}: {len(table)} rows for {n_volumes} volumes in {run.bold.name}")
    fd = pd.to_numeric(table["framewise_displacement"], errors="coerce")
    bad_fd = np.flatnonzero(~np.isfinite(fd.to_numpy(float)[1:]))
    if bad_fd.size:
        i = 1 + int(bad_fd[0])
        raise DataError(f"{path}: row {i + 1}: framewise_displacement {table['framewise_displacement'].iloc[i]!r} "
                        "is not a number")
    confounds, sample_mask = None, None
    if denoise.strategy != "none":
        import warnings

        from nilearn.interfaces.fmriprep import load_confounds_strategy

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)  # a strategy option it ignores is an error
                confounds, sample_mask = load_confounds_strategy(
                    run.image, denoise_strategy=denoise.strategy, **denoise.strategy_options)
        except (ValueError, KeyError, FileNotFoundError, TypeError, UserWarning) as exc:
            raise DataError(f"{path}: cannot build {denoise.strategy!r} confounds ({str(exc).splitlines()[0]})") from exc
        if len(confounds) != n_volumes:
            raise DataError(f"{path}: {len(confounds)} rows for {n_volumes} volumes in {run.bold.name}")
        bad = ~np.isfinite(confounds.to_numpy(float))
        if sample_mask is not None:  # censored volumes are left out of the regression
            bad[np.setdiff1d(np.arange(len(bad)), sample_mask)] = False
        if bad.any():
            i, j = (int(x[0]) for x in np.nonzero(bad))
            raise DataError(f"{path}: row {i + 1}: column {confounds.columns[j]!r} has no value (only the first "
                            "row of derivatives may be n/a)")
    if denoise.columns:
        extra = custom_confounds(table, denoise.columns, path)
        confounds = extra if confounds is None else pd.concat([confounds, extra.drop(
            columns=[c for c in extra.columns if c in confounds.columns])], axis=1)
    return confounds, sample_mask, fd


def custom_confounds(table: pd.DataFrame, columns: list[str], path: Path) -> pd.DataFrame:
    """The named columns of a run's confounds table (read from ``path``), leading n/a (derivatives) as 0;
    errors name file and column."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no confound column {missing[0]!r} (extract.denoise.columns)")
    values = table[columns].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(values.iloc[1:].to_numpy(float))
    if bad.any():
        i, j = (int(x[0]) for x in np.nonzero(bad))
        raise DataError(f"{path}: row {i + 2}: column {columns[j]!r} has no numeric value "
                        "(only the first row of derivatives may be n/a)")
    return values.fillna(0.0)


def _read_volume_run(run: RunInput, rois: RoiWeights, cols: np.ndarray, denoise: DenoiseParams):
    """``read_run`` of a NIfTI run, whether each ROI voxel ``cols`` lies in the brain mask, the number
    of volumes and the files' digests."""
    bold = _header(run.bold)
    mask, mask_digest = load_nifti(run.mask)
    if bold.ndim != 4:
        raise DataError(f"{run.bold}: expected a 4D BOLD image, got shape {bold.shape}")
    if mask.shape[:3] != bold.shape[:3] or not np.allclose(mask.affine, bold.affine, atol=1e-4):
        raise DataError(f"{run.mask}: grid differs from {run.bold.name} (shape or affine)")
    ijk = np.unravel_index(cols, bold.shape[:3])
    mask_data = np.asarray(mask.dataobj)
    qc_index = voxel_sample(mask_data, QC_VOXELS)
    read = read_run(run.bold, bold, rois.weights[:, cols], cols, qc_index, denoise.smoothing_fwhm)
    return read, mask_data[ijk] > 0, bold.shape[3], {str(run.bold): read[3], str(run.mask): mask_digest}


def _read_surface_run(run: RunInput, rois: RoiWeights, cols: np.ndarray, denoise: DenoiseParams,
                      grid: Grayordinates, T: int):
    """As ``_read_volume_run`` for CIFTI and GIfTI runs. With no brain mask, an element "in the brain"
    is one whose values are not all 0 (fMRIPrep leaves the medial wall at 0 on fsaverage)."""
    if denoise.smoothing_fwhm:
        raise ParamsError(f"extract.denoise.smoothing_fwhm: volume smoothing does not apply to {run.kind} data "
                          f"({run.bold.name}); set it to null")
    if rois.weights.shape[1] != grid.n:
        raise DataError(f"{run.bold}: {grid.n} grayordinates, but the ROI set was built for {rois.weights.shape[1]}")
    stream = SurfaceStream(run.files, run.kind, T, grid.n)
    qc_index = voxel_sample(np.ones(grid.n), QC_VOXELS)
    read = read_run(run.bold, None, rois.weights[:, cols], cols, qc_index, None, stream=stream)
    return read, ~read[1][2], T, dict(stream.file_digests)


def _extract_run(run: RunInput, rois: RoiWeights, denoise: DenoiseParams, min_coverage: float | None = None,
                 surface: tuple[Grayordinates, int] | None = None):
    """One run's tables. ``surface``: a CIFTI or GIfTI run's (grayordinates, volumes), from
    ``run_reference`` (its headers are read once, where the study's grids are found)."""
    cols = np.unique(rois.weights.indices)
    if run.kind == "nifti":
        read, inside, T, digests = _read_volume_run(run, rois, cols, denoise)
    else:
        read, inside, T, digests = _read_surface_run(run, rois, cols, denoise, *surface)
    raw_signals, voxel_stats, qc_voxels, _ = read

    check_filter(run.tr, denoise, run.bold)
    confounds, sample_mask, fd = run_confounds(run, denoise, T)
    kept = np.arange(T) if sample_mask is None else np.asarray(sample_mask)
    # Censoring that leaves almost nothing (nilearn cannot clean fewer than 2 volumes): the run is
    # excluded with the reason, and its windows become missing, rather than stopping the study.
    over_censored = kept.size < MIN_CLEAN_VOLUMES
    if over_censored:
        cleaned, kept = np.empty((0, len(rois.names))), kept[:0]
    else:
        cleaned = clean(raw_signals, confounds, sample_mask, run.tr, denoise, denoise.standardize)
    ts = pd.DataFrame(cleaned, columns=rois.names)
    qc_clean = None if over_censored or not len(qc_voxels) else clean(  # the same cleaning, in signal units
        qc_voxels.T, confounds, sample_mask, run.tr, denoise, None).T
    ts.insert(0, "time_s", kept * run.tr)
    ts.insert(0, "volume", kept.astype(np.int32))
    ts.insert(0, "run", run.run)
    ts.insert(0, "subject", run.subject)

    mean, sd, bad = voxel_stats
    tsnr = np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 0)
    support = rois.support[:, cols]
    n_vox = np.asarray(support.sum(axis=1)).ravel()
    per_roi = lambda v: np.asarray(support @ v).ravel() / np.maximum(n_vox, 1)  # noqa: E731
    roi_qc = pd.DataFrame({
        "subject": run.subject, "run": run.run, "roi": rois.names, "n_voxels": n_vox.astype(np.int32),
        "coverage": per_roi(inside.astype(float)), "tsnr": per_roi(tsnr), "frac_bad": per_roi(bad.astype(float)),
    })
    cover = roi_qc["coverage"].to_numpy()
    if min_coverage is None:
        outside = cover == 0
        if outside.any():
            roi = roi_qc['roi'][np.flatnonzero(outside)[0]]
            raise DataError(f"{run.mask}: ROI {roi!r} has no voxel inside sub-{run.subject}'s brain mask"
                            if run.mask else f"{run.bold}: every value of ROI {roi!r} is 0 (no signal)")
        roi_qc["missing"], roi_qc["reason"] = False, ""
    else:
        low = cover < min_coverage
        roi_qc["missing"] = low
        roi_qc["reason"] = [f"coverage {c:.2f} < min_coverage {min_coverage:g}" if m else ""
                            for c, m in zip(cover, low)]
        for name in roi_qc.loc[low, "roi"]:
            ts[name] = np.nan  # the ROI keeps its column, with no values for this run

    censored = np.ones(T, bool)
    censored[kept] = False
    motion = pd.DataFrame({"subject": run.subject, "run": run.run, "volume": np.arange(T, dtype=np.int32),
                           "framewise_displacement": fd.to_numpy(np.float64), "censored": censored,
                           "dvars_raw": dvars(qc_voxels, np.arange(T), T),
                           "dvars_clean": dvars(qc_voxels, kept, T, qc_clean)})
    carpet = {"subject": run.subject, "run": run.run, "n_volumes": T,
              "png": carpet_png(qc_voxels, kept, T, qc_clean)}
    run_qc = {
        "subject": run.subject, "group": run.group, "run": run.run, "bold": run.bold.name,
        "tr_s": run.tr, "n_volumes": T, "n_retained": int(kept.size),
        "mean_fd": float(np.nanmean(fd)), "max_fd": float(np.nanmax(fd)),
        "confounds": "" if confounds is None else ",".join(map(str, confounds.columns)),
        "excluded": over_censored,
        "reason": (f"censored by the {denoise.strategy!r} strategy: {T - len(sample_mask)} of {T} volumes, "
                   f"fewer than {MIN_CLEAN_VOLUMES} left") if over_censored else "",
    }
    events = None
    if run.events is not None:
        ev = read_events(run.events)
        events = pd.DataFrame({"subject": run.subject, "run": run.run, "trial_type": ev["trial_type"].astype(str),
                               "onset_s": ev["onset"].astype(float), "duration_s": ev["duration"].astype(float)})
    digests[str(run.confounds)] = file_digest(run.confounds)
    if run.events is not None:
        digests[str(run.events)] = file_digest(run.events)
    return ts, roi_qc, run_qc, events, digests, motion, carpet


def clean(x: np.ndarray, confounds, sample_mask, tr: float, denoise: DenoiseParams, standardize) -> np.ndarray:
    """nilearn's ``signal.clean`` of (T, n) signals with the run's confounds and the denoise settings.

    ``butterworth__copy=True`` makes nilearn filter all columns in one ``sosfiltfilt`` call instead
    of a Python loop over columns: the same numbers (checked bit for bit), ~10x faster at 400 columns.
    """
    from nilearn import signal

    return signal.clean(x, confounds=None if confounds is None else confounds.to_numpy(), sample_mask=sample_mask,
                        t_r=tr, detrend=denoise.detrend, standardize=standardize, low_pass=denoise.low_pass_hz,
                        high_pass=denoise.high_pass_hz, butterworth__copy=True)


def read_run(path: Path, img: nib.Nifti1Image | None, weights: sp.csr_matrix, cols: np.ndarray, qc_index: np.ndarray,
             smoothing_fwhm: float | None, stream: VolumeStream | SurfaceStream | None = None):
    """One streamed pass over a run's BOLD file (``stream.VolumeStream``): the raw ROI signals
    ``(weights @ voxels).T`` (T, R) over the voxels ``cols``, those voxels' mean, SD and all-zero flag
    over time, the (n, T) values of the QC voxels ``qc_index`` and the file's digest.

    Values are float64 of the file's values after the header's scaling; with ``smoothing_fwhm``
    each volume is first smoothed as nilearn's ``smooth_img`` does (volume by volume, so the same
    numbers). The 4D image is never held in memory, only one slab of volumes at a time. ``stream``
    replaces the NIfTI stream of ``img`` (surface data: ``surface.SurfaceStream``).
    """
    stream = stream or VolumeStream(path, img)
    T, shape = stream.n_volumes, stream.shape
    roi_flat, qc_flat = flat_index(cols, shape), flat_index(qc_index, shape)
    signals = np.empty((T, weights.shape[0]))
    qc = np.empty((len(qc_index), T))
    first = s1 = s2 = None
    check = stream.dtype.kind == "f" or stream.slope != 1.0 or stream.inter != 0.0  # integers are finite
    for t, slab in stream:
        k = len(slab)
        if smoothing_fwhm:
            from nilearn.image import smooth_img

            vols = stream.scaled(slab).reshape((k,) + shape[::-1]).T  # (x, y, z, k), a view
            vols = np.asarray(smooth_img(nib.Nifti1Image(vols, img.affine), smoothing_fwhm).dataobj)
            flat = vols.T.reshape(k, -1)
            x, q = flat[:, roi_flat], flat[:, qc_flat]
        else:
            x, q = stream.scaled(slab[:, roi_flat]), stream.scaled(slab[:, qc_flat])
        if (check or smoothing_fwhm) and not np.isfinite(x).all():
            raise DataError(f"{path}: NaN or infinite values inside the ROIs")
        signals[t:t + k] = (weights @ x.T).T
        qc[:, t:t + k] = q.T
        # Per-voxel sums of the deviations from the first volume (shifted sums: no cancellation)
        if first is None:
            first, s1, s2 = x[0].copy(), np.zeros(len(cols)), np.zeros(len(cols))
        x -= first
        s1 += x.sum(axis=0)
        x *= x
        s2 += x.sum(axis=0)
    mean = first + s1 / T
    var = np.maximum(s2 / T - (s1 / T) ** 2, 0.0)
    zero = (first == 0) & (s2 == 0)  # every value equals the first, which is 0
    return signals, (mean, np.sqrt(var), zero), qc, stream.digest


def voxel_sample(mask_data: np.ndarray, limit: int) -> np.ndarray:
    """Flat (C-order) indices of at most ``limit`` in-mask voxels, evenly spaced through the mask so
    every slice is represented; all of them when the mask has fewer."""
    flat = np.flatnonzero(np.ravel(mask_data) > 0)
    if flat.size > limit:
        flat = flat[np.linspace(0, flat.size - 1, limit).round().astype(np.int64)]
    return flat


def dvars(raw: np.ndarray, kept: np.ndarray, n_volumes: int, clean: np.ndarray | None = None) -> np.ndarray:
    """DVARS per volume (Power et al. 2012): the root mean square over voxels of the change from the
    previous volume, in percent of each voxel's mean raw signal.

    ``raw``: (voxels, T) signals; ``clean``: (voxels, len(kept)) the same voxels after denoising
    (volumes ``kept`` only), or None for the DVARS of ``raw``. Volume 0, censored volumes, and
    volumes whose previous one was censored have no value. Voxels whose mean is not positive
    (outside the signal) are left out.
    """
    out = np.full(n_volumes, np.nan)
    mean = raw.mean(axis=1)
    use = np.isfinite(mean) & (mean > 0)
    if clean is None:
        clean, kept = raw, np.arange(n_volumes)
    if kept.size < 2 or not use.any():
        return out
    psc = 100.0 * clean[use] / mean[use, None]
    step = np.diff(kept) == 1
    out[kept[1:][step]] = np.sqrt(np.mean(np.diff(psc, axis=1)[:, step] ** 2, axis=0))
    return out


def carpet_png(raw: np.ndarray, kept: np.ndarray, n_volumes: int, clean: np.ndarray | None) -> bytes:
    """A carpet plot's data as a 4-bit grey PNG: up to CARPET_ROWS sampled voxels (rows, in mask
    order) by volumes (columns), each row z-scored over its volumes, clipped to ±CARPET_Z and
    quantised to CARPET_LEVELS steps (a carpet shows patterns, not values; this keeps a 1,000-volume
    run near 150 kB); the raw signals on top, the denoised ones below (censored volumes at the mean);
    empty bytes when the mask has no voxel."""
    import io

    from PIL import Image

    if not raw.shape[0]:  # no voxel in the mask: no carpet
        return b""
    rows = np.linspace(0, raw.shape[0] - 1, min(CARPET_ROWS, raw.shape[0])).round().astype(np.int64)

    def quantise(x):
        sd = x.std(axis=1, keepdims=True)
        z = np.divide(x - x.mean(axis=1, keepdims=True), sd, out=np.zeros_like(x), where=sd > 0)
        return np.round((np.clip(z, -CARPET_Z, CARPET_Z) + CARPET_Z) * ((CARPET_LEVELS - 1) / (2 * CARPET_Z)))

    after = np.full((rows.size, n_volumes), (CARPET_LEVELS - 1) // 2, np.float64)
    if clean is not None and kept.size:
        after[:, kept] = quantise(clean[rows])
    levels = np.vstack([quantise(raw[rows]), after]).astype(np.uint8)
    img = Image.frombytes("P", (levels.shape[1], levels.shape[0]), levels.tobytes())
    img.putpalette([round(255 * i / (CARPET_LEVELS - 1)) for i in range(CARPET_LEVELS) for _ in range(3)])
    buf = io.BytesIO()
    img.save(buf, format="PNG", bits=4, optimize=True)
    return buf.getvalue()


def read_carpet(png: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The (raw, denoised) z-score arrays of a ``carpet_png``."""
    import io

    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float64) * (2 * CARPET_Z / (CARPET_LEVELS - 1)) - CARPET_Z
    half = a.shape[0] // 2
    return a[:half], a[half:]


def roi_atlas(rois: RoiWeights, grid: nib.Nifti1Image | Grayordinates):
    """The ROI set as a label image on ``grid`` (1-based, in ROI order; the larger weight wins an
    overlap) and a table of ROI centroids in world (MNI) mm and voxel counts, for figures. On
    grayordinates the image is a CIFTI-2 dlabel, and centroids come from the shipped meshes (NaN
    where none ships for the space)."""
    support = rois.support.tocsr()
    n_vox = np.asarray(support.sum(axis=1)).ravel()
    surface = isinstance(grid, Grayordinates)
    shape = (grid.n,) if surface else grid.shape[:3]
    labels = np.zeros(int(np.prod(shape)), np.int16)
    best = np.zeros(labels.shape)
    members = []
    for r in range(len(rois.names)):
        row = rois.weights.getrow(r)
        idx, w = row.indices, np.abs(row.data)
        win = w > best[idx]
        labels[idx[win]], best[idx[win]] = r + 1, w[win]
        members.append(idx)
    if surface:
        xyz = element_coordinates(grid)
        cent = [xyz[idx].mean(axis=0) if len(idx) else np.full(3, np.nan) for idx in members]
        img = label_image(labels, rois.names, grid)
    else:
        img = nib.Nifti1Image(labels.reshape(shape), grid.affine)
        img.header.set_data_dtype(np.int16)
        cent = [nib.affines.apply_affine(grid.affine, np.column_stack(np.unravel_index(idx, shape))).mean(axis=0)
                if len(idx) else np.full(3, np.nan) for idx in members]
    table = pd.DataFrame({"roi": rois.names, "label": np.arange(1, len(rois.names) + 1, dtype=np.int16),
                          "x_mm": [c[0] for c in cent], "y_mm": [c[1] for c in cent], "z_mm": [c[2] for c in cent],
                          "n_voxels": n_vox.astype(np.int32)})
    return img, table


def _extract_job(args):
    """("computed" or "cached", the run's results, its cache key or None), or the error message of a run skipped under
    ``on_error: skip``. With ``rois_hash`` the run is looked up in, or added to, the per-run cache."""
    run, rois, denoise, skip, min_coverage, rois_hash, surface = args
    key = None
    if rois_hash is not None:
        try:
            sidecar = run.confounds.with_suffix(".json")  # load_confounds_strategy reads it (CompCor)
            files = [*run.files, *([run.mask] if run.mask else []), run.confounds] + [
                f for f in (sidecar, run.events) if f is not None and f.is_file()]
            key = runcache.run_key(run, {str(f): file_digest(f) for f in files}, rois_hash, denoise, min_coverage)
        except OSError:  # an input that cannot be read: extraction names it
            key = None
        hit = runcache.load(key) if key else None
        if hit is not None:
            return "cached", hit, key
    try:
        result = _extract_run(run, rois, denoise, min_coverage, surface)
    except DataError as exc:
        if not skip:
            raise
        return str(exc)
    if key:
        runcache.store(key, result)
    return "computed", result, key


def skipped_run(subject: str, group: str, run: str, message: str, bold: str = "") -> dict:
    """The run_qc row of a run left out under ``on_error: skip``."""
    return {"subject": subject, "group": group, "run": run, "bold": bold, "tr_s": np.nan, "n_volumes": np.nan,
            "n_retained": np.nan, "mean_fd": np.nan, "max_fd": np.nan, "confounds": "", "excluded": True,
            "reason": f"skipped: {message}"}


def apply_exclusions(run_qc: pd.DataFrame, rules) -> pd.DataFrame:
    """Mark runs that break a rule as excluded, with every broken rule in ``reason``."""
    run_qc = run_qc.copy()
    # Runs already excluded at extraction (censored to nothing) keep that reason.
    reasons = [[r] if e else [] for e, r in zip(run_qc.get("excluded", [False] * len(run_qc)),
                                                 run_qc.get("reason", [""] * len(run_qc)))]
    censored = 1 - run_qc["n_retained"] / run_qc["n_volumes"]
    for i, r in enumerate(run_qc.itertuples()):
        if rules.max_mean_fd is not None and r.mean_fd > rules.max_mean_fd:
            reasons[i].append(f"mean FD {r.mean_fd:.3f} mm > {rules.max_mean_fd:g} mm")
        if rules.max_censored_fraction is not None and censored.iloc[i] > rules.max_censored_fraction:
            reasons[i].append(f"censored fraction {censored.iloc[i]:.2f} > {rules.max_censored_fraction:g}")
        if rules.min_clean_volumes is not None and r.n_retained < rules.min_clean_volumes:
            reasons[i].append(f"{r.n_retained} clean volumes < {rules.min_clean_volumes}")
    run_qc["excluded"] = [bool(x) for x in reasons]
    run_qc["reason"] = ["; ".join(x) for x in reasons]
    if rules.whole_subject:
        for sub, f in run_qc.groupby("subject", sort=False):
            if f["excluded"].any():
                first = f.loc[f["excluded"], ["run", "reason"]].iloc[0]
                for i in f.index[~f["excluded"]]:
                    run_qc.loc[i, "excluded"] = True
                    run_qc.loc[i, "reason"] = f"subject excluded (run {first['run']}: {first['reason']})"
    return run_qc


@dataclass
class Extracted:
    timeseries: pd.DataFrame
    roi_qc: pd.DataFrame
    run_qc: pd.DataFrame
    events: pd.DataFrame
    participants: pd.DataFrame
    motion: pd.DataFrame
    carpets: pd.DataFrame  # subject, run, n_volumes, png (carpet_png)
    atlas_img: nib.Nifti1Image | nib.Cifti2Image  # the ROI labels (CIFTI dlabel for surface data)
    atlas: pd.DataFrame
    digests: dict
    plugins: list
    computed: int = 0  # runs extracted now; the others came from the per-run cache (runcache.py)
    cached: int = 0
    surface: str = ""  # surface or CIFTI data: what the first run's elements are, for the methods text


def extract(p: ExtractParams, n_jobs: int = 2, executor: Executor | None = None, cache: bool = True) -> Extracted:
    """Extract every run; the tables, the ROI atlas on the first run's grid, digests and plugins.

    With ``cache``, runs whose inputs, settings and ROIs are unchanged come from the per-run cache.
    """
    skip = p.on_error == "skip"
    grid_hash: dict[int, str] = {}
    found: list = []
    participants, runs = discover(p.data, found if skip else None)
    skipped = [skipped_run(*f) for f in found]
    builder = RoiBuilder(p.rois)
    jobs = []
    grids = []
    for run in runs:
        try:
            if run.kind == "nifti":
                grid = nib.load(run.mask)  # header only: ROIs are placed once per distinct grid
            else:
                grid, n_volumes = run_reference(run, p.data.space)
        except DataError as exc:  # a surface run's header
            if not skip:
                raise
            skipped.append(skipped_run(run.subject, run.group, run.run, str(exc), run.bold.name))
            continue
        except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as exc:
            if not skip:
                raise DataError(f"{run.mask}: not a readable NIfTI image ({exc})") from exc
            skipped.append(skipped_run(run.subject, run.group, run.run, f"{run.mask}: not a readable NIfTI image",
                                       run.bold.name))
            continue
        rois = builder.for_grid(grid)
        if cache and id(rois) not in grid_hash:
            grid_hash[id(rois)] = runcache.rois_digest(rois)
        grids.append(grid)
        jobs.append((run, rois, p.denoise, skip, p.min_coverage, grid_hash.get(id(rois)),
                     None if run.kind == "nifti" else (grid, n_volumes)))
    if not jobs:
        raise DataError(f"{p.data.root}: no run could be extracted")
    executor = executor or as_executor(n_jobs)
    results = list(progress(executor.map(_extract_job, jobs), len(jobs), "extract: runs"))
    for job, res in zip(jobs, results):
        if isinstance(res, str):
            skipped.append(skipped_run(job[0].subject, job[0].group, job[0].run, res, job[0].bold.name))
    done = [r for r in results if not isinstance(r, str)]
    if cache:
        runcache.record_run([r[2] for r in done if r[2]])
    how, results = [r[0] for r in done], [r[1] for r in done]
    ts = pd.concat([r[0] for r in results], ignore_index=True)
    roi_qc = pd.concat([r[1] for r in results], ignore_index=True)
    run_qc = apply_exclusions(pd.DataFrame([r[2] for r in results]), p.exclude)
    if skipped:
        keys = [(s, k) for s in participants["subject"] for k in p.data.runs]  # discovery order
        order = {key: i for i, key in enumerate(keys)}
        run_qc = pd.concat([run_qc, pd.DataFrame(skipped)], ignore_index=True)
        run_qc["_o"] = [order[(s, r)] for s, r in zip(run_qc["subject"], run_qc["run"])]
        run_qc = run_qc.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)
    events = [r[3] for r in results if r[3] is not None]
    events = pd.concat(events, ignore_index=True) if events else pd.DataFrame(
        columns=["subject", "run", "trial_type", "onset_s", "duration_s"])
    digests = {k: v for r in results for k, v in r[4].items()}
    digests[str(Path(p.data.root) / p.data.participants)] = file_digest(Path(p.data.root) / p.data.participants)
    motion = pd.concat([r[5] for r in results], ignore_index=True)
    carpets = pd.DataFrame([r[6] for r in results], columns=["subject", "run", "n_volumes", "png"])
    atlas_img, atlas = roi_atlas(jobs[0][1], grids[0])
    surface = ""
    if isinstance(grids[0], Grayordinates):
        kind = {"cifti": "CIFTI dtseries", "gifti": "GIfTI surface BOLD"}[jobs[0][0].kind]
        surface = f"{kind} ({grids[0].describe()})"
    return Extracted(ts, roi_qc, run_qc, events, participants, motion, carpets, atlas_img, atlas, digests,
                     builder.plugins, how.count("computed"), how.count("cached"), surface)
