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

from fclab.framework.contracts import as_scale  # noqa: E402
from fclab.framework.io import atomic_path  # noqa: E402

GROUP_COLOURS = ("#4c72b0", "#dd8452")  # reference, target
DPI = 150


def save_figure(fig, path) -> None:
    """Write ``fig`` as PNG through a temporary file, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def roi_figure(atlas_img, atlas: pd.DataFrame, path) -> None:
    """The ROIs over nilearn's bundled MNI152 template (no download), one colour and name each."""
    from matplotlib.colors import ListedColormap
    from nilearn import plotting
    from nilearn.datasets import load_mni152_template

    n = len(atlas)
    colours = plt.get_cmap("tab10" if n <= 10 else "tab20")(np.arange(n) % (10 if n <= 10 else 20))
    cuts = []  # one axial slice through each ROI centroid, merging slices closer than 4 mm
    for z in sorted(atlas["z_mm"].dropna()):
        if not cuts or z - cuts[-1] >= 4:
            cuts.append(round(float(z)))
    cuts = cuts[:6] or [0]
    fig = plt.figure(figsize=(9, 4.2))
    plotting.plot_roi(atlas_img, bg_img=load_mni152_template(resolution=2), display_mode="z",
                      cut_coords=cuts, cmap=ListedColormap(colours), vmin=0.5, vmax=n + 0.5,
                      colorbar=False, figure=fig, axes=(0, 0.3, 1, 0.7), draw_cross=False, annotate=True,
                      black_bg=False, resampling_interpolation="nearest")
    handles = [Patch(color=colours[i], label=f"{r.roi} ({r.x_mm:.0f}, {r.y_mm:.0f}, {r.z_mm:.0f})")
               for i, r in enumerate(atlas.itertuples())]
    fig.legend(handles=handles, loc="lower center", ncol=min(n, 3), frameon=False, fontsize=8,
               title="ROI (centroid, MNI mm)", title_fontsize=8)
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
            ax.set_xticks(range(len(rois)))
            ax.set_yticks(range(len(rois)))
            small = len(rois) <= 12
            ax.set_xticklabels(rois if small and i == 2 else [], rotation=90, fontsize=6)
            ax.set_yticklabels(rois if small and j == 0 else [], fontsize=6)
            if i == 0:
                ax.set_title(w, fontsize=9)
            if j == 0:
                label = f"{groups[1]} − {groups[0]}" if row == "difference" else row
                ax.set_ylabel(label, fontsize=9)
        fig.colorbar(im, ax=axes[i, :].tolist(), shrink=0.8, label=scale if row != "difference" else f"Δ {scale}")
    fig.suptitle("Group-mean connectivity per window", fontsize=11)
    save_figure(fig, path)


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
                    label=f"{g} (n = {m.loc[m['group'] == g, 'subject'].nunique()}, mean of run means {run_mean:.3f} mm)")
    ax.set_xlabel("framewise displacement (mm)")
    ax.set_ylabel("density (per mm)")
    finish_figure(fig, ax, "Head motion: FD per volume", path)


def censored_fraction(edges: pd.DataFrame, run_qc: pd.DataFrame, windows) -> pd.DataFrame:
    """Per subject and window: 1 − clean volumes used / volumes the window spans at the run's TR."""
    tr = run_qc.dropna(subset=["tr_s"]).drop_duplicates("subject").set_index("subject")["tr_s"]
    e = edges[edges["window"].isin(windows)].drop_duplicates(["subject", "window", "window_start_s"])
    e = e[np.isfinite(e["window_start_s"].to_numpy(float))]  # runs skipped at extraction have no bounds
    nominal = np.round((e["window_end_s"] - e["window_start_s"]).to_numpy() / e["subject"].map(tr).to_numpy())
    out = e[["subject", "group", "window"]].reset_index(drop=True)
    out["censored"] = np.clip(1 - e["n_volumes"].to_numpy() / nominal, 0, 1)
    return out


