"""A matrix with orthonormal rows, kept orthonormal by parametrization during training.

Shared by DAS (rotated subspaces) and ReFT (LoReFT's R). Built on torch's
``parametrizations.orthogonal`` with the Householder map, which costs O(d r^2) per evaluation
instead of the O(d^3) matrix exponential. Evaluate ``weight`` once per forward and reuse it
(or wrap the forward in ``torch.nn.utils.parametrize.cached()``).

>>> R = OrthonormalRows(8, 2)
>>> w = R.weight                                   # (2, 8)
>>> bool(torch.allclose(w @ w.T, torch.eye(2), atol=1e-6))
True
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal


class OrthonormalRows(nn.Module):
    """``weight``: an (r, d) matrix with orthonormal rows (r <= d); trainable, always orthonormal."""

    def __init__(self, d: int, r: int, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if not 0 < r <= d:
            raise ValueError(f"rank {r} out of range: it must be between 1 and the hidden size {d}")
        self.d, self.r = d, r
        linear = nn.Linear(d, r, bias=False, dtype=dtype, device=device)  # weight (r, d)
        self.linear = orthogonal(linear, orthogonal_map="householder")

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight  # (r, d)

    @torch.no_grad()
    def set_(self, matrix: torch.Tensor) -> "OrthonormalRows":
        """Set the rows to a given (r, d) matrix with orthonormal rows (e.g. the identity)."""
        if tuple(matrix.shape) != (self.r, self.d):
            raise ValueError(f"matrix shape {tuple(matrix.shape)} != ({self.r}, {self.d})")
        self.linear.weight = matrix.to(self.linear.parametrizations.weight.original)
        return self

    def max_orthonormality_error(self) -> float:
        """max |R Rᵀ − I|: 0 up to rounding for a healthy parametrization."""
        with torch.no_grad():
            w = self.weight.float()
            return float((w @ w.T - torch.eye(self.r, device=w.device)).abs().max())
