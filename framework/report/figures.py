"""Study-level figures for the report: ROIs on the MNI template, connectivity matrices and QC.

Every function takes tables the stages wrote and writes one PNG (atomically) sized for print:
labelled axes with units, a group legend, 150 dpi.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import stats as st  # noqa: E402

from fclab.framework.pluginhost.contracts import as_scale  # noqa: E402
from fclab.framework.io import atomic_path  # noqa: E402

GROUP_COLOURS = ("#4c72b0", "#dd8452")  # reference, target
DPI = 150
LABEL_CHARS = 40  # a name longer than this is cut in figures (the page and tables keep it whole)


def short(name, width: int = LABEL_CHARS) -> str:
    """``name`` as a figure shows it: cut to ``width`` characters with an ellipsis, so that a long group
    or window name cannot push the axes off the figure (matplotlib's "Tight layout not applied")."""
    name = str(name)
    return name if len(name) <= width else name[:width - 1] + "…"


def save_figure(fig, path, dpi: int = DPI, close: bool = True) -> None:
    """Write ``fig`` through a temporary file, then close it (unless it is a template drawn again):
    PNG, or JPEG for a ``.jpg`` path (noise-like images such as carpet plots, where PNG's lossless
    compression gains little)."""
    jpeg = str(path).endswith(".jpg")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="jpeg" if jpeg else "png", dpi=dpi,
                    **({"pil_kwargs": {"quality": 85}} if jpeg else {}))
    if close:
        plt.close(fig)


def mni152_background():
    """nilearn's bundled MNI152 template at 2 mm, the background of the ROI figures. nilearn resamples
    its 1 mm file on every call (~0.5 s, most of the ROI figure's time); the result is kept beside the
    per-run cache (``memo.memo_arrays``, keyed by the versions that make it) and built by
    ``fclab cache --warm``."""
    import nibabel as nib

    from fclab.framework import memo

    def build():
        from nilearn.datasets import load_mni152_template

        img = load_mni152_template(resolution=2)
        return {"data": np.asanyarray(img.dataobj), "affine": img.affine}

    z = memo.memo_arrays("report", "mni152", "resolution=2", (), ("nilearn", "nibabel", "numpy", "scipy"), build)
    return nib.Nifti1Image(z["data"], z["affine"])


def roi_figure(atlas_img, atlas: pd.DataFrame, path, background=None, space: str = "MNI") -> None:
    """The ROIs over nilearn's bundled MNI152 template (no download), or over ``background`` (runs
    outside MNI space: the first run's mean image, whose ROIs these are), one colour and name each."""
    from matplotlib.colors import ListedColormap
    from nilearn import plotting

    n = len(atlas)
    colours = plt.get_cmap("tab10" if n <= 10 else "tab20")(np.arange(n) % (10 if n <= 10 else 20))
    cuts = []  # one axial slice through each ROI centroid, merging slices closer than 4 mm
    for z in sorted(atlas["z_mm"].dropna()):
        if not cuts or z - cuts[-1] >= 4:
            cuts.append(round(float(z)))
    cuts = cuts[:6] or [0]
    fig = plt.figure(figsize=(9, 4.2))
    plotting.plot_roi(atlas_img, bg_img=mni152_background() if background is None else background, display_mode="z",
                      cut_coords=cuts, cmap=ListedColormap(colours), vmin=0.5, vmax=n + 0.5,
                      colorbar=False, figure=fig, axes=(0, 0.3, 1, 0.7), draw_cross=False, annotate=True,
                      black_bg=False, resampling_interpolation="nearest")
    handles = [Patch(color=colours[i], label=f"{r.roi} ({r.x_mm:.0f}, {r.y_mm:.0f}, {r.z_mm:.0f})")
               for i, r in enumerate(atlas.itertuples())]
    fig.legend(handles=handles, loc="lower center", ncol=min(n, 3), frameon=False, fontsize=8,
               title=f"ROI (centroid, {space} mm)", title_fontsize=8)
    save_figure(fig, path)


