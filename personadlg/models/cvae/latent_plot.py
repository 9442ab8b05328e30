"""A picture of the latent space: 2-D PCA of prior and posterior means, coloured by aspect.

Written as `latent_space.png` at the end of training (from the validation examples) and on demand
(`personadlg plot RUN --latent DATA`):

    >>> cfg, model = load_checkpoint("runs/cvae-tiny/final")
    >>> plot_examples(model, examples, "latent.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def pca_2d(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(projection basis (d, 2), mean (d,), explained variance ratio (2,)) of POINTS (N, d)."""
    x = points.double()
    mean = x.mean(0)
    _, s, v = torch.linalg.svd(x - mean, full_matrices=False)
    var = s.pow(2)
    k = min(2, v.shape[0])
    basis = v[:k].T
    if k < 2:  # a single point or dimension: pad the basis
        basis = torch.cat([basis, torch.zeros(x.shape[1], 2 - k, dtype=x.dtype)], dim=1)
    ratio = var[:2] / var.sum().clamp(min=1e-12)
    return basis, mean, torch.nn.functional.pad(ratio, (0, 2 - ratio.shape[0]))


def plot_latent_space(model: Any, features: Sequence[dict[str, Any]], out: str | Path) -> Path:
    """Draw the prior and posterior means of FEATURES (a cvae model's encoded examples) into OUT.

    One panel per attribute: examples labelled for it, posterior means as dots and prior means as
    crosses, one colour per aspect; the PCA is fitted on all means, so panels share the axes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mu_post, _ = model.latents(features, which="posterior")
    mu_prior, _ = model.latents(features, which="prior")
    basis, mean, ratio = pca_2d(torch.cat([mu_post, mu_prior]))
    p_post = ((mu_post.double() - mean) @ basis).numpy()
    p_prior = ((mu_prior.double() - mean) @ basis).numpy()
    attr = np.stack([np.asarray(f["attr"]) for f in features]).reshape(len(features), -1)
    names = list(model.attributes)
    fig, axes = plt.subplots(
        1, len(names), figsize=(4.6 * len(names), 4.4), squeeze=False, sharex=True, sharey=True
    )
    for a, (ax, name) in enumerate(zip(axes[0], names)):
        for k, aspect in enumerate(model.attributes[name]):
            rows = attr[:, a] == k
            color = f"C{k}"
            ax.scatter(
                *p_post[rows].T, s=14, color=color, alpha=0.75, label=f"{aspect} (posterior)"
            )
            ax.scatter(
                *p_prior[rows].T,
                s=22,
                color=color,
                marker="x",
                alpha=0.6,
                label=f"{aspect} (prior)",
            )
        ax.set_title(f"{name} (n={int((attr[:, a] >= 0).sum())})")
        ax.set_xlabel(f"PC1 ({100 * float(ratio[0]):.0f}%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0, 0].set_ylabel(f"PC2 ({100 * float(ratio[1]):.0f}%)")
    fig.suptitle("latent space: posterior (dots) and prior (crosses) means, 2-D PCA")
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_examples(
    model: Any, examples: Sequence[Any], out: str | Path, *, limit: int = 2000
) -> Path:
    """Encode EXAMPLES with a loaded cvae MODEL and draw their latent space into OUT
    (`personadlg plot RUN --latent DATA`; the CLI loads the checkpoint and the data)."""
    from personadlg.errors import UsageError

    feats = [f for f in (model.encode(ex) for ex in list(examples)[:limit]) if f]
    if not feats:
        raise UsageError("no example with a reference response to encode")
    return plot_latent_space(model, feats, out)
