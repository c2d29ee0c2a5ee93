"""One-dimensional directions in a site's activation space, fit on labelled representations.

Each method maps ``X`` (n, d) and binary labels ``y`` (n,) in {+1, -1} to a unit vector (d,)
oriented so that the positive class projects higher:

| method | direction |
| --- | --- |
| ``mean_diff`` | mean(X[y=+1]) − mean(X[y=−1]) |
| ``probe`` | weights of an L2 logistic regression (scikit-learn) |
| ``pca`` | first principal component (unsupervised; labels only fix the sign) |
| ``kmeans`` | difference of the two k-means centroids (unsupervised; labels fix the sign) |
| ``das`` | a learned 1-D DAS subspace (`probes.direction_das`, needs the model) |

>>> g = torch.Generator().manual_seed(0)
>>> u = torch.zeros(8); u[0] = 1.0
>>> y = torch.tensor([1, -1] * 50); X = torch.randn(100, 8, generator=g) * 0.1 + 3 * y[:, None] * u
>>> round(float(mean_difference(X, y) @ u), 3)
1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

METHODS = ("mean_diff", "probe", "pca", "kmeans", "das")


def _check(X: torch.Tensor, y: torch.Tensor | Sequence[int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    if X.dim() != 2 or X.shape[0] < 2:
        raise ValueError(f"representations must be (n, d) with n >= 2, got shape {tuple(X.shape)}")
    Xn = X.detach().double().cpu().numpy()
    if y is None:
        return Xn, None
    yn = np.asarray(torch.as_tensor(y).cpu()).reshape(-1)
    if yn.shape[0] != Xn.shape[0]:
        raise ValueError(f"{yn.shape[0]} labels for {Xn.shape[0]} representations; give one label per row")
    if not set(np.unique(yn)) <= {-1, 1} or len(np.unique(yn)) != 2:
        raise ValueError(f"labels must contain both +1 and -1 (and nothing else), got values {sorted(set(yn.tolist()))}")
    return Xn, yn


def _unit(v: np.ndarray, Xn: np.ndarray, yn: np.ndarray | None) -> torch.Tensor:
    """Normalize and orient ``v`` so the positive class's mean projection is the higher one."""
    norm = np.linalg.norm(v)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError("the fitted direction is zero: the classes have identical representations")
    v = v / norm
    if yn is not None and (Xn[yn == 1] @ v).mean() < (Xn[yn == -1] @ v).mean():
        v = -v
    return torch.from_numpy(v).float()  # (d,)


def mean_difference(X: torch.Tensor, y) -> torch.Tensor:
    """Unit vector along mean(X[y=+1]) − mean(X[y=−1]); X (n, d) -> (d,)."""
    Xn, yn = _check(X, y)
    return _unit(Xn[yn == 1].mean(0) - Xn[yn == -1].mean(0), Xn, yn)


def logistic_probe(X: torch.Tensor, y, C: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Unit weight vector of an L2-regularized logistic regression (inverse strength ``C``).

    Features are centered but not rescaled, so the weights live in the activation basis.
    """
    Xn, yn = _check(X, y)
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    clf.fit(Xn - Xn.mean(0), yn)
    return _unit(clf.coef_[0], Xn, yn)


def pca_direction(X: torch.Tensor, y=None, seed: int = 0) -> torch.Tensor:
    """First principal component of X; with labels, oriented toward the positive class."""
    Xn, yn = _check(X, y)
    return _unit(PCA(n_components=1, random_state=seed).fit(Xn).components_[0], Xn, yn)


def kmeans_direction(X: torch.Tensor, y=None, seed: int = 0) -> torch.Tensor:
    """Difference of the two k-means centroids; with labels, oriented toward the positive class."""
    Xn, yn = _check(X, y)
    km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(Xn)
    return _unit(km.cluster_centers_[1] - km.cluster_centers_[0], Xn, yn)


FITTERS: dict[str, Callable] = {"mean_diff": mean_difference, "probe": logistic_probe,
                                "pca": pca_direction, "kmeans": kmeans_direction}


def fit_directions(X: torch.Tensor, y, methods: Sequence[str] = ("mean_diff", "probe", "pca", "kmeans")
                   ) -> dict[str, torch.Tensor]:
    """Several directions at once: {method: (d,) unit vector}. ``das`` needs the model: see
    `probes.direction_das.das_direction`.

    >>> X = torch.randn(40, 4); y = torch.tensor([1, -1] * 20); X[:, 1] += 5 * y
    >>> sorted(fit_directions(X, y))
    ['kmeans', 'mean_diff', 'pca', 'probe']
    """
    unknown = [m for m in methods if m not in FITTERS]
    if unknown:
        raise ValueError(f"unknown direction method(s) {unknown}: choose from {sorted(FITTERS)} "
                         f"(and 'das' through probes.direction_das)")
    return {m: FITTERS[m](X, y) for m in methods}


def cosine_matrix(directions: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Cosine similarity between every pair of directions (a square DataFrame).

    >>> float(cosine_matrix({"a": torch.tensor([1., 0.]), "b": torch.tensor([1., 1.])}).loc["a", "b"].round(3))
    0.707
    """
    names = list(directions)
    V = torch.stack([directions[n].float() / directions[n].float().norm() for n in names])  # (m, d)
    return pd.DataFrame((V @ V.T).numpy().astype(float), index=names, columns=names)


@dataclass
class Direction:
    """A fitted direction with its decision threshold: the midpoint of the class-mean projections.

    >>> X = torch.tensor([[2.0, 0.0], [-2.0, 0.0]]); d = Direction.fit(X, torch.tensor([1, -1]))
    >>> d.predict(torch.tensor([[1.0, 5.0]])).tolist()
    [1]
    """

    vector: torch.Tensor  # (d,) unit
    threshold: float  # projections above it are classified +1
    method: str = "mean_diff"
    site: str = ""

    @classmethod
    def fit(cls, X: torch.Tensor, y, method: str = "mean_diff", site: str = "") -> "Direction":
        return cls.from_vector(fit_directions(X, y, [method])[method], X, y, method, site)

    @classmethod
    def from_vector(cls, vector: torch.Tensor, X: torch.Tensor, y, method: str = "", site: str = "") -> "Direction":
        """Wrap a given unit vector, with the threshold fit on labelled X."""
        _, yn = _check(X, y)
        proj = (X.float() @ vector.float()).numpy()  # (n,)
        return cls(vector.float(), float((proj[yn == 1].mean() + proj[yn == -1].mean()) / 2), method, site)

    def project(self, X: torch.Tensor) -> torch.Tensor:
        """Projections ``X @ u``: (..., d) -> (...)."""
        return X.float() @ self.vector  # (...,)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """+1 / -1 per row of X (..., d)."""
        return torch.where(self.project(X) > self.threshold, 1, -1)  # (...,)

    def accuracy(self, X: torch.Tensor, y) -> float:
        """Share of rows of X (n, d) classified as their label y (n,)."""
        return float((self.predict(X) == torch.as_tensor(y)).float().mean())