def surface_roi_figure(dlabel, atlas: pd.DataFrame, path) -> None:
    """Surface ROIs (a CIFTI dlabel over the data's grayordinates) on the shipped mesh of their space,
    lateral and medial views of each hemisphere, and the ROIs of volume structures on nilearn's MNI152
    template; one colour and name each (the legend lists at most 30)."""
    from matplotlib.colors import ListedColormap
    from nilearn import plotting

    from fclab.framework.errors import DataError
    from fclab.framework.extraction.surface import HEMISPHERES, Grayordinates, mesh

    axis = dlabel.header.get_axis(1)
    space = (dlabel.nifti_header.get_intent()[2] or "").removeprefix("space-") or "fsLR"
    grid = Grayordinates(space, axis)
    labels = np.asarray(dlabel.dataobj).ravel().astype(int)
    n = len(atlas)
    palette = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]  # grey: no ROI
    colours = np.array([palette[i % len(palette)] for i in range(n)])
    cmap = ListedColormap(colours)
    views = []
    for hemi in HEMISPHERES:
        pos, vert, nv = grid.hemisphere(hemi)
        if not pos.size:
            continue
        try:
            coords, faces = mesh(space, hemi, nv)
        except DataError:
            continue
        per_vertex = np.zeros(nv)
        per_vertex[vert] = labels[pos]
        views += [(hemi, view, coords, faces, per_vertex) for view in ("lateral", "medial")]
    vox = axis.voxel[:, 0] >= 0
    rows = 1 + bool(vox.any() and labels[vox].any())
    fig = plt.figure(figsize=(9, 3.0 + 2.0 * (rows - 1) + 0.8))
    low = 0.16 if rows == 1 else 0.5  # the surface row spans low..0.98; volumes and legend below
    for i, (hemi, view, coords, faces, per_vertex) in enumerate(views):
        ax = fig.add_axes((i / max(len(views), 1), low, 1 / max(len(views), 1), 0.98 - low), projection="3d")
        # copies: nilearn's matplotlib backend centres the coordinates in place
        plotting.plot_surf_roi((np.array(coords), np.array(faces)), per_vertex, hemi={"L": "left", "R": "right"}[hemi], view=view,
                               cmap=cmap, vmin=0.5, vmax=n + 0.5, threshold=0.5,
                               colorbar=False, axes=ax, figure=fig,
                               title=f"{hemi} {view}")
    if not views:
        fig.text(0.5, (low + 0.98) / 2, f"no {space} mesh ships with the installed packages", ha="center")
    if rows == 2:
        shape = axis.volume_shape
        vol = np.zeros(shape, np.int16)
        ijk = axis.voxel[vox]
        vol[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = labels[vox]
        import nibabel as nib

        img = nib.Nifti1Image(vol, axis.affine)
        zs = sorted({round(float(z)) for z in atlas.loc[atlas["label"].isin(np.unique(labels[vox])), "z_mm"]})[:4]
        plotting.plot_roi(img, bg_img=mni152_background(), display_mode="z", cut_coords=zs or [0],
                          cmap=cmap, vmin=0.5, vmax=n + 0.5, colorbar=False, figure=fig,
                          axes=(0.1, 0.14, 0.8, 0.34), draw_cross=False, black_bg=False,
                          resampling_interpolation="nearest")
    shown = atlas.head(30)
    handles = [Patch(color=colours[i], label=r.roi) for i, r in enumerate(shown.itertuples())]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(shown), 6), frameon=False, fontsize=7,
               title=f"ROI ({n} in all)" if n > 30 else "ROI", title_fontsize=8)
    save_figure(fig, path)


def group_matrices(edges: pd.DataFrame, rois: list[str], groups, windows) -> dict[tuple[str, str], np.ndarray]:
    """(group or 'difference', window) -> ROI × ROI matrix of subject-mean values."""
    idx = {r: i for i, r in enumerate(rois)}
    out = {}
    means = edges.groupby(["group", "window", "roi_a", "roi_b"], observed=True)["value"].mean()
    for g in groups:
        for w in windows:
            m = np.full((len(rois), len(rois)), np.nan)
            if (g, w) in means.index.droplevel([2, 3]):
                for (a, b), v in means.loc[(g, w)].items():
                    m[idx[a], idx[b]] = m[idx[b], idx[a]] = v
            out[g, w] = m
    for w in windows:
        out["difference", w] = out[groups[1], w] - out[groups[0], w]
    return out


