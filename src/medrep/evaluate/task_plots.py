"""The figures of ``medrep evaluate taskmap`` beyond the maps (drawn by :func:`~.embedding_map.plot_map`):
the task x task similarity heatmap, and the strength-sweep trajectories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..tasks.base import FAMILIES
from .figures import pyplot, save_figure


def plot_similarity(path: str | Path, similarity: np.ndarray, names: Sequence[str], families: Sequence[str], title: str = "") -> Path:
    """Heatmap of the task x task cosine similarity; tasks grouped by family, each family's names in one
    colour and its block framed."""
    plt = pyplot()
    order = sorted(range(len(names)), key=lambda i: (FAMILIES.index(families[i]) if families[i] in FAMILIES else len(FAMILIES), i))
    sim = np.asarray(similarity)[np.ix_(order, order)]
    fams = [families[i] for i in order]
    # colours by sorted family name, as the embedding maps colour their classes (medrep.evaluate.embedding_map)
    colours = {f: plt.get_cmap("tab10")(j) for j, f in enumerate(sorted(set(fams)))}
    n = len(order)
    side = float(np.clip(0.32 * n + 3, 5, 16))
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=120)
    try:
        im = ax.imshow(sim, cmap="viridis", vmin=min(0.0, float(sim.min())), vmax=1.0)
        ax.set_xticks(range(n), [names[i] for i in order], rotation=90, fontsize=7)
        ax.set_yticks(range(n), [names[i] for i in order], fontsize=7)
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            for label, fam in zip(labels, fams):
                label.set_color(colours[fam])
        start = 0
        for fam in dict.fromkeys(fams):
            size = fams.count(fam)
            ax.add_patch(plt.Rectangle((start - 0.5, start - 0.5), size, size, fill=False, ec=colours[fam], lw=2))
            start += size
        handles = [plt.Line2D([], [], ls="", marker="s", color=c, label=f) for f, c in colours.items()]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.22, 1), fontsize=8, frameon=False, title="family")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="cosine similarity of task centroids")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        path = save_figure(fig, path, bbox_inches="tight")  # long task names and the outside legend stay in
    finally:
        plt.close(fig)
    return path


def plot_trajectories(path: str | Path, sweeps: Mapping[str, Mapping[str, Any]], title: str = "") -> Path:
    """Mean cosine distance from strength 0 (band: one standard deviation over images) against strength,
    one line per swept task, its Spearman correlation in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    try:
        for name, sweep in sweeps.items():
            if sweep["distance_mean"][0] is None:  # undefined: every image's first embedding is zero (diff of an identity pair)
                ax.plot([], [], ls="", label=f"{name}: cosine distance undefined")
                continue
            s, m, sd = (np.asarray(sweep[k]) for k in ("strengths", "distance_mean", "distance_std"))
            rho = sweep["spearman"]["mean"]
            line, = ax.plot(s, m, marker="o", ms=3, label=f"{name} (Spearman {rho:.2f})" if rho is not None else name)
            ax.fill_between(s, m - sd, m + sd, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_xlabel("task strength")
        ax.set_ylabel("cosine distance from strength 0")
        ax.legend(fontsize=8, frameon=False)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        path = save_figure(fig, path)
    finally:
        plt.close(fig)
    return path
