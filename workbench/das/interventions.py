"""Subspace interchange interventions for distributed alignment search (DAS).

All follow the workbench ``Intervention`` contract: ``forward(base, source)`` on gathered
``(B, k_pos, d)`` slices. They differ in how the subspace is chosen:

| class | subspace | trained |
| --- | --- | --- |
| `RotatedSpaceIntervention` | first ``k`` coordinates of a full d x d rotation R | R |
| `LowRankRotatedSpaceIntervention` | the k orthonormal rows of R (k x d) | R |
| `BoundlessRotatedSpaceIntervention` | a learned sigmoid boundary over rotated coordinates | R, boundary |
| `SubspaceInterchange` | a fixed basis (PCA, probe, mean difference, ...) | nothing |

>>> das = LowRankRotatedSpaceIntervention(d=8, k=2)
>>> base, source = torch.zeros(1, 1, 8), torch.ones(1, 1, 8)
>>> tuple(das(base, source).shape)
(1, 1, 8)
"""

from __future__ import annotations

import torch
from torch import nn

from ..interventions import Intervention
from ..orthogonal import OrthonormalRows


def _check_k(k: int, d: int, what: str = "subspace size k") -> int:
    if not 0 <= int(k) <= d:
        raise ValueError(f"{what} = {k} out of range: it must be between 0 and the hidden size {d}; choose k in 0-{d}")
    return int(k)


def _check_source(source: torch.Tensor | None, name: str) -> torch.Tensor:
    if source is None:
        raise ValueError(f"{name} swaps in a source: pass sources= (or source_values=) to the run")
    return source