def value_colours(values: np.ndarray, signed: bool | None = None, bound: float | None = None) -> tuple[str, float, float]:
    """(colour map, vmin, vmax) for a matrix of values: a diverging map centred on 0 for signed values,
    a sequential one from 0 for values that are never negative (coherence, mutual information, ...).
    ``signed`` None: judged from the values (a scale declared without a sign). ``bound``: the largest
    magnitude the scale allows (1 for correlations), which the colour limits never exceed."""
    finite = values[np.isfinite(values)]
    lim = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    if bound is not None:
        lim = min(lim, bound)
    if signed is None:
        signed = bool(finite.size and finite.min() < 0)
    return ("RdBu_r", -lim, lim) if signed else ("viridis", 0.0, lim)


def matrices_figure(edges: pd.DataFrame, rois: list[str], groups, windows, scale, path) -> None:
    """Group-mean matrices per window (one row per group) and their difference (target − reference).
    ``scale``: a ``Scale`` or a scale name; its sign picks the colour map and its range bounds it."""
    sc = as_scale(scale)
    signed = sc.signed
    bounds = [abs(b) for b in (sc.low, sc.high) if b is not None]
    bound = max(bounds) if len(bounds) == 2 else None
    scale = sc.label
    mats = group_matrices(edges, rois, groups, windows)
    rows = [*groups, "difference"]
    W = len(windows)
    fig, axes = plt.subplots(3, W, figsize=(2.3 * W + 1.2, 7.4), squeeze=False)
    colours = value_colours(np.concatenate([mats[g, w].ravel() for g in groups for w in windows]), signed, bound)
    diff_colours = value_colours(np.concatenate([mats["difference", w].ravel() for w in windows]), signed=True)
    for i, row in enumerate(rows):
        for j, w in enumerate(windows):
            ax = axes[i, j]
            cmap, vmin, vmax = diff_colours if row == "difference" else colours
            im = ax.imshow(mats[row, w], cmap=cmap, vmin=vmin, vmax=vmax)
            small = len(rois) <= 12  # else no ticks: a tick per ROI costs seconds at 100+ ROIs
            ax.set_xticks(range(len(rois)) if small else [], [short(r) for r in rois] if small and i == 2 else [], rotation=90,
                          fontsize=6)
            ax.set_yticks(range(len(rois)) if small else [], [short(r) for r in rois] if small and j == 0 else [], fontsize=6)
            if i == 0:
                ax.set_title(short(w), fontsize=9)
            if j == 0:
                label = f"{short(groups[1])} − {short(groups[0])}" if row == "difference" else short(row)
                ax.set_ylabel(label, fontsize=9)
        fig.colorbar(im, ax=axes[i, :].tolist(), shrink=0.8, label=scale if row != "difference" else f"Δ {scale}")
    fig.suptitle("Group-mean connectivity per window", fontsize=11)
    save_figure(fig, path)


MIDLINE_MM = 2.0  # ROI centroids this close to x = 0 are on the midline, drawn in both sagittal views