def censoring_figure(edges: pd.DataFrame, run_qc: pd.DataFrame, groups, windows, path) -> None:
    """Fraction of each window's volumes censored, per group."""
    e = censored_fraction(edges, run_qc, windows)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.38
    for k, (g, colour) in enumerate(zip(groups, GROUP_COLOURS)):
        data = [e.loc[(e["group"] == g) & (e["window"] == w), "censored"].to_numpy() for w in windows]
        pos = np.arange(len(windows)) + (k - 0.5) * width
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=True)
        for patch in bp["boxes"]:
            patch.set_facecolor(colour)
            patch.set_alpha(0.6)
        ax.plot([], [], color=colour, lw=6, alpha=0.6, label=g)
    ax.set_xticks(range(len(windows)))
    ax.set_xticklabels(windows)
    ax.set_xlabel("window")
    ax.set_ylabel("fraction of volumes censored")
    ax.set_ylim(-0.02, max(0.1, float(e["censored"].max()) * 1.1 if len(e) else 0.1))
    finish_figure(fig, ax, "Censoring per window", path)


def qc_fc(edges: pd.DataFrame, run_qc: pd.DataFrame, window: str) -> pd.DataFrame:
    """Per edge: Pearson r across subjects between mean FD (over runs) and the ``window`` value."""
    fd = run_qc.groupby("subject")["mean_fd"].mean()
    e = edges[edges["window"] == window]
    rows = []
    for (a, b), f in e.groupby(["roi_a", "roi_b"], sort=False, observed=True):
        x, y = f["subject"].map(fd).to_numpy(float), f["value"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        r = np.corrcoef(x[ok], y[ok])[0, 1] if ok.sum() > 2 and np.std(x[ok]) > 0 else np.nan
        rows.append({"roi_a": a, "roi_b": b, "qc_fc_r": r, "n": int(ok.sum())})
    return pd.DataFrame(rows)


def qcfc_distance_figure(edges: pd.DataFrame, run_qc: pd.DataFrame, atlas: pd.DataFrame, groups,
                         window: str, scale: str, path) -> pd.DataFrame:
    """QC-FC distribution, and FC against inter-ROI (centroid) distance per group, in ``window``."""
    scale = as_scale(scale).label
    q = qc_fc(edges, run_qc, window)
    xyz = atlas.set_index("roi")[["x_mm", "y_mm", "z_mm"]]
    dist = {(a, b): float(np.linalg.norm(xyz.loc[a].to_numpy() - xyz.loc[b].to_numpy()))
            for a, b in zip(q["roi_a"], q["roi_b"]) if a in xyz.index and b in xyz.index}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    r = q["qc_fc_r"].dropna().to_numpy()
    ax1.hist(r, bins=np.linspace(-1, 1, 21), color="0.5")
    ax1.axvline(0, color="k", lw=0.8)
    ax1.set_xlabel("QC-FC r (mean FD vs edge value, across subjects)")
    ax1.set_ylabel("edges")
    ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_title(f"QC-FC, {window}: median |r| = {np.median(np.abs(r)) if r.size else np.nan:.2f}", fontsize=10)
    ax1.spines[["top", "right"]].set_visible(False)
    e = edges[edges["window"] == window]
    means = e.groupby(["group", "roi_a", "roi_b"], observed=True)["value"].mean()
    for g, colour in zip(groups, GROUP_COLOURS):
        if g not in means.index.get_level_values(0):
            continue
        pts = [(dist[k], v) for k, v in means.loc[g].items() if k in dist]
        if pts:
            d, v = np.array(pts).T
            ax2.scatter(d, v, s=18, color=colour, alpha=0.8, label=g)
    ax2.set_xlabel("distance between ROI centroids (mm)")
    ax2.set_ylabel(f"group-mean connectivity ({scale})")
    finish_figure(fig, ax2, f"Connectivity against distance, {window}", path)
    return q


def roi_qc_figure(roi_qc: pd.DataFrame, path) -> None:
    """Per ROI: coverage within the brain mask and mean tSNR, over subjects and runs."""
    rois = list(dict.fromkeys(roi_qc["roi"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, col, label in ((ax1, "coverage", "coverage within the brain mask (fraction)"),
                           (ax2, "tsnr", "mean tSNR of the ROI's voxels")):
        data = [roi_qc.loc[roi_qc["roi"] == r, col].to_numpy(float) for r in rois]
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(rois) + 1))
        ax.set_xticklabels(rois, rotation=45, ha="right", fontsize=8)
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
