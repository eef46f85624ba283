"""BIDS and fMRIPrep inputs: finding each subject's runs (BOLD, mask, confounds, events, sidecars)
and reading the TSV tables (participants, events) with one-line errors naming the file."""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import numpy as np

from fclab.framework.errors import DataError
from fclab.framework.params import DataParams
from fclab.framework.params import check_label
from fclab.framework.extraction.surface import is_surface_space


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
    outliers: Path | None = None  # XCP-D: its *_outliers.tsv (1 = a censored volume)
    qc: Path | None = None  # XCP-D: its *_desc-linc_qc.tsv (num_dummy_volumes), if written

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
        with open(path, encoding="utf-8", errors="replace") as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: empty file (no header row)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable TSV ({str(exc).splitlines()[0]})") from exc
    except OSError as exc:  # a directory, a file it may not read
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:  # pandas would rename the second trans_x to trans_x.1, and the first would be used
        raise DataError(f"{path}: column {twice[0]!r} given twice in the header")
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
            shown = "n/a" if pd.isna(raw) else f"{float(raw):g}" if isinstance(raw, (int, float, np.number)) else repr(raw)
            raise DataError(f"{path}: row {i + 1}: {col} {shown} is not a number ≥ 0")
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
    if path.exists() and not path.is_file():
        raise DataError(f"{path}: cannot be read (not a file)")
    if not path.is_file():
        raise DataError(f"{path}: participants file not found (extract.data.participants {data.participants!r} is "
                        f"relative to extract.data.root; fMRIPrep writes none, so point it at the raw BIDS tree's)")
    table = read_tsv(path, ("participant_id", data.group_column), dtype={"participant_id": str})
    if table.empty:
        raise DataError(f"{path}: no participants")
    ids = table["participant_id"]
    for i, pid in enumerate(ids):
        check_label(pid, f"{path}: row {i + 1}: participant_id", DataError)
        if not re.fullmatch(r"(sub-)?[A-Za-z0-9]+", pid):  # BIDS labels are alphanumeric: file names split at _ and -
            raise DataError(f"{path}: row {i + 1}: participant_id {pid!r} is not a BIDS label (sub- and then letters "
                            "and digits only); its files could not be named or found")
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


def subject_files(root: Path, sub: str) -> list[str]:
    """Every file in one subject's func/ folders (``sub-X/ses-*/func`` and ``sub-X/func``), listed once
    per run instead of once per file kind. nilearn's ``get_bids_files`` globs ``root/sub-*/ses-*`` on
    every call to decide whether sessions exist, which made discovery quadratic in subjects."""
    subject = root / f"sub-{sub}"
    folders = sorted(subject.glob("ses-*/func")) + [subject / "func"]
    return [entry.path for folder in folders if folder.is_dir() for entry in os.scandir(folder)]


def bids_files(files: list[str], sub: str, tag: str, ext: str, filters) -> list[str]:
    """The files of ``subject_files`` that nilearn's ``get_bids_files(root, tag, ext, sub, "func",
    filters)`` returns: named ``sub-<sub>*_<tag>.<ext>``, with every (entity, label) filter matched (an
    empty label: the entity is absent), sorted by path. tests/test_bids.py checks the two agree."""
    from nilearn.interfaces.bids import parse_bids_filename

    pattern = f"sub-{sub}*_{tag}.{ext}"
    found = []
    for path in files:
        if not fnmatch.fnmatchcase(os.path.basename(path), pattern):
            continue
        entities = parse_bids_filename(path)["entities"]
        if all((label == "" and entity not in entities) or (entity in entities and entities[entity] == label)
               for entity, label in filters):
            found.append(path)
    return sorted(found)