def midline_copies(mat: np.ndarray, coords: np.ndarray, midline_mm: float = MIDLINE_MM):
    """``mat`` and ``coords`` with, for each midline node, a copy on the other side of nilearn's
    hemisphere test (just left of x = 0 for a node at x >= 0, at x = 0 for one at x < 0), joined to the
    nodes of that side and the midline as its original is. nilearn's left sagittal view draws an edge
    only when both ends have x < 0, its right view only when both have x >= 0, so without the copies
    an amygdala-vmPFC edge (vmPFC at x = 0) is missing from the left view. The copies' edges repeat in
    the axial view, on the originals' lines."""
    n, x = len(coords), coords[:, 0]
    mid = np.abs(x) <= midline_mm
    out_coords, index = [coords], {}
    for side, moved in ((-1, x >= 0), (1, x < 0)):  # the left view's copies, then the right view's
        for k in np.flatnonzero(mid & moved):
            index[side, int(k)] = n + len(index)
            out_coords.append(np.array([[-1e-3 if side < 0 else 0.0, *coords[k, 1:]]]))
    if not index:
        return mat, coords
    out = np.zeros((n + len(index), n + len(index)))
    out[:n, :n] = mat
    for a, b in zip(*np.nonzero(np.triu(mat, 1))):
        for side in (-1, 1):
            ends = [index.get((side, int(e)), e) for e in (a, b)]
            on_side = all(mid[e] or np.sign(x[e]) == side for e in (a, b))
            if on_side and ends != [a, b]:
                out[ends[0], ends[1]] = out[ends[1], ends[0]] = mat[a, b]
    return out, np.vstack(out_coords)


def connectome_figure(results: pd.DataFrame, atlas: pd.DataFrame, windows, alpha: float, what: str, path,
                      top: int = 40) -> int:
    """Glass-brain views (nilearn's bundled outlines; no download) of one test's ``group:window`` rows,
    one row of views per window that has any: the edges with adjusted p < ``alpha`` (at most ``top``,
    the smallest adjusted p first), coloured by the sign and size of the estimate, between the ROI
    centroids. Windows without such an edge are named in the title instead of drawn empty (each view
    costs ~0.3 s of outlines). Returns how many edges were drawn over all windows."""
    from nilearn import plotting

    rois = atlas["roi"].tolist()
    pos = {r: i for i, r in enumerate(rois)}
    coords = atlas[["x_mm", "y_mm", "z_mm"]].to_numpy(float)
    rows = results[results["window"].isin(windows) & (results["p_adj"] < alpha)
                   & results["roi_a"].isin(pos) & results["roi_b"].isin(pos)]
    lim = float(rows["estimate"].abs().max()) if len(rows) else 1.0
    drawn_windows = [w for w in windows if (rows["window"] == w).any()]
    empty = [w for w in windows if w not in drawn_windows]
    fig, axes = plt.subplots(max(1, len(drawn_windows)), 1, figsize=(8, 2.4 * max(1, len(drawn_windows)) + 0.7),
                             squeeze=False)
    drawn = 0
    for ax, w in zip(axes[:, 0], drawn_windows or [None]):
        shown = rows[rows["window"] == w].nsmallest(top, "p_adj")
        mat = np.zeros((len(rois), len(rois)))
        for r in shown.itertuples():
            mat[pos[r.roi_a], pos[r.roi_b]] = mat[pos[r.roi_b], pos[r.roi_a]] = r.estimate
        drawn += len(shown)
        more = (rows["window"] == w).sum() - len(shown)
        label = f"{w}: {len(shown)} edge{'s' if len(shown) != 1 else ''}" + (f" (of {len(shown) + more})" if more else "")
        ax.set_axis_off()
        plotting.plot_connectome(*midline_copies(mat, coords), axes=ax, display_mode="lzr", node_size=12, node_color="0.35",
                                 edge_cmap="RdBu_r", edge_vmin=-lim, edge_vmax=lim, colorbar=False,
                                 title=label if w else "no window has one", edge_kwargs={"linewidth": 1.6})
    fig.subplots_adjust(right=0.85, top=1 - 0.75 / fig.get_figheight())
    sm = plt.cm.ScalarMappable(cmap="RdBu_r", norm=plt.Normalize(-lim, lim))
    fig.colorbar(sm, cax=fig.add_axes((0.89, 0.3, 0.02, 0.4)), label="estimate (target − reference)")
    none = f"\nnone with adjusted p < {alpha:g}: {', '.join(empty)}" if empty and drawn_windows else ""
    fig.suptitle(what + none, fontsize=11)
    save_figure(fig, path)
    return drawn


