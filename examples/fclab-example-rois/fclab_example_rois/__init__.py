"""An example fclab ROI-set plugin: spheres at coordinates read from a TSV file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from fclab.api import DataError, PluginParams, RoiSet, RoiWeights, hookimpl, sphere_masks


class CoordsTsv(RoiSet):
    """A sphere of ``radius_mm`` around each row (name, x, y, z in MNI mm) of the TSV at ``path``."""

    name = "coords_tsv"

    class Params(PluginParams):
        path: str
        radius_mm: float = Field(6.0, gt=0)

    def input_files(self) -> list[str]:
        return [self.params.path]

    def table(self) -> pd.DataFrame:
        path = Path(self.params.path)
        if not path.is_file():
            raise DataError(f"{path}: ROI coordinate table not found")
        table = pd.read_csv(path, sep="\t")
        missing = [c for c in ("name", "x", "y", "z") if c not in table.columns]
        if missing:
            raise DataError(f"{path}: no column(s) {', '.join(missing)} (it needs name, x, y, z)")
        if table.empty or table["name"].duplicated().any():
            raise DataError(f"{path}: ROI names must be unique and at least one")
        return table

    def build(self, reference) -> RoiWeights:
        table = self.table()
        masks = sphere_masks(table[["x", "y", "z"]].to_numpy(float), self.params.radius_mm,
                             reference.shape[:3], reference.affine).astype(float)
        counts = masks.sum(axis=1, keepdims=True)
        for name, n in zip(table["name"], counts[:, 0]):
            if n == 0:
                raise DataError(f"{self.params.path}: ROI {name!r} has no voxels on the BOLD grid")
        return RoiWeights([str(n) for n in table["name"]], sp.csr_matrix(masks / counts))

    def describe(self) -> str:
        return f"{self.params.radius_mm:g} mm spheres at the coordinates of {Path(self.params.path).name}"


@hookimpl
def register_rois(register):
    register(CoordsTsv)