class RotatedSpaceIntervention(Intervention):
    """DAS with a full rotation: ``out = Rᵀ [R s]_{:k} ⊕ [R b]_{k:}`` (R d x d orthogonal).

    Computed in rotated space (rotate base and source, swap the first k coordinates, rotate
    back), so R = I with k = d is a full patch bit for bit, and k = 0 returns ``base`` itself.
    A d x d Householder rotation costs O(d³) per step (~0.35 s at d = 576 on one core); the
    low-rank form gives the same subspaces for O(d k²).

    >>> das = RotatedSpaceIntervention(d=4, k=4).set_rotation(torch.eye(4))
    >>> b, s = torch.zeros(1, 1, 4), torch.arange(4.).view(1, 1, 4)
    >>> torch.equal(das(b, s), s)
    True
    """

    needs_source = True

    def __init__(self, d: int, k: int, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.hidden_size = d
        self.k = _check_k(k, d)
        self.rotation = OrthonormalRows(d, d, dtype=dtype, device=device)  # R (d, d)

    def set_rotation(self, matrix: torch.Tensor) -> "RotatedSpaceIntervention":
        """Set R to a given orthogonal (d, d) matrix, e.g. ``torch.eye(d)``."""
        self.rotation.set_(matrix)
        return self

    def basis(self) -> torch.Tensor:
        """The k swapped directions as rows, (k, d)."""
        return self.rotation.weight[: self.k].detach()

    def forward(self, base, source=None):
        source = _check_source(source, type(self).__name__)
        if self.k == 0:
            return base
        R = self.rotation.weight.to(base.dtype)  # (d, d)
        rotated_base = base @ R.T  # (B, n, d)
        rotated_source = source.to(base.dtype) @ R.T  # (B, n, d)
        mixed = torch.cat([rotated_source[..., : self.k], rotated_base[..., self.k:]], dim=-1)  # (B, n, d)
        return mixed @ R  # (B, n, d)


class LowRankRotatedSpaceIntervention(Intervention):
    """Low-rank DAS: ``out = b + Rᵀ(R s − R b)`` with R (k x d) orthonormal rows.

    The same subspace swap as the full rotation's first k rows, without the other d − k. k = 0
    returns ``base`` itself.

    >>> das = LowRankRotatedSpaceIntervention(d=8, k=2)
    >>> das.rotation.max_orthonormality_error() < 1e-5
    True
    """

    needs_source = True

    def __init__(self, d: int, k: int, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.hidden_size = d
        self.k = _check_k(k, d)
        self.rotation = OrthonormalRows(d, k, dtype=dtype, device=device) if self.k else None  # R (k, d)

    def set_rotation(self, matrix: torch.Tensor) -> "LowRankRotatedSpaceIntervention":
        """Set R to a given (k, d) matrix with orthonormal rows."""
        if self.rotation is None:
            raise ValueError("k = 0: this intervention has no rows to set")
        self.rotation.set_(matrix)
        return self

    def basis(self) -> torch.Tensor:
        """The swapped directions as rows, (k, d)."""
        if self.rotation is None:
            return torch.zeros(0, self.hidden_size)
        return self.rotation.weight.detach()

    def forward(self, base, source=None):
        source = _check_source(source, type(self).__name__)
        if self.rotation is None:
            return base
        R = self.rotation.weight.to(base.dtype)  # (k, d)
        delta = (source.to(base.dtype) - base) @ R.T  # (B, n, k)
        return base + delta @ R  # (B, n, d)


class BoundlessRotatedSpaceIntervention(Intervention):
    """Boundless DAS: ``out = b + Rᵀ(m ⊙ (R s − R b))`` with a learned soft boundary m.

    ``m_i = sigmoid((β·r − i) / τ)`` over the r rotated coordinates (R: r x d orthonormal rows,
    r = ``max_rank``, d by default as in the paper; smaller r is cheaper). β in [0, 1] is the
    learned boundary, τ the temperature, annealed by the trainer (``set_temperature``). In eval
    mode the mask is hard: the first ``round(β·r)`` coordinates (``size()``).

    >>> das = BoundlessRotatedSpaceIntervention(d=8, max_rank=8, init_size=2)
    >>> das.size()
    2
    """

    needs_source = True

    def __init__(self, d: int, max_rank: int | None = None, init_size: int = 1,
                 temperature: float = 1.0, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.hidden_size = d
        self.max_rank = _check_k(d if max_rank is None else max_rank, d, "max_rank")
        if self.max_rank == 0:
            raise ValueError("max_rank = 0: Boundless DAS needs at least one rotated coordinate")
        if not 0 < init_size <= self.max_rank:
            raise ValueError(f"init_size = {init_size} out of range: it must be between 1 and max_rank {self.max_rank}; "
                             f"choose a smaller init_size")
        self.rotation = OrthonormalRows(d, self.max_rank, dtype=dtype, device=device)  # R (r, d)
        fraction = torch.tensor(init_size / self.max_rank, device=device)
        self.boundary_logit = nn.Parameter(torch.logit(fraction.clamp(1e-4, 1 - 1e-4)))
        self.register_buffer("temperature", torch.tensor(float(temperature), device=device))
        self.register_buffer("coordinate", torch.arange(self.max_rank, dtype=torch.float32, device=device),
                             persistent=False)

    def set_temperature(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"temperature {value} must be > 0 (anneal e.g. from 1.0 to 0.01)")
        self.temperature.fill_(float(value))

    def boundary(self) -> torch.Tensor:
        """β·r: the soft subspace size, a scalar in [0, r]."""
        return torch.sigmoid(self.boundary_logit) * self.max_rank

    def size(self) -> int:
        """The hard subspace size used in eval mode."""
        return int(torch.round(self.boundary()).item())

    def mask(self) -> torch.Tensor:
        """(r,) weights of the rotated coordinates: soft in training, hard 0/1 in eval."""
        if self.training:
            return torch.sigmoid((self.boundary() - self.coordinate - 0.5) / self.temperature)  # (r,)
        return (self.coordinate < self.size()).float()  # (r,)

    def basis(self) -> torch.Tensor:
        """The directions swapped in eval mode, (size, d)."""
        return self.rotation.weight[: self.size()].detach()

    def forward(self, base, source=None):
        source = _check_source(source, type(self).__name__)
        R = self.rotation.weight.to(base.dtype)  # (r, d)
        delta = (source.to(base.dtype) - base) @ R.T  # (B, n, r)
        return base + (delta * self.mask().to(base.dtype)) @ R  # (B, n, d)


class SubspaceInterchange(Intervention):
    """Interchange in a fixed basis: ``out = b + Qᵀ Q (s − b)``, Q the orthonormalized rows of
    ``basis`` (k x d). Featurizers (PCA, a linear probe, mean differences) supply the basis.

    >>> swap = SubspaceInterchange(torch.tensor([[2.0, 0.0, 0.0]]))
    >>> swap(torch.zeros(1, 1, 3), torch.ones(1, 1, 3)).tolist()
    [[[1.0, 0.0, 0.0]]]
    """

    needs_source = True

    def __init__(self, basis: torch.Tensor, device: torch.device | str | None = None) -> None:
        super().__init__()
        if basis.dim() != 2 or basis.shape[0] > basis.shape[1]:
            raise ValueError(
                f"basis must be (k, d) with k <= d, got shape {tuple(basis.shape)}; pass directions as rows"
            )
        self.hidden_size = basis.shape[1]
        q = orthonormal_rows(basis) if basis.shape[0] else basis.float()
        self.register_buffer("q", q.to(basis.device if device is None else device))  # (k, d)

    @property
    def k(self) -> int:
        return self.q.shape[0]

    def basis(self) -> torch.Tensor:
        return self.q

    def forward(self, base, source=None):
        source = _check_source(source, type(self).__name__)
        if self.k == 0:
            return base
        Q = self.q.to(base.dtype)  # (k, d)
        delta = (source.to(base.dtype) - base) @ Q.T  # (B, n, k)
        return base + delta @ Q  # (B, n, d)


def orthonormal_rows(basis: torch.Tensor) -> torch.Tensor:
    """Orthonormalize the rows of a (k, d) matrix (QR), keeping their span and order.

    >>> q = orthonormal_rows(torch.tensor([[3.0, 0.0], [1.0, 1.0]]))
    >>> torch.allclose(q @ q.T, torch.eye(2))
    True
    """
    q, r = torch.linalg.qr(basis.detach().double().T)  # q (d, k)
    rank = int((r.diagonal().abs() > 1e-8 * r.diagonal().abs().max().clamp(min=1e-30)).sum())
    if rank < basis.shape[0]:
        raise ValueError(
            f"basis of {basis.shape[0]} rows has rank {rank}: its rows are linearly dependent; "
            f"pass at most {rank} independent directions"
        )
    return q.T.float().contiguous().to(basis.device)  # (k, d)