def fd_figure(motion: pd.DataFrame, run_qc: pd.DataFrame, groups, path) -> None:
    """Framewise displacement per volume, distribution per group."""
    groups_of = run_qc.drop_duplicates("subject").set_index("subject")["group"]
    m = motion.assign(group=motion["subject"].map(groups_of)).dropna(subset=["framewise_displacement"])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    hi = float(np.nanpercentile(m["framewise_displacement"], 99.5)) if len(m) else 1.0
    bins = np.linspace(0, max(hi, 1e-3), 50)
    for g, colour in zip(groups, GROUP_COLOURS):
        fd = m.loc[m["group"] == g, "framewise_displacement"].to_numpy()
        if fd.size:  # the legend's mean is the study table's: the mean over the group's runs of each run's mean
            run_mean = float(run_qc.loc[run_qc["group"] == g, "mean_fd"].mean())
            ax.hist(fd, bins=bins, density=True, histtype="step", lw=1.6, color=colour,
                    label=f"{short(g)} (n = {m.loc[m['group'] == g, 'subject'].nunique()}, mean of run means {run_mean:.3f} mm)")
    ax.set_xlabel("framewise displacement (mm)")
    ax.set_ylabel("density (per mm)")
    finish_figure(fig, ax, "Head motion: FD per volume", path)


