"""edges.parquet, packed: one row per subject × window × metric output, its values one fixed-size list.

A row holds the upper triangle of one window's matrix, the edges in ``np.triu_indices(R, 1)`` order
of the ROI order stored in the file's metadata, as a ``fixed_size_list<double>[R(R-1)/2]``. Why a value
is missing is kept at the level it arises: ``reason`` for the whole row (a window too short, a run
excluded, a metric that cannot compute the window), ``constant_rois`` and ``missing_rois`` (with
``missing_why``) for the ROIs that leave a window's edges empty, and per metric output the reason of
a value the metric itself could not compute (``undefined`` in the metadata). ``Edges.long()`` turns
rows back into the long table (one row per edge, the columns of ``EDGE_COLUMNS``) with the same
per-edge reasons the long layout had; ``Edges.cube()`` gives statistics their (edges, subjects,
windows) array without the long table. docs/architecture.md (item 39) records the measurements behind
the layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fclab.framework.errors import DataError
from fclab.framework.io import read_provenance, write_arrow_parts

EDGE_COLUMNS = ["subject", "group", "window", "window_start_s", "window_end_s", "n_volumes", "metric",
                "roi_a", "roi_b", "value", "reason"]
ROW_COLUMNS = ["subject", "group", "window", "window_start_s", "window_end_s", "n_volumes", "metric", "reason",
               "constant_rois", "missing_rois", "missing_why"]
LAYOUT_KEY = b"fclab_edges"
ROW_GROUP_BYTES = 16 * 2**20
_STRINGS = ("subject", "group", "window", "metric", "reason")
_LISTS = ("constant_rois", "missing_rois", "missing_why")


@dataclass
class Edges:
    """Connectivity values, packed: ``rows`` (ROW_COLUMNS, one per subject × window × metric output)
    and ``values`` (len(rows), R(R-1)/2), the upper triangle of each row's matrix over ``rois``."""

    rows: pd.DataFrame
    values: np.ndarray
    rois: list[str]
    undefined: dict[str, str] = field(default_factory=dict)  # output -> reason of a value it could not compute

    columns = EDGE_COLUMNS  # the columns of the long view, for tests' ``requires``

    def __post_init__(self):
        if self.values.shape != (len(self.rows), self.n_edges):
            raise DataError(f"edges: {self.values.shape[0]} value rows of {self.values.shape[1:]} for "
                            f"{len(self.rows)} rows of {self.n_edges} edges over {len(self.rois)} ROIs")

    @property
    def n_edges(self) -> int:
        return len(self.rois) * (len(self.rois) - 1) // 2

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, mask) -> Edges:
        mask = np.asarray(mask)
        if mask.dtype == bool and mask.all():  # no copy of the values (gigabytes for a connectome)
            return self
        return Edges(self.rows[mask].reset_index(drop=True), self.values[mask], self.rois, self.undefined)

    def where(self, windows=None, metrics=None, groups=None) -> Edges:
        keep = np.ones(len(self.rows), bool)
        for col, allowed in (("window", windows), ("metric", metrics), ("group", groups)):
            if allowed is not None:
                keep &= self.rows[col].isin(list(allowed)).to_numpy()
        return self if keep.all() else self.select(keep)

    def metrics(self) -> list[str]:
        return list(dict.fromkeys(self.rows["metric"]))

    def cube(self, subjects, windows) -> tuple[pd.DataFrame, np.ndarray]:
        """Keys (metric, roi_a, roi_b) and values (edges, subjects, windows): edges metric by metric,
        each in triangle order; NaN where a value is missing or the row absent."""
        metrics, subjects, windows = self.metrics(), list(subjects), list(windows)
        E = self.n_edges
        m = pd.Index(metrics).get_indexer(self.rows["metric"])
        s = pd.Index(subjects).get_indexer(self.rows["subject"])
        w = pd.Index(windows).get_indexer(self.rows["window"])
        sel = (s >= 0) & (w >= 0)
        cube = np.full((len(metrics), E, len(subjects), len(windows)), np.nan)
        cube.transpose(0, 2, 3, 1)[m[sel], s[sel], w[sel]] = self.values[sel]
        iu = np.triu_indices(len(self.rois), 1)
        rois = np.asarray(self.rois, dtype=object)
        keys = pd.DataFrame({"metric": np.repeat(np.asarray(metrics, dtype=object), E),
                             "roi_a": np.tile(rois[iu[0]], len(metrics)),
                             "roi_b": np.tile(rois[iu[1]], len(metrics))})
        return keys, cube.reshape(len(metrics) * E, len(subjects), len(windows))

    def long(self, pairs=None) -> pd.DataFrame:
        """One row per edge (EDGE_COLUMNS), metric by metric, then row order, then edge order;
        ``pairs`` (roi_a, roi_b) keeps only those edges."""
        R = len(self.rois)
        iu = np.triu_indices(R, 1)
        e_idx = np.arange(self.n_edges)
        if pairs is not None:
            pos = {(a, b): k for k, (a, b) in enumerate(zip(np.asarray(self.rois)[iu[0]], np.asarray(self.rois)[iu[1]]))}
            e_idx = np.array(sorted({pos[p] for p in map(tuple, pairs) if p in pos}), dtype=np.int64)
        metric_codes, metric_names = pd.factorize(self.rows["metric"])
        order = np.argsort(metric_codes, kind="stable")
        rows = self.rows.iloc[order].reset_index(drop=True)
        vals = self.values[order][:, e_idx]
        n_r, n_e = vals.shape

        def cat(col):  # plain strings, as pandas reads a string column (groupby sorts them)
            codes, labels = pd.factorize(rows[col].to_numpy(dtype=object))
            return np.asarray(labels, dtype=object)[np.repeat(codes, n_e)]

        messages: list[str] = []
        index: dict[str, int] = {}

        def code(msg):
            if msg not in index:
                index[msg] = len(messages)
                messages.append(msg)
            return index[msg]

        row_reason = np.array([-1 if r is None or r != r else code(r) for r in rows["reason"]], dtype=np.int64)
        reason = np.repeat(row_reason, n_e).reshape(n_r, n_e)
        a_idx, b_idx = iu[0][e_idx], iu[1][e_idx]
        for r in np.flatnonzero([len(c) > 0 or len(mi) > 0 for c, mi in zip(rows["constant_rois"], rows["missing_rois"])]):
            const = set(rows.at[r, "constant_rois"])
            why = dict(zip(rows.at[r, "missing_rois"], rows.at[r, "missing_why"]))
            bad = {k for k, name in enumerate(self.rois) if name in const or name in why}
            for e in np.flatnonzero(np.isin(a_idx, list(bad)) | np.isin(b_idx, list(bad))):
                pair = (self.rois[a_idx[e]], self.rois[b_idx[e]])
                gone = [f"{x} ({why[x]})" for x in pair if x in why]
                flat = [x for x in pair if x in const]
                reason[r, e] = code(f"ROI missing: {', '.join(gone)}") if gone else \
                    code(f"constant signal in {', '.join(flat)}")
        undefined = np.array([code(self.undefined.get(mt, f"{mt} is not defined for this window"))
                              for mt in metric_names], dtype=np.int64)
        nan = ~np.isfinite(vals) & (reason < 0)
        if nan.any():
            reason[nan] = undefined[np.repeat(metric_codes[order], n_e).reshape(n_r, n_e)[nan]]
        text = np.array([*messages, None], dtype=object)  # code -1: no reason
        rois = np.asarray(self.rois, dtype=object)
        return pd.DataFrame({
            "subject": cat("subject"), "group": cat("group"), "window": cat("window"),
            "window_start_s": np.repeat(rows["window_start_s"].to_numpy(float), n_e),
            "window_end_s": np.repeat(rows["window_end_s"].to_numpy(float), n_e),
            "n_volumes": np.repeat(rows["n_volumes"].to_numpy(np.int32), n_e),
            "metric": cat("metric"),
            "roi_a": rois[np.tile(a_idx, n_r)],
            "roi_b": rois[np.tile(b_idx, n_r)],
            "value": vals.ravel(),
            "reason": text[reason.ravel()],  # plain strings (None: a value), as pandas reads them
        })[EDGE_COLUMNS]

    @classmethod
    def from_long(cls, long: pd.DataFrame) -> Edges:
        """Pack a long table (EDGE_COLUMNS; roi_a before roi_b in one ROI order, as fclab writes it).
        Per-edge reasons are not kept: a row's reason is the commonest among its missing values."""
        a, b = long["roi_a"].astype(str).to_numpy(), long["roi_b"].astype(str).to_numpy()
        rois = list(dict.fromkeys([*pd.unique(a), *pd.unique(b)]))
        pos = {name: k for k, name in enumerate(rois)}
        R = len(rois)
        ia, ib = np.array([pos[x] for x in a]), np.array([pos[x] for x in b])
        if (ia >= ib).any():
            raise DataError("edges: roi_a must come before roi_b in one ROI order")
        e = ia * R - ia * (ia + 1) // 2 + (ib - ia - 1)
        key = ["subject", "group", "window", "window_start_s", "window_end_s", "n_volumes", "metric"]
        frame = long[key].astype({c: str for c in ("subject", "group", "window", "metric")})
        row_codes = frame.groupby(key, sort=False, dropna=False).ngroup().to_numpy()  # by first appearance
        rows = frame.drop_duplicates(key).reset_index(drop=True)
        values = np.full((len(rows), R * (R - 1) // 2), np.nan)
        values[row_codes, e] = long["value"].to_numpy(float)
        why = long["reason"].astype(object).where(long["reason"].notna(), None).to_numpy()
        common = pd.Series(why).groupby(row_codes).agg(lambda x: x.dropna().mode().iloc[0] if x.notna().any() else None)
        rows["reason"] = common.reindex(range(len(rows))).to_numpy()
        for c in _LISTS:
            rows[c] = [[] for _ in range(len(rows))]
        rows["n_volumes"] = rows["n_volumes"].astype(np.int32)
        return cls(rows[ROW_COLUMNS], values, rois)


def pack(rows: pd.DataFrame, values: np.ndarray, rois: list[str], undefined: dict[str, str]) -> Edges:
    return Edges(rows[ROW_COLUMNS].reset_index(drop=True), values, list(rois), dict(undefined))


def write_edges(edges: Edges, path: str | Path, prov: dict) -> None:
    """Write ``edges`` to ``path`` atomically: row columns, then the values as one fixed-size list."""
    rows = edges.rows
    E = edges.n_edges
    arrays = {c: pa.array(rows[c].astype(object).where(rows[c].notna(), None).tolist(), pa.string())
              for c in _STRINGS}
    arrays.update({"window_start_s": pa.array(rows["window_start_s"].to_numpy(float)),
                   "window_end_s": pa.array(rows["window_end_s"].to_numpy(float)),
                   "n_volumes": pa.array(rows["n_volumes"].to_numpy(np.int32))})
    for c in _LISTS:
        arrays[c] = pa.array([list(x) for x in rows[c]], pa.list_(pa.string()))
    flat = pa.array(np.ascontiguousarray(edges.values, dtype=np.float64).ravel())
    arrays["values"] = pa.FixedSizeListArray.from_arrays(flat, E) if E else pa.array(
        [[] for _ in range(len(rows))], pa.list_(pa.float64(), 0))
    # Rows go to the file window by window, in row groups of ~16 MB, so that reading some windows
    # (stats reads the fixed ones) skips the other groups by their statistics; ``row`` keeps the
    # order the rows had, which read_edges restores. One window's rows are in memory at a time.
    arrays["row"] = pa.array(np.arange(len(rows), dtype=np.int64))
    table = pa.table({c: arrays[c] for c in [*ROW_COLUMNS, "row", "values"]})
    group = max(64, ROW_GROUP_BYTES // max(1, 8 * E))
    order = np.argsort(pd.factorize(rows["window"])[0], kind="stable")
    parts = (table.take(pa.array(order[k:k + group])) for k in range(0, len(order), group))
    layout = {"rois": list(edges.rois), "undefined": edges.undefined,
              "layout": "upper triangle per row, np.triu_indices(len(rois), 1) order"}
    write_arrow_parts(table.schema, parts if len(order) else [table], path, prov,
                      {LAYOUT_KEY: json.dumps(layout).encode()}, dictionary=list(_STRINGS), row_group_size=group)


def read_edges(path: str | Path, windows=None, metrics=None) -> Edges:
    """edges.parquet, packed; only the rows of ``windows`` and ``metrics`` when given. Read row group
    by row group straight into the values array: the other rows' values are never read, and no
    second copy of the values is held. A missing file, or one not in this layout: a DataError naming it."""
    path = Path(path)
    read_provenance(path)  # a missing or unreadable file: one line naming it
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        meta = json.loads((schema.metadata or {}).get(LAYOUT_KEY, b"null"))
        if not isinstance(meta, dict) or "values" not in schema.names:
            raise DataError(f"{path}: not fclab's packed edge table (no {LAYOUT_KEY.decode()} layout or no "
                            "column 'values'); rerun the connectivity stage")
        missing = [c for c in ROW_COLUMNS if c not in schema.names]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r}; rerun the connectivity stage")
        rois = [str(r) for r in meta.get("rois", [])]
        E = len(rois) * (len(rois) - 1) // 2
        vtype = schema.field("values").type
        if not (pa.types.is_fixed_size_list(vtype) and vtype.list_size == E):
            raise DataError(f"{path}: column 'values' is {vtype}, not a list of {E} values for {len(rois)} ROIs")
        small = [c for c in (*ROW_COLUMNS, "row") if c in schema.names]
        parts, masks = [], []
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=small)
            mask = np.ones(len(t), bool)
            for col, allowed in (("window", windows), ("metric", metrics)):
                if allowed is not None:
                    mask &= np.isin(t.column(col).to_numpy(zero_copy_only=False).astype(object), list(allowed))
            parts.append(t.filter(pa.array(mask)))
            masks.append(mask)
        rows_t = pa.concat_tables(parts) if parts else schema.empty_table().select(small)
        n = len(rows_t)
        # each kept row's place in the original row order (the file is stored window by window)
        if "row" in rows_t.column_names and n:
            place = np.empty(n, np.int64)
            place[np.argsort(rows_t.column("row").to_numpy(), kind="stable")] = np.arange(n)
        else:
            place = np.arange(n)
        values = np.empty((n, E))
        at = 0
        for g, mask in enumerate(masks):
            k = int(mask.sum())
            if not k:
                continue
            col = pf.read_row_group(g, columns=["values"]).column(0)
            flat = np.concatenate([c.flatten().to_numpy(zero_copy_only=False) for c in col.chunks])
            values[place[at:at + k]] = flat.reshape(len(mask), E)[mask]
            at += k
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable Parquet file ({exc})") from exc
    rows = rows_t.drop_columns([c for c in ("row",) if c in rows_t.column_names]).to_pandas()
    if n:
        rows = rows.iloc[np.argsort(place, kind="stable")].reset_index(drop=True)
    for c in _STRINGS:
        rows[c] = rows[c].astype(object).where(rows[c].notna(), None)
    for c in _LISTS:
        rows[c] = [list(x) if x is not None else [] for x in rows[c]]
    return Edges(rows[ROW_COLUMNS], values, rois, dict(meta.get("undefined") or {}))


def read_edges_long(path: str | Path, windows=None, metrics=None, pairs=None) -> pd.DataFrame:
    """The long view of edges.parquet (EDGE_COLUMNS): what ``fclab edges --long`` writes."""
    return read_edges(path, windows, metrics).long(pairs)
