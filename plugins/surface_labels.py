"""ROI plugin ``surface_labels``: your own parcellation of the cortical surface, one file per hemisphere.

``left`` and ``right`` are label files on the data's surface mesh (fsaverage*, fsLR 32k, ...):
GIfTI ``.label.gii`` (names from its label table), FreeSurfer ``.annot``, or one integer per vertex
(``.npy``, a text file, or a one-array ``.gii``), whose names come from ``table`` (a TSV with columns
``index`` and ``name``; default: the values). An ROI's signal is the mean over its vertices, as
nilearn's SurfaceLabelsMasker computes it; on CIFTI data, over the vertices the data carry (CIFTI
leaves out the medial wall).

* ``labels``: region names (or patterns with ``regex: true``); empty: every region.
* ``merge``: new ROI name -> regions pooled into one ROI.
* ``name_format``: how regions are named, with ``{hemi}`` (L, R) and ``{name}``; by default the
  label's own name, or ``{hemi}_{name}`` when the same name is used in both hemispheres.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from fclab.api import PluginParams, RoiSet, RoiWeights, hookimpl, read_label_table, read_surface_labels, surface_rois


class SurfaceLabels(RoiSet):
    name = "surface_labels"
    data = ("surface",)

    class Params(PluginParams):
        left: str | None = None
        right: str | None = None
        table: str | None = None
        labels: list[str] = Field(default_factory=list)
        regex: bool = False
        merge: dict[str, list[str]] = Field(default_factory=dict)
        name_format: str | None = None

        @model_validator(mode="after")
        def _some(self):
            if not self.left and not self.right:
                raise ValueError("give left, right, or both (label files)")
            if self.name_format is not None and "{name}" not in self.name_format:
                raise ValueError("name_format must contain {name}")
            return self

    def input_files(self) -> list[str]:
        return [f for f in (self.params.left, self.params.right, self.params.table) if f]

    def hemispheres(self):
        table = None
        if self.params.table:
            t = read_label_table(Path(self.params.table))
            table = dict(zip(t["index"].astype(int), t["name"].astype(str)))
        return {h: read_surface_labels(Path(f), table)
                for h, f in (("L", self.params.left), ("R", self.params.right)) if f}

    def build(self, reference) -> RoiWeights:
        p = self.params
        return surface_rois(reference, self.hemispheres(), p.labels, p.regex, p.merge, p.name_format,
                            "extract.rois.surface_labels", "surface label")

    def describe(self) -> str:
        files = ", ".join(Path(f).name for f in (self.params.left, self.params.right) if f)
        return f"regions of the surface parcellation {files} (mean over vertices)"


@hookimpl
def register_rois(register):
    register(SurfaceLabels)
