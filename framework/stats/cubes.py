"""Edge values as arrays a batched test fits at once: the (edges × subjects × windows) cube, the change
from baseline, and the long rows a per-edge model reads."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fclab.framework.connectome.edgestore import Edges
from fclab.framework.pluginhost.contracts import Design


def _positions(column: pd.Series, values) -> np.ndarray:
    """Position of each entry of ``column`` in ``values`` (−1 if absent); fast for categoricals."""
    index = pd.Index(values)
    if isinstance(column.dtype, pd.CategoricalDtype):
        lut = np.append(index.get_indexer(column.cat.categories), -1)
        return lut[column.cat.codes.to_numpy()]
    return index.get_indexer(column)


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and their labels; categoricals use their own codes (no hashing)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), np.asarray(column.cat.categories, dtype=object)
    codes, labels = pd.factorize(column)
    return codes, np.asarray(labels, dtype=object)


def edge_cube(edges: pd.DataFrame | Edges, design: Design) -> tuple[pd.DataFrame, np.ndarray]:
    """The edge table as an array: keys (metric, roi_a, roi_b) and values (E, subjects, windows).

    ``edges`` is the long table or the packed ``Edges`` (read straight into the array, no long table).
    Subjects and windows follow ``design.subjects`` and ``design.windows``; NaN marks a value that
    is missing or absent. Edges are ordered by (metric, roi_a, roi_b) codes: category order for
    categorical columns, order of first appearance otherwise (for ``Edges``: metrics as stored, the
    upper triangle in ROI order, which is the same order for a table fclab wrote).
    """
    if isinstance(edges, Edges):
        return edges.cube(design.subjects["subject"], design.windows)
    s_codes = _positions(edges["subject"], design.subjects["subject"])
    w_codes = _positions(edges["window"], design.windows)
    (m, lm), (a, la), (b, lb) = (_codes(edges[c]) for c in ("metric", "roi_a", "roi_b"))
    sel = (s_codes >= 0) & (w_codes >= 0) & (m >= 0) & (a >= 0) & (b >= 0)
    values = edges["value"].to_numpy(float)
    if not sel.all():
        s_codes, w_codes, m, a, b, values = (x[sel] for x in (s_codes, w_codes, m, a, b, values))
    space = len(lm) * len(la) * len(lb)
    itype = np.int32 if space < 2**31 else np.int64
    m, a, b = (x.astype(itype, copy=False) for x in (m, a, b))
    combined = (m * itype(len(la)) + a) * itype(len(lb)) + b
    if space <= 50_000_000:  # a dense lookup table: linear time, no hashing
        present = np.zeros(space, bool)
        present[combined] = True
        uniq = np.flatnonzero(present)
        lut = np.full(space, -1, itype)
        lut[uniq] = np.arange(len(uniq))
        e_codes = lut[combined]
    else:
        uniq, e_codes = np.unique(combined, return_inverse=True)
    mi, rest = np.divmod(uniq, len(la) * len(lb))
    ai, bi = np.divmod(rest, len(lb))
    keys = pd.DataFrame({"metric": lm[mi].astype(str), "roi_a": la[ai].astype(str), "roi_b": lb[bi].astype(str)})
    S, W = len(design.subjects), len(design.windows)
    cube = np.full(len(keys) * S * W, np.nan)
    flat = e_codes.astype(np.int64) * S
    flat += s_codes
    flat *= W
    flat += w_codes
    cube[flat] = values
    return keys, cube.reshape(len(keys), S, W)


def change_cube(edges: pd.DataFrame | Edges, design: Design) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Keys, the change from baseline (E, subjects, non-baseline windows) and a target-group mask."""
    keys, cube = edge_cube(edges, design)
    k = design.windows.index(design.baseline_window)
    others = [i for i in range(len(design.windows)) if i != k]
    delta = cube[:, :, others] - cube[:, :, k : k + 1]
    return keys, delta, (design.subjects["group"] == design.groups[1]).to_numpy()


def long_rows(keys: pd.DataFrame, windows: list[str], term: str, columns: dict[str, np.ndarray],
              **extra) -> pd.DataFrame:
    """Result rows from (E, windows) arrays: window-major, edges in ``keys`` order within a window."""
    W = len(windows)
    frame = pd.concat([keys] * W, ignore_index=True)
    frame["window"] = np.repeat(windows, len(keys))
    frame["term"] = term
    for k, v in {**columns, **extra}.items():
        frame[k] = np.asarray(v).T.ravel()
    return frame