def _find_run(root: Path, data: DataParams, sub: str, group, key: str, sel) -> RunInput:
    """The files of one run (BIDS entities from params), matched as nilearn.interfaces.bids would."""
    filters = ([("ses", sel.session)] if sel.session else []) + [("task", sel.task)] + (
        [("run", sel.run)] if sel.run else [])
    where = f"sub-{sub} run {key!r}"
    listing = subject_files(root, sub)

    def get_bids_files(tag, ext, entities):
        return bids_files(listing, sub, tag, ext, entities)

    fmt = data.format if data.format != "auto" else ("nifti" if not is_surface_space(data.space) else "surface")
    if fmt == "xcpd":
        return _find_xcpd_run(root, data, sub, group, key, sel, filters, where, get_bids_files)
    if fmt == "nifti":
        image = [("space", data.space_entity)] + ([("res", data.res)] if data.res else [])
        def nifti(suffix, entities):  # gzipped as fMRIPrep writes them, or gunzipped (memory-mapped)
            return [f for ext in ("nii.gz", "nii") for f in get_bids_files(suffix, ext, filters + image + entities)]

        found = nifti("bold", [("desc", "preproc")])
        if not found:
            wanted = ", ".join(f"{k} {v!r}" if v else f"no {k}- entity" for k, v in filters + image)
            raise DataError(f"{where}: no preprocessed BOLD found for {wanted} ({available_bold(root, sub)})")
        bold = _one(found, "preprocessed BOLD", where)
        mask = _one(nifti("mask", [("desc", "brain")]), "brain mask", where)
        extra = {}
    else:
        bold, mask, extra = _find_surface_run(data, filters, where, fmt, get_bids_files, root, sub)
    conf = _one(get_bids_files("timeseries", "tsv", filters + [("desc", "confounds")]), "confounds TSV", where)
    roots = ([Path(data.events_root)] if data.events_root else []) + [root]
    events = find_events(roots, sub, sel)
    tr = _repetition_time(sidecar_json(bold))
    return RunInput(sub, str(group), key, bold, mask, conf, events, tr, **extra)


def _find_surface_run(data: DataParams, filters, where: str, fmt: str, get_bids_files, root: Path, sub: str):
    """(BOLD path, None, RunInput fields) of a CIFTI dtseries or of GIfTI hemisphere runs."""
    image = [("space", data.space)] + ([("den", data.den)] if data.den else [])
    cifti = get_bids_files("bold", "dtseries.nii", filters + image) if fmt != "gifti" else []
    gifti = {h: get_bids_files("bold", "func.gii", filters + [("hemi", h)] + image)
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


def _find_xcpd_run(root: Path, data: DataParams, sub: str, group, key: str, sel, filters, where: str,
                   get_bids_files) -> RunInput:
    """XCP-D's files of one run: the atlas's mean time series, the motion and outlier tables, the QC
    table if written, and the TR from the time series' sidecar or else the denoised BOLD's."""
    space = [("space", data.space_entity)] + ([("den", data.den)] if data.den else [])
    found = get_bids_files("timeseries", "tsv", filters + space + [("atlas", data.atlas), ("stat", "mean")])
    if not found:
        wanted = ", ".join(f"{k} {v!r}" if v else f"no {k}- entity" for k, v in filters + space + [("atlas", data.atlas)])
        raise DataError(f"{where}: no XCP-D *_stat-mean_timeseries.tsv found for {wanted} under {root}")
    series = _one(found, "XCP-D mean time series", where)
    motion = _one(get_bids_files("motion", "tsv", filters), "XCP-D motion TSV", where)
    outliers = _one(get_bids_files("outliers", "tsv", filters), "XCP-D outliers TSV", where)
    qc = get_bids_files("qc", "tsv", filters + space + [("desc", "linc")])
    sidecar = series.with_suffix(".json")
    if not sidecar.is_file():  # the denoised BOLD's sidecar, which XCP-D writes beside it
        sidecar = Path(next(iter(get_bids_files("bold", "json", filters + space + [("desc", "denoised")])), sidecar))
    roots = ([Path(data.events_root)] if data.events_root else []) + [root]
    return RunInput(sub, str(group), key, series, None, motion, find_events(roots, sub, sel), _repetition_time(sidecar),
                    kind="xcpd", outliers=outliers, qc=_one(qc, "XCP-D QC TSV", where) if qc else None)


BOLD_SUFFIXES = ("_bold.nii.gz", "_bold.nii", "_bold.dtseries.nii", "_bold.func.gii")


def sidecar_json(bold: Path) -> Path:
    """The BIDS sidecar of a BOLD file (its name with .json for the extension)."""
    name = bold.name
    for ext in (".nii.gz", ".dtseries.nii", ".func.gii", ".nii"):
        if name.endswith(ext):
            return bold.with_name(name.removesuffix(ext) + ".json")
    return bold.with_suffix(".json")


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
        if key == "space" and any("space" not in e for e in ents):
            values.append("native (no space- entity)")
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