def motion_window_figure(wm: pd.DataFrame, tests: pd.DataFrame, groups, windows, path, alpha: float = 0.05) -> None:
    """Mean FD per window and group (mean over subjects with a 1 − α t interval, one point per
    subject behind it), and the censored fraction the same way when any volume was censored;
    windows where the groups differ (Holm-adjusted Mann–Whitney p < α) are starred."""
    from fclab.framework.report.qc import MOTION_MEASURES

    measures = ["mean_fd"] + (["censored"] if (wm["censored"] > 0).any() else [])
    fig, axes = plt.subplots(1, len(measures), figsize=(5.2 * len(measures) + 0.6, 3.8), squeeze=False)
    x = np.arange(len(windows))
    for ax, measure in zip(axes[0], measures):
        for k, (g, colour) in enumerate(zip(groups, GROUP_COLOURS)):
            off = (k - 0.5) * 0.2
            means, lows, highs = [], [], []
            for i, w in enumerate(windows):
                v = wm.loc[(wm["group"] == g) & (wm["window"] == w), measure].dropna().to_numpy(float)
                ax.scatter(np.full(v.size, i + off), v, s=7, color=colour, alpha=0.35, lw=0)
                m = v.mean() if v.size else np.nan
                half = st.t.ppf(1 - alpha / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else np.nan
                means.append(m), lows.append(m - half), highs.append(m + half)
            means = np.array(means)
            ax.errorbar(x + off, means, yerr=[means - np.array(lows), np.array(highs) - means], fmt="o-", color=colour,
                        capsize=3, lw=1.6, label=short(g))
        t = tests[tests["measure"] == measure].set_index("window")
        top = ax.get_ylim()[1]
        for i, w in enumerate(windows):
            if w in t.index and t.loc[w, "p_holm"] < alpha:
                ax.annotate("*", (i, top), ha="center", va="top", fontsize=14)
        ax.set_xticks(x, [short(w) for w in windows], rotation=30 if len(windows) > 4 else 0)
        ax.set_xlabel("window")
        ax.set_ylabel(MOTION_MEASURES[measure])
        ax.set_ylim(bottom=0)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title({"mean_fd": "Mean FD per window", "censored": "Censored fraction per window"}[measure], fontsize=10)
    axes[0][0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def qcfc_distance_figure(q: pd.DataFrame, edges: pd.DataFrame, atlas: pd.DataFrame, groups, window: str,
                         scale: str, path) -> None:
    """The QC-FC distribution over every edge and window (``qc.qc_fc_all``), and group-mean
    connectivity against inter-ROI (centroid) distance in ``window``."""
    scale = as_scale(scale).label
    xyz = atlas.set_index("roi")[["x_mm", "y_mm", "z_mm"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    r = q["qc_fc_r"].dropna().to_numpy()
    ax1.hist(r, bins=np.linspace(-1, 1, 41), color="0.5")
    ax1.axvline(0, color="k", lw=0.8)
    ax1.set_xlabel("QC-FC r (mean FD vs edge value, across subjects)")
    ax1.set_ylabel("edge × window")
    ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_title(f"QC-FC, {r.size} edge-windows: median |r| = "
                  f"{np.median(np.abs(r)) if r.size else np.nan:.2f}", fontsize=10)
    ax1.spines[["top", "right"]].set_visible(False)
    e = edges[edges["window"] == window]
    means = e.groupby(["group", "roi_a", "roi_b"], observed=True)["value"].mean()
    for g, colour in zip(groups, GROUP_COLOURS):
        if g not in means.index.get_level_values(0):
            continue
        pts = [(float(np.linalg.norm(xyz.loc[a].to_numpy() - xyz.loc[b].to_numpy())), v)
               for (a, b), v in means.loc[g].items() if a in xyz.index and b in xyz.index]
        if pts:
            d, v = np.array(pts).T
            ax2.scatter(d, v, s=18, color=colour, alpha=0.8, label=short(g))
    ax2.set_xlabel("distance between ROI centroids (mm)")
    ax2.set_ylabel(f"group-mean connectivity ({scale})")
    finish_figure(fig, ax2, f"Connectivity against distance, {window}", path)


_CARPET: dict = {}  # this process's carpet figure, drawn again for every run (see carpet_figure)


def _carpet_template():
    """The carpet figure's axes, lines, images and labels, built once per process: creating them (and
    their ticks) took as long as drawing, so every run after the first redraws the same figure."""
    if not _CARPET:
        fig, axes = plt.subplots(4, 1, figsize=(9, 6.4), sharex=True, gridspec_kw={"height_ratios": [1, 1, 2, 2]})
        (fd,) = axes[0].plot([], [], color="0.2", lw=0.8)
        axes[0].set_ylabel("FD (mm)", fontsize=8)
        (raw,) = axes[1].plot([], [], color="0.5", lw=0.8, label="before denoising")
        (clean,) = axes[1].plot([], [], color=GROUP_COLOURS[0], lw=0.8, label="after")
        axes[1].set_ylabel("DVARS (%)", fontsize=8)
        axes[1].legend(frameon=False, fontsize=7, loc="upper right", ncol=2)
        images = []
        for ax, label in ((axes[2], "voxels, before"), (axes[3], "voxels, after")):
            images.append(ax.imshow(np.zeros((1, 1)), aspect="auto", cmap="gray", vmin=-3, vmax=3,
                                    interpolation="nearest"))
            ax.set_ylabel(label, fontsize=8)
            ax.set_yticks([])
        for ax in axes[:2]:
            ax.spines[["top", "right"]].set_visible(False)
            ax.tick_params(labelsize=7)
        axes[3].set_xlabel("time from run start (min)")
        # fixed margins (the layout never changes): tight_layout would measure every label
        fig.subplots_adjust(left=0.075, right=0.985, top=0.955, bottom=0.075, hspace=0.12)
        _CARPET.update(fig=fig, axes=axes, lines=(fd, raw, clean), images=images, marks=[])
    return _CARPET


def carpet_figure(run_motion: pd.DataFrame, carpet: tuple[np.ndarray, np.ndarray], tr: float, title: str, path) -> None:
    """One run's QC over time: framewise displacement (censored volumes marked), DVARS before and
    after denoising, and the carpet (sampled in-mask voxels, z-scored) before and after. The figure
    is this process's template (``_carpet_template``) with the run's data and limits set."""
    c = _carpet_template()
    axes, (fd_line, raw_line, clean_line) = c["axes"], c["lines"]
    for mark in c["marks"]:  # the previous run's censored points and their legend
        mark.remove()
    c["marks"].clear()
    t = run_motion["volume"].to_numpy() * tr / 60.0
    fd = run_motion["framewise_displacement"].to_numpy(float)
    fd_line.set_data(t, fd)
    cens = run_motion["censored"].to_numpy(bool)
    if cens.any():
        c["marks"].append(axes[0].scatter(t[cens], fd[cens], color="#c44e52", s=8, zorder=3,
                                          label=f"censored ({cens.sum()})"))
        c["marks"].append(axes[0].legend(frameon=False, fontsize=7, loc="upper right"))
    raw_line.set_data(t, run_motion["dvars_raw"].to_numpy(float))
    clean_line.set_data(t, run_motion["dvars_clean"].to_numpy(float))
    extent = (t[0] - tr / 120, t[-1] + tr / 120) if t.size else (0, 1)
    for image, data in zip(c["images"], carpet):
        image.set_data(data)
        image.set_extent((*extent, data.shape[0], 0))
    for ax in axes[:2]:  # x is shared and set by the images' extent
        ax.relim()
        ax.autoscale_view(scalex=False)
    axes[0].set_title(title, fontsize=10)
    save_figure(c["fig"], path, dpi=100, close=False)  # one per run: screen resolution keeps pages small


_MATRICES: dict = {}  # this process's subject matrix figures, one per layout (see subject_matrices_figure)


def subject_matrices_figure(edges: pd.DataFrame, rois: list[str], windows, scale, path) -> None:
    """One subject's connectivity matrix per window (``edges``: that subject's rows). The figure for a
    layout (ROIs, windows, scale) is built once per process and redrawn with each subject's values."""
    sc = as_scale(scale)
    bounds = [abs(b) for b in (sc.low, sc.high) if b is not None]
    idx = {r: i for i, r in enumerate(rois)}
    mats = []
    for w in windows:
        m = np.full((len(rois), len(rois)), np.nan)
        f = edges[edges["window"] == w]
        a = f["roi_a"].astype(object).map(idx).to_numpy(float)
        b = f["roi_b"].astype(object).map(idx).to_numpy(float)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b, v = a[ok].astype(int), b[ok].astype(int), f["value"].to_numpy(float)[ok]
        m[a, b] = m[b, a] = v
        mats.append(m)
    cmap, vmin, vmax = value_colours(np.concatenate([m.ravel() for m in mats]) if mats else np.array([np.nan]),
                                     sc.signed, max(bounds) if len(bounds) == 2 else None)
    layout = (tuple(rois), tuple(windows), sc.label)
    if layout not in _MATRICES:
        for old, _ in _MATRICES.values():  # one layout per study
            plt.close(old)
        _MATRICES.clear()
        W = len(windows)
        fig, axes = plt.subplots(1, W, figsize=(2.3 * W + 1.2, 2.9), squeeze=False)
        small = len(rois) <= 12
        images = []
        for j, (w, m) in enumerate(zip(windows, mats)):
            ax = axes[0, j]
            images.append(ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax))
            ax.set_xticks(range(len(rois)) if small else [], [short(r) for r in rois] if small else [], rotation=90, fontsize=6)
            ax.set_yticks(range(len(rois)) if small else [], [short(r) for r in rois] if small and j == 0 else [], fontsize=6)
            ax.set_title(short(w), fontsize=9)
        fig.colorbar(images[-1], ax=axes[0, :].tolist(), shrink=0.8, label=sc.label)
        _MATRICES[layout] = (fig, images)
    fig, images = _MATRICES[layout]
    for image, m in zip(images, mats):
        image.set_data(m)
        image.set_cmap(cmap)
        image.set_clim(vmin, vmax)
    save_figure(fig, path, dpi=100, close=False)


def roi_qc_figure(roi_qc: pd.DataFrame, path) -> None:
    """Per ROI: coverage within the brain mask and mean tSNR, over subjects and runs."""
    rois = list(dict.fromkeys(roi_qc["roi"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, col, label in ((ax1, "coverage", "coverage within the brain mask (fraction)"),
                           (ax2, "tsnr", "mean tSNR of the ROI's voxels")):
        data = [roi_qc.loc[roi_qc["roi"] == r, col].to_numpy(float) for r in rois]
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(rois) + 1))
        ax.set_xticklabels([short(r) for r in rois], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.spines[["top", "right"]].set_visible(False)
    ax1.set_ylim(-0.02, 1.05)
    fig.suptitle("ROI quality: every subject × run", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def finish_figure(fig, ax, title, path) -> None:
    """Shared styling (title, legend, no top/right spines), then an atomic PNG write."""
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    save_figure(fig, path)
