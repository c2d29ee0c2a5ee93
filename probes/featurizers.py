"""Fixed-basis featurizers: directions for a subspace interchange, fit on cached representations.

Each returns a (k', d) tensor of orthonormal rows, k' <= k: supervised methods give at most as
many directions as their weights have rank (a probe over 6 continents has rank <= 6), and say so
through the returned shape rather than padding with arbitrary directions.

>>> X, y = torch.randn(60, 8), ["a", "b", "c"] * 20
>>> pca_basis(X, 2).shape, mean_difference_basis(X, y, 4).shape
(torch.Size([2, 8]), torch.Size([2, 8]))
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from workbench.das import orthonormal_rows


def _check(X: torch.Tensor, k: int, y: Sequence | None = None) -> np.ndarray:
    if X.dim() != 2:
        raise ValueError(f"representations must be (n, d), got shape {tuple(X.shape)}")
    if not 1 <= k <= X.shape[1]:
        raise ValueError(f"k = {k} out of range: it must be between 1 and the hidden size {X.shape[1]}")
    if y is not None and len(y) != X.shape[0]:
        raise ValueError(f"{len(y)} labels for {X.shape[0]} representations; give one label per row")
    return X.detach().double().cpu().numpy()


def _top_right_singular(matrix: np.ndarray, k: int) -> torch.Tensor:
    """The top-k right singular vectors of ``matrix`` (m, d) with non-negligible singular values."""
    _, s, vt = np.linalg.svd(matrix, full_matrices=False)  # vt (min(m, d), d)
    keep = int((s > 1e-8 * max(float(s.max()), 1e-30)).sum()) if s.size else 0
    return orthonormal_rows(torch.from_numpy(vt[: min(k, keep)].copy()))  # (k', d)


def pca_basis(X: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k principal components of the representations (unsupervised), (k, d).

    >>> pca_basis(torch.randn(20, 5), 3).shape
    torch.Size([3, 5])
    """
    x = _check(X, k)
    return _top_right_singular(x - x.mean(0, keepdims=True), k)


def mean_difference_basis(X: torch.Tensor, y: Sequence, k: int) -> torch.Tensor:
    """Span of the class means minus the overall mean, top-k by SVD, (k', d) with k' <= classes - 1.

    >>> mean_difference_basis(torch.randn(40, 6), [0, 1] * 20, 3).shape
    torch.Size([1, 6])
    """
    x = _check(X, k, y)
    labels = np.asarray(list(y))
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"mean difference needs at least 2 classes, got {len(classes)}: {classes.tolist()}")
    means = np.stack([x[labels == c].mean(0) for c in classes]) - x.mean(0, keepdims=True)  # (C, d)
    return _top_right_singular(means, k)


def probe_basis(X: torch.Tensor, y: Sequence, k: int, seed: int = 0, max_iter: int = 500) -> torch.Tensor:
    """Directions of a multinomial logistic-regression probe (scikit-learn) on standardized
    inputs, mapped back to the representation space: top-k right singular vectors of the weights.

    >>> probe_basis(torch.randn(40, 6), [0, 1, 2, 3] * 10, 2).shape
    torch.Size([2, 6])
    """
    from sklearn.linear_model import LogisticRegression

    x = _check(X, k, y)
    labels = np.asarray(list(y))
    if len(np.unique(labels)) < 2:
        raise ValueError("a probe needs at least 2 classes among the labels")
    scale = x.std(0) + 1e-8  # (d,)
    probe = LogisticRegression(max_iter=max_iter, random_state=seed)
    probe.fit((x - x.mean(0)) / scale, labels)
    weights = probe.coef_ / scale  # (C or 1, d): logits are linear in x with these rows
    return _top_right_singular(weights, k)
